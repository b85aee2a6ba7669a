//! `snapstore import --from-dir DIR`: a new snapshot from a directory carrying snapshot.json.

use std::path::PathBuf;

use anyhow::Result;
use snapstore::{LocalFile, Snapshot};

use super::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory carrying snapshot.json and the files it lists
    #[arg(long, value_name = "DIR")]
    from_dir: Option<PathBuf>,
    /// Name of the new snapshot [default: the envelope's]
    #[arg(long)]
    name: Option<String>,
    /// Description of the new snapshot [default: the envelope's]
    #[arg(long)]
    description: Option<String>,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    let Some(dir) = args.from_dir else {
        // The tar layer: the library says plainly that it is not there yet.
        let stdin: snapstore::TarStream = Box::new(std::io::stdin());
        store.import(stdin, args.name, args.description).await?;
        anyhow::bail!("tar import returned no snapshot");
    };
    let report = store
        .import_from_dir(dir, args.name, args.description)
        .await?;
    out.files("imported", &report.files);
    if out.json {
        out.json(&report)
    } else {
        out.line(&report.id)
    }
}
