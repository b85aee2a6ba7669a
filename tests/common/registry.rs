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

    fn start_with(login: Option<(&str, &str)>) -> Option<Registry> {
        if Command::new(BINARY).arg("--version").output().is_err() {
            assert!(
                std::env::var_os("SNAPSTORE_REQUIRE_REGISTRY").is_none(),
                "{BINARY} missing, but the CI script installed it"
            );
            eprintln!("SKIPPED: {BINARY} not installed (apt-get install docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let port = free_port();
        let auth = match login {
            Some((user, password)) => {
                let hash = bcrypt::hash(password, 4).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: snapstore-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
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
