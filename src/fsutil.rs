//! `std::fs` wrappers that put the path into the error, a durable `write_atomic`, and a guard that
//! removes what a failed operation created.
//!
//! Modelled on cargo's `cargo_util::paths`: "equivalent to `std::fs::X` with better error
//! messages". The common path operations live here; the few places that call `std::fs`
//! themselves (a rename that may cross filesystems, a best-effort cleanup) name the path in
//! their error by hand with [`Error::io`]. Syscalls beyond `std::fs` live in `sys`.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Mode of a data file in the store once its snapshot is complete.
pub(crate) const READ_ONLY: u32 = 0o444;

/// Opens `path` for reading.
pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io("open", path, e))
}

/// Creates `path`, which must not exist, for writing with `mode` (before umask).
pub(crate) fn create_new(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

/// Opens (creating if needed, never truncating) a file whose only use is to be flock'd: the
/// index lock and the per-snapshot leases.
pub(crate) fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
}

/// Opens a lock file for a shared (reader's) flock: read-only when it exists, so a store on a
/// read-only filesystem can still be read. `None` when it is missing there and cannot be made:
/// on a read-only filesystem no writer can exist either, so there is nothing to lock against.
pub(crate) fn open_shared_lock_file(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match open_lock_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => Ok(None),
            other => other.map(Some),
        },
        other => other.map(Some),
    }
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io("read", path, e))
}

/// The metadata of `path` itself, not of what a symlink points to.
pub(crate) fn symlink_metadata(path: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))
}

/// Creates a directory and its missing parents.
pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))
}

/// Creates one directory, which must not exist, with exactly `mode`, whatever the umask.
pub(crate) fn create_dir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))?;
    // The umask may have taken bits away; the store's modes are its own.
    set_mode(path, mode)
}

/// Creates `path` and its missing parents, each with exactly `mode`; existing ones are left
/// as they are.
pub(crate) fn create_dirs(path: &Path, mode: u32) -> Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for dir in missing.into_iter().rev() {
        match create_dir(dir, mode) {
            // Made meanwhile by another process opening the same store.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            }
            other => other?,
        }
    }
    Ok(())
}

/// Renames `from` to `to`; the error names the source.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
}

/// Sets a path's permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", path, e))
}

/// The directory holding `path`: `.` for a bare relative name, whose `parent()` is empty.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Flushes a directory's entries to disk.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    sys::fsync_dir(path).map_err(|e| Error::io("fsync", path, e))
}

/// The names in a directory, sorted, with their metadata (not following symlinks).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(std::ffi::OsString, fs::Metadata)>> {
    list_entries(dir, |entry| entry.metadata().map(Some))
}

/// The names in a directory, sorted, with their types: what the directory itself records, so a
/// directory of hundreds of thousands of entries is listed without a `stat` of each (one is
/// made only where the filesystem does not record types).
pub(crate) fn list_dir_types(dir: &Path) -> Result<Vec<(std::ffi::OsString, fs::FileType)>> {
    list_entries(dir, |entry| entry.file_type().map(Some))
}

/// The names of the directories in a directory, sorted, found as [`list_dir_types`] finds them.
pub(crate) fn list_subdirs(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let dirs = list_entries(dir, |entry| Ok(entry.file_type()?.is_dir().then_some(())))?;
    Ok(dirs.into_iter().map(|(name, ())| name).collect())
}

/// The entries of `dir` that `info` keeps, with what it says of each, sorted by name.
fn list_entries<T>(
    dir: &Path,
    info: impl Fn(&fs::DirEntry) -> std::io::Result<Option<T>>,
) -> Result<Vec<(std::ffi::OsString, T)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if let Some(kept) = info(&entry).map_err(|e| Error::io("stat", &entry.path(), e))? {
            out.push((entry.file_name(), kept));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether `dir` has no entries; a missing dir counts as empty.
pub(crate) fn is_missing_or_empty(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(Error::io("read directory", dir, e)),
    }
}

/// Replaces `path` with `bytes` so that a reader, or a crash, sees the old content or the new,
/// never a mix: a temp file in the same directory, fsync, rename over `path`, fsync of the dir.
///
/// cargo's `paths::write_atomic` skips both fsyncs, which is fine for a build cache and not for
/// an index that must survive power loss.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    Staged::write(path, bytes, mode, true)?.commit()
}

/// [`write_atomic`] without the fsyncs: a reader still never sees a torn file, but after a power
/// loss the old content, the new, or an empty file may be there. For files outside the store,
/// which `cp` and `tar` would not fsync either.
pub(crate) fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    Staged::write(path, bytes, mode, false)?.commit()
}

/// The first half of [`write_atomic`]: the new content, written (and fsynced when durable) to a
/// temp file beside `path`, which [`Staged::commit`] renames into place. Dropped uncommitted, the
/// temp file is removed; a crash leaves it to gc, by its `.tmp-` prefix.
pub(crate) struct Staged {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
    durable: bool,
}

impl Staged {
    pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<Staged> {
        let dir = parent_dir(path);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(dir)
            .map_err(|e| Error::io("create temp file in", dir, e))?;
        tmp.write_all(bytes)
            .and_then(|()| match durable {
                true => tmp.as_file().sync_all(),
                false => Ok(()),
            })
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        Ok(Staged {
            tmp,
            path: path.to_path_buf(),
            durable,
        })
    }

    /// Renames the new content over the path, then (when durable) fsyncs the directory.
    pub(crate) fn commit(self) -> Result<()> {
        let path = self.path;
        self.tmp
            .persist(&path)
            .map_err(|e| Error::io("replace", &path, e.error))?;
        match self.durable {
            true => fsync_dir(parent_dir(&path)),
            false => Ok(()),
        }
    }
}

/// Removes `path`, a file or a whole directory; a path already gone is not an error.
pub(crate) fn remove_all(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Removes the paths it holds when dropped, unless [`Cleanup::disarm`]ed first: what a failed
/// operation created disappears by construction, not by cleanup code on every error path.
#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    paths: Vec<PathBuf>,
}

impl Cleanup {
    /// A guard that removes nothing yet.
    pub(crate) fn new() -> Cleanup {
        Cleanup::default()
    }

    /// Removes `path` (a file or a whole directory) on drop.
    pub(crate) fn push(&mut self, path: PathBuf) {
        self.paths.push(path);
    }

    /// The operation succeeded: keep everything.
    pub(crate) fn disarm(mut self) {
        self.paths.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Last in, first out: files before the directory that holds them.
        for path in self.paths.drain(..).rev() {
            // Nothing to return an error to from a drop; the path is left for gc to find.
            let _ = remove_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        for write in [write_atomic, write_replace] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index.json");
            write(&path, b"one", 0o644).unwrap();
            write(&path, b"two", 0o600).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"two");
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn staged_content_shows_only_once_committed_and_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ID.json");
        let staged = Staged::write(&path, b"new", 0o644, true).unwrap();
        assert!(!path.exists(), "not in place before the commit");
        staged.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        drop(Staged::write(&path, b"newer", 0o644, true).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file gone"
        );
    }

    #[test]
    fn cleanup_removes_unless_disarmed() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        let gone = dir.path().join("gone");
        fs::create_dir(&gone).unwrap();
        fs::write(gone.join("f"), b"x").unwrap();
        fs::write(&keep, b"x").unwrap();
        {
            let mut c = Cleanup::new();
            c.push(gone.clone());
        }
        let mut c = Cleanup::new();
        c.push(keep.clone());
        c.disarm();
        assert!(!gone.exists());
        assert!(keep.exists());
    }

    #[test]
    fn parent_of_a_bare_name_is_the_current_dir() {
        assert_eq!(parent_dir(Path::new("run1")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/b")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/")), Path::new("."));
    }

    #[test]
    fn errors_name_the_path() {
        let err = open(Path::new("/nonexistent/snapstore-x")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/snapstore-x"),
            "{err}"
        );
    }
}
