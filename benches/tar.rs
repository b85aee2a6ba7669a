//! Tar export and import throughput, in data bytes, of a snapshot with a sparse disk and a
//! memory file: export to a sink (raw, gzip, zstd), and import from an archive in memory.
//!
//! `cargo bench --bench tar`

#![allow(clippy::unwrap_used, missing_docs)] // bench code: a failure is a bench failure

#[path = "../tests/common/mod.rs"]
mod common;

use common::{MIB, data_segments, file_sizes, vm_snapshot};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use snapstore::{
    Compression, Config, ExportOptions, ImportOptions, LocalFile, SaveOptions, Snapshot, SnapshotId,
};

/// Deletes an imported snapshot when criterion drops it, outside the timed section.
struct Imported<'a>(&'a LocalFile, &'a tokio::runtime::Runtime, SnapshotId);

impl Drop for Imported<'_> {
    fn drop(&mut self) {
        let _ = self.1.block_on(self.0.delete(&[self.2.to_string()], true));
    }
}

fn tar(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = vm_snapshot(&tmp.path().join("src"), 128 * MIB, 1024 * MIB, 64 * MIB);
    let data: u64 = file_sizes(&src)
        .keys()
        .flat_map(|name| data_segments(&src.join(name)))
        .map(|(_, len)| len)
        .sum();
    let store = LocalFile::open(tmp.path().join("root")).unwrap();
    let config = Config {
        name: "base".into(),
        ..Config::default()
    };
    rt.block_on(store.create(config, src, SaveOptions::default()))
        .unwrap();

    let mut group = c.benchmark_group("tar");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(data));
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let opts = ExportOptions {
            compression,
            ..ExportOptions::default()
        };
        group.bench_function(format!("export{}", compression.extension()), |b| {
            b.iter(|| {
                let sink = Box::new(std::io::sink());
                rt.block_on(store.export_to("base", opts, sink, "<sink>".into()))
                    .unwrap();
            });
        });
    }
    let mut archive = Vec::new();
    let export = store.export("base");
    std::io::copy(&mut rt.block_on(export).unwrap(), &mut archive).unwrap();
    let mut n = 0u64;
    group.bench_function("import", |b| {
        b.iter_batched(
            || {
                n += 1;
                (std::io::Cursor::new(archive.clone()), format!("import-{n}"))
            },
            |(input, name)| {
                let opts = ImportOptions {
                    name: Some(name),
                    ..ImportOptions::default()
                };
                let report = rt
                    .block_on(store.import_with(Box::new(input), opts))
                    .unwrap();
                Imported(&store, &rt, report.id)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, tar);
criterion_main!(benches);
