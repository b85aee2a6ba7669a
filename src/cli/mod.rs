//! The command line: clap's `Cli`, dispatch to one file per subcommand, and the shared output
//! helpers. A client of the library: it reaches only what `lib.rs` exports.
//!
//! Results go to stdout (`--json` for machines), logs and skipped entries to stderr.

mod bench;
mod clone;
mod completions;
mod demo;
mod doctor;
mod du;
mod export;
mod fsck;
mod gc;
mod import;
mod inspect;
mod list;
mod progress;
mod pull;
mod push;
mod registry;
mod rm;
mod save;
mod verify;
mod workload;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use progress::Bar;
use serde::Serialize;
use snapstore::{FileReport, Layout, LocalFile};

/// A reflink-native snapshot store for virtual machines.
#[derive(Debug, Parser)]
#[command(name = "snapstore", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Store root [default: /var/lib/snapstore for root, else $XDG_DATA_HOME/snapstore]
    #[arg(long, global = true, env = "SNAPSTORE_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// Machine-readable output on stdout
    #[arg(long, global = true)]
    json: bool,

    /// Say less on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// Say more on stderr (per-file methods)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Save a directory of VM snapshot files as a new snapshot
    Save(save::Args),
    /// List snapshots, oldest first
    List,
    /// Show one snapshot's record as JSON
    Inspect(inspect::Args),
    /// Delete snapshots
    Rm(rm::Args),
    /// Clone a snapshot's files into a run directory for a new VM
    Clone(clone::Args),
    /// Export a snapshot to a directory with snapshot.json
    Export(export::Args),
    /// Import a snapshot from a directory with snapshot.json
    Import(import::Args),
    /// Push a snapshot to an OCI registry, chunked and deduplicated
    Push(push::Args),
    /// Pull a snapshot from an OCI registry into a new snapshot
    Pull(pull::Args),
    /// Re-hash snapshots' data against their recorded chunk digests
    Verify(verify::Args),
    /// Show apparent, allocated, shared and exclusive bytes per snapshot
    Du(du::Args),
    /// Remove leftovers of crashed operations; evict least recently used snapshots
    Gc(gc::Args),
    /// Check the index against the data dirs; --repair mends what it can
    Fsck(fsck::Args),
    /// Show what the store's and other directories' filesystems can do
    Doctor(doctor::Args),
    /// Save, clone, export and import a small VM snapshot in a temporary store
    Demo(demo::Args),
    /// Time snapstore against cp and GNU tar on the same snapshot, side by side
    Bench(bench::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(completions::CompletionsArgs),
    /// Print the man page, snapstore(1), in roff
    Man,
}

/// How output is wanted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    pub(crate) verbose: bool,
}

impl Output {
    /// Prints `value` as pretty JSON on stdout.
    pub(crate) fn json<T: Serialize>(&self, value: &T) -> Result<()> {
        // Buffered: stdout flushes at every newline, and pretty JSON has one per field.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }

    /// Prints a line on stdout.
    pub(crate) fn line(&self, text: impl std::fmt::Display) -> Result<()> {
        writeln!(std::io::stdout().lock(), "{text}")?;
        Ok(())
    }

    /// Prints a note on stderr unless `-q`.
    pub(crate) fn note(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// Prints per-file reports on stderr with `-v`.
    pub(crate) fn files(&self, what: &str, files: &[FileReport]) {
        if self.verbose {
            for f in files {
                eprintln!("{what} {} {} {}", f.name, f.method, human_bytes(f.bytes));
            }
        }
    }
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let out = Output {
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose > 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let root = cli.root.unwrap_or_else(Layout::default_root);
    // One operation per process, awaited at once: it runs on this thread, not handed to another
    // and back. Except a tar export, which must stay interruptible (Ctrl-C removes its output).
    let open = || LocalFile::open(&root).map(|store| store.on_calling_thread());
    let open_interruptible = || LocalFile::open(&root);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Save(args) => save::run(with_bar(open()?, out, "saving"), args, out).await,
            Command::List => list::run(&open()?, out).await,
            Command::Inspect(args) => inspect::run(&open()?, args, out).await,
            Command::Rm(args) => rm::run(&open()?, args, out).await,
            Command::Clone(args) => clone::run(with_bar(open()?, out, "cloning"), args, out).await,
            Command::Export(args) => {
                let store = with_bar(open_interruptible()?, out, "exporting");
                export::run(store, args, out).await
            }
            Command::Import(args) => {
                import::run(with_bar(open()?, out, "importing"), args, out).await
            }
            Command::Push(args) => push::run(with_bar(open()?, out, "pushing"), args, out).await,
            Command::Pull(args) => pull::run(with_bar(open()?, out, "pulling"), args, out).await,
            Command::Verify(args) => {
                verify::run(with_bar(open()?, out, "verifying"), args, out).await
            }
            Command::Du(args) => du::run(&open()?, args, out).await,
            Command::Gc(args) => gc::run(&open()?, args, out).await,
            Command::Fsck(args) => fsck::run(&open()?, args, out).await,
            Command::Doctor(args) => doctor::run(&open()?, args, out).await,
            Command::Demo(args) => demo::run(args, out).await,
            Command::Bench(args) => bench::run(args, out).await,
            Command::Completions(args) => completions::completions(args),
            Command::Man => completions::man(),
        }
    });
    // Whatever the command awaited is done. Dropping the runtime would join its idle blocking
    // thread (0.7 ms, a fifth of a reflink clone), or, after Ctrl-C, wait for the work it was
    // interrupting to finish; the process is about to exit either way.
    runtime.shutdown_background();
    result
}

/// The store, counting the bytes it moves into a progress bar that lives as long as it does.
fn with_bar(store: LocalFile, out: Output, what: &'static str) -> progress::Tracked {
    Bar::start(&out, what).attach(store)
}

/// Bytes as `truncate` and `ls -h` think of them: powers of 1024.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A plain-text table: a header row, then rows, columns padded to their widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut push = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                text.push_str(&" ".repeat(pad));
            }
        }
        text.push('\n');
    };
    push(header.to_vec());
    for row in rows {
        push(row.iter().map(String::as_str).collect());
    }
    text.pop();
    text
}

/// The per-file table of a clone or export.
pub(crate) fn files_table(files: &[FileReport]) -> String {
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| vec![f.name.clone(), f.method.to_string(), human_bytes(f.bytes)])
        .collect();
    table(&["FILE", "METHOD", "SIZE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_powers_of_1024() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(9 << 30), "9.0 GiB");
    }

    #[test]
    fn table_pads_all_but_the_last_column() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1");
    }
}
