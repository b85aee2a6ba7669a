//! A bench run's rows as a table, and the measurements its notes quote.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::timing::Stats;
use crate::cli::table;

/// One comparison: snapstore's time, its counterpart's, and the ratio of their medians.
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) fs: String,
    pub(super) operation: String,
    pub(super) snapstore: Stats,
    pub(super) baseline: Option<String>,
    pub(super) baseline_time: Option<Stats>,
    /// snapstore's median over the baseline's.
    pub(super) ratio: Option<f64>,
    pub(super) note: String,
}

impl Row {
    /// A row for `operation` on `fs`, against `baseline` (a label and its times) when there is one.
    pub(super) fn new(
        fs: &str,
        operation: impl Into<String>,
        ours: Stats,
        baseline: Option<(String, Stats)>,
        note: String,
    ) -> Row {
        Row {
            fs: fs.to_string(),
            operation: operation.into(),
            snapstore: ours,
            ratio: baseline.as_ref().map(|(_, b)| ours.median / b.median),
            baseline_time: baseline.as_ref().map(|(_, b)| *b),
            baseline: baseline.map(|(c, _)| c),
            note,
        }
    }
}

/// The rows as a table, ratio first.
pub(super) fn render(rows: &[Row]) -> String {
    let secs = |s: &Stats| format!("{:.3}s [{:.3}-{:.3}]", s.median, s.min, s.max);
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
                r.fs.clone(),
                r.operation.clone(),
                secs(&r.snapstore),
                r.baseline
                    .clone()
                    .unwrap_or_else(|| "(not installed)".into()),
                r.baseline_time.as_ref().map_or("-".into(), secs),
                r.note.clone(),
            ]
        })
        .collect();
    table(
        &[
            "RATIO",
            "FS",
            "OPERATION",
            "SNAPSTORE",
            "BASELINE",
            "BASELINE TIME",
            "NOTE",
        ],
        &body,
    )
}

/// "memory-range-0=reflink, cow.raw=reflink, ..." from a save or clone report.
pub(super) fn methods(json: &[u8]) -> Result<String> {
    let report: serde_json::Value = serde_json::from_slice(json)?;
    let files = report["files"].as_array().cloned().unwrap_or_default();
    Ok(files
        .iter()
        .map(|f| {
            format!(
                "{}={}",
                f["name"].as_str().unwrap_or("?"),
                f["method"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// Bytes allocated by the regular files directly in `dir`, as the kernel counts them (st_blocks).
pub(super) fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.blocks() * 512)
        .sum()
}

/// How much larger `a` is than `b`, in percent.
pub(super) fn pct(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64) * 100.0 / b as f64
}
