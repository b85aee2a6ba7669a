//! Where everything lives under a store root `R`, laid out as cocoon's localfile backend:
//!
//! ```text
//! R/snapshot/db/snapshots.json     the index
//! R/snapshot/db/snapshots.lock     flock'd around every index read-modify-write
//! R/snapshot/db/snapshots.lookup   derived from the index: IDs and names to records' places
//! R/snapshot/localfile/ID/         a snapshot's data files, flat
//! R/snapshot/localfile/ID.lease    its lease (a file: cocoon's gc takes unknown dirs for orphans)
//! R/snapshot/localfile/ID.json     its sidecar: a copy of its record and file list, for fsck
//! R/snapshot/localfile/ID.chunks   its chunk record: window digests, made by push, pull, verify
//! R/snapshot/staging/ID/           a snapshot being created, on the same filesystem
//! R/snapshot/staging/pull-HEX/     a pull being downloaded, kept for a re-run to resume
//! ```
//!
//! Beside the paths, the two small per-snapshot files: the [`Lease`] and the sidecar. The store,
//! gc and fsck all find their way through here, and nothing here knows of them.

mod lease;
pub(crate) mod sidecar;

use std::path::{Path, PathBuf};

pub use lease::Lease;
pub(crate) use lease::last_use;

use crate::error::Result;
use crate::fsutil;
use crate::types::SnapshotId;

/// The prefix of a pull's staging dir and its journal and lock files.
pub(crate) const PULL_PREFIX: &str = "pull-";

/// Mode of every directory the store creates.
pub(crate) const DIR_MODE: u32 = 0o750;

/// The paths of a store rooted at one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The root used when none is given: `/var/lib/snapstore` for root, else
    /// `$XDG_DATA_HOME/snapstore`, else `~/.local/share/snapstore`.
    pub fn default_root() -> PathBuf {
        if crate::sys::is_root() {
            return PathBuf::from("/var/lib/snapstore");
        }
        let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
        match xdg.filter(|p| p.is_absolute()) {
            Some(data) => data.join("snapstore"),
            None => {
                let home =
                    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
                home.join(".local/share/snapstore")
            }
        }
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `R/snapshot`.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshot")
    }

    /// `R/snapshot/db`.
    pub fn db_dir(&self) -> PathBuf {
        self.snapshot_dir().join("db")
    }

    /// `R/snapshot/db/snapshots.json`.
    pub fn index_file(&self) -> PathBuf {
        self.db_dir().join("snapshots.json")
    }

    /// `R/snapshot/db/snapshots.lookup`: derived from the index, for cheap lookups.
    pub fn lookup_file(&self) -> PathBuf {
        self.db_dir().join("snapshots.lookup")
    }

    /// `R/snapshot/db/snapshots.lock`.
    pub fn index_lock(&self) -> PathBuf {
        self.db_dir().join("snapshots.lock")
    }

    /// `R/snapshot/localfile`: the data dirs.
    pub fn data_root(&self) -> PathBuf {
        self.snapshot_dir().join("localfile")
    }

    /// `R/snapshot/localfile/ID`.
    pub fn data_dir(&self, id: &SnapshotId) -> PathBuf {
        self.data_root().join(id.as_str())
    }

    /// `R/snapshot/localfile/ID.lease`.
    pub fn lease_file(&self, id: &SnapshotId) -> PathBuf {
        self.data_root().join(format!("{id}.lease"))
    }

    /// `R/snapshot/localfile/ID.json`.
    pub fn sidecar_file(&self, id: &SnapshotId) -> PathBuf {
        self.data_root().join(format!("{id}.json"))
    }

    /// `R/snapshot/staging`: snapshots being created, and scratch files.
    pub fn staging_root(&self) -> PathBuf {
        self.snapshot_dir().join("staging")
    }

    /// `R/snapshot/staging/ID`.
    pub fn staging_dir(&self, id: &SnapshotId) -> PathBuf {
        self.staging_root().join(id.as_str())
    }

    /// `R/snapshot/localfile/ID.chunks`: the chunk record a push, pull or verify made.
    pub fn chunks_file(&self, id: &SnapshotId) -> PathBuf {
        self.data_root().join(format!("{id}.chunks"))
    }

    /// `R/snapshot/staging/pull-HEX/`: the files of a pull of the manifest whose sha256 is
    /// `hex`, kept when the pull is cut off so that a re-run resumes.
    pub fn pull_dir(&self, hex: &str) -> PathBuf {
        self.staging_root().join(format!("{PULL_PREFIX}{hex}"))
    }

    /// `R/snapshot/staging/pull-HEX.journal`: the windows of that pull already on disk.
    pub fn pull_journal(&self, hex: &str) -> PathBuf {
        self.staging_root()
            .join(format!("{PULL_PREFIX}{hex}.journal"))
    }

    /// `R/snapshot/staging/pull-HEX.lock`: flock'd by the pull running.
    pub fn pull_lock(&self, hex: &str) -> PathBuf {
        self.staging_root().join(format!("{PULL_PREFIX}{hex}.lock"))
    }

    /// Removes the sidecars of `ids` durably: before an index write that drops their records,
    /// so that a crash after it never leaves a data dir with its sidecar but no record (which
    /// is how a lost index looks, and what fsck would bring back). On btrfs, an fsync of the
    /// index does not carry an unlink in another directory with it: the data root is fsynced.
    pub(crate) fn remove_sidecars<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a SnapshotId>,
    ) -> Result<()> {
        let mut any = false;
        for id in ids {
            fsutil::remove_all(&self.sidecar_file(id))?;
            any = true;
        }
        if any {
            fsutil::fsync_dir(&self.data_root())?;
        }
        Ok(())
    }

    /// Removes what a snapshot without a record leaves on disk: its data dir, staging dir and
    /// sidecar, and its lease file when `leased` (the caller holds the lease exclusively, so no
    /// one can be waiting on that inode and then on a fresh one).
    pub(crate) fn remove_traces(&self, id: &SnapshotId, leased: bool) -> Result<()> {
        fsutil::remove_all(&self.data_dir(id))?;
        fsutil::remove_all(&self.staging_dir(id))?;
        fsutil::remove_all(&self.sidecar_file(id))?;
        fsutil::remove_all(&self.chunks_file(id))?;
        if leased {
            fsutil::remove_all(&self.lease_file(id))?;
        }
        Ok(())
    }
}
