//! `snapstore import [FILE | -]`: a new snapshot from a tar archive (raw, gzip or zstd, from a
//! file or stdin), or with `--from-dir DIR` from a directory carrying snapshot.json.

use std::path::PathBuf;

use anyhow::{Context, Result};
use snapstore::{DEFAULT_MAX_FILE_SIZE, DirImportOptions, ImportOptions, TarStream, parse_size};

use super::Output;
use super::progress::Tracked;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Archive to import, or - for stdin [default: stdin]
    #[arg(value_name = "FILE", conflicts_with = "from_dir")]
    archive: Option<PathBuf>,
    /// Import a directory carrying snapshot.json and the files it lists instead
    #[arg(long, value_name = "DIR")]
    from_dir: Option<PathBuf>,
    /// Name of the new snapshot [default: the envelope's]
    #[arg(long)]
    name: Option<String>,
    /// Description of the new snapshot [default: the envelope's]
    #[arg(long)]
    description: Option<String>,
    /// Largest real size of one file in the archive (bytes, or K/M/G/T) [default: 16T]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_FILE_SIZE, hide_default_value = true)]
    max_file_size: u64,
    /// Do not fsync the imported files, as `tar -x` does not: faster on a slow disk, but a power
    /// loss before the kernel writes them back (30 s by default) can leave the snapshot listed
    /// with data missing. For a scratch store, or a caller that runs `sync` itself
    #[arg(long, conflicts_with = "from_dir")]
    no_sync: bool,
}

pub(crate) async fn run(store: Tracked, args: Args, out: Output) -> Result<()> {
    let report = match args.from_dir {
        Some(dir) => {
            let opts = DirImportOptions {
                name: args.name,
                description: args.description,
            };
            store.import_from_dir(dir, opts).await?
        }
        None => {
            let (input, label): (TarStream, PathBuf) = match args.archive {
                Some(path) if path.as_os_str() != "-" => {
                    let file = std::fs::File::open(&path).with_context(|| {
                        format!("cannot open archive {}", snapstore::shown(&path))
                    })?;
                    (Box::new(file), path)
                }
                _ => (Box::new(std::io::stdin()), PathBuf::from("<stdin>")),
            };
            let opts = ImportOptions {
                name: args.name,
                description: args.description,
                max_file_size: args.max_file_size,
                label,
                sync: !args.no_sync,
            };
            store.import_with(input, opts).await?
        }
    };
    drop(store); // clears the progress bar
    out.files("imported", &report.files);
    if out.json {
        out.json(&report)
    } else {
        out.line(&report.id)
    }
}
