//! du: where the disk went. Per snapshot, its apparent bytes, its allocated bytes, and of those
//! how many it shares with other files (extents the kernel flags FIEMAP_EXTENT_SHARED, and every
//! block of a file with more than one hard link) and how many are its own: deleting the
//! snapshot frees its exclusive bytes, no more.
//!
//! The store's total also counts its distinct physical extents once each, however many
//! snapshots share them: what the store occupies on disk. On a filesystem without FIEMAP
//! (tmpfs), nothing is known to be shared.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::sys::{self, Extent};
use crate::types::SnapshotId;

/// Space one snapshot (or the whole store) takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The files' lengths, holes included.
    pub apparent_bytes: u64,
    /// Blocks allocated to the files (`st_blocks`).
    pub allocated_bytes: u64,
    /// Allocated bytes shared with other files: deleting the snapshot does not free them.
    pub shared_bytes: u64,
    /// Allocated bytes only this snapshot holds: what deleting it frees.
    pub exclusive_bytes: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.apparent_bytes += other.apparent_bytes;
        self.allocated_bytes += other.allocated_bytes;
        self.shared_bytes += other.shared_bytes;
        self.exclusive_bytes += other.exclusive_bytes;
    }
}

/// One snapshot's usage.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotUsage {
    /// Its ID.
    pub id: SnapshotId,
    /// Its name.
    pub name: String,
    /// Its space.
    #[serde(flatten)]
    pub usage: Usage,
}

/// What `du` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DuReport {
    /// Each snapshot asked about, in the order asked.
    pub snapshots: Vec<SnapshotUsage>,
    /// Their sums.
    pub total: Usage,
    /// Bytes of distinct physical extents under those snapshots, each counted once: what they
    /// occupy on disk together.
    pub on_disk_bytes: u64,
}

/// Measures the data dirs `dirs` (ID, name, dir).
pub(crate) fn measure(dirs: &[(SnapshotId, String, std::path::PathBuf)]) -> Result<DuReport> {
    let mut report = DuReport::default();
    let mut located: Vec<(u64, u64)> = Vec::new();
    for (id, name, dir) in dirs {
        let mut usage = Usage::default();
        for (file, meta) in fsutil::list_dir(dir)? {
            if !meta.is_file() {
                continue;
            }
            let path = dir.join(file);
            let (file_usage, extents) = measure_file(&path, &meta)?;
            usage.add(file_usage);
            located.extend(
                extents
                    .iter()
                    .filter(|e| e.has_location())
                    .map(|e| (e.physical, e.length)),
            );
        }
        report.total.add(usage);
        report.snapshots.push(SnapshotUsage {
            id: id.clone(),
            name: name.clone(),
            usage,
        });
    }
    report.on_disk_bytes = union_length(&mut located);
    Ok(report)
}

/// One file's usage, and its extents (none where FIEMAP is not supported).
fn measure_file(path: &Path, meta: &std::fs::Metadata) -> Result<(Usage, Vec<Extent>)> {
    let allocated = meta.blocks() * 512;
    let extents = match sys::fiemap(&fsutil::open(path)?) {
        Ok(extents) => extents,
        Err(e) if sys::fiemap_unsupported(&e) => Vec::new(),
        Err(e) => return Err(Error::io("read extents of", path, e)),
    };
    let shared = if meta.nlink() > 1 {
        allocated
    } else {
        let flagged: u64 = extents
            .iter()
            .filter(|e| e.is_shared())
            .map(|e| e.length)
            .sum();
        flagged.min(allocated)
    };
    let usage = Usage {
        apparent_bytes: meta.len(),
        allocated_bytes: allocated,
        shared_bytes: shared,
        exclusive_bytes: allocated - shared,
    };
    Ok((usage, extents))
}

/// The total length of the union of `(start, length)` ranges.
fn union_length(ranges: &mut [(u64, u64)]) -> u64 {
    ranges.sort_unstable();
    let mut total = 0;
    let mut covered_to = 0u64;
    for &(start, length) in ranges.iter() {
        let end = start.saturating_add(length);
        if end > covered_to {
            total += end - start.max(covered_to);
            covered_to = end;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_length_counts_overlaps_once() {
        assert_eq!(union_length(&mut []), 0);
        assert_eq!(union_length(&mut [(0, 10), (20, 5)]), 15);
        assert_eq!(union_length(&mut [(20, 5), (0, 10), (5, 10), (0, 10)]), 20);
        assert_eq!(union_length(&mut [(0, 100), (10, 5)]), 100);
    }

    #[test]
    fn extents_of_a_written_file_cover_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let (usage, extents) = measure_file(&path, &meta).unwrap();
        assert_eq!(usage.apparent_bytes, 64 << 10);
        assert_eq!(
            usage.shared_bytes + usage.exclusive_bytes,
            usage.allocated_bytes
        );
        assert_eq!(usage.shared_bytes, 0, "a fresh file shares nothing");
        // Keyed to what the kernel answers here, not to the filesystem's name.
        let file = std::fs::File::open(&path).unwrap();
        if let Err(e) = sys::fiemap(&file) {
            assert!(sys::fiemap_unsupported(&e), "{e}");
            eprintln!("SKIPPED: the temp dir's filesystem has no FIEMAP ({e})");
            return;
        }
        let mapped: u64 = extents.iter().map(|e| e.length).sum();
        assert!(mapped >= 64 << 10, "{extents:?}");
    }
}
