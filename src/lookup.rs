//! The lookup table, `R/snapshot/db/snapshots.lookup`: derived from `snapshots.json`, so that
//! resolving one ref and reading one record cost a few reads, not a parse of the whole index.
//!
//! ```text
//! header   "SSLOOKUP" u32 version, u32 trusted, then the index file it was built from:
//!          dev, ino, size, mtime s, mtime ns, ctime s, ctime ns (i64 each),
//!          then n_ids, n_names, ids_at, names_at, strings_at (u64 each), crc u32, 0 u32
//! ids      n_ids slots of 40 bytes, sorted by ID: key_at u64, key_len u32, pending u32,
//!          record_at u64, record_len u64, crc u32, 0 u32
//! names    n_names slots of 24 bytes, sorted by name: key_at u64, key_len u32, id_slot u32,
//!          crc u32, 0 u32
//! strings  the IDs and names, as UTF-8                                 all little-endian
//! ```
//!
//! `snapshots.json` stays the source of truth: cocoon and older snapstore read and write it
//! and know nothing of this file. So the table is trusted only for the index file it names, by
//! identity (device, inode, size, mtime and ctime to the nanosecond), and only when it was built
//! late enough after that file's last change that no later change could keep its mtime (as
//! git's "racily clean" entries: timestamps move in coarse ticks). Every record it points at is
//! read from the index file itself and must carry the ID it was looked up by. Each CRC-32 covers
//! what precedes it in its header or slot, and the slot's key: a lookup reads a few slots, never
//! the whole table, and a slot that is not what was written (a torn sector, a flipped bit) marks
//! the table broken, and the caller reads the whole index instead. A table that is missing,
//! stale, racy or corrupt is rebuilt from the index, never trusted.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Result;
use crate::resolve::Refs;
use crate::types::{Record, SnapshotId};

const MAGIC: &[u8; 8] = b"SSLOOKUP";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 7 * 8 + 5 * 8 + 8;
const ID_SLOT: usize = 40;
const NAME_SLOT: usize = 24;

/// How long after the index's last change a table must be built to be trusted: more than the
/// coarsest tick a filesystem timestamp moves by (10 ms at HZ=100).
const SETTLED: Duration = Duration::from_millis(20);

/// Which index file a table describes: what `stat` says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity([i64; 7]);

impl Identity {
    /// The identity of the file `meta` describes.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Identity {
        // Device and inode numbers are u64; as bits in an i64 they compare all the same.
        Identity([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ])
    }

    /// Whether a table built now, for a file of this identity, may be trusted later.
    fn settled(&self) -> bool {
        let secs = u64::try_from(self.0[3]).unwrap_or(0);
        let nanos = u32::try_from(self.0[4].clamp(0, 999_999_999)).unwrap_or(0);
        let changed = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age > SETTLED)
    }
}

/// The index as the table needs it: each record's place in the file, and the names.
#[derive(Deserialize)]
struct Borrowed<'a> {
    #[serde(borrow, default)]
    snapshots: Option<BTreeMap<&'a str, Option<&'a RawValue>>>,
    #[serde(borrow, default)]
    names: Option<BTreeMap<std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>>>,
}

/// Reads only whether a record is pending.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    pending: bool,
}

/// Builds the table of the index `bytes`, whose file has `identity`.
///
/// # Errors
/// The parser's, when `bytes` is not an index the table can describe (one with an ID that needs
/// JSON escapes, say): the caller then reads the whole index.
pub(crate) fn build(bytes: &[u8], identity: Identity) -> serde_json::Result<Vec<u8>> {
    let trusted = identity.settled();
    let index: Borrowed<'_> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Borrowed {
            snapshots: None,
            names: None,
        }
    } else {
        serde_json::from_slice(bytes)?
    };
    let base = bytes.as_ptr() as usize;
    let mut strings = Vec::new();
    let mut push = |text: &str| {
        let at = strings.len() as u64;
        strings.extend_from_slice(text.as_bytes());
        (at, text.len() as u32)
    };
    // BTreeMap order is byte order for `str`, as the table's searches compare.
    let mut ids = Vec::new();
    let mut slot_of = BTreeMap::new();
    for (id, raw) in index.snapshots.unwrap_or_default() {
        let Some(raw) = raw.filter(|r| r.get() != "null") else {
            continue;
        };
        let text = raw.get();
        let pending = serde_json::from_str::<Peek>(text).is_ok_and(|p| p.pending);
        let (key_at, key_len) = push(id);
        slot_of.insert(id, ids.len() as u32);
        let at = (text.as_ptr() as usize - base) as u64;
        ids.push((key_at, key_len, pending, at, text.len() as u64));
    }
    let mut names = Vec::new();
    for (name, id) in index.names.unwrap_or_default() {
        if let Some(&slot) = slot_of.get(id.as_ref()) {
            let (key_at, key_len) = push(&name);
            names.push((key_at, key_len, slot));
        }
    }
    let ids_at = HEADER as u64;
    let names_at = ids_at + (ids.len() * ID_SLOT) as u64;
    let strings_at = names_at + (names.len() * NAME_SLOT) as u64;
    let counts = [ids.len() as u64, names.len() as u64];
    let key = |at: u64, len: u32| &strings[at as usize..at as usize + len as usize];

    let mut out = Vec::with_capacity(strings_at as usize + strings.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u32::from(trusted).to_le_bytes());
    for field in identity.0 {
        out.extend_from_slice(&field.to_le_bytes());
    }
    for field in counts.into_iter().chain([ids_at, names_at, strings_at]) {
        out.extend_from_slice(&field.to_le_bytes());
    }
    seal(&mut out, 0, &[]);
    for (key_at, key_len, pending, at, len) in ids {
        let start = out.len();
        out.extend_from_slice(&key_at.to_le_bytes());
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(&u32::from(pending).to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        seal(&mut out, start, key(key_at, key_len));
    }
    for (key_at, key_len, slot) in names {
        let start = out.len();
        out.extend_from_slice(&key_at.to_le_bytes());
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(&slot.to_le_bytes());
        seal(&mut out, start, key(key_at, key_len));
    }
    out.extend_from_slice(&strings);
    Ok(out)
}

/// Appends the CRC-32 of `out[start..]` and `key`, and a zero word.
fn seal(out: &mut Vec<u8>, start: usize, key: &[u8]) {
    let crc = crc(&out[start..], key);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// CRC-32 (IEEE), from a table built at compile time: a lookup checks a few short slots, and
/// a SIMD implementation would first ask the CPU what it has, which costs more in a VM (each
/// CPUID traps to the hypervisor) than the slots themselves.
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

fn crc(fields: &[u8], key: &[u8]) -> u32 {
    let mut digest = CRC32.digest();
    digest.update(fields);
    digest.update(key);
    digest.finalize()
}

/// Whether a sealed header or slot (its fields, its CRC, a zero word) with `key` is whole.
fn intact(sealed: &[u8], key: &[u8]) -> bool {
    let n = sealed.len() - 8;
    u32_at(sealed, n) == crc(&sealed[..n], key) && u32_at(sealed, n + 4) == 0
}

/// Whether the table `bytes` may be trusted for an index of `identity`.
pub(crate) fn trusted_for(bytes: &[u8], identity: Identity) -> bool {
    Header::parse(bytes).is_some_and(|h| h.trusted && h.identity == identity)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[derive(Debug, Clone, Copy)]
struct Header {
    trusted: bool,
    identity: Identity,
    n_ids: u64,
    n_names: u64,
    ids_at: u64,
    names_at: u64,
    strings_at: u64,
}

impl Header {
    /// The header at the start of `bytes`, when it is whole.
    fn parse(bytes: &[u8]) -> Option<Header> {
        let head = bytes.get(..HEADER)?;
        if &head[..8] != MAGIC || u32_at(head, 8) != VERSION || !intact(head, &[]) {
            return None;
        }
        let mut identity = [0i64; 7];
        for (i, field) in identity.iter_mut().enumerate() {
            *field = u64_at(head, 16 + 8 * i) as i64;
        }
        let at = |i: usize| u64_at(head, 16 + 56 + 8 * i);
        Some(Header {
            trusted: u32_at(head, 12) == 1,
            identity: Identity(identity),
            n_ids: at(0),
            n_names: at(1),
            ids_at: at(2),
            names_at: at(3),
            strings_at: at(4),
        })
    }

    /// Whether the sections lie where they must, in order, within `len` bytes.
    fn fits(&self, len: u64) -> bool {
        let end = |n: u64, slot: usize, at: u64| n.checked_mul(slot as u64)?.checked_add(at);
        self.ids_at == HEADER as u64
            && end(self.n_ids, ID_SLOT, self.ids_at) == Some(self.names_at)
            && end(self.n_names, NAME_SLOT, self.names_at) == Some(self.strings_at)
            && self.strings_at <= len
            && self.n_ids <= u64::from(u32::MAX)
    }
}

/// Where a table's bytes are: its file, or memory (just built).
enum Table {
    File(File),
    Memory(Vec<u8>),
}

impl Table {
    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        match self {
            Table::File(file) => file.read_exact_at(buf, at),
            Table::Memory(bytes) => {
                let part = usize::try_from(at)
                    .ok()
                    .and_then(|at| bytes.get(at..at.checked_add(buf.len())?));
                let part = part.ok_or(io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(part);
                Ok(())
            }
        }
    }

    fn len(&self) -> u64 {
        match self {
            Table::File(file) => file.metadata().map_or(0, |m| m.len()),
            Table::Memory(bytes) => bytes.len() as u64,
        }
    }
}

/// One ID slot.
#[derive(Debug, Clone, Copy)]
struct IdSlot {
    key_at: u64,
    key_len: u32,
    pending: bool,
    record_at: u64,
    record_len: u64,
}

/// An index file, open, and the table that describes it.
pub(crate) struct Lookup {
    table: Table,
    header: Header,
    index: File,
    /// Set when a slot read was not what was written: no answer of this table counts.
    broken: Cell<bool>,
    /// The last ID slot a search found, and its key: reading the record a ref resolved to
    /// does not search again.
    found: RefCell<Option<(Vec<u8>, IdSlot)>>,
}

impl Lookup {
    /// The table in the file `table_path`, when it is trusted for the open index file `index`
    /// (whose identity is `identity`); `None` when it is missing, stale, racy or unreadable.
    pub(crate) fn open(table_path: &Path, index: File, identity: Identity) -> Option<Lookup> {
        let file = File::open(table_path).ok()?;
        let mut head = [0u8; HEADER];
        file.read_exact_at(&mut head, 0).ok()?;
        let header = Header::parse(&head)?;
        if !header.trusted || header.identity != identity {
            return None;
        }
        Lookup::over(Table::File(file), header, index)
    }

    /// The table `bytes`, just built for the open index file `index`.
    pub(crate) fn in_memory(bytes: Vec<u8>, index: File) -> Option<Lookup> {
        let header = Header::parse(&bytes)?;
        Lookup::over(Table::Memory(bytes), header, index)
    }

    fn over(table: Table, header: Header, index: File) -> Option<Lookup> {
        header.fits(table.len()).then_some(Lookup {
            table,
            header,
            index,
            broken: Cell::new(false),
            found: RefCell::new(None),
        })
    }

    /// The identity of the index file this table describes, when it was built late enough
    /// after the file's last change that the identity tells any later change (see `SETTLED`).
    pub(crate) fn settled_identity(&self) -> Option<Identity> {
        self.header.trusted.then_some(self.header.identity)
    }

    /// Whether a slot this table read was not what was written: then none of its answers
    /// counts, and the caller reads the whole index.
    pub(crate) fn broken(&self) -> bool {
        self.broken.get()
    }

    /// Reads `buf` at `at`; a short or failed read marks the table broken.
    fn read(&self, buf: &mut [u8], at: u64) -> bool {
        let ok = !self.broken() && self.table.read_at(buf, at).is_ok();
        if !ok {
            self.broken.set(true);
        }
        ok
    }

    fn string(&self, at: u64, len: u32) -> Option<Vec<u8>> {
        let mut b = vec![0u8; len as usize];
        let at = self.header.strings_at.checked_add(at)?;
        self.read(&mut b, at).then_some(b)
    }

    /// The ID slot `i` and its key; `None` (and the table broken) when it is not whole.
    fn id_slot(&self, i: u64) -> Option<(IdSlot, Vec<u8>)> {
        let mut b = [0u8; ID_SLOT];
        if !self.read(&mut b, self.header.ids_at + i * ID_SLOT as u64) {
            return None;
        }
        let slot = IdSlot {
            key_at: u64_at(&b, 0),
            key_len: u32_at(&b, 8),
            pending: u32_at(&b, 12) != 0,
            record_at: u64_at(&b, 16),
            record_len: u64_at(&b, 24),
        };
        let key = self.string(slot.key_at, slot.key_len)?;
        if !intact(&b, &key) {
            self.broken.set(true);
            return None;
        }
        Some((slot, key))
    }

    /// The name slot `i`: its key and the ID slot it points at; `None` (and the table broken)
    /// when it is not whole.
    fn name_slot(&self, i: u64) -> Option<(Vec<u8>, u64)> {
        let mut b = [0u8; NAME_SLOT];
        if !self.read(&mut b, self.header.names_at + i * NAME_SLOT as u64) {
            return None;
        }
        let key = self.string(u64_at(&b, 0), u32_at(&b, 8))?;
        let target = u64::from(u32_at(&b, 12));
        if !intact(&b, &key) || target >= self.header.n_ids {
            self.broken.set(true);
            return None;
        }
        Some((key, target))
    }

    /// The first ID slot whose key is not below `key`.
    fn lower_bound(&self, key: &[u8]) -> Option<u64> {
        let (mut lo, mut hi) = (0, self.header.n_ids);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.id_slot(mid)?.1.as_slice() < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The slot of the record whose ID is exactly `id`.
    fn find_id(&self, id: &str) -> Option<IdSlot> {
        if let Some((key, slot)) = &*self.found.borrow()
            && key == id.as_bytes()
        {
            return Some(*slot);
        }
        let i = self.lower_bound(id.as_bytes())?;
        if i >= self.header.n_ids {
            return None;
        }
        let (slot, key) = self.id_slot(i)?;
        (key == id.as_bytes()).then(|| self.remember(slot, key.clone()))
    }

    /// Notes `slot` as the last one found; returns it.
    fn remember(&self, slot: IdSlot, key: Vec<u8>) -> IdSlot {
        *self.found.borrow_mut() = Some((key, slot));
        slot
    }

    /// The ID slot `name` points at, and that slot's key.
    fn find_name(&self, name: &str) -> Option<(IdSlot, Vec<u8>)> {
        let (mut lo, mut hi) = (0, self.header.n_names);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (key, target) = self.name_slot(mid)?;
            match key.as_slice().cmp(name.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let (slot, key) = self.id_slot(target)?;
                    self.remember(slot, key.clone());
                    return Some((slot, key));
                }
            }
        }
        None
    }

    /// A slot's key as an ID; `None` (and the table broken) when it cannot be one.
    fn id_of(&self, key: Vec<u8>) -> Option<SnapshotId> {
        let id = String::from_utf8(key)
            .ok()
            .and_then(|k| SnapshotId::try_from(k).ok());
        if id.is_none() {
            self.broken.set(true);
        }
        id
    }

    /// The snapshot, pending or complete, that holds `name`. (Check [`Lookup::broken`]
    /// before believing a `None`.)
    pub(crate) fn holder(&self, name: &str) -> Option<SnapshotId> {
        self.find_name(name).and_then(|(_, key)| self.id_of(key))
    }

    /// The record `id` names, read from the index file itself; `None` when the table has no
    /// such ID, or what the index file holds there is not that record.
    pub(crate) fn record(&self, id: &SnapshotId) -> Option<Record> {
        let slot = self.find_id(id.as_str())?;
        let mut bytes = vec![0u8; usize::try_from(slot.record_len).ok()?];
        self.index.read_exact_at(&mut bytes, slot.record_at).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        (record.id() == id.as_str() && record.pending == slot.pending).then_some(record)
    }
}

/// Answers as the index would, as long as the table is whole; a caller checks
/// [`Lookup::broken`] before believing any answer, an empty one above all.
impl Refs for Lookup {
    fn complete_id(&self, id: &str) -> Result<Option<SnapshotId>> {
        let found = self.find_id(id).filter(|slot| !slot.pending);
        Ok(found.and_then(|_| self.id_of(id.as_bytes().to_vec())))
    }

    fn complete_named(&self, name: &str) -> Result<Option<SnapshotId>> {
        let found = self.find_name(name).filter(|(slot, _)| !slot.pending);
        Ok(found.and_then(|(_, key)| self.id_of(key)))
    }

    fn complete_with_prefix(&self, prefix: &str) -> Result<Vec<SnapshotId>> {
        let mut ids = Vec::new();
        let Some(mut i) = self.lower_bound(prefix.as_bytes()) else {
            return Ok(ids);
        };
        while i < self.header.n_ids {
            let Some((slot, key)) = self.id_slot(i) else {
                break;
            };
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if !slot.pending
                && let Some(id) = self.id_of(key.clone())
            {
                self.remember(slot, key);
                ids.push(id);
            }
            i += 1;
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::index::Index;
    use crate::resolve::resolve;
    use proptest::prelude::*;

    /// An index file of `entries` (ID, name, pending) in `dir`, and its table, in memory.
    fn table_of(dir: &Path, entries: &[(String, String, bool)]) -> (Index, Lookup) {
        let borrowed: Vec<(&str, &str, bool)> = entries
            .iter()
            .map(|(id, name, pending)| (id.as_str(), name.as_str(), *pending))
            .collect();
        let index = crate::resolve::tests::index(&borrowed);
        let path = dir.join("snapshots.json");
        index.save(&path).unwrap();
        let file = File::open(&path).unwrap();
        let identity = Identity::of(&file.metadata().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        let table = build(&bytes, identity).unwrap();
        (
            Index::load(&path).unwrap(),
            Lookup::in_memory(table, file).unwrap(),
        )
    }

    fn outcome(r: Result<SnapshotId>) -> String {
        match r {
            Ok(id) => id.to_string(),
            Err(Error::Ambiguous { matches, .. }) => format!("ambiguous {matches:?}"),
            Err(Error::NotFound { .. }) => "not found".into(),
            Err(e) => format!("error {e}"),
        }
    }

    #[test]
    fn records_are_read_from_the_index_file_at_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let entries = [
            ("AAA111".to_string(), "base".to_string(), false),
            ("AAB222".to_string(), "é \"quoted\"".to_string(), false),
            ("ZZZ999".to_string(), "half".to_string(), true),
        ];
        let (_, lookup) = table_of(dir.path(), &entries);
        let id = resolve(&lookup, "é \"quoted\"").unwrap();
        assert_eq!(id.as_str(), "AAB222");
        let record = lookup.record(&id).unwrap();
        assert_eq!(record.config.name, "é \"quoted\"");
        assert!(matches!(
            resolve(&lookup, "half"),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(lookup.holder("half").unwrap().as_str(), "ZZZ999");
        assert!(matches!(
            resolve(&lookup, "AA"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(resolve(&lookup, "AAA"), Ok(id) if id.as_str() == "AAA111"));
    }

    #[test]
    fn a_table_is_trusted_only_for_its_own_settled_index_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshots.json");
        std::fs::write(&path, br#"{"snapshots":{},"names":{}}"#).unwrap();
        let identity = Identity::of(&std::fs::metadata(&path).unwrap());
        // Built at once after the file changed: racy, never trusted later.
        let racy = build(b"{}", identity).unwrap();
        assert!(!trusted_for(&racy, identity));
        std::thread::sleep(SETTLED * 2);
        let settled = build(b"{}", identity).unwrap();
        assert!(trusted_for(&settled, identity));
        // Any change of the file (here its size) makes it another file.
        std::fs::write(&path, br#"{"snapshots":{},"names":{}} "#).unwrap();
        let changed = Identity::of(&std::fs::metadata(&path).unwrap());
        assert!(!trusted_for(&settled, changed));
        // A corrupt or cut-short table is no table.
        assert!(!trusted_for(&settled[..HEADER - 1], identity));
        let mut flipped = settled.clone();
        flipped[0] ^= 1;
        assert!(!trusted_for(&flipped, identity));
        let file = File::open(&path).unwrap();
        let mut cut = settled.clone();
        cut[HEADER - 8] ^= 0xff; // the header's CRC
        assert!(Lookup::in_memory(cut, file).is_none());
    }

    proptest! {
        /// The table resolves every ref exactly as the parsed index does.
        #[test]
        fn the_table_resolves_as_the_index_does(
            ids in proptest::collection::btree_map("[A-D2-3]{3,6}", (any::<bool>(), 0u8..4), 1..12),
            refs in proptest::collection::vec("[A-D2-3n]{1,6}", 1..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut names = std::collections::BTreeSet::new();
            let entries: Vec<(String, String, bool)> = ids
                .iter()
                .map(|(id, (pending, n))| {
                    // Names may repeat in the input; the index holds each once.
                    let name = format!("n{n}");
                    let name = if names.insert(name.clone()) { name } else { String::new() };
                    (id.clone(), name, *pending)
                })
                .collect();
            let (index, lookup) = table_of(dir.path(), &entries);
            for reference in refs.iter().chain(entries.iter().map(|e| &e.1)) {
                prop_assert_eq!(
                    outcome(resolve(&lookup, reference)),
                    outcome(resolve(&index, reference)),
                    "{}", reference
                );
            }
        }
    }
}
