//! `snapstore export REF`: a tar archive (the default; `-o FILE`, `-o -` for stdout) or, with
//! `--to-dir DIR`, a plain directory with snapshot.json, standing alone for rsync and NFS.
//!
//! An archive goes through [`LocalFile::export_to_file`](snapstore::LocalFile::export_to_file):
//! a failed or interrupted (Ctrl-C) export leaves no output, and never clobbers an older file of
//! the same name. Like `cp` and `tar`, it does not fsync the archive or the directory, unless
//! `--sync` asks: they are copies of a snapshot that stays in the store, and can be made again.

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Result;
use snapstore::{Compression, DirExportOptions, ExportOptions, Snapshot, SparseFormat};

use super::progress::Tracked;
use super::{Output, files_table};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Snapshot to export: ID, name, or unique ID prefix
    reference: String,
    /// Export to a new or empty directory instead of an archive
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "gzip", "zstd", "sparse_format"])]
    to_dir: Option<PathBuf>,
    /// Archive path, or - for stdout [default: NAME.tar, .tar.gz, .tar.zst]
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Compress with gzip, on every core
    #[arg(long, conflicts_with = "zstd")]
    gzip: bool,
    /// Compress with zstd, multithreaded
    #[arg(long)]
    zstd: bool,
    /// How sparse files are written: cocoon's PAX records, or GNU tar's PAX 1.0
    #[arg(long, value_enum, default_value_t = Format::Cocoon)]
    sparse_format: Format,
    /// Fsync the archive or directory before exiting, so it survives a power loss
    #[arg(long)]
    sync: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Cocoon,
    Gnu,
}

pub(crate) async fn run(store: Tracked, args: Args, out: Output) -> Result<()> {
    if let Some(dir) = args.to_dir {
        let opts = DirExportOptions { sync: args.sync };
        let report = store.export_to_dir_with(&args.reference, dir, opts).await?;
        drop(store); // clears the progress bar
        return if out.json {
            out.json(&report)
        } else {
            out.line(files_table(&report.files))
        };
    }
    let compression = match (args.gzip, args.zstd) {
        (true, _) => Compression::Gzip,
        (_, true) => Compression::Zstd,
        _ => Compression::None,
    };
    let opts = ExportOptions {
        compression,
        sparse_format: match args.sparse_format {
            Format::Cocoon => SparseFormat::Cocoon,
            Format::Gnu => SparseFormat::Gnu,
        },
        sync: args.sync,
    };
    let target = match args.output {
        Some(path) => path,
        None => {
            let record = store.inspect(&args.reference).await?;
            let stem = if record.config.name.is_empty() {
                record.config.id
            } else {
                record.config.name
            };
            PathBuf::from(format!("{stem}{}", compression.extension()))
        }
    };
    if target.as_os_str() == "-" {
        let stdout = Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()));
        store
            .export_to(&args.reference, opts, stdout, PathBuf::from("<stdout>"))
            .await?;
        return Ok(());
    }

    let export = store.export_to_file(&args.reference, target.clone(), opts);
    tokio::select! {
        done = export => done?,
        _ = tokio::signal::ctrl_c() => {
            // The dropped export removes its partial archive.
            anyhow::bail!("interrupted: no archive written to {}", snapstore::shown(&target));
        }
    }
    drop(store); // clears the progress bar
    out.note(format_args!(
        "exported {} to {}",
        args.reference,
        snapstore::shown(&target)
    ));
    if out.json {
        out.json(&serde_json::json!({ "path": target }))?;
    }
    Ok(())
}
