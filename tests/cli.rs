//! The `snapstore` binary run as a process: output, exit statuses, and error messages that name
//! the ref or path.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = vm_snapshot(&tmp.path().join("src"), 2 * MIB, 16 * MIB, MIB);
    let root = tmp.path().join("root");
    (tmp, root, src)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn save_prints_the_id_and_json_reports_files() {
    let (_tmp, root, src) = setup();
    let id = ok(&root, &["save", "--from-dir", s(&src), "--name", "base"]);
    let id = id.trim();
    assert_eq!(id.len(), 26, "{id}");

    let report = json(&ok(
        &root,
        &["--json", "save", "--from-dir", s(&src), "--name", "two"],
    ));
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    for f in files {
        assert!(
            f["name"].is_string() && f["method"].is_string() && f["bytes"].is_u64(),
            "{f}"
        );
    }
    assert_eq!(report["skipped"], Value::Array(vec![]));
    assert_eq!(report["id"].as_str().unwrap().len(), 26);
}

#[test]
fn save_takes_config_from_the_dir_envelope_or_a_file() {
    let (tmp, root, src) = setup();
    std::fs::write(
        src.join("snapshot.json"),
        r#"{"config":{"name":"from-env","cpu":4},"version":1}"#,
    )
    .unwrap();
    ok(&root, &["save", "--from-dir", s(&src)]);
    let rec = json(&ok(&root, &["inspect", "from-env"]));
    assert_eq!(rec["cpu"], 4);

    let cfg = tmp.path().join("cfg.json");
    std::fs::write(&cfg, r#"{"name":"from-file","memory":1073741824}"#).unwrap();
    ok(
        &root,
        &[
            "save",
            "--from-dir",
            s(&src),
            "--config",
            s(&cfg),
            "--description",
            "d",
        ],
    );
    let rec = json(&ok(&root, &["inspect", "from-file"]));
    assert_eq!(rec["memory"], 1_073_741_824u64);
    assert_eq!(rec["description"], "d");

    std::fs::write(&cfg, "{not json").unwrap();
    let err = fails(&root, &["save", "--from-dir", s(&src), "--config", s(&cfg)]);
    assert!(err.contains("cfg.json"), "{err}");
}

#[test]
fn list_is_a_table_oldest_first_and_json_without_pending() {
    let (_tmp, root, src) = setup();
    ok(
        &root,
        &[
            "save",
            "--from-dir",
            s(&src),
            "--name",
            "first",
            "--description",
            "the first",
        ],
    );
    ok(&root, &["save", "--from-dir", s(&src), "--name", "second"]);
    let table = ok(&root, &["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for col in [
        "ID",
        "NAME",
        "CPU",
        "MEMORY",
        "SIZE",
        "DESCRIPTION",
        "CREATED",
    ] {
        assert!(lines[0].contains(col), "{col} in {}", lines[0]);
    }
    assert!(lines[1].contains("first") && lines[1].contains("the first"));
    assert!(lines[2].contains("second"));

    let list = json(&ok(&root, &["list", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "first");
    assert!(list[0].get("pending").is_none());
    assert!(list[0]["size_bytes"].as_u64().unwrap() > 18 * MIB);
}

#[test]
fn errors_exit_1_and_name_the_ref_or_path() {
    let (tmp, root, src) = setup();
    ok(&root, &["save", "--from-dir", s(&src), "--name", "base"]);

    let err = fails(&root, &["inspect", "nope"]);
    assert!(err.contains("\"nope\""), "{err}");
    let err = fails(&root, &["save", "--from-dir", s(&src), "--name", "base"]);
    assert!(err.contains("\"base\"") && err.contains("taken"), "{err}");
    let missing = tmp.path().join("missing-dir");
    let err = fails(&root, &["save", "--from-dir", s(&missing)]);
    assert!(err.contains("missing-dir"), "{err}");
    let err = fails(&root, &["import", "--from-dir", s(&src)]);
    assert!(
        err.contains("snapshot.json missing") && err.contains(s(&src)),
        "{err}"
    );

    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), b"x").unwrap();
    let err = fails(&root, &["clone", "base", "--to-dir", s(&busy)]);
    assert!(err.contains("not empty") && err.contains("busy"), "{err}");
    let err = fails(&root, &["export", "base", "--to-dir", s(&busy)]);
    assert!(err.contains("not empty"), "{err}");

    // A name that would rewrite the terminal, or forge a line, is shown escaped.
    let hostile = tmp.path().join("busy\n\u{1b}[2Jforged");
    std::fs::rename(&busy, &hostile).unwrap();
    let err = fails(&root, &["clone", "base", "--to-dir", s(&hostile)]);
    assert!(err.contains("busy\\n\\u{1b}[2Jforged"), "{err}");
    assert!(
        !err.contains('\u{1b}') && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (_tmp, root, _src) = setup();
    for args in [
        &["bogus"][..],
        &["rm"],
        &["clone", "--to-dir", "x"],
        &["save"],
        &["save", "--from-dir", "x", "--move", "--link"],
    ] {
        let out = snapstore(&root, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

#[test]
fn rm_prints_each_id_and_deletes_nothing_when_a_ref_fails() {
    let (_tmp, root, src) = setup();
    let a = ok(&root, &["save", "--from-dir", s(&src), "--name", "a"])
        .trim()
        .to_string();
    let b = ok(&root, &["save", "--from-dir", s(&src), "--name", "b"])
        .trim()
        .to_string();
    let before = store_state(&root);
    let err = fails(&root, &["rm", "a", "zzz-none"]);
    assert!(err.contains("zzz-none"), "{err}");
    assert_eq!(store_state(&root), before);
    let out = ok(&root, &["rm", "a", &b[..5]]);
    assert_eq!(out.lines().collect::<Vec<_>>(), [a.as_str(), b.as_str()]);
    assert_eq!(ok(&root, &["list", "--json"]).trim(), "[]");
}

/// A lease held by another process (this test process, through the library) makes `rm` in the
/// CLI fail with "in use"; `--force` deletes anyway.
#[tokio::test]
async fn rm_of_a_snapshot_leased_by_another_process_is_in_use() {
    use snapstore::Direct;
    let (_tmp, root, src) = setup();
    ok(&root, &["save", "--from-dir", s(&src), "--name", "base"]);
    let store = snapstore::LocalFile::open(&root).unwrap();
    let (_dir, _cfg, lease) = store.data_dir("base").await.unwrap();
    let err = fails(&root, &["rm", "base"]);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(
        json(&ok(&root, &["list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    ok(&root, &["rm", "--force", "base"]);
    drop(lease);
}

#[test]
fn clone_export_import_round_trip_through_the_cli() {
    let (tmp, root, src) = setup();
    ok(&root, &["save", "--from-dir", s(&src), "--name", "base"]);

    let run = tmp.path().join("run");
    let report = json(&ok(
        &root,
        &["--json", "clone", "base", "--to-dir", s(&run)],
    ));
    assert_eq!(report["config"]["name"], "base");
    assert_eq!(report["files"].as_array().unwrap().len(), 4);
    let table = ok(
        &root,
        &[
            "clone",
            "base",
            "--to-dir",
            s(&tmp.path().join("run2")),
            "--no-hardlink",
            "--sync",
        ],
    );
    assert!(
        table.starts_with("FILE") && !table.contains("hardlink"),
        "{table}"
    );
    for name in ["config.json", "cow.raw", "memory-range-0", "state.json"] {
        let (a, b) = (src.join(name), tmp.path().join("run2").join(name));
        assert!(same_file(&a, &b), "{name}");
    }

    let out = tmp.path().join("out");
    ok(&root, &["export", "base", "--to-dir", s(&out), "--sync"]);
    assert!(out.join("snapshot.json").exists());
    // The kernel's word that nothing was left for writeback: by the save, and by --sync.
    let base = json(&ok(&root, &["inspect", "base"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = root.join("snapshot/localfile").join(base);
    for dir in [&stored, &tmp.path().join("run2"), &out] {
        for name in ["config.json", "cow.raw", "memory-range-0", "state.json"] {
            let path = dir.join(name);
            if let Some(pages) = unwritten_pages(&path) {
                assert_eq!(pages, 0, "{} still dirty", path.display());
            }
        }
    }
    let id = ok(&root, &["import", "--from-dir", s(&out), "--name", "copy"]);
    assert_eq!(json(&ok(&root, &["inspect", "copy"]))["id"], id.trim());

    let run3 = tmp.path().join("run3");
    ok(
        &root,
        &["clone", "--from-dir", s(&out), "--to-dir", s(&run3)],
    );
    for name in ["config.json", "cow.raw", "memory-range-0", "state.json"] {
        assert!(same_file(&src.join(name), &run3.join(name)), "{name}");
    }
    assert!(!run3.join("snapshot.json").exists());
}

#[test]
fn tar_export_names_its_output_and_pipes_into_import() {
    let (tmp, root, src) = setup();
    ok(&root, &["save", "--from-dir", s(&src), "--name", "base"]);
    let run = |args: &[&str]| {
        let out = common::command_in(&root)
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["export", "base"]);
    run(&["export", "base", "--gzip", "--sync"]);
    run(&["export", "base", "--zstd", "--sparse-format", "gnu"]);
    for (name, magic) in [
        ("base.tar", &b"snap"[..]),
        ("base.tar.gz", &[0x1f, 0x8b]),
        ("base.tar.zst", &[0x28, 0xb5]),
    ] {
        let bytes = std::fs::read(tmp.path().join(name)).unwrap();
        assert!(bytes.starts_with(magic), "{name}");
        assert_eq!(mode(&tmp.path().join(name)), 0o644, "{name}");
        // The same files whether made durable or left to writeback.
        let archive = tmp.path().join(name);
        let mut args = vec!["import", s(&archive), "--name", name];
        if name.ends_with(".zst") {
            args.push("--no-sync");
        }
        let id = ok(&root, &args);
        assert_eq!(id.trim().len(), 26);
        let data = root.join("snapshot/localfile").join(id.trim());
        for file in ["config.json", "cow.raw", "memory-range-0", "state.json"] {
            assert!(
                same_file(&src.join(file), &data.join(file)),
                "{name}: {file}"
            );
        }
    }

    // export -o - | import, through a real pipe.
    let piped = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{bin}' --root '{root}' export base -o - | '{bin}' --root '{root}' import --name piped --description via-pipe",
            bin = env!("CARGO_BIN_EXE_snapstore"),
            root = root.display()
        ))
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let rec = json(&ok(&root, &["inspect", "piped"]));
    assert_eq!(rec["description"], "via-pipe");
    let data = root
        .join("snapshot/localfile")
        .join(rec["id"].as_str().unwrap());
    for name in ["config.json", "cow.raw", "memory-range-0", "state.json"] {
        assert!(same_file(&src.join(name), &data.join(name)), "{name}");
    }
}

#[test]
fn a_failed_export_leaves_no_file_and_import_errors_name_the_archive() {
    let (tmp, root, _src) = setup();
    let target = tmp.path().join("out.tar");
    let err = fails(&root, &["export", "nope", "-o", s(&target)]);
    assert!(err.contains("\"nope\""), "{err}");
    assert_eq!(
        tree(tmp.path())
            .iter()
            .filter(|p| !p.starts_with("root") && !p.starts_with("src"))
            .count(),
        0
    );

    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    let err = fails(&root, &["import", s(&junk)]);
    assert!(err.contains("junk.tar"), "{err}");
    let err = fails(&root, &["import", s(&tmp.path().join("missing.tar"))]);
    assert!(err.contains("missing.tar"), "{err}");
}

#[test]
fn doctor_probes_the_store_and_each_dir() {
    let (tmp, root, _src) = setup();
    let report = json(&ok(&root, &["--json", "doctor", s(tmp.path())]));
    let report = report.as_array().unwrap();
    assert_eq!(report.len(), 2);
    for entry in report {
        for key in [
            "fs_type",
            "reflink_from_store",
            "hardlink_from_store",
            "seek_hole",
            "available_bytes",
            "memory_files",
            "other_files",
        ] {
            assert!(entry.get(key).is_some(), "{key} in {entry}");
        }
    }
    assert_eq!(
        report[1]["hardlink_from_store"], true,
        "same filesystem as the store"
    );
    // No scratch files are left behind.
    assert_eq!(
        tree(tmp.path())
            .iter()
            .filter(|p| p.contains("probe"))
            .count(),
        0
    );
}

#[test]
fn demo_runs_and_cleans_up_after_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::command()
        .args(["demo", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for step in ["save", "clone", "export --to-dir", "import --from-dir"] {
        assert!(text.contains(step), "{step} in {text}");
    }
    assert!(text.contains("verified"), "{text}");
    assert_eq!(tree(tmp.path()), Vec::<String>::new());
}

#[test]
fn the_root_comes_from_the_environment_when_not_given() {
    let (tmp, _root, src) = setup();
    let env_root = tmp.path().join("env-root");
    let out = common::command()
        .args(["save", "--name", "e", "--from-dir"])
        .arg(&src)
        .env("SNAPSTORE_ROOT", &env_root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(env_root.join("snapshot/db/snapshots.json").exists());
}

#[test]
fn du_counts_a_hardlinked_memory_file_as_shared_until_the_source_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = vm_snapshot(&tmp.path().join("src"), 4 * MIB, 16 * MIB, MIB);
    let from = src.to_str().unwrap();
    ok(
        &root,
        &["save", "--from-dir", from, "--name", "a", "--link"],
    );
    let du =
        || -> serde_json::Value { serde_json::from_str(&ok(&root, &["du", "--json"])).unwrap() };
    let memory = blocks(&src.join("memory-range-0")) * 512;

    let report = du();
    let a = &report["snapshots"][0];
    assert_eq!(a["name"], "a");
    assert_eq!(
        a["apparent_bytes"].as_u64().unwrap(),
        file_sizes(&src).values().sum::<u64>()
    );
    assert_eq!(a["shared_bytes"].as_u64().unwrap(), memory, "{report}");
    let allocated = a["allocated_bytes"].as_u64().unwrap();
    assert_eq!(a["exclusive_bytes"].as_u64().unwrap(), allocated - memory);
    assert_eq!(report["total"]["allocated_bytes"], a["allocated_bytes"]);

    std::fs::remove_file(src.join("memory-range-0")).unwrap();
    let report = du();
    assert_eq!(report["snapshots"][0]["shared_bytes"], 0);
    let text = ok(&root, &["du", "a"]);
    assert!(text.lines().next().unwrap().starts_with("ID"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("TOTAL"), "{text}");
    let err = fails(&root, &["du", "nope"]);
    assert!(err.contains("\"nope\""), "{err}");
}

/// Runs `snapstore --root root ARGS` on a pseudo-terminal (util-linux `script`), with the
/// progress bar's delay at zero; returns everything the terminal showed.
fn on_a_terminal(root: &Path, args: &str, tmp: &Path) -> String {
    let log = tmp.join("typescript");
    let command = format!(
        "{} --root {} {args}",
        env!("CARGO_BIN_EXE_snapstore"),
        root.display()
    );
    let status = Command::new("script")
        .args(["-qfec", &command])
        .arg(&log)
        .env("SNAPSTORE_PROGRESS_DELAY", "0s")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("script(1) runs");
    assert!(status.success(), "{command}");
    // script(1) frames the log with lines that quote the command, whose temp
    // paths can spell anything ("/tmp/.tmpFE0WNB/src" holds "B/s"): only what
    // the program wrote is kept.
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|line| {
            !line.starts_with("Script started on ") && !line.starts_with("Script done on ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_progress_bar_shows_on_a_terminal_only_and_not_with_q() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = vm_snapshot(&tmp.path().join("src"), 8 * MIB, 64 * MIB, 8 * MIB);
    let from = src.display();

    let shown = on_a_terminal(
        &root,
        &format!("save --from-dir {from} --name a"),
        tmp.path(),
    );
    assert!(shown.contains("saving") && shown.contains("B/s"), "{shown}");
    let quiet = on_a_terminal(
        &root,
        &format!("-q save --from-dir {from} --name b"),
        tmp.path(),
    );
    assert!(!quiet.contains("B/s"), "{quiet}");
    let archive = tmp.path().join("a.tar");
    let shown = on_a_terminal(
        &root,
        &format!("export a -o {}", archive.display()),
        tmp.path(),
    );
    assert!(shown.contains("exporting"), "{shown}");

    // In a pipe (as every other test runs it): not a byte of it.
    let out = snapstore(&root, &["import", archive.to_str().unwrap(), "--name", "c"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("B/s") && !stderr.contains('\r'),
        "{stderr}"
    );
}

/// The subcommands `snapstore --help` lists, read from its `Commands:` section.
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(command().arg("--help").output().unwrap().stdout).unwrap();
    let commands = help.split("Commands:").nth(1).unwrap();
    let names: Vec<String> = commands
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    names
}

#[test]
fn completions_and_the_man_page_name_every_subcommand() {
    let subcommands = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let out = command().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for name in &subcommands {
            assert!(
                script.contains(name.as_str()),
                "{shell} completion lacks {name}"
            );
        }
    }
    let bash = String::from_utf8(
        command()
            .args(["completions", "bash"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        bash.unwrap().contains("complete -F"),
        "a bash completion registers itself"
    );
    assert_eq!(
        command()
            .args(["completions", "tcsh"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );

    let out = command().arg("man").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH snapstore 1"),
        "{page}"
    );
    assert!(
        page.contains(".TH snapstore 1"),
        "a roff page with its title line"
    );
    for name in &subcommands {
        let heading = format!(".SH \"SNAPSTORE {}\"", name.to_uppercase());
        assert!(
            page.contains(&heading),
            "the man page has no section {heading}"
        );
    }
}

#[test]
fn every_directory_the_store_creates_is_0750_whatever_the_umask() {
    for umask in ["022", "077", "000"] {
        let (tmp, _, src) = setup();
        let root = tmp.path().join("fresh").join("root");
        let script =
            format!("umask {umask}; exec \"$0\" --root \"$1\" save --name a --from-dir \"$2\"");
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_snapstore"))
            .arg(&root)
            .arg(&src)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        for dir in [
            root.parent().unwrap().to_path_buf(),
            root.clone(),
            root.join("snapshot"),
            root.join("snapshot/db"),
            root.join("snapshot/localfile"),
            root.join("snapshot/staging"),
            root.join("snapshot/localfile").join(&id),
        ] {
            assert_eq!(mode(&dir), 0o750, "umask {umask}: {}", dir.display());
        }
    }
}

#[test]
fn save_refuses_a_symlinked_disk_unless_told_and_lists_what_it_skips() {
    let (tmp, root, src) = setup();
    let target = tmp.path().join("x.qcow2");
    std::fs::write(&target, b"disk").unwrap();
    std::os::unix::fs::symlink(&target, src.join("overlay.qcow2")).unwrap();
    std::fs::create_dir(src.join("logs")).unwrap();
    std::fs::write(src.join("logs/boot.log"), b"log").unwrap();

    let err = fails(&root, &["save", "--name", "a", "--from-dir", s(&src)]);
    assert!(err.contains("\"overlay.qcow2\" (symlink)"), "{err}");
    assert!(err.contains("\"logs\" (directory)"), "{err}");
    assert!(err.contains("nothing was saved"), "{err}");
    assert_eq!(ok(&root, &["list", "--json"]).trim(), "[]");

    let args = [
        "--json",
        "save",
        "--name",
        "a",
        "-L",
        "--skip-unsupported",
        "--from-dir",
    ];
    let out = snapstore(&root, &[&args[..], &[s(&src)]].concat());
    assert!(out.status.success(), "{out:?}");
    let report = json(&String::from_utf8(out.stdout).unwrap());
    let skipped = &report["skipped"];
    assert_eq!(
        skipped,
        &serde_json::json!([{"name": "logs", "kind": "directory"}])
    );
    let files = report["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["name"] == "overlay.qcow2"),
        "{report}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped \"logs\" (directory)"));
}
