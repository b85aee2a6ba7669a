//! The values snapstore passes around: snapshot IDs, configs, index records and clone reports.
//!
//! Field names and omission rules follow cocoon's `types.SnapshotConfig` and
//! `snapshot.SnapshotRecord`, so an index written by either tool loads in the other.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize};

/// Number of base32 characters in a generated ID: 16 random bytes, unpadded.
const ID_LEN: usize = 26;

/// A snapshot's ID: the name of its data directory and its key in the index.
///
/// New IDs are 26 characters of RFC 4648 base32 from the OS's cryptographic RNG. IDs read from an
/// existing index (cocoon's included) are accepted whatever their length, as long as they can
/// name a directory: one plain path component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A fresh random ID.
    ///
    /// # Errors
    /// The kernel's answer when the OS RNG cannot be read (the store wraps it in
    /// [`Error::Random`](crate::Error::Random)).
    pub fn generate() -> std::io::Result<SnapshotId> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| match e.raw_os_error() {
            Some(errno) => std::io::Error::from_raw_os_error(errno),
            None => std::io::Error::other(e.to_string()),
        })?;
        let id = data_encoding::BASE32_NOPAD.encode(&bytes);
        debug_assert_eq!(id.len(), ID_LEN);
        Ok(SnapshotId(id))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if is_plain_name(&s) {
            Ok(SnapshotId(s))
        } else {
            Err(format!("snapshot id {s:?} cannot name a directory"))
        }
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

/// Lets maps keyed by ID be looked up by `&str`; consistent with `Ord`, which compares the text.
impl std::borrow::Borrow<str> for SnapshotId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is exactly one normal path component: not empty, no `/`, no NUL, not `.`/`..`.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The marker value of cocoon's `image_blob_ids` set: an empty JSON object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMark {}

/// A snapshot's configuration: what the hypervisor and the user said about it.
///
/// Every field but `name` is omitted from JSON when empty or zero, as cocoon's Go `omitempty` does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are cocoon's, documented there by name
pub struct Config {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_digest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_type: String,
    /// Image blob hex digests, a set: `{"hex": {}}`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub image_blob_ids: BTreeMap<String, BlobMark>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hypervisor: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cpu: i64,
    /// Guest memory in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory: i64,
    /// Disk size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub storage: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nics: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub queue_size: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_queue_size: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_direct_io: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub windows: bool,
}

impl Config {
    /// This config with the name and the description replaced by those given (a caller's
    /// `--name` and `--description` over what a source directory or archive says).
    pub fn with_overrides(mut self, name: Option<String>, description: Option<String>) -> Config {
        if let Some(name) = name {
            self.name = name;
        }
        if let Some(description) = description {
            self.description = description;
        }
        self
    }
}

/// One snapshot's entry in the index: its config flattened, plus what the store knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The snapshot's config, flattened at the top level as cocoon writes it.
    #[serde(flatten)]
    pub config: Config,
    /// When the snapshot was created.
    #[serde(with = "gotime")]
    pub created_at: DateTime<FixedOffset>,
    /// The data directory holding the snapshot's files.
    #[serde(default, deserialize_with = "null_as_default")]
    pub data_dir: String,
    /// Apparent size: the sum of the data files' lengths.
    #[serde(default)]
    pub size_bytes: u64,
    /// True while the snapshot is being created; such a record is never listed or resolved.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pending: bool,
    /// When the snapshot was last cloned, exported or handed out.
    #[serde(
        default,
        with = "gotime::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_accessed_at: Option<DateTime<FixedOffset>>,
    /// Fields this version does not know, kept as they were on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// The record's snapshot ID.
    ///
    /// The index key is authoritative; this is the copy in the config, which the store always sets.
    pub fn id(&self) -> &str {
        &self.config.id
    }
}

/// How one file was cloned: the rung of the ladder it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloneMethod {
    /// FICLONE: the clone shares every extent with its source; no data was copied.
    Reflink,
    /// A hard link: the clone is the source's inode.
    Hardlink,
    /// A hole-preserving copy of the data.
    Copy,
    /// A rename: the source file itself was moved in (`save --move`).
    Move,
    /// Fetched from a registry (`pull`), at least in part.
    Download,
}

impl CloneMethod {
    /// The name the reports print.
    pub fn as_str(self) -> &'static str {
        match self {
            CloneMethod::Reflink => "reflink",
            CloneMethod::Hardlink => "hardlink",
            CloneMethod::Copy => "copy",
            CloneMethod::Move => "move",
            CloneMethod::Download => "download",
        }
    }
}

impl fmt::Display for CloneMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one file of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    /// The file's name in the snapshot.
    pub name: String,
    /// The rung of the ladder it got.
    pub method: CloneMethod,
    /// Its apparent size in bytes.
    pub bytes: u64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Go writes a nil map or string as `null`; read that as the empty value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Timestamps as Go's `time.Time` marshals them: RFC 3339 with up to nine fraction digits,
/// trailing zeros trimmed, `Z` for UTC. Any RFC 3339 reads.
pub(crate) mod gotime {
    use chrono::{DateTime, Datelike, FixedOffset, Timelike};
    use serde::{Deserialize, Deserializer, Serializer};

    /// The current time in the local offset, as Go's `time.Now()`.
    pub(crate) fn now() -> DateTime<FixedOffset> {
        chrono::Local::now().fixed_offset()
    }

    /// `t` as Go's `time.RFC3339Nano` formats it.
    pub(crate) fn format(t: &DateTime<FixedOffset>) -> String {
        // Go trims trailing zeros of the fraction, and the dot when nothing is left.
        // chrono holds a leap second (`:60`) as second 59 plus a whole second of nanoseconds;
        // `%S` prints the 60, so only the remainder is a fraction.
        let fraction = match t.nanosecond() % 1_000_000_000 {
            0 => String::new(),
            n => format!(".{n:09}").trim_end_matches('0').to_string(),
        };
        let offset = match t.offset().local_minus_utc() {
            0 => "Z".to_string(),
            _ => t.format("%:z").to_string(),
        };
        format!("{}{fraction}{offset}", t.format("%Y-%m-%dT%H:%M:%S"))
    }

    pub(crate) fn serialize<S: Serializer>(
        t: &DateTime<FixedOffset>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<DateTime<FixedOffset>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)
    }

    /// An optional timestamp; Go's zero time (year 1) reads as unset.
    pub(crate) mod optional {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<DateTime<FixedOffset>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
            let Some(text) = Option::<String>::deserialize(d)? else {
                return Ok(None);
            };
            let t = DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)?;
            Ok((t.year() > 1).then_some(t))
        }
    }
}

/// A directory entry of a source that is not a data file, and so was not saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The entry's name; a name that is not UTF-8 is given escaped (`disk\xff.raw`).
    pub name: String,
    /// What it is: `directory`, `symlink`, `fifo`, `socket`, `device`, `name not UTF-8`,
    /// `symlink to no regular file`.
    pub kind: &'static str,
}

impl std::fmt::Display for Skipped {
    /// `"name" (kind)`, the name escaped so that no control byte reaches a terminal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\" ({})", self.name.escape_debug(), self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_26_chars_of_base32() {
        let a = SnapshotId::generate().unwrap();
        let b = SnapshotId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), ID_LEN);
        assert!(
            a.as_str()
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
    }

    #[test]
    fn ids_that_cannot_name_a_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "x\0y"] {
            assert!(SnapshotId::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        assert!(SnapshotId::try_from("SNAP111111111111".to_string()).is_ok());
    }

    #[test]
    fn timestamps_are_written_as_go_writes_them() {
        let t = DateTime::parse_from_rfc3339("2026-07-01T10:00:00.120000000+08:00").unwrap();
        assert_eq!(gotime::format(&t), "2026-07-01T10:00:00.12+08:00");
        let t = DateTime::parse_from_rfc3339("2026-07-01T10:00:00Z").unwrap();
        assert_eq!(gotime::format(&t), "2026-07-01T10:00:00Z");
        let t = DateTime::parse_from_rfc3339("2026-07-01T10:00:00.000000001-05:30").unwrap();
        assert_eq!(gotime::format(&t), "2026-07-01T10:00:00.000000001-05:30");
    }

    #[test]
    fn config_omits_empty_fields_but_name() {
        let json = serde_json::to_string(&Config::default()).unwrap();
        assert_eq!(json, r#"{"name":""}"#);
    }

    #[test]
    fn record_keeps_unknown_fields_and_reads_go_nulls() {
        let text = r#"{"id":"A","name":null,"image_blob_ids":null,"created_at":"2026-07-01T10:00:00Z",
            "data_dir":"/d","size_bytes":4096,"last_accessed_at":"0001-01-01T00:00:00Z","future":[1,2]}"#;
        let rec: Record = serde_json::from_str(text).unwrap();
        assert_eq!(rec.config.name, "");
        assert_eq!(rec.last_accessed_at, None);
        assert_eq!(rec.extra["future"], serde_json::json!([1, 2]));
        let back = serde_json::to_value(&rec).unwrap();
        assert_eq!(back["future"], serde_json::json!([1, 2]));
        assert_eq!(back["name"], "");
        assert!(back.get("pending").is_none());
        assert!(back.get("last_accessed_at").is_none());
    }
}
