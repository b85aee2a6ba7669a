//! `snapstore rm REF...`: delete snapshots, all or none.

use anyhow::Result;
use snapstore::{LocalFile, Snapshot};

use super::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// IDs, names, or unique ID prefixes; if any fails to resolve, nothing is deleted
    #[arg(required = true)]
    refs: Vec<String>,
    /// Delete even snapshots in use by a clone, an export or a data_dir lease
    #[arg(long)]
    force: bool,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    let deleted = store.delete(&args.refs, args.force).await?;
    if out.json {
        return out.json(&deleted);
    }
    for id in deleted {
        out.line(id)?;
    }
    Ok(())
}
