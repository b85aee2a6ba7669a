//! `snapstore demo`: the main job on a small, realistic VM snapshot, in a temporary store that is
//! removed afterwards. Saves it, clones it, exports it to a dir, re-imports that, checks every
//! byte of the clone against the source, and prints per-file methods and timings.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::Serialize;
use snapstore::{
    CloneOptions, CloneSource, Config, DirectoryExporter, FileReport, LocalFile, SaveOptions,
    Snapshot,
};

use super::{Output, human_bytes, table};

const MIB: u64 = 1 << 20;
/// Guest memory: 128 MiB, every other 2 MiB run zero pages, as a booted guest leaves it.
const MEMORY_LEN: u64 = 128 * MIB;
/// The COW disk: 2 GiB apparent, 32 MiB of data in 64 scattered 512 KiB extents.
const DISK_LEN: u64 = 2048 * MIB;
const DISK_EXTENTS: u64 = 64;
const DISK_EXTENT_LEN: u64 = 512 * 1024;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to make the temporary store [default: $TMPDIR]; a btrfs or XFS mount shows reflinks
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct Step {
    step: &'static str,
    seconds: f64,
    files: Vec<FileReport>,
}

pub(crate) async fn run(args: Args, out: Output) -> Result<()> {
    let parent = args.dir.unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("snapstore-demo-")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                parent.display()
            )
        })?;
    let src = work.path().join("vm-snapshot");
    let disk_extents = write_snapshot(&src)?;
    out.note(format_args!(
        "demo in {}: memory-range-0 {}, cow.raw {} apparent with {} of data, config.json, state.json",
        work.path().display(),
        human_bytes(MEMORY_LEN),
        human_bytes(DISK_LEN),
        human_bytes(DISK_EXTENTS * DISK_EXTENT_LEN),
    ));

    let store = LocalFile::open(work.path().join("root"))?;
    let config = Config {
        name: "demo".into(),
        description: "snapstore demo snapshot".into(),
        cpu: 2,
        memory: MEMORY_LEN as i64,
        storage: DISK_LEN as i64,
        hypervisor: "cloud-hypervisor".into(),
        ..Config::default()
    };
    let mut steps = Vec::new();

    let (saved, took) = timed(store.create(config, src.clone(), SaveOptions::default())).await?;
    steps.push(Step {
        step: "save",
        seconds: took.as_secs_f64(),
        files: saved.files,
    });

    let run_dir = work.path().join("vm-clone");
    let clone = CloneSource::Ref("demo".into());
    let (cloned, took) =
        timed(store.clone_to_dir(clone, run_dir.clone(), CloneOptions::default())).await?;
    steps.push(Step {
        step: "clone",
        seconds: took.as_secs_f64(),
        files: cloned.files,
    });
    let whole = [(0, MEMORY_LEN)];
    for (name, ranges) in [
        ("memory-range-0", &whole[..]),
        ("cow.raw", &disk_extents[..]),
    ] {
        ensure!(
            same_ranges(&src.join(name), &run_dir.join(name), ranges)?,
            "the clone's {name} differs from the source's"
        );
    }
    for name in ["config.json", "state.json"] {
        let read =
            |p: PathBuf| std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()));
        ensure!(
            read(src.join(name))? == read(run_dir.join(name))?,
            "the clone's {name} differs"
        );
    }

    let export_dir = work.path().join("vm-export");
    let (exported, took) = timed(store.export_to_dir("demo", export_dir.clone())).await?;
    steps.push(Step {
        step: "export --to-dir",
        seconds: took.as_secs_f64(),
        files: exported.files,
    });

    let again = store.import_from_dir(export_dir, Some("demo-reimported".into()), None);
    let (imported, took) = timed(again).await?;
    steps.push(Step {
        step: "import --from-dir",
        seconds: took.as_secs_f64(),
        files: imported.files,
    });

    let listed = store.list().await?.len();
    ensure!(
        listed == 2,
        "the demo store lists {listed} snapshots, not 2"
    );

    if out.json {
        return out.json(&steps);
    }
    let mut rows = Vec::new();
    for step in &steps {
        for (i, f) in step.files.iter().enumerate() {
            let (name, secs) = match i {
                0 => (step.step.to_string(), format!("{:.3}s", step.seconds)),
                _ => (String::new(), String::new()),
            };
            rows.push(vec![
                name,
                secs,
                f.name.clone(),
                f.method.to_string(),
                human_bytes(f.bytes),
            ]);
        }
    }
    out.line(table(&["STEP", "TIME", "FILE", "METHOD", "SIZE"], &rows))?;
    out.line(format_args!(
        "clone verified against the source; 2 snapshots in the demo store; removing {}",
        work.path().display()
    ))
}

async fn timed<T>(f: impl Future<Output = snapstore::Result<T>>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = f.await?;
    Ok((value, start.elapsed()))
}

/// Writes the demo's VM snapshot dir; returns the disk's data extents.
fn write_snapshot(dir: &Path) -> Result<Vec<(u64, u64)>> {
    std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut rng = SplitMix64(0x5eed);

    let memory = create(&dir.join("memory-range-0"))?;
    let run = 2 * MIB;
    let mut buf = vec![0u8; run as usize];
    for (i, offset) in (0..MEMORY_LEN).step_by(run as usize).enumerate() {
        if i % 2 == 0 {
            rng.fill(&mut buf);
        } else {
            buf.fill(0);
        }
        memory.write_all_at(&buf, offset)?;
    }

    // Never-written ranges of a file are holes on every Linux filesystem that has holes.
    let disk = create(&dir.join("cow.raw"))?;
    disk.set_len(DISK_LEN)?;
    let mut extent = vec![0u8; DISK_EXTENT_LEN as usize];
    let stride = DISK_LEN / DISK_EXTENTS;
    let mut extents = Vec::new();
    for i in 0..DISK_EXTENTS {
        rng.fill(&mut extent);
        let jitter = (rng.next() % (stride - DISK_EXTENT_LEN)) & !4095;
        disk.write_all_at(&extent, i * stride + jitter)?;
        extents.push((i * stride + jitter, DISK_EXTENT_LEN));
    }

    create(&dir.join("config.json"))?.write_all(
        br#"{"cpus":{"boot_vcpus":2},"memory":{"size":134217728},"disks":[{"path":"cow.raw"}]}"#,
    )?;
    create(&dir.join("state.json"))?.write_all(br#"{"state":"paused"}"#)?;
    for f in ["memory-range-0", "cow.raw", "config.json", "state.json"] {
        let path = dir.join(f);
        File::open(&path)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot fsync {}", path.display()))?;
    }
    Ok(extents)
}

fn create(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Whether `a` and `b` have the same size and the same bytes in `ranges`.
fn same_ranges(a: &Path, b: &Path, ranges: &[(u64, u64)]) -> Result<bool> {
    let open = |p: &Path| File::open(p).with_context(|| format!("cannot open {}", p.display()));
    let (fa, fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for &(start, len) in ranges {
        let mut offset = start;
        while offset < start + len {
            let n = (start + len - offset).min(MIB) as usize;
            fa.read_exact_at(&mut ba[..n], offset)?;
            fb.read_exact_at(&mut bb[..n], offset)?;
            if ba[..n] != bb[..n] {
                return Ok(false);
            }
            offset += n as u64;
        }
    }
    Ok(true)
}

/// A small, fast, deterministic generator for incompressible demo data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
