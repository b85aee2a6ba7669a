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

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::sys::FileLock;
use crate::types::{Record, SnapshotId};

/// Mode of the index file.
const INDEX_MODE: u32 = 0o644;

/// The index: every record by ID, and the names that point at them.
///
/// Records are kept as the JSON they were read as (a span of the file's bytes, which the index
/// holds), and parsed only when something needs their fields: a store of 100,000 snapshots is
/// read, and rewritten after one change, without parsing, copying or re-serializing the other
/// 99,999. A record no one changed is written back byte for byte.
#[derive(Debug, Default, Clone)]
pub(crate) struct Index {
    /// Where it was read from, for errors about records parsed later.
    path: PathBuf,
    /// The bytes it was read from; shared by the copies the cache hands out.
    text: Arc<Vec<u8>>,
    snapshots: BTreeMap<SnapshotId, Entry>,
    pub(crate) names: BTreeMap<String, SnapshotId>,
    /// Top-level fields this version does not know, kept on rewrite.
    extra: serde_json::Map<String, serde_json::Value>,
}

/// One record: where its JSON lies in the bytes read, and its parsed form once asked for.
#[derive(Debug, Clone)]
struct Entry {
    /// As read: its span of [`Index::text`]; `None` for a record this process made.
    raw: Option<Range<usize>>,
    /// Parsed on demand; boxed, so that the many entries never parsed stay small.
    record: Option<Box<Record>>,
    /// Handed out mutably, so written from `record`, not `raw`.
    dirty: bool,
    /// The raw record's `pending`, read from it the first time it is asked for.
    peeked: OnceCell<bool>,
}

impl Entry {
    /// Whether the record is pending. One whose `pending` cannot be read counts as complete, so
    /// that it is resolved, fails to parse, and is reported rather than collected as garbage.
    fn pending(&self, text: &[u8]) -> bool {
        match (&self.record, &self.raw) {
            (Some(record), _) => record.pending,
            (None, Some(raw)) => *self.peeked.get_or_init(|| {
                let raw = text.get(raw.clone()).unwrap_or_default();
                serde_json::from_slice::<Peek>(raw).is_ok_and(|p| p.pending)
            }),
            (None, None) => false,
        }
    }
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
        Index::parse_shared(Arc::new(bytes), path)
    }

    /// Parses index bytes read from `path`; blank is empty.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`].
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Index> {
        Index::parse_shared(Arc::new(bytes.to_vec()), path)
    }

    /// [`Index::parse`], keeping `bytes` for the records' spans.
    fn parse_shared(bytes: Arc<Vec<u8>>, path: &Path) -> Result<Index> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Index::default());
        }
        let fields = Fields {
            base: bytes.as_ptr() as usize,
            len: bytes.len(),
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let parsed = de
            .deserialize_map(fields)
            .and_then(|index| de.end().map(|()| index));
        let mut index = parsed.map_err(|source| Error::CorruptIndex {
            path: path.to_path_buf(),
            source,
        })?;
        index.path = path.to_path_buf();
        index.text = bytes;
        Ok(index)
    }

    /// Replaces the index at `path` atomically and durably.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        Index::write(path, &self.to_bytes(path)?)
    }

    /// The index as the file holds it.
    ///
    /// Written as `serde_json` writes compact JSON: `{"snapshots":{...},"names":{...}}` and any
    /// fields this version does not know, each record as it was read unless it was changed.
    pub(crate) fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let json = |source| Error::CorruptIndex {
            path: path.to_path_buf(),
            source,
        };
        let mut out = Vec::with_capacity(self.text.len() + 4096);
        out.extend_from_slice(br#"{"snapshots":{"#);
        let mut first = true;
        for (id, entry) in &self.snapshots {
            let raw = entry.raw.clone().and_then(|span| self.text.get(span));
            let written = match (raw, &entry.record) {
                (Some(raw), _) if !entry.dirty => Written::Raw(raw),
                (_, Some(record)) => Written::Record(record),
                (Some(raw), None) => Written::Raw(raw),
                (None, None) => continue,
            };
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, id.as_str()).map_err(json)?;
            out.push(b':');
            match written {
                Written::Raw(raw) => out.extend_from_slice(raw),
                Written::Record(record) => serde_json::to_writer(&mut out, record).map_err(json)?,
            }
        }
        out.extend_from_slice(br#"},"names":"#);
        serde_json::to_writer(&mut out, &self.names).map_err(json)?;
        for (key, value) in &self.extra {
            out.push(b',');
            serde_json::to_writer(&mut out, key).map_err(json)?;
            out.push(b':');
            serde_json::to_writer(&mut out, value).map_err(json)?;
        }
        out.extend_from_slice(b"}\n");
        Ok(out)
    }

    /// Replaces the index file at `path` with `bytes`, atomically and durably.
    pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
        fsutil::write_atomic(path, bytes, INDEX_MODE)
    }

    /// Whether there is a record, pending or complete, under `id`.
    pub(crate) fn contains(&self, id: &SnapshotId) -> bool {
        self.snapshots.contains_key(id)
    }

    /// The ID of the complete record whose ID is exactly `id`.
    pub(crate) fn complete_id(&self, id: &str) -> Option<&SnapshotId> {
        self.snapshots
            .get_key_value(id)
            .filter(|(_, e)| !e.pending(&self.text))
            .map(|(id, _)| id)
    }

    /// Whether the record under `id` is complete (not pending).
    pub(crate) fn is_complete(&self, id: &str) -> bool {
        self.snapshots
            .get(id)
            .is_some_and(|e| !e.pending(&self.text))
    }

    /// The IDs of complete records, in ID order.
    pub(crate) fn complete_ids(&self) -> impl Iterator<Item = &SnapshotId> {
        self.snapshots
            .iter()
            .filter(|(_, e)| !e.pending(&self.text))
            .map(|(id, _)| id)
    }

    /// The IDs of complete records from `from` on, in ID order.
    pub(crate) fn complete_ids_from<'a>(
        &'a self,
        from: &str,
    ) -> impl Iterator<Item = &'a SnapshotId> + 'a {
        self.snapshots
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .filter(|(_, e)| !e.pending(&self.text))
            .map(|(id, _)| id)
    }

    /// The IDs of pending records, in ID order.
    pub(crate) fn pending_ids(&self) -> impl Iterator<Item = &SnapshotId> {
        self.snapshots
            .iter()
            .filter(|(_, e)| e.pending(&self.text))
            .map(|(id, _)| id)
    }

    /// The record under `id`, parsed.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] when that record does not parse.
    pub(crate) fn get(&mut self, id: &SnapshotId) -> Result<Option<&Record>> {
        Ok(self.parsed(id)?.map(|e| &*e))
    }

    /// The record under `id`, parsed, to change: it is written back from its fields.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] when that record does not parse.
    pub(crate) fn get_mut(&mut self, id: &SnapshotId) -> Result<Option<&mut Record>> {
        if let Some(entry) = self.snapshots.get_mut(id) {
            entry.dirty = true;
        }
        self.parsed(id)
    }

    fn parsed(&mut self, id: &SnapshotId) -> Result<Option<&mut Record>> {
        let Some(entry) = self.snapshots.get_mut(id) else {
            return Ok(None);
        };
        if entry.record.is_none()
            && let Some(raw) = &entry.raw
        {
            let raw = self.text.get(raw.clone()).unwrap_or_default();
            let record = serde_json::from_slice(raw).map_err(|source| Error::CorruptIndex {
                path: self.path.clone(),
                source,
            })?;
            entry.record = Some(Box::new(record));
        }
        Ok(entry.record.as_deref_mut())
    }

    /// Every record, parsed, in ID order.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] when a record does not parse.
    pub(crate) fn records(&mut self) -> Result<Vec<(&SnapshotId, &Record)>> {
        let ids: Vec<SnapshotId> = self.snapshots.keys().cloned().collect();
        for id in &ids {
            self.parsed(id)?;
        }
        Ok(self
            .snapshots
            .iter()
            .filter_map(|(id, e)| Some((id, e.record.as_deref()?)))
            .collect())
    }

    /// Complete records, parsed, in ID order.
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] when one of them does not parse.
    pub(crate) fn complete(&mut self) -> Result<Vec<(&SnapshotId, &Record)>> {
        let ids: Vec<SnapshotId> = self.complete_ids().cloned().collect();
        for id in &ids {
            self.parsed(id)?;
        }
        Ok(self
            .snapshots
            .iter()
            .filter(|(_, e)| !e.pending(&self.text))
            .filter_map(|(id, e)| Some((id, e.record.as_deref()?)))
            .collect())
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
        let entry = Entry {
            raw: None,
            record: Some(Box::new(record)),
            dirty: true,
            peeked: OnceCell::new(),
        };
        self.snapshots.insert(id, entry);
        Ok(())
    }

    /// Removes the record under `id` and frees the names that point at it; true if there was one.
    pub(crate) fn remove(&mut self, id: &SnapshotId) -> bool {
        let removed = self.snapshots.remove(id).is_some();
        if removed {
            self.names.retain(|_, holder| holder != id);
        }
        removed
    }
}

/// The last index a store wrote, or looked into with [`IndexCache::with`], keyed by the exact
/// bytes of its file: a save reads the index twice (to check the name early, then to commit),
/// and parses it once. Equal bytes parse to an equal index, so a hit is never stale, whoever
/// wrote the file. Nothing is copied to fill it: a one-shot `list` pays for no cache.
#[derive(Debug, Default)]
pub(crate) struct IndexCache(Mutex<Option<(Arc<Vec<u8>>, Index)>>);

impl IndexCache {
    /// The index at `path`, which the caller has locked; a copy of the cached one when the file
    /// holds the bytes last seen.
    pub(crate) fn load(&self, path: &Path) -> Result<Index> {
        let (bytes, index, hit) = self.read(path)?;
        if !hit {
            // Not worth a copy of a whole index to keep it.
            return Ok(index);
        }
        self.keep(bytes, index.clone());
        Ok(index)
    }

    /// Runs `f` on the index at `path`, which the caller has locked, and keeps it for the next
    /// reader: no copy is made. (`f` only looks: what is kept must be what the file holds.)
    pub(crate) fn with<T>(&self, path: &Path, f: impl FnOnce(&Index) -> T) -> Result<T> {
        let (bytes, index, _) = self.read(path)?;
        let out = f(&index);
        self.keep(bytes, index);
        Ok(out)
    }

    /// The index at `path`, which the caller has locked exclusively, to change and then
    /// [`IndexCache::save`].
    pub(crate) fn take(&self, path: &Path) -> Result<Index> {
        Ok(self.read(path)?.1)
    }

    /// Writes `index` to `path` atomically and durably, and remembers it.
    pub(crate) fn save(&self, path: &Path, index: Index) -> Result<()> {
        let bytes = index.to_bytes(path)?;
        Index::write(path, &bytes)?;
        self.keep(Arc::new(bytes), index);
        Ok(())
    }

    /// The file's bytes and its index, taken out of the cache on a hit (true) or parsed.
    fn read(&self, path: &Path) -> Result<(Arc<Vec<u8>>, Index, bool)> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let cached = self.slot().take().filter(|(seen, _)| **seen == bytes);
        Ok(match cached {
            Some((seen, index)) => (seen, index, true),
            None => {
                let bytes = Arc::new(bytes);
                let index = Index::parse_shared(Arc::clone(&bytes), path)?;
                (bytes, index, false)
            }
        })
    }

    fn keep(&self, bytes: Arc<Vec<u8>>, index: Index) {
        *self.slot() = Some((bytes, index));
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Vec<u8>>, Index)>> {
        // A panic while holding it leaves at worst a stale entry, which the byte check refuses.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads only what the index needs of a record it does not parse.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    pending: bool,
}

/// How a record is written back.
enum Written<'a> {
    /// Its bytes as read.
    Raw(&'a [u8]),
    /// Serialized from its fields.
    Record(&'a Record),
}

/// Reads the top level of an index from a slice at `base` of `len` bytes: each record is kept
/// as its span of that slice.
struct Fields {
    base: usize,
    len: usize,
}

impl<'de> Visitor<'de> for Fields {
    type Value = Index;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a snapshot index object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Index, A::Error> {
        let mut index = Index::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "snapshots" => {
                    index.snapshots.clear();
                    map.next_value_seed(Records {
                        fields: &self,
                        into: &mut index.snapshots,
                    })?;
                }
                "names" => {
                    let names: Option<BTreeMap<String, SnapshotId>> = map.next_value()?;
                    index.names = names.unwrap_or_default();
                }
                _ => {
                    let value: serde_json::Value = map.next_value()?;
                    index.extra.insert(key, value);
                }
            }
        }
        Ok(index)
    }
}

/// The `snapshots` map, read into `into`: Go writes a nil map as `null`, and a nil record too.
struct Records<'a> {
    fields: &'a Fields,
    into: &'a mut BTreeMap<SnapshotId, Entry>,
}

impl<'de> DeserializeSeed<'de> for Records<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of snapshot records")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some((id, raw)) = map.next_entry::<SnapshotId, Option<&'de RawValue>>()? {
            let Some(raw) = raw.filter(|r| r.get() != "null") else {
                continue;
            };
            // Always inside the slice being read; checked all the same.
            let at = (raw.get().as_ptr() as usize).wrapping_sub(self.fields.base);
            let span = at..at.saturating_add(raw.get().len());
            if span.end > self.fields.len {
                return Err(serde::de::Error::custom("a record outside the index read"));
            }
            let entry = Entry {
                raw: Some(span),
                record: None,
                dirty: false,
                peeked: OnceCell::new(),
            };
            self.into.insert(id, entry);
        }
        Ok(())
    }
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
    fn the_cache_serves_what_the_file_holds_whoever_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), COCOON_INDEX);
        let cache = IndexCache::default();
        let taken = cache.with(&path, |i| i.names.get("nightly").cloned());
        assert_eq!(taken.unwrap().unwrap().as_str(), "SNAP111111111111");

        // A change saved through the cache is what the next reader sees.
        let mut index = cache.take(&path).unwrap();
        assert!(index.remove(&SnapshotId::try_from("SNAP111111111111".to_string()).unwrap()));
        cache.save(&path, index).unwrap();
        assert!(!cache.load(&path).unwrap().names.contains_key("nightly"));

        // Another writer replaces the file: the cached index is not served.
        std::fs::write(&path, COCOON_INDEX).unwrap();
        assert!(cache.load(&path).unwrap().names.contains_key("nightly"));
        assert!(cache.take(&path).unwrap().names.contains_key("nightly"));
    }

    #[test]
    fn cocoon_index_loads_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), COCOON_INDEX);
        let mut index = Index::load(&path).unwrap();
        assert_eq!(index.snapshots.len(), 3);
        assert_eq!(index.complete().unwrap().len(), 2);
        assert_eq!(index.pending_ids().count(), 1);
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
        assert!(index.remove(&a));
        index.insert(b, rec).unwrap();
    }

    #[test]
    fn records_no_one_changed_are_written_back_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        // Key order and spacing no serializer of ours would produce.
        let other =
            r#"{"size_bytes":4096, "name":"b","created_at":"2026-07-01T10:00:00Z","id":"B1"}"#;
        let path = write(
            dir.path(),
            &format!(
                r#"{{"snapshots":{{"A1":{{"id":"A1","name":"a","created_at":"2026-07-01T10:00:00Z"}},"B1":{other}}},"names":{{"a":"A1","b":"B1"}}}}"#
            ),
        );
        let mut index = Index::load(&path).unwrap();
        let a = SnapshotId::try_from("A1".to_string()).unwrap();
        index.get_mut(&a).unwrap().unwrap().size_bytes = 7;
        index.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(other), "{text}");
        let mut again = Index::load(&path).unwrap();
        assert_eq!(again.get(&a).unwrap().unwrap().size_bytes, 7);
    }

    #[test]
    fn a_bad_record_fails_when_read_naming_the_file_and_survives_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let bad = r#"{"id":"B1","name":"b","created_at":"yesterday"}"#;
        let path = write(
            dir.path(),
            &format!(
                r#"{{"snapshots":{{"A1":{{"id":"A1","name":"a","created_at":"2026-07-01T10:00:00Z"}},"B1":{bad},"C1":null}},"names":{{"a":"A1","b":"B1"}}}}"#
            ),
        );
        let mut index = Index::load(&path).unwrap();
        assert!(
            !index.contains(&SnapshotId::try_from("C1".to_string()).unwrap()),
            "Go's nil record"
        );
        let b = SnapshotId::try_from("B1".to_string()).unwrap();
        let err = index.get(&b).unwrap_err();
        assert!(
            matches!(&err, Error::CorruptIndex { path: p, .. } if *p == path),
            "{err:?}"
        );
        assert!(index.complete().is_err());
        let a = SnapshotId::try_from("A1".to_string()).unwrap();
        index.get_mut(&a).unwrap().unwrap().size_bytes = 1;
        index.save(&path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(bad));
    }
}
