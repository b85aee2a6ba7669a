//! `snapstore clone REF --to-dir DIR` and `snapstore clone --from-dir SRC --to-dir DIR`: the
//! VM-clone path, data files only.

use std::path::PathBuf;

use anyhow::Result;
use snapstore::{CloneOptions, CloneSource};

use super::progress::Tracked;
use super::{Output, files_table};

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["reference", "from_dir"]))]
pub(crate) struct Args {
    /// Snapshot to clone: ID, name, or unique ID prefix
    reference: Option<String>,
    /// Clone from a directory carrying snapshot.json instead of from the store
    #[arg(long, value_name = "SRC")]
    from_dir: Option<PathBuf>,
    /// Target directory: new or empty
    #[arg(long, value_name = "DIR")]
    to_dir: PathBuf,
    /// Fail rather than copy data
    #[arg(long)]
    require_cow: bool,
    /// Never hardlink memory files (a hypervisor will write a new snapshot over them)
    #[arg(long)]
    no_hardlink: bool,
    /// Fsync the clone before exiting, so it survives a power loss [default: leave it to the
    /// kernel's writeback, as cp does]
    #[arg(long)]
    sync: bool,
}

pub(crate) async fn run(store: Tracked, args: Args, out: Output) -> Result<()> {
    let source = match (args.reference, args.from_dir) {
        (Some(reference), None) => CloneSource::Ref(reference),
        (None, Some(dir)) => CloneSource::Dir(dir),
        _ => anyhow::bail!("give either REF or --from-dir, not both"),
    };
    let opts = CloneOptions {
        hardlink: !args.no_hardlink,
        require_cow: args.require_cow,
        sync: args.sync,
    };
    let report = store.clone_to_dir(source, args.to_dir, opts).await?;
    drop(store); // clears the progress bar
    if out.json {
        out.json(&report)
    } else {
        out.line(files_table(&report.files))
    }
}
