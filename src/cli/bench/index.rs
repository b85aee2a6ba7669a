//! The scale rows: what a command costs in a store of many snapshots against the same command
//! in a store holding only the snapshot it works on (clone, inspect, save and rm, by name and by
//! ID prefix), a clone at the largest size against `cp`, `list --json` against `jq` over the
//! same index, and gc and fsck at each size against the smallest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use snapstore::{Layout, SnapshotId};

use super::render::Row;
use super::timing::{Stats, installed, output, time, time_all};
use crate::cli::workload::Workload;

/// A store of `count` snapshots: synthetic ones (each an empty data dir and a sidecar) and one
/// real snapshot, `probe`, to work on.
struct Store {
    root: PathBuf,
    count: usize,
    probe: SnapshotId,
}

/// The rows for stores of each of `counts` snapshots, each against a store of one.
pub(super) fn bench_scale(
    dir: &Path,
    counts: &[usize],
    runs: u32,
    cp_flag: &str,
    fs: &str,
) -> Result<Vec<Row>> {
    let me = std::env::current_exe().context("cannot find the snapstore binary")?;
    let src = dir.join("scale-src");
    let small = Workload {
        memory: 1 << 20,
        disk: 16 << 20,
        disk_data: 1 << 20,
    };
    small.write(&src)?;
    let snap = |root: &Path| {
        let mut c = Command::new(&me);
        c.arg("--root").arg(root);
        c
    };
    let store = |count: usize| -> Result<Store> {
        let root = dir.join(format!("scale-{count}"));
        if count > 1 {
            snapstore::synthetic::synthetic_index(&root, count - 1)?;
        }
        let mut save = snap(&root);
        save.args(["save", "--name", "probe", "--from-dir"])
            .arg(&src);
        let id = String::from_utf8(output(save)?)?.trim().to_string();
        let probe = SnapshotId::try_from(id).map_err(anyhow::Error::msg)?;
        // A store in steady use: its lookup table built, and settled (see lookup.rs).
        std::thread::sleep(std::time::Duration::from_millis(50));
        output({
            let mut c = snap(&root);
            c.args(["inspect", "probe"]);
            c
        })?;
        Ok(Store { root, count, probe })
    };
    let one = store(1)?;
    let dst = dir.join("scale-dst");
    let clean = || {
        let _ = std::fs::remove_dir_all(&dst);
    };
    let mut rows = Vec::new();
    let mut stores = Vec::new();
    for &count in counts.iter().filter(|&&c| c > 1) {
        let big = store(count)?;
        let against_one =
            |what: &str, prepare: &dyn Fn(&Store), args: &dyn Fn(&Store) -> Vec<String>| {
                let command = |s: &Store| {
                    let mut c = snap(&s.root);
                    c.args(args(s));
                    c
                };
                let stats = time_all(
                    runs,
                    &[
                        (&|| prepare(&big), &|| command(&big)),
                        (&|| prepare(&one), &|| command(&one)),
                    ],
                )?;
                let label = format!("the same in a store of 1 ({what})");
                Ok::<_, anyhow::Error>((stats[0], Some((label, stats[1]))))
            };
        let prefix = |s: &Store| s.probe.as_str()[..8].to_string();
        let to_dst = |reference: String| {
            let dst = dst.to_string_lossy().into_owned();
            vec!["clone".into(), reference, "--to-dir".into(), dst]
        };
        let noted = format!("{count} snapshots in the store");
        let mut row = |operation: &'static str, (ours, base): (Stats, Option<(String, Stats)>)| {
            rows.push(Row::new(fs, operation, ours, base, noted.clone()));
        };
        let none = |_: &Store| clean();
        row(
            "clone NAME (scale)",
            against_one("by name", &none, &|_| to_dst("probe".into()))?,
        );
        row(
            "clone PREFIX (scale)",
            against_one("by ID prefix", &none, &|s| to_dst(prefix(s)))?,
        );
        let nothing = |_: &Store| {};
        row(
            "inspect NAME (scale)",
            against_one("by name", &nothing, &|_| {
                vec!["inspect".into(), "probe".into()]
            })?,
        );
        row(
            "inspect PREFIX (scale)",
            against_one("by ID prefix", &nothing, &|s| {
                vec!["inspect".into(), prefix(s)]
            })?,
        );
        let src_arg = src.to_string_lossy().into_owned();
        let drop_saved = |s: &Store| drop(snap(&s.root).args(["rm", "saved"]).output());
        row(
            "save (scale)",
            against_one("save", &drop_saved, &|_| {
                let args = ["save", "--name", "saved", "--from-dir", &src_arg];
                args.map(String::from).to_vec()
            })?,
        );
        let make_doomed = |s: &Store| {
            let mut c = snap(&s.root);
            c.args(["save", "--name", "doomed", "--from-dir"]).arg(&src);
            drop(c.output());
        };
        row(
            "rm NAME (scale)",
            against_one("rm", &make_doomed, &|_| vec!["rm".into(), "doomed".into()])?,
        );
        stores.push(big);
    }
    clean();

    // The largest store: a clone against cp, list against jq, and gc and fsck against the
    // smallest store's.
    if let Some(big) = stores.last() {
        let data = Layout::new(&big.root).data_dir(&big.probe);
        let noted = format!("{} snapshots in the store", big.count);
        let (ours, theirs) = {
            let stats = time_all(
                runs,
                &[
                    (&clean, &|| {
                        let mut c = snap(&big.root);
                        c.args(["clone", "probe", "--to-dir"]).arg(&dst);
                        c
                    }),
                    (&clean, &|| {
                        let mut c = Command::new("cp");
                        c.args(["-a", cp_flag]).arg(&data).arg(&dst);
                        c
                    }),
                ],
            )?;
            (stats[0], stats[1])
        };
        let label = format!("cp -a {cp_flag}");
        rows.push(Row::new(
            fs,
            "clone (scale)",
            ours,
            Some((label, theirs)),
            noted.clone(),
        ));
        clean();

        let index = Layout::new(&big.root).index_file();
        let list = || {
            let mut c = snap(&big.root);
            c.args(["list", "--json"]);
            c
        };
        let base = if installed("jq") {
            let stats = time_all(
                runs,
                &[
                    (&|| {}, &list),
                    (&|| {}, &|| {
                        let mut c = Command::new("jq");
                        c.args(["-c", ".snapshots[]"]).arg(&index);
                        c
                    }),
                ],
            )?;
            rows.push(Row::new(
                fs,
                "list --json (scale)",
                stats[0],
                Some(("jq -c '.snapshots[]' snapshots.json".into(), stats[1])),
                noted.clone(),
            ));
            None
        } else {
            Some(time(runs, &|| {}, &list)?)
        };
        if let Some(ours) = base {
            rows.push(Row::new(
                fs,
                "list --json (scale)",
                ours,
                None,
                noted.clone(),
            ));
        }
        if let Some(first) = stores.first().filter(|s| s.count < big.count) {
            for command in ["gc", "fsck"] {
                let run = |s: &Store| {
                    let mut c = snap(&s.root);
                    c.arg(command);
                    c
                };
                let stats = time_all(runs, &[(&|| {}, &|| run(big)), (&|| {}, &|| run(first))])?;
                let label = format!("{command} with {} snapshots", first.count);
                let operation = if command == "gc" {
                    "gc (scale)"
                } else {
                    "fsck (scale)"
                };
                let note = format!(
                    "{noted}; linear would be {:.0}x",
                    big.count as f64 / first.count as f64
                );
                rows.push(Row::new(
                    fs,
                    operation,
                    stats[0],
                    Some((label, stats[1])),
                    note,
                ));
            }
        }
    }
    for s in stores.iter().chain([&one]) {
        let _ = std::fs::remove_dir_all(&s.root);
    }
    let _ = std::fs::remove_dir_all(&src);
    Ok(rows)
}
