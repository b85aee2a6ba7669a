//! The snapshot index, `R/snapshot/db/snapshots.json`, and the flock that guards it.
//!
//! ```json
//! {
//!   "snapshots": { "ID": { "id": "ID", "name": "base", "cpu": 2, ..., "created_at": "...",
//!                          "data_dir": "R/snapshot/localfile/ID", "size_bytes": 9663676416 } },
//!   "names": { "base": "ID" }
//! }
//! ```
//!
//! The layout is cocoon's: a record is the config flattened plus store fields (see [`Record`]).
//! Every read-modify-write holds [`IndexLock`] exclusively on `snapshots.lock`; the file itself
//! is only ever replaced whole ([`fsutil::write_atomic`]), so a reader never sees a torn index. An
//! index that does not parse is never overwritten: every operation refuses it, naming the file.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::sys::FileLock;
use crate::types::{Record, SnapshotId};

/// Mode of the index file.
const INDEX_MODE: u32 = 0o644;

/// The parsed index: every record by ID, and the names that point at them.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Index {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(crate) snapshots: BTreeMap<SnapshotId, Record>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(crate) names: BTreeMap<String, SnapshotId>,
    /// Top-level fields this version does not know, kept on rewrite.
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Index {
    /// Reads the index at `path`; a missing or blank file is an empty index.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] when the file does not parse; [`Error::Io`] when it cannot be read.
    pub(crate) fn load(path: &Path) -> Result<Index> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Index::default());
        }
        serde_json::from_slice(&bytes).map_err(|source| Error::CorruptIndex {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Replaces the index at `path` atomically and durably.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec(self).map_err(|source| Error::CorruptIndex {
            path: path.to_path_buf(),
            source,
        })?;
        bytes.push(b'\n');
        fsutil::write_atomic(path, &bytes, INDEX_MODE)
    }

    /// Adds a record under `id`, claiming its name.
    ///
    /// # Errors
    /// [`Error::NameTaken`] when another snapshot, pending or complete, holds the name.
    pub(crate) fn insert(&mut self, id: SnapshotId, record: Record) -> Result<()> {
        let name = &record.config.name;
        if !name.is_empty() {
            if let Some(holder) = self.names.get(name) {
                return Err(Error::NameTaken {
                    name: name.clone(),
                    id: holder.clone(),
                });
            }
            self.names.insert(name.clone(), id.clone());
        }
        self.snapshots.insert(id, record);
        Ok(())
    }

    /// Removes the record under `id` and frees its name; returns the record if there was one.
    pub(crate) fn remove(&mut self, id: &SnapshotId) -> Option<Record> {
        let record = self.snapshots.remove(id)?;
        let name = &record.config.name;
        if self.names.get(name) == Some(id) {
            self.names.remove(name);
        }
        Some(record)
    }

    /// Complete (not pending) records, in ID order.
    pub(crate) fn complete(&self) -> impl Iterator<Item = (&SnapshotId, &Record)> {
        self.snapshots.iter().filter(|(_, r)| !r.pending)
    }
}

/// Go marshals a nil map as `null`.
fn null_as_empty<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Ord + Deserialize<'de>,
    V: Deserialize<'de>,
{
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

/// The flock on `snapshots.lock`, held for a whole read or read-modify-write of the index.
///
/// Exclusive for writers, shared for readers. A lock that cannot be taken is an error naming
/// the lock file, never a silent "go ahead anyway".
#[derive(Debug)]
pub(crate) struct IndexLock {
    _lock: FileLock,
}

impl IndexLock {
    /// Waits for the lock on `path`, creating the lock file if needed.
    ///
    /// A reader opens the lock file read-only, so a store on a read-only filesystem still lists;
    /// where the lock file is missing there and cannot be made, no writer can exist either, and
    /// the reader goes ahead without a lock.
    pub(crate) fn acquire(path: &Path, exclusive: bool) -> Result<Option<IndexLock>> {
        let file = if exclusive {
            fsutil::open_lock_file(path).map(Some)
        } else {
            fsutil::open_shared_lock_file(path)
        }
        .map_err(|e| Error::io("open lock file", path, e))?;
        let Some(file) = file else { return Ok(None) };
        let lock = FileLock::lock(file, exclusive).map_err(|e| Error::io("lock", path, e))?;
        Ok(Some(IndexLock { _lock: lock }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index as cocoon's localfile backend writes it (its legacy-snapshots test data).
    const COCOON_INDEX: &str = r#"{"snapshots":{"SNAP111111111111":{"id":"SNAP111111111111","name":"nightly","hypervisor":"firecracker","created_at":"2026-07-01T10:00:00Z","data_dir":"/var/lib/cocoon/snapshots/data/SNAP111111111111","size_bytes":4096,"last_accessed_at":"2026-07-02T11:30:00Z"},"SNAP222222222222":{"id":"SNAP222222222222","name":"","hypervisor":"firecracker","created_at":"2026-07-01T10:00:00Z","data_dir":"/var/lib/cocoon/snapshots/data/SNAP222222222222","size_bytes":4096,"last_accessed_at":"2026-07-02T11:30:00Z"},"SNAP333333333333":{"id":"SNAP333333333333","name":"pending-one","hypervisor":"firecracker","created_at":"2026-07-01T10:00:00Z","data_dir":"/var/lib/cocoon/snapshots/data/SNAP333333333333","size_bytes":4096,"pending":true,"last_accessed_at":"2026-07-02T11:30:00Z"}},"names":{"nightly":"SNAP111111111111","pending-one":"SNAP333333333333"}}"#;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("snapshots.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn cocoon_index_loads_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), COCOON_INDEX);
        let index = Index::load(&path).unwrap();
        assert_eq!(index.snapshots.len(), 3);
        assert_eq!(index.complete().count(), 2);
        index.save(&path).unwrap();
        let before: serde_json::Value = serde_json::from_str(COCOON_INDEX).unwrap();
        let after: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(before, after, "a rewrite changes nothing cocoon wrote");
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"{"snapshots":{"A1":{"id":"A1","name":"x","created_at":"2026-07-01T10:00:00Z","shiny":true}},"names":{"x":"A1"},"version":7}"#,
        );
        Index::load(&path).unwrap().save(&path).unwrap();
        let after: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(after["version"], 7);
        assert_eq!(after["snapshots"]["A1"]["shiny"], true);
    }

    #[test]
    fn go_null_maps_and_missing_file_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Index::load(&dir.path().join("none.json"))
                .unwrap()
                .snapshots
                .is_empty()
        );
        let path = write(dir.path(), r#"{"snapshots":null,"names":null}"#);
        assert!(Index::load(&path).unwrap().names.is_empty());
    }

    #[test]
    fn corrupt_index_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            r#"{"snapshots": {"#,
            r#"{"snapshots":{"../x":{"name":"a","created_at":"2026-07-01T10:00:00Z"}}}"#,
        ] {
            let path = write(dir.path(), text);
            let err = Index::load(&path).unwrap_err();
            assert!(matches!(err, Error::CorruptIndex { .. }), "{err:?}");
            assert!(err.to_string().contains("snapshots.json"));
        }
    }

    #[test]
    fn names_are_unique_and_freed_on_remove() {
        let mut index = Index::default();
        let rec: Record =
            serde_json::from_str(r#"{"name":"a","created_at":"2026-07-01T10:00:00Z"}"#).unwrap();
        let a = SnapshotId::try_from("AAA1".to_string()).unwrap();
        let b = SnapshotId::try_from("BBB1".to_string()).unwrap();
        index.insert(a.clone(), rec.clone()).unwrap();
        assert!(matches!(
            index.insert(b.clone(), rec.clone()),
            Err(Error::NameTaken { .. })
        ));
        index.remove(&a).unwrap();
        index.insert(b, rec).unwrap();
    }
}
