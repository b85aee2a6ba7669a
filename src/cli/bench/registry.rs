//! The registry rows: the bench snapshot pushed to and pulled from a `docker-registry` started
//! on loopback for the run, against `curl` moving the same bytes as one blob (the wire limit);
//! the pulled snapshot cloned against the one it was pushed from; and a child with 16 MiB
//! changed pushed and pulled beside its parent. Peak memory of push and pull is sampled from
//! `/proc/PID/status` (VmHWM) every 10 ms while they run.

use std::cell::Cell;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::measure::{
    allocated, extent_count, file_digest, fill_random, peak_rss, shared_bytes, write_random,
};
use super::render::{Row, pct};
use super::timing::{Stats, output, time, time_all};
use crate::cli::human_bytes;

/// The server Debian's `docker-registry` package installs.
const SERVER: &str = "docker-registry";
/// The window the rows push with: the default.
const WINDOW: u64 = 64 << 20;
/// Bytes the child changes.
const CHANGED: u64 = 16 << 20;

/// A registry serving from `storage` until dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(storage: &Path) -> Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = storage.with_extension("yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: snapstore-bench\n",
                storage.display()
            ),
        )?;
        let child = Command::new(SERVER)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {SERVER}"))?;
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("{SERVER} did not listen on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the rows work on: the store, its bench snapshot, and where scratch files go.
struct Bench<'a> {
    me: PathBuf,
    root: &'a Path,
    dir: &'a Path,
    runs: u32,
    fs: &'a str,
    server: Server,
    /// A fresh repository per timed push, so that the registry has none of its blobs.
    fresh: Cell<u32>,
    rows: Vec<Row>,
}

/// The registry rows for the snapshot `bench` in `root`, whose data dir is `data`.
pub(super) fn bench_registry(
    dir: &Path,
    root: &Path,
    data: &Path,
    runs: u32,
    fs: &str,
) -> Result<Vec<Row>> {
    if !super::timing::installed(SERVER) || !super::timing::installed("curl") {
        bail!("the registry rows need {SERVER} and curl (apt-get install docker-registry curl)");
    }
    // All the rows make goes in one dir, removed after them: the rows that follow need room.
    let work = dir.join("registry-rows");
    std::fs::create_dir(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let rows = (|| {
        let mut bench = Bench {
            me: std::env::current_exe().context("cannot find the snapstore binary")?,
            root,
            dir: &work,
            runs,
            fs,
            server: Server::start(&work.join("registry"))?,
            fresh: Cell::new(0),
            rows: Vec::new(),
        };
        let record = bench.record_file("bench")?;
        let data_bytes = bench.fresh_push_raw(&record)?;
        bench.repush()?;
        bench.fresh_pull_raw(data_bytes)?;
        bench.zstd(data, &record)?;
        bench.child(data)?;
        Ok(bench.rows)
    })();
    let _ = std::fs::remove_dir_all(&work);
    rows
}

impl Bench<'_> {
    fn snap(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.me);
        c.arg("--root").arg(root).args(args);
        c
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.host())
    }

    /// The next fresh repository's target.
    fn fresh_target(&self) -> String {
        self.fresh.set(self.fresh.get() + 1);
        format!(
            "{}/bench/fresh-{}:bench",
            self.server.host(),
            self.fresh.get()
        )
    }

    /// `R/snapshot/localfile/ID.chunks` of snapshot `name`.
    fn record_file(&self, name: &str) -> Result<PathBuf> {
        let (data_root, id) = self.located(self.root, name)?;
        Ok(data_root.join(format!("{id}.chunks")))
    }

    /// The data root of the store at `root`, and the ID of its snapshot `name`, as `inspect`
    /// gives it.
    fn located(&self, root: &Path, name: &str) -> Result<(PathBuf, String)> {
        let record: Value = serde_json::from_slice(&output(self.snap(root, &["inspect", name]))?)?;
        let id = record["id"].as_str().context("inspect gave no id")?;
        Ok((snapstore::Layout::new(root).data_root(), id.to_string()))
    }

    fn row(&mut self, op: &str, ours: Stats, base: Option<(String, Stats)>, note: String) {
        self.rows.push(Row::new(self.fs, op, ours, base, note));
    }

    /// A row whose point is a count in its note, not a race against a baseline.
    fn count(&mut self, op: &str, ours: Stats, note: String) {
        let mut row = Row::new(self.fs, op, ours, None, note);
        row.baseline = Some("(counts, in the note)".into());
        self.rows.push(row);
    }

    /// A first push (no digests recorded, a repository without a blob of it) uncompressed,
    /// against curl uploading the same number of bytes as one blob; the data bytes.
    fn fresh_push_raw(&mut self, record: &Path) -> Result<u64> {
        let report = push_json(&output(self.snap(
            self.root,
            &[
                "push",
                "bench",
                &self.fresh_target(),
                "--compress",
                "none",
                "--json",
            ],
        ))?)?;
        let data_bytes = recorded_data(record)?;
        let sent = report["bytes_uploaded"].as_u64().unwrap_or(0);
        let blob = self.dir.join("curl-blob");
        write_random(&blob, data_bytes)?;
        let digest = file_digest(&blob)?;
        let forget = || drop(std::fs::remove_file(record));
        let stats = time_all(
            self.runs,
            &[
                (&forget, &|| {
                    self.snap(
                        self.root,
                        &["push", "bench", &self.fresh_target(), "--compress", "none"],
                    )
                }),
                (&|| {}, &|| self.curl_upload(&blob, &digest)),
            ],
        )?;
        let note = format!(
            "sent {} for {} of data ({:+.2}%)",
            human_bytes(sent),
            human_bytes(data_bytes),
            pct(sent, data_bytes)
        );
        let base = format!("curl POST+PUT of {} as one blob", human_bytes(data_bytes));
        self.row(
            "push --compress none",
            stats[0],
            Some((base, stats[1])),
            note,
        );
        Ok(data_bytes)
    }

    /// POST, then PUT of `file` as blob `digest`, in a fresh repository: what a script with
    /// curl does to upload one blob.
    fn curl_upload(&self, file: &Path, digest: &str) -> Command {
        self.fresh.set(self.fresh.get() + 1);
        let script = r#"loc=$(curl -sS -D - -o /dev/null -X POST "$1/v2/bench/curl-$2/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
case $loc in /*) loc="$1$loc" ;; esac
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -sSf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$3" "$loc${sep}digest=$4""#;
        let mut c = Command::new("bash");
        c.arg("-c").arg(script).arg("bash");
        c.arg(self.url(""))
            .arg(self.fresh.get().to_string())
            .arg(file)
            .arg(digest);
        c
    }

    /// A push of the unchanged snapshot, against curl sending a HEAD for each of its blobs.
    fn repush(&mut self) -> Result<()> {
        let target = format!("{}/bench/same:bench", self.server.host());
        let first = push_json(&output(
            self.snap(self.root, &["push", "bench", &target, "--json"]),
        )?)?;
        let manifest = first["digest"].as_str().context("no digest")?.to_string();
        let blobs = self.blobs("bench/same", &manifest)?;
        let again = push_json(&output(
            self.snap(self.root, &["push", "bench", &target, "--json"]),
        )?)?;
        let urls: Vec<String> = blobs
            .iter()
            .map(|d| self.url(&format!("/v2/bench/same/blobs/{d}")))
            .collect();
        let stats = time_all(
            self.runs,
            &[
                (&|| {}, &|| {
                    self.snap(self.root, &["push", "bench", &target])
                }),
                (&|| {}, &|| {
                    let mut c = Command::new("curl");
                    c.args(["-sSf", "-o", "/dev/null", "-I"]).args(&urls);
                    c
                }),
            ],
        )?;
        let note = format!(
            "{} of {} blobs sent, digests from the record (no data read)",
            again["blobs_uploaded"], again["blobs_total"]
        );
        let base = format!("curl -I of the {} blobs", blobs.len());
        self.row("push, unchanged", stats[0], Some((base, stats[1])), note);
        Ok(())
    }

    /// The digests of the blobs of manifest `digest` in `repo`: the config and the layers.
    fn blobs(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        let mut c = Command::new("curl");
        c.args([
            "-sSf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ]);
        c.arg(self.url(&format!("/v2/{repo}/manifests/{digest}")));
        let manifest: Value = serde_json::from_slice(&output(c)?)?;
        let mut blobs = vec![
            manifest["config"]["digest"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ];
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            blobs.push(layer["digest"].as_str().unwrap_or("").to_string());
        }
        Ok(blobs)
    }

    /// A pull of the uncompressed artifact into an empty store, against curl downloading the
    /// same number of bytes as one blob into a file, then fsyncing it; and against curl
    /// downloading the artifact's own blobs, as many at a time as the pull, each into a file,
    /// then fsyncing them: what the registry's work for each blob costs, apart from the pull's.
    fn fresh_pull_raw(&mut self, data_bytes: u64) -> Result<()> {
        let target = format!("{}/bench/raw:bench", self.server.host());
        let pushed =
            output(self.snap(self.root, &["push", "bench", &target, "--compress", "none"]))?;
        let manifest = String::from_utf8_lossy(&pushed).trim().to_string();
        let blobs = self.blobs("bench/raw", &manifest)?;
        let blob = self.dir.join("curl-blob");
        let digest = file_digest(&blob)?;
        output(self.curl_upload(&blob, &digest))?;
        let repo = format!("bench/curl-{}", self.fresh.get());
        let other = self.dir.join("pull-root");
        let got = self.dir.join("curl-got");
        let each = self.dir.join("curl-each");
        let jobs = snapstore::PullOptions::default().jobs;
        let empty = || drop(std::fs::remove_dir_all(&other));
        let stats = time_all(
            self.runs,
            &[
                (&empty, &|| self.snap(&other, &["pull", &target])),
                (&|| drop(std::fs::remove_file(&got)), &|| {
                    let mut c = Command::new("sh");
                    c.arg("-c")
                        .arg(r#"curl -sSf -o "$2" "$1" && sync "$2""#)
                        .arg("sh")
                        .arg(self.url(&format!("/v2/{repo}/blobs/{digest}")))
                        .arg(&got);
                    c
                }),
                (
                    &|| {
                        let _ = std::fs::remove_dir_all(&each);
                        let _ = std::fs::create_dir(&each);
                    },
                    &|| {
                        let mut c = Command::new("sh");
                        c.arg("-c")
                            .arg(r#"dir=$1; shift; curl "$@" && sync "$dir"/*"#)
                            .arg("sh")
                            .arg(&each)
                            .args(["-sSf", "--no-progress-meter", "--parallel"])
                            .args(["--parallel-max", &jobs.to_string()]);
                        for (i, digest) in blobs.iter().enumerate() {
                            c.arg(self.url(&format!("/v2/bench/raw/blobs/{digest}")));
                            c.arg("-o").arg(each.join(i.to_string()));
                        }
                        c
                    },
                ),
            ],
        )?;
        let _ = std::fs::remove_dir_all(&each);
        empty();
        let peak = peak_rss(self.snap(&other, &["pull", &target]))?;
        let written = allocated(&other)?;
        let note = format!(
            "into an empty store, fsynced; {} allocated, as the source (zero pages of memory \
             written, not holes); peak RSS {}",
            human_bytes(written),
            human_bytes(peak)
        );
        let base = format!("curl GET of {} && sync", human_bytes(data_bytes));
        self.row(
            "pull --compress none",
            stats[0],
            Some((base, stats[1])),
            note,
        );
        let base = format!(
            "curl GET of the same {} blobs, {jobs} at a time, && sync",
            blobs.len()
        );
        self.row(
            "pull --compress none",
            stats[0],
            Some((base, stats[2])),
            "the same pulls: the baseline pays the registry's work for each blob too".into(),
        );
        let cloned = self.clone_pulled(&other);
        empty();
        cloned
    }

    /// A clone of the snapshot pulled into `other`, against a clone of the one it was pushed
    /// from: whether the pulled copy is laid out as its source was, in the one operation where
    /// that shows, and in how many extents its memory came.
    fn clone_pulled(&mut self, other: &Path) -> Result<()> {
        let dst = self.dir.join("clone-dst");
        let clean = || drop(std::fs::remove_dir_all(&dst));
        let clone = |root: &Path| {
            let mut c = self.snap(root, &["clone", "bench", "--to-dir"]);
            c.arg(&dst);
            c
        };
        let stats = time_all(
            self.runs,
            &[(&clean, &|| clone(other)), (&clean, &|| clone(self.root))],
        )?;
        clean();
        let extents = |root: &Path| -> Result<String> {
            let (data_root, id) = self.located(root, "bench")?;
            let memory = data_root.join(id).join("memory-range-0");
            Ok(extent_count(&memory).map_or_else(|| "-".into(), |n| n.to_string()))
        };
        let note = format!(
            "memory-range-0 in {} extents (FIEMAP), the source's in {}",
            extents(other)?,
            extents(self.root)?
        );
        let base = "clone of the snapshot it was pushed from".to_string();
        self.row(
            "clone, the pulled snapshot",
            stats[0],
            Some((base, stats[1])),
            note,
        );
        Ok(())
    }

    /// A first zstd push against GNU tar's sparse archive through `zstd -T0 -3`, uploaded by
    /// curl as one blob: time and bytes sent.
    fn zstd(&mut self, data: &Path, record: &Path) -> Result<()> {
        let zst = self.dir.join("tar.zst");
        let forget = || drop(std::fs::remove_file(record));
        let stats = time_all(
            self.runs,
            &[
                (&forget, &|| {
                    self.snap(self.root, &["push", "bench", &self.fresh_target()])
                }),
                (&|| drop(std::fs::remove_file(&zst)), &|| {
                    self.fresh.set(self.fresh.get() + 1);
                    let script = r#"tar --sparse --format=posix -cf - -C "$2" . | zstd -T0 -3 -q -o "$3" &&
d=sha256:$(sha256sum "$3" | cut -d' ' -f1) &&
loc=$(curl -sS -D - -o /dev/null -X POST "$1/v2/bench/tar-$4/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}') &&
case $loc in /*) loc="$1$loc" ;; esac &&
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac &&
curl -sSf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$3" "$loc${sep}digest=$d""#;
                    let mut c = Command::new("bash");
                    c.arg("-c")
                        .arg(script)
                        .arg("bash")
                        .arg(self.url(""))
                        .arg(data)
                        .arg(&zst);
                    c.arg(self.fresh.get().to_string());
                    c
                }),
            ],
        )?;
        forget();
        let push = self.snap(
            self.root,
            &["push", "bench", &self.fresh_target(), "--json"],
        );
        let sent = push_json(&output(push)?)?["bytes_uploaded"]
            .as_u64()
            .unwrap_or(0);
        forget();
        let peak = peak_rss(self.snap(self.root, &["push", "bench", &self.fresh_target()]))?;
        let tar_bytes = std::fs::metadata(&zst).map(|m| m.len()).unwrap_or(0);
        let note = format!(
            "sent {} vs {} ({:+.1}%); peak RSS {}",
            human_bytes(sent),
            human_bytes(tar_bytes),
            pct(sent, tar_bytes),
            human_bytes(peak)
        );
        let base = "tar --sparse | zstd -T0 -3, curl POST+PUT".to_string();
        self.row("push (zstd)", stats[0], Some((base, stats[1])), note);
        Ok(())
    }

    /// A child of the bench snapshot with 16 MiB of its disk rewritten: its push, and its pull
    /// into a store that holds the parent, counted in windows and in shared extents.
    fn child(&mut self, data: &Path) -> Result<()> {
        let child = self.dir.join("child-src");
        let _ = std::fs::remove_dir_all(&child);
        std::fs::create_dir(&child)?;
        for entry in std::fs::read_dir(data)? {
            let entry = entry?;
            let mut cp = Command::new("cp");
            cp.args(["--reflink=auto", "--sparse=always"])
                .arg(entry.path())
                .arg(&child);
            output(cp)?;
        }
        let disk = child.join("cow.raw");
        let _ =
            std::fs::set_permissions(&disk, std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let file = std::fs::OpenOptions::new().write(true).open(&disk)?;
        let mut bytes = vec![0u8; CHANGED as usize];
        fill_random(&mut bytes, 7);
        file.write_all_at(&bytes, 3 * WINDOW + 12288)?;
        drop(file);
        let mut save = self.snap(self.root, &["save", "--name", "bench-child", "--from-dir"]);
        save.arg(&child);
        output(save)?;
        let _ = std::fs::remove_dir_all(&child);
        let repo = format!("{}/bench/family", self.server.host());
        output(self.snap(self.root, &["push", "bench", &format!("{repo}:parent")]))?;
        let other = self.dir.join("family-root");
        let _ = std::fs::remove_dir_all(&other);
        output(self.snap(&other, &["pull", &format!("{repo}:parent")]))?;
        let n = Cell::new(0u32);
        let ours = time(self.runs, &|| {}, &|| {
            n.set(n.get() + 1);
            self.snap(
                self.root,
                &[
                    "push",
                    "bench-child",
                    &format!("{repo}:child-{}", n.get()),
                    "--json",
                ],
            )
        })?;
        // The first child push, counted: later ones find its blobs in the registry.
        let child_repo = format!("{}/bench/family2", self.server.host());
        output(self.snap(
            self.root,
            &["push", "bench", &format!("{child_repo}:parent")],
        ))?;
        let pushed = push_json(&output(self.snap(
            self.root,
            &[
                "push",
                "bench-child",
                &format!("{child_repo}:child"),
                "--json",
            ],
        ))?)?;
        let drop_child = || drop(self.snap(&other, &["rm", "bench-child"]).output());
        let pull = time(self.runs, &drop_child, &|| {
            self.snap(&other, &["pull", &format!("{repo}:child-1")])
        })?;
        drop_child();
        let pulled = push_json(&output(
            self.snap(&other, &["pull", &format!("{repo}:child-1"), "--json"]),
        )?)?;
        let id = pulled["id"].as_str().unwrap_or("");
        let shared = shared_bytes(&other.join("snapshot/localfile").join(id).join("cow.raw"));
        self.count(
            "push, child (16 MiB changed)",
            ours,
            format!(
                "{} of {} blobs sent ({}): windows of {}",
                pushed["blobs_uploaded"],
                pushed["blobs_total"],
                human_bytes(pushed["bytes_uploaded"].as_u64().unwrap_or(0)),
                human_bytes(WINDOW)
            ),
        );
        self.count(
            "pull, child beside its parent",
            pull,
            format!(
                "downloaded {}, cloned {} from the parent; filefrag: {} of cow.raw shared",
                human_bytes(pulled["bytes_downloaded"].as_u64().unwrap_or(0)),
                human_bytes(pulled["bytes_cloned_locally"].as_u64().unwrap_or(0)),
                shared.map_or_else(|| "-".to_string(), human_bytes)
            ),
        );
        let _ = std::fs::remove_dir_all(&other);
        Ok(())
    }
}

/// A `--json` report.
fn push_json(bytes: &[u8]) -> Result<Value> {
    Ok(serde_json::from_slice(bytes)?)
}

/// The data bytes a chunk record counts: the sum of its runs.
fn recorded_data(record: &Path) -> Result<u64> {
    let record: Value = serde_json::from_slice(&std::fs::read(record)?)?;
    let mut total = 0;
    for file in record["files"].as_array().into_iter().flatten() {
        for chunk in file["chunks"].as_array().into_iter().flatten() {
            for run in chunk["runs"].as_array().into_iter().flatten() {
                total += run[1].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(total)
}
