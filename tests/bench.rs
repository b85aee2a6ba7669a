//! `snapstore bench` on small sizes: every comparison runs, every figure is a real ratio, and
//! scratch filesystems are gone afterwards. (What the figures are is for the README, not a test.)

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::Path;

use serde_json::Value;

/// Runs a small `snapstore --json bench` with `args` and `env`; its rows.
fn bench(args: &[&str], env: &[(&str, &Path)]) -> Vec<Value> {
    let sizes = [
        "--memory",
        "1M",
        "--disk",
        "16M",
        "--disk-data",
        "256K",
        "--runs",
        "1",
        "--index-snapshots",
        "50",
    ];
    let out = common::command()
        .args(["--json", "bench"])
        .args(sizes)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array().unwrap().clone()
}

fn check(rows: &[Value], fs: &str) {
    let ops: Vec<&str> = rows
        .iter()
        .filter(|r| r["fs"] == fs)
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    for op in [
        "save",
        "clone",
        "clone --sync",
        "clone, 8x the disk",
        "export --to-dir",
        "export --to-dir --sync",
        "export (tar)",
        "import (tar)",
        "import --no-sync (tar)",
        "export --gzip",
        "export --zstd",
        "rm",
        "list --json (index)",
        "inspect PREFIX (index)",
        "save, no data (index)",
    ] {
        assert!(ops.contains(&op), "{fs}: {op} missing from {ops:?}");
    }
    for row in rows.iter().filter(|r| r["fs"] == fs) {
        let s = &row["snapstore"];
        let (min, median, max) = (
            s["min"].as_f64().unwrap(),
            s["median"].as_f64().unwrap(),
            s["max"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= median && median <= max, "{row}");
        if let Some(base) = row["baseline_time"].as_object() {
            let ratio = row["ratio"].as_f64().unwrap();
            let expect = median / base["median"].as_f64().unwrap();
            assert!((ratio - expect).abs() < 1e-9, "{row}");
        }
    }
    let save = rows
        .iter()
        .find(|r| r["fs"] == fs && r["operation"] == "save")
        .unwrap();
    assert!(
        save["note"].as_str().unwrap().contains("memory-range-0="),
        "{save}"
    );
}

#[test]
fn bench_runs_every_comparison_in_a_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = bench(&["--dir", tmp.path().to_str().unwrap()], &[]);
    let fs = rows[0]["fs"].as_str().unwrap().to_string();
    check(&rows, &fs);
    assert_eq!(
        common::tree(tmp.path()),
        Vec::<String>::new(),
        "bench cleans up after itself"
    );
}

#[test]
fn bench_on_a_scratch_filesystem_removes_it_afterwards() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("SNAPSTORE_REQUIRE_COW").is_none(),
            "CI runs as root"
        );
        eprintln!("SKIPPED: --scratch-fs needs root");
        return;
    }
    let base = tempfile::tempdir_in("/var/tmp").unwrap();
    let rows = bench(
        &["--scratch-fs", "ext4"],
        &[("SNAPSTORE_SCRATCH_DIR", base.path())],
    );
    check(&rows, "ext4");
    assert_eq!(
        common::tree(base.path()),
        Vec::<String>::new(),
        "image and mount point removed"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(base.path().to_str().unwrap()),
        "still mounted"
    );
}
