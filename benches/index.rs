//! Index operations on a store of 10,000 snapshots: resolve by ID, name and prefix (through
//! `inspect`), `list`, and the overhead of a create and a delete without data. Each is a whole
//! library operation: lock, read the index, and for writes, rewrite it durably. One store serves
//! every sample, so after the first, reads compare the file with the store's cached parse: what a
//! long-running VM manager pays. `snapstore bench` times the first-parse cost, per process.
//!
//! `cargo bench --bench index`

#![allow(clippy::unwrap_used, missing_docs)] // bench code: a failure is a bench failure

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use snapstore::{Config, LocalFile, SaveOptions, Snapshot};

const SNAPSHOTS: usize = 10_000;

fn index(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let ids = snapstore::synthetic::synthetic_index(tmp.path(), SNAPSHOTS).unwrap();
    let id = ids[0].to_string();
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
