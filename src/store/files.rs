//! What a snapshot directory holds: its data files, as names and as clone jobs. Shared by the
//! paths that read a directory: save, import from a directory, clone and export.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::clone::Job;
use crate::envelope::ENVELOPE_FILE;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{LocalFile, Skipped};
use crate::types::is_plain_name;

impl LocalFile {
    /// One clone job per name in `names`, each a regular file directly in `src`.
    ///
    /// # Errors
    /// [`Error::InvalidFileName`] for a name that is not one plain component (or is the
    /// envelope's), [`Error::NotARegularFile`], [`Error::Io`].
    pub(super) fn jobs(&self, src: &Path, names: &[String]) -> Result<Vec<Job>> {
        names
            .iter()
            .map(|name| {
                if !is_plain_name(name) || name == ENVELOPE_FILE {
                    return Err(Error::InvalidFileName {
                        dir: src.to_path_buf(),
                        name: name.clone(),
                    });
                }
                let path = src.join(name);
                if !fsutil::symlink_metadata(&path)?.is_file() {
                    return Err(Error::NotARegularFile { path });
                }
                Ok(Job {
                    name: name.clone(),
                    src: path,
                    immutable: self.classes().is_immutable(name),
                })
            })
            .collect()
    }
}

/// The regular files of `dir` (not `snapshot.json`) in name order, and what was skipped.
pub(super) fn data_files(dir: &Path) -> Result<(Vec<String>, Vec<Skipped>)> {
    let mut names = Vec::new();
    let mut skipped = Vec::new();
    for (name, meta) in fsutil::list_dir(dir)? {
        let kind = meta.file_type();
        let name = match name.into_string() {
            Ok(name) => name,
            Err(raw) => {
                skipped.push(Skipped {
                    name: lossy(&raw),
                    kind: "non-utf8 name",
                });
                continue;
            }
        };
        if name == ENVELOPE_FILE {
            continue;
        }
        let what = if kind.is_file() {
            names.push(name);
            continue;
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_symlink() {
            "symlink"
        } else if kind.is_fifo() {
            "fifo"
        } else if kind.is_socket() {
            "socket"
        } else {
            "device"
        };
        skipped.push(Skipped { name, kind: what });
    }
    Ok((names, skipped))
}

fn lossy(name: &OsString) -> String {
    name.to_string_lossy().into_owned()
}

/// [`Error::NotADirectory`] unless `path` is a directory.
pub(super) fn require_dir(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("open source directory", path, e))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(Error::NotADirectory {
            path: path.to_path_buf(),
        })
    }
}
