//! The clone ladder per method and file size: FICLONE on the loop-mounted btrfs and XFS
//! (`SNAPSTORE_TEST_BTRFS`, `SNAPSTORE_TEST_XFS`, as `ci/with-cow-fs.sh` sets them), and the
//! hardlink and hole-keeping copy rungs on the temp dir's filesystem (ext4 here). Each sample is
//! a whole `clone_to_dir` of a one-file snapshot; throughput is in apparent bytes.
//!
//! `ci/with-cow-fs.sh cargo bench --bench ladder`

#![allow(clippy::unwrap_used, missing_docs)] // bench code: a failure is a bench failure

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{MIB, sparse_file};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use snapstore::{CloneOptions, CloneSource, Config, LocalFile, SaveOptions, Snapshot};

/// Apparent sizes; an eighth of each is data, in 16 scattered pieces.
const SIZES: [u64; 2] = [64 * MIB, 1024 * MIB];

/// Removes a clone's dir when criterion drops it, outside the timed section.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store under `base` holding one snapshot per (file name, size), named `NAME-SIZE`.
fn store_with(base: &Path, rt: &tokio::runtime::Runtime, files: &[&str]) -> LocalFile {
    let store = LocalFile::open(base.join("root")).unwrap();
    for &size in &SIZES {
        for &file in files {
            let src = base.join(format!("src-{file}-{size}"));
            std::fs::create_dir_all(&src).unwrap();
            let piece = size / 8 / 16;
            let segments: Vec<(u64, u64)> = (0..16).map(|i| (i * (size / 16), piece)).collect();
            sparse_file(&src.join(file), size, &segments);
            let config = Config {
                name: format!("{file}-{size}"),
                ..Config::default()
            };
            rt.block_on(store.create(config, src, SaveOptions::default()))
                .unwrap();
        }
    }
    store
}

fn ladder(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tempfile::tempdir().unwrap();
    let mut places: Vec<(String, &str, &str, tempfile::TempDir)> = Vec::new();
    for (var, fs) in [
        ("SNAPSTORE_TEST_BTRFS", "btrfs"),
        ("SNAPSTORE_TEST_XFS", "xfs"),
    ] {
        match std::env::var_os(var) {
            Some(root) => places.push((
                fs.to_string(),
                "reflink",
                "disk.raw",
                tempfile::tempdir_in(root).unwrap(),
            )),
            None => eprintln!("SKIPPED: {var} not set; run under ci/with-cow-fs.sh for FICLONE"),
        }
    }
    let mut group = c.benchmark_group("clone_ladder");
    group.sample_size(10);
    let mut run = |fs: &str, method: &str, file: &str, base: &Path, store: &LocalFile| {
        for &size in &SIZES {
            group.throughput(Throughput::Bytes(size));
            let name = format!("{file}-{size}");
            let mut n = 0u64;
            group.bench_function(format!("{fs}/{method}/{}MiB", size / MIB), |b| {
                b.iter_batched(
                    || {
                        n += 1;
                        base.join(format!("clone-{method}-{size}-{n}"))
                    },
                    |dir| {
                        let source = CloneSource::Ref(name.clone());
                        let report = rt
                            .block_on(store.clone_to_dir(
                                source,
                                dir.clone(),
                                CloneOptions::default(),
                            ))
                            .unwrap();
                        assert_eq!(report.files[0].method.as_str(), method);
                        Removed(dir)
                    },
                    BatchSize::PerIteration,
                );
            });
        }
    };
    for (fs, method, file, dir) in &places {
        let store = store_with(dir.path(), &rt, &[file]);
        run(fs, method, file, dir.path(), &store);
    }
    // The temp dir's filesystem (ext4 here): memory files hardlink, disks copy with holes kept.
    let store = store_with(local.path(), &rt, &["memory-range-0", "disk.raw"]);
    run("local", "hardlink", "memory-range-0", local.path(), &store);
    run("local", "copy", "disk.raw", local.path(), &store);
    group.finish();
}

criterion_group!(benches, ladder);
criterion_main!(benches);
