//! One function per operation compared: save, clone, export to a dir, tar export and import,
//! compressed exports and rm, each against what a user would run instead, in one [`Run`] over a
//! saved bench snapshot.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use snapstore::{Layout, LocalFile};

use super::render::{Row, allocated, methods, pct};
use super::timing::{Spec, Stats, installed, output, time, time_all};
use crate::cli::workload::Workload;
use crate::cli::{Output, human_bytes};

/// A figure and what it was measured against, when that was installed.
type Versus = (Stats, Option<(String, Stats)>);

/// One directory's comparisons: the workload, the snapshot saved from it, where copies go.
pub(super) struct Run<'a> {
    dir: &'a Path,
    workload: &'a Workload,
    runs: u32,
    me: PathBuf,
    root: PathBuf,
    src: PathBuf,
    /// The bench snapshot's data dir in the store, which cp and tar read.
    data: PathBuf,
    /// Where snapstore's clones and exports go.
    dst: PathBuf,
    /// Where cp's and tar's copies go.
    theirs: PathBuf,
    /// `--reflink=always` where the store can reflink, else `--sparse=always`.
    cp_flag: &'static str,
    cp_mode: &'static str,
    fs: String,
    rows: Vec<Row>,
}

impl<'a> Run<'a> {
    /// Writes the workload into `dir` and saves it as the snapshot `bench`.
    pub(super) fn new(
        dir: &'a Path,
        workload: &'a Workload,
        runs: u32,
        out: Output,
    ) -> Result<Self> {
        let src = dir.join("src");
        workload.write(&src)?;
        let root = dir.join("root");
        let me = std::env::current_exe().context("cannot find the snapstore binary")?;
        let caps = tokio::runtime::Handle::current()
            .block_on(LocalFile::open(&root)?.probe(dir.to_path_buf()))?;
        out.note(format_args!(
            "{} ({}): memory {}, disk {} with {} of data, {} runs",
            caps.fs_type,
            dir.display(),
            human_bytes(workload.memory),
            human_bytes(workload.disk),
            human_bytes(workload.disk_data),
            runs
        ));
        let (cp_mode, cp_flag) = if caps.reflink_from_store {
            ("reflink", "--reflink=always")
        } else {
            ("sparse", "--sparse=always")
        };
        let mut run = Run {
            dir,
            workload,
            runs,
            me,
            data: PathBuf::new(),
            dst: dir.join("dst"),
            theirs: dir.join("theirs"),
            cp_flag,
            cp_mode,
            fs: caps.fs_type,
            rows: Vec::new(),
            root,
            src,
        };
        let id = output(run.snap(&["save", "--name", "bench", "--from-dir"], &[&run.src]))?;
        let id = String::from_utf8(id)?.trim().to_string();
        let id = snapstore::SnapshotId::try_from(id).map_err(anyhow::Error::msg)?;
        run.data = Layout::new(&run.root).data_dir(&id);
        Ok(run)
    }

    /// The filesystem's name, and the `cp` flag that is its baseline (reflink or sparse).
    pub(super) fn setting(&self) -> (String, &'static str) {
        (self.fs.clone(), self.cp_flag)
    }

    /// The store root and the bench snapshot's data dir.
    pub(super) fn store(&self) -> (PathBuf, PathBuf) {
        (self.root.clone(), self.data.clone())
    }

    /// Every comparison, in order; the rows.
    pub(super) fn all(mut self) -> Result<Vec<Row>> {
        // What a user would run to make a copy durable: snapstore fsyncs what it saves, and what
        // it clones or exports with --sync; cp leaves it all to writeback.
        let durable = self.baseline(
            format!("cp -a {} && sync -f (as durable)", self.cp_flag),
            &|| clean(&[&self.theirs]),
            &|| {
                let script = format!("cp -a {} \"$1\" \"$2\" && sync -f \"$2\"", self.cp_flag);
                shell(&script, &[&self.data, &self.theirs])
            },
        )?;
        self.save(&durable)?;
        let cloned = self.clone(&durable)?;
        self.clone_big(cloned)?;
        self.export_to_dir(&durable)?;
        let gnu_tar = self.export_tar()?;
        self.import_tar(&gnu_tar)?;
        self.compressed()?;
        self.rm()?;
        clean(&[&self.dst, &self.theirs]);
        Ok(self.rows)
    }

    fn save(&mut self, durable: &Option<(String, Stats)>) -> Result<()> {
        let (ours, base) = self.versus(
            (
                &|| drop(self.snap(&["rm", "bench-save"], &[]).output()),
                &|| {
                    self.snap(
                        &["save", "--name", "bench-save", "--from-dir"],
                        &[&self.src],
                    )
                },
            ),
            format!("cp -a {}", self.cp_flag),
            (&|| clean(&[&self.theirs]), &|| {
                self.cp(&self.src, self.cp_flag)
            }),
        )?;
        let args = ["--json", "save", "--name", "bench-methods", "--from-dir"];
        let saved = methods(&output(self.snap(&args, &[&self.src]))?)?;
        self.row("save", ours, base, saved);
        self.row("save", ours, durable.clone(), String::new());
        Ok(())
    }

    /// `snapstore COMMAND bench --to-dir` (clone or export) against cp of the data.
    fn against_cp(&self, command: &str) -> Result<Versus> {
        self.versus(
            (&|| clean(&[&self.dst]), &|| {
                self.snap(&[command, "bench", "--to-dir"], &[&self.dst])
            }),
            format!("cp -a {}", self.cp_flag),
            (&|| clean(&[&self.theirs]), &|| {
                self.cp(&self.data, self.cp_flag)
            }),
        )
    }

    /// Clone against cp; returns the clone's times, for the row after it.
    fn clone(&mut self, durable: &Option<(String, Stats)>) -> Result<Stats> {
        let (ours, base) = self.against_cp("clone")?;
        clean(&[&self.dst]);
        let args = ["--json", "clone", "bench", "--to-dir"];
        let cloned = methods(&output(self.snap(&args, &[&self.dst]))?)?;
        self.row("clone", ours, base, cloned);
        let base = self.baseline("cp -al".into(), &|| clean(&[&self.theirs]), &|| {
            self.cp(&self.data, "-l")
        })?;
        let note = "hardlinks everything, disks too: not a safe clone";
        self.row("clone", ours, base, note.into());
        let synced = time(self.runs, &|| clean(&[&self.dst]), &|| {
            self.snap(&["clone", "bench", "--sync", "--to-dir"], &[&self.dst])
        })?;
        self.row("clone --sync", synced, durable.clone(), String::new());
        Ok(ours)
    }

    /// The same data under a disk 8 times larger: a clone's cost follows extents, not bytes.
    /// `plain` is the clone of the plain snapshot.
    fn clone_big(&mut self, plain: Stats) -> Result<()> {
        let big = Workload {
            disk: self.workload.disk * 8,
            ..*self.workload
        };
        let big_src = self.dir.join("src-big");
        big.write(&big_src)?;
        output(self.snap(&["save", "--name", "bench-big", "--from-dir"], &[&big_src]))?;
        clean(&[&big_src]);
        let big_dst = self.dir.join("dst-big");
        let ours_big = time(self.runs, &|| clean(&[&big_dst]), &|| {
            self.snap(&["clone", "bench-big", "--to-dir"], &[&big_dst])
        })?;
        clean(&[&big_dst]);
        let apparent = |w: &Workload| human_bytes(w.memory + w.disk);
        let label = format!("snapstore clone of {}", apparent(self.workload));
        let note = format!("{} apparent, the same data", apparent(&big));
        self.row("clone, 8x the disk", ours_big, Some((label, plain)), note);
        drop(self.snap(&["rm", "bench-big"], &[]).output());
        Ok(())
    }

    fn export_to_dir(&mut self, durable: &Option<(String, Stats)>) -> Result<()> {
        let (ours, base) = self.against_cp("export")?;
        let (got, had) = (allocated(&self.dst), allocated(&self.data));
        let note = format!(
            "{} rungs, no hardlinks; allocated {} for the store's {} ({:+.2}%)",
            self.cp_mode,
            human_bytes(got),
            human_bytes(had),
            pct(got, had)
        );
        self.row("export --to-dir", ours, base, note);
        let synced = time(self.runs, &|| clean(&[&self.dst]), &|| {
            self.snap(&["export", "bench", "--sync", "--to-dir"], &[&self.dst])
        })?;
        self.row(
            "export --to-dir --sync",
            synced,
            durable.clone(),
            String::new(),
        );
        Ok(())
    }

    /// Raw tar export against GNU tar's; returns GNU tar's archive, for the import rows.
    fn export_tar(&mut self) -> Result<PathBuf> {
        let ours_tar = self.dir.join("ours.tar");
        let gnu_tar = self.dir.join("gnu.tar");
        let (ours, base) = self.versus(
            (&|| clean(&[&ours_tar]), &|| {
                self.snap(&["export", "bench", "-o"], &[&ours_tar])
            }),
            "tar --sparse --format=posix -c".into(),
            (&|| clean(&[&gnu_tar]), &|| {
                let mut c = Command::new("tar");
                c.args(["--sparse", "--format=posix", "-cf"])
                    .arg(&gnu_tar)
                    .arg("-C")
                    .arg(&self.data)
                    .arg(".");
                c
            }),
        )?;
        let w = self.workload;
        let data_bytes: u64 = w.memory + w.disk_data + 64;
        let archive = std::fs::metadata(&ours_tar).map(|m| m.len()).unwrap_or(0);
        let note = format!(
            "archive {} for {} of data ({:+.2}%)",
            human_bytes(archive),
            human_bytes(data_bytes),
            pct(archive, data_bytes)
        );
        self.row("export (tar)", ours, base, note);
        Ok(gnu_tar)
    }

    /// Import of our own archive against `tar -x` of GNU tar's, durable and not.
    fn import_tar(&mut self, gnu_tar: &Path) -> Result<()> {
        let ours_tar = self.dir.join("ours.tar");
        let fresh_theirs = || {
            clean(&[&self.theirs]);
            let _ = std::fs::create_dir(&self.theirs);
        };
        let untar: Spec<'_> = (&fresh_theirs, &|| {
            let mut c = Command::new("tar");
            c.arg("-xf").arg(gnu_tar).arg("-C").arg(&self.theirs);
            c
        });
        let import = |flags: &'static [&'static str]| {
            let mut args = vec!["import", "--name", "bench-import"];
            args.extend(flags);
            self.versus(
                (
                    &|| drop(self.snap(&["rm", "bench-import"], &[]).output()),
                    &|| self.snap(&args, &[&ours_tar]),
                ),
                "tar -x (of its own archive)".into(),
                untar,
            )
        };
        let (durable, plain) = import(&[])?;
        let durable_tar = self.baseline(
            "tar -x && sync -f (as durable)".into(),
            &fresh_theirs,
            &|| {
                shell(
                    "tar -xf \"$1\" -C \"$2\" && sync -f \"$2\"",
                    &[gnu_tar, &self.theirs],
                )
            },
        )?;
        let (no_sync, plain_again) = import(&["--no-sync"])?;
        let note = "import fsyncs every file; tar -x leaves them dirty in memory";
        self.row("import (tar)", durable, plain, note.into());
        self.row("import (tar)", durable, durable_tar, String::new());
        self.row(
            "import --no-sync (tar)",
            no_sync,
            plain_again,
            "neither fsyncs".into(),
        );
        Ok(())
    }

    /// gzip export against `tar | gzip -1`, and zstd against our gzip.
    fn compressed(&mut self) -> Result<()> {
        let gz = self.dir.join("ours.tar.gz");
        let ours_gzip: Spec<'_> = (&|| clean(&[&gz]), &|| {
            self.snap(&["export", "bench", "--gzip", "-o"], &[&gz])
        });
        let gnu_gz = self.dir.join("gnu.tar.gz");
        let script = "tar --sparse --format=posix -cf - -C \"$1\" . | gzip -1 > \"$2\"";
        let (ours_gz, base) = if installed("gzip") {
            self.versus(
                ours_gzip,
                "tar ... | gzip -1".into(),
                (&|| clean(&[&gnu_gz]), &|| {
                    shell(script, &[&self.data, &gnu_gz])
                }),
            )?
        } else {
            (time(self.runs, ours_gzip.0, ours_gzip.1)?, None)
        };
        let sizes = |a: &Path, b: &Path| {
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            format!("{} vs {}", human_bytes(size(a)), human_bytes(size(b)))
        };
        self.row("export --gzip", ours_gz, base, sizes(&gz, &gnu_gz));
        let zst = self.dir.join("ours.tar.zst");
        let ours = time(self.runs, &|| clean(&[&zst]), &|| {
            self.snap(&["export", "bench", "--zstd", "-o"], &[&zst])
        })?;
        let base = Some(("snapstore export --gzip".into(), ours_gz));
        self.row("export --zstd", ours, base, sizes(&zst, &gz));
        Ok(())
    }

    fn rm(&mut self) -> Result<()> {
        let (ours, base) = self.versus(
            (
                &|| {
                    let save = ["save", "--name", "bench-rm", "--from-dir"];
                    drop(output(self.snap(&save, &[&self.src])));
                },
                &|| self.snap(&["rm", "bench-rm"], &[]),
            ),
            "rm -rf (of a cp -a copy)".into(),
            (
                &|| {
                    clean(&[&self.theirs]);
                    let _ = self.cp(&self.src, self.cp_flag).output();
                },
                &|| {
                    let mut c = Command::new("rm");
                    c.arg("-rf").arg(&self.theirs);
                    c
                },
            ),
        )?;
        self.row("rm", ours, base, String::new());
        Ok(())
    }

    /// `snapstore --root ROOT ARGS... PATHS...`: paths go as they are, whatever their bytes.
    fn snap(&self, args: &[&str], paths: &[&Path]) -> Command {
        let mut c = Command::new(&self.me);
        c.arg("--root").arg(&self.root).args(args).args(paths);
        c
    }

    /// `cp -a FLAG FROM THEIRS`.
    fn cp(&self, from: &Path, flag: &str) -> Command {
        let mut c = Command::new("cp");
        c.args(["-a", flag]).arg(from).arg(&self.theirs);
        c
    }

    fn row(&mut self, op: &str, ours: Stats, base: Option<(String, Stats)>, note: String) {
        self.rows.push(Row::new(&self.fs, op, ours, base, note));
    }

    /// A baseline timed on its own, or `None` when its program is not installed.
    fn baseline(
        &self,
        label: String,
        prepare: &dyn Fn(),
        command: &dyn Fn() -> Command,
    ) -> Result<Option<(String, Stats)>> {
        let program = command().get_program().to_string_lossy().into_owned();
        if !installed(&program) {
            return Ok(None);
        }
        Ok(Some((label, time(self.runs, prepare, command)?)))
    }

    /// snapstore and its counterpart, timed in turn.
    fn versus(&self, ours: Spec<'_>, label: String, theirs: Spec<'_>) -> Result<Versus> {
        let program = (theirs.1)().get_program().to_string_lossy().into_owned();
        if !installed(&program) {
            return Ok((time(self.runs, ours.0, ours.1)?, None));
        }
        let stats = time_all(self.runs, &[ours, theirs])?;
        Ok((stats[0], Some((label, stats[1]))))
    }
}

/// `sh -c SCRIPT sh PATHS...`: the script reads its paths as `"$1"`, `"$2"`, so no path is
/// quoted into it, whatever its bytes.
fn shell(script: &str, paths: &[&Path]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).arg("sh").args(paths);
    c
}

/// Removes each path, file or directory, if it is there.
fn clean(paths: &[&Path]) {
    for path in paths {
        let _ = std::fs::remove_dir_all(path);
        let _ = std::fs::remove_file(path);
    }
}
