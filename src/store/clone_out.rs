//! Clones out of the store: into a VM's run dir (`clone`, memory files may be hardlinked) and
//! into a plain directory with `snapshot.json` (`export --to-dir`, never hardlinked, so the
//! result stands alone for rsync and NFS). Both run the ladder under a lease.

use std::path::{Path, PathBuf};

use crate::clone;
use crate::envelope::{self, Envelope};
use crate::error::{Error, Result};
use crate::fsutil::{self, Cleanup};
use crate::store::files::{EntryPolicy, data_files, require_dir};
use crate::store::{CloneOptions, CloneReport, CloneSource, DirExportOptions, LocalFile};
use crate::types::FileReport;

impl LocalFile {
    /// Clones a snapshot's data files (no `snapshot.json`) into `dir`, new or empty: the VM-clone
    /// path. Memory files may be hardlinked (unless `opts.hardlink` is off); others never are.
    ///
    /// # Errors
    /// [`Error::TargetNotEmpty`], [`Error::NotFound`], [`Error::EnvelopeMissing`] (for a
    /// directory source), [`Error::CowRequired`], [`Error::NoSpace`], [`Error::Io`].
    pub async fn clone_to_dir(
        &self,
        source: CloneSource,
        dir: PathBuf,
        opts: CloneOptions,
    ) -> Result<CloneReport> {
        self.blocking(move |store| store.clone_to_dir_blocking(&source, &dir, opts))
            .await
    }

    /// [`DirectoryExporter::export_to_dir`](crate::DirectoryExporter::export_to_dir) with
    /// options: `opts.sync` makes the export durable before it returns.
    ///
    /// # Errors
    /// Those of [`DirectoryExporter::export_to_dir`](crate::DirectoryExporter::export_to_dir).
    pub async fn export_to_dir_with(
        &self,
        reference: &str,
        dir: PathBuf,
        opts: DirExportOptions,
    ) -> Result<CloneReport> {
        let reference = reference.to_string();
        self.blocking(move |store| store.export_to_dir_blocking(&reference, &dir, opts))
            .await
    }

    fn clone_to_dir_blocking(
        &self,
        source: &CloneSource,
        dir: &Path,
        opts: CloneOptions,
    ) -> Result<CloneReport> {
        let ladder = clone::Options {
            hardlink: opts.hardlink.then(|| self.classes().clone()),
            require_cow: opts.require_cow,
            durable: opts.sync,
            progress: self.progress.clone(),
        };
        match source {
            CloneSource::Ref(reference) => {
                let (lease, data_dir, config, names) = self.open_for_read(reference)?;
                let (files, cleanup) = self.clone_out(&data_dir, &names, dir, ladder)?;
                self.touch(&lease)?;
                cleanup.disarm();
                Ok(CloneReport { files, config })
            }
            CloneSource::Dir(src) => {
                require_dir(src)?;
                let envelope = envelope::read(src)?;
                let names = match envelope.files {
                    Some(names) => names,
                    None => data_files(src, EntryPolicy::default())?.names,
                };
                let (files, cleanup) = self.clone_out(src, &names, dir, ladder)?;
                cleanup.disarm();
                Ok(CloneReport {
                    files,
                    config: envelope.config,
                })
            }
        }
    }

    fn export_to_dir_blocking(
        &self,
        reference: &str,
        dir: &Path,
        opts: DirExportOptions,
    ) -> Result<CloneReport> {
        let (lease, data_dir, config, names) = self.open_for_read(reference)?;
        let ladder = clone::Options {
            durable: opts.sync,
            progress: self.progress.clone(),
            ..clone::Options::default()
        };
        let (files, cleanup) = self.clone_out(&data_dir, &names, dir, ladder)?;
        envelope::write(dir, &Envelope::new(config.clone(), names), opts.sync)?;
        self.touch(&lease)?;
        cleanup.disarm();
        Ok(CloneReport { files, config })
    }

    /// Clones `names` from `src` into `dir`, which must be new or empty. The returned guard
    /// still removes the files (and `dir`, if this call made it) until it is disarmed.
    #[must_use = "dropping the guard removes the clone"]
    fn clone_out(
        &self,
        src: &Path,
        names: &[String],
        dir: &Path,
        ladder: clone::Options,
    ) -> Result<(Vec<FileReport>, Cleanup)> {
        if !fsutil::is_missing_or_empty(dir)? {
            return Err(Error::TargetNotEmpty {
                path: dir.to_path_buf(),
            });
        }
        let mut cleanup = Cleanup::new();
        if !dir.exists() {
            fsutil::create_dir_all(dir)?;
            cleanup.push(dir.to_path_buf());
        }
        let jobs = self.jobs(src, names, &Default::default())?;
        let files = clone::run(&jobs, dir, &ladder)?;
        for file in &files {
            cleanup.push(dir.join(&file.name));
        }
        if ladder.durable {
            fsutil::fsync_dir(fsutil::parent_dir(dir))?;
        }
        Ok((files, cleanup))
    }
}
