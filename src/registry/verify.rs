//! Verify: each data file of a snapshot read again, window by window, and compared with its
//! chunk record (the digests a push, a pull or `verify --record` wrote). A window whose runs or
//! digest differ is reported with its byte range; so is a file whose size changed, a file
//! missing, and data where the record says there is none.

use std::path::Path;

use serde::Serialize;

use crate::clone::parallel;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::registry::format::DEFAULT_CHUNK_SIZE;
use crate::registry::record::{ChunkRecord, RecordedChunk, RecordedFile};
use crate::registry::window::WindowReader;
use crate::types::SnapshotId;

/// Options of [`LocalFile::verify`](crate::LocalFile::verify).
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Compute and record digests for snapshots that have none yet, instead of reporting them.
    pub record: bool,
}

/// A range of a file whose bytes are not those recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The data file.
    pub file: String,
    /// The first byte of the range.
    pub start: u64,
    /// The end of the range.
    pub end: u64,
    /// What differs.
    pub reason: String,
}

/// How one snapshot fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyStatus {
    /// Every window matches its recorded digest.
    Ok,
    /// Some do not: see the mismatches.
    Mismatch,
    /// No digests are recorded for it; `--record` records them.
    Unrecorded,
    /// Its digests were computed and recorded now.
    Recorded,
}

/// One snapshot's verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSnapshot {
    /// Its ID.
    pub id: SnapshotId,
    /// Its name.
    pub name: String,
    /// The outcome.
    pub status: VerifyStatus,
    /// Data bytes read.
    pub bytes_checked: u64,
    /// What differs, when anything does.
    pub mismatches: Vec<Mismatch>,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// One entry per snapshot verified.
    pub snapshots: Vec<VerifiedSnapshot>,
}

impl VerifyReport {
    /// Whether any snapshot has a mismatch.
    pub fn has_mismatch(&self) -> bool {
        self.snapshots
            .iter()
            .any(|s| s.status == VerifyStatus::Mismatch)
    }
}

/// The windows of one file as they are on disk now.
fn scan(path: &Path, chunk_size: u64, progress: &Progress) -> Result<RecordedFile> {
    let reader = WindowReader::open(path)?;
    let mut chunks = Vec::new();
    for offset in reader.windows_with_segments(chunk_size) {
        if let Some(chunk) = reader.read(offset, chunk_size, &mut std::io::sink(), progress)? {
            chunks.push(RecordedChunk { chunk, zstd: None });
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(RecordedFile {
        name,
        size: reader.size(),
        chunks,
    })
}

/// A new chunk record of the files `names` of `dir`.
pub(crate) fn record(dir: &Path, names: &[String], progress: &Progress) -> Result<ChunkRecord> {
    let files = parallel(names, |name| {
        scan(&dir.join(name), DEFAULT_CHUNK_SIZE, progress)
    })?;
    Ok(ChunkRecord::new(DEFAULT_CHUNK_SIZE, files))
}

/// Compares the files `names` of `dir` with `record`; the mismatches and the data bytes read.
pub(crate) fn check(
    dir: &Path,
    names: &[String],
    record: &ChunkRecord,
    progress: &Progress,
) -> Result<(Vec<Mismatch>, u64)> {
    let mut mismatches = Vec::new();
    for recorded in &record.files {
        if !names.contains(&recorded.name) {
            mismatches.push(Mismatch {
                file: recorded.name.clone(),
                start: 0,
                end: recorded.size,
                reason: "recorded but missing".into(),
            });
        }
    }
    let scanned = parallel(names, |name| {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", &path, e)),
            Ok(_) => scan(&path, record.chunk_size, progress).map(Some),
        }
    })?;
    let mut bytes = 0;
    for (name, now) in names.iter().zip(scanned) {
        let Some(now) = now else { continue };
        bytes += now.chunks.iter().map(|c| c.chunk.data_len()).sum::<u64>();
        let Some(was) = record.files.iter().find(|f| &f.name == name) else {
            mismatches.push(Mismatch {
                file: name.clone(),
                start: 0,
                end: now.size,
                reason: "not in the chunk record".into(),
            });
            continue;
        };
        if was.size != now.size {
            mismatches.push(Mismatch {
                file: name.clone(),
                start: was.size.min(now.size),
                end: was.size.max(now.size),
                reason: format!("size is {}, recorded {}", now.size, was.size),
            });
            continue;
        }
        mismatches.extend(compare(name, &was.chunks, &now.chunks));
    }
    Ok((mismatches, bytes))
}

/// The windows at which two lists of chunks (sorted by offset) differ.
fn compare(name: &str, was: &[RecordedChunk], now: &[RecordedChunk]) -> Vec<Mismatch> {
    let mut offsets: Vec<(u64, u64)> = was
        .iter()
        .chain(now)
        .map(|c| (c.chunk.offset, c.chunk.end()))
        .collect();
    offsets.sort_unstable();
    offsets.dedup_by_key(|(offset, _)| *offset);
    let at = |list: &[RecordedChunk], offset: u64| {
        list.iter()
            .find(|c| c.chunk.offset == offset)
            .map(|c| c.chunk.clone())
    };
    offsets
        .into_iter()
        .filter_map(|(start, end)| {
            let (was, now) = (at(was, start), at(now, start));
            let reason = match (&was, &now) {
                (Some(w), Some(n)) if w.same_data(n) => return None,
                (None, None) => return None,
                (Some(w), Some(n)) if w.runs != n.runs => "its data runs differ from the record",
                (Some(_), Some(_)) => "its data does not match its recorded digest",
                (Some(_), None) => "the record has data here, the file has none",
                (None, Some(_)) => "the file has data here, the record has none",
            };
            Some(Mismatch {
                file: name.to_string(),
                start,
                end,
                reason: reason.into(),
            })
        })
        .collect()
}
