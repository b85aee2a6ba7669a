//! Synthetic store contents for benchmarks (`snapstore bench`, `benches/index.rs`): an index of
//! many complete snapshots, as a busy host's would look, each with an empty data dir and its
//! sidecar, so that gc and fsck find a whole store. Not a stable API.

use std::path::Path;

use crate::error::Result;
use crate::index::{Index, IndexLock};
use crate::layout::Layout;
use crate::layout::sidecar::Sidecar;
use crate::types::{BlobMark, Config, Record, SnapshotId, gotime};

/// Adds `count` complete records named `vm-0`, `vm-1`, ... to the index of the store at
/// `root`; returns their IDs in that order. Each gets an empty data dir and a sidecar, written
/// without fsync: this is a benchmark's scratch store.
///
/// # Errors
/// [`Error::NameTaken`](crate::Error::NameTaken) when a name is held; [`Error::Io`](crate::Error::Io).
pub fn synthetic_index(root: &Path, count: usize) -> Result<Vec<SnapshotId>> {
    let layout = Layout::new(root);
    for dir in [layout.db_dir(), layout.data_root(), layout.staging_root()] {
        crate::fsutil::create_dir_all(&dir)?;
    }
    let _lock = IndexLock::acquire(&layout.index_lock(), true)?;
    let mut index = Index::load(&layout.index_file())?;
    let now = gotime::now();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = SnapshotId::generate().map_err(|source| crate::error::Error::Random { source })?;
        let mut config = Config {
            id: id.to_string(),
            name: format!("vm-{i}"),
            description: "ubuntu 24.04, booted".into(),
            hypervisor: "cloud-hypervisor".into(),
            cpu: 2,
            memory: 1 << 30,
            storage: 8 << 30,
            ..Config::default()
        };
        config
            .image_blob_ids
            .insert(format!("sha256:{i:064x}"), BlobMark {});
        let record = Record {
            config,
            created_at: now,
            data_dir: layout.data_dir(&id).display().to_string(),
            size_bytes: 0,
            pending: false,
            last_accessed_at: Some(now),
            extra: serde_json::Map::new(),
        };
        crate::fsutil::create_dir_all(&layout.data_dir(&id))?;
        let sidecar = Sidecar::new(record.clone(), []);
        let path = layout.sidecar_file(&id);
        let bytes = serde_json::to_vec(&sidecar)
            .map_err(|e| crate::error::Error::io("serialize", &path, std::io::Error::other(e)))?;
        std::fs::write(&path, bytes).map_err(|e| crate::error::Error::io("write", &path, e))?;
        index.insert(id.clone(), record)?;
        ids.push(id);
    }
    index.save(&layout.index_file())?;
    Ok(ids)
}
