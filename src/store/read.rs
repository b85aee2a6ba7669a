//! Reading the store: list, inspect, and the leases every reader holds, with the use they
//! record on the lease's use clock for gc's least-recently-used eviction.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::layout::{Lease, last_use};
use crate::lookup::Identity;
use crate::resolve;
use crate::store::LocalFile;
use crate::store::files::{EntryPolicy, data_files};
use crate::types::{Config, Record, SnapshotId};

/// What a lookup through the table found.
struct Found {
    id: SnapshotId,
    record: Record,
    /// The index file it was found in, when the table that said so was settled.
    identity: Option<Identity>,
}

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

    /// The record, with `last_accessed_at` brought up to the snapshot's use clock.
    pub(super) fn inspect_blocking(&self, reference: &str) -> Result<Record> {
        let (id, mut record) = match self.look_up(reference)? {
            Some(found) => (found.id, found.record),
            None => {
                let mut index = self.read_index()?;
                let id = resolve::resolve(&index, reference)?;
                let record = index.get(&id)?.cloned().ok_or_else(|| Error::NotFound {
                    reference: reference.to_string(),
                })?;
                (id, record)
            }
        };
        let used = last_use(&self.layout().lease_file(&id));
        record.last_accessed_at = record.last_accessed_at.max(used);
        Ok(record)
    }

    pub(super) fn data_dir_blocking(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let (dir, config, lease) = self.lease(reference)?;
        self.touch(&lease)?;
        Ok((dir, config, lease))
    }

    /// The snapshot `reference` names and its record, through the lookup table: a few reads,
    /// whatever the size of the index. `None` when there is no table to trust, or the record it
    /// points at is not the one it should be: the caller then reads the whole index.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Ambiguous`], as the table (trusted for this very index
    /// file) answers them.
    fn look_up(&self, reference: &str) -> Result<Option<Found>> {
        let Some(lookup) = self.lookup()? else {
            return Ok(None);
        };
        let resolved = resolve::resolve(&lookup, reference);
        if lookup.broken() {
            self.drop_lookup();
            return Ok(None);
        }
        let id = resolved?;
        let Some(record) = lookup.record(&id) else {
            return Ok(None);
        };
        // What matched must be what the record says: its ID, its name, or a prefix of its ID.
        let matched = record.config.name == reference || id.as_str().starts_with(reference);
        let identity = lookup.settled_identity();
        Ok((matched && !record.pending).then_some(Found {
            id,
            record,
            identity,
        }))
    }

    /// The data dir and config of the snapshot `reference` names, under a shared lease.
    pub(super) fn lease(&self, reference: &str) -> Result<(PathBuf, Config, Lease)> {
        let found = self.look_up(reference)?;
        let id = match &found {
            Some(found) => found.id.clone(),
            None => resolve::resolve(&self.read_index()?, reference)?,
        };
        let lease = Lease::shared(&self.layout().lease_file(&id), &id)?;
        // A delete may have finished between the lookup and the lease: look again under it.
        // When the index file is the very one looked in, nothing can have finished.
        if let Some(Found {
            record,
            identity: Some(identity),
            ..
        }) = found
            && self.index_identity()? == Some(identity)
        {
            return Ok((self.layout().data_dir(&id), record.config, lease));
        }
        let again = self.lookup()?.and_then(|lookup| lookup.record(&id));
        let record = match again {
            Some(record) => Some(record),
            None => self.read_index()?.get(&id)?.cloned(),
        };
        let record = record
            .filter(|r| !r.pending)
            .ok_or_else(|| Error::NotFound {
                reference: reference.to_string(),
            })?;
        Ok((self.layout().data_dir(&id), record.config, lease))
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

    /// Records a use of the leased snapshot (for gc's least-recently-used eviction) on its
    /// use clock, the lease file's mtime: exact to the nanosecond, and never an index write.
    /// Called once the use succeeded, so a failed clone or export records nothing.
    pub(super) fn touch(&self, lease: &Lease) -> Result<()> {
        lease.mark_used();
        Ok(())
    }
}
