//! The sidecar, `R/snapshot/localfile/ID.json`: a copy of a snapshot's record and file list,
//! kept beside (not inside) its data dir so the data files stay exactly the snapshot's.
//!
//! ```json
//! { "version": 1, "record": { "id": "ID", "name": "base", ..., "size_bytes": 9663676416 },
//!   "files": [ { "name": "disk.raw", "bytes": 8589934592 }, { "name": "mem", "bytes": 1073741824 } ] }
//! ```
//!
//! Written durably to a temp file before a snapshot is committed, and renamed into place under
//! the index lock just after the index names the snapshot; removed first by `rm`. So a data dir
//! without a record but with a sidecar means a lost index, never a half-done save or delete.
//! fsck rebuilds the index from sidecars.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::types::Record;

/// The only sidecar version there is.
const SIDECAR_VERSION: u64 = 1;

/// Mode of a sidecar: readable as the index is.
const SIDECAR_MODE: u32 = 0o644;

/// A sidecar's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sidecar {
    pub(crate) version: u64,
    pub(crate) record: Record,
    pub(crate) files: Vec<SidecarFile>,
}

/// One data file as the snapshot was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SidecarFile {
    pub(crate) name: String,
    pub(crate) bytes: u64,
}

impl Sidecar {
    /// The sidecar of a complete `record` whose data files are `files`: (name, size) pairs.
    pub(crate) fn new<'a>(
        record: Record,
        files: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Sidecar {
        Sidecar {
            version: SIDECAR_VERSION,
            record,
            files: files
                .into_iter()
                .map(|(name, bytes)| SidecarFile {
                    name: name.to_string(),
                    bytes,
                })
                .collect(),
        }
    }

    /// Writes the sidecar at `path` atomically and durably.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        self.stage(path)?.commit()
    }

    /// Writes the sidecar durably beside `path`, to be renamed into place by
    /// [`fsutil::Staged::commit`].
    pub(crate) fn stage(&self, path: &Path) -> Result<fsutil::Staged> {
        let mut bytes = serde_json::to_vec(self)
            .map_err(|e| Error::io("serialize", path, std::io::Error::other(e)))?;
        bytes.push(b'\n');
        fsutil::Staged::write(path, &bytes, SIDECAR_MODE, true)
    }

    /// Reads the sidecar at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::SidecarInvalid`] when it does not parse,
    /// [`Error::SidecarVersion`].
    pub(crate) fn read(path: &Path) -> Result<Sidecar> {
        let bytes = fsutil::read(path)?;
        let sidecar: Sidecar =
            serde_json::from_slice(&bytes).map_err(|source| Error::SidecarInvalid {
                path: path.to_path_buf(),
                source,
            })?;
        if sidecar.version != SIDECAR_VERSION {
            return Err(Error::SidecarVersion {
                path: path.to_path_buf(),
                version: sidecar.version,
            });
        }
        Ok(sidecar)
    }
}
