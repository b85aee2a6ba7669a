//! `snapstore du [REF...]`: apparent, allocated, shared and exclusive bytes per snapshot, from
//! the kernel's extent maps; EXCLUSIVE is what deleting the snapshot frees.

use anyhow::Result;
use snapstore::{LocalFile, Usage};

use super::{Output, human_bytes, table};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Snapshots to measure [default: all]
    refs: Vec<String>,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    let report = store.du(&args.refs).await?;
    if out.json {
        return out.json(&report);
    }
    let row = |id: String, name: String, u: &Usage| {
        vec![
            id,
            name,
            human_bytes(u.apparent_bytes),
            human_bytes(u.allocated_bytes),
            human_bytes(u.shared_bytes),
            human_bytes(u.exclusive_bytes),
        ]
    };
    let mut rows: Vec<Vec<String>> = report
        .snapshots
        .iter()
        .map(|s| row(s.id.to_string(), s.name.clone(), &s.usage))
        .collect();
    rows.push(row("TOTAL".into(), String::new(), &report.total));
    let header = ["ID", "NAME", "APPARENT", "ALLOCATED", "SHARED", "EXCLUSIVE"];
    out.line(table(&header, &rows))?;
    out.note(format!(
        "on disk, each shared extent counted once: {}",
        human_bytes(report.on_disk_bytes)
    ));
    Ok(())
}
