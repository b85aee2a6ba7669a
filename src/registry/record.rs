//! The chunk record, `R/snapshot/localfile/ID.chunks`: the windows of each data file of a
//! snapshot, their runs and digests, and the zstd layer each compressed to. Written once, by
//! the first push, pull or `verify --record`, and trusted after that: store files never change
//! (they are 0444), so a re-push reads no data file and a verify has digests to check against.
//!
//! ```json
//! { "version": 1, "chunk_size": 67108864, "files": [ { "name": "disk.raw", "size": 8589934592,
//!   "chunks": [ { "offset": 0, "length": 67108864, "runs": [[0, 4096]], "digest": "sha256:…",
//!                 "zstd": { "digest": "sha256:…", "size": 1234 } } ] } ] }
//! ```
//!
//! Beside the data dir, not in it, so the data files stay exactly the snapshot's. A record that
//! does not parse, or whose sizes disagree with the files, is ignored and written anew.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::registry::digest::Digest;
use crate::registry::format::Chunk;

/// The only record version there is.
const RECORD_VERSION: u64 = 1;

/// Mode of a record: readable as the sidecar is.
const RECORD_MODE: u32 = 0o644;

/// A blob as a registry holds it: its digest and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Blob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// A window, and its zstd blob once one was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedChunk {
    #[serde(flatten)]
    pub(crate) chunk: Chunk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) zstd: Option<Blob>,
}

/// The windows of one data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedFile {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) chunks: Vec<RecordedChunk>,
}

/// The chunk record of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkRecord {
    pub(crate) version: u64,
    pub(crate) chunk_size: u64,
    pub(crate) files: Vec<RecordedFile>,
}

impl ChunkRecord {
    /// A record of `files` cut into windows of `chunk_size`.
    pub(crate) fn new(chunk_size: u64, files: Vec<RecordedFile>) -> ChunkRecord {
        ChunkRecord {
            version: RECORD_VERSION,
            chunk_size,
            files,
        }
    }

    /// The record at `path`; `None` when there is none, or it does not parse (it is derived
    /// data, made again).
    pub(crate) fn read(path: &Path) -> Option<ChunkRecord> {
        let bytes = std::fs::read(path).ok()?;
        let record: ChunkRecord = serde_json::from_slice(&bytes).ok()?;
        (record.version == RECORD_VERSION).then_some(record)
    }

    /// Writes the record at `path`, atomically and durably.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec(self)
            .map_err(|e| Error::io("serialize", path, std::io::Error::other(e)))?;
        bytes.push(b'\n');
        fsutil::write_atomic(path, &bytes, RECORD_MODE)
    }

    /// The recorded file `name`, if its size is still `size`.
    pub(crate) fn file(&self, name: &str, size: u64) -> Option<&RecordedFile> {
        self.files.iter().find(|f| f.name == name && f.size == size)
    }
}
