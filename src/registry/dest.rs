//! A pulled file as its windows are written into staging. Large aligned pieces go through a
//! second handle opened with O_DIRECT where the filesystem takes one, so that a pull's gigabytes
//! reach the disk without first being copied into the page cache and written back behind it; the
//! rest (small pieces, a file's last partial block, a filesystem without direct I/O) goes
//! through the cache.
//!
//! On the bench snapshot (a loopback registry, five alternating pulls, medians), writing past
//! the cache took a pull on XFS from 2.58 s to 1.74 s, and the whole machine's CPU time for it
//! from 3.1–5.7 to 2.1–2.4 seconds; on ext4 from 2.69 s to 1.69 s; on btrfs, whose kernel
//! serves a direct write of checksummed data through the cache after all, from 2.33 s to 2.18 s.
//!
//! Both handles name one inode, so the kernel keeps what they write coherent, and one fsync of
//! the file makes both durable.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::{self, DIRECT_ALIGN};

/// The smallest piece written directly. A direct write returns only once the device has the
/// data, so a small one waits longer than copying it into the cache would take: a child whose
/// windows were all 4 KiB runs, copied from its parent on ext4, took 10 s written directly
/// against 2.5–6.6 s through the cache.
const DIRECT_MIN: usize = 256 << 10;

/// A file being pulled, and where writes to it go.
pub(crate) struct Dest {
    file: File,
    path: PathBuf,
    /// The same file opened with O_DIRECT, where the filesystem allows it.
    direct: Option<File>,
    /// Cleared once the filesystem refuses a direct write: the rest goes through the cache.
    direct_ok: AtomicBool,
}

impl Dest {
    /// `file`, opened read-write at `path`, and a direct handle to it where one opens.
    pub(crate) fn new(file: File, path: PathBuf) -> Dest {
        // Any failure leaves the page cache to serve, which is always correct.
        let direct = sys::open_direct(&path).ok();
        Dest {
            file,
            path,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
        }
    }

    /// The file, for reads, clones and the closing fsync.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Allocates the region `pos..pos + len` before it is written, where it will be written
    /// directly: a direct write into a hole allocates just its own piece, wherever the
    /// filesystem finds room, so the pieces of windows written at once would interleave on disk
    /// (301 extents for the bench's memory on XFS, where its source has one). Allocated first,
    /// a region lies in one piece, and a clone of the pulled file costs what its source's does.
    pub(crate) fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        if !self.direct_ok.load(Ordering::Relaxed) || len < DIRECT_MIN as u64 {
            return Ok(());
        }
        match sys::allocate(&self.file, pos, len) {
            Err(e) if sys::allocate_unsupported(&e) => Ok(()),
            other => other,
        }
    }

    /// Writes all of `buf` at `pos`: directly when the piece is large, aligned in the file and
    /// in memory, and the filesystem takes it; through the page cache otherwise.
    pub(crate) fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let aligned = buf.len() >= DIRECT_MIN
            && pos.is_multiple_of(DIRECT_ALIGN as u64)
            && buf.len().is_multiple_of(DIRECT_ALIGN)
            && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        if let Some(direct) = &self.direct
            && aligned
            && self.direct_ok.load(Ordering::Relaxed)
        {
            match direct.write_all_at(buf, pos) {
                Ok(()) => return Ok(()),
                // A filesystem that takes the open but not the write: the whole piece again,
                // through the cache, over whatever part of it went through.
                Err(e) if sys::direct_unsupported(&e) => {
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(buf, pos)
    }
}

/// A zeroed buffer whose first byte is aligned for direct writes.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        // `align_offset` may decline to say (usize::MAX); the buffer is then used unaligned,
        // and its writes go through the cache.
        let start = match raw.as_ptr().align_offset(DIRECT_ALIGN) {
            n if n < DIRECT_ALIGN => n,
            _ => 0,
        };
        AlignedBuf { raw, start, len }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_unaligned_pieces_land_in_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        let dest = Dest::new(file, path.clone());
        let mut buf = AlignedBuf::new(DIRECT_MIN + DIRECT_ALIGN);
        let piece = buf.as_mut_slice();
        assert!((piece.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN));
        piece.fill(7);
        let end = DIRECT_ALIGN + piece.len();
        dest.write_at(piece, DIRECT_ALIGN as u64).expect("aligned");
        // Off the alignment in length, in the file, and in memory, and small.
        dest.write_at(&piece[..100], 5).expect("short");
        dest.write_at(&piece[1..DIRECT_MIN + 1], end as u64 + 1)
            .expect("unaligned");
        dest.write_at(
            &piece[..DIRECT_ALIGN],
            (end + DIRECT_MIN + DIRECT_ALIGN) as u64,
        )
        .expect("small");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), end + DIRECT_MIN + 2 * DIRECT_ALIGN);
        let is = |range: std::ops::Range<usize>, b: u8| bytes[range].iter().all(|&x| x == b);
        assert!(is(0..5, 0) && is(5..105, 7) && is(105..DIRECT_ALIGN, 0));
        assert!(is(DIRECT_ALIGN..end, 7) && is(end..end + 1, 0));
        assert!(is(end + 1..end + DIRECT_MIN + 1, 7));
        assert!(is(end + DIRECT_MIN + 1..end + DIRECT_MIN + DIRECT_ALIGN, 0));
        assert!(is(end + DIRECT_MIN + DIRECT_ALIGN..bytes.len(), 7));
    }
}
