//! The library API of the localfile store, on the root filesystem (ext4 here: no reflink, so
//! these also cover the hardlink and copy rungs). Every failure is checked to leave the store as
//! it was.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::Path;

use common::*;
use snapstore::{
    CloneMethod, CloneOptions, CloneSource, DirImportOptions, Direct, DirectoryExporter, Error,
    LocalFile, SaveMode, SaveOptions, Snapshot,
};

fn fixture() -> Fixture {
    Fixture::new(4 * MIB, 64 * MIB, 2 * MIB)
}

/// What the store's filesystem can do for a clone into `dir`, found by trying (the probe).
async fn capabilities(store: &LocalFile, dir: &Path) -> snapstore::Capabilities {
    store.probe(dir.to_path_buf()).await.unwrap()
}

#[tokio::test]
async fn save_list_inspect_delete() {
    let f = fixture();
    let report = f
        .store
        .create(config("base"), f.src.clone(), SaveOptions::default())
        .await
        .unwrap();
    let names: Vec<&str> = report.files.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["config.json", "cow.raw", "memory-range-0", "state.json"]
    );

    let data = f.root.join("snapshot/localfile").join(report.id.as_str());
    for name in &names {
        assert!(same_file(&f.src.join(name), &data.join(name)), "{name}");
        assert_eq!(
            mode(&data.join(name)),
            0o444,
            "{name} is read-only in the store"
        );
        assert_ne!(
            ino(&f.src.join(name)),
            ino(&data.join(name)),
            "save never hardlinks by default"
        );
    }

    let listed = f.store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    let rec = &listed[0];
    assert_eq!(rec.config.id, report.id.as_str());
    assert_eq!(rec.config.name, "base");
    assert_eq!(rec.size_bytes, 4 * MIB + 64 * MIB + 25 + 18);
    assert_eq!(rec.data_dir, data.display().to_string());
    assert!(!rec.pending);
    assert!(rec.last_accessed_at.is_some());

    for reference in [report.id.as_str(), "base", &report.id.as_str()[..3]] {
        assert_eq!(
            f.store.inspect(reference).await.unwrap().config.id,
            report.id.as_str()
        );
    }

    let deleted = f.store.delete(&["base".into()], false).await.unwrap();
    assert_eq!(deleted, std::slice::from_ref(&report.id));
    assert!(!data.exists());
    assert!(f.store.list().await.unwrap().is_empty());
    assert!(matches!(
        f.store.inspect("base").await,
        Err(Error::NotFound { .. })
    ));
    // The name is free again.
    f.save("base").await;
}

#[tokio::test]
async fn index_is_cocoon_shaped() {
    let f = fixture();
    let id = f.save("base").await;
    let text = std::fs::read_to_string(f.root.join("snapshot/db/snapshots.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(index["names"]["base"], id.as_str());
    let rec = &index["snapshots"][id.as_str()];
    for key in [
        "id",
        "name",
        "cpu",
        "memory",
        "created_at",
        "data_dir",
        "size_bytes",
        "last_accessed_at",
    ] {
        assert!(rec.get(key).is_some(), "{key} missing from {rec}");
    }
    assert!(
        rec.get("pending").is_none(),
        "pending is omitted when false"
    );
    assert!(rec.get("description").is_none(), "empty fields are omitted");
    let created = rec["created_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
}

#[tokio::test]
async fn duplicate_name_fails_and_changes_nothing() {
    let f = fixture();
    let id = f.save("base").await;
    let before = store_state(&f.root);
    let err = f
        .store
        .create(config("base"), f.src.clone(), SaveOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NameTaken { name, id: holder } if name == "base" && *holder == id),
        "{err:?}"
    );
    assert_eq!(store_state(&f.root), before);
}

#[tokio::test]
async fn bad_sources_fail_naming_the_path_and_leave_nothing() {
    let f = fixture();
    f.save("base").await;
    let before = store_state(&f.root);

    let missing = f.scratch("no-such-dir");
    let err = f
        .store
        .create(config("x"), missing.clone(), SaveOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-dir"), "{err}");

    let file = f.src.join("config.json");
    let err = f
        .store
        .create(config("x"), file.clone(), SaveOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotADirectory { path } if *path == file),
        "{err:?}"
    );

    assert_eq!(store_state(&f.root), before);
    // The name of the failed saves is free.
    f.save("x").await;
}

#[tokio::test]
async fn pending_records_are_never_listed_or_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("snapshot/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(
        db.join("snapshots.json"),
        r#"{"snapshots":{"PEND1234":{"id":"PEND1234","name":"p","created_at":"2026-07-01T10:00:00Z","data_dir":"","size_bytes":0,"pending":true}},"names":{"p":"PEND1234"}}"#,
    )
    .unwrap();
    let store = LocalFile::open(tmp.path()).unwrap();
    assert!(store.list().await.unwrap().is_empty());
    for reference in ["PEND1234", "p", "PEN"] {
        assert!(
            matches!(store.inspect(reference).await, Err(Error::NotFound { .. })),
            "{reference}"
        );
    }
    // Its name is still held while it is pending.
    let src = vm_snapshot(&tmp.path().join("src"), MIB, MIB, 4096);
    let err = store
        .create(config("p"), src, SaveOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }));
}

#[tokio::test]
async fn ambiguous_prefix_is_an_error_naming_the_ref() {
    // Two complete snapshots whose IDs share a prefix, in an index as cocoon writes one.
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("snapshot/db");
    std::fs::create_dir_all(&db).unwrap();
    let record = |id: &str| {
        format!(
            r#""{id}":{{"id":"{id}","name":"n-{id}","created_at":"2026-07-01T10:00:00Z","data_dir":"","size_bytes":0}}"#
        )
    };
    std::fs::write(
        db.join("snapshots.json"),
        format!(
            r#"{{"snapshots":{{{},{}}},"names":{{"n-ABCD1111":"ABCD1111","n-ABCD2222":"ABCD2222"}}}}"#,
            record("ABCD1111"),
            record("ABCD2222")
        ),
    )
    .unwrap();
    let store = LocalFile::open(tmp.path()).unwrap();
    let before = store_state(tmp.path());

    let err = store.inspect("ABC").await.unwrap_err();
    match &err {
        Error::Ambiguous { reference, matches } => {
            assert_eq!(reference, "ABC");
            let ids: Vec<&str> = matches.iter().map(|id| id.as_str()).collect();
            assert_eq!(ids, ["ABCD1111", "ABCD2222"]);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    assert!(
        err.to_string().contains("\"ABC\"") && err.to_string().contains("ambiguous"),
        "{err}"
    );
    assert_eq!(store.inspect("ABCD1").await.unwrap().config.id, "ABCD1111");
    assert!(matches!(
        store.delete(&["ABC".into()], false).await,
        Err(Error::Ambiguous { .. })
    ));
    assert_eq!(
        store_state(tmp.path()),
        before,
        "an ambiguous rm deletes nothing"
    );

    let err = store.inspect("ZZZZZZ-none").await.unwrap_err();
    assert!(err.to_string().contains("ZZZZZZ-none"), "{err}");
}

#[tokio::test]
async fn rm_is_all_or_nothing() {
    let f = fixture();
    f.save("a").await;
    f.save("b").await;
    let before = store_state(&f.root);
    let err = f
        .store
        .delete(&["a".into(), "nope".into()], false)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::NotFound { reference } if reference == "nope"));
    assert_eq!(store_state(&f.root), before);
    let deleted = f
        .store
        .delete(&["a".into(), "a".into(), "b".into()], false)
        .await
        .unwrap();
    assert_eq!(deleted.len(), 2, "duplicates are resolved once");
}

#[tokio::test]
async fn a_lease_blocks_delete_until_dropped_unless_forced() {
    let f = fixture();
    let id = f.save("base").await;
    let (dir, cfg, lease) = f.store.data_dir("base").await.unwrap();
    assert_eq!(cfg.name, "base");
    assert_eq!(lease.id(), &id);
    assert!(dir.join("cow.raw").exists());

    let before = store_state(&f.root);
    let err = f.store.delete(&["base".into()], false).await.unwrap_err();
    assert!(
        matches!(&err, Error::InUse { id: busy } if *busy == id),
        "{err:?}"
    );
    assert!(err.to_string().contains("in use"));
    assert_eq!(store_state(&f.root), before);

    drop(lease);
    let (_dir, _cfg, lease) = f.store.data_dir("base").await.unwrap();
    assert_eq!(f.store.delete(&["base".into()], true).await.unwrap(), [id]);
    drop(lease);
}

#[tokio::test]
async fn uses_are_recorded_exactly_and_never_rewrite_the_index() {
    let f = fixture();
    let id = f.save("base").await;
    let index_path = f.root.join("snapshot/db/snapshots.json");
    let saved = f
        .store
        .inspect("base")
        .await
        .unwrap()
        .last_accessed_at
        .unwrap();
    let before = std::fs::read(&index_path).unwrap();

    let run = f.scratch("run");
    clone_ref(&f.store, "base", run, CloneOptions::default())
        .await
        .unwrap();
    let cloned = f
        .store
        .inspect("base")
        .await
        .unwrap()
        .last_accessed_at
        .unwrap();
    drop(f.store.data_dir("base").await.unwrap());
    let leased = f
        .store
        .inspect("base")
        .await
        .unwrap()
        .last_accessed_at
        .unwrap();
    assert!(
        saved < cloned && cloned < leased,
        "{saved} {cloned} {leased}"
    );
    // The use clock is the lease file's mtime, as the kernel keeps it.
    let lease = f.root.join(format!("snapshot/localfile/{id}.lease"));
    let mtime = std::fs::metadata(&lease).unwrap().modified().unwrap();
    assert_eq!(chrono::DateTime::<chrono::Utc>::from(mtime), leased);
    assert_eq!(
        std::fs::read(&index_path).unwrap(),
        before,
        "no use rewrote the index"
    );
}

#[tokio::test]
async fn clone_out_links_memory_and_copies_disks_with_holes() {
    let f = fixture();
    f.save("base").await;
    let run = f.scratch("run");
    let caps = capabilities(&f.store, &f.scratch("")).await;
    let report = clone_ref(&f.store, "base", run.clone(), CloneOptions::default())
        .await
        .unwrap();
    assert_eq!(report.config.name, "base");
    assert!(
        !run.join("snapshot.json").exists(),
        "a clone carries data files only"
    );
    let data = f.store.layout().data_dir(
        &f.store
            .inspect("base")
            .await
            .unwrap()
            .config
            .id
            .clone()
            .try_into()
            .unwrap(),
    );
    for file in &report.files {
        let (src, dst) = (data.join(&file.name), run.join(&file.name));
        assert!(same_file(&src, &dst), "{}", file.name);
        assert!(
            blocks(&dst) <= blocks(&src),
            "{} allocates no more than its source",
            file.name
        );
        // The rung the probe says this filesystem gives each class, whatever it is.
        let want = if file.name == "memory-range-0" {
            caps.memory_files
        } else {
            caps.other_files
        };
        assert_eq!(file.method, want, "{}", file.name);
        assert_eq!(
            ino(&src) == ino(&dst),
            want == CloneMethod::Hardlink,
            "{}",
            file.name
        );
    }
    // A sparse disk stays sparse: 64 MiB apparent, 2 MiB of data.
    assert!(blocks(&run.join("cow.raw")) * 512 < 4 * MIB);

    let no_link = f.scratch("run-nolink");
    let opts = CloneOptions {
        hardlink: false,
        require_cow: false,
        sync: true,
    };
    let report = clone_ref(&f.store, "base", no_link.clone(), opts)
        .await
        .unwrap();
    assert!(
        report
            .files
            .iter()
            .all(|r| r.method != CloneMethod::Hardlink)
    );
    assert_ne!(
        ino(&no_link.join("memory-range-0")),
        ino(&data.join("memory-range-0"))
    );
}

#[tokio::test]
async fn clone_into_a_non_empty_dir_fails_and_touches_nothing() {
    let f = fixture();
    f.save("base").await;
    let run = f.scratch("busy");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("keep"), b"mine").unwrap();
    let err = clone_ref(&f.store, "base", run.clone(), CloneOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::TargetNotEmpty { path } if *path == run));
    assert_eq!(tree(&run), ["keep"]);
    let err = f
        .store
        .export_to_dir("base", run.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TargetNotEmpty { .. }));
    assert_eq!(tree(&run), ["keep"]);
}

#[tokio::test]
async fn require_cow_without_reflink_fails_and_leaves_nothing() {
    let f = fixture();
    f.save("base").await;
    if capabilities(&f.store, &f.scratch(""))
        .await
        .reflink_from_store
    {
        eprintln!("SKIPPED: the temp dir reflinks, as the probe found: no copy to refuse");
        return;
    }
    let run = f.scratch("cow-only");
    let opts = CloneOptions {
        hardlink: true,
        require_cow: true,
        ..CloneOptions::default()
    };
    let err = clone_ref(&f.store, "base", run.clone(), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CowRequired { .. }), "{err:?}");
    assert!(!run.exists(), "the dir the clone made is gone too");
    let before = store_state(&f.root);
    let save = SaveOptions {
        mode: SaveMode::Clone,
        require_cow: true,
        ..SaveOptions::default()
    };
    assert!(matches!(
        f.store.create(config("c"), f.src.clone(), save).await,
        Err(Error::CowRequired { .. })
    ));
    assert_eq!(store_state(&f.root), before);
}

#[tokio::test]
async fn export_then_import_from_dir_round_trips() {
    let f = fixture();
    f.save("base").await;
    let out = f.scratch("export");
    let report = f.store.export_to_dir("base", out.clone()).await.unwrap();
    assert!(
        report
            .files
            .iter()
            .all(|r| r.method != CloneMethod::Hardlink),
        "an export stands alone"
    );
    let envelope = snapstore::read_envelope(&out).unwrap();
    assert_eq!(envelope.version, 1);
    assert_eq!(envelope.config.name, "base");
    assert_eq!(
        envelope.files.as_deref().unwrap(),
        ["config.json", "cow.raw", "memory-range-0", "state.json"]
    );
    for name in envelope.files.as_deref().unwrap() {
        assert!(same_file(&f.src.join(name), &out.join(name)), "{name}");
        assert_eq!(
            std::fs::metadata(out.join(name)).unwrap().nlink(),
            1,
            "{name}"
        );
    }

    let imported = f
        .store
        .import_from_dir(
            out.clone(),
            DirImportOptions {
                name: Some("copy".into()),
                description: Some("imported".into()),
            },
        )
        .await
        .unwrap();
    let rec = f.store.inspect("copy").await.unwrap();
    assert_eq!(rec.config.id, imported.id.as_str());
    assert_eq!(rec.config.description, "imported");
    assert_eq!(rec.config.cpu, 2);
    let data = f.root.join("snapshot/localfile").join(imported.id.as_str());
    assert!(
        !data.join("snapshot.json").exists(),
        "the envelope is not a data file"
    );
    assert!(same_file(&f.src.join("cow.raw"), &data.join("cow.raw")));

    // The same dir again without a new name: the envelope's name is taken.
    let before = store_state(&f.root);
    assert!(matches!(
        f.store
            .import_from_dir(out.clone(), DirImportOptions::default())
            .await,
        Err(Error::NameTaken { .. })
    ));
    assert_eq!(store_state(&f.root), before);

    // And the exported dir clones straight into a run dir.
    let run = f.scratch("from-dir");
    let cloned = f
        .store
        .clone_to_dir(CloneSource::Dir(out), run.clone(), CloneOptions::default())
        .await
        .unwrap();
    assert_eq!(cloned.config.name, "base");
    assert_eq!(
        tree(&run),
        ["config.json", "cow.raw", "memory-range-0", "state.json"]
    );
}

#[tokio::test]
async fn bad_envelopes_fail_clearly_and_leave_nothing() {
    let f = fixture();
    f.save("base").await;
    let before = store_state(&f.root);
    let dir = f.scratch("bad-envelope");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("mem"), b"m").unwrap();

    let err = f
        .store
        .import_from_dir(dir.clone(), DirImportOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::EnvelopeMissing { dir: d } if *d == dir),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad-envelope"));

    for (text, check) in [
        (r#"{"config":{"name":"e"},"version":2}"#, "version 2"),
        (
            r#"{"config":{"name":"e"},"version":1,"files":["mem","disk.raw"]}"#,
            "disk.raw",
        ),
        (
            r#"{"config":{"name":"e"},"version":1,"files":["../mem"]}"#,
            "../mem",
        ),
        (r#"{"config": oops"#, "malformed"),
    ] {
        std::fs::write(dir.join("snapshot.json"), text).unwrap();
        let err = f
            .store
            .import_from_dir(dir.clone(), DirImportOptions::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(check),
            "{err} should mention {check}"
        );
        let run = f.scratch("bad-envelope-run");
        assert!(
            f.store
                .clone_to_dir(
                    CloneSource::Dir(dir.clone()),
                    run.clone(),
                    CloneOptions::default()
                )
                .await
                .is_err()
        );
        assert!(!run.exists());
    }
    assert_eq!(store_state(&f.root), before);
}

#[tokio::test]
async fn corrupt_index_is_refused_and_never_replaced() {
    let f = fixture();
    f.save("base").await;
    let index = f.root.join("snapshot/db/snapshots.json");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&index, &bytes).unwrap();

    let is_corrupt = |e: Error| matches!(e, Error::CorruptIndex { path, .. } if path.ends_with("snapshots.json"));
    assert!(is_corrupt(f.store.list().await.unwrap_err()));
    assert!(is_corrupt(f.store.inspect("base").await.unwrap_err()));
    assert!(is_corrupt(
        f.store.delete(&["base".into()], true).await.unwrap_err()
    ));
    assert!(is_corrupt(
        f.store
            .create(config("n"), f.src.clone(), SaveOptions::default())
            .await
            .unwrap_err()
    ));
    assert_eq!(
        std::fs::read(&index).unwrap(),
        bytes,
        "the corrupt index is untouched"
    );
    assert_eq!(tree(&f.root.join("snapshot/staging")), Vec::<String>::new());
}

#[tokio::test]
async fn save_move_consumes_the_source_and_link_shares_memory() {
    let f = fixture();
    let moved_src = vm_snapshot(&f.scratch("to-move"), 2 * MIB, 8 * MIB, MIB);
    let save = SaveOptions {
        mode: SaveMode::Move,
        require_cow: false,
        ..SaveOptions::default()
    };
    let report = f
        .store
        .create(config("moved"), moved_src.clone(), save)
        .await
        .unwrap();
    assert!(report.files.iter().all(|r| r.method == CloneMethod::Move));
    assert_eq!(
        tree(&moved_src),
        Vec::<String>::new(),
        "the source files were moved in"
    );

    let save = SaveOptions {
        mode: SaveMode::Link,
        require_cow: false,
        ..SaveOptions::default()
    };
    let report = f
        .store
        .create(config("linked"), f.src.clone(), save)
        .await
        .unwrap();
    let data = f.root.join("snapshot/localfile").join(report.id.as_str());
    let caps = capabilities(&f.store, &f.src).await;
    {
        let mem = report
            .files
            .iter()
            .find(|r| r.name == "memory-range-0")
            .unwrap();
        assert_eq!(mem.method, caps.memory_files);
        assert_eq!(
            ino(&f.src.join("memory-range-0")) == ino(&data.join("memory-range-0")),
            caps.memory_files == CloneMethod::Hardlink
        );
        assert_ne!(
            ino(&f.src.join("cow.raw")),
            ino(&data.join("cow.raw")),
            "disks are never linked"
        );
    }
}

#[tokio::test]
async fn a_move_refused_up_front_leaves_the_source_alone() {
    let f = fixture();
    f.save("taken").await;
    let src = vm_snapshot(&f.scratch("to-move"), MIB, MIB, 4096);
    let before = tree(&src);
    let save = SaveOptions {
        mode: SaveMode::Move,
        require_cow: false,
        ..SaveOptions::default()
    };
    // The name is taken: fails before anything moves.
    assert!(
        f.store
            .create(config("taken"), src.clone(), save)
            .await
            .is_err()
    );
    assert_eq!(tree(&src), before);
}

#[tokio::test]
async fn entries_that_hold_no_data_are_skipped_and_listed() {
    let f = fixture();
    std::fs::create_dir(f.src.join("sub")).unwrap();
    nix::unistd::mkfifo(
        &f.src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(f.src.join("sock")).unwrap();
    std::fs::write(
        f.src.join("snapshot.json"),
        r#"{"config":{"name":"x"},"version":1}"#,
    )
    .unwrap();
    let report = f
        .store
        .create(config("base"), f.src.clone(), SaveOptions::default())
        .await
        .unwrap();
    assert_eq!(
        skipped(&report),
        [("fifo", "fifo"), ("sock", "socket"), ("sub", "directory")]
    );
    assert!(report.files.iter().all(|r| r.name != "snapshot.json"));
}

/// A disk image outside the source, and `overlay.qcow2` in it a symlink to it, as a VM dir in
/// the wild has it; the image's path.
fn symlinked_disk(f: &Fixture) -> std::path::PathBuf {
    let images = f.src.parent().unwrap().join("images");
    std::fs::create_dir(&images).unwrap();
    let target = images.join("x.qcow2");
    std::fs::write(&target, b"the real disk").unwrap();
    std::os::unix::fs::symlink(&target, f.src.join("overlay.qcow2")).unwrap();
    target
}

/// The entries a save report says it skipped, with what they are.
fn skipped(report: &snapstore::CreateReport) -> Vec<(&str, &str)> {
    report
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.kind))
        .collect()
}

/// Saves `f.src` with `opts`; expects [`Error::UnsupportedEntries`] naming `names`, and that
/// nothing was stored and nothing of the source changed.
async fn save_refused(f: &Fixture, opts: SaveOptions, names: &[&str]) -> String {
    let before = store_state(&f.root);
    let src_before = tree(&f.src);
    let err = f
        .store
        .create(config("base"), f.src.clone(), opts)
        .await
        .unwrap_err();
    let Error::UnsupportedEntries { dir, entries } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(dir, &f.src);
    let named: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(named, names, "{err}");
    assert_eq!(store_state(&f.root), before, "nothing stored: {err}");
    assert_eq!(tree(&f.root.join("snapshot/staging")), Vec::<String>::new());
    assert_eq!(tree(&f.src), src_before, "the source is untouched: {err}");
    let text = err.to_string();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    text
}

#[tokio::test]
async fn entries_with_data_the_snapshot_cannot_carry_fail_the_save() {
    use std::os::unix::ffi::OsStrExt;
    // A symlinked disk image, as a VM dir in the wild has it.
    let f = fixture();
    symlinked_disk(&f);
    let text = save_refused(&f, SaveOptions::default(), &["overlay.qcow2"]).await;
    assert!(text.contains("\"overlay.qcow2\" (symlink)"), "{text}");
    assert!(text.contains("--dereference"), "{text}");

    // A directory with something in it, and a file whose name is not UTF-8.
    let f = fixture();
    std::fs::create_dir(f.src.join("vm")).unwrap();
    std::fs::write(f.src.join("vm/disk.raw"), b"data").unwrap();
    let raw = std::ffi::OsStr::from_bytes(b"disk\xff.raw");
    std::fs::write(f.src.join(raw), b"data").unwrap();
    let text = save_refused(&f, SaveOptions::default(), &["disk\\xff.raw", "vm"]).await;
    assert!(text.contains("disk\\\\xff.raw"), "shown escaped: {text}");
    assert!(!text.contains('\u{fffd}'), "{text}");
}

#[tokio::test]
async fn dereference_stores_a_links_target_and_skip_unsupported_lists_the_loss() {
    use std::os::unix::ffi::OsStrExt;
    let f = fixture();
    let target = symlinked_disk(&f);
    std::os::unix::fs::symlink("nowhere", f.src.join("dangling")).unwrap();
    std::fs::create_dir(f.src.join("vm")).unwrap();
    std::fs::write(f.src.join("vm/disk.raw"), b"data").unwrap();
    std::fs::write(f.src.join(std::ffi::OsStr::from_bytes(b"a\xff")), b"x").unwrap();

    // --dereference alone: the dangling link, the dir and the name still fail it.
    let deref = SaveOptions {
        dereference: true,
        ..SaveOptions::default()
    };
    save_refused(&f, deref, &["a\\xff", "dangling", "vm"]).await;

    // Both, as a move: the target's content is stored, the link (not the target) is consumed,
    // and what was left out is listed.
    let opts = SaveOptions {
        mode: SaveMode::Move,
        dereference: true,
        skip_unsupported: true,
        ..SaveOptions::default()
    };
    let report = f
        .store
        .create(config("base"), f.src.clone(), opts)
        .await
        .unwrap();
    assert_eq!(
        skipped(&report),
        [
            ("a\\xff", "name not UTF-8"),
            ("dangling", "symlink to no regular file"),
            ("vm", "directory")
        ]
    );
    let stored = f.store.layout().data_dir(&report.id).join("overlay.qcow2");
    let meta = std::fs::symlink_metadata(&stored).unwrap();
    assert!(meta.is_file(), "the store holds a file, not a link");
    assert_ne!(
        ino(&stored),
        ino(&target),
        "never a hardlink of someone else's file"
    );
    assert_eq!(std::fs::read(&stored).unwrap(), b"the real disk");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"the real disk",
        "the target stays"
    );
    assert!(
        std::fs::symlink_metadata(f.src.join("overlay.qcow2")).is_err(),
        "the link went"
    );
    assert!(f.src.join("vm/disk.raw").exists(), "what was skipped stays");
}

#[tokio::test]
async fn concurrent_saves_and_deletes_keep_the_index_whole() {
    let f = fixture();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = f.store.clone();
        let src = f.src.clone();
        tasks.push(tokio::spawn(async move {
            let id = store
                .create(config(&format!("s{i}")), src, SaveOptions::default())
                .await
                .unwrap()
                .id;
            if i % 2 == 0 {
                store.delete(&[id.to_string()], false).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let names = f.listed().await;
    assert_eq!(names.len(), 4);
    for i in (1..8).step_by(2) {
        assert!(names.contains(&format!("s{i}")), "{names:?}");
    }
    assert_eq!(tree(&f.root.join("snapshot/staging")), Vec::<String>::new());
}

use std::os::unix::fs::MetadataExt;

#[tokio::test]
async fn progress_counts_the_data_bytes_that_copies_and_tar_move() {
    let f = fixture();
    let data: u64 = file_sizes(&f.src)
        .keys()
        .flat_map(|name| data_segments(&f.src.join(name)))
        .map(|(_, len)| len)
        .sum();
    let saving = snapstore::Progress::new();
    f.store
        .with_progress(saving.clone())
        .create(config("a"), f.src.clone(), SaveOptions::default())
        .await
        .unwrap();
    // Copies count their bytes, holes skipped; reflinks copy none.
    let copied = if capabilities(&f.store, &f.src).await.reflink_from_store {
        0
    } else {
        data
    };
    assert_eq!(saving.done(), copied);

    let exporting = snapstore::Progress::new();
    let archive = f.scratch("a.tar");
    let out = Box::new(std::fs::File::create(&archive).unwrap());
    f.store
        .with_progress(exporting.clone())
        .export_to(
            "a",
            snapstore::ExportOptions::default(),
            out,
            archive.clone(),
        )
        .await
        .unwrap();
    assert_eq!((exporting.done(), exporting.total()), (data, data));

    let importing = snapstore::Progress::new();
    let input = Box::new(std::fs::File::open(&archive).unwrap());
    let opts = snapstore::ImportOptions {
        name: Some("b".into()),
        ..snapstore::ImportOptions::default()
    };
    f.store
        .with_progress(importing.clone())
        .import_with(input, opts)
        .await
        .unwrap();
    assert_eq!(importing.done(), data);
}
