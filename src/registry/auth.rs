//! Credentials for a registry, and the two ways registries ask for them: `Basic`, and `Bearer`
//! tokens from the realm named in a `WWW-Authenticate` challenge (the docker token protocol,
//! which GHCR, ECR, Harbor and Docker Hub all speak). A credential or token is never put into a
//! message: `Credentials` does not even debug-print its password.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The credentials `docker login` stored for `host` in `$DOCKER_CONFIG/config.json` (by
    /// default `~/.docker/config.json`), from its `auths` entries; `None` when there are none.
    ///
    /// # Errors
    /// [`Error::Credentials`] when the file exists but its entry for `host` cannot be read.
    pub fn from_docker_config(host: &str) -> Result<Option<Credentials>> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".docker"),
                None => return Ok(None),
            },
        };
        let path = dir.join("config.json");
        match std::fs::read(&path) {
            Ok(bytes) => from_config_bytes(&bytes, &path, host),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Credentials {
                reason: e.to_string(),
                path,
            }),
        }
    }

    /// The `Authorization` value of Basic auth.
    pub(crate) fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", BASE64.encode(pair.as_bytes()))
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

fn from_config_bytes(bytes: &[u8], path: &Path, host: &str) -> Result<Option<Credentials>> {
    let bad = |reason: &str| Error::Credentials {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    // The error of a failed parse may quote the file, and the file holds secrets: say only
    // where it failed.
    let config: DockerConfig = serde_json::from_slice(bytes).map_err(|e| {
        bad(&format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let want = auth_key(host);
    let Some(entry) = config
        .auths
        .into_iter()
        .find_map(|(key, entry)| (auth_key(&key) == want).then_some(entry))
    else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
        let decoded = BASE64
            .decode(auth.trim().as_bytes())
            .map_err(|_| bad("the auth entry is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("the auth entry is not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| bad("the auth entry is not user:password"))?;
        return Ok(Some(Credentials::new(user, pass)));
    }
    match (entry.username, entry.password) {
        (Some(user), Some(pass)) => Ok(Some(Credentials::new(user, pass))),
        _ => Ok(None),
    }
}

/// The host an `auths` key stands for: docker writes `https://index.docker.io/v1/` for Docker
/// Hub and `host:port` or `https://host:port` for the rest.
fn auth_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => "index.docker.io".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `basic` or `bearer`, lowercased.
    pub(crate) scheme: String,
    /// Its parameters, keys lowercased: `realm`, `service`, `scope`.
    pub(crate) params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Scheme key="value", key=value`.
    pub(crate) fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = BTreeMap::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => after.split_once(',').unwrap_or((after, "")),
            };
            params.insert(key.trim().to_ascii_lowercase(), value.to_string());
            rest = after;
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

/// A token endpoint's answer.
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .expect("bearer");
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = Challenge::parse(r#"Basic realm="Registry Realm""#).expect("basic");
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
    }

    #[test]
    fn docker_config_entries_are_found_by_host_and_never_shown() {
        let path = Path::new("/cfg.json");
        let config = br#"{"auths": {"https://127.0.0.1:5000": {"auth": "dXNlcjpzM2NyM3Q="},
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}}"#;
        let creds = from_config_bytes(config, path, "127.0.0.1:5000")
            .expect("read")
            .expect("entry");
        assert_eq!(creds, Credentials::new("user", "s3cr3t"));
        assert!(!format!("{creds:?}").contains("s3cr3t"));
        let hub = from_config_bytes(config, path, "registry-1.docker.io").expect("read");
        assert_eq!(hub, Some(Credentials::new("hub", "pw")));
        assert_eq!(
            from_config_bytes(config, path, "other:1").expect("read"),
            None
        );
        let broken = br#"{"auths": {"h": {"auth": "s3cr3t-not-base64!"}}}"#;
        let err = from_config_bytes(broken, path, "h").expect_err("bad");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let garbled = br#"{"auths": {"h": {"auth": "s3cr3t"#;
        let err = from_config_bytes(garbled, path, "h").expect_err("bad json");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
