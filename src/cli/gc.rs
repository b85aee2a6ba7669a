//! `snapstore gc [--dry-run] [--grace DURATION] [--max-bytes SIZE]`: remove what crashed and
//! abandoned operations left, and evict least recently used snapshots down to a size.

use std::time::Duration;

use anyhow::Result;
use snapstore::{GcOptions, LocalFile, parse_duration, parse_size};

use super::{Output, human_bytes};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Say what would be removed; remove nothing
    #[arg(long)]
    dry_run: bool,
    /// How old a pending snapshot with no live-creator lock (one cocoon wrote) must be to go
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "24h")]
    grace: Duration,
    /// Evict least recently used snapshots not in use until the store's apparent size fits
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    let opts = GcOptions {
        dry_run: args.dry_run,
        grace: args.grace,
        max_bytes: args.max_bytes,
    };
    let report = store.gc(opts).await?;
    if out.json {
        return out.json(&report);
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &report.removed {
        out.line(format!(
            "{verb} {}: {}",
            r.kind.as_str(),
            snapstore::shown(&r.path)
        ))?;
    }
    let verb = if report.dry_run {
        "would evict"
    } else {
        "evicted"
    };
    for e in &report.evicted {
        let used = e.last_accessed_at.map_or_else(
            || "never".to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        );
        out.line(format!(
            "{verb} {} {:?} {} (last used {used})",
            e.id,
            e.name,
            human_bytes(e.size_bytes)
        ))?;
    }
    for id in &report.in_use {
        out.note(format!("kept {id}: in use"));
    }
    for dir in &report.kept_for_fsck {
        out.note(format!(
            "kept {}: no record, but a sidecar; run `snapstore fsck --repair`",
            snapstore::shown(dir)
        ));
    }
    for id in &report.restored_sidecars {
        out.note(format!("restored the sidecar of {id}"));
    }
    if report.removed.is_empty() && report.evicted.is_empty() {
        out.note("nothing to collect");
    }
    out.note(format!("store size {}", human_bytes(report.apparent_bytes)));
    Ok(())
}
