//! The index rows: `list --json` and `inspect` by ID prefix against their budgets, and a save's
//! overhead in a store of many snapshots against the same save into an empty store.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use snapstore::LocalFile;

use super::render::Row;
use super::timing::{Stats, time};

/// The index rows, whole-process, with `count` snapshots in the index: `list --json` within
/// 200 ms, `inspect` by ID prefix within 100 ms (each ratio is to its budget), and the cost of
/// saving an empty dir next to saving it into an empty store: save's overhead beyond file work.
pub(super) fn bench_index(dir: &Path, count: usize, runs: u32) -> Result<Vec<Row>> {
    let me = std::env::current_exe().context("cannot find the snapstore binary")?;
    let (busy, empty, src) = (dir.join("busy"), dir.join("empty"), dir.join("nothing"));
    std::fs::create_dir_all(&src)?;
    let ids = snapstore::synthetic::synthetic_index(&busy, count)?;
    let prefix = ids.first().and_then(|id| id.as_str().get(..6));
    let prefix = prefix.context("no snapshot made")?.to_string();
    let fs = tokio::runtime::Handle::current()
        .block_on(LocalFile::open(&busy)?.probe(dir.to_path_buf()))?
        .fs_type;
    let snap = |root: &Path, args: &[&str]| {
        let mut c = Command::new(&me);
        c.arg("--root").arg(root).args(args);
        c
    };
    let budget = |secs: f64| {
        let stats = Stats {
            median: secs,
            min: secs,
            max: secs,
        };
        Some((format!("target: under {:.0} ms", secs * 1000.0), stats))
    };
    let mut rows = Vec::new();
    let noted = format!("{count} snapshots in the index");
    let list = time(runs, &|| {}, &|| snap(&busy, &["list", "--json"]))?;
    rows.push(Row::new(
        &fs,
        "list --json (index)",
        list,
        budget(0.2),
        noted.clone(),
    ));
    let inspect = time(runs, &|| {}, &|| snap(&busy, &["inspect", &prefix]))?;
    rows.push(Row::new(
        &fs,
        "inspect PREFIX (index)",
        inspect,
        budget(0.1),
        noted.clone(),
    ));
    let save = |root: &Path| {
        time(
            runs,
            &|| drop(snap(root, &["rm", "bench-empty"]).output()),
            &|| {
                let mut c = snap(root, &["save", "--name", "bench-empty", "--from-dir"]);
                c.arg(&src);
                c
            },
        )
    };
    let (busy_save, empty_save) = (save(&busy)?, save(&empty)?);
    let overhead = (busy_save.median - empty_save.median) * 1000.0;
    rows.push(Row::new(
        &fs,
        "save, no data (index)",
        busy_save,
        Some(("the same into an empty store".into(), empty_save)),
        format!("{noted}: {overhead:+.1} ms (target: under 50 ms)"),
    ));
    Ok(rows)
}
