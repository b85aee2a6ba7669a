//! `snapstore export REF`: a tar archive (the default; `-o FILE`, `-o -` for stdout) or, with
//! `--to-dir DIR`, a plain directory with snapshot.json, standing alone for rsync and NFS.
//!
//! An archive goes to a temp file beside its target and is renamed into place only when
//! complete: a failed or interrupted (Ctrl-C) export leaves no output, and never clobbers an
//! older file of the same name. Like `cp` and `tar`, it does not fsync the archive or the
//! directory, unless `--sync` asks: they are copies of a snapshot that stays in the store, and
//! can be made again.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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

    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".snapstore-export-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    let file = temp
        .reopen()
        .with_context(|| format!("cannot open {}", temp.path().display()))?;
    let writer = Box::new(BufWriter::with_capacity(1 << 20, file));
    let export = store.export_to(&args.reference, opts, writer, target.clone());
    tokio::select! {
        done = export => done?,
        _ = tokio::signal::ctrl_c() => {
            // Dropping `temp` removes the partial archive.
            drop(temp);
            anyhow::bail!("interrupted: no archive written to {}", target.display());
        }
    }
    drop(store); // clears the progress bar
    if args.sync {
        temp.as_file()
            .sync_all()
            .with_context(|| format!("cannot fsync {}", temp.path().display()))?;
    }
    temp.persist(&target)
        .with_context(|| format!("cannot rename the archive to {}", target.display()))?;
    if args.sync {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync {}", dir.display()))?;
    }
    out.note(format_args!(
        "exported {} to {}",
        args.reference,
        display(&target)
    ));
    if out.json {
        out.json(&serde_json::json!({ "path": target }))?;
    }
    Ok(())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
