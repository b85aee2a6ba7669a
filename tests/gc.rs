//! gc and fsck through the library and the CLI: what crashes leave behind is removed, live work
//! and intact snapshots are not, and a lost or corrupt index comes back from the sidecars.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::*;
use serde_json::{Value, json};
use snapstore::{Config, GcOptions, GcOrchestrator, Leftover, ProblemKind, SaveOptions, Snapshot};

fn fixture() -> Fixture {
    Fixture::new(2 * MIB, 16 * MIB, MIB)
}

/// Where the gc tests look.
impl Fixture {
    fn data(&self) -> PathBuf {
        self.root.join("snapshot/localfile")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("snapshot/db/snapshots.json")
    }

    fn index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.index_path()).unwrap()).unwrap()
    }

    /// Adds a pending record, as a creator (ours or cocoon's) writes one before any data.
    fn add_pending(&self, id: &str, created_at: &str) {
        let mut index = self.index();
        index["snapshots"][id] = json!({
            "id": id, "name": format!("p-{id}"), "created_at": created_at,
            "data_dir": self.data().join(id), "size_bytes": 0, "pending": true,
        });
        index["names"][format!("p-{id}")] = json!(id);
        std::fs::write(self.index_path(), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.index()["names"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }
}

/// A process holding an exclusive flock on `path`, as a live creator holds its lease. `-o`
/// keeps the lock out of `sleep`, so killing flock(1) frees it.
fn hold_lock(path: &Path) -> KillOnDrop {
    let holder = KillOnDrop(
        Command::new("flock")
            .args(["-x", "-o", path.to_str().unwrap(), "sleep", "60"])
            .spawn()
            .unwrap(),
    );
    // flock(1) takes the lock before it runs sleep; wait until it shows.
    for _ in 0..200 {
        let free = Command::new("flock")
            .args(["-n", "-x", path.to_str().unwrap(), "true"])
            .status()
            .unwrap()
            .success();
        if !free {
            return holder;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("flock never took {}", path.display());
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn touch(path: &Path) {
    std::fs::write(path, b"x").unwrap();
}

const LONG_AGO: &str = "2026-01-01T00:00:00Z";

#[tokio::test]
async fn gc_removes_what_crashes_leave_and_keeps_live_work() {
    let f = fixture();
    let keep = f.save("keep").await;
    let data = f.data();
    let staging = f.root.join("snapshot/staging");

    // A creator that died mid-save: pending record, free lease file, staging and data dirs.
    f.add_pending("DEAD0001", &chrono::Utc::now().to_rfc3339());
    touch(&data.join("DEAD0001.lease"));
    std::fs::create_dir(staging.join("DEAD0001")).unwrap();
    std::fs::create_dir(data.join("DEAD0001")).unwrap();
    touch(&data.join("DEAD0001/mem"));
    // A creator still at work: its lease is held by a live process.
    f.add_pending("LIVE0001", &chrono::Utc::now().to_rfc3339());
    std::fs::create_dir(staging.join("LIVE0001")).unwrap();
    let _live = hold_lock(&data.join("LIVE0001.lease"));
    // A live creator between taking its lease and claiming its name: no record yet.
    std::fs::create_dir(staging.join("LIVE0002")).unwrap();
    let _early = hold_lock(&data.join("LIVE0002.lease"));
    // Pending records with no lease file at all (cocoon's): one old, one recent.
    f.add_pending("COCOONOLD", LONG_AGO);
    f.add_pending("COCOONNEW", &chrono::Utc::now().to_rfc3339());
    // Leftovers without any record.
    std::fs::create_dir(data.join("ORPHAN01")).unwrap();
    touch(&data.join("ORPHAN01/disk"));
    std::fs::create_dir(staging.join("ORPHAN02")).unwrap();
    touch(&data.join("ORPHAN03.lease"));
    touch(&data.join("ORPHAN04.json"));
    touch(&data.join(".tmp-sidecar"));
    touch(&f.root.join("snapshot/db/.tmp-index"));

    let before = store_state(&f.root);
    let dry = f
        .store
        .gc(GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(store_state(&f.root), before, "a dry run changes nothing");

    let report = f.store.gc(GcOptions::default()).await.unwrap();
    assert_eq!(report.removed, dry.removed, "the dry run said what gc does");
    let kinds = |kind: Leftover| -> Vec<String> {
        report
            .removed
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(kinds(Leftover::StalePending), ["COCOONOLD", "DEAD0001"]);
    assert_eq!(kinds(Leftover::OrphanDataDir), ["ORPHAN01"]);
    assert_eq!(kinds(Leftover::StagingDir), ["ORPHAN02"]);
    assert_eq!(kinds(Leftover::OrphanLease), ["ORPHAN03.lease"]);
    assert_eq!(kinds(Leftover::OrphanSidecar), ["ORPHAN04.json"]);
    assert_eq!(kinds(Leftover::TempFile).len(), 2);

    assert_eq!(f.names(), ["keep", "p-COCOONNEW", "p-LIVE0001"]);
    let mut left = tree(&f.root.join("snapshot"));
    left.retain(|p| !p.starts_with(&format!("localfile/{keep}")));
    assert_eq!(
        left,
        [
            "db",
            "db/snapshots.json",
            "db/snapshots.lock",
            "localfile",
            "localfile/LIVE0001.lease",
            "localfile/LIVE0002.lease",
            "staging",
            "staging/LIVE0001",
            "staging/LIVE0002",
        ]
    );
    assert!(f.store.inspect("keep").await.is_ok());

    // Once the live creators are gone, their leftovers go too.
    drop((_live, _early));
    let report = f.store.gc(GcOptions::default()).await.unwrap();
    assert_eq!(report.removed.len(), 3, "{report:?}");
    assert_eq!(f.names(), ["keep", "p-COCOONNEW"]);
}

#[tokio::test]
async fn eviction_follows_the_true_order_of_use_within_a_second() {
    // Uses recorded to the minute made three snapshots used in turn look equally old, and gc
    // evicted the one used last.
    let f = fixture();
    let ids = [f.save("a").await, f.save("b").await, f.save("c").await];
    let size = f.store.inspect("a").await.unwrap().size_bytes;
    for name in ["c", "a", "b"] {
        drop(snapstore::Direct::data_dir(&f.store, name).await.unwrap());
    }
    let opts = GcOptions {
        max_bytes: Some(size),
        ..GcOptions::default()
    };
    let report = f.store.gc(opts).await.unwrap();
    let evicted: Vec<_> = report.evicted.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(evicted, ["c", "a"], "least recently used first: {report:?}");
    assert_eq!(f.listed().await, ["b"]);
    // The index gc wrote anyway carries the use clock of what is left.
    let b = f.index()["snapshots"][ids[1].as_str()]["last_accessed_at"].clone();
    let used = f
        .store
        .inspect("b")
        .await
        .unwrap()
        .last_accessed_at
        .unwrap();
    // Compared as times: the index spells them as Go's RFC3339Nano does, trailing zeros of the
    // fraction dropped (".21437608Z", where chrono's AutoSi writes ".214376080Z").
    let recorded = chrono::DateTime::parse_from_rfc3339(b.as_str().unwrap()).unwrap();
    assert_eq!(recorded, used);
}

#[tokio::test]
async fn max_bytes_evicts_least_recently_used_snapshots_not_in_use() {
    let f = fixture();
    let a = f.save("a").await;
    let b = f.save("b").await;
    let c = f.save("c").await;
    let size = f.store.inspect("a").await.unwrap().size_bytes;
    // Last used: b first, then c, then a; b is in use now, in another process.
    let mut index: Value = f.index();
    for (id, used) in [(&b, "06:00"), (&c, "07:00"), (&a, "09:00")] {
        index["snapshots"][id.as_str()]["last_accessed_at"] =
            format!("2026-01-01T{used}:00Z").into();
    }
    std::fs::write(f.index_path(), serde_json::to_vec(&index).unwrap()).unwrap();
    let lease_b = hold_lock(&f.data().join(format!("{b}.lease")));

    let opts = GcOptions {
        max_bytes: Some(size),
        ..GcOptions::default()
    };
    let report = f.store.gc(opts).await.unwrap();
    let evicted: Vec<_> = report.evicted.iter().map(|e| e.id.clone()).collect();
    assert_eq!(evicted, [c.clone(), a.clone()]);
    assert_eq!(report.in_use, std::slice::from_ref(&b));
    assert_eq!(report.apparent_bytes, size);
    assert_eq!(f.listed().await, ["b"]);
    for gone in [&a, &c] {
        assert!(!f.data().join(gone.as_str()).exists());
        assert!(!f.data().join(format!("{gone}.json")).exists());
    }
    drop(lease_b);
}

#[tokio::test]
async fn register_gc_exposes_the_image_blobs_snapshots_use() {
    let f = fixture();
    let mut config = Config {
        name: "with-blobs".into(),
        ..Config::default()
    };
    for blob in ["sha256:aa", "sha256:bb"] {
        config
            .image_blob_ids
            .insert(blob.into(), Default::default());
    }
    f.store
        .create(config, f.src.clone(), SaveOptions::default())
        .await
        .unwrap();
    f.save("plain").await;
    std::fs::create_dir(f.data().join("ORPHAN01")).unwrap();

    let mut gc = GcOrchestrator::new();
    f.store.register_gc(&mut gc);
    let blobs: Vec<String> = gc.used_blob_ids().unwrap().into_iter().collect();
    assert_eq!(blobs, ["sha256:aa", "sha256:bb"]);
    let reports = gc.run(&GcOptions::default()).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].0, "snapshot");
    assert_eq!(reports[0].1.removed[0].kind, Leftover::OrphanDataDir);
}

#[tokio::test]
async fn fsck_is_clean_on_a_healthy_store_and_names_each_broken_file() {
    let f = fixture();
    let a = f.save("a").await;
    let b = f.save("b").await;
    let c = f.save("c").await;
    let report = f.store.fsck(false).await.unwrap();
    assert_eq!(report.checked, 3);
    assert!(report.problems.is_empty(), "{report:?}");

    // a: one file shrunk, one gone; b: its data dir gone; c: its sidecar gone.
    let a_dir = f.data().join(a.as_str());
    std::fs::OpenOptions::new()
        .write(true)
        .open(a_dir.join("cow.raw"))
        .unwrap()
        .set_len(8192)
        .unwrap();
    std::fs::remove_file(a_dir.join("config.json")).unwrap();
    std::fs::remove_dir_all(f.data().join(b.as_str())).unwrap();
    std::fs::remove_file(f.data().join(format!("{c}.json"))).unwrap();

    let index_before = std::fs::read(f.index_path()).unwrap();
    let report = f.store.fsck(false).await.unwrap();
    let mut found: Vec<(ProblemKind, String, Option<String>)> = report
        .problems
        .iter()
        .map(|p| (p.kind, p.id.as_ref().unwrap().to_string(), p.file.clone()))
        .collect();
    found.sort_by_key(|p| (p.1.clone(), p.2.clone()));
    let mut expected = vec![
        (
            ProblemKind::FileMissing,
            a.to_string(),
            Some("config.json".into()),
        ),
        (
            ProblemKind::WrongSize,
            a.to_string(),
            Some("cow.raw".into()),
        ),
        (ProblemKind::RecordWithoutData, b.to_string(), None),
        (ProblemKind::SidecarMissing, c.to_string(), None),
    ];
    expected.sort_by_key(|p| (p.1.clone(), p.2.clone()));
    assert_eq!(found, expected);
    assert!(report.problems.iter().all(|p| !p.repaired));
    assert_eq!(std::fs::read(f.index_path()).unwrap(), index_before);

    let report = f.store.fsck(true).await.unwrap();
    let mut repaired: Vec<String> = report
        .problems
        .iter()
        .filter(|p| p.repaired)
        .map(|p| p.kind.as_str().to_string())
        .collect();
    repaired.sort();
    assert_eq!(repaired, ["record without data", "sidecar missing"]);
    assert_eq!(
        report.unrepaired().count(),
        2,
        "a's broken files stay reported"
    );
    assert!(f.data().join(format!("{c}.json")).exists());
    assert!(f.store.inspect(b.as_str()).await.is_err());
    let report = f.store.fsck(false).await.unwrap();
    assert_eq!(report.problems.len(), 2, "{report:?}");
}

#[tokio::test]
async fn fsck_repair_rebuilds_a_corrupt_index_and_keeps_the_corrupt_file() {
    let f = fixture();
    let a = f.save("a").await;
    let b = f.save("b").await;
    let mut corrupt = std::fs::read(f.index_path()).unwrap();
    corrupt.truncate(corrupt.len() / 3);
    std::fs::write(f.index_path(), &corrupt).unwrap();

    let report = f.store.fsck(false).await.unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::CorruptIndex);
    assert!(!report.problems[0].repaired);
    assert_eq!(std::fs::read(f.index_path()).unwrap(), corrupt);
    // gc refuses a store whose index does not parse.
    assert!(f.store.gc(GcOptions::default()).await.is_err());

    let report = f.store.fsck(true).await.unwrap();
    assert_eq!(report.unrepaired().count(), 0, "{report:?}");
    let kept = report.kept_corrupt_index.unwrap();
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        corrupt,
        "the corrupt file is kept"
    );
    let mut ids: Vec<String> = f
        .store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{}={}", r.config.name, r.id()))
        .collect();
    ids.sort();
    assert_eq!(ids, [format!("a={a}"), format!("b={b}")]);
    assert!(f.store.fsck(false).await.unwrap().problems.is_empty());
}

#[tokio::test]
async fn a_lost_index_is_kept_from_gc_and_rebuilt_by_fsck() {
    let f = fixture();
    let a = f.save("a").await;
    std::fs::remove_file(f.index_path()).unwrap();
    let report = f.store.gc(GcOptions::default()).await.unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(report.kept_for_fsck, [f.data().join(a.as_str())]);
    assert!(f.data().join(format!("{a}.lease")).exists());

    let report = f.store.fsck(true).await.unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::DataWithoutRecord);
    assert!(report.problems[0].repaired);
    let record = f.store.inspect("a").await.unwrap();
    assert_eq!(record.id(), a.as_str());
    assert!(!record.pending);
}

#[test]
fn cli_gc_and_fsck_report_and_exit_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = vm_snapshot(&tmp.path().join("src"), MIB, 4 * MIB, 64 * 1024);
    ok(
        &root,
        &["save", "--from-dir", src.to_str().unwrap(), "--name", "a"],
    );
    std::fs::create_dir(root.join("snapshot/localfile/ORPHAN01")).unwrap();

    let dry: Value =
        serde_json::from_str(&ok(&root, &["gc", "--dry-run", "--json", "--grace", "1h"])).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed"][0]["kind"], "orphan-data-dir");
    assert!(root.join("snapshot/localfile/ORPHAN01").exists());
    let text = ok(&root, &["gc"]);
    assert!(text.contains("removed orphan data dir"), "{text}");
    assert!(!root.join("snapshot/localfile/ORPHAN01").exists());
    let usage = snapstore(&root, &["gc", "--grace", "soon"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("soon"));

    assert!(ok(&root, &["fsck"]).is_empty());
    let sidecars: Vec<_> = std::fs::read_dir(root.join("snapshot/localfile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    std::fs::remove_file(&sidecars[0]).unwrap();
    let found = snapstore(&root, &["fsck"]);
    assert_eq!(found.status.code(), Some(1));
    let err = String::from_utf8_lossy(&found.stderr);
    assert!(
        err.contains("error: fsck found 1 problems it did not repair"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&found.stdout).starts_with("found sidecar missing "));
    let fixed: Value = serde_json::from_str(&ok(&root, &["fsck", "--repair", "--json"])).unwrap();
    assert_eq!(fixed["problems"][0]["kind"], "sidecar-missing");
    assert_eq!(fixed["problems"][0]["repaired"], true);
    ok(&root, &["fsck"]);
}

#[tokio::test]
async fn a_sidecar_a_crash_kept_from_its_place_is_written_again() {
    // The sidecar goes into place just after the index names the snapshot: a power loss
    // between the two leaves a complete snapshot without it.
    let f = fixture();
    let id = f.save("a").await;
    let sidecar = f.data().join(format!("{id}.json"));
    let was = std::fs::read(&sidecar).unwrap();
    std::fs::remove_file(&sidecar).unwrap();
    let report = f.store.gc(GcOptions::default()).await.unwrap();
    assert_eq!(report.restored_sidecars, std::slice::from_ref(&id));
    let again: Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    let before: Value = serde_json::from_slice(&was).unwrap();
    assert_eq!(again["files"], before["files"]);
    assert_eq!(again["record"]["id"], before["record"]["id"]);
    assert!(f.store.fsck(false).await.unwrap().problems.is_empty());
    // A dry run writes nothing.
    std::fs::remove_file(&sidecar).unwrap();
    let dry = GcOptions {
        dry_run: true,
        ..GcOptions::default()
    };
    assert_eq!(f.store.gc(dry).await.unwrap().restored_sidecars, [id]);
    assert!(!sidecar.exists());
}
