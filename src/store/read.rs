//! Reading the store: list, inspect, and the leases every reader holds, with the use they
//! record for gc's least-recently-used eviction.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::layout::Lease;
use crate::resolve;
use crate::store::LocalFile;
use crate::store::files::{EntryPolicy, data_files};
use crate::types::{Config, Record, gotime};

/// How finely uses are recorded in `last_accessed_at`: a use this soon after the last one
/// recorded does not rewrite the index.
pub const ACCESS_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

impl LocalFile {
    pub(super) fn list_blocking(&self) -> Result<Vec<Record>> {
        let mut index = self.read_index()?;
        let mut records: Vec<Record> = index
            .complete()?
            .into_iter()
            .map(|(_, r)| r.clone())
            .collect();
        records.sort_by(|a, b| (a.created_at, a.id()).cmp(&(b.created_at, b.id())));
        Ok(records)
    }

    pub(super) fn inspect_blocking(&self, reference: &str) -> Result<Record> {
        let mut index = self.read_index()?;
        let id = resolve::resolve(&index, reference)?;
        index.get(&id)?.cloned().ok_or_else(|| Error::NotFound {
            reference: reference.to_string(),
        })
    }

    pub(super) fn data_dir_blocking(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let (dir, config, lease) = self.lease(reference)?;
        self.touch(&lease)?;
        Ok((dir, config, lease))
    }

    /// The data dir and config of the snapshot `reference` names, under a shared lease.
    pub(super) fn lease(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let id = resolve::resolve(&self.read_index()?, reference)?;
        let mut lease = Lease::shared(&self.layout().lease_file(&id), &id)?;
        // A delete may have finished between the lookup and the lease: look again under it.
        let mut index = self.read_index()?;
        let record = index
            .get(&id)?
            .filter(|r| !r.pending)
            .ok_or_else(|| Error::NotFound {
                reference: reference.to_string(),
            })?;
        lease.last_used = record.last_accessed_at;
        Ok((self.layout().data_dir(&id), record.config.clone(), lease))
    }

    /// The snapshot's data dir, config and file names, under a lease held until dropped.
    pub(super) fn open_for_read(
        &self,
        reference: &str,
    ) -> Result<(Lease, PathBuf, Config, Vec<String>)> {
        let (dir, config, lease) = self.lease(reference)?;
        let names = data_files(&dir, EntryPolicy::default())?.names;
        Ok((lease, dir, config, names))
    }

    /// Records a use of the leased snapshot (for gc's least-recently-used eviction). Called once
    /// the use succeeded, so a failed clone or export leaves the index as it was.
    ///
    /// As `relatime` does for atime, a use within [`ACCESS_RESOLUTION`] of the last one recorded
    /// is not written: cloning one snapshot for many VMs in a row rewrites the index once, not
    /// once per VM. A read-only store records nothing, and is not an error to read from.
    pub(super) fn touch(&self, lease: &Lease) -> Result<()> {
        let now = gotime::now();
        let recent = lease
            .last_used
            .and_then(|t| (now - t).to_std().ok())
            .is_some_and(|age| age < ACCESS_RESOLUTION);
        if recent {
            return Ok(());
        }
        let id = lease.id();
        let touched = self.update_index(|index| {
            if let Some(record) = index.get_mut(id)? {
                record.last_accessed_at = Some(now);
            }
            Ok(())
        });
        match touched {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
            {
                Ok(())
            }
            other => other,
        }
    }
}
