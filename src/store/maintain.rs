//! Keeping the store: gc, fsck and du as methods of the store, and the store's collector for a
//! [`GcOrchestrator`](crate::GcOrchestrator). The work itself lives in `gc`, `fsck` and `du`,
//! which know the layout and the index, never the store.

use std::collections::BTreeSet;

use crate::du::{self, DuReport};
use crate::error::{Error, Result};
use crate::fsck::{self, FsckReport};
use crate::gc::{self, GcModule, GcOptions, GcReport};
use crate::layout::Lease;
use crate::resolve;
use crate::store::LocalFile;

impl LocalFile {
    /// Removes leftovers of crashed or abandoned operations and, with `max_bytes`, evicts the
    /// least recently used snapshots not in use; see [`GcOptions`].
    ///
    /// # Errors
    /// [`Error::CorruptIndex`] (gc never touches a store whose index does not parse),
    /// [`Error::Io`].
    pub async fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        self.blocking(move |store| gc::collect(store.layout(), &opts))
            .await
    }

    /// Checks the index against the data dirs and sidecars; with `repair`, mends what can be
    /// mended without losing anything (see [`FsckReport`]).
    ///
    /// # Errors
    /// [`Error::Io`]. A corrupt index is a problem in the report, not an error.
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport> {
        self.blocking(move |store| fsck::check(store.layout(), repair))
            .await
    }

    /// Apparent, allocated, shared and exclusive bytes of the snapshots `refs` name (every
    /// complete snapshot when `refs` is empty), read from the kernel's extent maps under leases.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Ambiguous`], [`Error::Io`].
    pub async fn du(&self, refs: &[String]) -> Result<DuReport> {
        let refs = refs.to_vec();
        self.blocking(move |store| store.du_blocking(&refs)).await
    }

    /// The store's collector, for a [`GcOrchestrator`](crate::GcOrchestrator).
    pub(super) fn collector(&self) -> Box<dyn GcModule> {
        Box::new(Collector {
            store: self.clone(),
        })
    }

    fn du_blocking(&self, refs: &[String]) -> Result<DuReport> {
        let mut index = self.read_index()?;
        let ids = if refs.is_empty() {
            let mut records = index.complete()?;
            records.sort_by_key(|(id, r)| (r.created_at, (*id).clone()));
            records.into_iter().map(|(id, _)| id.clone()).collect()
        } else {
            resolve::resolve_many(&index, refs)?
        };
        let layout = self.layout();
        let leases = ids
            .iter()
            .map(|id| Lease::shared(&layout.lease_file(id), id))
            .collect::<Result<Vec<_>>>()?;
        // Deletes may have finished before the leases: look again, once, under them all.
        let mut index = self.read_index()?;
        let mut dirs = Vec::with_capacity(ids.len());
        for id in ids {
            let record = index.get(&id)?.filter(|r| !r.pending);
            let record = record.ok_or_else(|| Error::NotFound {
                reference: id.to_string(),
            })?;
            dirs.push((id.clone(), record.config.name.clone(), layout.data_dir(&id)));
        }
        let report = du::measure(&dirs);
        drop(leases);
        report
    }
}

/// The localfile store's collector.
struct Collector {
    store: LocalFile,
}

impl GcModule for Collector {
    fn name(&self) -> &str {
        "snapshot"
    }

    fn used_blob_ids(&self) -> Result<BTreeSet<String>> {
        let mut index = self.store.read_index()?;
        Ok(index
            .records()?
            .into_iter()
            .flat_map(|(_, r)| r.config.image_blob_ids.keys().cloned())
            .collect())
    }

    fn collect(&self, opts: &GcOptions) -> Result<GcReport> {
        gc::collect(self.store.layout(), opts)
    }
}
