//! Export and import stream: memory stays flat whatever the snapshot's size. A snapshot of 64 GiB
//! apparent size goes through `snapstore export -o - | snapstore import`, and the kernel's own
//! count of each process's peak resident memory (getrusage of the children) stays under 64 MiB.
//!
//! A test binary of its own, so no other test's children count.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::process::{Command, Stdio};

use common::*;
use nix::sys::resource::{UsageWho, getrusage};

const GIB: u64 = 1 << 30;

#[test]
fn a_64_gib_snapshot_streams_through_a_pipe_in_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // 64 GiB of disk with 64 MiB of data, 64 MiB of memory with 32 MiB of data.
    let src = vm_snapshot(&tmp.path().join("src"), 64 * MIB, 64 * GIB, 64 * MIB);
    // Guest memory is incompressible: the worst case for a compressor's buffers. Written in
    // small pieces: at exec a child inherits this process's peak RSS as its own (the kernel
    // records the old mm's high-water mark), so this process must stay small for the children's
    // figure to mean anything. It can only over-report.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut memory = std::fs::File::create(src.join("memory-range-0")).unwrap();
    for _ in 0..64 {
        let piece: Vec<u8> = (0..MIB / 8)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        std::io::Write::write_all(&mut memory, &piece).unwrap();
    }
    drop(memory);
    ok(
        &root,
        &["save", "--from-dir", src.to_str().unwrap(), "--name", "big"],
    );

    for compression in [&[][..], &["--gzip"], &["--zstd"]] {
        let name = format!("copy{}", compression.first().unwrap_or(&""));
        let mut export = Command::new(env!("CARGO_BIN_EXE_snapstore"))
            .arg("--root")
            .arg(&root)
            .args(["export", "big", "-o", "-"])
            .args(compression)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = Command::new(env!("CARGO_BIN_EXE_snapstore"))
            .arg("--root")
            .arg(&root)
            .args(["import", "--name", &name])
            .stdin(export.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(export.wait().unwrap().success());
        assert!(
            import.status.success(),
            "{}",
            String::from_utf8_lossy(&import.stderr)
        );
        let id = String::from_utf8(import.stdout).unwrap();
        let data = root.join("snapshot/localfile").join(id.trim());
        for file in ["cow.raw", "memory-range-0", "config.json"] {
            assert!(
                same_file(&src.join(file), &data.join(file)),
                "{name}: {file}"
            );
        }
        assert!(
            blocks(&data.join("cow.raw")) * 512 < 128 * MIB,
            "{name}: the disk stays sparse"
        );
    }

    // ru_maxrss is in KiB: the largest peak of any child waited for so far.
    let peak = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() as u64 * 1024;
    eprintln!(
        "peak RSS of export and import processes: {} MiB",
        peak / MIB
    );
    assert!(peak < 64 * MIB, "peak RSS {} MiB", peak / MIB);
}
