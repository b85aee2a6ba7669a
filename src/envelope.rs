//! `snapshot.json`, the envelope that travels with a snapshot outside the store: in an exported
//! directory and as the first entry of a tar archive.
//!
//! ```json
//! {
//!   "config": { "name": "base", "cpu": 2, "memory": 1073741824, ... },
//!   "version": 1,
//!   "files": ["config.json", "memory-range-0", "overlay.qcow2", "state.json"]
//! }
//! ```
//!
//! Pretty-printed with a trailing newline, as cocoon writes it. `files` is optional on read; when
//! present, each listed file must be in the directory. The envelope is written atomically and
//! last, so its presence says every data file beside it is complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::types::{Config, is_plain_name};

/// The envelope's file name.
pub const ENVELOPE_FILE: &str = "snapshot.json";

/// The only envelope version there is.
pub const ENVELOPE_VERSION: u64 = 1;

/// The contents of `snapshot.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The snapshot's config.
    pub config: Config,
    /// Always [`ENVELOPE_VERSION`].
    pub version: u64,
    /// The data files beside the envelope, in name order; absent in cocoon's older envelopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

impl Envelope {
    /// A version-1 envelope for `config` listing `files`.
    pub fn new(config: Config, files: Vec<String>) -> Envelope {
        Envelope {
            config,
            version: ENVELOPE_VERSION,
            files: Some(files),
        }
    }

    /// Parses envelope bytes read from `path` (a file, or an archive entry's name).
    ///
    /// # Errors
    /// [`Error::EnvelopeInvalid`] for bad JSON, [`Error::EnvelopeVersion`] for a version other
    /// than 1, [`Error::InvalidFileName`] for a listed name that is not one plain component.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Envelope> {
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|source| Error::EnvelopeInvalid {
                path: path.to_path_buf(),
                source,
            })?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(Error::EnvelopeVersion {
                path: path.to_path_buf(),
                version: envelope.version,
            });
        }
        for name in envelope.files.iter().flatten() {
            if !is_plain_name(name) || name == ENVELOPE_FILE {
                return Err(Error::InvalidFileName {
                    dir: path.to_path_buf(),
                    name: name.clone(),
                });
            }
        }
        Ok(envelope)
    }

    /// The pretty-printed bytes, with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(self).expect("an envelope of strings and numbers serializes");
        bytes.push(b'\n');
        bytes
    }
}

/// Reads `dir/snapshot.json` and checks that every file it lists is in `dir`.
///
/// # Errors
/// [`Error::EnvelopeMissing`] when there is no envelope, [`Error::ListedFileMissing`] when a
/// listed file is absent, and the errors of [`Envelope::parse`].
pub fn read(dir: &Path) -> Result<Envelope> {
    let path = dir.join(ENVELOPE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::EnvelopeMissing {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let envelope = Envelope::parse(&bytes, &path)?;
    for name in envelope.files.iter().flatten() {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            return Err(Error::ListedFileMissing {
                dir: dir.to_path_buf(),
                name: name.clone(),
            });
        }
    }
    Ok(envelope)
}

/// Reads a snapshot config from `path`: either a bare config object or a whole envelope.
///
/// # Errors
/// [`Error::ConfigInvalid`] when it is neither; [`Error::Io`] when it cannot be read.
pub fn read_config(path: &Path) -> Result<Config> {
    let bytes = fsutil::read(path)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Error::ConfigInvalid {
            path: path.to_path_buf(),
            source,
        })?;
    let invalid = |source| Error::ConfigInvalid {
        path: path.to_path_buf(),
        source,
    };
    if !value.is_object() {
        // serde would read an array as a struct, field by field; a config is an object.
        return Err(invalid(serde::de::Error::custom("expected a JSON object")));
    }
    if value.get("config").is_some() && value.get("version").is_some() {
        return Ok(Envelope::parse(&bytes, path)?.config);
    }
    serde_json::from_value(value).map_err(invalid)
}

/// Writes `dir/snapshot.json` atomically, and durably when `durable`; returns its path.
pub fn write(dir: &Path, envelope: &Envelope, durable: bool) -> Result<PathBuf> {
    let path = dir.join(ENVELOPE_FILE);
    let bytes = envelope.to_bytes();
    match durable {
        true => fsutil::write_atomic(&path, &bytes, 0o644)?,
        false => fsutil::write_replace(&path, &bytes, 0o644)?,
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            name: "base".into(),
            cpu: 2,
            memory: 1 << 30,
            ..Config::default()
        }
    }

    #[test]
    fn written_envelope_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mem"), b"x").unwrap();
        let env = Envelope::new(config(), vec!["mem".into()]);
        for durable in [true, false] {
            write(dir.path(), &env, durable).unwrap();
            assert_eq!(read(dir.path()).unwrap(), env);
        }
        let text = std::fs::read_to_string(dir.path().join(ENVELOPE_FILE)).unwrap();
        assert!(
            text.ends_with("}\n") && text.contains("\n  \"version\": 1"),
            "{text}"
        );
    }

    #[test]
    fn missing_envelope_is_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::EnvelopeMissing { dir: d } if d == dir.path()));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn other_versions_and_bad_json_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENVELOPE_FILE);
        std::fs::write(&path, r#"{"config":{"name":"a"},"version":2}"#).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(Error::EnvelopeVersion { version: 2, .. })
        ));
        std::fs::write(&path, r#"{"config":"#).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(Error::EnvelopeInvalid { .. })
        ));
    }

    #[test]
    fn listed_files_must_exist_and_be_plain_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENVELOPE_FILE);
        std::fs::write(
            &path,
            r#"{"config":{"name":"a"},"version":1,"files":["mem"]}"#,
        )
        .unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::ListedFileMissing { name, .. } if name == "mem"));
        std::fs::write(
            &path,
            r#"{"config":{"name":"a"},"version":1,"files":["../etc/passwd"]}"#,
        )
        .unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(Error::InvalidFileName { .. })
        ));
    }

    #[test]
    fn config_file_is_a_config_or_an_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"{"name":"a","cpu":4}"#).unwrap();
        assert_eq!(read_config(&path).unwrap().cpu, 4);
        std::fs::write(&path, r#"{"config":{"name":"b","cpu":8},"version":1}"#).unwrap();
        assert_eq!(read_config(&path).unwrap().name, "b");
        std::fs::write(&path, r#"{"config":{"name":"b"},"version":3}"#).unwrap();
        assert!(matches!(
            read_config(&path),
            Err(Error::EnvelopeVersion { .. })
        ));
        std::fs::write(&path, r#"["not", "a", "config"]"#).unwrap();
        assert!(matches!(
            read_config(&path),
            Err(Error::ConfigInvalid { .. })
        ));
    }

    #[test]
    fn cocoon_envelope_without_files_reads() {
        let bytes = br#"{"config":{"cpu":2,"name":"fx","image_blob_ids":{"5f70":{}}},"version":1}"#;
        let env = Envelope::parse(bytes, Path::new("snapshot.json")).unwrap();
        assert_eq!(env.files, None);
        assert!(env.config.image_blob_ids.contains_key("5f70"));
    }
}
