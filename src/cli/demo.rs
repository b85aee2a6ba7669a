//! `snapstore demo`: the main job on a small, realistic VM snapshot, in a temporary store that is
//! removed afterwards. Saves it, clones it, exports it to a dir, re-imports that, checks every
//! byte of the clone against the source, and prints per-file methods and timings.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::Serialize;
use snapstore::{
    CloneOptions, CloneSource, Config, DirImportOptions, DirectoryExporter, FileReport, LocalFile,
    SaveOptions, Snapshot,
};

use super::workload::{FILES, Workload};
use super::{Output, human_bytes, table};

const MIB: u64 = 1 << 20;
/// Guest memory: 128 MiB of mixed zero and random pages.
const MEMORY_LEN: u64 = 128 * MIB;
/// The COW disk: 2 GiB apparent, 32 MiB of data scattered in 1 MiB extents.
const DISK_LEN: u64 = 2048 * MIB;
const DISK_DATA: u64 = 32 * MIB;

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
                snapstore::shown(&parent)
            )
        })?;
    let src = work.path().join("vm-snapshot");
    let workload = Workload {
        memory: MEMORY_LEN,
        disk: DISK_LEN,
        disk_data: DISK_DATA,
    };
    let disk_extents = workload.write(&src)?;
    out.note(format_args!(
        "demo in {}: memory-range-0 {}, cow.raw {} apparent with {} of data, config.json, state.json",
        snapstore::shown(work.path()),
        human_bytes(MEMORY_LEN),
        human_bytes(DISK_LEN),
        human_bytes(DISK_DATA),
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
    for name in FILES.iter().filter(|n| n.ends_with(".json")) {
        let read = |p: PathBuf| {
            std::fs::read(&p).with_context(|| format!("cannot read {}", snapstore::shown(&p)))
        };
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

    let again = store.import_from_dir(
        export_dir,
        DirImportOptions {
            name: Some("demo-reimported".into()),
            ..DirImportOptions::default()
        },
    );
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
        snapstore::shown(work.path())
    ))
}

async fn timed<T>(f: impl Future<Output = snapstore::Result<T>>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = f.await?;
    Ok((value, start.elapsed()))
}

/// Whether `a` and `b` have the same size and the same bytes in `ranges`.
fn same_ranges(a: &Path, b: &Path, ranges: &[(u64, u64)]) -> Result<bool> {
    let open =
        |p: &Path| File::open(p).with_context(|| format!("cannot open {}", snapstore::shown(p)));
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
