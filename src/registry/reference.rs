//! Where an artifact lives: `HOST[:PORT]/REPO[:TAG]` or `HOST[:PORT]/REPO@sha256:…`, with the
//! grammar of the OCI distribution spec, and whether the host is spoken to over plain HTTP.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::registry::digest::Digest;

/// A tag or a digest: what a manifest is fetched or stored by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Version {
    Tag(String),
    Digest(Digest),
}

/// A parsed registry reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub(crate) host: String,
    /// The repository path.
    pub(crate) repository: String,
    /// The tag or digest; `None` when the reference names neither.
    pub(crate) version: Option<Version>,
}

impl Reference {
    /// Parses `text`.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] saying which part is wrong.
    pub fn parse(text: &str) -> Result<Reference> {
        let bad = |reason: &'static str| Error::InvalidReference {
            reference: text.to_string(),
            reason,
        };
        let (host, rest) = text
            .split_once('/')
            .ok_or_else(|| bad("expected HOST[:PORT]/REPOSITORY"))?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(bad("the host is not a host name, an address or host:port"));
        }
        let (path, version) = if let Some((path, digest)) = rest.split_once('@') {
            let digest =
                Digest::parse(digest).ok_or_else(|| bad("the digest is not sha256:<64 hex>"))?;
            (path, Some(Version::Digest(digest)))
        } else {
            match rest.rsplit_once(':') {
                Some((path, tag)) => {
                    if !is_tag(tag) {
                        return Err(bad("the tag is not [A-Za-z0-9_][A-Za-z0-9._-]{0,127}"));
                    }
                    (path, Some(Version::Tag(tag.to_string())))
                }
                None => (rest, None),
            }
        };
        if !is_repository(path) {
            return Err(bad(
                "the repository is not lowercase path components of [a-z0-9] joined by . _ - or /",
            ));
        }
        Ok(Reference {
            host: host.to_string(),
            repository: path.to_string(),
            version,
        })
    }

    /// The scheme and authority requests go to: plain HTTP for loopback hosts (as docker
    /// does) or when `insecure`, HTTPS otherwise.
    pub(crate) fn base_url(&self, insecure: bool) -> String {
        let scheme = if insecure || is_loopback(&self.host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.host)
    }

    /// The tag, or the digest's text, a manifest is fetched by.
    pub(crate) fn version_text(&self) -> Option<String> {
        self.version.as_ref().map(|v| match v {
            Version::Tag(tag) => tag.clone(),
            Version::Digest(d) => d.to_string(),
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        match &self.version {
            Some(Version::Tag(tag)) => write!(f, ":{tag}"),
            Some(Version::Digest(d)) => write!(f, "@{d}"),
            None => Ok(()),
        }
    }
}

/// Whether `tag` is a valid OCI tag.
pub(crate) fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// Whether `path` is a valid OCI repository name.
fn is_repository(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 255
        && path.split('/').all(|component| {
            let b = component.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        })
}

/// `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_writes_them() {
        let r = Reference::parse("127.0.0.1:5000/vm/base:v1").expect("tag");
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "vm/base")
        );
        assert_eq!(r.version, Some(Version::Tag("v1".into())));
        assert_eq!(r.to_string(), "127.0.0.1:5000/vm/base:v1");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("localhost/vm@{d}")).expect("digest");
        assert_eq!(r.version_text().as_deref(), Some(d));
        assert_eq!(Reference::parse("ghcr.io/a/b").expect("bare").version, None);
        for bad in [
            "",
            "nohost",
            "h/UPPER",
            "h/a:b:c!",
            "h/a@sha256:00",
            "h//a",
            "h/a/",
            "ho st/a",
        ] {
            assert!(
                matches!(Reference::parse(bad), Err(Error::InvalidReference { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_loopback_hosts_get_plain_http_unasked() {
        let url = |text: &str, insecure| Reference::parse(text).expect(text).base_url(insecure);
        assert_eq!(url("localhost:5000/a", false), "http://localhost:5000");
        assert_eq!(url("127.3.2.1/a", false), "http://127.3.2.1");
        assert_eq!(url("[::1]:5000/a", false), "http://[::1]:5000");
        assert_eq!(url("ghcr.io/a", false), "https://ghcr.io");
        assert_eq!(url("10.0.0.1:5000/a", false), "https://10.0.0.1:5000");
        assert_eq!(url("10.0.0.1:5000/a", true), "http://10.0.0.1:5000");
    }
}
