//! Crash safety, proven by `kill -9`: the CLI is killed at random moments in every operation
//! that writes (save, import from a dir and from tar, clone, export to a dir and to tar, rm, gc),
//! on a real filesystem (the loop-mounted btrfs or XFS when `ci/with-cow-fs.sh` set one up,
//! else a temp dir). After every kill, before any gc: the index parses, `list` shows only
//! complete snapshots, and every one of them holds exactly the source's files, at their sizes,
//! with a sample of their bytes equal to the source's. Then gc must leave nothing else.
//!
//! `SNAPSTORE_KILLS` sets the number of kills (default 200, as CI runs it),
//! `SNAPSTORE_KILL_SEED` replays a run.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The operations killed, each a `snapstore` command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Save,
    ImportDir,
    ImportTar,
    Clone,
    ExportDir,
    ExportTar,
    Rm,
    Gc,
}

const OPS: [Op; 8] = [
    Op::Save,
    Op::ImportDir,
    Op::ImportTar,
    Op::Clone,
    Op::ExportDir,
    Op::ExportTar,
    Op::Rm,
    Op::Gc,
];

struct Harness {
    root: PathBuf,
    scratch: PathBuf,
    src: PathBuf,
    archive: PathBuf,
    exported: PathBuf,
    rng: Rng,
    serial: u64,
    checks: u64,
}

impl Harness {
    fn args(&mut self, op: Op, target: &str) -> Vec<String> {
        self.serial += 1;
        let out = self.scratch.join(format!("out-{}", self.serial));
        let s = |p: &Path| p.display().to_string();
        let name = format!("s{}", self.serial);
        let args: Vec<String> = match op {
            Op::Save => vec![
                "save".into(),
                "--from-dir".into(),
                s(&self.src),
                "--name".into(),
                name,
            ],
            Op::ImportDir => vec![
                "import".into(),
                "--from-dir".into(),
                s(&self.exported),
                "--name".into(),
                name,
            ],
            Op::ImportTar => {
                let mut args = vec!["import".into(), s(&self.archive), "--name".into(), name];
                // Half of them leave the files to writeback: killed, they must be as atomic.
                if self.serial.is_multiple_of(2) {
                    args.push("--no-sync".into());
                }
                args
            }
            Op::Clone => vec!["clone".into(), target.into(), "--to-dir".into(), s(&out)],
            Op::ExportDir => vec!["export".into(), target.into(), "--to-dir".into(), s(&out)],
            Op::ExportTar => vec![
                "export".into(),
                target.into(),
                "-o".into(),
                format!("{}.tar", s(&out)),
            ],
            Op::Rm => vec!["rm".into(), target.into()],
            Op::Gc => vec!["gc".into()],
        };
        args
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapstore"));
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("SNAPSTORE_ROOT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Runs `args` to completion; returns how long it took.
    fn run(&self, args: &[String]) -> Duration {
        let start = Instant::now();
        let status = self.command(args).status().unwrap();
        assert!(status.success(), "snapstore {args:?} failed");
        start.elapsed()
    }

    /// Any complete snapshot's ID, saving one first if there is none.
    fn some_snapshot(&mut self) -> String {
        let complete = assert_complete_snapshots_intact(&self.root, &self.src);
        if let Some(id) = complete
            .keys()
            .nth(self.rng.below(complete.len() as u64) as usize)
        {
            return id.clone();
        }
        let args = self.args(Op::Save, "");
        self.run(&args);
        self.some_snapshot()
    }

    /// After a kill, before gc: every listed snapshot is complete and intact.
    fn check_listed(&mut self) {
        index_json(&self.root); // parses
        let listed = ok(&self.root, &["list", "--json"]);
        let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        let complete = assert_complete_snapshots_intact(&self.root, &self.src);
        let listed_ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
        let mut sorted = listed_ids.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            complete.keys().map(String::as_str).collect::<Vec<_>>()
        );
        for id in listed_ids {
            self.check_sample(&self.root.join("snapshot/localfile").join(id));
        }
        self.checks += 1;
    }

    /// A random 64 KiB of each file in `dir` equals the source's bytes there.
    fn check_sample(&mut self, dir: &Path) {
        for (name, len) in file_sizes(&self.src) {
            let at = self.rng.below(len) & !4095;
            let n = (len - at).min(64 << 10) as usize;
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            let read = |path: &Path, buf: &mut [u8]| {
                std::fs::File::open(path)
                    .unwrap()
                    .read_exact_at(buf, at)
                    .unwrap();
            };
            read(&self.src.join(&name), &mut a);
            read(&dir.join(&name), &mut b);
            assert!(
                a == b,
                "{} differs from the source at {at}",
                dir.join(&name).display()
            );
        }
    }

    /// A directory export is either without its envelope (incomplete, as it says) or whole.
    fn check_exported(&mut self, dir: &Path) {
        if dir.join("snapshot.json").exists() {
            assert_eq!(file_sizes(dir), file_sizes(&self.src), "{}", dir.display());
            self.check_sample(dir);
        }
    }

    /// gc, then nothing but complete snapshots remains; returns how many leftovers gc removed.
    fn gc_and_check(&mut self) -> usize {
        let complete = assert_complete_snapshots_intact(&self.root, &self.src);
        let report: serde_json::Value =
            serde_json::from_str(&ok(&self.root, &["gc", "--json"])).unwrap();
        assert_store_holds(&self.root, &complete);
        self.checks += 1;
        report["removed"].as_array().unwrap().len()
    }
}

#[test]
fn kill_9_at_random_moments_never_breaks_the_store() {
    let kills: u64 = std::env::var("SNAPSTORE_KILLS").map_or(200, |v| v.parse().unwrap());
    let seed: u64 = std::env::var("SNAPSTORE_KILL_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |v| v.parse().unwrap(),
    );
    let base = cow_dir("SNAPSTORE_TEST_BTRFS")
        .or_else(|| cow_dir("SNAPSTORE_TEST_XFS"))
        .unwrap_or_else(|| tempfile::tempdir().unwrap());
    let scratch = base.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let mut h = Harness {
        root: base.path().join("root"),
        src: vm_snapshot(&base.path().join("src"), 8 * MIB, 128 * MIB, 16 * MIB),
        archive: base.path().join("snapshot.tar"),
        exported: base.path().join("exported"),
        scratch,
        rng: Rng(seed),
        serial: 0,
        checks: 0,
    };
    eprintln!("kill harness: seed {seed}, root {}", h.root.display());

    // One clean run of each operation gives its duration, and the inputs the imports need.
    let first = h.some_snapshot();
    let s = |p: &Path| p.display().to_string();
    h.run(&["export".into(), first.clone(), "-o".into(), s(&h.archive)]);
    h.run(&[
        "export".into(),
        first.clone(),
        "--to-dir".into(),
        s(&h.exported),
    ]);
    let mut took = BTreeMap::new();
    for op in OPS {
        let target = h.some_snapshot();
        let args = h.args(op, &target);
        took.insert(format!("{op:?}"), h.run(&args));
    }

    let (mut killed, mut finished, mut by_op) = (0u64, 0u64, BTreeMap::<String, u64>::new());
    let mut left_something = 0;
    while killed < kills {
        let op = OPS[h.rng.below(OPS.len() as u64) as usize];
        let target = h.some_snapshot();
        let args = h.args(op, &target);
        // Anywhere from before the process is up to a little past its usual end.
        let usual = took[&format!("{op:?}")].as_micros() as u64;
        let delay = Duration::from_micros(h.rng.below(usual + usual / 4));
        let mut child = h.command(&args).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
            *by_op.entry(format!("{op:?}")).or_default() += 1;
        } else {
            finished += 1;
        }
        child.wait().unwrap();

        h.check_listed();
        if matches!(op, Op::ExportDir) {
            h.check_exported(&PathBuf::from(&args[3]));
        }
        if h.gc_and_check() > 0 {
            left_something += 1;
        }
        // Keep the store small: a few snapshots are enough to race against.
        let complete = assert_complete_snapshots_intact(&h.root, &h.src);
        if complete.len() > 4 {
            let ids: Vec<&str> = complete.keys().map(String::as_str).take(2).collect();
            let mut rm = vec!["rm"];
            rm.extend(ids);
            ok(&h.root, &rm);
        }
        std::fs::remove_dir_all(&h.scratch).unwrap();
        std::fs::create_dir(&h.scratch).unwrap();
    }
    eprintln!(
        "kill harness: {killed} kills ({by_op:?}), {left_something} of them left work half done \
         for gc; {finished} runs finished before their kill; {} checks",
        h.checks
    );
    assert!(
        by_op.len() >= 6,
        "kills reached too few operations: {by_op:?}"
    );
}
