//! `snapstore bench` on small sizes: every comparison runs, every figure is a real ratio, and
//! scratch filesystems are gone afterwards. (What the figures are is for the README, not a test.)

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::Path;

use serde_json::Value;

/// The sizes every bench test runs with: small, so a run takes seconds.
const SIZES: [&str; 12] = [
    "--memory",
    "1M",
    "--disk",
    "16M",
    "--disk-data",
    "256K",
    "--runs",
    "1",
    "--index-snapshots",
    "20,50",
    "--extents",
    "64",
];

/// Runs a small `snapstore --json bench` with `args` and `env`; its rows.
fn bench(args: &[&str], env: &[(&str, &Path)]) -> Vec<Value> {
    let out = common::command()
        .args(["--json", "bench"])
        .args(SIZES)
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
        "clone, 64 extents",
        "clone NAME (scale)",
        "clone PREFIX (scale)",
        "inspect NAME (scale)",
        "inspect PREFIX (scale)",
        "save (scale)",
        "rm NAME (scale)",
        "clone (scale)",
        "list --json (scale)",
        "gc (scale)",
        "fsck (scale)",
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
        // A ratio stands exactly where a baseline was timed; its value is checked against the
        // times the table prints, in `printed_ratios_follow_the_printed_times`.
        assert_eq!(
            row["ratio"].is_f64(),
            row["baseline_time"].is_object(),
            "{row}"
        );
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

/// Seconds as the table prints them: `0.123s [0.100-0.200]`; the median.
fn printed_secs(cell: &str) -> f64 {
    cell.split('s').next().unwrap().parse().unwrap()
}

#[test]
fn printed_ratios_follow_the_printed_times() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::command()
        .arg("bench")
        .args(SIZES)
        .arg("--dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header[..6],
        [
            "RATIO",
            "FS",
            "OPERATION",
            "SNAPSTORE",
            "BASELINE",
            "BASELINE TIME"
        ]
    );
    let mut checked = 0;
    for line in lines {
        let cells: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let (ratio, ours, theirs) = (cells[0], cells[3], cells[5]);
        if ratio == "-" {
            assert_eq!(theirs, "-", "{line}");
            continue;
        }
        let ratio: f64 = ratio.trim_end_matches('x').parse().unwrap();
        let (a, b) = (printed_secs(ours), printed_secs(theirs));
        if b < 0.002 {
            continue; // too few printed digits to bound the quotient
        }
        // Each printed figure is rounded: to 3 decimals for times, 2 for the ratio.
        let (lo, hi) = ((a - 0.0005) / (b + 0.0005), (a + 0.0005) / (b - 0.0005));
        assert!(
            lo - 0.005 <= ratio && ratio <= hi + 0.005,
            "{line}: {ratio} is not {a}/{b}"
        );
        checked += 1;
    }
    assert!(checked >= 5, "{text}");
}
