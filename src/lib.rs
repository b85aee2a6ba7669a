//! snapstore: a local snapshot store for virtual machines, built on reflinks.
//!
//! A VM snapshot is a flat directory of a few large files (guest memory, a sparse copy-on-write
//! disk) and some small ones. snapstore keeps each snapshot as per-file clones in a per-ID data
//! directory and clones it back out in milliseconds, by the first rung of the clone ladder that
//! works: FICLONE (btrfs, XFS), then a hardlink for files never written again (guest memory),
//! then a copy that keeps holes.
//!
//! The on-disk layout and the index are those of cocoon's localfile snapshot backend, so
//! snapstore can manage a cocoon root. Read the modules in order to see the whole design; each
//! uses only those before it:
//! types → index → resolve → envelope → layout → clone ladder → archive → gc → fsck → du →
//! store (the façade over them all).
//!
//! ```no_run
//! # async fn demo() -> snapstore::Result<()> {
//! use snapstore::{CloneOptions, CloneSource, Config, LocalFile, SaveOptions, Snapshot};
//!
//! let store = LocalFile::open("/var/lib/snapstore")?;
//! let config = Config { name: "base".into(), ..Config::default() };
//! let saved = store.create(config, "/run/vm1/snapshot".into(), SaveOptions::default()).await?;
//! let clone = store
//!     .clone_to_dir(CloneSource::Ref("base".into()), "/run/vm2".into(), CloneOptions::default())
//!     .await?;
//! for file in &clone.files {
//!     println!("{} {} {}", file.name, file.method, file.bytes);
//! }
//! # Ok(()) }
//! ```

mod archive;
mod clone;
mod du;
mod envelope;
mod error;
mod fsck;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod gc;
mod index;
mod layout;
mod lookup;
mod progress;
mod registry;
mod resolve;
mod store;
#[doc(hidden)]
pub mod synthetic;
#[allow(unsafe_code)] // sync_file_range, FIEMAP and mallopt, each with its SAFETY note
mod sys;
mod types;
mod units;

pub use crate::archive::{
    Compression, DEFAULT_MAX_FILE_SIZE, ExportOptions, ImportOptions, SparseFormat,
};
pub use crate::clone::probe::Capabilities;
pub use crate::clone::{DEFAULT_IMMUTABLE_PATTERNS, FileClasses};
pub use crate::du::{DuReport, SnapshotUsage, Usage};
pub use crate::envelope::{
    ENVELOPE_FILE, ENVELOPE_VERSION, Envelope, read as read_envelope, read_config,
};
pub use crate::error::{Error, Result};
pub use crate::fsck::{FsckReport, Problem, ProblemKind};
pub use crate::gc::{
    DEFAULT_GRACE, Eviction, GcModule, GcOptions, GcOrchestrator, GcReport, Leftover, Removal,
};
pub use crate::layout::{Layout, Lease};
pub use crate::progress::Progress;
pub use crate::registry::{
    Connection, Credentials, DEFAULT_CHUNK_SIZE, Digest, LayerCompression, MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE, Mismatch, PullOptions, PullReport, PushOptions, PushReport, Reference,
    VerifiedSnapshot, VerifyOptions, VerifyReport, VerifyStatus,
};
pub use crate::store::{
    CloneOptions, CloneReport, CloneSource, CompressedExporter, CreateReport, DirExportOptions,
    DirImportOptions, Direct, DirectoryExporter, LocalFile, SaveMode, SaveOptions, Snapshot,
    TarStream,
};
pub use crate::sys::tune_malloc_for_one_shot;
pub use crate::types::{BlobMark, CloneMethod, Config, FileReport, Record, Skipped, SnapshotId};
pub use crate::units::{Shown, parse_duration, parse_size, shown};

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
