//! The localfile backend: snapshots as per-file clones in per-ID data directories.
//!
//! This file is the façade: the [`LocalFile`] handle, its index access, and the trait impls that
//! hand each operation to its room: `create` (the one path every new snapshot takes), `ingest`
//! (from a directory), `tar` (tar streams in and out), `read` (list, inspect, leases), `clone_out`
//! (clone and export to a directory), `delete`, and `maintain` (gc, fsck, du).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use crate::archive::{Compression, ExportOptions, ImportOptions};
use crate::clone::{self, FileClasses};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::gc::GcOrchestrator;
use crate::index::{Index, IndexCache, IndexLock};
use crate::layout::{DIR_MODE, Layout, Lease};
use crate::lookup::{self, Identity, Lookup};
use crate::progress::Progress;
use crate::store::{
    CloneReport, CompressedExporter, CreateReport, DirExportOptions, Direct, DirectoryExporter,
    SaveOptions, Snapshot, TarStream,
};
use crate::types::{Config, Record, SnapshotId};

/// Mode of the lookup table: readable as the index is.
const LOOKUP_MODE: u32 = 0o644;

/// The index size from which the lookup table is used: a smaller index (about a hundred
/// records) is read and parsed whole in less time than the table takes to open.
const LOOKUP_FROM: u64 = 64 << 10;

/// The local-filesystem snapshot store. Cheap to clone; every clone shares one root.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub(super) inner: Arc<Inner>,
    pub(super) progress: Progress,
    on_calling_thread: bool,
}

#[derive(Debug)]
pub(super) struct Inner {
    layout: Layout,
    classes: FileClasses,
    pub(super) index: IndexCache,
}

impl LocalFile {
    /// Opens the store at `root`, creating its directories if needed.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when a directory cannot be created (a read-only or
    /// missing mount, ...).
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalFile> {
        LocalFile::with_classes(root, FileClasses::default())
    }

    /// Opens the store at `root`, with `classes` saying which files are immutable.
    ///
    /// # Errors
    /// Those of [`LocalFile::open`].
    pub fn with_classes(root: impl Into<PathBuf>, classes: FileClasses) -> Result<LocalFile> {
        let layout = Layout::new(root);
        for dir in [layout.db_dir(), layout.data_root(), layout.staging_root()] {
            fsutil::create_dirs(&dir, DIR_MODE)?;
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

    /// Which files this store treats as immutable.
    pub fn classes(&self) -> &FileClasses {
        &self.inner.classes
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
    /// reflink clone takes a few milliseconds, and handing it to a pool thread and back (waking
    /// a second CPU) adds a measurable part of that. Not for an async server: the work blocks
    /// the thread that polls it, and with it every other task of that thread. Nor for an
    /// operation the caller may cancel by dropping its future, such as
    /// [`LocalFile::export_to_file`] under Ctrl-C: it cannot be dropped while it runs.
    pub fn on_calling_thread(&self) -> LocalFile {
        LocalFile {
            on_calling_thread: true,
            ..self.clone()
        }
    }

    /// Runs one whole blocking operation off the async worker threads, unless
    /// [`LocalFile::on_calling_thread`].
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(LocalFile) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        if self.on_calling_thread {
            return f(store);
        }
        tokio::task::spawn_blocking(move || f(store)).await?
    }

    /// What the filesystem holding `dir` can do for a clone out of this store, tried for real
    /// on scratch files.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) naming the scratch file or directory that failed.
    pub async fn probe(&self, dir: PathBuf) -> Result<clone::probe::Capabilities> {
        self.blocking(move |store| clone::probe::probe(&dir, &store.layout().staging_root()))
            .await
    }

    /// The index, read under the shared lock.
    pub(super) fn read_index(&self) -> Result<Index> {
        let _lock = IndexLock::acquire(&self.layout().index_lock(), false)?;
        self.inner.index.load(&self.layout().index_file())
    }

    /// Runs `f` on the index under the exclusive lock and saves the result if `f` succeeds.
    pub(super) fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let layout = self.layout();
        let lock = IndexLock::acquire(&layout.index_lock(), true)?;
        let mut index = self.inner.index.take(&layout.index_file())?;
        let out = f(&mut index)?;
        self.inner.index.save(&layout.index_file(), index)?;
        drop(lock);
        self.refresh_lookup();
        Ok(out)
    }

    /// The lookup table of the index as it is now (see `lookup.rs`): the one on disk when it is
    /// trusted for this very index file, else one built from the index, and saved for the next
    /// reader when it may be trusted later. `None` for a store without an index yet, or one the
    /// table cannot describe: the caller then reads the whole index, which reports what is wrong.
    pub(super) fn lookup(&self) -> Result<Option<Lookup>> {
        let layout = self.layout();
        let _lock = IndexLock::acquire(&layout.index_lock(), false)?;
        let path = layout.index_file();
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        if meta.len() < LOOKUP_FROM {
            return Ok(None);
        }
        let identity = Identity::of(&meta);
        let table_path = layout.lookup_file();
        let same = file.try_clone().map_err(|e| Error::io("open", &path, e))?;
        if let Some(lookup) = Lookup::open(&table_path, same, identity) {
            return Ok(Some(lookup));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", &path, e))?;
        let Ok(table) = lookup::build(&bytes, identity) else {
            return Ok(None);
        };
        if lookup::trusted_for(&table, identity) {
            // Derived data: a table that cannot be saved (a read-only store) is built again.
            let _ = fsutil::write_atomic(&table_path, &table, LOOKUP_MODE);
        }
        Ok(Lookup::in_memory(table, file))
    }

    /// The identity of the index file as it is now; `None` when there is none.
    pub(super) fn index_identity(&self) -> Result<Option<Identity>> {
        let path = self.layout().index_file();
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(Some(Identity::of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", &path, e)),
        }
    }

    /// Removes a lookup table found broken, so that the next reader builds it anew.
    pub(super) fn drop_lookup(&self) {
        let _ = std::fs::remove_file(self.layout().lookup_file());
    }

    /// Brings the lookup table up to the index just written, so that the next reader finds it
    /// ready. Best effort: a reader rebuilds a table that is not.
    pub(super) fn refresh_lookup(&self) {
        let _ = self.lookup();
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
        self.blocking(move |store| store.save_blocking(config, &src, opts))
            .await
    }

    async fn list(&self) -> Result<Vec<Record>> {
        self.blocking(|store| store.list_blocking()).await
    }

    async fn inspect(&self, reference: &str) -> Result<Record> {
        let reference = reference.to_string();
        self.blocking(move |store| store.inspect_blocking(&reference))
            .await
    }

    async fn delete(&self, refs: &[String], force: bool) -> Result<Vec<SnapshotId>> {
        let refs = refs.to_vec();
        self.blocking(move |store| store.delete_blocking(&refs, force))
            .await
    }

    async fn restore(&self, reference: &str) -> Result<(Config, TarStream)> {
        let reference = reference.to_string();
        self.blocking(move |store| store.stream(&reference, ExportOptions::default(), false))
            .await
    }

    async fn export(&self, reference: &str) -> Result<TarStream> {
        let reference = reference.to_string();
        self.blocking(move |store| Ok(store.stream(&reference, ExportOptions::default(), true)?.1))
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
        orchestrator.register(self.collector());
    }
}

impl Direct for LocalFile {
    async fn data_dir(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let reference = reference.to_string();
        self.blocking(move |store| store.data_dir_blocking(&reference))
            .await
    }
}

impl CompressedExporter for LocalFile {
    async fn export_compressed(&self, reference: &str) -> Result<TarStream> {
        let reference = reference.to_string();
        let opts = ExportOptions {
            compression: Compression::Gzip,
            ..ExportOptions::default()
        };
        self.blocking(move |store| Ok(store.stream(&reference, opts, true)?.1))
            .await
    }
}

impl DirectoryExporter for LocalFile {
    async fn export_to_dir(&self, reference: &str, dir: PathBuf) -> Result<CloneReport> {
        self.export_to_dir_with(reference, dir, DirExportOptions::default())
            .await
    }
}
