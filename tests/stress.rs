//! Many writers on one root: 4 processes × 50 mixed operations through the CLI, and 8 tokio
//! tasks × 50 through the library in one process. Every operation's outcome is recorded; at the
//! end the store must hold exactly what the successful operations imply, no name may map to two
//! IDs or to a missing one, and no data dir may lack a record. The only failures allowed are the
//! honest ones of a race: a snapshot deleted by another worker ("no snapshot matches") or in use
//! by one ("in use").

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use snapstore::{
    CloneOptions, CloneSource, Config, Direct, DirectoryExporter, Error, LocalFile, SaveOptions,
    Snapshot,
};

const OPS_PER_WORKER: usize = 50;

/// What the workers did that changes the store.
#[derive(Default)]
struct Ledger {
    created: BTreeMap<String, String>,
    deleted: BTreeSet<String>,
    ops: usize,
    raced: usize,
    unexpected: Vec<String>,
}

impl Ledger {
    fn live(&self) -> Vec<String> {
        self.created
            .keys()
            .filter(|id| !self.deleted.contains(*id))
            .cloned()
            .collect()
    }

    /// A live snapshot for worker `w`'s step `step` to read or delete, or a ref that names none.
    fn target(&self, w: usize, step: usize) -> String {
        let live = self.live();
        live.get(pick(w, step + 1000, live.len().max(1)))
            .cloned()
            .unwrap_or_else(|| "none".into())
    }

    fn expected(&self) -> BTreeMap<String, String> {
        self.created
            .iter()
            .filter(|(id, _)| !self.deleted.contains(*id))
            .map(|(id, name)| (id.clone(), name.clone()))
            .collect()
    }
}

/// A cheap per-worker sequence, so each worker mixes its operations differently.
fn pick(worker: usize, step: usize, n: usize) -> usize {
    let x = (worker as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (step as u64 * 0x2545_f491);
    ((x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32) as usize % n
}

struct Inputs {
    src: PathBuf,
    archive: PathBuf,
    exported: PathBuf,
    scratch: PathBuf,
}

fn inputs(base: &Path, root: &Path) -> Inputs {
    let src = vm_snapshot(&base.join("src"), MIB, 8 * MIB, 256 << 10);
    let scratch = base.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let s = |p: &Path| p.display().to_string();
    ok(root, &["save", "--from-dir", &s(&src), "--name", "seed"]);
    let archive = base.join("seed.tar");
    let exported = base.join("seed-dir");
    ok(root, &["export", "seed", "-o", &s(&archive)]);
    ok(root, &["export", "seed", "--to-dir", &s(&exported)]);
    ok(root, &["rm", "seed"]);
    Inputs {
        src,
        archive,
        exported,
        scratch,
    }
}

/// Checks the end state against the ledger of `workers` workers, and says what was run.
fn check(what: &str, root: &Path, src: &Path, ledger: &Ledger, workers: usize) {
    eprintln!(
        "stress ({what}): {} operations, {} lost a race honestly, {} snapshots left",
        ledger.ops,
        ledger.raced,
        ledger.expected().len()
    );
    assert_eq!(ledger.ops, workers * OPS_PER_WORKER);
    assert!(ledger.unexpected.is_empty(), "{:#?}", ledger.unexpected);
    let expected = ledger.expected();
    assert_store_holds(root, &expected);
    assert_eq!(assert_complete_snapshots_intact(root, src), expected);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(root, &["list", "--json"])).unwrap();
    assert_eq!(listed.len(), expected.len());
}

#[test]
fn four_processes_fifty_operations_each_on_one_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let inputs = Arc::new(inputs(tmp.path(), &root));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (root, inputs, ledger) = (root.clone(), inputs.clone(), ledger.clone());
            std::thread::spawn(move || cli_worker(w, &root, &inputs, &ledger))
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    check("processes", &root, &inputs.src, &ledger.lock().unwrap(), 4);
}

fn cli_worker(w: usize, root: &Path, inputs: &Inputs, ledger: &Mutex<Ledger>) {
    let s = |p: &Path| p.display().to_string();
    for step in 0..OPS_PER_WORKER {
        let name = format!("w{w}-{step}");
        let out = inputs.scratch.join(format!("{name}-out"));
        let target = ledger.lock().unwrap().target(w, step);
        let (kind, args): (&str, Vec<String>) = match pick(w, step, 10) {
            0 | 1 => (
                "create",
                vec![
                    "save".into(),
                    "--from-dir".into(),
                    s(&inputs.src),
                    "--name".into(),
                    name.clone(),
                ],
            ),
            2 => (
                "create",
                vec![
                    "import".into(),
                    s(&inputs.archive),
                    "--name".into(),
                    name.clone(),
                ],
            ),
            3 => (
                "create",
                vec![
                    "import".into(),
                    "--from-dir".into(),
                    s(&inputs.exported),
                    "--name".into(),
                    name.clone(),
                ],
            ),
            4 => ("read", vec!["list".into()]),
            5 => ("read", vec!["inspect".into(), target]),
            6 => (
                "read",
                vec!["clone".into(), target, "--to-dir".into(), s(&out)],
            ),
            7 => (
                "read",
                vec!["export".into(), target, "--to-dir".into(), s(&out)],
            ),
            _ => ("rm", vec!["rm".into(), target]),
        };
        let mut full = vec!["--json".to_string()];
        full.extend(args.iter().cloned());
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let result = snapstore(root, &full);
        let stdout = String::from_utf8_lossy(&result.stdout);
        let stderr = String::from_utf8_lossy(&result.stderr);
        let mut ledger = ledger.lock().unwrap();
        ledger.ops += 1;
        if result.status.success() {
            match kind {
                "create" => {
                    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                    let id = report["id"].as_str().unwrap().to_string();
                    ledger.created.insert(id, name);
                }
                "rm" => {
                    let ids: Vec<String> = serde_json::from_str(&stdout).unwrap();
                    ledger.deleted.extend(ids);
                }
                _ => {}
            }
        } else if kind != "create"
            && (stderr.contains("no snapshot matches") || stderr.contains("in use"))
        {
            ledger.raced += 1;
        } else {
            ledger.unexpected.push(format!("{args:?}: {stderr}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tokio_tasks_fifty_operations_each_on_one_store() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let inputs = Arc::new(inputs(tmp.path(), &root));
    let store = LocalFile::open(&root).unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (store, inputs, ledger) = (store.clone(), inputs.clone(), ledger.clone());
            tokio::spawn(async move { task_worker(w, &store, &inputs, &ledger).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    check("tasks", &root, &inputs.src, &ledger.lock().unwrap(), 8);
}

async fn task_worker(w: usize, store: &LocalFile, inputs: &Inputs, ledger: &Mutex<Ledger>) {
    for step in 0..OPS_PER_WORKER {
        let name = format!("t{w}-{step}");
        let out = inputs.scratch.join(format!("{name}-out"));
        let target = ledger.lock().unwrap().target(w, step);
        let config = Config {
            name: name.clone(),
            ..Config::default()
        };
        let choice = pick(w + 100, step, 10);
        let result: Result<Option<(bool, Vec<String>)>, Error> = match choice {
            0 | 1 => store
                .create(config, inputs.src.clone(), SaveOptions::default())
                .await
                .map(|r| Some((true, vec![r.id.to_string()]))),
            2 => match store.export(&target).await {
                // A tar round trip through the library: export streams while import reads.
                Ok(stream) => store
                    .import(stream, Some(name.clone()), None)
                    .await
                    .map(|id| Some((true, vec![id.to_string()]))),
                Err(e) => Err(e),
            },
            3 => store
                .import_from_dir(inputs.exported.clone(), common::named(&name))
                .await
                .map(|r| Some((true, vec![r.id.to_string()]))),
            4 => store.list().await.map(|_| None),
            5 => store.data_dir(&target).await.map(|_| None),
            6 => store
                .clone_to_dir(CloneSource::Ref(target), out, CloneOptions::default())
                .await
                .map(|_| None),
            7 => store.export_to_dir(&target, out).await.map(|_| None),
            _ => store
                .delete(&[target], false)
                .await
                .map(|ids| Some((false, ids.iter().map(ToString::to_string).collect()))),
        };
        let mut ledger = ledger.lock().unwrap();
        ledger.ops += 1;
        match result {
            Ok(Some((true, ids))) => {
                ledger.created.insert(ids[0].clone(), name);
            }
            Ok(Some((false, ids))) => ledger.deleted.extend(ids),
            Ok(None) => {}
            // The tar round trip reads a snapshot first, so it may lose a race as readers do.
            Err(Error::NotFound { .. } | Error::InUse { .. }) if !matches!(choice, 0 | 1 | 3) => {
                ledger.raced += 1;
            }
            Err(e) => ledger.unexpected.push(format!("op {choice}: {e}")),
        }
    }
}
