//! `snapstore inspect REF`: one snapshot's record as JSON.

use anyhow::Result;
use snapstore::{LocalFile, Snapshot};

use super::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// ID, name, or unique ID prefix (3 characters or more)
    reference: String,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    out.json(&store.inspect(&args.reference).await?)
}
