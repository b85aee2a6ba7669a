//! Per-snapshot leases: a flock on `R/snapshot/localfile/ID.lease`, the file cocoon uses.
//!
//! Readers (`data_dir`, clone, export) hold it shared; a creator holds it exclusively while the
//! snapshot is pending; `rm` and gc take it exclusively without waiting, so a snapshot in use is
//! not deleted. The lock lives on the open file, so it holds across processes and vanishes with a
//! crashed holder. The lease file itself is never deleted while the snapshot may be in use:
//! flock works on the inode, and a new file under the same name would split the exclusion.
//!
//! The lease file's mtime is also the snapshot's use clock: each use sets it to now, to the
//! nanosecond, so gc's least-recently-used eviction follows the true order of use without a
//! use ever rewriting the index. A creator sets it to the epoch, which means "no use yet": the
//! record's `last_accessed_at` (which cocoon also writes) stands until a use is recorded.

use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, FixedOffset, Utc};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::sys::FileLock;
use crate::types::SnapshotId;

/// A held lease on one snapshot; released when dropped or when the process dies.
#[derive(Debug)]
pub struct Lease {
    id: SnapshotId,
    /// `None` on a read-only store, where no one can delete the snapshot anyway.
    lock: Option<FileLock>,
}

impl Lease {
    /// Waits for a shared (reader's) lease on the snapshot whose lease file is `path`.
    pub(crate) fn shared(path: &Path, id: &SnapshotId) -> Result<Lease> {
        let file =
            fsutil::open_shared_lock_file(path).map_err(|e| Error::io("open lease", path, e))?;
        let lock = file
            .map(|file| FileLock::lock(file, false).map_err(|e| Error::io("lock", path, e)))
            .transpose()?;
        Ok(Lease {
            id: id.clone(),
            lock,
        })
    }

    /// Takes an exclusive lease without waiting; `None` when someone holds the snapshot.
    pub(crate) fn try_exclusive(path: &Path, id: &SnapshotId) -> Result<Option<Lease>> {
        let lock = FileLock::try_lock(open(path)?, true).map_err(|e| Error::io("lock", path, e))?;
        Ok(lock.map(|lock| Lease {
            id: id.clone(),
            lock: Some(lock),
        }))
    }

    /// The snapshot this lease holds.
    pub fn id(&self) -> &SnapshotId {
        &self.id
    }

    /// Records a use of the snapshot now: the lease file's mtime. Best effort: a store on a
    /// read-only filesystem, or a lease file of another owner, records nothing, which only
    /// leaves the snapshot looking older to gc's eviction.
    pub(crate) fn mark_used(&self) {
        if let Some(lock) = &self.lock {
            let _ = lock.file().set_modified(SystemTime::now());
        }
    }

    /// Marks a new snapshot's lease as not used yet (its mtime to the epoch), so that its
    /// record's `last_accessed_at` counts until a use is recorded.
    pub(crate) fn mark_unused(&self, path: &Path) -> Result<()> {
        match &self.lock {
            Some(lock) => lock
                .file()
                .set_modified(SystemTime::UNIX_EPOCH)
                .map_err(|e| Error::io("set the use time of", path, e)),
            None => Ok(()),
        }
    }
}

/// When the snapshot whose lease file is `path` was last used, by its use clock; `None` when
/// no use was recorded there (no lease file, or one a creator marked unused).
pub(crate) fn last_use(path: &Path) -> Option<DateTime<FixedOffset>> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    if since < Duration::from_secs(1) {
        return None;
    }
    Some(DateTime::<Utc>::from(modified).fixed_offset())
}

fn open(path: &Path) -> Result<std::fs::File> {
    fsutil::open_lock_file(path).map_err(|e| Error::io("open lease", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_leases_exclude_an_exclusive_one_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("A.lease");
        let id = SnapshotId::try_from("A".to_string()).unwrap();
        let reader = Lease::shared(&path, &id).unwrap();
        let second = Lease::shared(&path, &id).unwrap();
        assert!(Lease::try_exclusive(&path, &id).unwrap().is_none());
        drop(reader);
        assert!(Lease::try_exclusive(&path, &id).unwrap().is_none());
        drop(second);
        let writer = Lease::try_exclusive(&path, &id).unwrap().unwrap();
        assert_eq!(writer.id(), &id);
        assert!(Lease::try_exclusive(&path, &id).unwrap().is_none());
    }
}
