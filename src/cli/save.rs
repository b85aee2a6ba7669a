//! `snapstore save --from-dir DIR`: a new snapshot from a directory of VM snapshot files.

use std::path::PathBuf;

use anyhow::Result;
use snapstore::{Config, ENVELOPE_FILE, SaveMode, SaveOptions, Snapshot};

use super::Output;
use super::progress::Tracked;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory holding the snapshot's files. A symlink, a non-empty subdirectory, a device
    /// or a name that is not UTF-8 fails the save; sockets, fifos and empty dirs are skipped
    #[arg(long, value_name = "DIR")]
    from_dir: PathBuf,
    /// Name of the new snapshot
    #[arg(long)]
    name: Option<String>,
    /// Description of the new snapshot
    #[arg(long)]
    description: Option<String>,
    /// Config JSON (or a snapshot.json envelope) [default: DIR/snapshot.json when present]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Rename the files into the store (instant; consumes DIR)
    #[arg(long = "move", conflicts_with = "link")]
    move_files: bool,
    /// Allow hardlinking memory files; promise never to write them again
    #[arg(long)]
    link: bool,
    /// Fail rather than copy data
    #[arg(long)]
    require_cow: bool,
    /// Store a symlink to a file as that file's content, under the link's name
    #[arg(short = 'L', long)]
    dereference: bool,
    /// Leave out what a snapshot cannot carry (listed on stderr and in --json) instead of failing
    #[arg(long)]
    skip_unsupported: bool,
}

pub(crate) async fn run(store: Tracked, args: Args, out: Output) -> Result<()> {
    let config = match &args.config {
        Some(path) => snapstore::read_config(path)?,
        None if args.from_dir.join(ENVELOPE_FILE).exists() => {
            snapstore::read_envelope(&args.from_dir)?.config
        }
        None => Config::default(),
    };
    let config = config.with_overrides(args.name, args.description);
    let mode = if args.move_files {
        SaveMode::Move
    } else if args.link {
        SaveMode::Link
    } else {
        SaveMode::Clone
    };
    let opts = SaveOptions {
        mode,
        require_cow: args.require_cow,
        dereference: args.dereference,
        skip_unsupported: args.skip_unsupported,
    };
    let report = store.create(config, args.from_dir, opts).await?;
    drop(store); // clears the progress bar
    for skipped in &report.skipped {
        out.note(format_args!("skipped {skipped}"));
    }
    out.files("saved", &report.files);
    if out.json {
        out.json(&report)
    } else {
        out.line(&report.id)
    }
}
