//! `snapstore bench`: times snapstore against what a user would run instead, side by side in one
//! run, on each filesystem asked for.
//!
//! Every figure is the whole-process wall time of a command (snapstore itself is run as a
//! process, like `cp` and `tar`), over `--runs` runs (at least 20 for a command under 0.1 s):
//! median, min, max; each snapstore median is printed as a ratio to its counterpart's (below 1 is
//! faster), the two timed in turn, run for run. Clean-up between runs, and a `sync` so that no
//! run pays for the previous one's writeback, are not timed. What snapstore writes into the store
//! (save, import) it fsyncs, and cp and tar do not: there a durable variant of the baseline (`&&
//! sync -f`) is timed too, and `import --no-sync` against the plain `tar -x`. What it writes out
//! (clone, export) it leaves to writeback as cp does, unless `--sync`, which is timed against the
//! durable baseline. `--scratch-fs` makes loop-mounted images (root only) and removes them
//! afterwards, also on Ctrl-C or SIGTERM.

mod extents;
mod index;
mod measure;
mod ops;
mod registry;
mod render;
mod scratch;
mod timing;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use snapstore::parse_size;

use super::Output;
use super::workload::Workload;
use render::{Row, render};
use scratch::{Scratch, ScratchFs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory to run in (repeatable) [default: $TMPDIR, unless --scratch-fs]
    #[arg(long = "dir", value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Make loop-mounted scratch filesystems and run on each (root only)
    #[arg(long, value_delimiter = ',', value_enum, value_name = "FS")]
    scratch_fs: Vec<ScratchFs>,
    /// Guest memory file size (bytes, or K/M/G/T: powers of 1024)
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    memory: u64,
    /// Disk apparent size
    #[arg(long, default_value = "8G", value_parser = parse_size)]
    disk: u64,
    /// Data scattered across the disk
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    disk_data: u64,
    /// Timed runs of each command (at least 20 of one that takes under 0.1 s)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Store sizes for the scale rows (clone, inspect, save, rm, list, gc, fsck against a store
    /// of one snapshot); 0 skips them
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    index_snapshots: Vec<usize>,
    /// Extent counts of the disks the extents rows clone; 0 skips them
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    extents: Vec<usize>,
    /// Also push and pull through a docker-registry started on loopback, against curl
    #[arg(long)]
    registry: bool,
    /// Only the registry rows (with --registry)
    #[arg(long, requires = "registry")]
    registry_only: bool,
}

/// Mounted scratch filesystems, shared with the Ctrl-C handler so it can remove them.
type Mounts = Arc<Mutex<Vec<Scratch>>>;

pub(crate) async fn run(args: Args, out: Output) -> Result<()> {
    let mounts: Mounts = Arc::new(Mutex::new(Vec::new()));
    let work = {
        let mounts = Arc::clone(&mounts);
        tokio::task::spawn_blocking(move || bench(&args, &mounts, out))
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let rows = tokio::select! {
        rows = work => rows??,
        _ = tokio::signal::ctrl_c() => {
            lock(&mounts).clear(); // unmounts and removes each image
            bail!("interrupted; scratch filesystems removed");
        }
        _ = terminate.recv() => {
            lock(&mounts).clear();
            bail!("terminated; scratch filesystems removed");
        }
    };
    lock(&mounts).clear();
    if out.json {
        return out.json(&rows);
    }
    out.line(render(&rows))
}

fn lock(m: &Mounts) -> std::sync::MutexGuard<'_, Vec<Scratch>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bench(args: &Args, mounts: &Mounts, out: Output) -> Result<Vec<Row>> {
    let workload = Workload {
        memory: args.memory,
        disk: args.disk,
        disk_data: args.disk_data,
    };
    /// Where one run goes: a directory given, or a scratch filesystem made for it.
    enum Target {
        Dir(PathBuf),
        Scratch(ScratchFs),
    }
    // Everything missing is said before the first run, not after it.
    for &fs in &args.scratch_fs {
        Scratch::check(fs)?;
    }
    let mut targets: Vec<Target> = args.dirs.iter().cloned().map(Target::Dir).collect();
    targets.extend(args.scratch_fs.iter().copied().map(Target::Scratch));
    if targets.is_empty() {
        targets.push(Target::Dir(std::env::temp_dir()));
    }
    let mut rows = Vec::new();
    for target in targets {
        let done = rows.len();
        let target = match target {
            Target::Dir(dir) => dir,
            Target::Scratch(fs) => {
                out.note(format_args!("making a scratch {} filesystem", fs.name()));
                let scratch = Scratch::mount(fs, &workload)?;
                let mnt = scratch.mnt.clone();
                lock(mounts).push(scratch);
                mnt
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("snapstore-bench-")
            .tempdir_in(&target)
            .with_context(|| format!("cannot make a work dir in {}", target.display()))?;
        let run = ops::Run::new(dir.path(), &workload, args.runs, out)?;
        let (fs, cp_flag) = run.setting();
        if args.registry {
            out.note(format_args!("{fs}: registry rows"));
            let (root, data) = run.store();
            rows.extend(registry::bench_registry(
                dir.path(),
                &root,
                &data,
                args.runs,
                &fs,
            )?);
        }
        if args.registry_only {
            drop(dir);
            lock(mounts).clear();
            out.note(format_args!("{fs} rows:\n{}", render(&rows[done..])));
            continue;
        }
        rows.extend(run.all()?);
        let wanted = |counts: &[usize]| {
            counts
                .iter()
                .copied()
                .filter(|&n| n > 0)
                .collect::<Vec<_>>()
        };
        let extents = wanted(&args.extents);
        if !extents.is_empty() {
            out.note(format_args!("{fs}: extents rows, {extents:?}"));
            rows.extend(extents::bench_extents(
                dir.path(),
                &extents,
                args.runs,
                cp_flag,
                &fs,
            )?);
        }
        let sizes = wanted(&args.index_snapshots);
        if !sizes.is_empty() {
            out.note(format_args!(
                "{fs}: scale rows, stores of {sizes:?} snapshots"
            ));
            rows.extend(index::bench_scale(
                dir.path(),
                &sizes,
                args.runs,
                cp_flag,
                &fs,
            )?);
        }
        drop(dir);
        // A scratch filesystem goes before the next is made: the background work of deleting
        // what its run made (btrfs's cleaner, XFS's inode GC) would fall on the next one's timings.
        lock(mounts).clear();
        // Shown as each filesystem is done, so that a later one's failure loses none of them.
        out.note(format_args!("{fs} rows:\n{}", render(&rows[done..])));
    }
    Ok(rows)
}
