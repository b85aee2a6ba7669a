//! The tar layer: archives from other writers (shared/fixtures, built with Python's tarfile;
//! archives built here entry by entry; GNU tar's own), round trips, and hostile input.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};
use snapstore::{
    CompressedExporter, Compression, Config, Error, ExportOptions, ImportOptions, LocalFile,
    SaveOptions, Snapshot, SparseFormat,
};

// ---------------------------------------------------------------- helpers

struct Store {
    tmp: tempfile::TempDir,
    root: PathBuf,
    store: LocalFile,
}

fn store() -> Store {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let store = LocalFile::open(&root).unwrap();
    Store { tmp, root, store }
}

impl Store {
    async fn import(&self, bytes: Vec<u8>) -> snapstore::Result<snapstore::CreateReport> {
        self.import_opts(bytes, ImportOptions::default()).await
    }

    async fn import_opts(
        &self,
        bytes: Vec<u8>,
        opts: ImportOptions,
    ) -> snapstore::Result<snapstore::CreateReport> {
        self.store
            .import_with(Box::new(Cursor::new(bytes)), opts)
            .await
    }

    fn data(&self, id: &snapstore::SnapshotId) -> PathBuf {
        self.store.layout().data_dir(id)
    }

    /// Saves a VM snapshot and returns its source dir.
    async fn saved(&self, name: &str, memory: u64, disk: u64, data: u64) -> PathBuf {
        let src = vm_snapshot(
            &self.tmp.path().join(format!("src-{name}")),
            memory,
            disk,
            data,
        );
        let config = Config {
            name: name.into(),
            cpu: 2,
            ..Config::default()
        };
        self.store
            .create(config, src.clone(), SaveOptions::default())
            .await
            .unwrap();
        src
    }

    async fn export(&self, reference: &str, opts: ExportOptions) -> Vec<u8> {
        let path = self.tmp.path().join(format!("export-{}", rand_suffix()));
        let file = std::fs::File::create(&path).unwrap();
        self.store
            .export_to(reference, opts, Box::new(file), path.clone())
            .await
            .unwrap();
        std::fs::read(&path).unwrap()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// PAX records "LEN KEY=VALUE\n", written here independently of snapstore's exporter.
fn pax_data(records: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        let mut n = body.len() + 1;
        while format!("{n}{body}").len() != n {
            n += 1;
        }
        out.extend_from_slice(format!("{n}{body}").as_bytes());
    }
    out
}

/// Builds archives entry by entry with the `tar` crate; names are written raw, so hostile
/// names (`..`, absolute) can be made.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(name: &str, size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
        Tar::header_bytes(name.as_bytes(), size, kind, mode)
    }

    fn header_bytes(name: &[u8], size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(kind);
        h.set_cksum();
        h
    }

    fn raw(mut self, name: &str, kind: tar::EntryType, data: &[u8]) -> Tar {
        let h = Tar::header(name, data.len() as u64, kind, 0o644);
        self.0.append(&h, data).unwrap();
        self
    }

    /// A regular file whose name is `name`'s bytes as they are, UTF-8 or not.
    fn file_bytes(mut self, name: &[u8], data: &[u8]) -> Tar {
        let h = Tar::header_bytes(name, data.len() as u64, tar::EntryType::Regular, 0o644);
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Tar {
        self.raw(name, tar::EntryType::Regular, data)
    }

    fn envelope(self, json: &str) -> Tar {
        self.file("snapshot.json", json.as_bytes())
    }

    fn pax(self, name: &str, records: &[(&str, &str)]) -> Tar {
        self.raw(
            &format!("PaxHeaders/{name}"),
            tar::EntryType::XHeader,
            &pax_data(records),
        )
    }

    /// A cocoon-sparse entry: `map` and `size` as given, `data` the concatenated segments.
    fn cocoon(self, name: &str, map: &str, size: &str, data: &[u8]) -> Tar {
        self.pax(
            name,
            &[("COCOON.sparse.map", map), ("COCOON.sparse.size", size)],
        )
        .file(name, data)
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

const ENVELOPE: &str = r#"{"config":{"name":"fx","cpu":2},"version":1}"#;

fn sha256(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Each file of `a` and `b` the same bytes and size, and `b` no more allocated than `a` plus a
/// block per data segment.
fn assert_same_dir(a: &Path, b: &Path, names: &[&str]) {
    for name in names {
        let (fa, fb) = (a.join(name), b.join(name));
        assert!(same_file(&fa, &fb), "{name} differs");
        let segments = data_segments(&fa).len() as u64;
        assert!(
            blocks(&fb) * 512 <= blocks(&fa) * 512 + (segments + 1) * 4096,
            "{name}: {} blocks after the round trip, {} before",
            blocks(&fb),
            blocks(&fa)
        );
    }
}

const FILES: [&str; 4] = ["config.json", "cow.raw", "memory-range-0", "state.json"];

// ---------------------------------------------------------------- fixtures from shared/

/// One row of a fixture README table.
struct Expected {
    file: String,
    size: u64,
    sha256: String,
    sparse: bool,
    data_bytes: u64,
}

/// The fixture README's tables: archive name → the files it holds.
fn fixture_tables(readme: &str) -> Vec<(String, Vec<Expected>)> {
    let mut out: Vec<(String, Vec<Expected>)> = Vec::new();
    for line in readme.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            out.push((name.trim().to_string(), Vec::new()));
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 6 || !cells[1].starts_with('`') {
            continue;
        }
        let segments: u64 = cells[5]
            .split("), (")
            .filter_map(|pair| {
                pair.trim_matches(|c| c == '(' || c == ')')
                    .split(", ")
                    .nth(1)
            })
            .map(|l| l.parse::<u64>().unwrap())
            .sum();
        let row = Expected {
            file: cells[1].trim_matches('`').to_string(),
            size: cells[2].split(' ').next().unwrap().parse().unwrap(),
            sha256: cells[3].trim_matches('`').to_string(),
            sparse: cells[4] == "yes",
            data_bytes: segments,
        };
        out.last_mut().expect("a table under a heading").1.push(row);
    }
    out.retain(|(_, rows)| !rows.is_empty());
    out
}

#[tokio::test]
async fn cocoon_fixtures_import_to_the_exact_bytes_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/cocoon");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap_or_else(|e| {
        panic!(
            "the fixtures belong beside the repo at {}: {e}",
            dir.display()
        )
    });
    let tables = fixture_tables(&readme);
    assert!(tables.len() >= 5, "fixture tables: {}", tables.len());
    let s = store();
    for (archive, rows) in &tables {
        let bytes = std::fs::read(dir.join(archive)).unwrap();
        let opts = ImportOptions {
            name: Some(archive.clone()),
            label: dir.join(archive),
            ..ImportOptions::default()
        };
        let report = s
            .import_opts(bytes, opts)
            .await
            .unwrap_or_else(|e| panic!("{archive}: {e}"));
        let data = s.data(&report.id);
        let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
        let want: Vec<&str> = rows.iter().map(|r| r.file.as_str()).collect();
        assert_eq!(names, want, "{archive}");
        for row in rows {
            let path = data.join(&row.file);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                row.size,
                "{archive}/{}",
                row.file
            );
            assert_eq!(sha256(&path), row.sha256, "{archive}/{}", row.file);
            assert_eq!(
                mode(&path),
                0o444,
                "{archive}/{}: modes in the archive are ignored",
                row.file
            );
            if row.sparse {
                let allocated = blocks(&path) * 512;
                assert!(
                    allocated <= row.data_bytes + 8 * 4096,
                    "{archive}/{}: {allocated} allocated",
                    row.file
                );
            }
        }
        let rec = s.store.inspect(archive).await.unwrap();
        assert_eq!(rec.config.cpu, 2, "{archive}: the envelope's config");
        assert!(
            rec.config.image_blob_ids.len() == 1,
            "{archive}: image_blob_ids kept"
        );
    }
}

// ---------------------------------------------------------------- archives built here

#[tokio::test]
async fn cocoon_sparse_entries_built_independently_import() {
    let s = store();
    let mut data = vec![0xabu8; 8192];
    data[4096..].fill(0xcd);
    let bytes = Tar::new()
        .envelope(ENVELOPE)
        .cocoon(
            "disk.raw",
            r#"[{"o":4096,"l":4096},{"o":1048576,"l":4096}]"#,
            "2097152",
            &data,
        )
        .cocoon("empty.raw", "null", "65536", b"")
        .file("./state.json", b"{}")
        .raw("somedir/", tar::EntryType::Directory, b"")
        .bytes();
    let report = s.import(bytes).await.unwrap();
    let dir = s.data(&report.id);
    let disk = std::fs::read(dir.join("disk.raw")).unwrap();
    assert_eq!(disk.len(), 2 << 20);
    assert!(disk[..4096].iter().all(|&b| b == 0));
    assert!(disk[4096..8192].iter().all(|&b| b == 0xab));
    assert!(disk[1 << 20..(1 << 20) + 4096].iter().all(|&b| b == 0xcd));
    assert!(blocks(&dir.join("disk.raw")) <= 16);
    assert_eq!(
        std::fs::metadata(dir.join("empty.raw")).unwrap().len(),
        65536
    );
    assert_eq!(blocks(&dir.join("empty.raw")), 0);
    assert_eq!(tree(&dir), ["disk.raw", "empty.raw", "state.json"]);
}

#[tokio::test]
async fn the_envelope_may_come_last_and_names_override_it() {
    let s = store();
    let bytes = Tar::new()
        .file("mem", b"m")
        .envelope(r#"{"config":{"name":"env","description":"e"},"version":1}"#)
        .bytes();
    let opts = ImportOptions {
        name: Some("mine".into()),
        description: Some("d".into()),
        ..ImportOptions::default()
    };
    s.import_opts(bytes.clone(), opts).await.unwrap();
    let rec = s.store.inspect("mine").await.unwrap();
    assert_eq!(rec.config.description, "d");
    s.import(bytes.clone()).await.unwrap();
    assert_eq!(
        s.store.inspect("env").await.unwrap().config.description,
        "e"
    );
    // Again under the envelope's name: taken.
    let before = store_state(&s.root);
    assert!(matches!(
        s.import(bytes).await,
        Err(Error::NameTaken { .. })
    ));
    assert_eq!(store_state(&s.root), before);
}

#[tokio::test]
async fn a_plain_archive_of_a_sparse_disk_lands_sparse() {
    let s = store();
    let mut disk = vec![0u8; 1 << 20];
    disk[300_000..300_100].fill(9);
    disk.extend(vec![0u8; 3 << 20]); // a trailing hole of 3 MiB
    let bytes = Tar::new().envelope(ENVELOPE).file("cow.raw", &disk).bytes();
    let report = s.import(bytes).await.unwrap();
    let path = s.data(&report.id).join("cow.raw");
    assert_eq!(std::fs::read(&path).unwrap(), disk);
    assert_eq!(blocks(&path), 8, "one 4 KiB block of data, the rest holes");
}

// ---------------------------------------------------------------- GNU tar, both ways

fn gnu_tar(args: &[&str], dir: &Path) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn gnu_tar_sparse_archives_of_every_version_import_with_holes() {
    let s = store();
    let src = s.tmp.path().join("gnu-src");
    std::fs::create_dir(&src).unwrap();
    sparse_file(
        &src.join("cow.raw"),
        64 * MIB,
        &[(MIB, 64 * 1024), (40 * MIB, 192 * 1024)],
    );
    sparse_file(&src.join("tail.raw"), 8 * MIB, &[(0, 4096)]);
    std::fs::write(src.join("snapshot.json"), ENVELOPE).unwrap();
    let variants: [(&str, &[&str]); 4] = [
        ("old-gnu", &["--format=gnu", "--sparse"]),
        (
            "pax-0.0",
            &["--format=posix", "--sparse", "--sparse-version=0.0"],
        ),
        (
            "pax-0.1",
            &["--format=posix", "--sparse", "--sparse-version=0.1"],
        ),
        (
            "pax-1.0",
            &["--format=posix", "--sparse", "--sparse-version=1.0"],
        ),
    ];
    for (label, flags) in variants {
        let archive = s.tmp.path().join(format!("{label}.tar"));
        let mut args: Vec<&str> = flags.to_vec();
        let archive_arg = archive.to_str().unwrap();
        args.extend(["-cf", archive_arg, "snapshot.json", "cow.raw", "tail.raw"]);
        gnu_tar(&args, &src);
        let opts = ImportOptions {
            name: Some(label.into()),
            ..ImportOptions::default()
        };
        let report = s
            .import_opts(std::fs::read(&archive).unwrap(), opts)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_same_dir(&src, &s.data(&report.id), &["cow.raw", "tail.raw"]);
    }
}

#[tokio::test]
async fn gnu_format_exports_extract_with_gnu_tar_holes_kept() {
    let s = store();
    let src = s.saved("base", 4 * MIB, 64 * MIB, 2 * MIB).await;
    let bytes = s
        .export(
            "base",
            ExportOptions {
                sparse_format: SparseFormat::Gnu,
                ..ExportOptions::default()
            },
        )
        .await;
    let out = s.tmp.path().join("gnu-out");
    std::fs::create_dir(&out).unwrap();
    let archive = s.tmp.path().join("gnu.tar");
    std::fs::write(&archive, bytes).unwrap();
    gnu_tar(&["-xSf", archive.to_str().unwrap()], &out);
    assert_same_dir(&src, &out, &FILES);
    assert!(
        blocks(&out.join("cow.raw")) * 512 < 4 * MIB,
        "the 64 MiB disk stays sparse"
    );
    let envelope = snapstore::read_envelope(&out).unwrap();
    assert_eq!(envelope.files.unwrap(), FILES);
}

#[tokio::test]
async fn default_exports_list_cleanly_with_gnu_tar() {
    let s = store();
    s.saved("base", MIB, 16 * MIB, MIB).await;
    let archive = s.tmp.path().join("base.tar");
    std::fs::write(&archive, s.export("base", ExportOptions::default()).await).unwrap();
    let out = Command::new("tar")
        .args(["--warning=no-unknown-keyword", "-tf"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        listed,
        [
            "snapshot.json",
            "config.json",
            "cow.raw",
            "memory-range-0",
            "state.json"
        ]
    );
}

// ---------------------------------------------------------------- round trips

#[tokio::test]
async fn export_then_import_round_trips_in_every_format() {
    let s = store();
    let src = s.saved("base", 4 * MIB, 128 * MIB, 4 * MIB).await;
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        for sparse_format in [SparseFormat::Cocoon, SparseFormat::Gnu] {
            let bytes = s
                .export(
                    "base",
                    ExportOptions {
                        compression,
                        sparse_format,
                        ..ExportOptions::default()
                    },
                )
                .await;
            if compression == Compression::None {
                assert!(
                    bytes.len() as u64 <= 10 * MIB,
                    "{sparse_format:?}: {} bytes for ~8 MiB of data",
                    bytes.len()
                );
            }
            let name = format!("{compression:?}-{sparse_format:?}");
            let opts = ImportOptions {
                name: Some(name.clone()),
                // Both paths: files made durable on the writeback thread, and left to writeback.
                sync: sparse_format == SparseFormat::Cocoon,
                ..ImportOptions::default()
            };
            let report = s
                .import_opts(bytes, opts)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_same_dir(&src, &s.data(&report.id), &FILES);
            let rec = s.store.inspect(&name).await.unwrap();
            assert_eq!(rec.config.cpu, 2);
            assert_eq!(
                rec.size_bytes,
                s.store.inspect("base").await.unwrap().size_bytes
            );
        }
    }
}

#[tokio::test]
async fn an_import_is_on_disk_when_it_returns_unless_told_otherwise() {
    let s = store();
    s.saved("base", 8 * MIB, 64 * MIB, 8 * MIB).await;
    let bytes = s.export("base", ExportOptions::default()).await;
    let import = |name: &str, sync: bool| {
        let opts = ImportOptions {
            name: Some(name.to_string()),
            sync,
            ..ImportOptions::default()
        };
        s.import_opts(bytes.clone(), opts)
    };
    let unwritten = |id: &snapstore::SnapshotId| -> Option<u64> {
        FILES
            .iter()
            .map(|f| common::unwritten_pages(&s.data(id).join(f)))
            .sum()
    };
    let durable = import("durable", true).await.unwrap();
    let Some(left) = unwritten(&durable.id) else {
        eprintln!("SKIPPED: no cachestat(2) here, or a tmpfs");
        return;
    };
    assert_eq!(
        left, 0,
        "pages of a durable import still dirty or in writeback"
    );
    // The witness sees what an fsync would have written: the same import, left to writeback,
    // still holds its data in dirty pages (the kernel writes them back after 30 s).
    let lazy = import("lazy", false).await.unwrap();
    assert!(
        unwritten(&lazy.id).unwrap() > 0,
        "a --no-sync import was written back"
    );
}

#[tokio::test]
async fn streams_export_restore_and_compressed_export() {
    let s = store();
    let src = s.saved("base", MIB, 16 * MIB, MIB).await;

    let mut stream = s.store.export("base").await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let report = s
        .import_opts(
            bytes,
            ImportOptions {
                name: Some("streamed".into()),
                ..ImportOptions::default()
            },
        )
        .await
        .unwrap();
    assert_same_dir(&src, &s.data(&report.id), &FILES);

    let mut gz = s.store.export_compressed("base").await.unwrap();
    let mut bytes = Vec::new();
    gz.read_to_end(&mut bytes).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    let report = s
        .import_opts(
            bytes,
            ImportOptions {
                name: Some("gz".into()),
                ..ImportOptions::default()
            },
        )
        .await
        .unwrap();
    assert_same_dir(&src, &s.data(&report.id), &FILES);

    let (config, mut restore) = s.store.restore("base").await.unwrap();
    assert_eq!(config.name, "base");
    let mut bytes = Vec::new();
    restore.read_to_end(&mut bytes).unwrap();
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .filter(|n| !n.starts_with("PaxHeaders"))
        .collect();
    assert_eq!(
        names, FILES,
        "restore streams the data files without the envelope"
    );
}

#[tokio::test]
async fn dropping_an_export_stream_stops_it_and_frees_the_snapshot() {
    let s = store();
    s.saved("base", 8 * MIB, 64 * MIB, 32 * MIB).await;
    let mut stream = s.store.export("base").await.unwrap();
    let mut some = vec![0u8; 4096];
    stream.read_exact(&mut some).unwrap();
    // While the stream is open, its lease keeps rm away.
    assert!(matches!(
        s.store.delete(&["base".into()], false).await,
        Err(Error::InUse { .. })
    ));
    drop(stream);
    // The writer notices at its next chunk and releases the lease.
    let mut deleted = false;
    for _ in 0..500 {
        if s.store.delete(&["base".into()], false).await.is_ok() {
            deleted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(deleted, "the export thread never let go of its lease");
}

// ---------------------------------------------------------------- hostile input

/// Imports `bytes`, expects an error, and checks the store is as it was and nothing appeared
/// outside it.
async fn refused(bytes: Vec<u8>, max_file_size: Option<u64>) -> Error {
    let s = store();
    s.saved("keep", MIB, MIB, 4096).await;
    let before = store_state(&s.root);
    let outside = tree(s.tmp.path());
    let mut opts = ImportOptions {
        label: PathBuf::from("hostile.tar"),
        ..ImportOptions::default()
    };
    if let Some(max) = max_file_size {
        opts.max_file_size = max;
    }
    let err = s.import_opts(bytes, opts).await.unwrap_err();
    assert_eq!(store_state(&s.root), before, "{err}");
    assert_eq!(tree(s.tmp.path()), outside, "{err}: something was written");
    assert_eq!(tree(&s.root.join("snapshot/staging")), Vec::<String>::new());
    assert!(
        err.to_string().contains("hostile.tar"),
        "the error names the archive: {err}"
    );
    err
}

/// The error and its causes, as the CLI prints them.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn hostile(err: &Error, entry: &str) -> bool {
    matches!(err, Error::HostileEntry { entry: e, .. } if e == entry)
}

#[tokio::test]
async fn hostile_names_are_refused() {
    for name in [
        "../escape",
        "../../../../tmp/escape",
        "/etc/escape",
        "a/nested",
        "./a/b",
        "..",
        "",
    ] {
        let bytes = Tar::new().envelope(ENVELOPE).file(name, b"x").bytes();
        let err = refused(bytes, None).await;
        assert!(hostile(&err, name), "{name:?}: {err:?}");
    }
}

#[tokio::test]
async fn names_that_are_not_utf8_are_refused_and_shown_escaped() {
    // A Latin-1 byte, KOI8-R and EUC-JP names (as in libarchive's test archives): lossy UTF-8
    // would store them renamed, and make the two KOI8-R names below one and the same.
    let cases: [(&[u8], &str); 3] = [
        (b"disk\xff.raw", "disk\\xff.raw"),
        (
            b"\xd0\xd2\xc9\xd7\xc5\xd4.raw",
            "\\xd0\\xd2\\xc9\\xd7\\xc5\\xd4.raw",
        ),
        (b"\xa4\xb3\xa4\xf3.raw", "\\xa4\\xb3\\xa4\\xf3.raw"),
    ];
    for (name, shown) in cases {
        let bytes = Tar::new().envelope(ENVELOPE).file_bytes(name, b"x").bytes();
        let err = refused(bytes, None).await;
        assert!(hostile(&err, shown), "{shown}: {err:?}");
        let text = chain(&err);
        assert!(text.contains("UTF-8"), "{text}");
        assert!(
            !text.contains('\u{fffd}') && !text.chars().any(char::is_control),
            "{text:?}"
        );
    }
    let two = Tar::new()
        .envelope(ENVELOPE)
        .file_bytes(b"\xd0\xd2.raw", b"a")
        .file_bytes(b"\xd0\xd3.raw", b"b")
        .bytes();
    let err = refused(two, None).await;
    assert!(hostile(&err, "\\xd0\\xd2.raw"), "{err:?}");
}

#[tokio::test]
async fn links_devices_and_fifos_are_refused() {
    use tar::EntryType::*;
    for (kind, what) in [
        (Symlink, "symlink"),
        (Link, "hardlink"),
        (Char, "device"),
        (Block, "device"),
        (Fifo, "fifo"),
    ] {
        let bytes = Tar::new().envelope(ENVELOPE).raw("evil", kind, b"").bytes();
        let err = refused(bytes, None).await;
        assert!(hostile(&err, "evil"), "{kind:?}: {err:?}");
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[tokio::test]
async fn the_same_name_twice_is_refused() {
    let bytes = Tar::new()
        .envelope(ENVELOPE)
        .file("mem", b"1")
        .file("./mem", b"2")
        .bytes();
    assert!(hostile(&refused(bytes, None).await, "mem"));
    let bytes = Tar::new().envelope(ENVELOPE).envelope(ENVELOPE).bytes();
    assert!(hostile(&refused(bytes, None).await, "snapshot.json"));
}

#[tokio::test]
async fn bad_sparse_maps_are_refused() {
    let data = vec![1u8; 8192];
    for (map, size, why) in [
        (
            r#"[{"o":8192,"l":4096},{"o":0,"l":4096}]"#,
            "65536",
            "unsorted",
        ),
        (
            r#"[{"o":0,"l":8192},{"o":4096,"l":0}]"#,
            "65536",
            "unsorted",
        ), // overlapping
        (
            r#"[{"o":0,"l":4096},{"o":2048,"l":4096}]"#,
            "65536",
            "unsorted",
        ),
        (
            r#"[{"o":0,"l":4096},{"o":65536,"l":4096}]"#,
            "65536",
            "past the file's real size",
        ),
        (r#"[{"o":0,"l":4096}]"#, "65536", "do not add up"),
        (
            r#"[{"o":0,"l":4096},{"o":8192,"l":4096}]"#,
            "6e4",
            "not a decimal",
        ),
        (
            r#"[{"o":0,"l":4096},{"o":8192,"l":4096}]"#,
            "-1",
            "not a decimal",
        ),
        (r#"{"o":0}"#, "65536", "not a JSON segment list"),
    ] {
        let bytes = Tar::new()
            .envelope(ENVELOPE)
            .cocoon("disk.raw", map, size, &data)
            .bytes();
        let err = refused(bytes, None).await;
        assert!(
            hostile(&err, "disk.raw") && err.to_string().contains(why),
            "{map} {size}: {err}"
        );
    }
}

#[tokio::test]
async fn a_real_size_above_the_limit_is_refused() {
    let bytes = Tar::new()
        .envelope(ENVELOPE)
        .cocoon("huge.raw", "null", &(17u64 << 40).to_string(), b"")
        .bytes();
    let err = refused(bytes, None).await;
    assert!(
        hostile(&err, "huge.raw") && err.to_string().contains("limit"),
        "{err}"
    );
    // The limit is settable.
    let bytes = Tar::new()
        .envelope(ENVELOPE)
        .file("mem", &[1u8; 10_000])
        .bytes();
    assert!(hostile(&refused(bytes, Some(4096)).await, "mem"));
}

#[tokio::test]
async fn broken_streams_are_errors() {
    let good = Tar::new()
        .envelope(ENVELOPE)
        .file("mem", &vec![7u8; 100_000])
        .bytes();

    let mut truncated = good.clone();
    truncated.truncate(50_000);
    let err = refused(truncated, None).await;
    assert!(matches!(err, Error::Io { .. }), "truncated: {err:?}");

    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(&good).unwrap();
        enc.finish().unwrap();
    }
    let n = gz.len();
    gz[n - 6] ^= 0x55; // inside the CRC-32
    assert!(
        matches!(refused(gz, None).await, Error::Io { .. }),
        "bad gzip crc"
    );

    let mut zst = zstd::encode_all(&good[..], 3).unwrap();
    zst.truncate(zst.len() - 10);
    assert!(
        matches!(refused(zst, None).await, Error::Io { .. }),
        "truncated zstd"
    );

    let mut random = vec![0u8; 64 * 1024];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    let err = refused(random, None).await;
    assert!(
        matches!(err, Error::Io { .. } | Error::EnvelopeMissing { .. }),
        "random bytes: {err:?}"
    );

    let err = refused(Vec::new(), None).await;
    assert!(
        chain(&err).contains("the archive is empty"),
        "empty input: {}",
        chain(&err)
    );
}

#[tokio::test]
async fn the_envelope_is_required_and_its_file_list_is_exact() {
    let err = refused(Tar::new().file("mem", b"m").bytes(), None).await;
    assert!(matches!(err, Error::EnvelopeMissing { .. }), "{err:?}");

    let v2 = Tar::new()
        .envelope(r#"{"config":{"name":"x"},"version":2}"#)
        .bytes();
    assert!(matches!(
        refused(v2, None).await,
        Error::EnvelopeVersion { version: 2, .. }
    ));

    let listed = r#"{"config":{"name":"x"},"version":1,"files":["mem","disk.raw"]}"#;
    let missing = Tar::new().envelope(listed).file("mem", b"m").bytes();
    assert!(
        matches!(refused(missing, None).await, Error::ListedFileMissing { name, .. } if name == "disk.raw")
    );
    let extra = Tar::new()
        .envelope(listed)
        .file("mem", b"m")
        .file("disk.raw", b"d")
        .file("x", b"x")
        .bytes();
    assert!(hostile(&refused(extra, None).await, "x"));
}

#[tokio::test]
async fn modes_in_the_archive_never_reach_the_store() {
    let s = store();
    let mut t = Tar::new().envelope(ENVELOPE);
    let h = Tar::header("suid", 4, tar::EntryType::Regular, 0o7777);
    t.0.append(&h, &b"evil"[..]).unwrap();
    let report = s.import(t.bytes()).await.unwrap();
    assert_eq!(mode(&s.data(&report.id).join("suid")), 0o444);
}

// ---------------------------------------------------------------- names that do not fit ustar

/// Exports the store's snapshot `name` in `format`, imports it into a fresh store, and checks
/// the same files come back byte for byte, and that GNU tar lists the names the store holds.
async fn round_trip_names(s: &Store, src: &Path, names: &[String], format: SparseFormat) {
    let opts = ExportOptions {
        sparse_format: format,
        ..ExportOptions::default()
    };
    let bytes = s.export("base", opts).await;
    let archive = s.tmp.path().join(format!("names-{}.tar", rand_suffix()));
    std::fs::write(&archive, &bytes).unwrap();
    let other = store();
    let report = other.import(bytes).await.unwrap();
    let listed: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_same_dir(src, &other.data(&report.id), &listed);

    let out = Command::new("tar")
        .args(["--warning=no-unknown-keyword", "-tf"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut tar_names: Vec<&str> = text.lines().filter(|n| *n != "snapshot.json").collect();
    tar_names.sort_unstable();
    let mut want = listed.clone();
    want.sort_unstable();
    assert_eq!(tar_names, want, "{format:?}");
}

/// A file of a test snapshot: its name, its size, and its data segments (offset, length).
type FileSpec = (String, u64, Vec<(u64, u64)>);

/// A snapshot dir holding `files`.
async fn saved_files(s: &Store, files: &[FileSpec]) -> PathBuf {
    let src = s.tmp.path().join(format!("src-{}", rand_suffix()));
    std::fs::create_dir(&src).unwrap();
    for (name, len, segments) in files {
        sparse_file(&src.join(name), *len, segments);
    }
    let config = Config {
        name: "base".into(),
        ..Config::default()
    };
    s.store
        .create(config, src.clone(), SaveOptions::default())
        .await
        .unwrap();
    src
}

#[tokio::test]
async fn long_multibyte_names_export_and_import_whole() {
    // 40 '€' are 120 bytes: a cut at byte 99 falls inside a character. (Before the fix, the
    // export panicked there.)
    let s = store();
    let euro = "€".repeat(40);
    let long_dense = format!("{}.raw", "d".repeat(200));
    let files = vec![
        (euro.clone(), 8 * MIB, vec![(MIB, 64 * 1024)]),
        (long_dense.clone(), 64 * 1024, vec![(0, 64 * 1024)]),
        ("memory-range-0".to_string(), MIB, vec![(0, MIB)]),
    ];
    let src = saved_files(&s, &files).await;
    let names: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    for format in [SparseFormat::Cocoon, SparseFormat::Gnu] {
        round_trip_names(&s, &src, &names, format).await;
    }
}

mod names {
    use super::*;
    use proptest::prelude::*;

    /// A file name the store accepts: 1-255 bytes of mixed one- to four-byte characters, not
    /// `.`, `..` or `snapshot.json`.
    fn file_name() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec!["a", "Z", "0", ".", "-", "_", " ", "é", "€", "𝄞"]);
        prop::collection::vec(piece, 1..90)
            .prop_map(|pieces| pieces.concat())
            .prop_filter("a plain name of at most 255 bytes", |n| {
                n.len() <= 255 && n != "." && n != ".." && n != "snapshot.json"
            })
    }

    /// A file's size and its data segments, in 4 KiB blocks.
    fn layout() -> impl Strategy<Value = (u64, Vec<(u64, u64)>)> {
        (1u64..64).prop_flat_map(|blocks| {
            let segment = (0..blocks, 1u64..8);
            prop::collection::vec(segment, 0..4).prop_map(move |segments| {
                let mut taken = Vec::<(u64, u64)>::new();
                let mut end = 0;
                let mut sorted = segments;
                sorted.sort_unstable();
                for (start, len) in sorted {
                    let len = len.min(blocks - start);
                    if start >= end && len > 0 {
                        taken.push((start * 4096, len * 4096));
                        end = start + len;
                    }
                }
                (blocks * 4096, taken)
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn any_name_the_store_accepts_exports_and_imports_whole(
            files in prop::collection::btree_map(file_name(), layout(), 1..4),
            gnu in any::<bool>(),
        ) {
            let files: Vec<FileSpec> = files
                .into_iter()
                .map(|(name, (len, segments))| (name, len, segments))
                .collect();
            let format = if gnu { SparseFormat::Gnu } else { SparseFormat::Cocoon };
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let s = store();
                let src = saved_files(&s, &files).await;
                let names: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
                round_trip_names(&s, &src, &names, format).await;
            });
        }
    }
}

// ---------------------------------------------------------------- what other tools' archives hold

#[tokio::test]
async fn malformed_numbers_in_pax_records_are_refused() {
    // GNU tar calls these records malformed; tar-rs would read the entry with its ustar size,
    // and the two tools would disagree on what the archive holds.
    let cases = [
        ("size", "12x"),
        ("size", "-1"),
        ("size", ""),
        ("size", "18446744073709551616"),
        ("GNU.sparse.realsize", "abc"),
        ("GNU.sparse.major", "1x"),
    ];
    for (key, value) in cases {
        let bytes = Tar::new()
            .envelope(ENVELOPE)
            .pax("disk.raw", &[(key, value)])
            .file("disk.raw", b"twelve bytes")
            .bytes();
        let err = refused(bytes, None).await;
        assert!(hostile(&err, "disk.raw"), "{key}={value}: {err:?}");
        assert!(
            chain(&err).contains(&format!("malformed PAX record: {key}")),
            "{err}"
        );
    }
    // A well-formed size is taken.
    let ok = Tar::new()
        .envelope(ENVELOPE)
        .pax("disk.raw", &[("size", "12")])
        .file("disk.raw", b"twelve bytes")
        .bytes();
    store().import(ok).await.unwrap();
}

#[tokio::test]
async fn a_gnu_volume_label_is_skipped() {
    // GNU tar's `tar -V LABEL` writes a 'V' header first; libarchive's test archives leave its
    // size field empty, which is not a number.
    let mut label = Tar::header_bytes(b"snapshot volume", 0, tar::EntryType::new(b'V'), 0o644);
    label.as_old_mut().size.fill(b' ');
    label.set_cksum();
    let mut bytes = label.as_bytes().to_vec();
    bytes.extend(
        Tar::new()
            .envelope(ENVELOPE)
            .file("disk.raw", b"data")
            .bytes(),
    );
    let s = store();
    let report = s.import(bytes).await.unwrap();
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["disk.raw"]);
}

#[tokio::test]
async fn what_is_not_a_tar_says_so_without_its_bytes() {
    let mut text = b"hello\x1b[31m, this is not an archive\xff\xfe".to_vec();
    text.resize(4096, b'\x01');
    let err = refused(text, None).await;
    let shown = chain(&err);
    assert!(
        shown.contains("not a tar archive (header checksum mismatch at byte 0)"),
        "{shown}"
    );
    // bzip2, xz, compress(1) and lz4 are named, with the command that reads them.
    let cases: [(&[u8], &str); 4] = [
        (b"BZh91AY&SY\x01\x02", "bzip2-compressed stream"),
        (b"\xfd7zXZ\x00\x00\x04", "xz-compressed stream"),
        (
            b"\x1f\x9d\x90\x2e\x00",
            "compress(1)-compressed (.Z) stream",
        ),
        (b"\x04\x22\x4d\x18\x64\x40", "lz4-compressed stream"),
    ];
    for (bytes, said) in cases {
        let err = refused(bytes.to_vec(), None).await;
        let shown = chain(&err);
        assert!(shown.contains(said), "{shown}");
        assert!(shown.contains("| snapstore import -"), "{shown}");
        let clean = !shown.chars().any(|c| c.is_control() || c == '\u{fffd}');
        assert!(clean, "{shown:?}");
    }
}
