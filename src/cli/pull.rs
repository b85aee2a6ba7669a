//! `snapstore pull SOURCE`: a new snapshot from an OCI registry, windows the store already
//! holds cloned instead of downloaded.

use anyhow::Result;
use snapstore::PullOptions;

use super::progress::Tracked;
use super::registry::RegistryArgs;
use super::{Output, human_bytes};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// HOST[:PORT]/REPO[:TAG] or HOST[:PORT]/REPO@sha256:...
    #[arg(value_name = "SOURCE")]
    source: String,
    /// Name of the new snapshot [default: the artifact's]
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(crate) async fn run(store: Tracked, args: Args, out: Output) -> Result<()> {
    let opts = PullOptions {
        name: args.name,
        jobs: usize::from(args.registry.jobs),
        connection: args.registry.connection()?,
    };
    let report = store.pull(&args.source, opts).await?;
    drop(store);
    out.files("pulled", &report.files);
    if out.json {
        return out.json(&report);
    }
    out.note(format_args!(
        "pulled {}: {} downloaded, {} cloned from the store",
        report.digest,
        human_bytes(report.bytes_downloaded),
        human_bytes(report.bytes_cloned_locally)
    ));
    out.line(&report.id)
}
