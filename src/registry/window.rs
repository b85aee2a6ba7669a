//! Reading a file window by window, as a push cuts it and as verify checks it: the data runs
//! of each window (holes and all-zero 4 KiB blocks left out, so that the result does not depend
//! on how the file happens to be allocated), their sha256, and their bytes streamed to a sink.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::clone::sparse::data_segments;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::registry::digest::Hasher;
use crate::registry::format::{BLOCK, Chunk};

/// Bytes read at a time.
const READ_SIZE: usize = 1 << 20;

/// A data file of a snapshot, opened for reading window by window.
pub(crate) struct WindowReader<'a> {
    file: File,
    path: &'a Path,
    size: u64,
    /// The file's data segments, asked of the filesystem once.
    segments: Vec<(u64, u64)>,
}

impl<'a> WindowReader<'a> {
    /// Opens `path` and asks for its data segments.
    pub(crate) fn open(path: &'a Path) -> Result<WindowReader<'a>> {
        let file = crate::fsutil::open(path)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let segments = data_segments(&file, size).map_err(|e| Error::io("seek", path, e))?;
        Ok(WindowReader {
            file,
            path,
            size,
            segments,
        })
    }

    /// The file's apparent size.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The offsets of the windows of `window` bytes that hold a data segment; only these can
    /// have data.
    pub(crate) fn windows_with_segments(&self, window: u64) -> Vec<u64> {
        let mut offsets: Vec<u64> = Vec::new();
        for &(start, len) in &self.segments {
            let mut w = start / window * window;
            while w < start + len {
                if offsets.last() != Some(&w) {
                    offsets.push(w);
                }
                w += window;
            }
        }
        offsets
    }

    /// Reads the window `[offset, offset + length)`, writing the bytes of its runs to `sink`
    /// back to back; `None` when it holds no data.
    pub(crate) fn read(
        &self,
        offset: u64,
        length: u64,
        sink: &mut dyn Write,
        progress: &Progress,
    ) -> Result<Option<Chunk>> {
        let end = (offset + length).min(self.size);
        let mut runs: Vec<[u64; 2]> = Vec::new();
        let mut extents: Vec<[u64; 2]> = Vec::new();
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; READ_SIZE];
        // The segments are sorted: start at the first one that reaches into the window.
        let first = self.segments.partition_point(|&(s, l)| s + l <= offset);
        for &(seg_start, seg_len) in &self.segments[first..] {
            if seg_start >= end {
                break;
            }
            let start = seg_start.max(offset);
            let stop = (seg_start + seg_len).min(end);
            if stop > start {
                extents.push([start, stop - start]);
            }
            let mut pos = start;
            while pos < stop {
                let want = (stop - pos).min(READ_SIZE as u64) as usize;
                let got = &mut buf[..want];
                self.file
                    .read_exact_at(got, pos)
                    .map_err(|e| Error::io("read", self.path, e))?;
                progress.advance(want as u64);
                // Split at absolute block boundaries, so that the runs do not depend on where
                // the filesystem's segments begin.
                let mut at = 0;
                while at < want {
                    let block_end = ((pos + at as u64) / BLOCK + 1) * BLOCK;
                    let piece = ((block_end - (pos + at as u64)) as usize).min(want - at);
                    let bytes = &got[at..at + piece];
                    if !is_zero(bytes) {
                        let here = pos + at as u64;
                        match runs.last_mut() {
                            Some([o, l]) if *o + *l == here => *l += piece as u64,
                            _ => runs.push([here, piece as u64]),
                        }
                        hasher.update(bytes);
                        sink.write_all(bytes)
                            .map_err(|e| Error::io("compress", self.path, e))?;
                    }
                    at += piece;
                }
                pos += want as u64;
            }
        }
        if runs.is_empty() {
            return Ok(None);
        }
        Ok(Some(Chunk {
            offset,
            length: end - offset,
            runs,
            digest: hasher.finish(),
            extents,
        }))
    }
}

/// Whether `bytes` are all zero: compared with a zero block, which is a `memcmp`.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    static ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];
    bytes
        .chunks(ZEROS.len())
        .all(|piece| piece == &ZEROS[..piece.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Digest;

    const MIB: u64 = 1 << 20;

    fn sparse_file(dir: &Path, size: u64, data: &[(u64, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("f");
        let file = File::create(&path).expect("create");
        file.set_len(size).expect("size");
        for (at, bytes) in data {
            file.write_all_at(bytes, *at).expect("write");
        }
        path
    }

    #[test]
    fn runs_leave_out_holes_and_zero_blocks_and_the_digest_covers_only_data() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut dense = vec![0u8; 3 * 4096];
        dense[..10].copy_from_slice(b"0123456789");
        dense[2 * 4096] = 7;
        let path = sparse_file(dir.path(), 40 * MIB, &[(MIB, &dense), (17 * MIB, b"x")]);
        let reader = WindowReader::open(&path).expect("open");
        let mut sink = Vec::new();
        let chunk = reader
            .read(0, 16 * MIB, &mut sink, &Progress::default())
            .expect("read")
            .expect("data");
        assert_eq!(chunk.runs, vec![[MIB, 4096], [MIB + 8192, 4096]]);
        assert_eq!(sink.len(), 8192);
        assert_eq!(chunk.digest, Digest::of(&sink));
        let second = reader
            .read(
                16 * MIB,
                16 * MIB,
                &mut std::io::sink(),
                &Progress::default(),
            )
            .expect("read")
            .expect("data");
        assert_eq!(second.runs, vec![[17 * MIB, 4096]]);
        let third = reader
            .read(
                32 * MIB,
                8 * MIB,
                &mut std::io::sink(),
                &Progress::default(),
            )
            .expect("read");
        assert_eq!(third, None);
    }

    #[test]
    fn the_same_bytes_give_the_same_runs_however_they_are_allocated() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a");
        std::fs::create_dir(&a).expect("dir");
        let sparse = sparse_file(&a, 2 * MIB, &[(4096, b"y")]);
        let dense_dir = dir.path().join("b");
        std::fs::create_dir(&dense_dir).expect("dir");
        let mut bytes = vec![0u8; 2 * MIB as usize];
        bytes[4096] = b'y';
        let dense = dense_dir.join("f");
        std::fs::write(&dense, &bytes).expect("write");
        let read = |p: &Path| {
            let r = WindowReader::open(p).expect("open");
            r.read(0, 16 * MIB, &mut std::io::sink(), &Progress::default())
                .expect("read")
        };
        let (sparse, dense) = (read(&sparse).expect("data"), read(&dense).expect("data"));
        assert!(sparse.same_data(&dense), "{sparse:?} {dense:?}");
        // Only the hint of where the blocks were differs.
        assert_ne!(sparse.extents, dense.extents);
    }

    #[test]
    fn a_tail_shorter_than_a_block_is_a_run_of_its_own_length() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = sparse_file(dir.path(), 4096 + 10, &[(4096, b"abc")]);
        let reader = WindowReader::open(&path).expect("open");
        let chunk = reader
            .read(0, 16 * MIB, &mut std::io::sink(), &Progress::default())
            .expect("read")
            .expect("data");
        assert_eq!(chunk.runs, vec![[4096, 10]]);
        assert_eq!(chunk.length, 4096 + 10);
        assert_eq!(reader.windows_with_segments(16 * MIB), vec![0]);
    }
}
