//! `rm`: every ref resolved and every snapshot leased before anything goes; then the records
//! and sidecars in one index write, then the data.

use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Lease;
use crate::resolve;
use crate::store::LocalFile;
use crate::types::SnapshotId;

impl LocalFile {
    pub(super) fn delete_blocking(&self, refs: &[String], force: bool) -> Result<Vec<SnapshotId>> {
        let layout = self.layout();
        let ids = resolve::resolve_many(&self.read_index()?, refs)?;
        let mut leases = Vec::with_capacity(ids.len());
        for id in &ids {
            match Lease::try_exclusive(&layout.lease_file(id), id)? {
                Some(lease) => leases.push(lease),
                None if force => {}
                None => return Err(Error::InUse { id: id.clone() }),
            }
        }
        // The sidecars and records go first, in one atomic index write: a crash after it leaves
        // only orphan dirs without sidecars, which nothing lists and gc removes, never a listed
        // snapshot without its data.
        let deleted = self.update_index(|index| {
            let deleted: Vec<SnapshotId> = ids
                .iter()
                .filter(|id| index.contains(id))
                .cloned()
                .collect();
            layout.remove_sidecars(&deleted)?;
            for id in &deleted {
                index.remove(id);
            }
            Ok(deleted)
        })?;
        for id in &deleted {
            // Under `--force` someone may hold the lease; its file stays for them, and gc.
            let leased = leases.iter().any(|l| l.id() == id);
            layout.remove_traces(id, leased)?;
        }
        fsutil::fsync_dir(&layout.data_root())?;
        drop(leases);
        Ok(deleted)
    }
}
