//! Hole-preserving file copy: the last rung of the clone ladder.
//!
//! The data segments are found with SEEK_DATA/SEEK_HOLE and copied with `copy_file_range(2)`,
//! which stays in the kernel; where that is not possible it falls back to read/write. The target
//! gets the source's exact size, and everything between segments stays a hole, so a 10 GiB disk
//! with 300 MiB of data allocates 300 MiB.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::progress::Progress;
use crate::sys;

/// Largest single `copy_file_range` request; the kernel may do less and is asked again. After
/// each, for a copy that will be fsynced, writeback of what was copied is started, so the closing
/// fsync does not wait for it all.
const RANGE_CHUNK: u64 = 32 << 20;

/// Buffer of the read/write fallback.
const BUF_SIZE: usize = 1 << 20;

/// Copies the first `len` bytes of `src` into the empty file `dst`, holes kept; returns the bytes
/// of data copied, advancing `progress` as it goes. With `durable`, writeback starts as it goes
/// and the caller fsyncs; without, the data is left to the kernel's writeback, as `cp` leaves it.
pub(crate) fn copy(
    src: &File,
    dst: &File,
    len: u64,
    durable: bool,
    progress: &Progress,
) -> io::Result<u64> {
    dst.set_len(len)?;
    let mut copied = 0;
    let out = Out {
        file: dst,
        durable,
        progress,
    };
    for (offset, length) in data_segments(src, len)? {
        copy_range(src, &out, offset, length)?;
        copied += length;
    }
    Ok(copied)
}

/// The `(offset, length)` of each data segment of the first `len` bytes of `file`, in order.
///
/// A filesystem that cannot tell holes from data reports the whole file as one segment.
pub(crate) fn data_segments(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut segments = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match sys::seek_data(file, pos)? {
            Some(start) if start < len => start,
            _ => break,
        };
        let end = sys::seek_hole(file, start)?.min(len);
        if end <= start {
            // A hole that ends where it starts: the file changed under us. Copy the rest as data
            // rather than loop; the size check after the copy catches a real truncation.
            segments.push((start, len - start));
            break;
        }
        segments.push((start, end - start));
        pos = end;
    }
    Ok(segments)
}

/// The target of a copy, and what each write into it is followed by.
struct Out<'a> {
    file: &'a File,
    durable: bool,
    progress: &'a Progress,
}

impl Out<'_> {
    /// Records `n` bytes written at `offset`.
    fn wrote(&self, offset: u64, n: usize) -> io::Result<()> {
        if self.durable {
            sys::start_writeback(self.file, offset, n as u64)?;
        }
        self.progress.advance(n as u64);
        Ok(())
    }
}

/// Copies `len` bytes at `offset` from `src` to the same offset of `out`.
fn copy_range(src: &File, out: &Out, offset: u64, len: u64) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(RANGE_CHUNK) as usize;
        match sys::copy_file_range(src, offset + done, out.file, offset + done, chunk) {
            Ok(0) => return Err(shrank()),
            Ok(n) => {
                out.wrote(offset + done, n)?;
                done += n as u64;
            }
            Err(e) if sys::copy_range_unsupported(&e) => {
                return read_write(src, out, offset + done, len - done);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The fallback: plain positioned reads and writes.
fn read_write(src: &File, out: &Out, offset: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE.min(len as usize)];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            return Err(shrank());
        }
        out.file.write_all_at(&buf[..n], offset + done)?;
        out.wrote(offset + done, n)?;
        done += n as u64;
    }
    Ok(())
}

fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "source file shrank during the copy",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use proptest::prelude::*;

    const BLOCK: u64 = 4096;

    /// A file of `blocks` 4 KiB blocks whose data blocks are those set in `layout`: written with
    /// a non-zero pattern, then every other block punched, so the holes exist on any filesystem.
    fn sparse_file(dir: &std::path::Path, layout: &[bool]) -> (std::path::PathBuf, File) {
        let path = dir.join("src");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(layout.len() as u64 * BLOCK).unwrap();
        for (i, &data) in layout.iter().enumerate() {
            let off = i as u64 * BLOCK;
            if data {
                let byte = (i % 251) as u8 + 1;
                file.write_all_at(&vec![byte; BLOCK as usize], off).unwrap();
            }
        }
        for (i, &data) in layout.iter().enumerate() {
            if !data {
                sys::punch_hole(&file, i as u64 * BLOCK, BLOCK).unwrap();
            }
        }
        file.sync_all().unwrap();
        (path, file)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the layout of data and holes: same bytes, same size, no more blocks.
        #[test]
        fn copy_keeps_bytes_size_and_holes(
            layout in proptest::collection::vec(any::<bool>(), 1..64),
            tail in 0u64..BLOCK,
            durable in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (src_path, src) = sparse_file(dir.path(), &layout);
            // An odd size: the last block is partial, or a few bytes past the last block.
            let len = layout.len() as u64 * BLOCK - tail;
            src.set_len(len).unwrap();
            let dst_path = dir.path().join("dst");
            let dst = std::fs::File::create(&dst_path).unwrap();
            let progress = Progress::new();
            let copied = copy(&src, &dst, len, durable, &progress).unwrap();
            if durable {
                dst.sync_all().unwrap();
            }
            prop_assert_eq!(progress.done(), copied, "progress counts the data copied");
            let a = std::fs::read(&src_path).unwrap();
            let b = std::fs::read(&dst_path).unwrap();
            prop_assert_eq!(a.len() as u64, len);
            prop_assert!(a == b, "bytes differ");
            let src_blocks = std::fs::metadata(&src_path).unwrap().blocks();
            let dst_blocks = std::fs::metadata(&dst_path).unwrap().blocks();
            prop_assert!(dst_blocks <= src_blocks, "copy allocated {dst_blocks} > {src_blocks}");
        }
    }

    #[test]
    fn all_hole_file_copies_to_all_hole() {
        let dir = tempfile::tempdir().unwrap();
        let (src_path, src) = sparse_file(dir.path(), &[false; 256]);
        let dst_path = dir.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        let progress = Progress::new();
        assert_eq!(copy(&src, &dst, 256 * BLOCK, false, &progress).unwrap(), 0);
        assert_eq!(progress.done(), 0);
        assert_eq!(std::fs::metadata(&dst_path).unwrap().len(), 256 * BLOCK);
        assert_eq!(std::fs::metadata(&dst_path).unwrap().blocks(), 0);
        drop(src_path);
    }

    #[test]
    fn read_write_fallback_copies_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (src_path, src) = sparse_file(dir.path(), &[true, false, true]);
        let dst_path = dir.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        dst.set_len(3 * BLOCK).unwrap();
        let progress = Progress::new();
        let out = Out {
            file: &dst,
            durable: true,
            progress: &progress,
        };
        read_write(&src, &out, 0, 3 * BLOCK).unwrap();
        assert_eq!(progress.done(), 3 * BLOCK);
        assert_eq!(
            std::fs::read(&src_path).unwrap(),
            std::fs::read(&dst_path).unwrap()
        );
        assert!(
            read_write(&src, &out, 2 * BLOCK, 2 * BLOCK).is_err(),
            "reading past the end"
        );
    }
}
