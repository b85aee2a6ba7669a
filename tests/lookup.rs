//! The lookup table derived from `snapshots.json`: every edit another tool makes to the index
//! is seen by the next command, and a table that is stale, corrupt, missing or half-written is
//! rebuilt, never trusted.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;
use snapstore::{Error, Snapshot};

/// A store with 200 snapshots besides those a test saves: an index large enough (over 64 KiB)
/// that snapstore looks things up through the table rather than reading it whole.
fn fixture() -> Fixture {
    let f = Fixture::new(MIB, 4 * MIB, MIB);
    snapstore::synthetic::synthetic_index(&f.root, 200).unwrap();
    assert!(std::fs::metadata(index_path(&f.root)).unwrap().len() > 64 << 10);
    f
}

fn index_path(root: &Path) -> std::path::PathBuf {
    root.join("snapshot/db/snapshots.json")
}

fn lookup_path(root: &Path) -> std::path::PathBuf {
    root.join("snapshot/db/snapshots.lookup")
}

/// Rewrites the index as another tool would: whole, through a temp file and a rename.
fn rewrite(root: &Path, edit: impl FnOnce(&mut Value)) {
    let mut index = index_json(root);
    edit(&mut index);
    let tmp = root.join("snapshot/db/other-tool.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::rename(&tmp, index_path(root)).unwrap();
}

/// Rewrites the index in place, same inode, as a careless tool would.
fn rewrite_in_place(root: &Path, edit: impl FnOnce(&mut Value)) {
    let mut index = index_json(root);
    edit(&mut index);
    std::fs::write(index_path(root), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Lets the table the last command wrote settle, so that it is trusted (see `lookup.rs`).
async fn settle(f: &Fixture) {
    std::thread::sleep(Duration::from_millis(50));
    // Any lookup rebuilds and saves the table once the index is old enough to trust it.
    let _ = f.store.inspect("no-such-snapshot").await;
    assert!(lookup_path(&f.root).exists(), "a settled table is saved");
}

fn not_found(r: snapstore::Result<snapstore::Record>) -> bool {
    matches!(r, Err(Error::NotFound { .. }))
}

#[tokio::test]
async fn edits_behind_snapstores_back_are_seen_by_the_next_command() {
    let f = fixture();
    let a = f.save("alpha").await;
    let b = f.save("bravo").await;
    settle(&f).await;
    assert_eq!(f.store.inspect("alpha").await.unwrap().id(), a.as_str());

    // A rename, as cocoon writes it.
    rewrite(&f.root, |index| {
        index["snapshots"][a.as_str()]["name"] = "renamed".into();
        let names = index["names"].as_object_mut().unwrap();
        names.remove("alpha");
        names.insert("renamed".into(), a.as_str().into());
    });
    assert!(not_found(f.store.inspect("alpha").await));
    assert_eq!(f.store.inspect("renamed").await.unwrap().id(), a.as_str());
    settle(&f).await;

    // A delete, written in place, at once after the table was trusted.
    rewrite_in_place(&f.root, |index| {
        index["snapshots"]
            .as_object_mut()
            .unwrap()
            .remove(b.as_str());
        index["names"].as_object_mut().unwrap().remove("bravo");
    });
    assert!(not_found(f.store.inspect("bravo").await));
    assert!(not_found(f.store.inspect(b.as_str()).await));
    settle(&f).await;

    // An added record whose name a save then asks for: the name is taken.
    rewrite(&f.root, |index| {
        let mut record = index["snapshots"][a.as_str()].clone();
        record["id"] = "COCOONADDED".into();
        record["name"] = "charlie".into();
        index["snapshots"]["COCOONADDED"] = record;
        index["names"]["charlie"] = "COCOONADDED".into();
    });
    let err = f
        .store
        .create(config("charlie"), f.src.clone(), Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NameTaken { id, .. } if id.as_str() == "COCOONADDED"),
        "{err:?}"
    );
    assert_eq!(
        f.store.inspect("charlie").await.unwrap().id(),
        "COCOONADDED"
    );
    assert_eq!(
        f.store.inspect("COCOONA").await.unwrap().id(),
        "COCOONADDED"
    );

    // The same rename of the same length, in place, within the same tick as the table: racy,
    // so the table is not trusted, and the edit is seen.
    f.store.inspect("renamed").await.unwrap();
    rewrite_in_place(&f.root, |index| {
        index["snapshots"][a.as_str()]["name"] = "renamex".into();
        let names = index["names"].as_object_mut().unwrap();
        names.remove("renamed");
        names.insert("renamex".into(), a.as_str().into());
    });
    assert!(not_found(f.store.inspect("renamed").await));
    assert_eq!(f.store.inspect("renamex").await.unwrap().id(), a.as_str());
}

#[tokio::test]
async fn a_corrupt_stale_or_missing_table_is_rebuilt_not_trusted() {
    let f = fixture();
    let a = f.save("alpha").await;
    settle(&f).await;
    let good = std::fs::read(lookup_path(&f.root)).unwrap();
    let other = fixture();
    other.save("other").await;
    settle(&other).await;
    let foreign = std::fs::read(lookup_path(&other.root)).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55; // inside the strings: a name no longer what it was
    let mut zeroed = good.clone();
    zeroed[112..].fill(0); // the header is 112 bytes
    for (what, table) in [
        ("garbage", b"not a table at all".to_vec()),
        ("cut short", good[..good.len() / 2].to_vec()),
        ("a bit flipped", flipped),
        ("zeroed after the header", zeroed),
        ("another store's", foreign),
        ("empty", Vec::new()),
    ] {
        std::fs::write(lookup_path(&f.root), &table).unwrap();
        let got = f.store.inspect("alpha").await;
        assert_eq!(got.unwrap().id(), a.as_str(), "{what}");
        let clone = f.scratch(&format!("run-{}", what.replace(' ', "-")));
        clone_ref(&f.store, "alpha", clone, Default::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    std::fs::remove_file(lookup_path(&f.root)).unwrap();
    assert_eq!(f.store.inspect("alpha").await.unwrap().id(), a.as_str());
}

#[test]
fn a_kill_during_a_rebuild_leaves_a_store_that_works() {
    // An index of 20,000 snapshots takes tens of milliseconds to build a table for: kill
    // readers at random moments in it, with no table and with a stale one.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let ids = snapstore::synthetic::synthetic_index(&root, 20_000).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut killed = 0;
    for round in 0..20 {
        if round % 2 == 0 {
            let _ = std::fs::remove_file(lookup_path(&root));
        } else {
            std::fs::write(lookup_path(&root), b"stale").unwrap();
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = command_in(&root)
            .args(["inspect", ids[(rng % 20_000) as usize].as_str()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng % 80));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        // Whatever the kill left (no table, a stale one, a temp file), the store works.
        for id in [&ids[0], &ids[19_999], &ids[(rng % 20_000) as usize]] {
            let shown = ok(&root, &["inspect", id.as_str()]);
            assert!(shown.contains(id.as_str()), "round {round}: {shown}");
        }
    }
    assert!(
        killed > 0,
        "no reader was killed mid-way: the test tested nothing"
    );
    // gc removes what a killed write left.
    ok(&root, &["gc"]);
    let db: Vec<String> = tree(&root.join("snapshot/db"));
    assert!(db.iter().all(|n| !n.starts_with(".tmp-")), "{db:?}");
}
