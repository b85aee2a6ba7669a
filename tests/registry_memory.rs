//! Push and pull keep to their memory bound, 64 MiB plus one window for each job, on the case
//! that fills every window: guest memory of incompressible data, with no page zero, pushed
//! with each compression and pulled back. The kernel's own count of each process's peak
//! resident memory (getrusage of the children) is the witness.
//!
//! A test binary of its own, so that no other test's children count.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use common::registry::Registry;
use common::*;
use nix::sys::resource::{UsageWho, getrusage};

/// The default window and jobs of push and pull.
const WINDOW: u64 = 64 * MIB;
const JOBS: u64 = 4;

/// The largest peak of any child waited for so far (ru_maxrss is in KiB).
fn children_peak() -> u64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() as u64 * 1024
}

#[test]
fn push_and_pull_of_full_windows_keep_to_their_memory_bound() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, root, other) = (
        tmp.path().join("src"),
        tmp.path().join("root"),
        tmp.path().join("other"),
    );
    std::fs::create_dir(&src).unwrap();
    // Four full windows of random bytes, copied in by the kernel: at exec a child inherits this
    // process's peak RSS as its own, so this process stays small.
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut memory = std::fs::File::create(src.join("memory-range-0")).unwrap();
    let copied = std::io::copy(
        &mut std::io::Read::take(&mut random, JOBS * WINDOW),
        &mut memory,
    )
    .unwrap();
    assert_eq!(copied, JOBS * WINDOW);
    drop(memory);
    std::fs::write(src.join("config.json"), "{}").unwrap();
    ok(
        &root,
        &[
            "save",
            "--from-dir",
            src.to_str().unwrap(),
            "--name",
            "full",
        ],
    );
    let bound = 64 * MIB + JOBS * WINDOW;
    let before = children_peak();
    assert!(before < bound, "{} MiB before any push", before / MIB);

    for compression in ["zstd", "none"] {
        let target = format!("{}/memory/{compression}:full", registry.host());
        ok(&root, &["push", "full", &target, "--compress", compression]);
        let peak = children_peak();
        assert!(
            peak <= bound,
            "push --compress {compression}: peak RSS {} MiB, over {} MiB",
            peak / MIB,
            bound / MIB
        );
    }
    let target = format!("{}/memory/zstd:full", registry.host());
    let id = ok(&other, &["pull", &target]);
    let peak = children_peak();
    assert!(peak <= bound, "pull: peak RSS {} MiB", peak / MIB);
    let pulled = other.join("snapshot/localfile").join(id.trim());
    assert!(same_file(
        &src.join("memory-range-0"),
        &pulled.join("memory-range-0")
    ));
    eprintln!("peak RSS of save, push and pull: {} MiB", peak / MIB);
}
