//! `snapstore export REF --to-dir DIR`: the snapshot's files and its snapshot.json, standing
//! alone (never hardlinked), for rsync and NFS.

use std::path::PathBuf;

use anyhow::Result;
use snapstore::{DirectoryExporter, LocalFile, Snapshot};

use super::{Output, files_table};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Snapshot to export: ID, name, or unique ID prefix
    reference: String,
    /// Target directory: new or empty
    #[arg(long, value_name = "DIR")]
    to_dir: Option<PathBuf>,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    let Some(dir) = args.to_dir else {
        // The tar layer: the library says plainly that it is not there yet.
        store.export(&args.reference).await?;
        anyhow::bail!("tar export returned no stream");
    };
    let report = store.export_to_dir(&args.reference, dir).await?;
    if out.json {
        out.json(&report)
    } else {
        out.line(files_table(&report.files))
    }
}
