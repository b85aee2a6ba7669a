//! The one path every new snapshot takes, whatever it comes from: save, import from a
//! directory, tar import (and, coming, a registry pull). Each supplies a [`Source`] that fills an
//! empty staging dir; none of them repeats the commit.
//!
//! Under an exclusive build lease, the source fills a staging dir on the store's filesystem;
//! the files are made read-only and fsynced; then, under the index lock, the name is claimed,
//! the staging dir is renamed into `localfile/ID` and the complete record is written, in one
//! index write (as cocoon's import does). A failure at any step removes what was made; a crash
//! leaves at most a staging or data dir that no record names, which is never listed or resolved,
//! and which gc removes once the lease is free.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{self, Cleanup};
use crate::index::IndexLock;
use crate::layout::sidecar::Sidecar;
use crate::layout::{DIR_MODE, Lease};
use crate::store::{CreateReport, LocalFile};
use crate::types::{Config, FileReport, Record, Skipped, SnapshotId, gotime};

/// What a source put into the staging dir.
pub(super) struct Staged {
    /// The new snapshot's config, before the caller's overrides.
    pub(super) config: Config,
    /// One report per data file, in name order.
    pub(super) files: Vec<FileReport>,
    /// Entries of the source that were left out.
    pub(super) skipped: Vec<Skipped>,
}

/// Where a new snapshot's files come from.
pub(super) trait Source {
    /// The name the snapshot will claim, when known before filling: a taken name then fails
    /// before any data moves. The commit checks again under the lock either way.
    fn name(&self) -> Option<&str>;

    /// Puts the snapshot's data files into `staging`, an empty dir on the store's filesystem.
    fn fill(&mut self, store: &LocalFile, staging: &Path) -> Result<Staged>;

    /// The staging dir was renamed to `to` under the index lock; files the source still
    /// answers for (a moved file it must put back on failure) now live there.
    fn relocated(&mut self, _from: &Path, _to: &Path) {}

    /// The snapshot is committed: the source finishes what it owes its origin.
    fn finish(self) -> Result<()>
    where
        Self: Sized,
    {
        Ok(())
    }
}

/// A name and a description given by the caller, replacing the source's own.
#[derive(Debug, Clone, Default)]
pub(super) struct Overrides {
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
}

impl LocalFile {
    /// Creates a snapshot from `source`: the one create path.
    pub(super) fn create_from(
        &self,
        source: impl Source,
        overrides: Overrides,
    ) -> Result<CreateReport> {
        if let Some(name) = overrides.name.as_deref().or(source.name()) {
            self.check_name_free(name)?;
        }
        let mut creation = Creation::begin(self)?;
        // Declared after `creation`, so dropped first: a source that moved files in puts them
        // back before the staging dir that holds them is removed. For the same reason the commit
        // borrows `creation` instead of consuming it: a commit that fails (a name claimed in the
        // meantime) must not remove the staging dir before the moved files are back.
        let mut source = source;
        let staged = source.fill(self, &creation.staging)?;
        let config = staged
            .config
            .with_overrides(overrides.name, overrides.description);
        let id = creation.commit(config, &staged.files, &mut |from, to| {
            source.relocated(from, to);
        })?;
        drop(creation);
        self.refresh_lookup();
        source.finish()?;
        Ok(CreateReport {
            id,
            files: staged.files,
            skipped: staged.skipped,
        })
    }

    /// [`Error::NameTaken`] when a snapshot holds `name`; an empty name is never taken.
    pub(super) fn check_name_free(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Ok(());
        }
        if let Some(lookup) = self.lookup()? {
            let holder = lookup.holder(name);
            if !lookup.broken() {
                return match holder {
                    Some(id) => Err(Error::NameTaken {
                        name: name.to_string(),
                        id,
                    }),
                    None => Ok(()),
                };
            }
            self.drop_lookup();
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
        let id = SnapshotId::generate().map_err(|source| Error::Random { source })?;
        let lease_path = layout.lease_file(&id);
        let build = Lease::try_exclusive(&lease_path, &id)?
            .ok_or_else(|| Error::InUse { id: id.clone() })?;
        build.mark_unused(&lease_path)?;
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
    /// claims the name, renames the staging dir into place (telling `relocated`), and writes
    /// the complete record in one atomic index write; the sidecar, written beforehand, is
    /// renamed into place last.
    ///
    /// A crash before the index write leaves a staging or data dir that no record names and no
    /// sidecar claims, which gc removes; after it, a complete snapshot.
    ///
    /// # Errors
    /// [`Error::NameTaken`], [`Error::Io`]; either way nothing of the snapshot remains once
    /// the creation is dropped.
    fn commit(
        &mut self,
        mut config: Config,
        files: &[FileReport],
        relocated: &mut dyn FnMut(&Path, &Path),
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
        relocated(&self.staging, &data_dir);
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
