//! Copy-on-write on real filesystems: loop-mounted btrfs and XFS from `ci/with-cow-fs.sh`.
//!
//! What is checked is what the kernel says, not what snapstore reports: `filefrag -v` must show
//! every extent of both the source and the clone as `shared`, the clone must be its own inode,
//! and a copy must allocate no more blocks than its source.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use snapstore::{
    CloneMethod, CloneOptions, CloneSource, Config, DirectoryExporter, Error, FileReport,
    LocalFile, SaveOptions, Snapshot,
};

const GIB: u64 = 1 << 30;
const FILES: [&str; 4] = ["config.json", "cow.raw", "memory-range-0", "state.json"];

fn config(name: &str) -> Config {
    Config {
        name: name.into(),
        cpu: 2,
        memory: GIB as i64,
        storage: (8 * GIB) as i64,
        ..Config::default()
    }
}

fn assert_all(files: &[FileReport], method: CloneMethod, what: &str) {
    assert_eq!(files.len(), FILES.len(), "{what}: {files:?}");
    for f in files {
        assert_eq!(f.method, method, "{what}: {}", f.name);
    }
}

/// Each file of `b` is a reflink of the same file of `a`: same bytes, its own inode, and every
/// extent of both shared, as the kernel reports it.
fn assert_reflinked(a: &Path, b: &Path) {
    for name in FILES {
        let (fa, fb) = (a.join(name), b.join(name));
        assert!(same_file(&fa, &fb), "{name}: bytes differ");
        assert_ne!(ino(&fa), ino(&fb), "{name}: a reflink is its own inode");
        assert!(
            all_extents_shared(&fb),
            "{name}: filefrag shows unshared extents in {}",
            fb.display()
        );
        assert!(
            all_extents_shared(&fa),
            "{name}: filefrag shows unshared extents in {}",
            fa.display()
        );
    }
}

/// save, clone and export --to-dir of a 9 GiB-apparent snapshot reflink every file.
async fn reflink_every_file(var: &str) {
    let Some(tmp) = cow_dir(var) else { return };
    let src = vm_snapshot(&tmp.path().join("src"), GIB, 8 * GIB, 256 * MIB);
    let store = LocalFile::open(tmp.path().join("root")).unwrap();

    let saved = store
        .create(config("base"), src.clone(), SaveOptions::default())
        .await
        .unwrap();
    assert_all(&saved.files, CloneMethod::Reflink, "save");
    let data = store.layout().data_dir(&saved.id);
    assert_reflinked(&src, &data);
    let apparent: u64 = saved.files.iter().map(|f| f.bytes).sum();
    assert!(apparent > 9 * GIB, "{apparent}");

    let run = tmp.path().join("run");
    let cloned = clone_ref(&store, "base", run.clone(), CloneOptions::default())
        .await
        .unwrap();
    // Reflink comes first on the ladder: memory is reflinked, not hardlinked.
    assert_all(&cloned.files, CloneMethod::Reflink, "clone");
    assert_reflinked(&data, &run);

    let out = tmp.path().join("export");
    let exported = store.export_to_dir("base", out.clone()).await.unwrap();
    assert_all(&exported.files, CloneMethod::Reflink, "export");
    assert_reflinked(&data, &out);
    assert!(out.join("snapshot.json").exists());

    let imported = store
        .import_from_dir(out.clone(), common::named("again"))
        .await
        .unwrap();
    assert_all(&imported.files, CloneMethod::Reflink, "import");
    assert_reflinked(&out, &store.layout().data_dir(&imported.id));

    let from_dir = tmp.path().join("run-from-dir");
    let opts = CloneOptions {
        hardlink: true,
        require_cow: true,
        ..CloneOptions::default()
    };
    let cloned = store
        .clone_to_dir(CloneSource::Dir(out), from_dir.clone(), opts)
        .await
        .unwrap();
    assert_all(
        &cloned.files,
        CloneMethod::Reflink,
        "clone --from-dir --require-cow",
    );
}

#[tokio::test]
async fn btrfs_reflinks_every_file() {
    reflink_every_file("SNAPSTORE_TEST_BTRFS").await;
}

#[tokio::test]
async fn xfs_reflinks_every_file() {
    reflink_every_file("SNAPSTORE_TEST_XFS").await;
}

/// A clone from btrfs to XFS cannot reflink (EXDEV) nor hardlink (EXDEV): it copies, holes kept.
#[tokio::test]
async fn across_filesystems_the_ladder_falls_to_a_sparse_copy() {
    let (Some(btrfs), Some(xfs)) = (
        cow_dir("SNAPSTORE_TEST_BTRFS"),
        cow_dir("SNAPSTORE_TEST_XFS"),
    ) else {
        return;
    };
    let src = vm_snapshot(&btrfs.path().join("src"), 64 * MIB, GIB, 32 * MIB);
    let store = LocalFile::open(btrfs.path().join("root")).unwrap();
    let saved = store
        .create(config("base"), src, SaveOptions::default())
        .await
        .unwrap();
    let data = store.layout().data_dir(&saved.id);

    let run = xfs.path().join("run");
    let cloned = clone_ref(&store, "base", run.clone(), CloneOptions::default())
        .await
        .unwrap();
    assert_all(&cloned.files, CloneMethod::Copy, "clone across filesystems");
    for name in FILES {
        let (a, b) = (data.join(name), run.join(name));
        assert!(same_file(&a, &b), "{name}");
        assert!(
            !all_extents_shared(&b) || blocks(&b) == 0,
            "{name}: a copy shares nothing"
        );
        // XFS may preallocate a little past EOF for small files; allow one 64 KiB extent.
        assert!(
            blocks(&b) <= blocks(&a) + 128,
            "{name}: {} > {}",
            blocks(&b),
            blocks(&a)
        );
    }
    assert_eq!(
        data_segments(&run.join("cow.raw")).len(),
        data_segments(&data.join("cow.raw")).len()
    );

    let refused = xfs.path().join("refused");
    let opts = CloneOptions {
        hardlink: true,
        require_cow: true,
        ..CloneOptions::default()
    };
    let err = clone_ref(&store, "base", refused.clone(), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CowRequired { .. }), "{err:?}");
    assert!(!refused.exists());
}

/// A copy that would not fit fails before writing anything, naming the target.
#[tokio::test]
async fn a_copy_that_would_not_fit_fails_up_front() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("SNAPSTORE_REQUIRE_COW").is_none(),
            "CI runs as root"
        );
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = vm_snapshot(&tmp.path().join("src"), 8 * MIB, 64 * MIB, 16 * MIB);
    let store = LocalFile::open(tmp.path().join("root")).unwrap();
    store
        .create(config("base"), src, SaveOptions::default())
        .await
        .unwrap();

    let small = tmp.path().join("small");
    let _mounted = Tmpfs::mount(&small, "size=4m");

    let run = small.join("run");
    let err = clone_ref(&store, "base", run.clone(), CloneOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoSpace { path, needed, available } if *path == run && needed > available),
        "{err:?}"
    );
    assert!(err.to_string().contains("not enough space"), "{err}");
    assert!(!run.exists(), "nothing written");
}

/// A read-only store root: a save fails naming the path and changes nothing; reads and clones
/// out still work.
#[tokio::test]
async fn a_read_only_store_refuses_writes_and_still_lists() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("SNAPSTORE_REQUIRE_COW").is_none(),
            "CI runs as root"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = vm_snapshot(&tmp.path().join("src"), MIB, 4 * MIB, MIB);
    let mnt = tmp.path().join("ro");
    let mounted = Tmpfs::mount(&mnt, "size=64m");

    let store = LocalFile::open(&mnt).unwrap();
    store
        .create(config("base"), src.clone(), SaveOptions::default())
        .await
        .unwrap();
    mounted.remount("ro");
    let before = store_state(&mnt);

    let src_copy = src.clone();
    let err = store
        .create(config("new"), src, SaveOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(mnt.to_str().unwrap()), "{err}");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err:?}");
    assert_eq!(store_state(&mnt), before);
    assert_eq!(store.list().await.unwrap().len(), 1);
    assert_eq!(store.inspect("base").await.unwrap().config.name, "base");
    // Cloning out reads the store under a lease it cannot record: still a clone.
    let run = tmp.path().join("run");
    let opts = snapstore::CloneOptions::default();
    let source = snapstore::CloneSource::Ref("base".into());
    store.clone_to_dir(source, run.clone(), opts).await.unwrap();
    assert!(same_file(&src_copy.join("cow.raw"), &run.join("cow.raw")));
    assert_eq!(store_state(&mnt), before);
}

/// A tmpfs mounted at a new dir for one test, unmounted on drop (root only).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir(dir).unwrap();
        let tmpfs = Tmpfs(dir.to_path_buf());
        tmpfs.run(&["-t", "tmpfs", "-o", options, "tmpfs"]);
        tmpfs
    }

    fn remount(&self, options: &str) {
        self.run(&["-o", &format!("remount,{options}")]);
    }

    fn run(&self, args: &[&str]) {
        let ok = std::process::Command::new("mount")
            .args(args)
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "mount {args:?} {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// `du` splits a snapshot's blocks into shared and exclusive as the kernel does: shared with its
/// source after a reflink save, its own once the source is gone, shared again after a reflink
/// clone out. `filefrag -v` is the witness.
async fn du_follows_the_kernels_shared_extents(var: &str) {
    let Some(tmp) = cow_dir(var) else { return };
    let src = vm_snapshot(&tmp.path().join("src"), 8 * MIB, 64 * MIB, 8 * MIB);
    let store = LocalFile::open(tmp.path().join("root")).unwrap();
    let id = store
        .create(config("a"), src.clone(), SaveOptions::default())
        .await
        .unwrap()
        .id;
    let data = tmp.path().join("root/snapshot/localfile").join(id.as_str());
    let witness = || -> u64 {
        FILES
            .iter()
            .map(|f| filefrag_shared_bytes(&data.join(f)))
            .sum()
    };
    let du = || async { store.du(&["a".into()]).await.unwrap() };

    let saved = du().await;
    let usage = saved.snapshots[0].usage;
    assert_eq!(usage.shared_bytes, witness(), "{usage:?}");
    assert!(
        usage.shared_bytes >= 12 * MIB,
        "the big files share with src: {usage:?}"
    );
    assert_eq!(
        usage.shared_bytes + usage.exclusive_bytes,
        usage.allocated_bytes
    );
    assert_eq!(usage.apparent_bytes, saved.total.apparent_bytes);

    // The source gone (and the deletion committed), every block is the snapshot's own.
    std::fs::remove_dir_all(&src).unwrap();
    assert!(Command::new("sync").status().unwrap().success());
    let alone = du().await.snapshots[0].usage;
    assert_eq!(alone.shared_bytes, 0, "{alone:?}");
    assert_eq!(witness(), 0);
    assert_eq!(alone.exclusive_bytes, alone.allocated_bytes);

    // A reflink clone out shares them again; a second snapshot of the clone does too, and the
    // store's distinct extents stay one copy's worth.
    let run = tmp.path().join("run");
    let opts = CloneOptions::default();
    clone_ref(&store, "a", run.clone(), opts).await.unwrap();
    let cloned = du().await.snapshots[0].usage;
    assert_eq!(cloned.shared_bytes, witness(), "{cloned:?}");
    assert!(cloned.shared_bytes >= 12 * MIB, "{cloned:?}");
    store
        .create(config("b"), run, SaveOptions::default())
        .await
        .unwrap();
    let both = store.du(&[]).await.unwrap();
    assert_eq!(both.snapshots.len(), 2);
    assert_eq!(both.total.allocated_bytes, 2 * cloned.allocated_bytes);
    assert!(
        both.on_disk_bytes <= cloned.allocated_bytes,
        "shared extents counted once: {both:?}"
    );
}

#[tokio::test]
async fn du_on_btrfs_follows_the_kernel() {
    du_follows_the_kernels_shared_extents("SNAPSTORE_TEST_BTRFS").await;
}

#[tokio::test]
async fn du_on_xfs_follows_the_kernel() {
    du_follows_the_kernels_shared_extents("SNAPSTORE_TEST_XFS").await;
}
