//! `snapstore push REF TARGET`: a snapshot to an OCI registry, chunked and deduplicated.

use anyhow::Result;
use snapstore::{DEFAULT_CHUNK_SIZE, LayerCompression, PushOptions, parse_size};

use super::progress::Tracked;
use super::registry::RegistryArgs;
use super::{Output, human_bytes};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Snapshot to push: ID, name or unique ID prefix
    #[arg(value_name = "REF")]
    reference: String,
    /// HOST[:PORT]/REPO[:TAG]; the tag defaults to the snapshot's name, else `latest`
    #[arg(value_name = "TARGET")]
    target: String,
    /// Window files are cut into, 16M to 256M [default: 64M]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_CHUNK_SIZE, hide_default_value = true)]
    chunk_size: u64,
    /// Blob compression
    #[arg(long, value_enum, default_value = "zstd")]
    compress: Compress,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Compress {
    Zstd,
    None,
}

pub(crate) async fn run(store: Tracked, args: Args, out: Output) -> Result<()> {
    let opts = PushOptions {
        jobs: usize::from(args.registry.jobs),
        chunk_size: args.chunk_size,
        compression: match args.compress {
            Compress::Zstd => LayerCompression::Zstd,
            Compress::None => LayerCompression::None,
        },
        connection: args.registry.connection()?,
    };
    let report = store.push(&args.reference, &args.target, opts).await?;
    drop(store);
    if out.json {
        return out.json(&report);
    }
    out.note(format_args!(
        "pushed {}: {} of {} blobs sent ({}), {} already there",
        report.target,
        report.blobs_uploaded,
        report.blobs_total,
        human_bytes(report.bytes_uploaded),
        human_bytes(report.bytes_skipped)
    ));
    out.line(&report.digest)
}
