//! The store's async API, modelled on cocoon's `snapshot` package: the [`Snapshot`] lifecycle,
//! [`Direct`] access to a data dir under a lease, and the [`DirectoryExporter`].
//!
//! Every method runs its whole operation inside one `spawn_blocking`, so the filesystem work
//! never blocks an async worker thread (unless the store was made with
//! [`LocalFile::on_calling_thread`], for programs that run one operation at a time).
//! [`LocalFile`] implements them all over a root directory.
//!
//! The store sits above the modules that do the work (`clone`, `archive`, `gc`, `fsck`, `du`)
//! and none of them imports it back: they know the `layout` and the index, and transports hand
//! their files to the one create path (`create.rs`).

mod clone_out;
mod create;
mod delete;
mod files;
mod ingest;
mod localfile;
mod maintain;
mod read;
mod registry;
mod tar;

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;

pub use localfile::LocalFile;

use crate::error::Result;
use crate::gc::GcOrchestrator;
use crate::layout::Lease;
use crate::types::{Config, FileReport, Record, Skipped, SnapshotId};

/// A tar stream of a snapshot, as `restore` and `export` hand it out.
pub type TarStream = Box<dyn std::io::Read + Send>;

/// How `create` takes files from the source directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SaveMode {
    /// FICLONE, else copy; never a hardlink, since the source's owner may write the file again.
    #[default]
    Clone,
    /// Like `Clone`, but immutable (memory) files may be hardlinked: the caller promises never
    /// to write them again.
    Link,
    /// Rename the files into the store: instant, consumes the source; across filesystems each
    /// file falls back to the `Clone` ladder. On failure the moved files are put back.
    Move,
}

/// Options of [`Snapshot::create`].
///
/// An entry of the source that holds data the snapshot would not carry (a symlink, a directory
/// with anything in it, a device, a file whose name is not UTF-8) fails the save with
/// [`Error::UnsupportedEntries`](crate::Error::UnsupportedEntries), unless these say otherwise.
/// Sockets, fifos and empty directories hold no data: they are left out and listed in
/// [`CreateReport::skipped`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveOptions {
    /// How files are taken in.
    pub mode: SaveMode,
    /// Fail rather than copy data.
    pub require_cow: bool,
    /// Store a symlink to a regular file as that file's content, under the link's name (a
    /// copy or reflink of the target; never a hardlink, never a move of it).
    pub dereference: bool,
    /// Leave out entries the snapshot cannot carry, listing them in the report, instead of
    /// failing the save: the loss is accepted knowingly.
    pub skip_unsupported: bool,
}

/// Options of a clone out of the store.
#[derive(Debug, Clone, Copy)]
pub struct CloneOptions {
    /// Immutable (memory) files may be hardlinked.
    pub hardlink: bool,
    /// Fail rather than copy data.
    pub require_cow: bool,
    /// Fsync every file and the target directory before returning, for a caller that records
    /// the clone somewhere that must not outlive it after a power loss. Off by default: the
    /// clone is the caller's file, and like `cp` it is left to the kernel's writeback.
    pub sync: bool,
}

impl Default for CloneOptions {
    fn default() -> CloneOptions {
        CloneOptions {
            hardlink: true,
            require_cow: false,
            sync: false,
        }
    }
}

/// Options of an export into a directory ([`LocalFile::export_to_dir_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DirExportOptions {
    /// Fsync every file, `snapshot.json` and the directory before returning; see
    /// [`CloneOptions::sync`].
    pub sync: bool,
}

/// Options of an import from a directory ([`LocalFile::import_from_dir`]).
#[derive(Debug, Clone, Default)]
pub struct DirImportOptions {
    /// Overrides the envelope's name.
    pub name: Option<String>,
    /// Overrides the envelope's description.
    pub description: Option<String>,
}

/// What `create` and `import_from_dir` did.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    /// The new snapshot's ID.
    pub id: SnapshotId,
    /// One report per data file, in name order.
    pub files: Vec<FileReport>,
    /// Entries of the source that were not data files.
    pub skipped: Vec<Skipped>,
}

/// What a clone out of the store did.
#[derive(Debug, Clone, Serialize)]
pub struct CloneReport {
    /// One report per data file, in name order.
    pub files: Vec<FileReport>,
    /// The snapshot's config.
    pub config: Config,
}

/// Where `clone_to_dir` takes a snapshot from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneSource {
    /// A snapshot in the store.
    Ref(String),
    /// A directory carrying `snapshot.json`, for example one `export_to_dir` wrote.
    Dir(PathBuf),
}

/// The snapshot lifecycle: create, list, inspect, delete, and the tar layer.
///
/// ```no_run
/// # async fn demo() -> snapstore::Result<()> {
/// use snapstore::{Config, LocalFile, SaveOptions, Snapshot};
/// let store = LocalFile::open("/var/lib/snapstore")?;
/// let config = Config { name: "base".into(), cpu: 2, ..Config::default() };
/// let report = store.create(config, "/run/vm1/snapshot".into(), SaveOptions::default()).await?;
/// println!("saved {}", report.id);
/// for record in store.list().await? {
///     println!("{} {}", record.config.id, record.config.name);
/// }
/// # Ok(()) }
/// ```
pub trait Snapshot {
    /// The backend's name, as cocoon's `Type()`: `"localfile"`.
    fn kind(&self) -> &'static str;

    /// Saves the regular files of `src` as a new snapshot through the clone ladder.
    ///
    /// Atomic: on any failure nothing remains, and the name is free again.
    ///
    /// # Errors
    /// [`Error::NameTaken`](crate::Error::NameTaken), [`Error::NotADirectory`](crate::Error::NotADirectory),
    /// [`Error::CowRequired`](crate::Error::CowRequired), [`Error::NoSpace`](crate::Error::NoSpace),
    /// [`Error::Io`](crate::Error::Io).
    fn create(
        &self,
        config: Config,
        src: PathBuf,
        opts: SaveOptions,
    ) -> impl Future<Output = Result<CreateReport>> + Send;

    /// Every complete snapshot, oldest first.
    fn list(&self) -> impl Future<Output = Result<Vec<Record>>> + Send;

    /// The record of the snapshot `reference` names.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound), [`Error::Ambiguous`](crate::Error::Ambiguous).
    fn inspect(&self, reference: &str) -> impl Future<Output = Result<Record>> + Send;

    /// Deletes the snapshots `refs` name; returns the IDs deleted.
    ///
    /// Every ref is resolved, and every snapshot leased, before anything is deleted: if any ref
    /// fails or any snapshot is in use (and `force` is off), nothing is deleted.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound), [`Error::InUse`](crate::Error::InUse).
    fn delete(
        &self,
        refs: &[String],
        force: bool,
    ) -> impl Future<Output = Result<Vec<SnapshotId>>> + Send;

    /// The snapshot's config and a tar stream of its data files without the envelope (cocoon's
    /// `Restore`). The stream is written while it is read; dropping it stops the work.
    fn restore(&self, reference: &str) -> impl Future<Output = Result<(Config, TarStream)>> + Send;

    /// A tar stream of the snapshot: `snapshot.json` first, then its data files in name order,
    /// sparse files in cocoon's format. Memory stays flat; dropping the stream stops the work.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound), [`Error::Ambiguous`](crate::Error::Ambiguous).
    fn export(&self, reference: &str) -> impl Future<Output = Result<TarStream>> + Send;

    /// A new snapshot from a tar stream (raw, gzip or zstd); `name` and `description` override
    /// the envelope's. Atomic, as `create` is.
    ///
    /// # Errors
    /// [`Error::HostileEntry`](crate::Error::HostileEntry), [`Error::EnvelopeMissing`](crate::Error::EnvelopeMissing),
    /// [`Error::NameTaken`](crate::Error::NameTaken), [`Error::Io`](crate::Error::Io).
    fn import(
        &self,
        archive: TarStream,
        name: Option<String>,
        description: Option<String>,
    ) -> impl Future<Output = Result<SnapshotId>> + Send;

    /// Registers the store's collector with `orchestrator` (cocoon's `RegisterGC`): the same
    /// collector `snapstore gc` runs, exposing the image blob IDs the snapshots reference.
    fn register_gc(&self, orchestrator: &mut GcOrchestrator);
}

/// Direct access to a snapshot's data directory.
pub trait Direct {
    /// The data dir of the snapshot `reference` names, its config, and a lease: while the lease
    /// is held, in this process or another, the snapshot cannot be deleted (except by
    /// `rm --force`). Records the use on the snapshot's use clock (see `inspect`).
    ///
    /// ```no_run
    /// # async fn demo(store: snapstore::LocalFile) -> snapstore::Result<()> {
    /// use snapstore::Direct;
    /// let (dir, config, lease) = store.data_dir("base").await?;
    /// // hand `dir` to the hypervisor; files in it are read-only
    /// drop(lease);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound), [`Error::Ambiguous`](crate::Error::Ambiguous).
    fn data_dir(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<(PathBuf, Config, Lease)>> + Send;
}

/// Export as a gzip-compressed tar stream (cocoon's `ExportCompressed`), compressed on every core.
pub trait CompressedExporter {
    /// The snapshot as `export` writes it, gzip-compressed. Dropping the stream stops the work.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound), [`Error::Ambiguous`](crate::Error::Ambiguous).
    fn export_compressed(&self, reference: &str) -> impl Future<Output = Result<TarStream>> + Send;
}

/// Export into a plain directory with `snapshot.json`, for rsync and NFS workflows.
pub trait DirectoryExporter {
    /// Clones the snapshot into `dir` (new or empty) without hardlinks, so the result stands
    /// alone, then writes `snapshot.json` last. On failure, everything it wrote is removed.
    ///
    /// ```no_run
    /// # async fn demo(store: snapstore::LocalFile) -> snapstore::Result<()> {
    /// use snapstore::DirectoryExporter;
    /// let report = store.export_to_dir("base", "/srv/export/base".into()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TargetNotEmpty`](crate::Error::TargetNotEmpty), [`Error::NotFound`](crate::Error::NotFound),
    /// [`Error::NoSpace`](crate::Error::NoSpace), [`Error::Io`](crate::Error::Io).
    fn export_to_dir(
        &self,
        reference: &str,
        dir: PathBuf,
    ) -> impl Future<Output = Result<CloneReport>> + Send;
}
