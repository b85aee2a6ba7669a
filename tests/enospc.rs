//! A full disk: on a small loop-mounted ext4 (`SNAPSTORE_TEST_SMALL`, 256 MiB, from
//! `ci/with-cow-fs.sh`), saves, imports, clones and exports that do not fit fail with a clear
//! error, leave nothing partial, and leave the snapshots already there and the index untouched.
//! Some are refused up front by the free-space check; the tar import, whose size is unknown
//! until it is read, runs into ENOSPC mid-write.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use common::*;
use snapstore::{CloneOptions, CloneSource, Config, DirectoryExporter, Error, LocalFile, Snapshot};

fn config(name: &str) -> Config {
    Config {
        name: name.into(),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_full_disk_fails_clearly_and_loses_nothing() {
    let Some(small) = cow_dir("SNAPSTORE_TEST_SMALL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // ~96 MiB of data each: two fit in 256 MiB, a third does not.
    let src = vm_snapshot(&tmp.path().join("src"), 64 * MIB, 512 * MIB, 64 * MIB);
    let root = small.path().join("root");
    let store = LocalFile::open(&root).unwrap();
    let opts = snapstore::SaveOptions::default();
    store.create(config("a"), src.clone(), opts).await.unwrap();
    store.create(config("b"), src.clone(), opts).await.unwrap();
    let archive = tmp.path().join("a.tar");
    ok(&root, &["export", "a", "-o", archive.to_str().unwrap()]);

    let before = store_state(&root);
    let unchanged = |what: &str| {
        assert_eq!(store_state(&root), before, "{what} changed the store");
    };

    // Refused up front: the copies would not fit.
    let err = store
        .create(config("c"), src.clone(), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    unchanged("a save");
    let clone_dir = small.path().join("clone");
    let err = store
        .clone_to_dir(
            CloneSource::Ref("a".into()),
            clone_dir.clone(),
            CloneOptions {
                hardlink: false,
                require_cow: false,
                ..CloneOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(!clone_dir.exists());
    let export_dir = small.path().join("export");
    let err = store
        .export_to_dir("a", export_dir.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(!export_dir.exists());

    // Runs out mid-write: the archive's size is known only as it is read.
    let input = std::fs::File::open(&archive).unwrap();
    let err = store
        .import(Box::new(input), Some("c".into()), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(nix::errno::Errno::ENOSPC as i32),
        "{err}"
    );
    assert!(
        err.to_string().contains("/snapshot/staging/"),
        "names the file: {err}"
    );
    unchanged("an import");
    let out = snapstore(&root, &["import", archive.to_str().unwrap(), "--name", "c"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("No space left on device"), "{stderr}");
    unchanged("the import command");

    // What was there is whole, and the store still works once space is freed.
    for name in ["a", "b"] {
        let record = store.inspect(name).await.unwrap();
        let dir = root.join("snapshot/localfile").join(record.id());
        for (file, _) in file_sizes(&src) {
            assert!(
                same_file(&src.join(&file), &dir.join(&file)),
                "{name}/{file}"
            );
        }
    }
    assert!(store.fsck(false).await.unwrap().problems.is_empty());
    store.delete(&["b".into()], false).await.unwrap();
    let input = std::fs::File::open(&archive).unwrap();
    store
        .import(Box::new(input), Some("c".into()), None)
        .await
        .unwrap();
}
