//! Push, pull and verify, as the store offers them: each leases or creates the snapshot and
//! hands the registry transport what it needs. A pull's files reach the store through the one
//! create path, as a [`Source`] whose files are already in a staging dir beside it.

use std::path::{Path, PathBuf};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::registry::Version;
use crate::registry::pull::{self, Fetched, LocalWindows};
use crate::registry::push::{self, Outgoing};
use crate::registry::record::ChunkRecord;
use crate::registry::verify;
use crate::registry::{
    PullOptions, PullReport, PushOptions, PushReport, Reference, VerifiedSnapshot, VerifyOptions,
    VerifyReport, VerifyStatus, is_tag,
};
use crate::store::LocalFile;
use crate::store::create::{Overrides, Source, Staged};
use crate::store::files::{EntryPolicy, data_files};
use crate::store::ingest::MovedBack;
use crate::types::{Config, FileReport, SnapshotId};

impl LocalFile {
    /// Pushes snapshot `reference` to `target` (`HOST[:PORT]/REPO[:TAG]`; the tag defaults to
    /// the snapshot's name, or `latest` when it has none). Blobs the registry has are not sent;
    /// windows whose digests are recorded are not read unless their blob is missing.
    ///
    /// ```no_run
    /// # async fn demo(store: snapstore::LocalFile) -> snapstore::Result<()> {
    /// let report = store
    ///     .push("base", "127.0.0.1:5000/vm/base", snapstore::PushOptions::default())
    ///     .await?;
    /// println!("{} ({} blobs sent)", report.digest, report.blobs_uploaded);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InvalidReference`], [`Error::InvalidChunkSize`],
    /// [`Error::RegistryUnreachable`], [`Error::RegistryDenied`], [`Error::Registry`],
    /// [`Error::Io`].
    pub async fn push(
        &self,
        reference: &str,
        target: &str,
        opts: PushOptions,
    ) -> Result<PushReport> {
        let (reference, target) = (reference.to_string(), target.to_string());
        self.blocking(move |store| store.push_blocking(&reference, &target, &opts))
            .await
    }

    /// Pulls `source` (`HOST[:PORT]/REPO[:TAG]` or `…@sha256:…`) into a new snapshot. Windows
    /// a snapshot in the store already holds are cloned from it rather than downloaded; a pull
    /// that was cut off resumes when run again.
    ///
    /// ```no_run
    /// # async fn demo(store: snapstore::LocalFile) -> snapstore::Result<()> {
    /// let report = store
    ///     .pull("127.0.0.1:5000/vm/base:v1", snapstore::PullOptions::default())
    ///     .await?;
    /// println!("{} ({} bytes downloaded)", report.id, report.bytes_downloaded);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidReference`], [`Error::ManifestUnknown`], [`Error::NotAnArtifact`],
    /// [`Error::ArtifactInvalid`], [`Error::BlobInvalid`], [`Error::NameTaken`], those of
    /// the registry, and [`Error::Io`] (ENOSPC among them). Nothing is listed unless every
    /// check passed.
    pub async fn pull(&self, source: &str, opts: PullOptions) -> Result<PullReport> {
        let source = source.to_string();
        self.blocking(move |store| store.pull_blocking(&source, &opts))
            .await
    }

    /// Re-hashes the data files of the snapshots `refs` (all when empty) against their chunk
    /// records.
    ///
    /// ```no_run
    /// # async fn demo(store: snapstore::LocalFile) -> snapstore::Result<()> {
    /// let report = store.verify(&[], snapstore::VerifyOptions { record: true }).await?;
    /// assert!(!report.has_mismatch());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Ambiguous`], [`Error::Io`]. A mismatch is not an error:
    /// it is in the report.
    pub async fn verify(&self, refs: &[String], opts: VerifyOptions) -> Result<VerifyReport> {
        let refs = refs.to_vec();
        self.blocking(move |store| store.verify_blocking(&refs, &opts))
            .await
    }

    fn push_blocking(
        &self,
        reference: &str,
        target: &str,
        opts: &PushOptions,
    ) -> Result<PushReport> {
        let target = Reference::parse(target)?;
        let (dir, config, lease) = self.data_dir_blocking(reference)?;
        let tag = match target.version_text() {
            Some(_) if matches!(target.version, Some(Version::Digest(_))) => {
                return Err(Error::InvalidReference {
                    reference: target.to_string(),
                    reason: "a push takes a tag, not a digest",
                });
            }
            Some(tag) => tag,
            None if config.name.is_empty() => "latest".to_string(),
            None if is_tag(&config.name) => config.name.clone(),
            None => {
                return Err(Error::InvalidReference {
                    reference: target.to_string(),
                    reason: "the snapshot's name is not a valid tag: give one as TARGET:TAG",
                });
            }
        };
        let names = data_files(&dir, EntryPolicy::default())?.names;
        let files = sizes(&dir, &names)?;
        // The ID is this store's name for the snapshot, not part of it: left out, the same
        // snapshot gives the same artifact from any store, and a pull gives it a new ID anyway.
        let config = Config {
            id: String::new(),
            ..config
        };
        let outgoing = Outgoing {
            envelope: Envelope::new(config, names),
            record: self.layout().chunks_file(lease.id()),
            dir,
            files,
        };
        push::push(&outgoing, &target, &tag, opts, &self.progress)
    }

    fn pull_blocking(&self, source: &str, opts: &PullOptions) -> Result<PullReport> {
        let source = Reference::parse(source)?;
        let artifact = pull::Artifact::open(&source, opts)?;
        let overrides = Overrides {
            name: opts.name.clone(),
            description: None,
        };
        let name = overrides
            .name
            .clone()
            .unwrap_or_else(|| artifact.config.envelope.config.name.clone());
        self.check_name_free(&name)?;
        let local = self.local_windows()?;
        let fetched = artifact.fetch(self.layout(), &local, opts.jobs, &self.progress)?;
        let digest = fetched.digest.to_string();
        let (downloaded, cloned) = (fetched.bytes_downloaded, fetched.bytes_cloned);
        let record = fetched.record.clone();
        let report = self.create_from(PullSource::new(fetched), overrides)?;
        // The digests came with the artifact: recorded, a later push or verify need not hash.
        // Derived data: a snapshot without it has its digests made again when needed.
        let _ = record.write(&self.layout().chunks_file(&report.id));
        Ok(PullReport {
            id: report.id,
            digest,
            bytes_downloaded: downloaded,
            bytes_cloned_locally: cloned,
            files: report.files,
        })
    }

    /// The windows of every complete snapshot that has a chunk record.
    fn local_windows(&self) -> Result<LocalWindows> {
        let mut local = LocalWindows::default();
        let mut index = self.read_index()?;
        for (id, _) in index.complete()? {
            if let Some(record) = ChunkRecord::read(&self.layout().chunks_file(id)) {
                local.add(&self.layout().data_dir(id), &record);
            }
        }
        Ok(local)
    }

    fn verify_blocking(&self, refs: &[String], opts: &VerifyOptions) -> Result<VerifyReport> {
        let refs: Vec<String> = if refs.is_empty() {
            self.list_blocking()?
                .into_iter()
                .map(|r| r.config.id)
                .collect()
        } else {
            refs.to_vec()
        };
        let mut snapshots = Vec::new();
        for reference in &refs {
            let (dir, config, lease) = self.lease(reference)?;
            let id = lease.id().clone();
            let names = data_files(&dir, EntryPolicy::default())?.names;
            let path = self.layout().chunks_file(&id);
            let verified = match ChunkRecord::read(&path) {
                Some(record) => {
                    let (mismatches, bytes) = verify::check(&dir, &names, &record, &self.progress)?;
                    let status = if mismatches.is_empty() {
                        VerifyStatus::Ok
                    } else {
                        VerifyStatus::Mismatch
                    };
                    verified(&id, config, status, bytes, mismatches)
                }
                None if opts.record => {
                    let record = verify::record(&dir, &names, &self.progress)?;
                    record.write(&path)?;
                    let bytes = record
                        .files
                        .iter()
                        .flat_map(|f| &f.chunks)
                        .map(|c| c.chunk.data_len())
                        .sum();
                    verified(&id, config, VerifyStatus::Recorded, bytes, Vec::new())
                }
                None => verified(&id, config, VerifyStatus::Unrecorded, 0, Vec::new()),
            };
            snapshots.push(verified);
        }
        Ok(VerifyReport { snapshots })
    }
}

fn verified(
    id: &SnapshotId,
    config: Config,
    status: VerifyStatus,
    bytes_checked: u64,
    mismatches: Vec<crate::registry::Mismatch>,
) -> VerifiedSnapshot {
    VerifiedSnapshot {
        id: id.clone(),
        name: config.name,
        status,
        bytes_checked,
        mismatches,
    }
}

/// The sizes of the files `names` of `dir`.
fn sizes(dir: &Path, names: &[String]) -> Result<Vec<(String, u64)>> {
    names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            let meta = fsutil::symlink_metadata(&path)?;
            Ok((name.clone(), meta.len()))
        })
        .collect()
}

/// A pulled artifact's files, moved from the pull's staging dir into the create path's.
struct PullSource {
    fetched: Option<Fetched>,
    moved: MovedBack,
}

impl PullSource {
    fn new(fetched: Fetched) -> PullSource {
        PullSource {
            fetched: Some(fetched),
            moved: MovedBack::default(),
        }
    }

    fn fetched(&self) -> &Fetched {
        self.fetched
            .as_ref()
            .expect("the fetched files stay until finish")
    }
}

impl Source for PullSource {
    fn name(&self) -> Option<&str> {
        Some(&self.fetched().config.envelope.config.name)
    }

    fn fill(&mut self, _store: &LocalFile, staging: &Path) -> Result<Staged> {
        let fetched = self
            .fetched
            .as_ref()
            .expect("the fetched files stay until finish");
        let mut files = Vec::new();
        for (file, method) in fetched.config.files.iter().zip(&fetched.methods) {
            let (from, to): (PathBuf, PathBuf) =
                (fetched.dir.join(&file.name), staging.join(&file.name));
            fsutil::rename(&from, &to)?;
            // Put back if the commit fails, so that a re-run resumes instead of starting over.
            self.moved.renamed.push((to, from));
            files.push(FileReport {
                name: file.name.clone(),
                method: *method,
                bytes: file.size,
            });
        }
        fsutil::fsync_dir(&fetched.dir)?;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Staged {
            config: fetched.config.envelope.config.clone(),
            files,
            skipped: Vec::new(),
        })
    }

    fn relocated(&mut self, from: &Path, to: &Path) {
        self.moved.relocate(from, to);
    }

    fn finish(mut self) -> Result<()> {
        std::mem::take(&mut self.moved).finish()?;
        match self.fetched.take() {
            Some(fetched) => fetched.discard(),
            None => Ok(()),
        }
    }
}
