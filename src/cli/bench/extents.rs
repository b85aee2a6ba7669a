//! Extents, not bytes: what a reflink clone really costs. A disk of N small extents (4 KiB
//! blocks written at random 8 KiB-aligned offsets of a sparse file) is cloned out of the store,
//! against `cp -a` of the same data dir, for each N asked for.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use snapstore::{Layout, SnapshotId};

use super::render::Row;
use super::timing::{output, time_all};

/// Apparent size of the disk the extents are written into.
const DISK: u64 = 4 << 30;
/// Each extent is one block, at a multiple of twice its size, so no two touch.
const BLOCK: u64 = 4096;

/// One row per count in `counts`: clone against `cp -a CP_FLAG`.
pub(super) fn bench_extents(
    dir: &Path,
    counts: &[usize],
    runs: u32,
    cp_flag: &str,
    fs: &str,
) -> Result<Vec<Row>> {
    let me = std::env::current_exe().context("cannot find the snapstore binary")?;
    let root = dir.join("extents-root");
    let dst = dir.join("extents-dst");
    let clean = || {
        let _ = std::fs::remove_dir_all(&dst);
    };
    let mut rows = Vec::new();
    for &count in counts {
        let slots = DISK / (2 * BLOCK);
        let count = count.min(slots as usize);
        let src = dir.join(format!("extents-{count}"));
        std::fs::create_dir(&src).with_context(|| format!("cannot create {}", src.display()))?;
        write_extents(&src.join("disk.raw"), count, slots)?;
        let name = format!("extents-{count}");
        let mut save = Command::new(&me);
        save.arg("--root").arg(&root);
        save.args(["save", "--name", &name, "--from-dir"]).arg(&src);
        let id = String::from_utf8(output(save)?)?.trim().to_string();
        let id = SnapshotId::try_from(id).map_err(anyhow::Error::msg)?;
        let _ = std::fs::remove_dir_all(&src);
        let data = Layout::new(&root).data_dir(&id);
        let stats = time_all(
            runs,
            &[
                (&clean, &|| {
                    let mut c = Command::new(&me);
                    c.arg("--root").arg(&root);
                    c.args(["clone", &name, "--to-dir"]).arg(&dst);
                    c
                }),
                (&clean, &|| {
                    let mut c = Command::new("cp");
                    c.args(["-a", cp_flag]).arg(&data).arg(&dst);
                    c
                }),
            ],
        )?;
        let label = format!("cp -a {cp_flag}");
        let note = format!("{count} extents of 4 KiB in a 4 GiB disk");
        let operation = format!("clone, {count} extents");
        rows.push(Row::new(
            fs,
            operation,
            stats[0],
            Some((label, stats[1])),
            note,
        ));
        clean();
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(rows)
}

/// A sparse `DISK`-byte file with `count` one-block extents at distinct random slots.
fn write_extents(path: &Path, count: usize, slots: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.set_len(DISK)?;
    let mut taken = std::collections::BTreeSet::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let block = [0x5au8; BLOCK as usize];
    while taken.len() < count {
        // xorshift64*: deterministic, so every run writes the same disk.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let slot = state.wrapping_mul(0x2545_f491_4f6c_dd1d) % slots;
        if taken.insert(slot) {
            file.write_all_at(&block, slot * 2 * BLOCK)?;
        }
    }
    file.sync_all()?;
    Ok(())
}
