//! A client of one repository of an OCI Distribution registry: blob HEAD, GET and upload
//! (POST, then one PUT), manifest GET and PUT, over ureq. Authentication answers the registry's
//! own challenge (Basic, or a Bearer token fetched from its realm and fetched again when it
//! expires); transient failures (a reset connection, 5xx, 429) are retried with backoff.
//! Shared by the upload and download threads of one push or pull.

use std::io::{self, Read};
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{self, Response};

use crate::error::{Error, Result};
use crate::registry::auth::{Challenge, Credentials, TokenAnswer};
use crate::registry::digest::Digest;
use crate::registry::reference::Reference;

/// Attempts of one request before a transient failure is final.
pub(crate) const ATTEMPTS: u32 = 6;
/// The first backoff; it doubles each attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait a `Retry-After` may ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most bytes read of an error body or a token answer.
const SMALL_BODY: u64 = 64 << 10;

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Plain HTTP for a host that is not loopback.
    pub insecure: bool,
    /// Credentials; when `None`, those `docker login` stored for the host, if any.
    pub credentials: Option<Credentials>,
}

/// A response body being read.
pub(crate) type BodyReader = ureq::BodyReader<'static>;

/// A client of one repository.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value in use, once the registry asked for one.
    authorization: Mutex<Option<String>>,
    actions: &'static str,
}

impl Client {
    /// A client of `reference`'s repository, for `push` or only pull.
    pub(crate) fn new(
        reference: &Reference,
        connection: &Connection,
        push: bool,
    ) -> Result<Client> {
        let credentials = match &connection.credentials {
            Some(c) => Some(c.clone()),
            None => Credentials::from_docker_config(&reference.host)?,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(concat!("snapstore/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(16)
            .build()
            .into();
        Ok(Client {
            agent,
            base: reference.base_url(connection.insecure),
            registry: reference.host.clone(),
            repository: reference.repository.clone(),
            credentials,
            authorization: Mutex::new(None),
            actions: if push { "pull,push" } else { "pull" },
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    /// Whether the repository holds blob `digest`.
    pub(crate) fn blob_exists(&self, digest: &Digest) -> Result<bool> {
        let (resp, what) = self.blob("HEAD", digest)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    /// A bodiless request for blob `digest`; the response and what it was, for messages.
    fn blob(&self, method: &str, digest: &Digest) -> Result<(Response<ureq::Body>, String)> {
        let what = || format!("{method} blob {digest}");
        let url = self.url(&format!("blobs/{digest}"));
        Ok((self.send(method, &url, &[], None, &what)?, what()))
    }

    /// Uploads blob `digest` from `bytes`: a POST for an upload session, then one PUT. A
    /// session the registry lost (404 on the PUT, after a retried failure) is started again.
    pub(crate) fn upload_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let what = || format!("upload of blob {digest}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send("POST", &self.url("blobs/uploads/"), &[], Some(&[]), &what)?;
            if resp.status().as_u16() != 202 {
                return Err(self.status_error(resp, &what()));
            }
            let location = header(&resp, "location").ok_or_else(|| Error::Registry {
                registry: self.registry.clone(),
                what: what(),
                status: 202,
                message: "no Location for the upload".into(),
            })?;
            let mut url = if location.starts_with('/') {
                format!("{}{location}", self.base)
            } else {
                location
            };
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("digest={digest}"));
            let headers = [("content-type", "application/octet-stream")];
            let resp = self.send("PUT", &url, &headers, Some(bytes), &what)?;
            match resp.status().as_u16() {
                201 | 204 => return Ok(()),
                404 if attempt < ATTEMPTS => {}
                _ => return Err(self.status_error(resp, &what())),
            }
        }
    }

    /// A reader of blob `digest`, following the registry's redirects (without credentials).
    pub(crate) fn get_blob(&self, digest: &Digest) -> Result<BodyReader> {
        let (resp, what) = self.blob("GET", digest)?;
        match resp.status().as_u16() {
            200 => Ok(resp.into_body().into_reader()),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    /// The manifest `version` (a tag or a digest), at most `limit` bytes; `None` when unknown.
    pub(crate) fn get_manifest(
        &self,
        version: &str,
        accept: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>> {
        let what = || format!("GET manifest {version}");
        let url = self.url(&format!("manifests/{version}"));
        let resp = self.send("GET", &url, &[("accept", accept)], None, &what)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.status_error(resp, &what())),
        }
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| self.unreachable(source))?;
        if bytes.len() as u64 > limit {
            return Err(Error::NotAnArtifact {
                reference: version.to_string(),
                reason: format!("its manifest is over {limit} bytes"),
            });
        }
        Ok(Some(bytes))
    }

    /// Stores `bytes` as manifest `tag`.
    pub(crate) fn put_manifest(&self, tag: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        let what = || format!("PUT manifest {tag}");
        let url = self.url(&format!("manifests/{tag}"));
        let resp = self.send(
            "PUT",
            &url,
            &[("content-type", media_type)],
            Some(bytes),
            &what,
        )?;
        match resp.status().as_u16() {
            201 | 200 => Ok(()),
            _ => Err(self.status_error(resp, &what())),
        }
    }

    /// One request, authenticated as the registry asks, retried on transient failures. Any
    /// status but 401 (handled here), 429 and 5xx (retried) is the caller's to judge.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        what: &dyn Fn() -> String,
    ) -> Result<Response<ureq::Body>> {
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent_auth = lock(&self.authorization).clone();
            let mut request = http::Request::builder().method(method).uri(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(auth) = &sent_auth {
                request = request.header("authorization", auth);
            }
            let built = match body {
                Some(bytes) => request.body(bytes).map(|r| self.agent.run(r)),
                None => request.body(()).map(|r| self.agent.run(r)),
            };
            let resp = match built.map_err(|e| self.unreachable(io::Error::other(e)))? {
                Ok(resp) => resp,
                Err(e) if is_transient(&e) && attempt < ATTEMPTS => {
                    backoff(attempt, None);
                    continue;
                }
                Err(e) => return Err(self.transport(e)),
            };
            let status = resp.status().as_u16();
            if status == 401 && !renewed {
                renewed = true;
                // Another thread may have renewed the token meanwhile: then just try again.
                if *lock(&self.authorization) == sent_auth {
                    self.authenticate(&resp)?;
                }
                continue;
            }
            if status == 401 || status == 403 {
                return Err(self.denied(status));
            }
            if (status == 429 || status >= 500) && attempt < ATTEMPTS {
                backoff(attempt, header(&resp, "retry-after"));
                continue;
            }
            if status == 429 || status >= 500 {
                return Err(self.status_error(resp, &what()));
            }
            return Ok(resp);
        }
    }

    /// Answers a 401's challenge: Basic with the credentials, or a Bearer token from the realm.
    fn authenticate(&self, resp: &Response<ureq::Body>) -> Result<()> {
        let challenge = header(resp, "www-authenticate").and_then(|h| Challenge::parse(&h));
        let Some(challenge) = challenge else {
            return Err(self.denied(401));
        };
        let value = match challenge.scheme.as_str() {
            "basic" => match &self.credentials {
                Some(c) => c.basic(),
                None => return Err(self.denied(401)),
            },
            "bearer" => format!("Bearer {}", self.token(&challenge)?),
            _ => return Err(self.denied(401)),
        };
        *lock(&self.authorization) = Some(value);
        Ok(())
    }

    /// A token from the challenge's realm for this repository, asked with the credentials
    /// when there are some (anonymously otherwise, as public repositories allow).
    fn token(&self, challenge: &Challenge) -> Result<String> {
        let Some(realm) = challenge.params.get("realm") else {
            return Err(self.denied(401));
        };
        let scope = format!("repository:{}:{}", self.repository, self.actions);
        let mut request = self.agent.get(realm).query("scope", &scope);
        if let Some(service) = challenge.params.get("service") {
            request = request.query("service", service);
        }
        if let Some(c) = &self.credentials {
            request = request.header("authorization", &c.basic());
        }
        let mut resp = request.call().map_err(|e| self.transport(e))?;
        if !resp.status().is_success() {
            return Err(self.denied(resp.status().as_u16()));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(SMALL_BODY)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        let answer: TokenAnswer =
            serde_json::from_slice(&bytes).map_err(|e| self.unreachable(io::Error::other(e)))?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.denied(401))
    }

    fn denied(&self, status: u16) -> Error {
        let hint = match (status, &self.credentials) {
            (401, None) => "credentials needed: docker login, or --username and --password-stdin",
            (401, Some(_)) => "the credentials were refused",
            _ => "the credentials do not allow this",
        };
        Error::RegistryDenied {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            status,
            hint,
        }
    }

    /// The error of an unexpected status, with the registry's own message (OCI error JSON or
    /// text), shortened; it is shown escaped.
    pub(crate) fn status_error(&self, resp: Response<ureq::Body>, what: &str) -> Error {
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(SMALL_BODY)
            .read_to_end(&mut body);
        let message = match serde_json::from_slice::<OciErrors>(&body) {
            Ok(errors) => errors
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        Error::Registry {
            registry: self.registry.clone(),
            what: what.to_string(),
            status,
            message: message.chars().take(200).collect(),
        }
    }

    pub(crate) fn unreachable(&self, source: io::Error) -> Error {
        Error::RegistryUnreachable {
            registry: self.registry.clone(),
            source,
        }
    }

    /// The error of a request that failed at the transport.
    fn transport(&self, e: ureq::Error) -> Error {
        let source = match e {
            ureq::Error::Io(io) => io,
            other => io::Error::other(other),
        };
        self.unreachable(source)
    }
}

/// Whether a failure may pass if tried again: a connection reset or cut short, a timeout.
/// A refused connection is not: the registry is not there.
fn is_transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => is_transient_io(io),
        ureq::Error::Timeout(_) | ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Whether an I/O error while reading a body may pass if the request is made again.
pub(crate) fn is_transient_io(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | TimedOut | Interrupted
    )
}

/// Sleeps before attempt `attempt + 1`: as the registry's `Retry-After` asks (capped), else
/// exponentially.
pub(crate) fn backoff(attempt: u32, retry_after: Option<String>) {
    let asked = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let wait = asked.unwrap_or(FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1)));
    std::thread::sleep(wait.min(MAX_BACKOFF));
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(serde::Deserialize)]
struct OciErrors {
    errors: Vec<OciError>,
}

#[derive(serde::Deserialize)]
struct OciError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}
