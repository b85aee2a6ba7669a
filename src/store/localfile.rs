//! The localfile backend: snapshots as per-file clones in per-ID data directories.
//!
//! Creation is atomic: under an exclusive build lease, the files are cloned into a staging dir on
//! the same filesystem, fsynced and made read-only; then, under the index lock, the name is
//! claimed, the staging dir is renamed into `localfile/ID` and the complete record is written, in
//! one index write (as cocoon's import does). A failure at any step removes what was made; a
//! crash leaves at most a staging or data dir that no record names, which is never listed or
//! resolved, and which gc removes once the lease is free.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::{self, Compression, ExportOptions, ImportOptions, compress, export, import};
use crate::clone::{self, FileClasses, Job};
use crate::du::{self, DuReport};
use crate::envelope::{self, ENVELOPE_FILE, Envelope};
use crate::error::{Error, Result};
use crate::fsck::{self, FsckReport};
use crate::fsutil::{self, Cleanup};
use crate::gc::{self, GcOptions, GcOrchestrator, GcReport};
use crate::index::{Index, IndexCache, IndexLock};
use crate::progress::Progress;
use crate::resolve;
use crate::store::sidecar::Sidecar;
use crate::store::{
    CloneOptions, CloneReport, CloneSource, CompressedExporter, CreateReport, DirExportOptions,
    Direct, DirectoryExporter, Layout, Lease, SaveMode, SaveOptions, Skipped, Snapshot, TarStream,
};
use crate::sys;
use crate::types::{CloneMethod, Config, FileReport, Record, SnapshotId, gotime, is_plain_name};

/// Mode of the store's directories.
const DIR_MODE: u32 = 0o750;

/// How finely uses are recorded in `last_accessed_at`: a use this soon after the last one
/// recorded does not rewrite the index.
pub const ACCESS_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

/// The local-filesystem snapshot store. Cheap to clone; every clone shares one root.
#[derive(Debug, Clone)]
pub struct LocalFile {
    inner: Arc<Inner>,
    progress: Progress,
    on_calling_thread: bool,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    classes: FileClasses,
    index: IndexCache,
}

impl LocalFile {
    /// Opens the store at `root`, creating its directories if needed.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be created (a read-only or missing mount, ...).
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalFile> {
        LocalFile::with_classes(root, FileClasses::default())
    }

    /// Opens the store at `root`, with `classes` saying which files are immutable.
    pub fn with_classes(root: impl Into<PathBuf>, classes: FileClasses) -> Result<LocalFile> {
        let layout = Layout::new(root);
        for dir in [layout.db_dir(), layout.data_root(), layout.staging_root()] {
            if !dir.is_dir() {
                fsutil::create_dir_all(&dir)?;
                fsutil::set_mode(&dir, DIR_MODE)?;
            }
        }
        Ok(LocalFile {
            inner: Arc::new(Inner {
                layout,
                classes,
                index: IndexCache::default(),
            }),
            progress: Progress::default(),
            on_calling_thread: false,
        })
    }

    /// Where the store keeps everything.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// This store, with copies, tar exports and tar imports counting the bytes they move in
    /// `progress`, for a display to read while they run.
    pub fn with_progress(&self, progress: Progress) -> LocalFile {
        LocalFile {
            progress,
            ..self.clone()
        }
    }

    /// This store, running each operation's blocking work on the thread that polls its future
    /// instead of on tokio's blocking pool.
    ///
    /// For a program that runs one operation at a time and waits for it, as the CLI does: a
    /// reflink clone takes about 4 ms, and handing it to a pool thread and back (waking a second,
    /// in a VM virtual, CPU) added 1-1.5 ms of it. Not for an async server: the work blocks the
    /// thread that polls it, and with it every other task of that thread.
    pub fn on_calling_thread(&self) -> LocalFile {
        LocalFile {
            on_calling_thread: true,
            ..self.clone()
        }
    }

    /// Runs one whole blocking operation off the async worker threads, unless
    /// [`LocalFile::on_calling_thread`].
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.on_calling_thread {
            return f();
        }
        tokio::task::spawn_blocking(f).await?
    }

    /// Which files this store treats as immutable.
    pub fn classes(&self) -> &FileClasses {
        &self.inner.classes
    }

    /// A new snapshot from a directory that carries `snapshot.json` (one `export_to_dir` wrote,
    /// perhaps on another host): new ID, files through the ladder without hardlinks.
    /// `name` and `description` override the envelope's.
    ///
    /// # Errors
    /// [`Error::EnvelopeMissing`], [`Error::ListedFileMissing`], and those of
    /// [`Snapshot::create`].
    pub async fn import_from_dir(
        &self,
        dir: PathBuf,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<CreateReport> {
        let store = self.clone();
        self.blocking(move || store.import_from_dir_blocking(&dir, name, description))
            .await
    }

    /// Clones a snapshot's data files (no `snapshot.json`) into `dir`, new or empty: the VM-clone
    /// path. Memory files may be hardlinked (unless `opts.hardlink` is off); others never are.
    ///
    /// # Errors
    /// [`Error::TargetNotEmpty`], [`Error::NotFound`], [`Error::EnvelopeMissing`] (for a
    /// directory source), [`Error::CowRequired`], [`Error::NoSpace`], [`Error::Io`].
    pub async fn clone_to_dir(
        &self,
        source: CloneSource,
        dir: PathBuf,
        opts: CloneOptions,
    ) -> Result<CloneReport> {
        let store = self.clone();
        self.blocking(move || store.clone_to_dir_blocking(&source, &dir, opts))
            .await
    }

    /// [`DirectoryExporter::export_to_dir`] with options: `opts.sync` makes the export durable
    /// before it returns.
    ///
    /// # Errors
    /// Those of [`DirectoryExporter::export_to_dir`].
    pub async fn export_to_dir_with(
        &self,
        reference: &str,
        dir: PathBuf,
        opts: DirExportOptions,
    ) -> Result<CloneReport> {
        let (store, reference) = (self.clone(), reference.to_string());
        self.blocking(move || store.export_to_dir_blocking(&reference, &dir, opts))
            .await
    }

    /// What the filesystem holding `dir` can do for a clone out of this store, tried for real
    /// on scratch files.
    pub async fn probe(&self, dir: PathBuf) -> Result<clone::probe::Capabilities> {
        let store = self.clone();
        self.blocking(move || clone::probe::probe(&dir, &store.layout().staging_root()))
            .await
    }

    /// Writes the snapshot as a tar archive to `out`: `snapshot.json`, then its data files,
    /// sparse files in `opts.sparse_format`, compressed as `opts.compression` says. `label`
    /// names the output in errors. Holds a lease on the snapshot while it reads.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Io`] naming the file read or the output written.
    pub async fn export_to(
        &self,
        reference: &str,
        opts: ExportOptions,
        out: Box<dyn Write + Send>,
        label: PathBuf,
    ) -> Result<()> {
        let (store, reference) = (self.clone(), reference.to_string());
        self.blocking(move || {
            let (lease, dir, config, names) = store.open_for_read(&reference)?;
            let envelope = Envelope::new(config, names.clone());
            let progress = &store.progress;
            write_archive(&dir, &names, Some(&envelope), opts, out, &label, progress)?;
            store.touch(&lease)
        })
        .await
    }

    /// A new snapshot from a tar archive, raw, gzip or zstd (detected by magic bytes).
    ///
    /// # Errors
    /// [`Error::HostileEntry`], [`Error::EnvelopeMissing`], [`Error::ListedFileMissing`],
    /// [`Error::EnvelopeVersion`], [`Error::NameTaken`], [`Error::Io`] for a truncated or
    /// corrupt stream. On any error nothing remains and the name is free.
    pub async fn import_with(&self, input: TarStream, opts: ImportOptions) -> Result<CreateReport> {
        let store = self.clone();
        self.blocking(move || store.import_blocking(input, &opts))
            .await
    }

    /// Removes leftovers of crashed or abandoned operations and, with `max_bytes`, evicts the
    /// least recently used snapshots not in use; see [`GcOptions`].
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] (gc never touches a store whose index does not parse),
    /// [`Error::Io`].
    pub async fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        let store = self.clone();
        self.blocking(move || gc::collect(store.layout(), &opts))
            .await
    }

    /// Apparent, allocated, shared and exclusive bytes of the snapshots `refs` name (every
    /// complete snapshot when `refs` is empty), read from the kernel's extent maps under leases.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Ambiguous`], [`Error::Io`].
    pub async fn du(&self, refs: &[String]) -> Result<DuReport> {
        let (store, refs) = (self.clone(), refs.to_vec());
        self.blocking(move || {
            let mut index = store.read_index()?;
            let ids = if refs.is_empty() {
                let mut records = index.complete()?;
                records.sort_by_key(|(id, r)| (r.created_at, (*id).clone()));
                records.into_iter().map(|(id, _)| id.clone()).collect()
            } else {
                resolve::resolve_many(&index, &refs)?
            };
            let layout = store.layout();
            let leases = ids
                .iter()
                .map(|id| Lease::shared(&layout.lease_file(id), id))
                .collect::<Result<Vec<_>>>()?;
            // Deletes may have finished before the leases: look again, once, under them all.
            let mut index = store.read_index()?;
            let mut dirs = Vec::with_capacity(ids.len());
            for id in ids {
                let record = index.get(&id)?.filter(|r| !r.pending);
                let record = record.ok_or_else(|| Error::NotFound {
                    reference: id.to_string(),
                })?;
                dirs.push((id.clone(), record.config.name.clone(), layout.data_dir(&id)));
            }
            let report = du::measure(&dirs);
            drop(leases);
            report
        })
        .await
    }

    /// Checks the index against the data dirs and sidecars; with `repair`, mends what can be
    /// mended without losing anything (see [`FsckReport`]).
    ///
    /// # Errors
    /// [`Error::Io`]. A corrupt index is a problem in the report, not an error.
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let store = self.clone();
        self.blocking(move || fsck::check(store.layout(), repair))
            .await
    }

    /// A tar stream of the snapshot, written on its own thread while the caller reads; with the
    /// envelope first (`export`) or without it (`restore`).
    fn stream(
        &self,
        reference: &str,
        opts: ExportOptions,
        with_envelope: bool,
    ) -> Result<(Config, TarStream)> {
        let (lease, dir, config, names) = self.open_for_read(reference)?;
        let envelope = with_envelope.then(|| Envelope::new(config.clone(), names.clone()));
        let (writer, reader) = archive::channel();
        let failed = writer.failer();
        let store = self.clone();
        std::thread::spawn(move || {
            let label = PathBuf::from("<export stream>");
            if let Err(e) = write_archive(
                &dir,
                &names,
                envelope.as_ref(),
                opts,
                Box::new(writer),
                &label,
                &store.progress,
            ) {
                // Gone when the reader dropped the stream, which is how a caller stops it.
                failed.fail(std::io::Error::other(e));
            } else {
                // The reader has every byte by now; a failed update only leaves the snapshot
                // looking older to gc's eviction, so there is no one to tell.
                let _ = store.touch(&lease);
            }
            drop(lease);
        });
        Ok((config, Box::new(reader)))
    }

    /// The snapshot's data dir, config and file names, under a lease held until dropped.
    fn open_for_read(&self, reference: &str) -> Result<(Lease, PathBuf, Config, Vec<String>)> {
        let (dir, config, lease) = self.lease(reference)?;
        let (names, _) = data_files(&dir)?;
        Ok((lease, dir, config, names))
    }

    // ---- index ----

    pub(crate) fn read_index(&self) -> Result<Index> {
        let _lock = IndexLock::acquire(&self.layout().index_lock(), false)?;
        self.inner.index.load(&self.layout().index_file())
    }

    /// Runs `f` on the index under the exclusive lock and saves the result if `f` succeeds.
    pub(crate) fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let layout = self.layout();
        let _lock = IndexLock::acquire(&layout.index_lock(), true)?;
        let mut index = self.inner.index.take(&layout.index_file())?;
        let out = f(&mut index)?;
        self.inner.index.save(&layout.index_file(), index)?;
        Ok(out)
    }

    // ---- create ----

    fn create_blocking(
        &self,
        config: Config,
        src: &Path,
        opts: SaveOptions,
    ) -> Result<CreateReport> {
        require_dir(src)?;
        let (names, skipped) = data_files(src)?;
        self.ingest(config, src, &names, skipped, opts)
    }

    fn import_from_dir_blocking(
        &self,
        dir: &Path,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<CreateReport> {
        require_dir(dir)?;
        let envelope = envelope::read(dir)?;
        let mut config = envelope.config;
        if let Some(name) = name {
            config.name = name;
        }
        if let Some(description) = description {
            config.description = description;
        }
        let (names, skipped) = match envelope.files {
            Some(names) => (names, Vec::new()),
            None => data_files(dir)?,
        };
        self.ingest(config, dir, &names, skipped, SaveOptions::default())
    }

    /// The path by which a directory enters the store: claim the name, fill the staging dir
    /// through the ladder (or by renames), commit.
    fn ingest(
        &self,
        config: Config,
        src: &Path,
        names: &[String],
        skipped: Vec<Skipped>,
        opts: SaveOptions,
    ) -> Result<CreateReport> {
        // Fail early on a name that is taken; the commit checks again under the lock.
        self.check_name_free(&config.name)?;
        let creation = Creation::begin(self)?;
        // Declared after `creation`, so dropped first: moved files go back before the staging
        // dir that holds them is removed.
        let mut moved = MovedBack::default();
        let files = self.fill(src, names, &creation.staging, opts, &mut moved)?;
        let id = creation.commit(config, &files, &mut moved)?;
        moved.finish()?;
        Ok(CreateReport { id, files, skipped })
    }

    /// A new snapshot from a tar stream, raw, gzip or zstd.
    fn import_blocking(&self, input: TarStream, opts: &ImportOptions) -> Result<CreateReport> {
        // Fail early on a name that is taken; the commit checks again under the lock.
        if let Some(name) = &opts.name {
            self.check_name_free(name)?;
        }
        let creation = Creation::begin(self)?;
        let input =
            compress::decompressor(input).map_err(|e| Error::io("read archive", &opts.label, e))?;
        let imported = import::read_tar(
            input,
            &opts.label,
            &creation.staging,
            opts.max_file_size,
            opts.sync,
            &self.progress,
        )?;
        let mut config = imported.envelope.config;
        if let Some(name) = &opts.name {
            config.name = name.clone();
        }
        if let Some(description) = &opts.description {
            config.description = description.clone();
        }
        let id = creation.commit(config, &imported.files, &mut MovedBack::default())?;
        Ok(CreateReport {
            id,
            files: imported.files,
            skipped: Vec::new(),
        })
    }

    /// [`Error::NameTaken`] when a snapshot holds `name`; an empty name is never taken.
    fn check_name_free(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Ok(());
        }
        let layout = self.layout();
        let _lock = IndexLock::acquire(&layout.index_lock(), false)?;
        // Kept in the cache, so the commit does not parse the index again.
        let holder = self
            .inner
            .index
            .with(&layout.index_file(), |index| index.names.get(name).cloned())?;
        match holder {
            Some(id) => Err(Error::NameTaken {
                name: name.to_string(),
                id,
            }),
            None => Ok(()),
        }
    }

    /// Puts `names` from `src` into the empty dir `staging` as `opts` says.
    fn fill(
        &self,
        src: &Path,
        names: &[String],
        staging: &Path,
        opts: SaveOptions,
        moved: &mut MovedBack,
    ) -> Result<Vec<FileReport>> {
        let mut jobs = self.jobs(src, names)?;
        let mut reports = Vec::new();
        if opts.mode == SaveMode::Move {
            // Rename what can be renamed; what is on another filesystem takes the ladder.
            let mut across = Vec::new();
            for job in jobs {
                let dst = staging.join(&job.name);
                match std::fs::rename(&job.src, &dst) {
                    Ok(()) => {
                        let bytes = fsutil::symlink_metadata(&dst)?.len();
                        moved.renamed.push((dst, job.src.clone()));
                        reports.push(FileReport {
                            name: job.name,
                            method: CloneMethod::Move,
                            bytes,
                        });
                    }
                    Err(e) if sys::rename_crosses_filesystems(&e) => across.push(job),
                    Err(e) => return Err(Error::io("move", &job.src, e)),
                }
            }
            moved.copied = across.iter().map(|j| j.src.clone()).collect();
            jobs = across;
            fsutil::fsync_dir(src)?;
        }
        let ladder = clone::Options {
            allow_hardlink: opts.mode == SaveMode::Link,
            require_cow: opts.require_cow,
            durable: true,
            progress: self.progress.clone(),
        };
        reports.extend(clone::run(&jobs, staging, &ladder)?);
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(reports)
    }

    fn jobs(&self, src: &Path, names: &[String]) -> Result<Vec<Job>> {
        names
            .iter()
            .map(|name| {
                if !is_plain_name(name) || name == ENVELOPE_FILE {
                    return Err(Error::InvalidFileName {
                        dir: src.to_path_buf(),
                        name: name.clone(),
                    });
                }
                let path = src.join(name);
                let meta = fsutil::symlink_metadata(&path)?;
                if !meta.is_file() {
                    return Err(Error::io(
                        "clone",
                        &path,
                        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
                    ));
                }
                Ok(Job {
                    name: name.clone(),
                    src: path,
                    immutable: self.classes().is_immutable(name),
                })
            })
            .collect()
    }

    // ---- read ----

    fn list_blocking(&self) -> Result<Vec<Record>> {
        let mut index = self.read_index()?;
        let mut records: Vec<Record> = index
            .complete()?
            .into_iter()
            .map(|(_, r)| r.clone())
            .collect();
        records.sort_by(|a, b| (a.created_at, a.id()).cmp(&(b.created_at, b.id())));
        Ok(records)
    }

    fn inspect_blocking(&self, reference: &str) -> Result<Record> {
        let mut index = self.read_index()?;
        let id = resolve::resolve(&index, reference)?;
        index.get(&id)?.cloned().ok_or_else(|| Error::NotFound {
            reference: reference.to_string(),
        })
    }

    fn data_dir_blocking(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let (dir, config, lease) = self.lease(reference)?;
        self.touch(&lease)?;
        Ok((dir, config, lease))
    }

    /// The data dir and config of the snapshot `reference` names, under a shared lease.
    fn lease(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let id = resolve::resolve(&self.read_index()?, reference)?;
        let mut lease = Lease::shared(&self.layout().lease_file(&id), &id)?;
        // A delete may have finished between the lookup and the lease: look again under it.
        let mut index = self.read_index()?;
        let record = index
            .get(&id)?
            .filter(|r| !r.pending)
            .ok_or_else(|| Error::NotFound {
                reference: reference.to_string(),
            })?;
        lease.last_used = record.last_accessed_at;
        Ok((self.layout().data_dir(&id), record.config.clone(), lease))
    }

    /// Records a use of the leased snapshot (for gc's least-recently-used eviction). Called once
    /// the use succeeded, so a failed clone or export leaves the index as it was.
    ///
    /// As `relatime` does for atime, a use within [`ACCESS_RESOLUTION`] of the last one recorded
    /// is not written: cloning one snapshot for many VMs in a row rewrites the index once, not
    /// once per VM. A read-only store records nothing, and is not an error to read from.
    fn touch(&self, lease: &Lease) -> Result<()> {
        let now = gotime::now();
        let recent = lease
            .last_used
            .and_then(|t| (now - t).to_std().ok())
            .is_some_and(|age| age < ACCESS_RESOLUTION);
        if recent {
            return Ok(());
        }
        let id = lease.id();
        let touched = self.update_index(|index| {
            if let Some(record) = index.get_mut(id)? {
                record.last_accessed_at = Some(now);
            }
            Ok(())
        });
        match touched {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
            {
                Ok(())
            }
            other => other,
        }
    }

    // ---- clone out ----

    fn clone_to_dir_blocking(
        &self,
        source: &CloneSource,
        dir: &Path,
        opts: CloneOptions,
    ) -> Result<CloneReport> {
        let ladder = clone::Options {
            allow_hardlink: opts.hardlink,
            require_cow: opts.require_cow,
            durable: opts.sync,
            progress: self.progress.clone(),
        };
        match source {
            CloneSource::Ref(reference) => {
                let (data_dir, config, lease) = self.lease(reference)?;
                let (names, _) = data_files(&data_dir)?;
                let (files, cleanup) = self.clone_out(&data_dir, &names, dir, ladder)?;
                self.touch(&lease)?;
                cleanup.disarm();
                Ok(CloneReport { files, config })
            }
            CloneSource::Dir(src) => {
                require_dir(src)?;
                let envelope = envelope::read(src)?;
                let names = match envelope.files {
                    Some(names) => names,
                    None => data_files(src)?.0,
                };
                let (files, cleanup) = self.clone_out(src, &names, dir, ladder)?;
                cleanup.disarm();
                Ok(CloneReport {
                    files,
                    config: envelope.config,
                })
            }
        }
    }

    fn export_to_dir_blocking(
        &self,
        reference: &str,
        dir: &Path,
        opts: DirExportOptions,
    ) -> Result<CloneReport> {
        let (data_dir, config, lease) = self.lease(reference)?;
        let (names, _) = data_files(&data_dir)?;
        let ladder = clone::Options {
            durable: opts.sync,
            progress: self.progress.clone(),
            ..clone::Options::default()
        };
        let (files, cleanup) = self.clone_out(&data_dir, &names, dir, ladder)?;
        envelope::write(dir, &Envelope::new(config.clone(), names), opts.sync)?;
        self.touch(&lease)?;
        cleanup.disarm();
        Ok(CloneReport { files, config })
    }

    /// Clones `names` from `src` into `dir`, which must be new or empty. The returned guard
    /// still removes the files (and `dir`, if this call made it) until it is disarmed.
    #[must_use = "dropping the guard removes the clone"]
    fn clone_out(
        &self,
        src: &Path,
        names: &[String],
        dir: &Path,
        ladder: clone::Options,
    ) -> Result<(Vec<FileReport>, Cleanup)> {
        if !fsutil::is_missing_or_empty(dir)? {
            return Err(Error::TargetNotEmpty {
                path: dir.to_path_buf(),
            });
        }
        let mut cleanup = Cleanup::new();
        if !dir.exists() {
            fsutil::create_dir_all(dir)?;
            cleanup.push(dir.to_path_buf());
        }
        let jobs = self.jobs(src, names)?;
        let files = clone::run(&jobs, dir, &ladder)?;
        for file in &files {
            cleanup.push(dir.join(&file.name));
        }
        if ladder.durable {
            fsutil::fsync_dir(fsutil::parent_dir(dir))?;
        }
        Ok((files, cleanup))
    }

    // ---- delete ----

    fn delete_blocking(&self, refs: &[String], force: bool) -> Result<Vec<SnapshotId>> {
        let layout = self.layout();
        let ids = resolve::resolve_many(&self.read_index()?, refs)?;
        let mut leases = Vec::with_capacity(ids.len());
        for id in &ids {
            match Lease::try_exclusive(&layout.lease_file(id), id)? {
                Some(lease) => leases.push(lease),
                None if force => {}
                None => return Err(Error::InUse { id: id.clone() }),
            }
        }
        // The sidecars and records go first, in one atomic index write: a crash after it leaves
        // only orphan dirs without sidecars, which nothing lists and gc removes, never a listed
        // snapshot without its data.
        let deleted = self.update_index(|index| {
            let mut deleted = Vec::new();
            for id in &ids {
                if index.contains(id) {
                    fsutil::remove_all(&layout.sidecar_file(id))?;
                    index.remove(id);
                    deleted.push(id.clone());
                }
            }
            Ok(deleted)
        })?;
        for id in &deleted {
            // Under `--force` someone may hold the lease; its file stays for them, and gc.
            let leased = leases.iter().any(|l| l.id() == id);
            remove_traces(layout, id, leased)?;
        }
        fsutil::fsync_dir(&layout.data_root())?;
        drop(leases);
        Ok(deleted)
    }
}

/// Removes what a snapshot without a record leaves on disk: its data dir, staging dir and
/// sidecar, and its lease file when `leased` (the caller holds the lease exclusively, so no one
/// can be waiting on that inode and then on a fresh one).
pub(crate) fn remove_traces(layout: &Layout, id: &SnapshotId, leased: bool) -> Result<()> {
    fsutil::remove_all(&layout.data_dir(id))?;
    fsutil::remove_all(&layout.staging_dir(id))?;
    fsutil::remove_all(&layout.sidecar_file(id))?;
    if leased {
        fsutil::remove_all(&layout.lease_file(id))?;
    }
    Ok(())
}

/// A snapshot being created: its ID, its build lease and its staging dir. Dropped before
/// [`Creation::commit`] succeeds, it removes all of them.
struct Creation<'a> {
    store: &'a LocalFile,
    id: SnapshotId,
    staging: PathBuf,
    // Fields drop in this order: files first, then the lease file, and the lease itself last, so
    // no one can take the lease while anything of it remains.
    cleanup: Cleanup,
    lease_file: Cleanup,
    _build: Lease,
}

impl<'a> Creation<'a> {
    /// A fresh ID, its exclusive lease (held until the commit: gc sees a live creator by it, and
    /// leaves its staging dir alone), and an empty staging dir on the store's filesystem.
    fn begin(store: &'a LocalFile) -> Result<Creation<'a>> {
        let layout = store.layout();
        let id = SnapshotId::generate()?;
        let lease_path = layout.lease_file(&id);
        let build = Lease::try_exclusive(&lease_path, &id)?
            .ok_or_else(|| Error::InUse { id: id.clone() })?;
        // No one else can be waiting on the lease of a snapshot that never completed.
        let mut lease_file = Cleanup::new();
        lease_file.push(lease_path);
        let staging = layout.staging_dir(&id);
        fsutil::create_dir(&staging, DIR_MODE)?;
        let mut cleanup = Cleanup::new();
        cleanup.push(staging.clone());
        Ok(Creation {
            store,
            id,
            staging,
            cleanup,
            lease_file,
            _build: build,
        })
    }

    /// Makes the staged files read-only and durable, then, under the exclusive index lock:
    /// claims the name, renames the staging dir into place, and writes the complete record in
    /// one atomic index write; the sidecar, written beforehand, is renamed into place last.
    ///
    /// A crash before the index write leaves a staging or data dir that no record names and no
    /// sidecar claims, which gc removes; after it, a complete snapshot.
    ///
    /// # Errors
    /// [`Error::NameTaken`], [`Error::Io`]; either way nothing of the snapshot remains.
    fn commit(
        mut self,
        mut config: Config,
        files: &[FileReport],
        moved: &mut MovedBack,
    ) -> Result<SnapshotId> {
        let layout = self.store.layout();
        for file in files {
            fsutil::set_mode(&self.staging.join(&file.name), fsutil::READ_ONLY)?;
        }
        fsutil::fsync_dir(&self.staging)?;

        config.id = self.id.to_string();
        let now = gotime::now();
        let record = Record {
            config,
            created_at: now,
            data_dir: layout.data_dir(&self.id).display().to_string(),
            size_bytes: files.iter().map(|f| f.bytes).sum(),
            pending: false,
            last_accessed_at: Some(now),
            extra: serde_json::Map::new(),
        };
        let sizes = files.iter().map(|f| (f.name.as_str(), f.bytes));
        let sidecar = Sidecar::new(record.clone(), sizes).stage(&layout.sidecar_file(&self.id))?;

        let _lock = IndexLock::acquire(&layout.index_lock(), true)?;
        let cache = &self.store.inner.index;
        let mut index = cache.take(&layout.index_file())?;
        index.insert(self.id.clone(), record)?;
        let data_dir = layout.data_dir(&self.id);
        fsutil::rename(&self.staging, &data_dir)?;
        self.cleanup.push(data_dir.clone());
        moved.relocate(&self.staging, &data_dir);
        fsutil::fsync_dir(&layout.data_root())?;
        fsutil::fsync_dir(&layout.staging_root())?;
        cache.save(&layout.index_file(), index)?;
        std::mem::take(&mut self.cleanup).disarm();
        std::mem::take(&mut self.lease_file).disarm();
        // The snapshot is complete. A sidecar that cannot be renamed into place (an I/O error
        // between two renames in one directory) leaves it without its redundant copy, which
        // fsck reports and `fsck --repair` writes again; failing the save now would be a lie.
        let _ = sidecar.commit();
        Ok(self.id.clone())
    }
}

/// For `save --move`: puts renamed files back where they came from unless finished, and on
/// finish removes the sources that had to be copied across filesystems (a move consumes them).
#[derive(Default)]
struct MovedBack {
    renamed: Vec<(PathBuf, PathBuf)>,
    copied: Vec<PathBuf>,
}

impl MovedBack {
    /// The renamed files now live under `to` instead of `from`.
    fn relocate(&mut self, from: &Path, to: &Path) {
        for (now, _) in &mut self.renamed {
            if let Ok(rest) = now.strip_prefix(from) {
                *now = to.join(rest);
            }
        }
    }

    fn finish(mut self) -> Result<()> {
        self.renamed.clear();
        for src in std::mem::take(&mut self.copied) {
            std::fs::remove_file(&src).map_err(|e| Error::io("remove", &src, e))?;
        }
        Ok(())
    }
}

impl Drop for MovedBack {
    fn drop(&mut self) {
        for (now, was) in self.renamed.drain(..).rev() {
            // Best effort: the file is in the staging dir, where gc would find it otherwise.
            let _ = std::fs::rename(&now, &was);
        }
    }
}

/// Writes a tar archive of `names` in `dir` to `out`, compressed on every core.
fn write_archive(
    dir: &Path,
    names: &[String],
    envelope: Option<&Envelope>,
    opts: ExportOptions,
    out: Box<dyn Write + Send>,
    label: &Path,
    progress: &Progress,
) -> Result<()> {
    let threads = clone::cores();
    let write_err = |e| Error::io("write archive", label, e);
    let mut out = compress::compressor(opts.compression, out, threads).map_err(write_err)?;
    export::write_tar(
        &mut out,
        label,
        dir,
        names,
        envelope,
        opts.sparse_format,
        progress,
    )?;
    out.finish().map_err(write_err)
}

/// The regular files of `dir` (not `snapshot.json`) in name order, and what was skipped.
fn data_files(dir: &Path) -> Result<(Vec<String>, Vec<Skipped>)> {
    let mut names = Vec::new();
    let mut skipped = Vec::new();
    for (name, meta) in fsutil::list_dir(dir)? {
        let kind = meta.file_type();
        let name = match name.into_string() {
            Ok(name) => name,
            Err(raw) => {
                skipped.push(Skipped {
                    name: lossy(&raw),
                    kind: "non-utf8 name",
                });
                continue;
            }
        };
        if name == ENVELOPE_FILE {
            continue;
        }
        let what = if kind.is_file() {
            names.push(name);
            continue;
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_symlink() {
            "symlink"
        } else if kind.is_fifo() {
            "fifo"
        } else if kind.is_socket() {
            "socket"
        } else {
            "device"
        };
        skipped.push(Skipped { name, kind: what });
    }
    Ok((names, skipped))
}

fn lossy(name: &OsString) -> String {
    name.to_string_lossy().into_owned()
}

fn require_dir(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("open source directory", path, e))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(Error::NotADirectory {
            path: path.to_path_buf(),
        })
    }
}

impl Snapshot for LocalFile {
    fn kind(&self) -> &'static str {
        "localfile"
    }

    async fn create(
        &self,
        config: Config,
        src: PathBuf,
        opts: SaveOptions,
    ) -> Result<CreateReport> {
        let store = self.clone();
        self.blocking(move || store.create_blocking(config, &src, opts))
            .await
    }

    async fn list(&self) -> Result<Vec<Record>> {
        let store = self.clone();
        self.blocking(move || store.list_blocking()).await
    }

    async fn inspect(&self, reference: &str) -> Result<Record> {
        let (store, reference) = (self.clone(), reference.to_string());
        self.blocking(move || store.inspect_blocking(&reference))
            .await
    }

    async fn delete(&self, refs: &[String], force: bool) -> Result<Vec<SnapshotId>> {
        let (store, refs) = (self.clone(), refs.to_vec());
        self.blocking(move || store.delete_blocking(&refs, force))
            .await
    }

    async fn restore(&self, reference: &str) -> Result<(Config, TarStream)> {
        let (store, reference) = (self.clone(), reference.to_string());
        self.blocking(move || store.stream(&reference, ExportOptions::default(), false))
            .await
    }

    async fn export(&self, reference: &str) -> Result<TarStream> {
        let (store, reference) = (self.clone(), reference.to_string());
        self.blocking(move || Ok(store.stream(&reference, ExportOptions::default(), true)?.1))
            .await
    }

    async fn import(
        &self,
        archive: TarStream,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<SnapshotId> {
        let opts = ImportOptions {
            name,
            description,
            ..ImportOptions::default()
        };
        Ok(self.import_with(archive, opts).await?.id)
    }

    fn register_gc(&self, orchestrator: &mut GcOrchestrator) {
        orchestrator.register(Box::new(gc::Collector {
            store: self.clone(),
        }));
    }
}

impl Direct for LocalFile {
    async fn data_dir(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let (store, reference) = (self.clone(), reference.to_string());
        self.blocking(move || store.data_dir_blocking(&reference))
            .await
    }
}

impl CompressedExporter for LocalFile {
    async fn export_compressed(&self, reference: &str) -> Result<TarStream> {
        let (store, reference) = (self.clone(), reference.to_string());
        let opts = ExportOptions {
            compression: Compression::Gzip,
            ..ExportOptions::default()
        };
        self.blocking(move || Ok(store.stream(&reference, opts, true)?.1))
            .await
    }
}

impl DirectoryExporter for LocalFile {
    async fn export_to_dir(&self, reference: &str, dir: PathBuf) -> Result<CloneReport> {
        self.export_to_dir_with(reference, dir, DirExportOptions::default())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_move_puts_renamed_files_back_even_after_relocation() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, staging, data) = (
            tmp.path().join("src"),
            tmp.path().join("staging"),
            tmp.path().join("data"),
        );
        for d in [&src, &staging] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(staging.join("mem"), b"m").unwrap();
        std::fs::write(staging.join("disk"), b"d").unwrap();
        let mut moved = MovedBack::default();
        moved.renamed.push((staging.join("mem"), src.join("mem")));
        drop(moved);
        assert_eq!(std::fs::read(src.join("mem")).unwrap(), b"m");

        std::fs::rename(&staging, &data).unwrap();
        let mut moved = MovedBack::default();
        moved.renamed.push((staging.join("disk"), src.join("disk")));
        moved.relocate(&staging, &data);
        drop(moved);
        assert_eq!(std::fs::read(src.join("disk")).unwrap(), b"d");
    }

    #[test]
    fn finishing_a_move_removes_sources_that_were_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let copied = tmp.path().join("copied");
        std::fs::write(&copied, b"x").unwrap();
        let moved = MovedBack {
            renamed: Vec::new(),
            copied: vec![copied.clone()],
        };
        moved.finish().unwrap();
        assert!(!copied.exists());
    }
}
