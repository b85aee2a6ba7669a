//! The one place snapstore calls the kernel and the C library directly: FICLONE, hard links,
//! SEEK_DATA/SEEK_HOLE, copy_file_range, fallocate, O_DIRECT, FIEMAP, flock, statfs,
//! directory fsync, and glibc's malloc tuning for the CLI.
//!
//! Every function is safe, takes `&File` or `&Path` and returns `io::Result`, so the errno reaches
//! the caller intact. The crate's only `unsafe` calls live here (sync_file_range, FIEMAP, mallopt), each
//! with its SAFETY note. Which errnos mean "this rung of the ladder is not possible here" is
//! decided by the `*_unsupported` predicates kept beside each call.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Whence;

/// Clones every extent of `src` into the empty file `dst` (the FICLONE ioctl, `ioctl_ficlone(2)`).
pub(crate) fn ficlone(dst: &File, src: &File) -> io::Result<()> {
    reflink_copy::reflink_file(src, dst)
}

/// Clones `len` bytes of `src` at `src_offset` into `dst` at `dst_offset` (the FICLONERANGE
/// ioctl): the ranges then share extents. Offsets and `len` must be block-aligned, except a
/// range that ends at `src`'s end of file. `clone_unsupported` sorts its errors.
pub(crate) fn ficlone_range(
    dst: &File,
    dst_offset: u64,
    src: &File,
    src_offset: u64,
    len: u64,
) -> io::Result<()> {
    let Some(len) = std::num::NonZeroU64::new(len) else {
        return Ok(());
    };
    reflink_copy::ReflinkBlockBuilder::new(src, dst, len)
        .from_offset(src_offset)
        .to_offset(dst_offset)
        .reflink_block()
}

/// Whether a FICLONE error means "reflink is not possible here", not "something went wrong".
///
/// EOPNOTSUPP: the filesystem cannot share extents (ext4, tmpfs, XFS without reflink=1).
/// EXDEV: source and target are on different filesystems. EINVAL: the filesystem has no such
/// ioctl or the range is not clonable. ENOTTY: the file is not on a filesystem that knows it.
/// Anything else (EIO, ENOSPC, EACCES, ...) is a real failure and goes back to the caller.
pub(crate) fn clone_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY)
    )
}

/// Makes `dst` a new name for the inode at `src` (`link(2)`).
pub(crate) fn hard_link(src: &Path, dst: &Path) -> io::Result<()> {
    #[expect(
        clippy::disallowed_methods,
        reason = "sys.rs is where the ladder's syscalls live"
    )]
    std::fs::hard_link(src, dst)
}

/// Whether a `link(2)` error means "a hardlink is not possible here".
///
/// EXDEV: another filesystem. EMLINK: the inode has too many links. EPERM: the filesystem has
/// no hard links, or `fs.protected_hardlinks` refuses them to this user.
pub(crate) fn link_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EXDEV | Errno::EMLINK | Errno::EPERM)
    )
}

/// Whether a `rename(2)` error means "source and target are on different filesystems" (EXDEV),
/// which `save --move` answers by cloning instead.
pub(crate) fn rename_crosses_filesystems(e: &io::Error) -> bool {
    e.raw_os_error().map(Errno::from_raw) == Some(Errno::EXDEV)
}

/// The offset of the first data at or after `offset`, or `None` when only a hole follows
/// (`lseek(2)` with SEEK_DATA, whose ENXIO means "no more data").
pub(crate) fn seek_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    match nix::unistd::lseek(file.as_fd(), to_off(offset)?, Whence::SeekData) {
        Ok(pos) => Ok(Some(pos as u64)),
        Err(Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The offset of the first hole at or after `offset`; the end of the file counts as a hole.
pub(crate) fn seek_hole(file: &File, offset: u64) -> io::Result<u64> {
    let pos = nix::unistd::lseek(file.as_fd(), to_off(offset)?, Whence::SeekHole)?;
    Ok(pos as u64)
}

/// Copies up to `len` bytes from `src` at `src_off` to `dst` at `dst_off` in the kernel
/// (`copy_file_range(2)`); returns the bytes copied, 0 at the source's end.
pub(crate) fn copy_file_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut off_in = to_off(src_off)?;
    let mut off_out = to_off(dst_off)?;
    Ok(nix::fcntl::copy_file_range(
        src.as_fd(),
        Some(&mut off_in),
        dst.as_fd(),
        Some(&mut off_out),
        len,
    )?)
}

/// Whether a `copy_file_range(2)` error means "use read/write instead": another filesystem on an
/// old kernel (EXDEV), no such syscall (ENOSYS), or a file type it does not handle.
pub(crate) fn copy_range_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL)
    )
}

/// Deallocates `len` bytes at `offset`, keeping the file's size (`fallocate(2)` PUNCH_HOLE).
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::FallocateFlags;
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    nix::fcntl::fallocate(file.as_fd(), flags, to_off(offset)?, to_off(len)?)?;
    Ok(())
}

/// Allocates `len` bytes at `offset` without writing them, keeping the file's size
/// (`fallocate(2)` with KEEP_SIZE): they read as zeros, and the filesystem can place the range
/// in one piece before writes fill it. `allocate_unsupported` sorts its errors.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::FallocateFlags;
    let flags = FallocateFlags::FALLOC_FL_KEEP_SIZE;
    nix::fcntl::fallocate(file.as_fd(), flags, to_off(offset)?, to_off(len)?)?;
    Ok(())
}

/// Whether `allocate` failed because the filesystem has no fallocate (EOPNOTSUPP).
pub(crate) fn allocate_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP))
}

/// Opens `path` for writing with O_DIRECT (`open(2)`): writes through the returned file go to
/// the device without passing through the page cache, and must start at, span, and come from
/// memory aligned to [`DIRECT_ALIGN`]. `direct_unsupported` sorts its errors and those of its
/// writes.
pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// The alignment snapstore's direct writes keep: the page size, a multiple of every block and
/// sector size Linux filesystems require for O_DIRECT (btrfs asks for its 4 KiB sector size).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Whether an O_DIRECT open or write failed because the filesystem cannot do it (EINVAL: no
/// direct I/O, or a stricter alignment than [`DIRECT_ALIGN`]), so the page cache must serve.
pub(crate) fn direct_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Starts writeback of a file's dirty pages in `offset..offset + len` (a `len` of 0: to the end)
/// without waiting for it (`sync_file_range(2)` with SYNC_FILE_RANGE_WRITE). A large write that calls this as it goes
/// overlaps its disk I/O with the rest of its work, so the closing fsync has little left to do.
/// It makes nothing durable by itself: metadata and ordering still need the fsync.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (offset, len) = (to_off(offset)?, to_off(len)?);
    // SAFETY: `file` is an open file borrowed for the duration of the call, so its descriptor is
    // valid; sync_file_range reads no memory of ours.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One extent of a file as FIEMAP reports it (`Documentation/filesystems/fiemap.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// Offset in the file.
    pub(crate) logical: u64,
    /// Offset on the device; meaningless for inline and unknown extents.
    pub(crate) physical: u64,
    /// Length in bytes.
    pub(crate) length: u64,
    flags: u32,
}

const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
const FIEMAP_FLAG_SYNC: u32 = 0x1;

impl Extent {
    /// The extent's blocks belong to other files too (a reflink, a snapshot, dedupe).
    pub(crate) fn is_shared(&self) -> bool {
        self.flags & FIEMAP_EXTENT_SHARED != 0
    }

    /// `physical` is a real, distinct place on the device.
    pub(crate) fn has_location(&self) -> bool {
        self.flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE)
            == 0
    }
}

/// `struct fiemap_extent` of `<linux/fiemap.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// How many extents one FIEMAP call asks for.
const FIEMAP_BATCH: usize = 256;

/// `struct fiemap` of `<linux/fiemap.h>`, with room for a batch of extents after its header.
#[repr(C)]
struct RawFiemap {
    header: FiemapHeader,
    fm_extents: [RawExtent; FIEMAP_BATCH],
}

/// The header alone, whose size the ioctl number encodes, as the kernel's `struct fiemap`.
#[repr(C)]
struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

nix::ioctl_readwrite!(fs_ioc_fiemap, b'f', 11, FiemapHeader);

/// Every extent of `file`, in file order (`FS_IOC_FIEMAP`, synced first so delayed allocation
/// shows as real extents). EOPNOTSUPP on filesystems without FIEMAP (tmpfs).
pub(crate) fn fiemap(file: &File) -> io::Result<Vec<Extent>> {
    use std::os::fd::AsRawFd;
    let mut extents = Vec::new();
    let mut start = 0u64;
    loop {
        let mut request = Box::new(RawFiemap {
            header: FiemapHeader {
                fm_start: start,
                fm_length: u64::MAX - start,
                fm_flags: FIEMAP_FLAG_SYNC,
                fm_mapped_extents: 0,
                fm_extent_count: FIEMAP_BATCH as u32,
                fm_reserved: 0,
            },
            fm_extents: [RawExtent::default(); FIEMAP_BATCH],
        });
        // SAFETY: `file` is open for the whole call. The pointer covers all of `request`, a live,
        // exclusively borrowed `struct fiemap` (its header first, `repr(C)`) followed by room for
        // `fm_extent_count` extents, which is all the kernel writes; the header type only gives
        // the ioctl its number.
        unsafe {
            fs_ioc_fiemap(
                file.as_raw_fd(),
                std::ptr::from_mut(&mut *request).cast::<FiemapHeader>(),
            )
        }?;
        let mapped = (request.header.fm_mapped_extents as usize).min(FIEMAP_BATCH);
        let batch = &request.fm_extents[..mapped];
        extents.extend(batch.iter().map(|e| Extent {
            logical: e.fe_logical,
            physical: e.fe_physical,
            length: e.fe_length,
            flags: e.fe_flags,
        }));
        match batch.last() {
            Some(last) if last.fe_flags & FIEMAP_EXTENT_LAST == 0 => {
                start = last.fe_logical.saturating_add(last.fe_length);
            }
            _ => return Ok(extents),
        }
    }
}

/// Whether a FIEMAP error means the filesystem cannot map extents (tmpfs: EOPNOTSUPP).
pub(crate) fn fiemap_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EOPNOTSUPP | Errno::ENOTTY)
    )
}

/// Flushes a directory's entries to disk, so a rename or a new file in it survives power loss.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A `flock(2)` held on an open file until drop.
///
/// The lock belongs to the open file description, so it holds across threads of this process
/// and ends when the process dies, however it dies.
#[derive(Debug)]
pub(crate) struct FileLock(Flock<File>);

impl FileLock {
    /// The locked file.
    pub(crate) fn file(&self) -> &File {
        &self.0
    }

    /// Waits for the lock, shared or exclusive.
    pub(crate) fn lock(file: File, exclusive: bool) -> io::Result<FileLock> {
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg)
            .map(FileLock)
            .map_err(|(_, e)| e.into())
    }

    /// Takes the lock if no one holds a conflicting one; `None` when someone does.
    pub(crate) fn try_lock(file: File, exclusive: bool) -> io::Result<Option<FileLock>> {
        let arg = if exclusive {
            FlockArg::LockExclusiveNonblock
        } else {
            FlockArg::LockSharedNonblock
        };
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(Some(FileLock(lock))),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }
}

/// What `statfs(2)` and `statvfs(3)` say of the filesystem holding a path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FsStat {
    /// The filesystem's magic number (`f_type`).
    pub(crate) magic: i64,
    /// Bytes free for an unprivileged writer.
    pub(crate) available: u64,
}

/// Filesystem type and free space of the filesystem holding `path`.
pub(crate) fn fs_stat(path: &Path) -> io::Result<FsStat> {
    let fs = nix::sys::statfs::statfs(path)?;
    let vfs = nix::sys::statvfs::statvfs(path)?;
    Ok(FsStat {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        magic: i64::from(fs.filesystem_type().0 as i64),
        #[allow(clippy::unnecessary_cast)]
        available: (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64),
    })
}

/// The usual name of a filesystem magic number, as `stat -f` prints it.
pub(crate) fn fs_name(magic: i64) -> &'static str {
    match magic {
        0x9123_683e => "btrfs",
        0x5846_5342 => "xfs",
        0xef53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x794c_7630 => "overlayfs",
        0x2fc1_2fc1 => "zfs",
        0x6969 => "nfs",
        0xf2f5_2010 => "f2fs",
        0x6573_5546 => "fuse",
        _ => "unknown",
    }
}

/// Tells glibc's malloc to keep what it gets, for a short process that reads a whole index
/// (5 MB for 10,000 snapshots) once and exits: a worker thread's own arena grows one `mprotect`
/// at a time (thousands for one index), large blocks come from a fresh `mmap` each and are
/// unmapped on free, and the heap is trimmed as soon as it shrinks. One arena, a high mmap
/// threshold, no trimming and a 16 MiB top pad avoid all of that. Call it before any thread
/// starts. A no-op on other C libraries.
#[cfg(target_env = "gnu")]
pub fn tune_malloc_for_one_shot() {
    for (param, value) in [
        (libc::M_ARENA_MAX, 1),
        (libc::M_MMAP_THRESHOLD, 256 << 20),
        (libc::M_TRIM_THRESHOLD, 256 << 20),
        (libc::M_TOP_PAD, 16 << 20),
    ] {
        // SAFETY: mallopt only sets allocator parameters; it reads no memory of ours. A
        // parameter glibc refuses (returns 0) keeps its default, which is correct, only slower.
        unsafe { libc::mallopt(param, value) };
    }
}

/// Tunes glibc's malloc; a no-op on other C libraries.
#[cfg(not(target_env = "gnu"))]
pub fn tune_malloc_for_one_shot() {}

/// Whether the process runs as root.
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn to_off(n: u64) -> io::Result<i64> {
    i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}
