//! `snapstore doctor [DIR...]`: what the store's filesystem, and each DIR's, can do for a clone,
//! tried for real on scratch files.

use std::path::PathBuf;

use anyhow::Result;
use snapstore::LocalFile;

use super::{Output, human_bytes, table};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directories a clone might go to (for example a VM run dir)
    dirs: Vec<PathBuf>,
}

pub(crate) async fn run(store: &LocalFile, args: Args, out: Output) -> Result<()> {
    let mut found = vec![store.probe(store.layout().data_root()).await?];
    for dir in args.dirs {
        found.push(store.probe(dir).await?);
    }
    if out.json {
        return out.json(&found);
    }
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|c| {
            vec![
                snapstore::shown(&c.path).to_string(),
                c.fs_type.clone(),
                yes(c.reflink_from_store),
                yes(c.hardlink_from_store),
                yes(c.seek_hole),
                human_bytes(c.available_bytes),
                format!("memory: {}, other: {}", c.memory_files, c.other_files),
            ]
        })
        .collect();
    let header = [
        "DIR",
        "FS",
        "REFLINK",
        "HARDLINK",
        "SEEK_HOLE",
        "FREE",
        "A CLONE HERE USES",
    ];
    out.line(table(&header, &rows))
}
