//! The one public error type of snapstore.
//!
//! Every variant names the path, ref or snapshot it is about; the underlying cause, when there is
//! one, is the `#[source]`, so `main.rs` can print the chain without repeating it.

use std::io;
use std::path::{Path, PathBuf};

use crate::types::SnapshotId;
use crate::units::shown;

/// What went wrong, with the path or ref it went wrong on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No complete snapshot matches the ref.
    #[error("no snapshot matches {reference:?}")]
    NotFound {
        /// The ref as given.
        reference: String,
    },

    /// An ID prefix matches more than one snapshot.
    #[error("ref {reference:?} is ambiguous: it is a prefix of {}", join_ids(.matches))]
    Ambiguous {
        /// The ref as given.
        reference: String,
        /// Every ID it is a prefix of.
        matches: Vec<SnapshotId>,
    },

    /// The name is already held by another snapshot (complete or still being created).
    #[error("snapshot name {name:?} is already taken by {id}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The snapshot holding it.
        id: SnapshotId,
    },

    /// The snapshot is leased by a reader (a clone, an export, a `data_dir` caller) or a creator.
    #[error("snapshot {id} is in use")]
    InUse {
        /// The snapshot that is leased.
        id: SnapshotId,
    },

    /// A directory was expected to carry `snapshot.json` and does not.
    #[error("snapshot.json missing in {}", shown(.dir))]
    EnvelopeMissing {
        /// The directory without an envelope.
        dir: PathBuf,
    },

    /// `snapshot.json` is not valid JSON of the envelope's shape.
    #[error("malformed snapshot envelope {}", shown(.path))]
    EnvelopeInvalid {
        /// The envelope file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },

    /// `snapshot.json` carries a version other than 1.
    #[error("unsupported snapshot envelope version {version} in {} (want 1)", shown(.path))]
    EnvelopeVersion {
        /// The envelope file.
        path: PathBuf,
        /// The version it carries.
        version: u64,
    },

    /// A file the envelope lists is not in the directory.
    #[error("{name:?} listed by the envelope is missing from {}", shown(.dir))]
    ListedFileMissing {
        /// The directory that should hold it.
        dir: PathBuf,
        /// The missing file's name.
        name: String,
    },

    /// A data file name is not one plain path component (it has a `/`, is `..`, is empty, ...).
    #[error("invalid data file name {name:?} in {}", shown(.dir))]
    InvalidFileName {
        /// Where the name came from (a directory or an envelope).
        dir: PathBuf,
        /// The name.
        name: String,
    },

    /// A pattern of immutable file names is not a valid shell glob.
    #[error("invalid immutable file pattern {pattern:?}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What the glob parser said.
        #[source]
        source: globset::Error,
    },

    /// A sidecar (`R/snapshot/localfile/ID.json`) is not valid sidecar JSON.
    #[error("malformed sidecar {}", shown(.path))]
    SidecarInvalid {
        /// The sidecar file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },

    /// A sidecar carries a version this snapstore does not know.
    #[error("unsupported sidecar version {version} in {} (want 1)", shown(.path))]
    SidecarVersion {
        /// The sidecar file.
        path: PathBuf,
        /// The version it carries.
        version: u64,
    },

    /// A source directory holds entries with data a snapshot would not carry (symlinks,
    /// directories with something in them, devices, names that are not UTF-8); nothing was
    /// saved.
    #[error(
        "{} holds what a snapshot cannot carry: {}; nothing was saved \
         (--dereference stores a symlink's target, --skip-unsupported leaves such entries out)",
        shown(.dir),
        list_entries(.entries)
    )]
    UnsupportedEntries {
        /// The source directory.
        dir: PathBuf,
        /// Every such entry, with what it is.
        entries: Vec<crate::types::Skipped>,
    },

    /// A data file to clone or save is not a regular file (a symlink, a directory, a device).
    #[error("{} is not a regular file", shown(.path))]
    NotARegularFile {
        /// The path.
        path: PathBuf,
    },

    /// The OS's random number generator could not give the bytes of a new snapshot ID.
    #[error("cannot read random bytes for a new snapshot ID")]
    Random {
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// A config file is not valid config JSON (nor an envelope).
    #[error("malformed snapshot config {}", shown(.path))]
    ConfigInvalid {
        /// The config file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },

    /// A file could only be copied, and the caller forbade copying.
    #[error("cannot clone {} without copying its data (copy forbidden by --require-cow)", shown(.path))]
    CowRequired {
        /// The source file that would have needed a copy.
        path: PathBuf,
    },

    /// The target filesystem has less free space than the bytes to copy.
    #[error("not enough space in {}: {needed} bytes to copy, {available} available", shown(.path))]
    NoSpace {
        /// The target directory.
        path: PathBuf,
        /// Bytes the copy would allocate.
        needed: u64,
        /// Bytes free for an unprivileged writer.
        available: u64,
    },

    /// The index file exists but cannot be read as an index; it is never replaced.
    #[error("corrupt snapshot index {}: refusing to touch it", shown(.path))]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },

    /// A target directory must be new or empty and is not.
    #[error("target directory {} is not empty", shown(.path))]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },

    /// A path that must be a directory is something else.
    #[error("{} is not a directory", shown(.path))]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// An archive entry that could write outside the snapshot, or is not what a snapshot holds.
    #[error("refusing entry {entry:?} of {}: {reason}", shown(.archive))]
    HostileEntry {
        /// The archive (its path, or `<stdin>`).
        archive: PathBuf,
        /// The entry's name as the archive gives it.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A rung of the clone ladder failed for a reason other than "not possible here".
    #[error("cannot {method} {} to {}", shown(.src), shown(.dst))]
    Clone {
        /// The rung that failed.
        method: crate::types::CloneMethod,
        /// The file being cloned.
        src: PathBuf,
        /// Where it was going.
        dst: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// A system call on a path failed.
    #[error("cannot {op} {}", shown(.path))]
    Io {
        /// What was being done: `open`, `clone`, `rename`, ...
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// A registry reference that does not parse.
    #[error("invalid registry reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Which part is wrong.
        reason: &'static str,
    },

    /// A chunk size a push cannot use.
    #[error("chunk size {size} is not a multiple of 4 KiB from 16 to 256 MiB")]
    InvalidChunkSize {
        /// The size asked for.
        size: u64,
    },

    /// A registry could not be reached, or the connection broke and retries did not help.
    #[error("cannot reach registry {registry}")]
    RegistryUnreachable {
        /// `host[:port]`.
        registry: String,
        /// What the transport said.
        #[source]
        source: io::Error,
    },

    /// The registry wants credentials, or refused the ones given (401, 403).
    #[error("registry {registry} refused access to {repository:?} ({status}): {hint}")]
    RegistryDenied {
        /// `host[:port]`.
        registry: String,
        /// The repository.
        repository: String,
        /// The HTTP status.
        status: u16,
        /// What to do about it.
        hint: &'static str,
    },

    /// The registry answered a request with a status that ends the operation.
    #[error("registry {registry} answered {status} to {what}: {message:?}")]
    Registry {
        /// `host[:port]`.
        registry: String,
        /// The request: `PUT manifest v1`, `GET blob sha256:…`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The registry's own words, shortened.
        message: String,
    },

    /// The tag or digest is not in the repository.
    #[error("{reference} is not in the registry")]
    ManifestUnknown {
        /// The reference.
        reference: String,
    },

    /// The manifest is there but is not a snapstore snapshot.
    #[error("{reference} is not a snapstore snapshot: {reason}")]
    NotAnArtifact {
        /// The reference.
        reference: String,
        /// What it is instead.
        reason: String,
    },

    /// The artifact's config does not describe a snapshot that can be written safely.
    #[error("invalid snapstore artifact {reference}: {reason}")]
    ArtifactInvalid {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },

    /// A blob from the registry failed its checks; nothing of it was committed.
    #[error("blob {digest} of {reference} for {file:?} bytes {start}..{end}: {reason}")]
    BlobInvalid {
        /// The reference.
        reference: String,
        /// The layer's digest.
        digest: String,
        /// The file the window belongs to.
        file: String,
        /// The window's first byte.
        start: u64,
        /// The window's end.
        end: u64,
        /// What is wrong.
        reason: String,
    },

    /// Credentials could not be read.
    #[error("cannot read registry credentials from {}: {reason}", shown(.path))]
    Credentials {
        /// The file, or `<stdin>`.
        path: PathBuf,
        /// What is wrong; never the secret.
        reason: String,
    },

    /// A blocking task of the async API panicked or was cancelled.
    #[error("store task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// `Result` with snapstore's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The errno behind this error, when it came from the kernel.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Clone { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn list_entries(entries: &[crate::types::Skipped]) -> String {
    entries
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_ids(ids: &[SnapshotId]) -> String {
    ids.iter()
        .map(SnapshotId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
