//! A byte counter that long operations advance as they go (copies, tar export and import) and a
//! display reads from another thread: the CLI's progress bar, or a VM manager's own.
//!
//! Disabled by default, when advancing it costs one branch. Counts are of data bytes moved:
//! a sparse file's holes are not counted, since they cost nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared counts of the bytes an operation has moved and expects to move.
///
/// ```
/// let progress = snapstore::Progress::new();
/// let watched = progress.clone(); // read it from anywhere while the work runs
/// assert_eq!((watched.done(), watched.total()), (0, 0));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Progress {
    counters: Option<Arc<Counters>>,
}

#[derive(Debug, Default)]
struct Counters {
    done: AtomicU64,
    total: AtomicU64,
    items_done: AtomicU64,
    items_total: AtomicU64,
}

impl Progress {
    /// A counter that counts; clones share it.
    pub fn new() -> Progress {
        Progress {
            counters: Some(Arc::default()),
        }
    }

    /// Bytes moved so far.
    pub fn done(&self) -> u64 {
        self.counters
            .as_ref()
            .map_or(0, |c| c.done.load(Ordering::Relaxed))
    }

    /// Bytes expected in all, as far as known: 0 when unknown (a tar stream being imported), and
    /// it may grow as the work finds more.
    pub fn total(&self) -> u64 {
        self.counters
            .as_ref()
            .map_or(0, |c| c.total.load(Ordering::Relaxed))
    }

    /// Items (a registry transfer's blobs) finished so far.
    pub fn items_done(&self) -> u64 {
        self.counters
            .as_ref()
            .map_or(0, |c| c.items_done.load(Ordering::Relaxed))
    }

    /// Items expected in all; 0 for work that is not counted in items.
    pub fn items_total(&self) -> u64 {
        self.counters
            .as_ref()
            .map_or(0, |c| c.items_total.load(Ordering::Relaxed))
    }

    pub(crate) fn add_items(&self, items: u64) {
        if let Some(c) = &self.counters {
            c.items_total.fetch_add(items, Ordering::Relaxed);
        }
    }

    pub(crate) fn item_done(&self) {
        if let Some(c) = &self.counters {
            c.items_done.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_total(&self, bytes: u64) {
        if let Some(c) = &self.counters {
            c.total.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn advance(&self, bytes: u64) {
        if let Some(c) = &self.counters {
            c.done.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}
