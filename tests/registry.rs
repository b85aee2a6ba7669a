//! Push and pull through a real OCI registry (Debian's `docker-registry` on loopback): round
//! trips that keep bytes, sizes and holes on btrfs, XFS and ext4; only changed windows moved
//! for a child; re-runs that resume; and the registry treated as untrusted input, each bad case
//! failing clearly with nothing committed.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::{Path, PathBuf};

use common::registry::{Registry, TokenServer, file_digest, free_port, sha256};
use common::*;
use serde_json::{Value, json};

/// The window the tests push with: the smallest, so a small snapshot spans several.
const CHUNK: &str = "16M";
const WINDOW: u64 = 16 * MIB;

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// A snapshot dir: 8 MiB of memory (half holes), a 256 MiB disk with 16 MiB of data in 16
/// pieces, and two small files.
fn source(dir: &Path) -> PathBuf {
    vm_snapshot(dir, 8 * MIB, 256 * MIB, 16 * MIB)
}

/// A `$DOCKER_CONFIG` dir under `dir` whose `config.json` holds `user:password` for `registry`,
/// as `docker login` writes it.
fn docker_login(dir: &Path, registry: &Registry, user_password: &str) -> PathBuf {
    let docker = dir.join("docker");
    std::fs::create_dir(&docker).unwrap();
    let auth = data_encoding::BASE64.encode(user_password.as_bytes());
    let config = json!({"auths": {registry.host(): {"auth": auth}}});
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    docker
}

/// Checks that a run of snapstore exited 0; its stderr.
fn succeeded(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// Saves the directory `src` into the store at `root` as `name`.
fn save(root: &Path, src: &Path, name: &str) {
    ok(
        root,
        &["save", "--from-dir", src.to_str().unwrap(), "--name", name],
    );
}

fn push(root: &Path, reference: &str, target: &str, extra: &[&str]) -> Value {
    let mut args = vec!["push", reference, target, "--chunk-size", CHUNK, "--json"];
    args.extend_from_slice(extra);
    json_of(&ok(root, &args))
}

fn pull(root: &Path, source: &str, extra: &[&str]) -> Value {
    let mut args = vec!["pull", source, "--json"];
    args.extend_from_slice(extra);
    json_of(&ok(root, &args))
}

fn data_dir(root: &Path, id: &str) -> PathBuf {
    root.join("snapshot/localfile").join(id)
}

/// Every file of `a` and `b` has the same bytes, size and data segments, and `b` allocates no
/// more than `a` plus 1%.
fn assert_same_files(a: &Path, b: &Path) {
    assert_eq!(file_sizes(a), file_sizes(b));
    let (mut blocks_a, mut blocks_b) = (0, 0);
    for name in file_sizes(a).keys() {
        let (fa, fb) = (a.join(name), b.join(name));
        assert_eq!(file_digest(&fa), file_digest(&fb), "{name} differs");
        assert_eq!(
            data_segments(&fa),
            data_segments(&fb),
            "{name}: holes differ"
        );
        blocks_a += blocks(&fa);
        blocks_b += blocks(&fb);
    }
    assert!(
        blocks_b * 100 <= blocks_a * 101,
        "{blocks_b} blocks pulled for {blocks_a}"
    );
}

/// A registry, the source dir, a store `one` that saved it as `base`, and an empty store
/// `two`, all under `scratch`; `None` (SKIPPED) without the registry.
fn saved(scratch: &Path) -> Option<(Registry, PathBuf, PathBuf, PathBuf)> {
    let registry = Registry::start()?;
    let src = source(&scratch.join("src"));
    let (one, two) = (scratch.join("one"), scratch.join("two"));
    save(&one, &src, "base");
    Some((registry, src, one, two))
}

fn round_trip(scratch: &Path) {
    let Some((registry, src, one, two)) = saved(scratch) else {
        return;
    };
    let target = registry.at("vm/base");
    let first = push(&one, "base", &target, &[]);
    assert_eq!(first["target"], format!("{target}:base"));
    assert!(first["blobs_uploaded"].as_u64().unwrap() >= 17, "{first}");
    assert_eq!(first["bytes_skipped"], 0);

    // Unchanged: nothing sent, and the same digest, since nothing in it depends on the time.
    let again = push(&one, "base", &target, &[]);
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(again["digest"], first["digest"]);

    let pulled = pull(&two, &format!("{target}:base"), &[]);
    assert_eq!(pulled["digest"], first["digest"]);
    let id = pulled["id"].as_str().unwrap();
    assert_same_files(&src, &data_dir(&two, id));
    let listed = ok(&two, &["list", "--json"]);
    assert!(listed.contains("\"base\""), "{listed}");
    assert!(ok(&two, &["verify", "--json"]).contains("\"ok\""));
    // The artifact's name is taken now: refused before a byte is downloaded, as import does.
    let err = fails(&two, &["pull", &format!("{target}:base")]);
    assert!(err.contains("already taken"), "{err}");
    // Pushed again from the second store: the same artifact, byte for byte.
    let from_two = push(&two, "base", &registry.at("vm/copy"), &[]);
    assert_eq!(from_two["digest"], first["digest"]);
    // And by digest, uncompressed.
    let raw = push(
        &one,
        "base",
        &registry.at("vm/raw:v1"),
        &["--compress", "none"],
    );
    let by_digest = format!(
        "{}@{}",
        registry.at("vm/raw"),
        raw["digest"].as_str().unwrap()
    );
    let three = scratch.join("three");
    let pulled = pull(&three, &by_digest, &["--name", "raw"]);
    assert_same_files(&src, &data_dir(&three, pulled["id"].as_str().unwrap()));
}

#[test]
fn a_round_trip_keeps_bytes_sizes_and_holes_on_ext4() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip(tmp.path());
}

#[test]
fn a_round_trip_keeps_bytes_sizes_and_holes_on_btrfs() {
    if let Some(dir) = cow_dir("SNAPSTORE_TEST_BTRFS") {
        round_trip(dir.path());
    }
}

#[test]
fn a_round_trip_keeps_bytes_sizes_and_holes_on_xfs() {
    if let Some(dir) = cow_dir("SNAPSTORE_TEST_XFS") {
        round_trip(dir.path());
    }
}

/// A pull writes its windows past the page cache (O_DIRECT), and each window's region in one
/// piece, as the kernel shows: the page-cache residency of the pulled memory, and its extents.
/// On XFS, as on ext4; btrfs serves a direct write of checksummed data through the cache, so
/// there the residency would say nothing.
#[test]
fn a_pull_writes_past_the_page_cache_and_each_window_in_one_piece_on_xfs() {
    let Some(dir) = cow_dir("SNAPSTORE_TEST_XFS") else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    // Memory written whole, as a hypervisor dumps it: one extent of four windows.
    let src = source(&dir.path().join("src"));
    let memory = src.join("memory-range-0");
    std::fs::remove_file(&memory).unwrap();
    sparse_file(&memory, 4 * WINDOW, &[(0, 4 * WINDOW)]);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    save(&one, &src, "base");
    let target = registry.at("vm/base");
    push(&one, "base", &target, &["--compress", "none"]);
    let pulled = pull(&two, &format!("{target}:base"), &["--jobs", "4"]);
    let copy = data_dir(&two, pulled["id"].as_str().unwrap());
    // Before anything reads it: 64 MiB written, next to none of it cached.
    let cached = cached_bytes(&copy.join("memory-range-0"));
    assert!(cached <= MIB, "{cached} bytes of the pulled memory cached");
    // Four windows written at once, yet no window's region split up on disk.
    let extents = filefrag_extents(&copy.join("memory-range-0"));
    assert!(extents.len() <= 4, "{} extents: {extents:?}", extents.len());
    assert_same_files(&src, &copy);
}

/// A child that changed 16 MiB of its parent's disk: its push sends at most two windows, and
/// a pull next to the parent downloads at most two, the rest cloned from the parent.
fn child_moves_only_changed_windows(scratch: &Path, shares: bool) {
    let Some((registry, src, one, two)) = saved(scratch) else {
        return;
    };
    // The child: the same files with 16 MiB rewritten at an unaligned offset.
    let child = scratch.join("child");
    std::fs::create_dir(&child).unwrap();
    for name in file_sizes(&src).keys() {
        // Holes kept on any filesystem, as the VM's own copy-on-write child would have them.
        let status = std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(src.join(name))
            .arg(child.join(name))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let disk = std::fs::OpenOptions::new()
        .write(true)
        .open(child.join("cow.raw"))
        .unwrap();
    let changed = vec![0x5au8; 16 * MIB as usize];
    std::os::unix::fs::FileExt::write_all_at(&disk, &changed, 100 * MIB + 8192).unwrap();
    save(&one, &child, "child");

    push(&one, "base", &registry.at("vm/base"), &[]);
    let pushed = push(&one, "child", &registry.at("vm/base"), &[]);
    // Two windows of the disk, and the config.
    assert!(pushed["blobs_uploaded"].as_u64().unwrap() <= 3, "{pushed}");

    let base = pull(&two, &registry.at("vm/base:base"), &[]);
    let pulled = pull(&two, &registry.at("vm/base:child"), &[]);
    let downloaded = pulled["bytes_downloaded"].as_u64().unwrap();
    assert!(downloaded <= 2 * WINDOW, "{pulled}");
    assert!(
        pulled["bytes_cloned_locally"].as_u64().unwrap() > 0,
        "{pulled}"
    );
    let (base_dir, child_dir) = (
        data_dir(&two, base["id"].as_str().unwrap()),
        data_dir(&two, pulled["id"].as_str().unwrap()),
    );
    assert_same_files(&child, &child_dir);
    if shares {
        // The kernel's word: the child's disk shares extents with the parent's, all but the
        // windows it downloaded.
        let shared = filefrag_shared_bytes(&child_dir.join("cow.raw"));
        let data: u64 = data_segments(&child_dir.join("cow.raw"))
            .iter()
            .map(|s| s.1)
            .sum();
        assert!(
            shared + 2 * WINDOW >= data,
            "{shared} of {data} bytes shared"
        );
        assert!(filefrag_shared_bytes(&base_dir.join("cow.raw")) > 0);
    }
}

#[test]
fn a_child_pushes_and_pulls_only_its_changed_windows_on_ext4() {
    let tmp = tempfile::tempdir().unwrap();
    child_moves_only_changed_windows(tmp.path(), false);
}

#[test]
fn a_child_pulled_beside_its_parent_shares_extents_on_btrfs() {
    if let Some(dir) = cow_dir("SNAPSTORE_TEST_BTRFS") {
        child_moves_only_changed_windows(dir.path(), true);
    }
}

#[test]
fn a_child_pulled_beside_its_parent_shares_extents_on_xfs() {
    if let Some(dir) = cow_dir("SNAPSTORE_TEST_XFS") {
        child_moves_only_changed_windows(dir.path(), true);
    }
}

/// A pushed snapshot in a fresh registry: (registry, store, source dir, push report).
fn pushed(scratch: &Path, compress: &str) -> Option<(Registry, PathBuf, PathBuf, Value)> {
    let (registry, src, root, _) = saved(scratch)?;
    let report = push(
        &root,
        "base",
        &registry.at("vm/base"),
        &["--compress", compress],
    );
    Some((registry, root, src, report))
}

/// The layers of the pushed artifact, (digest, size) in manifest order, from its manifest in
/// the registry's storage.
fn manifest_layers(registry: &Registry, manifest: &str) -> Vec<(String, u64)> {
    let bytes = std::fs::read(registry.blob_file(manifest)).unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().to_string();
            (digest, l["size"].as_u64().unwrap())
        })
        .collect()
}

/// The layer digests of the pushed artifact, in manifest order.
fn layers(registry: &Registry, manifest: &str) -> Vec<String> {
    manifest_layers(registry, manifest)
        .into_iter()
        .map(|(d, _)| d)
        .collect()
}

#[test]
fn a_pull_cut_off_resumes_and_downloads_only_the_missing_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((registry, _, src, report)) = pushed(tmp.path(), "zstd") else {
        return;
    };
    let layers = layers(&registry, report["digest"].as_str().unwrap());
    // The pull breaks at the middle layer: its blob is gone from the registry's storage.
    let victim = registry.blob_file(&layers[layers.len() / 2]);
    let saved = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, b"").unwrap();
    let two = tmp.path().join("two");
    let source = registry.at("vm/base:base");
    let err = fails(&two, &["pull", &source, "--jobs", "1"]);
    assert!(err.contains("blob"), "{err}");
    assert_eq!(ok(&two, &["list"]).lines().count(), 1, "nothing listed");
    let staging = two.join("snapshot/staging");
    assert!(
        tree(&staging).iter().any(|p| p.starts_with("pull-")),
        "{:?}",
        tree(&staging)
    );

    std::fs::write(&victim, saved).unwrap();
    let resumed = pull(&two, &source, &[]);
    // With one job, the windows before the broken one were finished and journaled.
    let sizes: Vec<u64> = manifest_layers(&registry, report["digest"].as_str().unwrap())
        .into_iter()
        .map(|(_, size)| size)
        .collect();
    let (total, before): (u64, u64) = (sizes.iter().sum(), sizes[..layers.len() / 2].iter().sum());
    let again = resumed["bytes_downloaded"].as_u64().unwrap();
    assert!(before > 0 && again > 0, "{sizes:?}");
    assert!(
        again <= total - before,
        "resumed pull downloaded {again} of {total}"
    );
    assert_same_files(&src, &data_dir(&two, resumed["id"].as_str().unwrap()));
    assert!(tree(&staging).is_empty(), "{:?}", tree(&staging));
}

#[test]
fn a_push_run_again_sends_only_the_blobs_the_registry_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((registry, root, _, report)) = pushed(tmp.path(), "zstd") else {
        return;
    };
    let layers = layers(&registry, report["digest"].as_str().unwrap());
    // As after a push killed midway: two blobs missing.
    for layer in &layers[..2] {
        let (status, _) = registry.request(
            "DELETE",
            &format!("/v2/vm/base/blobs/{layer}"),
            "text/plain",
            b"",
        );
        assert_eq!(status, 202);
    }
    let again = push(&root, "base", &registry.at("vm/base"), &[]);
    assert_eq!(again["blobs_uploaded"], 2, "{again}");
    assert_eq!(again["digest"], report["digest"]);
}

#[test]
fn a_corrupt_blob_in_the_registry_is_named_and_nothing_is_committed() {
    let tmp = tempfile::tempdir().unwrap();
    for compress in ["zstd", "none"] {
        let scratch = tmp.path().join(compress);
        let Some((registry, _, _, report)) = pushed(&scratch, compress) else {
            return;
        };
        let layer = &layers(&registry, report["digest"].as_str().unwrap())[0];
        let path = registry.blob_file(layer);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let two = scratch.join("two");
        let err = fails(&two, &["pull", &registry.at("vm/base:base")]);
        assert!(
            err.contains(layer.as_str()) && err.contains("corrupt"),
            "{err}"
        );
        assert!(err.contains(" for \""), "the file is named: {err}");
        assert!(err.contains("bytes 0.."), "the window is named: {err}");
        assert_eq!(ok(&two, &["list"]).lines().count(), 1, "nothing listed");
    }
}

#[test]
fn verify_names_the_file_and_range_that_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("one");
    let src = source(&tmp.path().join("src"));
    save(&root, &src, "base");
    let unrecorded = ok(&root, &["verify", "--json"]);
    assert!(unrecorded.contains("\"unrecorded\""), "{unrecorded}");
    assert!(ok(&root, &["verify", "--record", "--json"]).contains("\"recorded\""));
    assert!(ok(&root, &["verify", "base", "--json"]).contains("\"ok\""));
    let id = json_of(&ok(&root, &["inspect", "base"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let disk = data_dir(&root, &id).join("cow.raw");
    let offset = data_segments(&disk)[3].0 + 100;
    std::fs::set_permissions(&disk, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"bitrot", offset).unwrap();
    let out = snapstore(&root, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let window = offset / (64 * MIB) * (64 * MIB);
    assert!(
        text.contains(&format!("\"cow.raw\" bytes {window}..")),
        "{text}"
    );
    assert!(text.contains("MISMATCH"), "{text}");
}

#[test]
fn an_unreachable_registry_unknown_tags_and_foreign_artifacts_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let src = source(&tmp.path().join("src"));
    save(&root, &src, "base");
    let before = store_state(&root);
    let nowhere = format!("127.0.0.1:{}/vm/base", free_port());
    let err = fails(&root, &["push", "base", &nowhere]);
    assert!(err.contains("cannot reach registry 127.0.0.1"), "{err}");
    let err = fails(&root, &["pull", &nowhere]);
    assert!(err.contains("cannot reach registry"), "{err}");
    let err = fails(&root, &["pull", "not a reference"]);
    assert!(err.contains("invalid registry reference"), "{err}");

    let Some(registry) = Registry::start() else {
        return;
    };
    let err = fails(&root, &["pull", &registry.at("vm/none:v1")]);
    assert!(err.contains("is not in the registry"), "{err}");
    let zeros = format!("{}@sha256:{}", registry.at("vm/none"), "0".repeat(64));
    assert!(fails(&root, &["pull", &zeros]).contains("is not in the registry"));

    // An ordinary container image.
    let config = registry.put_blob("vm/image", b"{}");
    registry.put_manifest("vm/image", "v1", &json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": []
    }));
    let err = fails(&root, &["pull", &registry.at("vm/image:v1")]);
    assert!(err.contains("is not a snapstore snapshot"), "{err}");
    assert_eq!(
        store_state(&root),
        before,
        "a failed pull changed the store"
    );
}

/// Stores a crafted snapstore artifact: `files` in the config, `layers` as (media type, bytes).
fn craft(registry: &Registry, tag: &str, files: Value, layers: &[(&str, Vec<u8>)]) -> String {
    let descriptors: Vec<Value> = layers
        .iter()
        .map(|(media_type, bytes)| {
            let digest = registry.put_blob("vm/craft", bytes);
            json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
        })
        .collect();
    let config = json!({
        "version": 1, "chunk_size": WINDOW,
        "envelope": {"config": {"name": tag}, "version": 1},
        "files": files,
    });
    let config = serde_json::to_vec(&config).unwrap();
    let digest = registry.put_blob("vm/craft", &config);
    registry.put_manifest("vm/craft", tag, &json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.snapstore.snapshot.v1+json",
        "config": {"mediaType": "application/vnd.snapstore.snapshot.config.v1+json", "digest": digest, "size": config.len()},
        "layers": descriptors,
    }));
    registry.at(&format!("vm/craft:{tag}"))
}

const ZSTD_LAYER: &str = "application/vnd.snapstore.chunk.v1.zstd";

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

#[test]
fn hostile_configs_and_blobs_that_disagree_with_their_map_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(registry) = Registry::start() else {
        return;
    };
    let root = tmp.path().join("store");
    ok(&root, &["list"]);
    let before = store_state(&root);
    let outside = tree(tmp.path());
    let data = vec![7u8; 8192];
    let layer = zstd(&data);
    let layer_digest = sha256(&layer);
    let chunk = |runs: Value, digest: &str| json!([{"offset": 0, "length": WINDOW, "runs": runs, "digest": digest, "layer": layer_digest}]);
    let good = sha256(&data);
    let cases = [
        (
            "abs",
            json!([{"name": "/etc/passwd", "size": WINDOW, "chunks": []}]),
            "plain name",
        ),
        (
            "dots",
            json!([{"name": "../../x", "size": WINDOW, "chunks": []}]),
            "plain name",
        ),
        (
            "dup",
            json!([{"name": "a", "size": 1, "chunks": []}, {"name": "a", "size": 1, "chunks": []}]),
            "twice",
        ),
        (
            "huge",
            json!([{"name": "d", "size": 1u64 << 50, "chunks": []}]),
            "over the limit",
        ),
        (
            "overlap",
            json!([{"name": "d", "size": WINDOW, "chunks": chunk(json!([[0, 8192], [4096, 4096]]), &good)}]),
            "overlaps",
        ),
        (
            "past",
            json!([{"name": "d", "size": 8192, "chunks": [{"offset": 0, "length": 8192, "runs": [[4096, 8192]], "digest": good, "layer": layer_digest}]}]),
            "leaves the window",
        ),
        (
            "short",
            json!([{"name": "d", "size": WINDOW, "chunks": chunk(json!([[0, 16384]]), &good)}]),
            "less data than its map",
        ),
        (
            "long",
            json!([{"name": "d", "size": WINDOW, "chunks": chunk(json!([[0, 4096]]), &good)}]),
            "more data than its map",
        ),
        (
            "lie",
            json!([{"name": "d", "size": WINDOW, "chunks": chunk(json!([[0, 8192]]), &sha256(b"other"))}]),
            "not to the window's",
        ),
    ];
    for (tag, files, want) in cases {
        let source = craft(&registry, tag, files, &[(ZSTD_LAYER, layer.clone())]);
        let err = fails(&root, &["pull", &source]);
        assert!(err.contains(want), "{tag}: {err}");
        assert_eq!(
            ok(&root, &["list"]).lines().count(),
            1,
            "{tag}: nothing listed"
        );
    }
    // A name that is not UTF-8 cannot even be written in the config's JSON.
    let source = craft(
        &registry,
        "fine",
        json!([{"name": "d", "size": WINDOW, "chunks": chunk(json!([[0, 8192]]), &good)}]),
        &[(ZSTD_LAYER, layer)],
    );
    pull(&root, &source, &[]);
    assert_ne!(store_state(&root), before);
    assert_eq!(
        tree(tmp.path())
            .iter()
            .filter(|p| !p.starts_with("store"))
            .count(),
        outside.iter().filter(|p| !p.starts_with("store")).count(),
        "written outside the store"
    );
}

#[test]
fn credentials_are_asked_for_checked_and_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(registry) = Registry::with_login("alice", "s3cr3t-pw") else {
        return;
    };
    let root = tmp.path().join("store");
    let src = source(&tmp.path().join("src"));
    save(&root, &src, "base");
    let target = registry.at("vm/base");
    let empty = tmp.path().join("no-docker");
    let run = |args: &[&str], password: Option<&str>, docker: &Path| {
        let mut cmd = command_in(&root);
        cmd.args(args).env("DOCKER_CONFIG", docker);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(pw) = password {
            std::io::Write::write_all(&mut stdin, pw.as_bytes()).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out = run(&["push", "base", &target], None, &empty);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("(401)") && err.contains("credentials needed"),
        "{err}"
    );
    let login = [
        "push",
        "base",
        &target,
        "--username",
        "alice",
        "--password-stdin",
    ];
    let out = run(&login, Some("wrong-pw\n"), &empty);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("wrong-pw"), "{err}");
    let out = run(&login, Some("s3cr3t-pw\n"), &empty);
    let err = succeeded(&out);
    assert!(!err.contains("s3cr3t"), "{err}");
    // From docker login's config.
    let docker = docker_login(tmp.path(), &registry, "alice:s3cr3t-pw");
    let two = tmp.path().join("two");
    let mut cmd = command_in(&two);
    let out = cmd
        .args(["pull", &format!("{target}:base")])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    succeeded(&out);
}

#[test]
fn a_full_disk_mid_pull_fails_clearly_and_commits_nothing() {
    let Some(small) = cow_dir("SNAPSTORE_TEST_SMALL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(registry) = Registry::start() else {
        return;
    };
    let src = vm_snapshot(&tmp.path().join("src"), 8 * MIB, 1024 * MIB, 320 * MIB);
    let root = tmp.path().join("one");
    save(&root, &src, "big");
    push(
        &root,
        "big",
        &registry.at("vm/big"),
        &["--compress", "none"],
    );
    let small_root = small.path().join("store");
    ok(&small_root, &["list"]);
    let before = store_state(&small_root);
    let err = fails(&small_root, &["pull", &registry.at("vm/big:big")]);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(store_state(&small_root).0, before.0, "the index changed");
    ok(&small_root, &["gc", "--grace", "0s"]);
    assert!(tree(&small_root.join("snapshot/staging")).is_empty());
}

#[test]
fn gc_removes_a_pull_abandoned_past_the_grace_period_only() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((registry, _, _, report)) = pushed(tmp.path(), "zstd") else {
        return;
    };
    let layer = &layers(&registry, report["digest"].as_str().unwrap())[1];
    std::fs::write(registry.blob_file(layer), b"").unwrap();
    let two = tmp.path().join("two");
    fails(&two, &["pull", &registry.at("vm/base:base")]);
    let staging = two.join("snapshot/staging");
    assert!(!tree(&staging).is_empty());
    ok(&two, &["gc"]);
    assert!(
        !tree(&staging).is_empty(),
        "a fresh pull staging is kept for a re-run"
    );
    let removed = ok(&two, &["gc", "--grace", "0s", "--json"]);
    assert!(removed.contains("abandoned-pull"), "{removed}");
    assert!(tree(&staging).is_empty(), "{:?}", tree(&staging));
}

#[test]
fn bearer_tokens_come_from_the_realm_with_the_credentials_and_are_renewed_midway() {
    let Some(tokens) = TokenServer::start("alice", "t0ken-pw") else {
        return;
    };
    let Some(registry) = Registry::with_tokens(&tokens) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let src = source(&tmp.path().join("src"));
    save(&root, &src, "base");
    let target = registry.at("vm/base");
    let nobody = tmp.path().join("nobody");
    let out = command_in(&root)
        .args(["push", "base", &target])
        .env("DOCKER_CONFIG", &nobody)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("credentials needed"), "{err}");

    let docker = docker_login(tmp.path(), &registry, "alice:t0ken-pw");
    let before = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    let out = command_in(&root)
        .args(["push", "base", &target])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    succeeded(&out);
    // The first token allowed only pull: the uploads were refused with it, and a second one
    // was fetched in the middle of the push.
    let issued = tokens.issued.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(issued >= 2, "{issued} tokens for one push");
    let two = tmp.path().join("two");
    let out = command_in(&two)
        .args(["pull", &format!("{target}:base")])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(!succeeded(&out).contains("t0ken-pw"));
}

#[test]
fn transient_failures_are_retried_with_backoff() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let src = source(&tmp.path().join("src"));
    save(&root, &src, "base");
    use common::registry::{Flake, FlakyProxy};
    let flakes = vec![
        Flake::Unavailable,
        Flake::Hangup,
        Flake::TooMany,
        Flake::Hangup,
    ];
    let proxy = FlakyProxy::start(registry.port, flakes.clone());
    let through = format!("127.0.0.1:{}/vm/base", proxy.port);
    let pushed = push(&root, "base", &through, &["--jobs", "1"]);
    assert_eq!(pushed["bytes_skipped"], 0, "{pushed}");
    let proxy = FlakyProxy::start(registry.port, flakes);
    let two = tmp.path().join("two");
    let pulled = pull(
        &two,
        &format!("127.0.0.1:{}/vm/base:base", proxy.port),
        &["--jobs", "1"],
    );
    assert_same_files(&src, &data_dir(&two, pulled["id"].as_str().unwrap()));
}
