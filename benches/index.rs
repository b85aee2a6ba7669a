//! Index operations on a store of 10,000 snapshots: resolve by ID, name and prefix (through
//! `inspect`), `list`, and the overhead of a create and a delete without data. Each is a whole
//! library operation: lock, read and parse the index, and for writes, rewrite it durably.
//!
//! `cargo bench --bench index`

#![allow(clippy::unwrap_used, missing_docs)] // bench code: a failure is a bench failure

use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use snapstore::{Config, LocalFile, SaveOptions, Snapshot};

const SNAPSHOTS: usize = 10_000;

/// Writes an index of `n` complete snapshots, as cocoon and snapstore write it, under `root`.
/// Returns one ID. The data dirs are not made: these operations do not read them.
pub fn ten_thousand(root: &Path, n: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut snapshots = serde_json::Map::new();
    let mut names = serde_json::Map::new();
    let mut first = String::new();
    for i in 0..n {
        let id: String = (0..26)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                alphabet[(state % 32) as usize] as char
            })
            .collect();
        if first.is_empty() {
            first = id.clone();
        }
        snapshots.insert(
            id.clone(),
            serde_json::json!({
                "id": id, "name": format!("vm-{i}"), "description": "ubuntu 24.04, booted",
                "image_blob_ids": { format!("sha256:{i:064x}"): {} },
                "hypervisor": "cloud-hypervisor", "cpu": 2, "memory": 1u64 << 30,
                "storage": 8u64 << 30, "created_at": "2026-11-25T10:00:00.123456789Z",
                "data_dir": root.join("snapshot/localfile").join(&id),
                "size_bytes": 9u64 << 30, "last_accessed_at": "2026-11-25T10:00:00.123456789Z",
            }),
        );
        names.insert(format!("vm-{i}"), serde_json::json!(id));
    }
    let index = serde_json::json!({ "snapshots": snapshots, "names": names });
    let db = root.join("snapshot/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(
        db.join("snapshots.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    first
}

fn index(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let id = ten_thousand(tmp.path(), SNAPSHOTS);
    let store = LocalFile::open(tmp.path()).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("index_10k");
    group.sample_size(20);
    for (what, reference) in [
        ("id", id.as_str()),
        ("name", "vm-5000"),
        ("prefix", &id[..6]),
    ] {
        group.bench_function(format!("inspect by {what}"), |b| {
            b.iter(|| rt.block_on(store.inspect(reference)).unwrap());
        });
    }
    group.bench_function("list", |b| {
        b.iter(|| rt.block_on(store.list()).unwrap());
    });
    group.bench_function("create and delete without data", |b| {
        let mut n = 0u64;
        b.iter_batched(
            || {
                n += 1;
                Config {
                    name: format!("bench-{n}"),
                    ..Config::default()
                }
            },
            |config| {
                let saved = rt
                    .block_on(store.create(config, empty.clone(), SaveOptions::default()))
                    .unwrap();
                rt.block_on(store.delete(&[saved.id.to_string()], false))
                    .unwrap();
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, index);
criterion_main!(benches);
