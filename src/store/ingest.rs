//! New snapshots from a directory: `save` (someone's VM snapshot dir, through the ladder without
//! hardlinks, with `--link`, or by renames with `--move`) and import from a directory carrying
//! `snapshot.json`. Both are one [`Source`] for the create path.

use std::path::{Path, PathBuf};

use crate::clone;
use crate::envelope;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::create::{Overrides, Source, Staged};
use crate::store::files::{DirFiles, EntryPolicy, data_files, require_dir};
use crate::store::{CreateReport, DirImportOptions, LocalFile, SaveMode, SaveOptions};
use crate::sys;
use crate::types::{CloneMethod, Config, FileReport};

impl LocalFile {
    /// A new snapshot from a directory that carries `snapshot.json` (one `export_to_dir` wrote,
    /// perhaps on another host): new ID, files through the ladder without hardlinks.
    /// `opts.name` and `opts.description` override the envelope's.
    ///
    /// # Errors
    /// [`Error::EnvelopeMissing`], [`Error::ListedFileMissing`], and those of
    /// [`Snapshot::create`](crate::Snapshot::create).
    pub async fn import_from_dir(
        &self,
        dir: PathBuf,
        opts: DirImportOptions,
    ) -> Result<CreateReport> {
        self.blocking(move |store| store.import_from_dir_blocking(&dir, opts))
            .await
    }

    pub(super) fn save_blocking(
        &self,
        config: Config,
        src: &Path,
        opts: SaveOptions,
    ) -> Result<CreateReport> {
        require_dir(src)?;
        let files = data_files(src, EntryPolicy::from(opts))?;
        let source = DirSource::new(config, src, files, opts);
        self.create_from(source, Overrides::default())
    }

    fn import_from_dir_blocking(&self, dir: &Path, opts: DirImportOptions) -> Result<CreateReport> {
        require_dir(dir)?;
        let envelope = envelope::read(dir)?;
        let files = match envelope.files {
            Some(names) => DirFiles {
                names,
                ..DirFiles::default()
            },
            None => data_files(dir, EntryPolicy::default())?,
        };
        let source = DirSource::new(envelope.config, dir, files, SaveOptions::default());
        let overrides = Overrides {
            name: opts.name,
            description: opts.description,
        };
        self.create_from(source, overrides)
    }
}

/// The named files of a directory, taken in as [`SaveOptions`] say.
struct DirSource {
    config: Config,
    src: PathBuf,
    files: DirFiles,
    opts: SaveOptions,
    moved: MovedBack,
}

impl DirSource {
    fn new(config: Config, src: &Path, files: DirFiles, opts: SaveOptions) -> DirSource {
        DirSource {
            config,
            src: src.to_path_buf(),
            files,
            opts,
            moved: MovedBack::default(),
        }
    }
}

impl Source for DirSource {
    fn name(&self) -> Option<&str> {
        Some(&self.config.name)
    }

    fn fill(&mut self, store: &LocalFile, staging: &Path) -> Result<Staged> {
        let dereferenced = &self.files.dereferenced;
        let mut jobs = store.jobs(&self.src, &self.files.names, dereferenced)?;
        let mut reports = Vec::new();
        if self.opts.mode == SaveMode::Move {
            // Rename what can be renamed; what is on another filesystem takes the ladder, and
            // so does a link's target, which is someone else's file: the link is what goes.
            let mut across = Vec::new();
            for job in jobs {
                if dereferenced.contains(&job.name) {
                    across.push(job);
                    continue;
                }
                let dst = staging.join(&job.name);
                match std::fs::rename(&job.src, &dst) {
                    Ok(()) => {
                        // First of all: put it back if anything below fails.
                        self.moved.renamed.push((dst.clone(), job.src.clone()));
                        // Its data is the store's now, and must be on disk before the index
                        // names it: whoever wrote the file may not have fsynced it.
                        let file = fsutil::open(&dst)?;
                        file.sync_all().map_err(|e| Error::io("fsync", &dst, e))?;
                        let bytes = file
                            .metadata()
                            .map_err(|e| Error::io("stat", &dst, e))?
                            .len();
                        reports.push(FileReport {
                            name: job.name,
                            method: CloneMethod::Move,
                            bytes,
                        });
                    }
                    Err(e) if sys::rename_crosses_filesystems(&e) => across.push(job),
                    Err(e) => return Err(Error::io("move", &job.src, e)),
                }
            }
            self.moved.copied = across.iter().map(|j| self.src.join(&j.name)).collect();
            jobs = across;
            fsutil::fsync_dir(&self.src)?;
        }
        let ladder = clone::Options {
            hardlink: (self.opts.mode == SaveMode::Link).then(|| store.classes().clone()),
            require_cow: self.opts.require_cow,
            durable: true,
            progress: store.progress.clone(),
        };
        reports.extend(clone::run(&jobs, staging, &ladder)?);
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Staged {
            config: self.config.clone(),
            files: reports,
            skipped: std::mem::take(&mut self.files.skipped),
        })
    }

    fn relocated(&mut self, from: &Path, to: &Path) {
        self.moved.relocate(from, to);
    }

    fn finish(self) -> Result<()> {
        self.moved.finish()
    }
}

/// For `save --move`: puts renamed files back where they came from unless finished, and on
/// finish removes the sources that had to be copied across filesystems (a move consumes them).
#[derive(Default)]
pub(super) struct MovedBack {
    pub(super) renamed: Vec<(PathBuf, PathBuf)>,
    copied: Vec<PathBuf>,
}

impl MovedBack {
    /// The renamed files now live under `to` instead of `from`.
    pub(super) fn relocate(&mut self, from: &Path, to: &Path) {
        for (now, _) in &mut self.renamed {
            if let Ok(rest) = now.strip_prefix(from) {
                *now = to.join(rest);
            }
        }
    }

    pub(super) fn finish(mut self) -> Result<()> {
        self.renamed.clear();
        for src in std::mem::take(&mut self.copied) {
            std::fs::remove_file(&src).map_err(|e| Error::io("remove", &src, e))?;
        }
        Ok(())
    }
}

impl Drop for MovedBack {
    fn drop(&mut self) {
        for (now, was) in self.renamed.drain(..).rev() {
            // Best effort: the file is in the staging dir, where gc would find it otherwise.
            let _ = std::fs::rename(&now, &was);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_move_puts_renamed_files_back_even_after_relocation() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, staging, data) = (
            tmp.path().join("src"),
            tmp.path().join("staging"),
            tmp.path().join("data"),
        );
        for d in [&src, &staging] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(staging.join("mem"), b"m").unwrap();
        std::fs::write(staging.join("disk"), b"d").unwrap();
        let mut moved = MovedBack::default();
        moved.renamed.push((staging.join("mem"), src.join("mem")));
        drop(moved);
        assert_eq!(std::fs::read(src.join("mem")).unwrap(), b"m");

        std::fs::rename(&staging, &data).unwrap();
        let mut moved = MovedBack::default();
        moved.renamed.push((staging.join("disk"), src.join("disk")));
        moved.relocate(&staging, &data);
        drop(moved);
        assert_eq!(std::fs::read(src.join("disk")).unwrap(), b"d");
    }

    #[test]
    fn finishing_a_move_removes_sources_that_were_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let copied = tmp.path().join("copied");
        std::fs::write(&copied, b"x").unwrap();
        let moved = MovedBack {
            renamed: Vec::new(),
            copied: vec![copied.clone()],
        };
        moved.finish().unwrap();
        assert!(!copied.exists());
    }
}
