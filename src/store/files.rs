//! What a snapshot directory holds: its data files, as names and as clone jobs. Shared by the
//! paths that read a directory: save, import from a directory, clone and export.
//!
//! An entry that holds data a snapshot would not carry (a symlink, a directory with anything
//! in it, a device, a file whose name is not UTF-8 and so cannot be named in the JSON index)
//! fails the operation by default, naming each such entry: a save that silently left out a
//! symlinked disk would be a snapshot without its disk. [`EntryPolicy`] lets a caller store a
//! symlink's target instead, or accept the loss knowingly. Entries that hold no data (sockets,
//! fifos, empty directories) are left out and listed.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::clone::Job;
use crate::envelope::ENVELOPE_FILE;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{LocalFile, SaveOptions};
use crate::types::Skipped;
use crate::types::is_plain_name;

/// What to do with entries a snapshot cannot carry.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct EntryPolicy {
    /// A symlink to a regular file is stored as that file's content, under the link's name.
    pub(super) dereference: bool,
    /// Entries that hold data the snapshot cannot carry are left out and listed, not refused.
    pub(super) skip_unsupported: bool,
}

impl From<SaveOptions> for EntryPolicy {
    fn from(opts: SaveOptions) -> EntryPolicy {
        EntryPolicy {
            dereference: opts.dereference,
            skip_unsupported: opts.skip_unsupported,
        }
    }
}

/// The data files of a directory, as a policy sorted its entries.
#[derive(Debug, Default)]
pub(super) struct DirFiles {
    /// Every data file's name, in name order, dereferenced links among them.
    pub(super) names: Vec<String>,
    /// The names that are symlinks whose target is to be stored.
    pub(super) dereferenced: BTreeSet<String>,
    /// Entries left out, with what they are.
    pub(super) skipped: Vec<Skipped>,
}

impl LocalFile {
    /// One clone job per name in `names`, each a regular file directly in `src` (or, for a
    /// name in `dereferenced`, a symlink to one: the job reads its target, and never links it).
    ///
    /// # Errors
    /// [`Error::InvalidFileName`] for a name that is not one plain component (or is the
    /// envelope's), [`Error::NotARegularFile`], [`Error::Io`].
    pub(super) fn jobs(
        &self,
        src: &Path,
        names: &[String],
        dereferenced: &BTreeSet<String>,
    ) -> Result<Vec<Job>> {
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
                let linked = dereferenced.contains(name);
                let path = if linked {
                    std::fs::canonicalize(&path).map_err(|e| Error::io("follow", &path, e))?
                } else {
                    path
                };
                if !fsutil::symlink_metadata(&path)?.is_file() {
                    return Err(Error::NotARegularFile { path });
                }
                Ok(Job {
                    name: name.clone(),
                    src: path,
                    foreign: linked,
                })
            })
            .collect()
    }
}

/// The data files of `dir` (not `snapshot.json`) under `policy`.
///
/// # Errors
/// [`Error::UnsupportedEntries`] naming every entry that holds data the snapshot would not
/// carry, unless `policy.skip_unsupported`; [`Error::Io`].
pub(super) fn data_files(dir: &Path, policy: EntryPolicy) -> Result<DirFiles> {
    let mut files = DirFiles::default();
    let mut unsupported = Vec::new();
    for (raw, meta) in fsutil::list_dir(dir)? {
        let kind = meta.file_type();
        let path = dir.join(&raw);
        let (name, utf8) = match raw.into_string() {
            Ok(name) => (name, true),
            Err(raw) => (raw.as_bytes().escape_ascii().to_string(), false),
        };
        let entry = |kind: &'static str| Skipped {
            name: name.clone(),
            kind,
        };
        if name == ENVELOPE_FILE {
            continue;
        }
        let holds_no_data = kind.is_fifo() || kind.is_socket() || is_empty_dir(&path, kind)?;
        if holds_no_data {
            files.skipped.push(entry(describe(kind)));
        } else if !utf8 {
            unsupported.push(entry("name not UTF-8"));
        } else if kind.is_file() {
            files.names.push(name);
        } else if kind.is_symlink() && policy.dereference {
            // The target must be a regular file; a link to a directory, or nowhere, is not data
            // a snapshot can hold under one name.
            match std::fs::metadata(&path) {
                Ok(target) if target.is_file() => {
                    files.dereferenced.insert(name.clone());
                    files.names.push(name);
                }
                _ => unsupported.push(entry("symlink to no regular file")),
            }
        } else {
            unsupported.push(entry(describe(kind)));
        }
    }
    if !unsupported.is_empty() {
        if !policy.skip_unsupported {
            return Err(Error::UnsupportedEntries {
                dir: dir.to_path_buf(),
                entries: unsupported,
            });
        }
        files.skipped.extend(unsupported);
    }
    files.names.sort();
    files.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn is_empty_dir(path: &Path, kind: std::fs::FileType) -> Result<bool> {
    Ok(kind.is_dir() && fsutil::is_missing_or_empty(path)?)
}

/// What an entry is, as reports say it.
fn describe(kind: std::fs::FileType) -> &'static str {
    if kind.is_file() {
        "file"
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
    }
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
