//! Helpers shared by the integration tests: scratch filesystems, snapshot dirs, and outside
//! witnesses of what the kernel did (`filefrag -v`, inode numbers, allocated blocks).

#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod registry;

pub const MIB: u64 = 1 << 20;

/// A scratch dir on the loop-mounted filesystem named by `var`, or a loud skip.
pub fn cow_dir(var: &str) -> Option<tempfile::TempDir> {
    let Some(root) = std::env::var_os(var) else {
        assert!(
            std::env::var_os("SNAPSTORE_REQUIRE_COW").is_none(),
            "{var} unset in CI"
        );
        eprintln!("SKIPPED: {var} not set; run ci/with-cow-fs.sh");
        return None;
    };
    Some(tempfile::tempdir_in(root).expect("scratch dir on test fs"))
}

/// A file of `len` bytes whose data is `segments` (offset, length) of a deterministic pattern
/// and whose every other range is a punched hole, so the holes exist on any filesystem.
pub fn sparse_file(path: &Path, len: u64, segments: &[(u64, u64)]) {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    file.set_len(len).unwrap();
    for &(offset, length) in segments {
        let mut buf = vec![0u8; length as usize];
        fill(&mut buf, offset);
        file.write_all_at(&buf, offset).unwrap();
    }
    let mut pos = 0;
    for &(offset, length) in segments.iter().chain([(len, 0)].iter()) {
        if offset > pos {
            punch(&file, pos, offset - pos);
        }
        pos = offset + length;
    }
    file.sync_all().unwrap();
}

/// Deterministic non-zero bytes: every 8-byte word holds its own file offset (plus one), so no
/// two blocks of any file are alike and no filesystem can dedupe or compress them away.
pub fn fill(buf: &mut [u8], offset: u64) {
    assert_eq!(offset % 8, 0);
    for (i, word) in buf.chunks_mut(8).enumerate() {
        let value = (offset + i as u64 * 8 + 1).to_le_bytes();
        word.copy_from_slice(&value[..word.len()]);
    }
}

fn punch(file: &File, offset: u64, len: u64) {
    use nix::fcntl::{FallocateFlags, fallocate};
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    fallocate(file, flags, offset as i64, len as i64).unwrap();
}

/// A VM snapshot dir as cloud-hypervisor leaves one: a memory file, a sparse COW disk with
/// scattered data, and small metadata. Sizes in bytes.
pub fn vm_snapshot(dir: &Path, memory: u64, disk: u64, disk_data: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    // Memory: data in every other 1 MiB run, the rest holes (zero pages).
    let runs: Vec<(u64, u64)> = (0..memory / MIB)
        .step_by(2)
        .map(|i| (i * MIB, MIB))
        .collect();
    sparse_file(&dir.join("memory-range-0"), memory, &runs);
    let pieces = 16u64;
    let piece = (disk_data / pieces).max(4096) / 4096 * 4096;
    let stride = disk / pieces;
    let segs: Vec<(u64, u64)> = (0..pieces)
        .map(|i| (i * stride + stride / 3 / 4096 * 4096, piece))
        .collect();
    sparse_file(&dir.join("cow.raw"), disk, &segs);
    std::fs::write(dir.join("config.json"), br#"{"cpus":{"boot_vcpus":2}}"#).unwrap();
    std::fs::write(dir.join("state.json"), br#"{"state":"paused"}"#).unwrap();
    dir.to_path_buf()
}

/// Each extent `filefrag -v` lists for `path`, as (length in bytes, flags): the kernel's FIEMAP
/// account, read by a program that is not ours.
pub fn filefrag_extents(path: &Path) -> Vec<(u64, String)> {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .expect("filefrag runs");
    assert!(
        out.status.success(),
        "filefrag -v {}: {:?}",
        path.display(),
        out
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // "File size of F is 1048576 (256 blocks of 4096 bytes)", or "(1 block of 4096 bytes)"
    let words: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("File size of "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let block: u64 = words
        .iter()
        .position(|w| *w == "bytes)")
        .and_then(|i| words.get(i.checked_sub(1)?))
        .and_then(|n| n.parse().ok())
        .expect("filefrag prints its block size");
    text.lines()
        .filter(|l| {
            let first = l.trim_start().split(':').next().unwrap_or("");
            !first.is_empty() && first.chars().all(|c| c.is_ascii_digit())
        })
        // "  0:  0.. 255:  3328.. 3583:  256:  last,shared,eof": the length is the fourth
        // column, in blocks; the flags are the last.
        .map(|l| {
            let cols: Vec<&str> = l.split(':').collect();
            let length: u64 = cols[3].trim().parse().expect("an extent length");
            let flags = cols.last().unwrap_or(&"").trim().to_string();
            (length * block, flags)
        })
        .collect()
}

/// The flags column of each extent `filefrag -v` lists for `path`.
pub fn extent_flags(path: &Path) -> Vec<String> {
    filefrag_extents(path).into_iter().map(|(_, f)| f).collect()
}

/// Bytes of `path`'s extents that `filefrag -v` flags `shared`.
pub fn filefrag_shared_bytes(path: &Path) -> u64 {
    filefrag_extents(path)
        .into_iter()
        .filter(|(_, f)| f.split(',').any(|f| f == "shared"))
        .map(|(len, _)| len)
        .sum()
}

/// Whether every extent of `path` is shared with another file (FIEMAP_EXTENT_SHARED), and it
/// has at least one. btrfs keeps files under a few KiB inline in its metadata, where a clone
/// copies the bytes instead of sharing them; `inline` counts for those, and only those.
pub fn all_extents_shared(path: &Path) -> bool {
    let flags = extent_flags(path);
    let small = std::fs::metadata(path).unwrap().len() <= 4096;
    !flags.is_empty()
        && flags.iter().all(|f| {
            let f: Vec<&str> = f.split(',').collect();
            f.contains(&"shared") || (small && f.contains(&"inline"))
        })
}

pub fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

pub fn blocks(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// The (offset, length) data segments of a file, as SEEK_DATA/SEEK_HOLE report them.
pub fn data_segments(path: &Path) -> Vec<(u64, u64)> {
    use nix::unistd::{Whence, lseek};
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as i64;
    let mut segments = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match lseek(&file, pos, Whence::SeekData) {
            Ok(start) => start,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => panic!("SEEK_DATA on {}: {e}", path.display()),
        };
        let end = lseek(&file, start, Whence::SeekHole).unwrap();
        segments.push((start as u64, (end - start) as u64));
        pos = end;
    }
    segments
}

/// Bytes of `path` held in the page cache, as mincore(2) reports them: the kernel's word on
/// whether a write went through the cache or past it.
#[allow(unsafe_code)] // mmap and mincore, with the SAFETY note below
pub fn cached_bytes(path: &Path) -> u64 {
    use std::os::fd::AsRawFd;
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096;
    let mut resident = vec![0u8; len.div_ceil(page)];
    // SAFETY: a read-only shared mapping of `len` bytes of an open file, never dereferenced
    // (mincore only asks the kernel which of its pages are cached), and unmapped before return;
    // `resident` holds one byte per page of it, as mincore requires.
    let rc = unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap {}", path.display());
        let rc = libc::mincore(addr, len, resident.as_mut_ptr());
        libc::munmap(addr, len);
        rc
    };
    assert_eq!(rc, 0, "mincore {}", path.display());
    resident.iter().filter(|&&b| b & 1 == 1).count() as u64 * page as u64
}

/// Whether two files have the same size and bytes. Reads only the data segments of each (a
/// hole reads as zeros in the other), so a 64 GiB sparse file costs what its data costs.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let mut ba = vec![0u8; 4 << 20];
    let mut bb = vec![0u8; 4 << 20];
    for (start, len) in data_segments(a).into_iter().chain(data_segments(b)) {
        let mut off = start;
        while off < start + len {
            let n = ((start + len - off) as usize).min(ba.len());
            fa.read_exact_at(&mut ba[..n], off).unwrap();
            fb.read_exact_at(&mut bb[..n], off).unwrap();
            if ba[..n] != bb[..n] {
                return false;
            }
            off += n as u64;
        }
    }
    true
}

/// Every path under `dir`, relative, sorted: to check that a failed operation left nothing.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

/// The store's state on disk: the index's bytes and every path under the root, except lock
/// and lease files (which are created by readers and are not state).
pub fn store_state(root: &Path) -> (Vec<u8>, Vec<String>) {
    let index = std::fs::read(root.join("snapshot/db/snapshots.json")).unwrap_or_default();
    // Leases and locks are not content, and the lookup table is derived from the index, built
    // again by any reader that finds it missing or stale.
    let paths = tree(root)
        .into_iter()
        .filter(|p| !p.ends_with(".lease") && !p.ends_with(".lock"))
        .filter(|p| !p.ends_with("snapshots.lookup"))
        .collect();
    (index, paths)
}

/// The `snapstore` binary as a command, with no root from the test's own environment.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_snapstore"));
    c.env_remove("SNAPSTORE_ROOT");
    c
}

/// The `snapstore` binary with `--root root`.
pub fn command_in(root: &Path) -> Command {
    let mut c = command();
    c.arg("--root").arg(root);
    c
}

/// Runs the `snapstore` binary with `--root root`.
pub fn snapstore(root: &Path, args: &[&str]) -> Output {
    command_in(root)
        .args(args)
        .output()
        .expect("snapstore runs")
}

/// Runs `snapstore`, expects success, returns stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let out = snapstore(root, args);
    assert!(
        out.status.success(),
        "snapstore {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `snapstore`, expects exit status 1, returns stderr.
pub fn fails(root: &Path, args: &[&str]) -> String {
    let out = snapstore(root, args);
    assert_eq!(out.status.code(), Some(1), "snapstore {args:?}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// The store's index as JSON; panics (failing the test) when it is missing or does not parse.
pub fn index_json(root: &Path) -> serde_json::Value {
    let path = root.join("snapshot/db/snapshots.json");
    let bytes = std::fs::read(&path).unwrap_or_default();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::json!({"snapshots": {}, "names": {}});
    }
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// The regular files of `dir` with their sizes, by name; `snapshot.json` left out.
pub fn file_sizes(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "snapshot.json")
        .map(|e| {
            let meta = e.metadata().unwrap();
            assert!(
                meta.is_file(),
                "{} is not a regular file",
                e.path().display()
            );
            (e.file_name().to_string_lossy().into_owned(), meta.len())
        })
        .collect()
}

/// Checks that every complete snapshot in the index of the store at `root` has a data dir
/// holding exactly the files of `src`, at their sizes. Returns the complete IDs with their names.
pub fn assert_complete_snapshots_intact(
    root: &Path,
    src: &Path,
) -> std::collections::BTreeMap<String, String> {
    let index = index_json(root);
    let expected = file_sizes(src);
    let mut complete = std::collections::BTreeMap::new();
    for (id, record) in index["snapshots"].as_object().unwrap() {
        if record["pending"].as_bool().unwrap_or(false) {
            continue;
        }
        let dir = root.join("snapshot/localfile").join(id);
        assert_eq!(
            file_sizes(&dir),
            expected,
            "snapshot {id} in {}",
            dir.display()
        );
        let name = record["name"].as_str().unwrap_or("").to_string();
        complete.insert(id.clone(), name);
    }
    complete
}

/// Checks that the store at `root` holds exactly `expected` (ID → name), all complete, with
/// nothing else: no pending record, no data dir, sidecar or lease without a record, no staging
/// or temp leftovers, and names that map to exactly those IDs.
pub fn assert_store_holds(root: &Path, expected: &std::collections::BTreeMap<String, String>) {
    let index = index_json(root);
    let snapshots = index["snapshots"].as_object().unwrap();
    let ids: Vec<&String> = snapshots.keys().collect();
    assert_eq!(
        ids,
        expected.keys().collect::<Vec<_>>(),
        "records in the index"
    );
    for (id, record) in snapshots {
        assert!(
            !record["pending"].as_bool().unwrap_or(false),
            "{id} pending"
        );
        assert_eq!(record["name"].as_str().unwrap_or(""), expected[id], "{id}");
    }
    let names = index["names"].as_object().unwrap();
    let named: std::collections::BTreeMap<&str, &str> = expected
        .iter()
        .filter(|(_, n)| !n.is_empty())
        .map(|(id, n)| (n.as_str(), id.as_str()))
        .collect();
    let in_index: std::collections::BTreeMap<&str, &str> = names
        .iter()
        .map(|(n, id)| (n.as_str(), id.as_str().unwrap()))
        .collect();
    assert_eq!(in_index, named, "names map to exactly the snapshots");

    let data = root.join("snapshot/localfile");
    for entry in std::fs::read_dir(&data).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let id = name
            .strip_suffix(".lease")
            .or_else(|| name.strip_suffix(".json"))
            .or_else(|| name.strip_suffix(".chunks"))
            .unwrap_or(&name);
        assert!(
            expected.contains_key(id),
            "{} has no record",
            data.join(&name).display()
        );
    }
    let leftovers = |dir: PathBuf| -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-") || dir.ends_with("staging"))
            .collect()
    };
    assert_eq!(
        leftovers(root.join("snapshot/staging")),
        Vec::<String>::new()
    );
    assert_eq!(leftovers(root.join("snapshot/db")), Vec::<String>::new());
}

/// A store in a temp dir and a VM snapshot dir beside it to save from.
pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub src: PathBuf,
    pub store: snapstore::LocalFile,
}

impl Fixture {
    /// A new store, and a source of `memory` bytes of memory and a `disk`-byte disk holding
    /// `disk_data` bytes of data.
    pub fn new(memory: u64, disk: u64, disk_data: u64) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let src = vm_snapshot(&tmp.path().join("src"), memory, disk, disk_data);
        let store = snapstore::LocalFile::open(&root).unwrap();
        Fixture {
            root,
            src,
            store,
            _tmp: tmp,
        }
    }

    /// Saves the source as `name`; its ID.
    pub async fn save(&self, name: &str) -> snapstore::SnapshotId {
        use snapstore::Snapshot;
        let opts = snapstore::SaveOptions::default();
        self.store
            .create(config(name), self.src.clone(), opts)
            .await
            .unwrap()
            .id
    }

    /// The names of the snapshots `list` shows, in its order.
    pub async fn listed(&self) -> Vec<String> {
        use snapstore::Snapshot;
        let records = self.store.list().await.unwrap();
        records.into_iter().map(|r| r.config.name).collect()
    }

    /// A path beside the store, for clones and exports.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.parent().unwrap().join(name)
    }
}

/// Clones the snapshot `reference` names out of `store` into `dir`: the one call the clone
/// tests share.
pub async fn clone_ref(
    store: &snapstore::LocalFile,
    reference: &str,
    dir: impl Into<PathBuf>,
    opts: snapstore::CloneOptions,
) -> snapstore::Result<snapstore::CloneReport> {
    let source = snapstore::CloneSource::Ref(reference.to_string());
    store.clone_to_dir(source, dir.into(), opts).await
}

/// xorshift64*: randomness for the crash harnesses' moments and choices, replayable from its
/// seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Options of an import from a directory that names the new snapshot `name`.
pub fn named(name: &str) -> snapstore::DirImportOptions {
    snapstore::DirImportOptions {
        name: Some(name.to_string()),
        ..snapstore::DirImportOptions::default()
    }
}

/// A snapshot config named `name`, as a VM of 2 CPUs and 1 GiB would have.
pub fn config(name: &str) -> snapstore::Config {
    snapstore::Config {
        name: name.into(),
        cpu: 2,
        memory: 1 << 30,
        ..snapstore::Config::default()
    }
}

/// Pages of `path` in the page cache that are dirty or under writeback: what an fsync would
/// still have to write, as the kernel counts it (cachestat(2), Linux 6.5+). `None` where
/// cachestat cannot be called, or on tmpfs, where pages never go to a disk.
#[allow(unsafe_code)] // one syscall the libc crate does not wrap on every target yet
pub fn unwritten_pages(path: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // One number on every architecture but alpha (include/uapi/asm-generic/unistd.h).
    const SYS_CACHESTAT: libc::c_long = 451;
    let on_tmpfs =
        nix::sys::statfs::statfs(path).unwrap().filesystem_type() == nix::sys::statfs::TMPFS_MAGIC;
    if on_tmpfs {
        return None;
    }
    let file = File::open(path).unwrap();
    let range = Range { off: 0, len: 0 }; // a length of 0 runs to the end of the file
    let mut stat = Stat::default();
    // SAFETY: the fd is open for the duration of the call; `range` and `stat` are live,
    // properly aligned #[repr(C)] structs laid out as the kernel's cachestat_range and cachestat.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // ENOSYS: a kernel before 6.5; EPERM: a seccomp filter that does not know the call.
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
            "cachestat {}: {err}",
            path.display()
        );
        return None;
    }
    Some(stat.nr_dirty + stat.nr_writeback)
}
