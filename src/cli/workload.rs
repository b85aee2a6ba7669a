//! A realistic VM snapshot dir, for `demo` and `bench`: guest memory of mixed zero and random
//! pages (written out in full, as a hypervisor dumps it), a sparse COW disk with its data
//! scattered across it, and small metadata.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

const MIB: u64 = 1 << 20;
const PAGE: usize = 4096;

/// Sizes of a workload, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    pub(crate) memory: u64,
    pub(crate) disk: u64,
    pub(crate) disk_data: u64,
}

/// The files a workload writes.
pub(crate) const FILES: [&str; 4] = ["config.json", "cow.raw", "memory-range-0", "state.json"];

impl Workload {
    /// Writes the snapshot into the new dir `dir`; returns the disk's data extents.
    pub(crate) fn write(&self, dir: &Path) -> Result<Vec<(u64, u64)>> {
        std::fs::create_dir(dir)
            .with_context(|| format!("cannot create {}", snapstore::shown(dir)))?;
        let mut rng = SplitMix64(0x5eed);

        // Memory: each 4 KiB page zero or random, about half and half, in 1 MiB writes.
        let memory = create(&dir.join("memory-range-0"))?;
        let mut buf = vec![0u8; MIB as usize];
        let mut offset = 0;
        while offset < self.memory {
            let n = (self.memory - offset).min(MIB) as usize;
            for page in buf[..n].chunks_mut(PAGE) {
                if rng.next().is_multiple_of(2) {
                    page.fill(0);
                } else {
                    rng.fill(page);
                }
            }
            memory.write_all_at(&buf[..n], offset)?;
            offset += n as u64;
        }

        // Disk: never-written ranges are holes on every Linux filesystem that has holes.
        let disk = create(&dir.join("cow.raw"))?;
        disk.set_len(self.disk)?;
        let extent = self.disk_data.clamp(PAGE as u64, MIB);
        let count = (self.disk_data / extent).max(1);
        let stride = (self.disk / count).max(extent);
        let mut data = vec![0u8; extent as usize];
        let mut extents = Vec::new();
        for i in 0..count {
            rng.fill(&mut data);
            let room = stride - extent;
            let jitter = if room == 0 {
                0
            } else {
                (rng.next() % room) & !(PAGE as u64 - 1)
            };
            let at = i * stride + jitter;
            if at + extent > self.disk {
                break;
            }
            disk.write_all_at(&data, at)?;
            extents.push((at, extent));
        }

        create(&dir.join("config.json"))?.write_all(
            format!(r#"{{"cpus":{{"boot_vcpus":2}},"memory":{{"size":{}}},"disks":[{{"path":"cow.raw"}}]}}"#, self.memory)
                .as_bytes(),
        )?;
        create(&dir.join("state.json"))?.write_all(br#"{"state":"paused"}"#)?;
        for name in FILES {
            let path = dir.join(name);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot fsync {}", snapstore::shown(&path)))?;
        }
        Ok(extents)
    }
}

fn create(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", snapstore::shown(path)))
}

/// A small, fast, deterministic generator for incompressible data.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
