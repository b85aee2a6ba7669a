//! What the bench reads besides time, from the kernel and the files themselves rather than from
//! snapstore's reports: peak resident memory, allocated and shared bytes, extent counts, and
//! digests; and the incompressible data the registry rows send.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};

use crate::cli::workload::SplitMix64;

/// Bytes of `path` that `filefrag -v` flags shared; `None` without filefrag.
pub(super) fn shared_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("filefrag").arg("-v").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let block: u64 = text
        .split("blocksize of ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    Some(
        text.lines()
            .filter(|l| l.contains("shared"))
            .filter_map(|l| l.split(':').nth(3)?.trim().parse::<u64>().ok())
            .sum::<u64>()
            * block,
    )
}

/// How many extents the kernel reports for `path` (the rows of `filefrag -v`, one per FIEMAP
/// extent); `None` without filefrag.
pub(super) fn extent_count(path: &Path) -> Option<u64> {
    let out = Command::new("filefrag").arg("-v").arg(path).output().ok()?;
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.trim_start()
                .split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    Some(rows as u64)
}

/// Runs `command` to completion, sampling its peak resident memory (VmHWM) every 10 ms.
pub(super) fn peak_rss(mut command: Command) -> Result<u64> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib * 1024);
        }
        if let Some(exit) = child.try_wait()? {
            if !exit.success() {
                bail!("{command:?} failed");
            }
            return Ok(peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The bytes the data files of the snapshots in the store at `root` have allocated.
pub(super) fn allocated(root: &Path) -> Result<u64> {
    let mut total = 0;
    for dir in std::fs::read_dir(snapstore::Layout::new(root).data_root())? {
        let dir = dir?;
        for file in std::fs::read_dir(dir.path()).into_iter().flatten() {
            total += std::os::unix::fs::MetadataExt::blocks(&file?.metadata()?) * 512;
        }
    }
    Ok(total)
}

/// `sha256:<hex>` of a file's bytes, read as a stream.
pub(super) fn file_digest(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

/// A file of `len` incompressible bytes.
pub(super) fn write_random(path: &Path, len: u64) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        fill_random(&mut buf[..n], at);
        file.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Deterministic incompressible bytes (SplitMix64), seeded by `seed`.
pub(super) fn fill_random(buf: &mut [u8], seed: u64) {
    SplitMix64(seed ^ 0x9e37_79b9_7f4a_7c15).fill(buf);
}
