//! The `snapstore` command: parse, run one library call, print the error chain, exit 0/1/2.
//!
//! Usage errors exit 2 (clap), any other error 1 with `error: ` and the whole cause chain on
//! stderr. A closed stdout (`snapstore list | head -1`) is not an error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_malloc();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// One short process reads a whole index (5 MB for 10,000 snapshots) and exits, so glibc's
/// malloc is told to keep what it gets: a worker thread's own arena grows one `mprotect` at a
/// time (thousands for one index), large blocks come from a fresh `mmap` each and are unmapped
/// on free, and the heap is trimmed as soon as it shrinks. One arena, a high mmap threshold, no
/// trimming and a 16 MiB top pad avoid all of that. (mimalloc did too, but cost every process
/// 0.6 ms at start: a sixth of a whole reflink clone.)
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn tune_malloc() {
    for (param, value) in [
        (libc::M_ARENA_MAX, 1),
        (libc::M_MMAP_THRESHOLD, 256 << 20),
        (libc::M_TRIM_THRESHOLD, 256 << 20),
        (libc::M_TOP_PAD, 16 << 20),
    ] {
        // SAFETY: mallopt only sets allocator parameters; it reads no memory of ours. It is
        // called before any thread starts. A parameter glibc refuses (returns 0) keeps its
        // default, which is correct, only slower.
        unsafe { libc::mallopt(param, value) };
    }
}

#[cfg(not(target_env = "gnu"))]
fn tune_malloc() {}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind);
        let json = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io == Some(BrokenPipe) || json == Some(BrokenPipe)
    })
}
