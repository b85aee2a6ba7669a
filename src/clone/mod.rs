//! The clone ladder: every file of an operation goes to the first rung that works for its class.
//!
//! - immutable files (guest memory: `memory-range*`, `mem`, `*.mem`): FICLONE, hardlink, copy
//! - every other file (disks, metadata): FICLONE, copy; a file the VM may write is never linked
//!
//! A rung is skipped only when the kernel says it is impossible here (`sys::clone_unsupported`,
//! `sys::link_unsupported`); any other error fails the operation. Once a rung has said so, the
//! rest of the operation's files skip it without asking again. Before anything is copied, the
//! target's free space is checked against the bytes to copy, and `require_cow` refuses to copy at
//! all. Files are cloned in parallel. [`run`] is the only entry point: save, clone and export
//! all go through it.

pub(crate) mod probe;
pub(crate) mod sparse;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::fsutil::{self, Cleanup};
use crate::progress::Progress;
use crate::sys;
use crate::types::{CloneMethod, FileReport};

/// Mode of a file the ladder creates; the store makes its own files read-only afterwards.
const CREATE_MODE: u32 = 0o644;

/// The file names cloud-hypervisor and Firecracker give guest memory.
pub const DEFAULT_IMMUTABLE_PATTERNS: &[&str] = &["memory-range*", "mem", "*.mem"];

/// Which files of a snapshot are immutable: written once, then only read (guest memory).
///
/// Only immutable files may be hardlinked; every other file may be written by the VM. The
/// matcher is compiled the first time a name is asked about: most operations never link, and
/// compiling costs more than the whole of a small clone.
#[derive(Debug, Clone)]
pub struct FileClasses {
    globs: Vec<Glob>,
    immutable: OnceLock<GlobSet>,
    patterns: Vec<String>,
}

impl FileClasses {
    /// Classes whose immutable files are those matching any of `patterns` (shell globs on the
    /// file name).
    ///
    /// # Errors
    /// [`Error::InvalidPattern`] naming a pattern that is not a valid glob.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<FileClasses> {
        let globs = patterns
            .iter()
            .map(|pattern| {
                let pattern = pattern.as_ref();
                Glob::new(pattern).map_err(|source| Error::InvalidPattern {
                    pattern: pattern.to_string(),
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FileClasses {
            globs,
            immutable: OnceLock::new(),
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// Whether the file named `name` is never written after the snapshot is taken.
    ///
    /// Valid globs that together are too large to compile match nothing: a file no pattern
    /// is known to match is never linked, only cloned or copied.
    pub fn is_immutable(&self, name: &str) -> bool {
        let set = self.immutable.get_or_init(|| {
            let mut builder = GlobSetBuilder::new();
            for glob in &self.globs {
                builder.add(glob.clone());
            }
            builder.build().unwrap_or_else(|_| GlobSet::empty())
        });
        set.is_match(name)
    }

    /// The patterns these classes were built from.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl Default for FileClasses {
    fn default() -> FileClasses {
        FileClasses::new(DEFAULT_IMMUTABLE_PATTERNS).expect("the default patterns are valid globs")
    }
}

/// One file to clone: `src` goes to `<dst_dir>/<name>`.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) src: PathBuf,
    /// Someone else's file (a symlink's target): it may be written again, so it is never
    /// linked, whatever its name.
    pub(crate) foreign: bool,
}

/// What the caller allows, and where copies report their progress.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// Files these classes call immutable may be hardlinked; with `None`, no file is.
    pub(crate) hardlink: Option<FileClasses>,
    /// Fail rather than copy any file.
    pub(crate) require_cow: bool,
    /// Fsync every file created, and `dst_dir`, before returning: on for the store's own
    /// files; for a clone out of the store, the caller's choice.
    pub(crate) durable: bool,
    /// Advanced by the bytes each copy moves.
    pub(crate) progress: Progress,
}

/// The rungs a file may take, in the order the ladder tries them: an immutable file may be
/// hardlinked when the operation allows it, any other file never is. The one statement of the
/// ladder's order; [`run`] climbs it and `probe` reports from it.
pub(crate) fn ladder(immutable: bool, allow_hardlink: bool) -> &'static [CloneMethod] {
    if immutable && allow_hardlink {
        &[
            CloneMethod::Reflink,
            CloneMethod::Hardlink,
            CloneMethod::Copy,
        ]
    } else {
        &[CloneMethod::Reflink, CloneMethod::Copy]
    }
}

/// Which rungs are still worth trying in this operation.
struct Rungs {
    reflink: AtomicBool,
    hardlink: AtomicBool,
}

/// Clones every job into `dst_dir`, which must exist; returns one report per job, in job order.
///
/// With `durable`, every file created is fsynced, and so is `dst_dir`. On any error, every file
/// this call created is removed and the error names the file that failed.
///
/// # Errors
/// [`Error::CowRequired`] when `require_cow` is set and a file would need a copy,
/// [`Error::NoSpace`] when the copies would not fit, [`Error::Clone`] / [`Error::Io`] otherwise.
pub(crate) fn run(jobs: &[Job], dst_dir: &Path, opts: &Options) -> Result<Vec<FileReport>> {
    let created = Mutex::new(Cleanup::new());
    let record = |path: &Path| lock(&created).push(path.to_path_buf());
    let rungs = Rungs {
        reflink: AtomicBool::new(true),
        hardlink: AtomicBool::new(true),
    };

    // First the rungs that copy no data, so the space check knows what is left to copy. They
    // take microseconds to a few milliseconds each: in parallel only when each also waits for an
    // fsync. Otherwise waking a second (in a VM, virtual) CPU costs more than it saves.
    let cheap_clone = |job: &Job| {
        let dst = dst_dir.join(&job.name);
        cheap_clone(job, &dst, opts, &rungs, &record)
    };
    let cheap = match opts.durable {
        true => parallel(jobs, cheap_clone)?,
        false => jobs.iter().map(cheap_clone).collect::<Result<Vec<_>>>()?,
    };

    let to_copy: Vec<&Job> = jobs
        .iter()
        .zip(&cheap)
        .filter(|(_, done)| done.is_none())
        .map(|(job, _)| job)
        .collect();
    if let Some(job) = to_copy.first() {
        if opts.require_cow {
            return Err(Error::CowRequired {
                path: job.src.clone(),
            });
        }
        opts.progress.add_total(check_space(&to_copy, dst_dir)?);
    }
    let copied = parallel(&to_copy, |job| {
        copy_file(job, &dst_dir.join(&job.name), opts, &record)
    })?;

    if opts.durable {
        fsutil::fsync_dir(dst_dir)?;
    }
    let mut copied = copied.into_iter();
    let reports = cheap
        .into_iter()
        .map(|done| match done {
            Some(report) => Some(report),
            None => copied.next(),
        })
        .collect::<Option<Vec<_>>>()
        .expect("one copy report per job left to copy");
    match created.into_inner() {
        Ok(cleanup) => cleanup.disarm(),
        Err(poisoned) => poisoned.into_inner().disarm(),
    }
    Ok(reports)
}

/// The job's rungs up to the copy: FICLONE, then (for an immutable file, when allowed) a
/// hardlink; `None` when the copy is all that is left.
fn cheap_clone(
    job: &Job,
    dst: &Path,
    opts: &Options,
    rungs: &Rungs,
    record: &(dyn Fn(&Path) + Sync),
) -> Result<Option<FileReport>> {
    // The ladder of an immutable file; a file that turns out not to be one skips the link,
    // which leaves the ladder of every other file. Its class is asked only there: most files
    // end on the first rung, and compiling the patterns would cost more than the clone.
    let immutable = || {
        let classes = opts.hardlink.as_ref();
        !job.foreign && classes.is_some_and(|c| c.is_immutable(&job.name))
    };
    for rung in ladder(true, opts.hardlink.is_some()) {
        let done = match rung {
            CloneMethod::Reflink if rungs.reflink.load(Ordering::Relaxed) => {
                reflink(job, dst, opts, rungs, record)?
            }
            CloneMethod::Hardlink if rungs.hardlink.load(Ordering::Relaxed) && immutable() => {
                hardlink(job, dst, rungs, record)?
            }
            CloneMethod::Copy => return Ok(None),
            _ => None,
        };
        if done.is_some() {
            return Ok(done);
        }
    }
    Ok(None)
}

/// FICLONE; `None` when the filesystem cannot.
fn reflink(
    job: &Job,
    dst: &Path,
    opts: &Options,
    rungs: &Rungs,
    record: &(dyn Fn(&Path) + Sync),
) -> Result<Option<FileReport>> {
    let src = fsutil::open(&job.src)?;
    let len = metadata_len(&src, &job.src)?;
    let out = fsutil::create_new(dst, CREATE_MODE)?;
    record(dst);
    match sys::ficlone(&out, &src) {
        Ok(()) => {
            if opts.durable {
                out.sync_all().map_err(|e| Error::io("fsync", dst, e))?;
            }
            Ok(Some(report(job, CloneMethod::Reflink, len)))
        }
        Err(e) if sys::clone_unsupported(&e) => {
            rungs.reflink.store(false, Ordering::Relaxed);
            std::fs::remove_file(dst).map_err(|e| Error::io("remove", dst, e))?;
            Ok(None)
        }
        Err(source) => Err(clone_error(CloneMethod::Reflink, job, dst, source)),
    }
}

/// A hardlink; `None` when the filesystem cannot.
fn hardlink(
    job: &Job,
    dst: &Path,
    rungs: &Rungs,
    record: &(dyn Fn(&Path) + Sync),
) -> Result<Option<FileReport>> {
    match sys::hard_link(&job.src, dst) {
        Ok(()) => {
            record(dst);
            let len = fsutil::symlink_metadata(dst)?.len();
            Ok(Some(report(job, CloneMethod::Hardlink, len)))
        }
        Err(e) if sys::link_unsupported(&e) => {
            rungs.hardlink.store(false, Ordering::Relaxed);
            Ok(None)
        }
        Err(source) => Err(clone_error(CloneMethod::Hardlink, job, dst, source)),
    }
}

/// The last rung: a hole-preserving copy, fsynced when `opts.durable`.
fn copy_file(
    job: &Job,
    dst: &Path,
    opts: &Options,
    record: &(dyn Fn(&Path) + Sync),
) -> Result<FileReport> {
    let src = fsutil::open(&job.src)?;
    let len = metadata_len(&src, &job.src)?;
    let out = fsutil::create_new(dst, CREATE_MODE)?;
    record(dst);
    sparse::copy(&src, &out, len, opts.durable, &opts.progress)
        .and_then(|_| if opts.durable { out.sync_all() } else { Ok(()) })
        .map_err(|source| clone_error(CloneMethod::Copy, job, dst, source))?;
    Ok(report(job, CloneMethod::Copy, len))
}

/// Fails before anything is copied when the copies would not fit in `dst_dir`'s filesystem;
/// returns the bytes they will allocate.
fn check_space(jobs: &[&Job], dst_dir: &Path) -> Result<u64> {
    let mut needed = 0u64;
    for job in jobs {
        let meta = fsutil::symlink_metadata(&job.src)?;
        // A hole-preserving copy allocates what the source allocates, never more than its size
        // rounded up to a block.
        needed += (meta.blocks() * 512).min(meta.len().next_multiple_of(4096));
    }
    let available = sys::fs_stat(dst_dir)
        .map_err(|e| Error::io("statfs", dst_dir, e))?
        .available;
    if needed > available {
        return Err(Error::NoSpace {
            path: dst_dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(needed)
}

fn metadata_len(file: &std::fs::File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len())
}

fn report(job: &Job, method: CloneMethod, bytes: u64) -> FileReport {
    FileReport {
        name: job.name.clone(),
        method,
        bytes,
    }
}

fn clone_error(method: CloneMethod, job: &Job, dst: &Path, source: std::io::Error) -> Error {
    Error::Clone {
        method,
        src: job.src.clone(),
        dst: dst.to_path_buf(),
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another worker is re-raised by `parallel`; the data itself is still sound.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cores this process may use, asked once: `available_parallelism` reads cgroup files each
/// time.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
}

/// Runs `f` on every item on up to one thread per core; results in item order. After the first
/// error no new item is started, and the first error in item order is returned.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    // One item or none needs no second thread, nor the cgroup reads that count the cores.
    let workers = if items.len() > 1 { cores() } else { 1 };
    parallel_on(workers, items, f)
}

/// [`parallel`] on up to `workers` threads: for work that waits on a network rather than on a
/// core.
pub(crate) fn parallel_on<T: Sync, R: Send>(
    workers: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let workers = workers.max(1).min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut results: Vec<Option<Result<R>>> = Vec::new();
    results.resize_with(items.len(), || None);
    let results = Mutex::new(results);
    let work = || {
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let result = f(item);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            lock(&results)[i] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        // The calling thread is one of the workers.
        for _ in 1..workers {
            scope.spawn(work);
        }
        work();
    });
    let results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Vec::with_capacity(items.len());
    for result in results {
        match result {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => return Err(e),
            // Not started because an earlier item failed; that error comes later in the list.
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn job(dir: &Path, name: &str, bytes: &[u8]) -> Job {
        let src = dir.join(name);
        std::fs::write(&src, bytes).unwrap();
        Job {
            name: name.to_string(),
            src,
            foreign: false,
        }
    }

    #[test]
    fn default_classes_match_memory_files_only() {
        let c = FileClasses::default();
        for name in ["memory-range-0", "memory-range-12", "mem", "vm.mem"] {
            assert!(c.is_immutable(name), "{name}");
        }
        for name in [
            "overlay.qcow2",
            "cow.raw",
            "config.json",
            "memo",
            "mem.json",
            "data-x.raw",
        ] {
            assert!(!c.is_immutable(name), "{name}");
        }
        assert!(FileClasses::new(&["[bad"]).is_err());
    }

    /// Whether the ladder can take `rung` from `src` into `dst`, as the probe finds by trying.
    fn can(rung: CloneMethod, src: &Path, dst: &Path) -> bool {
        let caps = probe::probe(dst, src).unwrap();
        match rung {
            CloneMethod::Reflink => caps.reflink_from_store,
            CloneMethod::Hardlink => caps.hardlink_from_store,
            _ => true,
        }
    }

    /// Where there is no reflink (the root filesystem, ext4, on the test machines): memory
    /// hardlinks, disks copy.
    #[test]
    fn without_reflink_memory_links_and_disks_copy() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        if can(CloneMethod::Reflink, src.path(), dst.path())
            || !can(CloneMethod::Hardlink, src.path(), dst.path())
        {
            eprintln!(
                "SKIPPED: the temp dir reflinks, or cannot hardlink, as the probe found; \
                 tests/cow.rs covers reflink filesystems"
            );
            return;
        }
        let jobs = [
            job(src.path(), "memory-range-0", &[7; 10000]),
            job(src.path(), "disk.raw", &[9; 5000]),
        ];
        let opts = Options {
            hardlink: Some(FileClasses::default()),
            require_cow: false,
            durable: true,
            progress: Progress::new(),
        };
        let reports = run(&jobs, dst.path(), &opts).unwrap();
        assert_eq!(opts.progress.done(), 5000, "only the copy moves bytes");
        assert_eq!(
            opts.progress.total(),
            8192,
            "its blocks, as the space check counts"
        );
        assert_eq!(reports[0].method, CloneMethod::Hardlink);
        assert_eq!(reports[1].method, CloneMethod::Copy);
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&jobs[0].src), ino(&dst.path().join("memory-range-0")));
        assert_ne!(ino(&jobs[1].src), ino(&dst.path().join("disk.raw")));
        assert_eq!(
            std::fs::read(dst.path().join("disk.raw")).unwrap(),
            vec![9; 5000]
        );
    }

    #[test]
    fn require_cow_fails_and_leaves_nothing() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        if can(CloneMethod::Reflink, src.path(), dst.path()) {
            eprintln!("SKIPPED: the temp dir reflinks, as the probe found: no copy to refuse");
            return;
        }
        let jobs = [
            job(src.path(), "mem", &[1; 100]),
            job(src.path(), "disk.raw", &[2; 100]),
        ];
        let opts = Options {
            hardlink: Some(FileClasses::default()),
            require_cow: true,
            ..Options::default()
        };
        let err = run(&jobs, dst.path(), &opts).unwrap_err();
        assert!(
            matches!(&err, Error::CowRequired { path } if path.ends_with("disk.raw")),
            "{err:?}"
        );
        assert_eq!(
            std::fs::read_dir(dst.path()).unwrap().count(),
            0,
            "the hardlinked mem is gone too"
        );
    }

    #[test]
    fn a_missing_source_fails_naming_it_and_removes_the_rest() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let mut jobs = vec![job(src.path(), "a", b"a"), job(src.path(), "b", b"b")];
        jobs.push(Job {
            name: "gone".into(),
            src: src.path().join("gone"),
            foreign: false,
        });
        let err = run(&jobs, dst.path(), &Options::default()).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
        assert_eq!(std::fs::read_dir(dst.path()).unwrap().count(), 0);
    }

    #[test]
    fn parallel_keeps_order_and_returns_the_first_error() {
        let items: Vec<u32> = (0..50).collect();
        let out = parallel(&items, |i| Ok(i * 2)).unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let err = parallel(&items, |&i| {
            if i == 7 {
                Err(Error::NotFound {
                    reference: "7".into(),
                })
            } else {
                Ok(i)
            }
        });
        assert!(matches!(err, Err(Error::NotFound { reference }) if reference == "7"));
    }
}
