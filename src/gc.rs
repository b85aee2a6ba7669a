//! Garbage collection: what crashed and abandoned operations leave behind, and eviction of the
//! least recently used snapshots down to a size.
//!
//! Under the exclusive index lock, gc removes pending records whose creator is gone (the creator
//! holds its snapshot's lease exclusively for as long as it lives, so a free lease means a dead
//! creator; a pending record without a lease file, such as cocoon writes, is stale only after
//! the grace period), data dirs without a record, staging dirs no creator holds, temp files of
//! interrupted atomic writes, and lease files and sidecars whose snapshot is gone. A data dir
//! without a record that still has its sidecar is kept: that is a lost index, which
//! `fsck --repair` rebuilds, not a half-done delete. Records are dropped from the index in one
//! atomic write before any file is removed, so a crash mid-gc leaves only more leftovers.
//!
//! [`GcOrchestrator`] runs several stores' collectors together and hands an image manager the
//! union of the blob IDs their snapshots reference, as cocoon's gc does.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::error::Result;
use crate::fsutil;
use crate::index::{Index, IndexLock};
use crate::layout::sidecar::Sidecar;
use crate::layout::{Layout, Lease, PULL_PREFIX, last_use};
use crate::sys::FileLock;
use crate::types::{SnapshotId, gotime};

/// How long a pending record whose creator cannot be told apart from a live one is kept.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// Prefix of the temp files [`fsutil::write_atomic`] makes beside the file it replaces.
const TEMP_PREFIX: &str = ".tmp-";

/// Prefix of the scratch files `doctor`'s probe makes in the staging dir.
const PROBE_PREFIX: &str = ".snapstore-probe-";

/// What gc is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
    /// Age after which a pending record (or scratch file) with no telling creator is stale.
    pub grace: Duration,
    /// Evict the least recently accessed snapshots not in use until the store's apparent size
    /// is at most this.
    pub max_bytes: Option<u64>,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            dry_run: false,
            grace: DEFAULT_GRACE,
            max_bytes: None,
        }
    }
}

/// What gc removed, or with `dry_run` would remove.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// True when nothing was removed.
    pub dry_run: bool,
    /// Leftovers removed.
    pub removed: Vec<Removal>,
    /// Snapshots evicted to meet `max_bytes`, least recently accessed first.
    pub evicted: Vec<Eviction>,
    /// Snapshots eviction would have taken but that were in use, and so were kept.
    pub in_use: Vec<SnapshotId>,
    /// Data dirs without a record that were kept because they have a sidecar (a lost index).
    pub kept_for_fsck: Vec<PathBuf>,
    /// Complete snapshots whose sidecar a crash kept from being renamed into place (it goes in
    /// just after the index names the snapshot), written again from the record and the data.
    pub restored_sidecars: Vec<SnapshotId>,
    /// Apparent size of the complete snapshots afterwards.
    pub apparent_bytes: u64,
}

/// One leftover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// What it was.
    pub kind: Leftover,
    /// The path removed.
    pub path: PathBuf,
}

/// The kinds of leftover gc removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Leftover {
    /// A pending record whose creator is gone, with whatever it had made.
    StalePending,
    /// A data dir without a record.
    OrphanDataDir,
    /// A staging dir no creator holds.
    StagingDir,
    /// A temp file of an interrupted atomic write, or a probe's scratch file.
    TempFile,
    /// A lease file without a snapshot.
    OrphanLease,
    /// A sidecar without a snapshot.
    OrphanSidecar,
    /// A chunk record without a snapshot.
    OrphanChunks,
    /// The staging of a pull no one has resumed within the grace period.
    AbandonedPull,
}

impl Leftover {
    /// The name reports print.
    pub fn as_str(self) -> &'static str {
        match self {
            Leftover::StalePending => "stale pending snapshot",
            Leftover::OrphanDataDir => "orphan data dir",
            Leftover::StagingDir => "staging dir",
            Leftover::TempFile => "temp file",
            Leftover::OrphanLease => "orphan lease",
            Leftover::OrphanSidecar => "orphan sidecar",
            Leftover::OrphanChunks => "orphan chunk record",
            Leftover::AbandonedPull => "abandoned pull",
        }
    }
}

/// One evicted snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Eviction {
    /// Its ID.
    pub id: SnapshotId,
    /// Its name.
    pub name: String,
    /// Its apparent size.
    pub size_bytes: u64,
    /// When it was last used, if ever recorded.
    #[serde(with = "gotime::optional")]
    pub last_accessed_at: Option<DateTime<FixedOffset>>,
}

/// A collector an orchestrator runs beside others: cocoon's `gc.Module`.
pub trait GcModule: Send + Sync {
    /// The module's name in reports.
    fn name(&self) -> &str;

    /// Image blob IDs the module's snapshots reference, pending ones included: keep them alive.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`](crate::Error::CorruptIndex), [`Error::Io`](crate::Error::Io).
    fn used_blob_ids(&self) -> Result<BTreeSet<String>>;

    /// Collects, as `snapstore gc` does.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`](crate::Error::CorruptIndex), [`Error::Io`](crate::Error::Io).
    fn collect(&self, opts: &GcOptions) -> Result<GcReport>;
}

/// Runs the collectors registered with it (see [`Snapshot::register_gc`](crate::Snapshot::register_gc)).
///
/// ```no_run
/// # fn demo() -> snapstore::Result<()> {
/// use snapstore::{GcOptions, GcOrchestrator, LocalFile, Snapshot};
/// let mut gc = GcOrchestrator::new();
/// LocalFile::open("/var/lib/snapstore")?.register_gc(&mut gc);
/// let keep = gc.used_blob_ids()?; // image blobs an image gc must not remove
/// for (module, report) in gc.run(&GcOptions::default())? {
///     println!("{module}: {} removed", report.removed.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct GcOrchestrator {
    modules: Vec<Box<dyn GcModule>>,
}

impl GcOrchestrator {
    /// An orchestrator with no modules.
    pub fn new() -> GcOrchestrator {
        GcOrchestrator::default()
    }

    /// Adds a module.
    pub fn register(&mut self, module: Box<dyn GcModule>) {
        self.modules.push(module);
    }

    /// The union of every module's used blob IDs.
    ///
    /// # Errors
    /// The first module's error.
    pub fn used_blob_ids(&self) -> Result<BTreeSet<String>> {
        let mut all = BTreeSet::new();
        for module in &self.modules {
            all.extend(module.used_blob_ids()?);
        }
        Ok(all)
    }

    /// Runs every module's collector, in registration order.
    ///
    /// # Errors
    /// The first module's error; the modules after it do not run.
    pub fn run(&self, opts: &GcOptions) -> Result<Vec<(String, GcReport)>> {
        self.modules
            .iter()
            .map(|m| Ok((m.name().to_string(), m.collect(opts)?)))
            .collect()
    }
}

/// Brings each record's `last_accessed_at` up to its snapshot's use clock.
fn fold_uses(layout: &Layout, index: &mut Index) -> Result<()> {
    let ids: Vec<SnapshotId> = index
        .records()?
        .into_iter()
        .map(|(id, _)| id.clone())
        .collect();
    for id in ids {
        let Some(used) = last_use(&layout.lease_file(&id)) else {
            continue;
        };
        if let Some(record) = index.get_mut(&id)?
            && record.last_accessed_at.is_none_or(|t| t < used)
        {
            record.last_accessed_at = Some(used);
        }
    }
    Ok(())
}

/// One gc pass over the store at `layout`.
pub(crate) fn collect(layout: &Layout, opts: &GcOptions) -> Result<GcReport> {
    let _lock = IndexLock::acquire(&layout.index_lock(), true)?;
    let mut index = Index::load(&layout.index_file())?;
    let mut pass = Pass {
        layout,
        leases: Vec::new(),
        pulls: Vec::new(),
        gone: Vec::new(),
        paths: Vec::new(),
        dirs: HashSet::new(),
        sidecars: HashSet::new(),
        restore: Vec::new(),
        report: GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        },
    };
    pass.stale_pending(&mut index, opts.grace)?;
    pass.data_root(&index)?;
    pass.missing_sidecars(&mut index)?;
    pass.staging(&index, opts.grace)?;
    pass.temp_files(&layout.db_dir())?;
    if let Some(max) = opts.max_bytes {
        pass.evict(&mut index, max)?;
    }
    pass.report.apparent_bytes = index.complete()?.iter().map(|(_, r)| r.size_bytes).sum();
    if !opts.dry_run {
        if !pass.gone.is_empty() {
            // The index is written anyway: the use clocks go into it, so cocoon (and anyone
            // reading the JSON) sees them too.
            fold_uses(layout, &mut index)?;
            layout.remove_sidecars(pass.gone.iter().map(|(id, _)| id))?;
            index.save(&layout.index_file())?;
        }
        for (id, leased) in &pass.gone {
            layout.remove_traces(id, *leased)?;
        }
        for path in &pass.paths {
            fsutil::remove_all(path)?;
        }
        for (path, sidecar) in &pass.restore {
            sidecar.write(path)?;
        }
        for dir in [layout.data_root(), layout.staging_root()] {
            fsutil::fsync_dir(&dir)?;
        }
    }
    Ok(pass.report)
}

/// The state of one gc pass: what it will remove, and the leases that make that safe.
struct Pass<'a> {
    layout: &'a Layout,
    leases: Vec<Lease>,
    /// Locks of abandoned pulls, held until their staging is gone.
    pulls: Vec<(String, Option<FileLock>)>,
    /// Snapshots whose records go, with whether their lease is held (so its file can go too).
    gone: Vec<(SnapshotId, bool)>,
    /// Other paths to remove.
    paths: Vec<PathBuf>,
    /// The data dirs and sidecars the data root holds, by snapshot.
    dirs: HashSet<SnapshotId>,
    sidecars: HashSet<SnapshotId>,
    /// Sidecars to write again.
    restore: Vec<(PathBuf, Sidecar)>,
    report: GcReport,
}

/// Whether a lease is free, as gc sees it.
enum Claim {
    /// Taken: no one holds the snapshot.
    Held,
    /// There is no lease file, so no one holds it either.
    NoFile,
    /// Someone holds it.
    Busy,
}

impl Pass<'_> {
    /// Takes the lease of `id` exclusively without waiting, holding it for the rest of the pass.
    fn claim(&mut self, id: &SnapshotId) -> Result<Claim> {
        if self.leases.iter().any(|l| l.id() == id) {
            return Ok(Claim::Held);
        }
        let path = self.layout.lease_file(id);
        if !path.exists() {
            return Ok(Claim::NoFile);
        }
        Ok(match Lease::try_exclusive(&path, id)? {
            Some(lease) => {
                self.leases.push(lease);
                Claim::Held
            }
            None => Claim::Busy,
        })
    }

    fn forget(&mut self, index: &mut Index, id: &SnapshotId, claim: &Claim) {
        index.remove(id);
        self.gone.push((id.clone(), matches!(claim, Claim::Held)));
    }

    /// The snapshots this pass has already dropped from the index.
    fn gone_ids(&self) -> HashSet<SnapshotId> {
        self.gone.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Reports `path` as a leftover of `kind`, removed after the index is saved (unless a dry run).
    fn remove(&mut self, kind: Leftover, path: PathBuf) {
        self.paths.push(path.clone());
        self.removal(kind, path);
    }

    fn removal(&mut self, kind: Leftover, path: PathBuf) {
        self.report.removed.push(Removal { kind, path });
    }

    fn stale_pending(&mut self, index: &mut Index, grace: Duration) -> Result<()> {
        let now = gotime::now();
        let pending: Vec<SnapshotId> = index.pending_ids().cloned().collect();
        for id in pending {
            let claim = self.claim(&id)?;
            let stale = match claim {
                Claim::Held => true,
                Claim::Busy => false,
                Claim::NoFile => {
                    let created_at = index.get(&id)?.map(|r| r.created_at);
                    created_at.is_some_and(|t| (now - t).to_std().is_ok_and(|age| age > grace))
                }
            };
            if stale {
                self.forget(index, &id, &claim);
                self.removal(Leftover::StalePending, self.layout.data_dir(&id));
            }
        }
        Ok(())
    }

    /// Data dirs, leases and sidecars without a record, and interrupted sidecar writes.
    fn data_root(&mut self, index: &Index) -> Result<()> {
        let root = self.layout.data_root();
        let gone = self.gone_ids();
        for (name, kind) in fsutil::list_dir_types(&root)? {
            let Some(name) = name.to_str() else { continue };
            let path = root.join(name);
            if name.starts_with(TEMP_PREFIX) {
                self.remove(Leftover::TempFile, path);
                continue;
            }
            let (stem, kind) = if kind.is_dir() {
                (name, Leftover::OrphanDataDir)
            } else if let Some(stem) = name.strip_suffix(".lease") {
                (stem, Leftover::OrphanLease)
            } else if let Some(stem) = name.strip_suffix(".json") {
                (stem, Leftover::OrphanSidecar)
            } else if let Some(stem) = name.strip_suffix(".chunks") {
                (stem, Leftover::OrphanChunks)
            } else {
                continue;
            };
            let Ok(id) = SnapshotId::try_from(stem.to_string()) else {
                continue;
            };
            match kind {
                Leftover::OrphanDataDir => self.dirs.insert(id.clone()),
                Leftover::OrphanSidecar => self.sidecars.insert(id.clone()),
                _ => false,
            };
            if index.contains(&id) || gone.contains(&id) {
                continue;
            }
            let lost_index =
                self.layout.data_dir(&id).is_dir() && self.layout.sidecar_file(&id).exists();
            if lost_index {
                if kind == Leftover::OrphanDataDir {
                    self.report.kept_for_fsck.push(path);
                }
                continue;
            }
            match self.claim(&id)? {
                Claim::Busy => continue,
                Claim::Held | Claim::NoFile => {}
            }
            self.remove(kind, path);
        }
        Ok(())
    }

    /// Complete snapshots with their data but no sidecar: a crash came between the index write
    /// that named the snapshot and the rename of its sidecar into place. The sidecar is written
    /// again from the record when the data dir's files add up to its size (as
    /// `fsck --repair` would); otherwise fsck reports it.
    fn missing_sidecars(&mut self, index: &mut Index) -> Result<()> {
        let complete: Vec<SnapshotId> = index.complete_ids().cloned().collect();
        for id in complete {
            if !self.dirs.contains(&id) || self.sidecars.contains(&id) {
                continue;
            }
            let Some(record) = index.get(&id)?.cloned() else {
                continue;
            };
            let files: Vec<(String, u64)> = fsutil::list_dir(&self.layout.data_dir(&id))?
                .into_iter()
                .filter(|(_, meta)| meta.is_file())
                .map(|(name, meta)| (name.to_string_lossy().into_owned(), meta.len()))
                .collect();
            if files.iter().map(|(_, bytes)| bytes).sum::<u64>() != record.size_bytes {
                continue;
            }
            let sizes = files.iter().map(|(name, bytes)| (name.as_str(), *bytes));
            let sidecar = Sidecar::new(record, sizes);
            self.restore.push((self.layout.sidecar_file(&id), sidecar));
            self.report.restored_sidecars.push(id);
        }
        Ok(())
    }

    /// Staging dirs no creator holds, and old probe scratch files.
    fn staging(&mut self, index: &Index, grace: Duration) -> Result<()> {
        let root = self.layout.staging_root();
        let gone = self.gone_ids();
        for (name, meta) in fsutil::list_dir(&root)? {
            let Some(name) = name.to_str() else { continue };
            let path = root.join(name);
            if name.starts_with(PROBE_PREFIX) {
                // A probe lives for milliseconds and holds no lease; age tells.
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > grace);
                if old {
                    self.remove(Leftover::TempFile, path);
                }
                continue;
            }
            if let Some(rest) = name.strip_prefix(PULL_PREFIX) {
                let hex = rest.split('.').next().unwrap_or(rest);
                if self.abandoned_pull(hex, grace)? {
                    self.remove(Leftover::AbandonedPull, path);
                }
                continue;
            }
            let Ok(id) = SnapshotId::try_from(name.to_string()) else {
                continue;
            };
            let live_pending = index.contains(&id) && !index.is_complete(id.as_str());
            if live_pending || gone.contains(&id) {
                continue;
            }
            // A creator holds its lease from before it makes the staging dir until it commits.
            match self.claim(&id)? {
                Claim::Busy => continue,
                Claim::Held | Claim::NoFile => {}
            }
            self.remove(Leftover::StagingDir, path);
        }
        Ok(())
    }

    /// Whether the pull of manifest `hex` is abandoned: no pull holds its lock (gc then holds
    /// it until the pass ends) and none of its files changed within `grace`.
    fn abandoned_pull(&mut self, hex: &str, grace: Duration) -> Result<bool> {
        let lock_path = self.layout.pull_lock(hex);
        let paths = [
            self.layout.pull_dir(hex),
            self.layout.pull_journal(hex),
            lock_path.clone(),
        ];
        let recent = paths.iter().any(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().map_or(true, |age| age <= grace))
        });
        if recent {
            return Ok(false);
        }
        if self.pulls.iter().any(|(claimed, _)| claimed == hex) {
            return Ok(true);
        }
        let lock = match std::fs::File::open(&lock_path) {
            Ok(file) => match FileLock::try_lock(file, true) {
                Ok(Some(lock)) => Some(lock),
                Ok(None) => return Ok(false),
                Err(e) => return Err(crate::error::Error::io("lock", &lock_path, e)),
            },
            Err(_) => None,
        };
        self.pulls.push((hex.to_string(), lock));
        Ok(true)
    }

    /// Temp files of interrupted index writes: no writer is running, since gc holds the lock.
    fn temp_files(&mut self, dir: &Path) -> Result<()> {
        for (name, _) in fsutil::list_dir_types(dir)? {
            if name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
                let path = dir.join(name);
                self.remove(Leftover::TempFile, path);
            }
        }
        Ok(())
    }

    /// Evicts complete snapshots not in use, least recently used first, down to `max`. A
    /// snapshot's last use is the later of its record's `last_accessed_at` (which cocoon also
    /// writes) and its use clock, the lease file's mtime.
    fn evict(&mut self, index: &mut Index, max: u64) -> Result<()> {
        let complete = index.complete()?;
        let mut total: u64 = complete.iter().map(|(_, r)| r.size_bytes).sum();
        let mut candidates: Vec<_> = complete
            .iter()
            .map(|(id, r)| {
                let recorded = r.last_accessed_at.unwrap_or(r.created_at);
                let used =
                    last_use(&self.layout.lease_file(id)).map_or(recorded, |t| t.max(recorded));
                (used, (*id).clone())
            })
            .collect();
        candidates.sort();
        for (used, id) in candidates {
            if total <= max {
                break;
            }
            let claim = self.claim(&id)?;
            if matches!(claim, Claim::Busy) {
                self.report.in_use.push(id);
                continue;
            }
            let Some(record) = index.get(&id)? else {
                continue;
            };
            total = total.saturating_sub(record.size_bytes);
            self.report.evicted.push(Eviction {
                id: id.clone(),
                name: record.config.name.clone(),
                size_bytes: record.size_bytes,
                last_accessed_at: Some(used),
            });
            self.forget(index, &id, &claim);
        }
        Ok(())
    }
}
