//! Power loss, not only kill -9. A disk inside a file: an XFS, an ext4 and a btrfs filesystem,
//! each in an image file on the loop-mounted btrfs, loop-mounted in turn, hold the store and the
//! sources.
//! While snapstore runs an operation there, a crash image is taken at a random moment: a
//! reflink copy (FICLONE) of the image file, atomic, holding exactly what the inner filesystem
//! had sent to its disk; what was still in its page cache is missing, as after a power cut. The
//! copy is mounted (journal recovery runs, as after a reboot) and checked, before any repair:
//!
//! - the index parses, or is missing while no snapshot was ever acknowledged;
//! - every snapshot it lists holds exactly its source's files (sha256 and size), and its
//!   sidecar, when there, names the same files;
//! - every operation that had exited 0 before the image was taken is there, whole: a created
//!   snapshot is listed, a removed one is not, a `clone --sync` or `export --sync` target is
//!   complete;
//! - a pull cut off by the crash, run again on the recovered disk, resumes from what its journal
//!   says is on disk and gives the artifact's exact content;
//! - then gc leaves nothing but the listed snapshots, and fsck reports clean.
//!
//! Pulls come from a `docker-registry` on loopback (outside the inner disk), of an artifact the
//! store holds the windows of (cloned locally) and of one it does not (downloaded).
//!
//! `SNAPSTORE_CRASH_IMAGES` sets the number of images (default 150, a third on each
//! filesystem, as CI runs it); `SNAPSTORE_CRASH_SEED` replays a run. A failure names the seed, the
//! operation and the moment.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// File name → (size, sha256): what a snapshot, or a directory out of one, must hold.
type Content = BTreeMap<String, (u64, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fs {
    Xfs,
    Ext4,
    Btrfs,
}

impl Fs {
    fn mkfs(self, img: &Path) -> Command {
        let mut c = match self {
            Fs::Xfs => Command::new("mkfs.xfs"),
            Fs::Ext4 => Command::new("mkfs.ext4"),
            Fs::Btrfs => Command::new("mkfs.btrfs"),
        };
        match self {
            Fs::Xfs => c.args(["-q", "-m", "reflink=1"]),
            Fs::Ext4 => c.args(["-q", "-F", "-m", "0"]),
            Fs::Btrfs => c.args(["-q"]),
        };
        c.arg(img);
        c
    }

    /// Mount options for a crash copy: XFS refuses a second filesystem of the same UUID
    /// unless told; btrfs (6.7 and later) gives a cloned single-device one a temporary fsid.
    fn copy_options(self) -> &'static str {
        match self {
            Fs::Xfs => "loop,nouuid",
            Fs::Ext4 | Fs::Btrfs => "loop",
        }
    }
}

fn run(mut c: Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {out:?}");
}

/// An image file, loop-mounted; unmounted (and the image removed) on drop.
struct Mounted {
    img: PathBuf,
    mnt: PathBuf,
}

impl Mounted {
    fn mount(img: PathBuf, mnt: PathBuf, options: &str) -> Mounted {
        std::fs::create_dir_all(&mnt).unwrap();
        let mut c = Command::new("mount");
        c.args(["-o", options]).arg(&img).arg(&mnt);
        run(c);
        Mounted { img, mnt }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.mnt).status();
        if !done.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = std::fs::remove_file(&self.img);
    }
}

/// The operations crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Save,
    SaveMove,
    ImportTar,
    ImportDir,
    Rm,
    Gc,
    FsckRepair,
    CloneSync,
    ExportSync,
    Pull,
}

const OPS: [Op; 10] = [
    Op::Save,
    Op::SaveMove,
    Op::ImportTar,
    Op::ImportDir,
    Op::Rm,
    Op::Gc,
    Op::FsckRepair,
    Op::CloneSync,
    Op::ExportSync,
    Op::Pull,
];

/// What an operation promises once it has exited 0.
enum Promise {
    /// The snapshot of this name exists, with this content.
    Created(String, Content),
    /// The snapshot of this name is gone.
    Removed(String),
    /// This directory holds this content (and `snapshot.json`, for an export).
    Written(PathBuf, Content, bool),
    /// The snapshot of this name was pulled from this reference, with this content.
    Pulled(String, Content, String),
    /// Nothing beyond what held before.
    Nothing,
}

fn sha256(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    std::io::copy(&mut file, &mut hasher).unwrap();
    format!("{:x}", hasher.finalize())
}

/// The regular files of `dir` (not `snapshot.json`), hashed.
fn content_of(dir: &Path) -> Content {
    file_sizes(dir)
        .into_iter()
        .map(|(name, size)| {
            let hash = sha256(&dir.join(&name));
            (name, (size, hash))
        })
        .collect()
}

struct Harness {
    fs: Fs,
    outer: PathBuf,
    disk: Mounted,
    rng: Rng,
    seed: u64,
    serial: u64,
    /// Snapshots whose creation was acknowledged and not undone by an acknowledged rm.
    live: BTreeMap<String, Content>,
    /// Every snapshot a creation was started for, by name: what it must hold if listed.
    attempted: BTreeMap<String, Content>,
    /// Directories an acknowledged `--sync` clone or export wrote.
    written: Vec<(PathBuf, Content, bool)>,
    /// An archive and an exported dir of `base`, for the imports.
    archive: PathBuf,
    exported: PathBuf,
    images: u64,
    /// The registry pulls come from, and what they pull: (reference, content).
    registry: Option<common::registry::Registry>,
    pullable: Vec<(String, Content)>,
    /// Crash images taken during a pull, and pulls resumed on one.
    pull_images: u64,
    resumed: std::cell::Cell<u64>,
    /// A store outside the inner disk, which pushed the artifact the inner store lacks.
    _elsewhere: Option<tempfile::TempDir>,
}

impl Harness {
    fn new(outer: &Path, fs: Fs, seed: u64) -> Harness {
        let img = outer.join(format!("{fs:?}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        run(fs.mkfs(&img));
        let disk = Mounted::mount(img, outer.join(format!("{fs:?}-mnt")), "loop");
        let mut h = Harness {
            fs,
            outer: outer.to_path_buf(),
            archive: disk.mnt.join("base.tar"),
            exported: disk.mnt.join("base-exported"),
            disk,
            rng: Rng(seed),
            seed,
            serial: 0,
            live: BTreeMap::new(),
            attempted: BTreeMap::new(),
            written: Vec::new(),
            images: 0,
            registry: common::registry::Registry::start(),
            pullable: Vec::new(),
            pull_images: 0,
            resumed: std::cell::Cell::new(0),
            _elsewhere: None,
        };
        // A first snapshot, and the archive and dir the imports read.
        let src = h.source();
        let content = content_of(&src);
        h.snapstore(&["save", "--name", "base", "--from-dir", &s(&src)]);
        h.live.insert("base".into(), content.clone());
        h.attempted.insert("base".into(), content);
        h.snapstore(&["export", "base", "-o", &s(&h.archive)]);
        h.snapstore(&["export", "base", "--to-dir", &s(&h.exported)]);
        let targets = h
            .registry
            .as_ref()
            .map(|r| (r.at("power/base"), r.at("power/other")));
        if let Some((base, target)) = targets {
            // One artifact whose windows the store holds (base, pushed from it), and one it does
            // not, pushed from a store elsewhere, whose pull downloads everything.
            h.snapstore(&["push", "base", &base]);
            let elsewhere = tempfile::tempdir_in(outer).unwrap();
            let other = h.source();
            let other_root = elsewhere.path().join("root");
            let mut save = command_in(&other_root);
            save.args(["save", "--name", "other", "--from-dir", &s(&other)]);
            run(save);
            let mut push = command_in(&other_root);
            push.args(["push", "other", &target]);
            run(push);
            let content = content_of(&other);
            h.pullable = vec![
                (format!("{base}:base"), h.attempted["base"].clone()),
                (format!("{target}:other"), content),
            ];
            h._elsewhere = Some(elsewhere);
        }
        run({
            let mut c = Command::new("sync");
            c.arg("-f").arg(&h.disk.mnt);
            c
        });
        h
    }

    fn root(&self) -> PathBuf {
        self.disk.mnt.join("root")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = command_in(&self.root());
        c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn snapstore(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap();
        assert!(out.status.success(), "snapstore {args:?}: {out:?}");
    }

    /// A new source dir on the inner filesystem: guest memory (dense), a sparse disk, a small
    /// config; a few KiB to a few MiB each, and written but not fsynced, as a hypervisor leaves
    /// them.
    fn source(&mut self) -> PathBuf {
        self.serial += 1;
        let dir = self.disk.mnt.join(format!("src-{}", self.serial));
        std::fs::create_dir(&dir).unwrap();
        let memory = (1 + self.rng.below(256)) * 4096;
        let mut bytes = vec![0u8; memory as usize];
        fill(&mut bytes, self.rng.next() & !7);
        std::fs::write(dir.join("memory-range-0"), &bytes).unwrap();
        let disk_len = (1 + self.rng.below(16)) << 20;
        let mut segments = Vec::new();
        let mut at = 0;
        while at < disk_len {
            let len = ((1 + self.rng.below(16)) * 4096).min(disk_len - at);
            segments.push((at, len));
            at += len + (1 + self.rng.below(256)) * 4096;
        }
        let disk = std::fs::File::create(dir.join("cow.raw")).unwrap();
        disk.set_len(disk_len).unwrap();
        for (offset, len) in segments {
            let mut data = vec![0u8; len as usize];
            fill(&mut data, (offset ^ self.rng.next()) & !7);
            std::os::unix::fs::FileExt::write_all_at(&disk, &data, offset).unwrap();
        }
        let mut config = std::fs::File::create(dir.join("config.json")).unwrap();
        write!(config, "{{\"serial\":{}}}", self.serial).unwrap();
        dir
    }

    /// Any snapshot whose creation was acknowledged, other than `base`.
    fn some_live(&mut self) -> Option<String> {
        let names: Vec<&String> = self.live.keys().filter(|n| *n != "base").collect();
        let pick = self.rng.below(names.len() as u64) as usize;
        names.get(pick).map(|n| (*n).clone())
    }

    /// The command line of `op`, and what it promises once it exits 0.
    fn plan(&mut self, op: Op) -> (Vec<String>, Promise) {
        self.serial += 1;
        let name = format!("s{}", self.serial);
        let args = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match op {
            Op::Save | Op::SaveMove => {
                let src = self.source();
                let content = content_of(&src);
                self.attempted.insert(name.clone(), content.clone());
                let mut a = args(&["save", "--name", &name, "--from-dir", &s(&src)]);
                if op == Op::SaveMove {
                    a.push("--move".into());
                }
                (a, Promise::Created(name, content))
            }
            Op::ImportTar | Op::ImportDir => {
                let content = self.attempted["base"].clone();
                self.attempted.insert(name.clone(), content.clone());
                let a = if op == Op::ImportTar {
                    args(&["import", &s(&self.archive), "--name", &name])
                } else {
                    args(&["import", "--from-dir", &s(&self.exported), "--name", &name])
                };
                (a, Promise::Created(name, content))
            }
            Op::Rm => match self.some_live() {
                Some(victim) => (args(&["rm", &victim]), Promise::Removed(victim)),
                None => (args(&["gc"]), Promise::Nothing),
            },
            Op::Gc => (args(&["gc"]), Promise::Nothing),
            Op::FsckRepair => (args(&["fsck", "--repair"]), Promise::Nothing),
            Op::Pull if !self.pullable.is_empty() => {
                let pick = self.rng.below(self.pullable.len() as u64) as usize;
                let (reference, content) = self.pullable[pick].clone();
                self.attempted.insert(name.clone(), content.clone());
                let a = args(&["pull", &reference, "--name", &name]);
                (a, Promise::Pulled(name, content, reference))
            }
            Op::Pull => (args(&["gc"]), Promise::Nothing),
            Op::CloneSync | Op::ExportSync => {
                let from = self.some_live().unwrap_or_else(|| "base".into());
                let out = self.disk.mnt.join(format!("out-{}", self.serial));
                let verb = if op == Op::CloneSync {
                    "clone"
                } else {
                    "export"
                };
                let a = args(&[verb, &from, "--sync", "--to-dir", &s(&out)]);
                let content = self.live[&from].clone();
                (a, Promise::Written(out, content, op == Op::ExportSync))
            }
        }
    }

    /// One operation, crashed at a random moment; returns whether the image was taken after it
    /// had exited 0.
    fn step(&mut self, typical: Duration) -> Duration {
        // Removals keep up with creations, so a long run does not fill the disk.
        let op = match self.live.len() > 12 && self.rng.below(2) == 0 {
            true => Op::Rm,
            false => OPS[self.rng.below(OPS.len() as u64) as usize],
        };
        let (args, promise) = self.plan(op);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // Mostly inside the operation; now and then after it, so acknowledged work is checked.
        let delay = Duration::from_micros(self.rng.below(typical.as_micros() as u64 * 5 / 4 + 1));
        let started = Instant::now();
        let mut child = self.command(&argv).spawn().unwrap();
        std::thread::sleep(delay);
        let acknowledged = child.try_wait().unwrap().is_some_and(|s| s.success());
        let moment = started.elapsed();
        let image = self.crash_image();
        if matches!(promise, Promise::Pulled(..)) {
            self.pull_images += 1;
        }
        let out = child.wait_with_output().unwrap();
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "seed {}: {op:?} failed: {}",
            self.seed,
            String::from_utf8_lossy(&out.stderr)
        );
        let what = format!(
            "seed {} on {:?}, image {}: {op:?} {argv:?}, crashed {moment:?} in ({})",
            self.seed,
            self.fs,
            self.images,
            if acknowledged {
                "after it exited 0"
            } else {
                "while it ran"
            }
        );
        self.check(image, &promise, acknowledged, &what);
        match promise {
            Promise::Created(name, content) | Promise::Pulled(name, content, _) => {
                self.live.insert(name, content);
            }
            Promise::Removed(name) => {
                self.live.remove(&name);
            }
            Promise::Written(dir, content, envelope) => {
                self.written.push((dir, content, envelope));
                // The older ones have been checked on many images; they make room.
                if self.written.len() > 8 {
                    let (old, _, _) = self.written.remove(0);
                    std::fs::remove_dir_all(old).unwrap();
                }
            }
            Promise::Nothing => {}
        }
        took
    }

    /// A crash image of the inner disk as it is now.
    fn crash_image(&mut self) -> PathBuf {
        self.images += 1;
        let image = self.outer.join(format!("crash-{}.img", self.images));
        let mut c = Command::new("cp");
        c.arg("--reflink=always").arg(&self.disk.img).arg(&image);
        run(c);
        image
    }

    /// Mounts a crash image and checks the invariants on it; then gc and fsck on it. `op` is
    /// the operation that ran, `acknowledged` whether it had exited 0 before the image.
    fn check(&self, image: PathBuf, op: &Promise, acknowledged: bool, what: &str) {
        let promised = acknowledged.then_some(op);
        let mnt = self.outer.join("crash-mnt");
        let copy = Mounted::mount(image, mnt, self.fs.copy_options());
        let root = copy.mnt.join("root");
        let index_file = root.join("snapshot/db/snapshots.json");
        let index: Value = match std::fs::read(&index_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{what}: the index is torn: {e}")),
            Err(e) => panic!("{what}: no index, though base was acknowledged: {e}"),
        };
        let snapshots = index["snapshots"].as_object().unwrap();
        let mut listed = BTreeMap::new();
        for (id, record) in snapshots {
            if record["pending"].as_bool().unwrap_or(false) {
                continue;
            }
            let name = record["name"].as_str().unwrap().to_string();
            let dir = root.join("snapshot/localfile").join(id);
            let expected = self
                .attempted
                .get(&name)
                .unwrap_or_else(|| panic!("{what}: {name} listed, never created"));
            assert_eq!(
                &content_of(&dir),
                expected,
                "{what}: {name} ({id}) in {}",
                dir.display()
            );
            let sidecar = root.join(format!("snapshot/localfile/{id}.json"));
            if let Ok(bytes) = std::fs::read(&sidecar) {
                let sidecar: Value = serde_json::from_slice(&bytes).unwrap();
                let files: Vec<&str> = sidecar["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["name"].as_str().unwrap())
                    .collect();
                let want: Vec<&str> = expected.keys().map(String::as_str).collect();
                assert_eq!(files, want, "{what}: the sidecar of {name}");
            }
            listed.insert(name, id.clone());
        }
        for name in self.live.keys() {
            let removing = matches!(op, Promise::Removed(n) if n == name);
            match (removing, acknowledged) {
                // An rm that had not returned may or may not have happened.
                (true, false) => {}
                (true, true) => {
                    assert!(
                        !listed.contains_key(name),
                        "{what}: removed {name} still listed"
                    );
                }
                (false, _) => assert!(
                    listed.contains_key(name),
                    "{what}: acknowledged {name} lost"
                ),
            }
        }
        if let Some(Promise::Created(name, _) | Promise::Pulled(name, _, _)) = promised {
            assert!(
                listed.contains_key(name),
                "{what}: acknowledged {name} lost"
            );
        }
        let mut written: Vec<&(PathBuf, Content, bool)> = self.written.iter().collect();
        let just_written;
        if let Some(Promise::Written(dir, content, envelope)) = promised {
            just_written = (dir.clone(), content.clone(), *envelope);
            written.push(&just_written);
        }
        for (dir, content, envelope) in written {
            let dir = copy.mnt.join(dir.strip_prefix(&self.disk.mnt).unwrap());
            assert_eq!(&content_of(&dir), content, "{what}: {}", dir.display());
            if *envelope {
                let envelope = std::fs::read(dir.join("snapshot.json"))
                    .unwrap_or_else(|e| panic!("{what}: no envelope in {}: {e}", dir.display()));
                serde_json::from_slice::<Value>(&envelope).unwrap();
            }
        }

        // A pull the crash cut off resumes on the recovered disk: the windows its journal names
        // must be on disk, whole, or the resumed snapshot's content is wrong.
        if let (Promise::Pulled(name, content, reference), false) = (op, acknowledged)
            && !listed.contains_key(name)
        {
            let again = command_in(&root)
                .args(["pull", reference, "--name", name])
                .output()
                .unwrap();
            assert!(again.status.success(), "{what}: resumed pull: {again:?}");
            let id = String::from_utf8_lossy(&again.stdout).trim().to_string();
            let dir = root.join("snapshot/localfile").join(&id);
            assert_eq!(&content_of(&dir), content, "{what}: resumed pull of {name}");
            self.resumed.set(self.resumed.get() + 1);
            listed.insert(name.clone(), id);
        }

        // Then gc leaves nothing but the listed snapshots, and fsck finds nothing wrong. No
        // process runs on a crash image: every leftover is abandoned, a cut-off pull's staging
        // too, which gc keeps for a re-run within its grace period by default.
        let gc = command_in(&root)
            .args(["gc", "--grace", "0s"])
            .output()
            .unwrap();
        assert!(gc.status.success(), "{what}: gc: {gc:?}");
        let expected: BTreeMap<String, String> = listed
            .iter()
            .map(|(name, id)| (id.clone(), name.clone()))
            .collect();
        let holds = std::panic::catch_unwind(|| assert_store_holds(&root, &expected));
        if let Err(e) = holds {
            let said = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            let index = std::fs::read_to_string(&index_file).unwrap_or_default();
            panic!("{what}: after gc: {said:?}; index: {index}");
        }
        let fsck = command_in(&root).args(["--json", "fsck"]).output().unwrap();
        assert!(
            fsck.status.success(),
            "{what}: fsck: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn acknowledged_work_survives_a_crash_of_the_disk() {
    let Some(outer) = cow_dir("SNAPSTORE_TEST_BTRFS") else {
        return;
    };
    for tool in ["mkfs.xfs", "mkfs.ext4", "mkfs.btrfs"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .status()
            .unwrap();
        assert!(
            found.success(),
            "{tool} missing where the cow filesystems were made"
        );
    }
    let images: u64 = std::env::var("SNAPSTORE_CRASH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("SNAPSTORE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now();
            now.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash images: seed {seed} (SNAPSTORE_CRASH_SEED replays it), {images} images");
    // SNAPSTORE_CRASH_FS=btrfs (say) replays one filesystem's part of a run.
    let only = std::env::var("SNAPSTORE_CRASH_FS").ok();
    let kinds = [Fs::Xfs, Fs::Ext4, Fs::Btrfs];
    for (i, fs) in kinds.into_iter().enumerate() {
        if only
            .as_deref()
            .is_some_and(|o| !format!("{fs:?}").eq_ignore_ascii_case(o))
        {
            continue;
        }
        let mut h = Harness::new(outer.path(), fs, seed.wrapping_add(i as u64));
        let mut typical = Duration::from_millis(20);
        let per_fs = images / 3 + u64::from((i as u64) < images % 3);
        for _ in 0..per_fs {
            let took = h.step(typical);
            // Crash moments follow how long operations take here.
            typical = (typical * 3 + took) / 4;
        }
        eprintln!(
            "{fs:?}: {} crash images checked ({} during a pull, {} pulls resumed on one), {} snapshots live",
            h.images,
            h.pull_images,
            h.resumed.get(),
            h.live.len()
        );
    }
}
