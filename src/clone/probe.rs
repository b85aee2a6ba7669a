//! What a filesystem can do for the clone ladder, found by trying it on scratch files: FICLONE
//! from the store, a hardlink from the store, SEEK_HOLE. Feeds `snapstore doctor`.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::sys;
use crate::types::CloneMethod;

/// Bytes written to the scratch file; enough for several blocks on any filesystem.
const SCRATCH_LEN: usize = 64 * 1024;

/// What a directory's filesystem can do, tried for real.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// The directory probed (its nearest existing ancestor when it does not exist yet).
    pub path: PathBuf,
    /// The filesystem type, as `stat -f` names it.
    pub fs_type: String,
    /// Whether FICLONE from a file in the store into this directory works.
    pub reflink_from_store: bool,
    /// Whether a hardlink from a file in the store into this directory works.
    pub hardlink_from_store: bool,
    /// Whether the filesystem reports holes (SEEK_HOLE inside a sparse file).
    pub seek_hole: bool,
    /// Bytes free for an unprivileged writer.
    pub available_bytes: u64,
    /// The rung a clone into this directory gives an immutable (memory) file.
    pub memory_files: CloneMethod,
    /// The rung a clone into this directory gives any other file.
    pub other_files: CloneMethod,
}

/// Probes `dir` with scratch files, cloning from a scratch file in `store_scratch` (a directory
/// of the store's own); every scratch file is removed before returning.
pub(crate) fn probe(dir: &Path, store_scratch: &Path) -> Result<Capabilities> {
    let dir = nearest_existing(dir);
    let stat = sys::fs_stat(&dir).map_err(|e| Error::io("statfs", &dir, e))?;

    let mut src = scratch(store_scratch)?;
    src.write_all(&vec![0x5a; SCRATCH_LEN])
        .and_then(|()| src.as_file().sync_all())
        .map_err(|e| Error::io("write", src.path(), e))?;

    let dst = scratch(&dir)?;
    let reflink = match sys::ficlone(dst.as_file(), src.as_file()) {
        Ok(()) => true,
        Err(e) if sys::clone_unsupported(&e) => false,
        Err(e) => return Err(Error::io("clone", dst.path(), e)),
    };

    let link_path = dir.join(format!(".snapstore-probe-link-{}", std::process::id()));
    let hardlink = match sys::hard_link(src.path(), &link_path) {
        Ok(()) => {
            std::fs::remove_file(&link_path).map_err(|e| Error::io("remove", &link_path, e))?;
            true
        }
        Err(e) if sys::link_unsupported(&e) => false,
        Err(e) => return Err(Error::io("link", &link_path, e)),
    };

    let seek_hole = probe_holes(&dir)?;
    // What the ladder itself would climb to, for each class of file.
    let first_rung = |immutable| {
        let works = |rung: &&CloneMethod| match rung {
            CloneMethod::Reflink => reflink,
            CloneMethod::Hardlink => hardlink,
            _ => true,
        };
        let rungs = super::ladder(immutable, true);
        rungs
            .iter()
            .find(works)
            .copied()
            .unwrap_or(CloneMethod::Copy)
    };
    Ok(Capabilities {
        fs_type: sys::fs_name(stat.magic).to_string(),
        reflink_from_store: reflink,
        hardlink_from_store: hardlink,
        seek_hole,
        available_bytes: stat.available,
        memory_files: first_rung(true),
        other_files: first_rung(false),
        path: dir,
    })
}

/// A file with a 1 MiB hole and one block of data after it: does SEEK_HOLE see the hole?
fn probe_holes(dir: &Path) -> Result<bool> {
    let file = scratch(dir)?;
    let f = file.as_file();
    let data_at = 1 << 20;
    f.write_all_at(&[1u8; 4096], data_at)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", file.path(), e))?;
    let hole = sys::seek_hole(f, 0).map_err(|e| Error::io("seek", file.path(), e))?;
    let data = sys::seek_data(f, 0).map_err(|e| Error::io("seek", file.path(), e))?;
    Ok(hole == 0 && data == Some(data_at))
}

fn scratch(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".snapstore-probe-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a scratch file in", dir, e))
}

fn nearest_existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}
