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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use snapstore::{LocalFile, parse_size};

use super::workload::Workload;
use super::{Output, human_bytes, table};

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
    /// Snapshots in the index for the index timings (list, inspect, save overhead); 0 skips them
    #[arg(long, default_value_t = 10_000)]
    index_snapshots: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScratchFs {
    Btrfs,
    Xfs,
    Ext4,
}

impl ScratchFs {
    fn name(self) -> &'static str {
        match self {
            ScratchFs::Btrfs => "btrfs",
            ScratchFs::Xfs => "xfs",
            ScratchFs::Ext4 => "ext4",
        }
    }

    fn mkfs(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            ScratchFs::Btrfs => ("mkfs.btrfs", &["-q"], "btrfs-progs"),
            ScratchFs::Xfs => ("mkfs.xfs", &["-q", "-m", "reflink=1"], "xfsprogs"),
            ScratchFs::Ext4 => ("mkfs.ext4", &["-q", "-F"], "e2fsprogs"),
        }
    }
}

/// Median, min and max of a command's runs, in seconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    fs: String,
    operation: &'static str,
    snapstore: Stats,
    baseline: Option<String>,
    baseline_time: Option<Stats>,
    /// snapstore's median over the baseline's.
    ratio: Option<f64>,
    note: String,
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
        rows.extend(bench_dir(dir.path(), &workload, args.runs, out)?);
        if args.index_snapshots > 0 {
            rows.extend(bench_index(dir.path(), args.index_snapshots, args.runs)?);
        }
        drop(dir);
        // A scratch filesystem goes before the next is made: the background work of deleting
        // what its run made (btrfs's cleaner, XFS's inode GC) would fall on the next one's timings.
        lock(mounts).clear();
    }
    Ok(rows)
}

/// Runs every comparison in `dir`.
fn bench_dir(dir: &Path, workload: &Workload, runs: u32, out: Output) -> Result<Vec<Row>> {
    let src = dir.join("src");
    workload.write(&src)?;
    let root = dir.join("root");
    let me = std::env::current_exe().context("cannot find the snapstore binary")?;
    let snap = |args: &[&str]| {
        let mut c = Command::new(&me);
        c.arg("--root").arg(&root).args(args);
        c
    };
    let caps = tokio::runtime::Handle::current()
        .block_on(LocalFile::open(&root)?.probe(dir.to_path_buf()))?;
    let fs = caps.fs_type.clone();
    out.note(format_args!(
        "{fs} ({}): memory {}, disk {} with {} of data, {} runs",
        dir.display(),
        human_bytes(workload.memory),
        human_bytes(workload.disk),
        human_bytes(workload.disk_data),
        runs
    ));

    let id = String::from_utf8(output(snap(&[
        "save",
        "--from-dir",
        p(&src),
        "--name",
        "bench",
    ]))?)?;
    let data = root.join("snapshot/localfile").join(id.trim());
    let (cp_mode, cp_flag) = if caps.reflink_from_store {
        ("reflink", "--reflink=always")
    } else {
        ("sparse", "--sparse=always")
    };
    let dst = dir.join("dst");
    let theirs = dir.join("theirs");
    let clean = |paths: &[&Path]| {
        for path in paths {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    };
    let cp = |from: &Path, flag: &str| {
        let mut c = Command::new("cp");
        c.args(["-a", flag]).arg(from).arg(&theirs);
        c
    };
    let mut rows = Vec::new();
    let mut row = |operation, ours: Stats, baseline: Option<(String, Stats)>, note: String| {
        let ratio = baseline.as_ref().map(|(_, b)| ours.median / b.median);
        rows.push(Row {
            fs: fs.clone(),
            operation,
            snapstore: ours,
            baseline_time: baseline.as_ref().map(|(_, b)| *b),
            baseline: baseline.map(|(c, _)| c),
            ratio,
            note,
        });
    };
    let timed = |prepare: &dyn Fn(), command: &dyn Fn() -> Command| -> Result<Stats> {
        time(runs, prepare, command)
    };
    let baseline = |label: String,
                    prepare: &dyn Fn(),
                    command: &dyn Fn() -> Command|
     -> Result<Option<(String, Stats)>> {
        let program = command().get_program().to_string_lossy().into_owned();
        if !installed(&program) {
            return Ok(None);
        }
        Ok(Some((label, time(runs, prepare, command)?)))
    };
    // snapstore and its counterpart, timed in turn.
    let versus = |ours: Spec<'_>,
                  label: String,
                  theirs: Spec<'_>|
     -> Result<(Stats, Option<(String, Stats)>)> {
        let program = (theirs.1)().get_program().to_string_lossy().into_owned();
        if !installed(&program) {
            return Ok((time(runs, ours.0, ours.1)?, None));
        }
        let stats = time_all(runs, &[ours, theirs])?;
        Ok((stats[0], Some((label, stats[1]))))
    };

    // What a user would run to make a copy durable: snapstore fsyncs what it saves, and what it
    // clones or exports with --sync; cp leaves it all to writeback.
    let durable_cp = format!(
        "cp -a {cp_flag} '{}' '{}' && sync -f '{}'",
        data.display(),
        theirs.display(),
        theirs.display()
    );
    let shell = |script: &str| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    };
    let durable_label = format!("cp -a {cp_flag} && sync -f (as durable)");
    let durable = baseline(durable_label.clone(), &|| clean(&[&theirs]), &|| {
        shell(&durable_cp)
    })?;

    // save
    let (ours, base) = versus(
        (&|| drop(snap(&["rm", "bench-save"]).output()), &|| {
            snap(&["save", "--from-dir", p(&src), "--name", "bench-save"])
        }),
        format!("cp -a {cp_flag}"),
        (&|| clean(&[&theirs]), &|| cp(&src, cp_flag)),
    )?;
    let saved = methods(&output(snap(&[
        "--json",
        "save",
        "--from-dir",
        p(&src),
        "--name",
        "bench-methods",
    ]))?)?;
    row("save", ours, base, saved);
    row("save", ours, durable.clone(), String::new());

    // clone, and export --to-dir below: `snapstore COMMAND bench --to-dir` against cp of the data.
    let against_cp = |command: &str| {
        versus(
            (&|| clean(&[&dst]), &|| {
                snap(&[command, "bench", "--to-dir", p(&dst)])
            }),
            format!("cp -a {cp_flag}"),
            (&|| clean(&[&theirs]), &|| cp(&data, cp_flag)),
        )
    };
    let (ours, base) = against_cp("clone")?;
    clean(&[&dst]);
    let cloned = methods(&output(snap(&[
        "--json",
        "clone",
        "bench",
        "--to-dir",
        p(&dst),
    ]))?)?;
    row("clone", ours, base, cloned);
    let base = baseline("cp -al".into(), &|| clean(&[&theirs]), &|| cp(&data, "-l"))?;
    row(
        "clone",
        ours,
        base,
        "hardlinks everything, disks too: not a safe clone".into(),
    );
    let synced = timed(&|| clean(&[&dst]), &|| {
        snap(&["clone", "bench", "--to-dir", p(&dst), "--sync"])
    })?;
    row("clone --sync", synced, durable.clone(), String::new());

    // The same data under a disk 8 times larger: a clone's cost follows extents, not bytes.
    let big = Workload {
        disk: workload.disk * 8,
        ..*workload
    };
    let big_src = dir.join("src-big");
    big.write(&big_src)?;
    output(snap(&[
        "save",
        "--from-dir",
        p(&big_src),
        "--name",
        "bench-big",
    ]))?;
    clean(&[&big_src]);
    let big_dst = dir.join("dst-big");
    let ours_big = timed(&|| clean(&[&big_dst]), &|| {
        snap(&["clone", "bench-big", "--to-dir", p(&big_dst)])
    })?;
    clean(&[&big_dst]);
    let apparent = |w: &Workload| human_bytes(w.memory + w.disk);
    row(
        "clone, 8x the disk",
        ours_big,
        Some((format!("snapstore clone of {}", apparent(workload)), ours)),
        format!("{} apparent, the same data", apparent(&big)),
    );
    drop(snap(&["rm", "bench-big"]).output());

    // export --to-dir
    let (ours, base) = against_cp("export")?;
    let (got, had) = (allocated(&dst), allocated(&data));
    row(
        "export --to-dir",
        ours,
        base,
        format!(
            "{cp_mode} rungs, no hardlinks; allocated {} for the store's {} ({:+.2}%)",
            human_bytes(got),
            human_bytes(had),
            pct(got, had)
        ),
    );
    let synced = timed(&|| clean(&[&dst]), &|| {
        snap(&["export", "bench", "--to-dir", p(&dst), "--sync"])
    })?;
    row("export --to-dir --sync", synced, durable, String::new());

    // tar export, raw
    let ours_tar = dir.join("ours.tar");
    let gnu_tar = dir.join("gnu.tar");
    let (ours, base) = versus(
        (&|| clean(&[&ours_tar]), &|| {
            snap(&["export", "bench", "-o", p(&ours_tar)])
        }),
        "tar --sparse --format=posix -c".into(),
        (&|| clean(&[&gnu_tar]), &|| {
            let mut c = Command::new("tar");
            c.args(["--sparse", "--format=posix", "-cf"])
                .arg(&gnu_tar)
                .arg("-C")
                .arg(&data)
                .arg(".");
            c
        }),
    )?;
    let data_bytes: u64 = workload.memory + workload.disk_data + 64;
    let archive = std::fs::metadata(&ours_tar).map(|m| m.len()).unwrap_or(0);
    row(
        "export (tar)",
        ours,
        base,
        format!(
            "archive {} for {} of data ({:+.2}%)",
            human_bytes(archive),
            human_bytes(data_bytes),
            pct(archive, data_bytes)
        ),
    );

    // tar import
    let untar: Spec<'_> = (
        &|| {
            clean(&[&theirs]);
            let _ = std::fs::create_dir(&theirs);
        },
        &|| {
            let mut c = Command::new("tar");
            c.arg("-xf").arg(&gnu_tar).arg("-C").arg(&theirs);
            c
        },
    );
    let (ours, base) = versus(
        (&|| drop(snap(&["rm", "bench-import"]).output()), &|| {
            snap(&["import", p(&ours_tar), "--name", "bench-import"])
        }),
        "tar -x (of its own archive)".into(),
        untar,
    )?;
    row(
        "import (tar)",
        ours,
        base,
        "import fsyncs every file; tar -x leaves them dirty in memory".into(),
    );
    let durable = format!(
        "tar -xf '{}' -C '{}' && sync -f '{}'",
        gnu_tar.display(),
        theirs.display(),
        theirs.display()
    );
    let base = baseline(
        "tar -x && sync -f (as durable)".into(),
        &|| {
            clean(&[&theirs]);
            let _ = std::fs::create_dir(&theirs);
        },
        &|| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(&durable);
            c
        },
    )?;
    row("import (tar)", ours, base, String::new());
    let (ours, base) = versus(
        (&|| drop(snap(&["rm", "bench-import"]).output()), &|| {
            snap(&[
                "import",
                "--no-sync",
                p(&ours_tar),
                "--name",
                "bench-import",
            ])
        }),
        "tar -x (of its own archive)".into(),
        untar,
    )?;
    row(
        "import --no-sync (tar)",
        ours,
        base,
        "neither fsyncs".into(),
    );

    // gzip and zstd exports
    let gz = dir.join("ours.tar.gz");
    let ours_gzip: Spec<'_> = (&|| clean(&[&gz]), &|| {
        snap(&["export", "bench", "--gzip", "-o", p(&gz)])
    });
    let gnu_gz = dir.join("gnu.tar.gz");
    let pipeline = format!(
        "tar --sparse --format=posix -cf - -C '{}' . | gzip -1 > '{}'",
        data.display(),
        gnu_gz.display()
    );
    let (ours_gz, base) = if installed("gzip") {
        versus(
            ours_gzip,
            "tar ... | gzip -1".into(),
            (&|| clean(&[&gnu_gz]), &|| {
                let mut c = Command::new("sh");
                c.arg("-c").arg(&pipeline);
                c
            }),
        )?
    } else {
        (time(runs, ours_gzip.0, ours_gzip.1)?, None)
    };
    let sizes = |a: &Path, b: &Path| {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        format!("{} vs {}", human_bytes(size(a)), human_bytes(size(b)))
    };
    row("export --gzip", ours_gz, base, sizes(&gz, &gnu_gz));
    let zst = dir.join("ours.tar.zst");
    let ours = timed(&|| clean(&[&zst]), &|| {
        snap(&["export", "bench", "--zstd", "-o", p(&zst)])
    })?;
    row(
        "export --zstd",
        ours,
        Some(("snapstore export --gzip".into(), ours_gz)),
        sizes(&zst, &gz),
    );

    // rm
    let (ours, base) = versus(
        (
            &|| {
                drop(output(snap(&[
                    "save",
                    "--from-dir",
                    p(&src),
                    "--name",
                    "bench-rm",
                ])))
            },
            &|| snap(&["rm", "bench-rm"]),
        ),
        "rm -rf (of a cp -a copy)".into(),
        (
            &|| {
                clean(&[&theirs]);
                let _ = cp(&src, cp_flag).output();
            },
            &|| {
                let mut c = Command::new("rm");
                c.arg("-rf").arg(&theirs);
                c
            },
        ),
    )?;
    row("rm", ours, base, String::new());
    clean(&[&dst, &theirs]);
    Ok(rows)
}

/// The index targets, whole-process, with `count` snapshots in the index: `list --json` within
/// 200 ms, `inspect` by ID prefix within 100 ms (each ratio is to its budget), and the cost of
/// saving an empty dir next to saving it into an empty store: save's overhead beyond file work.
fn bench_index(dir: &Path, count: usize, runs: u32) -> Result<Vec<Row>> {
    let me = std::env::current_exe().context("cannot find the snapstore binary")?;
    let (busy, empty, src) = (dir.join("busy"), dir.join("empty"), dir.join("nothing"));
    std::fs::create_dir_all(&src)?;
    let ids = snapstore::synthetic::synthetic_index(&busy, count)?;
    let prefix = ids.first().map(|id| id.as_str()[..6].to_string());
    let prefix = prefix.context("no snapshot made")?;
    let fs = tokio::runtime::Handle::current()
        .block_on(LocalFile::open(&busy)?.probe(dir.to_path_buf()))?
        .fs_type;
    let snap = |root: &Path, args: &[&str]| {
        let mut c = Command::new(&me);
        c.arg("--root").arg(root).args(args);
        c
    };
    let budget = |secs: f64| {
        let stats = Stats {
            median: secs,
            min: secs,
            max: secs,
        };
        Some((format!("target: under {:.0} ms", secs * 1000.0), stats))
    };
    let mut rows = Vec::new();
    let mut row = |operation, ours: Stats, baseline: Option<(String, Stats)>, note: String| {
        rows.push(Row {
            fs: fs.clone(),
            operation,
            snapstore: ours,
            ratio: baseline.as_ref().map(|(_, b)| ours.median / b.median),
            baseline_time: baseline.as_ref().map(|(_, b)| *b),
            baseline: baseline.map(|(c, _)| c),
            note,
        });
    };
    let noted = format!("{count} snapshots in the index");
    let list = time(runs, &|| {}, &|| snap(&busy, &["list", "--json"]))?;
    row("list --json (index)", list, budget(0.2), noted.clone());
    let inspect = time(runs, &|| {}, &|| snap(&busy, &["inspect", &prefix]))?;
    row(
        "inspect PREFIX (index)",
        inspect,
        budget(0.1),
        noted.clone(),
    );
    let save = |root: &Path| {
        time(
            runs,
            &|| drop(snap(root, &["rm", "bench-empty"]).output()),
            &|| {
                snap(
                    root,
                    &["save", "--from-dir", p(&src), "--name", "bench-empty"],
                )
            },
        )
    };
    let (busy_save, empty_save) = (save(&busy)?, save(&empty)?);
    let overhead = (busy_save.median - empty_save.median) * 1000.0;
    row(
        "save, no data (index)",
        busy_save,
        Some(("the same into an empty store".into(), empty_save)),
        format!("{noted}: {overhead:+.1} ms (target: under 50 ms)"),
    );
    Ok(rows)
}

/// A command whose first run takes less than this is timed at least [`QUICK_RUNS`] times: a few
/// milliseconds vary from run to run by more than the differences being measured.
const QUICK: f64 = 0.1;
const QUICK_RUNS: u32 = 20;

/// A command to time, and what to do, untimed, before each run of it.
type Spec<'a> = (&'a dyn Fn(), &'a dyn Fn() -> Command);

/// Times `runs` runs of `command` (at least [`QUICK_RUNS`] for a quick one), each after an
/// untimed `prepare`.
fn time(runs: u32, prepare: &dyn Fn(), command: &dyn Fn() -> Command) -> Result<Stats> {
    let mut stats = time_all(runs, &[(prepare, command)])?;
    stats.pop().context("no figure")
}

/// Times the commands of `specs` in turn, run for run (a b a b ...), so that each sees the same
/// machine: on a shared host, background work comes and goes in seconds, and would favour
/// whichever series ran in a quiet moment. `runs` rounds, at least [`QUICK_RUNS`] when the
/// first round is quick.
fn time_all(runs: u32, specs: &[Spec<'_>]) -> Result<Vec<Stats>> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    let mut rounds = runs.max(1);
    let mut round = 0;
    while round < rounds {
        for ((prepare, command), times) in specs.iter().zip(&mut times) {
            prepare();
            // Untimed: no run pays for the writeback of the one before it.
            let _ = Command::new("sync").status();
            let start = Instant::now();
            output(command())?;
            times.push(start.elapsed().as_secs_f64());
        }
        if round == 0 && times.iter().flatten().all(|&t| t < QUICK) {
            rounds = rounds.max(QUICK_RUNS);
        }
        round += 1;
    }
    Ok(times
        .into_iter()
        .map(|mut times| {
            times.sort_by(f64::total_cmp);
            Stats {
                median: times[times.len() / 2],
                min: times[0],
                max: times[times.len() - 1],
            }
        })
        .collect())
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn output(mut command: Command) -> Result<Vec<u8>> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// "memory-range-0=reflink, cow.raw=reflink, ..." from a save or clone report.
fn methods(json: &[u8]) -> Result<String> {
    let report: serde_json::Value = serde_json::from_slice(json)?;
    let files = report["files"].as_array().cloned().unwrap_or_default();
    Ok(files
        .iter()
        .map(|f| {
            format!(
                "{}={}",
                f["name"].as_str().unwrap_or("?"),
                f["method"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// Bytes allocated by the regular files directly in `dir`, as the kernel counts them (st_blocks).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.blocks() * 512)
        .sum()
}

fn pct(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64) * 100.0 / b as f64
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn render(rows: &[Row]) -> String {
    let secs = |s: &Stats| format!("{:.3}s [{:.3}-{:.3}]", s.median, s.min, s.max);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
                r.fs.clone(),
                r.operation.to_string(),
                secs(&r.snapstore),
                r.baseline
                    .clone()
                    .unwrap_or_else(|| "(not installed)".into()),
                r.baseline_time.as_ref().map_or("-".into(), secs),
                r.note.clone(),
            ]
        })
        .collect();
    table(
        &[
            "RATIO",
            "FS",
            "OPERATION",
            "SNAPSTORE",
            "BASELINE",
            "BASELINE TIME",
            "NOTE",
        ],
        &body,
    )
}

/// A loop-mounted scratch filesystem, unmounted and removed on drop.
struct Scratch {
    mnt: PathBuf,
    img: PathBuf,
}

impl Scratch {
    /// Fails, saying what is missing, unless a scratch `fs` can be made here.
    fn check(fs: ScratchFs) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (mkfs, _, package) = fs.mkfs();
        // /proc/self belongs to the process's effective user.
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            bail!(
                "--scratch-fs needs root to loop-mount a {} image",
                fs.name()
            );
        }
        if !installed(mkfs) {
            bail!(
                "--scratch-fs {}: {mkfs} not found (apt-get install {package})",
                fs.name()
            );
        }
        Ok(())
    }

    fn mount(fs: ScratchFs, workload: &Workload) -> Result<Scratch> {
        Scratch::check(fs)?;
        let (mkfs, flags, _) = fs.mkfs();
        let base = std::env::var_os("SNAPSTORE_SCRATCH_DIR")
            .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix("snapstore-scratch-")
            .tempdir_in(&base)?
            .keep();
        let scratch = Scratch {
            mnt: dir.join("mnt"),
            img: dir.join(format!("{}.img", fs.name())),
        };
        // Room for the source, the store, and every copy the comparisons make, sparse on disk.
        let size = (10 * (workload.memory + workload.disk_data) + 10 * workload.disk).max(4 << 30);
        std::fs::File::create(&scratch.img)?.set_len(size)?;
        output({
            let mut c = Command::new(mkfs);
            c.args(flags).arg(&scratch.img);
            c
        })?;
        std::fs::create_dir(&scratch.mnt)?;
        output({
            let mut c = Command::new("mount");
            c.args(["-o", "loop"]).arg(&scratch.img).arg(&scratch.mnt);
            c
        })
        .with_context(|| format!("cannot loop-mount the {} image", fs.name()))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let umounted = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !umounted {
            // Busy (an interrupted command still holds a file): detach now, free when closed.
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(dir) = self.img.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn commands_are_timed_in_turn_and_quick_ones_often() {
        let order = RefCell::new(String::new());
        let (a, b) = (
            || order.borrow_mut().push('a'),
            || order.borrow_mut().push('b'),
        );
        let quick = || Command::new("true");
        let stats = time_all(2, &[(&a, &quick), (&b, &quick)]).unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!(*order.borrow(), "ab".repeat(QUICK_RUNS as usize));
        for s in stats {
            assert!(
                0.0 < s.min && s.min <= s.median && s.median <= s.max,
                "{s:?}"
            );
        }
        // A command that fails is an error, not a figure.
        assert!(time(1, &|| {}, &|| Command::new("false")).is_err());
    }
}
