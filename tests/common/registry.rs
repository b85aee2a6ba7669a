//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF distribution server)
//! started on a free loopback port with filesystem storage in a temp dir, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server binary Debian's package installs.
const BINARY: &str = "docker-registry";

/// A running registry; killed (only this one) and its storage removed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
    _auth_dir: Option<tempfile::TempDir>,
}

impl Registry {
    /// Starts a registry without auth, or says `SKIPPED` when the binary is missing (and fails
    /// when the CI script said it installed one).
    pub fn start() -> Option<Registry> {
        Registry::start_with(None)
    }

    /// Starts a registry that wants `user` and `password` (htpasswd, bcrypt).
    pub fn with_login(user: &str, password: &str) -> Option<Registry> {
        Registry::start_with(Some((user, password)))
    }

    /// Starts a registry that wants Bearer tokens from `tokens`.
    pub fn with_tokens(tokens: &TokenServer) -> Option<Registry> {
        Registry::launch(Some(tokens.auth_config()))
    }

    fn start_with(login: Option<(&str, &str)>) -> Option<Registry> {
        let dir = tempfile::tempdir().unwrap();
        let auth = login.map(|(user, password)| {
            let hash = bcrypt::hash(password, 4).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: snapstore-test\n    path: {}\n",
                htpasswd.display()
            )
        });
        let registry = Registry::launch(auth);
        registry.map(|mut r| {
            r._auth_dir = Some(dir);
            r
        })
    }

    fn launch(auth: Option<String>) -> Option<Registry> {
        if !registry_installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let port = free_port();
        let auth = auth.unwrap_or_default();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: snapstore-test-secret\n{auth}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            port,
            storage,
            _dir: dir,
            _auth_dir: None,
        };
        registry.wait_ready();
        Some(registry)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}/{path}", self.host())
    }

    /// The file holding blob `digest` (`sha256:…`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/v2/", self.host());
        while Instant::now() < deadline {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            if agent.get(&url).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{BINARY} did not answer on {url} within 20 s");
    }

    /// A raw HTTP request to this registry, as a test crafts one.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Option<String>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("http://{}{path}", self.host())
        };
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", content_type)
            .body(body)
            .unwrap();
        let resp = agent.run(request).unwrap();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (resp.status().as_u16(), location)
    }

    /// Uploads `bytes` as a blob of `repo`; its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let (status, location) = self.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            "application/octet-stream",
            b"",
        );
        assert_eq!(status, 202);
        let location = location.unwrap();
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = if location.starts_with('/') {
            format!("http://{}{location}{sep}digest={digest}", self.host())
        } else {
            format!("{location}{sep}digest={digest}")
        };
        let (status, _) = self.request("PUT", &url, "application/octet-stream", bytes);
        assert_eq!(status, 201, "blob upload");
        digest
    }

    /// Stores `manifest` as `repo:tag`.
    pub fn put_manifest(&self, repo: &str, tag: &str, manifest: &serde_json::Value) {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let (status, _) = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            "application/vnd.oci.image.manifest.v1+json",
            &bytes,
        );
        assert_eq!(status, 201, "manifest upload");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the registry binary is there; when it is not, says `SKIPPED` (and fails when the CI
/// script said it installed one).
fn registry_installed() -> bool {
    if Command::new(BINARY).arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("SNAPSTORE_REQUIRE_REGISTRY").is_none(),
        "{BINARY} missing, but the CI script installed it"
    );
    eprintln!("SKIPPED: {BINARY} not installed (apt-get install docker-registry)");
    false
}

/// A token server in the docker token protocol, for a registry with `auth: token`: it checks
/// Basic credentials and signs RS256 JWTs with a self-signed certificate (made by `openssl`)
/// that the registry trusts. Its first token grants `pull` only, whatever was asked, so a push
/// has to fetch a second one midway, as after a token's expiry.
pub struct TokenServer {
    pub port: u16,
    /// Tokens issued so far.
    pub issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    dir: tempfile::TempDir,
}

impl TokenServer {
    /// Starts one that accepts `user` with `password`; `None` (SKIPPED) without the registry.
    pub fn start(user: &str, password: &str) -> Option<TokenServer> {
        if !registry_installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=snapstore-test-token",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(made.status.success(), "{made:?}");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let basic = format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
        );
        let counter = std::sync::Arc::clone(&issued);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve_token(stream, &basic, &key, &der, &counter);
            }
        });
        Some(TokenServer { port, issued, dir })
    }

    fn auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: snapstore-test\n    issuer: snapstore-test-issuer\n    rootcertbundle: {}\n",
            self.port,
            self.dir.path().join("cert.pem").display()
        )
    }
}

/// Answers one token request.
fn serve_token(
    mut stream: std::net::TcpStream,
    basic: &str,
    key: &Path,
    der: &[u8],
    issued: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorized = value.trim() == basic;
        }
    }
    if !authorized {
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let query = request_line.split_whitespace().nth(1).unwrap_or("");
    let scope = query
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("scope="))
        .map(|s| {
            s.replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
        })
        .unwrap_or_default();
    let mut parts = scope.splitn(3, ':');
    let (_, repo, actions) = (
        parts.next(),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let actions: Vec<&str> = if n == 0 {
        vec!["pull"]
    } else {
        actions.split(',').collect()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |bytes: &[u8]| data_encoding::BASE64URL_NOPAD.encode(bytes);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [data_encoding::BASE64.encode(der)]});
    let claims = serde_json::json!({
        "iss": "snapstore-test-issuer", "sub": "alice", "aud": "snapstore-test",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("token-{n}"),
        "access": [{"type": "repository", "name": repo, "actions": actions}],
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sign = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sign.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let signature = sign.wait_with_output().unwrap().stdout;
    let token = format!("{input}.{}", b64(&signature));
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sha256 of a file's bytes, for comparing big files.
pub fn file_digest(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

/// How a [`FlakyProxy`] fails a connection.
#[derive(Debug, Clone, Copy)]
pub enum Flake {
    /// Answers `503 Service Unavailable`.
    Unavailable,
    /// Answers `429 Too Many Requests` with `Retry-After: 1`.
    TooMany,
    /// Reads the request, then closes the connection without a word.
    Hangup,
}

/// A TCP proxy in front of a registry whose first connections fail, one [`Flake`] each, and
/// whose later ones pass through: the transient failures a push or pull must ride out.
pub struct FlakyProxy {
    pub port: u16,
}

impl FlakyProxy {
    pub fn start(target: u16, flakes: Vec<Flake>) -> FlakyProxy {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut flakes = flakes.into_iter();
            for stream in listener.incoming() {
                let Ok(mut client) = stream else { continue };
                if let Some(flake) = flakes.next() {
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let answer: &[u8] = match flake {
                        Flake::Unavailable => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        Flake::TooMany => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        Flake::Hangup => b"",
                    };
                    let _ = client.write_all(answer);
                    continue;
                }
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut client, mut upstream) = (client, upstream);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut upstream, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        FlakyProxy { port }
    }
}
