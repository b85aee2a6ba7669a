//! Per-snapshot leases: a flock on `R/snapshot/localfile/ID.lease`, the file cocoon uses.
//!
//! Readers (`data_dir`, clone, export) hold it shared; a creator holds it exclusively while the
//! snapshot is pending; `rm` and gc take it exclusively without waiting, so a snapshot in use is
//! not deleted. The lock lives on the open file, so it holds across processes and vanishes with a
//! crashed holder. The lease file itself is never deleted while the snapshot may be in use:
//! flock works on the inode, and a new file under the same name would split the exclusion.

use std::path::Path;

use chrono::{DateTime, FixedOffset};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::sys::FileLock;
use crate::types::SnapshotId;

/// A held lease on one snapshot; released when dropped or when the process dies.
#[derive(Debug)]
pub struct Lease {
    id: SnapshotId,
    /// `None` on a read-only store, where no one can delete the snapshot anyway.
    _lock: Option<FileLock>,
    /// The snapshot's `last_accessed_at` when the lease was taken, if the taker read it.
    pub(crate) last_used: Option<DateTime<FixedOffset>>,
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
            _lock: lock,
            last_used: None,
        })
    }

    /// Takes an exclusive lease without waiting; `None` when someone holds the snapshot.
    pub(crate) fn try_exclusive(path: &Path, id: &SnapshotId) -> Result<Option<Lease>> {
        let lock = FileLock::try_lock(open(path)?, true).map_err(|e| Error::io("lock", path, e))?;
        Ok(lock.map(|lock| Lease {
            id: id.clone(),
            _lock: Some(lock),
            last_used: None,
        }))
    }

    /// The snapshot this lease holds.
    pub fn id(&self) -> &SnapshotId {
        &self.id
    }
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
