//! `snapstore fsck [--repair]`: check the index against the data dirs; exit 1 when problems
//! remain.

use anyhow::{Result, bail};
use snapstore::LocalFile;

use super::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Mend what can be mended without losing data: drop records whose data is gone, restore
    /// records and sidecars, rebuild a corrupt index (kept renamed) from the sidecars
    #[arg(long)]
    repair: bool,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    let report = store.fsck(args.repair).await?;
    if out.json {
        out.json(&report)?;
    } else {
        for p in &report.problems {
            let id =
                p.id.as_ref()
                    .map_or_else(String::new, |id| format!(" {id}"));
            let file = p
                .file
                .as_ref()
                .map_or_else(String::new, |f| format!(" {f}"));
            let state = if p.repaired { "repaired" } else { "found" };
            let detail = if p.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", p.detail)
            };
            out.line(format!(
                "{state} {}{id}{file} ({}){detail}",
                p.kind.as_str(),
                snapstore::shown(&p.path)
            ))?;
        }
        out.note(format!(
            "{} snapshots checked, {} problems, {} repaired",
            report.checked,
            report.problems.len(),
            report.problems.len() - report.unrepaired().count()
        ));
    }
    let left = report.unrepaired().count();
    if left > 0 {
        bail!("fsck found {left} problems it did not repair");
    }
    Ok(())
}
