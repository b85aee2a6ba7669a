//! Push: a snapshot's files cut into windows, each window's data runs made into a blob (zstd
//! unless told otherwise), a HEAD for each blob so that none the registry has is sent again,
//! then the config blob and the manifest. Windows already in the chunk record are not read
//! unless their blob is missing; new ones are read, hashed, compressed and uploaded in one pass,
//! with up to `jobs` in flight, each in memory for at most one window's bytes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::clone::parallel_on;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::registry::client::{Client, Connection};
use crate::registry::digest::Digest;
use crate::registry::format::{
    ArtifactConfig, CONFIG_TYPE, ChunkMap, DEFAULT_CHUNK_SIZE, Descriptor, FileMap, LAYER_RAW,
    LAYER_ZSTD, MANIFEST_TYPE, Manifest, valid_chunk_size,
};
use crate::registry::record::{Blob, ChunkRecord, RecordedChunk, RecordedFile};
use crate::registry::reference::Reference;
use crate::registry::window::WindowReader;
use crate::units::shown;

/// The zstd level of chunk blobs: zstd's default, fast enough to keep up with a network.
const ZSTD_LEVEL: i32 = 3;

/// How chunk blobs are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// zstd, level 3.
    #[default]
    Zstd,
    /// Stored as they are.
    None,
}

/// Options of [`LocalFile::push`](crate::LocalFile::push).
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// The window files are cut into: 16 to 256 MiB, a multiple of 4 KiB.
    pub chunk_size: u64,
    /// How blobs are compressed.
    pub compression: LayerCompression,
    /// How to reach the registry.
    pub connection: Connection,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions {
            jobs: 4,
            chunk_size: DEFAULT_CHUNK_SIZE,
            compression: LayerCompression::Zstd,
            connection: Connection::default(),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The manifest's digest, `sha256:…`.
    pub digest: String,
    /// Where it went, `host/repository:tag`.
    pub target: String,
    /// Blobs the artifact has: the layers and the config.
    pub blobs_total: usize,
    /// Blobs sent, because the registry did not have them.
    pub blobs_uploaded: usize,
    /// Bytes of blobs sent.
    pub bytes_uploaded: u64,
    /// Bytes of blobs the registry already had.
    pub bytes_skipped: u64,
}

/// A snapshot as a push takes it.
pub(crate) struct Outgoing {
    /// Its envelope, as `snapshot.json` would hold it.
    pub(crate) envelope: Envelope,
    /// Its data dir.
    pub(crate) dir: PathBuf,
    /// Its data files and their sizes, in name order.
    pub(crate) files: Vec<(String, u64)>,
    /// Its chunk record's path.
    pub(crate) record: PathBuf,
}

/// One window to handle: its file and either what the record says of it or its offset.
enum Work {
    Known(usize, RecordedChunk),
    Unknown(usize, u64),
}

/// A handled window: its chunk, its layer and how it got to the registry.
struct Done {
    file: usize,
    chunk: RecordedChunk,
    layer: Blob,
}

/// Counts shared by the upload threads.
#[derive(Default)]
struct Tally {
    uploaded: AtomicUsize,
    bytes_uploaded: AtomicU64,
    bytes_skipped: AtomicU64,
    /// Blobs already handled in this push: a blob two windows share is sent once.
    seen: Mutex<HashSet<Digest>>,
}

/// Pushes `snapshot` to `target` (which carries the tag).
pub(crate) fn push(
    snapshot: &Outgoing,
    target: &Reference,
    tag: &str,
    opts: &PushOptions,
    progress: &Progress,
) -> Result<PushReport> {
    if !valid_chunk_size(opts.chunk_size) {
        return Err(Error::InvalidChunkSize {
            size: opts.chunk_size,
        });
    }
    let client = Client::new(target, &opts.connection, true)?;
    let record = ChunkRecord::read(&snapshot.record).filter(|r| r.chunk_size == opts.chunk_size);
    let paths: Vec<PathBuf> = snapshot
        .files
        .iter()
        .map(|(name, _)| snapshot.dir.join(name))
        .collect();
    let mut work = Vec::new();
    // One reader per file read, shared by its windows: its data segments are asked for once.
    let mut readers = Vec::new();
    for (i, (name, size)) in snapshot.files.iter().enumerate() {
        let recorded = record.as_ref().and_then(|r| r.file(name, *size));
        match recorded {
            Some(file)
                if opts.compression == LayerCompression::None
                    || file.chunks.iter().all(|c| c.zstd.is_some()) =>
            {
                work.extend(file.chunks.iter().map(|c| Work::Known(i, c.clone())));
                readers.push(None);
            }
            _ => {
                let reader = WindowReader::open(&paths[i])?;
                let windows = reader.windows_with_segments(opts.chunk_size);
                progress.add_total(windows.len() as u64 * opts.chunk_size.min(*size));
                work.extend(windows.into_iter().map(|w| Work::Unknown(i, w)));
                readers.push(Some(reader));
            }
        }
    }
    let tally = Tally::default();
    progress.add_items(work.len() as u64);
    let files = Files {
        dir: &snapshot.dir,
        paths: &paths,
        readers: &readers,
    };
    let handled = parallel_on(opts.jobs, &work, |item| {
        let done = handle(&client, &files, item, opts, &tally, progress);
        progress.item_done();
        done
    })?;

    let mut files: Vec<FileMap> = snapshot
        .files
        .iter()
        .map(|(name, size)| FileMap {
            name: name.clone(),
            size: *size,
            chunks: Vec::new(),
        })
        .collect();
    let mut recorded: Vec<RecordedFile> = snapshot
        .files
        .iter()
        .map(|(name, size)| RecordedFile {
            name: name.clone(),
            size: *size,
            chunks: Vec::new(),
        })
        .collect();
    let media_type = match opts.compression {
        LayerCompression::Zstd => LAYER_ZSTD,
        LayerCompression::None => LAYER_RAW,
    };
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut listed = HashSet::new();
    for done in handled.into_iter().flatten() {
        files[done.file].chunks.push(ChunkMap {
            chunk: done.chunk.chunk.clone(),
            layer: done.layer.digest,
        });
        recorded[done.file].chunks.push(done.chunk);
        if listed.insert(done.layer.digest) {
            layers.push(Descriptor {
                media_type: media_type.to_string(),
                digest: done.layer.digest,
                size: done.layer.size,
            });
        }
    }
    let new_record = ChunkRecord::new(opts.chunk_size, recorded);
    if record.as_ref() != Some(&new_record) {
        new_record.write(&snapshot.record)?;
    }

    let config = ArtifactConfig::new(opts.chunk_size, snapshot.envelope.clone(), files).to_bytes();
    let config_blob = Blob {
        digest: Digest::of(&config),
        size: config.len() as u64,
    };
    send_blob(&client, config_blob, &tally, || Ok(config.clone()))?;
    let descriptor = Descriptor {
        media_type: CONFIG_TYPE.to_string(),
        digest: config_blob.digest,
        size: config_blob.size,
    };
    let blobs_total = layers.len() + 1;
    let manifest = Manifest::new(descriptor, layers).to_bytes();
    client.put_manifest(tag, MANIFEST_TYPE, &manifest)?;
    let mut target = target.clone();
    target.version = Some(crate::registry::reference::Version::Tag(tag.to_string()));
    Ok(PushReport {
        digest: Digest::of(&manifest).to_string(),
        target: target.to_string(),
        blobs_total,
        blobs_uploaded: tally.uploaded.load(Ordering::Relaxed),
        bytes_uploaded: tally.bytes_uploaded.load(Ordering::Relaxed),
        bytes_skipped: tally.bytes_skipped.load(Ordering::Relaxed),
    })
}

/// The files of the snapshot being pushed, and the readers of those whose windows are read.
struct Files<'a> {
    dir: &'a Path,
    paths: &'a [PathBuf],
    readers: &'a [Option<WindowReader<'a>>],
}

impl Files<'_> {
    /// Reads window `offset` of file `i` into a blob, with the file's reader or a new one.
    fn blob(
        &self,
        i: usize,
        offset: u64,
        length: u64,
        opts: &PushOptions,
        progress: &Progress,
    ) -> Result<Option<(RecordedChunk, Vec<u8>)>> {
        match &self.readers[i] {
            Some(reader) => make_blob(reader, offset, length, opts, progress),
            None => make_blob(
                &WindowReader::open(&self.paths[i])?,
                offset,
                length,
                opts,
                progress,
            ),
        }
    }
}

/// Handles one window: makes its blob if the record does not know it, and sends it unless the
/// registry has it.
fn handle(
    client: &Client,
    files: &Files<'_>,
    item: &Work,
    opts: &PushOptions,
    tally: &Tally,
    progress: &Progress,
) -> Result<Option<Done>> {
    match item {
        Work::Known(file, chunk) => {
            let layer = layer_of(chunk, opts.compression);
            let path = &files.paths[*file];
            send_blob(client, layer, tally, || {
                let (again, blob) = files
                    .blob(
                        *file,
                        chunk.chunk.offset,
                        chunk.chunk.length,
                        opts,
                        progress,
                    )?
                    .ok_or_else(|| changed(path, files.dir))?;
                // The blob's digest was computed as it was made: a raw blob's is its data's.
                let made = again.zstd.map_or(again.chunk.digest, |blob| blob.digest);
                if !again.chunk.same_data(&chunk.chunk) || made != layer.digest {
                    return Err(changed(path, files.dir));
                }
                Ok(blob)
            })?;
            Ok(Some(Done {
                file: *file,
                chunk: chunk.clone(),
                layer,
            }))
        }
        Work::Unknown(file, offset) => {
            let Some((chunk, blob)) =
                files.blob(*file, *offset, opts.chunk_size, opts, progress)?
            else {
                return Ok(None);
            };
            let layer = layer_of(&chunk, opts.compression);
            send_blob(client, layer, tally, || Ok(blob))?;
            Ok(Some(Done {
                file: *file,
                chunk,
                layer,
            }))
        }
    }
}

/// The blob a recorded window has for `compression`; a raw blob is the data itself.
fn layer_of(chunk: &RecordedChunk, compression: LayerCompression) -> Blob {
    match (compression, chunk.zstd) {
        (LayerCompression::Zstd, Some(blob)) => blob,
        _ => Blob {
            digest: chunk.chunk.digest,
            size: chunk.chunk.data_len(),
        },
    }
}

/// Reads a window and makes its blob; the returned chunk records the zstd blob when made.
fn make_blob(
    reader: &WindowReader<'_>,
    offset: u64,
    length: u64,
    opts: &PushOptions,
    progress: &Progress,
) -> Result<Option<(RecordedChunk, Vec<u8>)>> {
    let length = length.min(reader.size().saturating_sub(offset));
    // A blob's buffer is sized once, for the most the window can make. Grown by doubling, a
    // full window's outgrew it (a zstd blob of 64 MiB of random data is a little over 64 MiB),
    // and the copies and freed buffers left a push of four full windows at a peak of 494 MiB,
    // against its bound of 320 (64 MiB, plus a window for each of 4 jobs); sized, 282 MiB.
    // Pages the window does not fill are never touched, so a sparse window costs only its data.
    match opts.compression {
        LayerCompression::None => {
            let mut blob = Vec::with_capacity(length as usize);
            let chunk = reader.read(offset, length, &mut blob, progress)?;
            Ok(chunk.map(|chunk| (RecordedChunk { chunk, zstd: None }, blob)))
        }
        LayerCompression::Zstd => {
            let compress = |e: std::io::Error| Error::io("compress", Path::new("<zstd>"), e);
            let room = zstd::zstd_safe::compress_bound(length as usize);
            let mut encoder =
                zstd::Encoder::new(Vec::with_capacity(room), ZSTD_LEVEL).map_err(compress)?;
            let Some(chunk) = reader.read(offset, length, &mut encoder, progress)? else {
                return Ok(None);
            };
            let blob = encoder.finish().map_err(compress)?;
            let zstd = Some(Blob {
                digest: Digest::of(&blob),
                size: blob.len() as u64,
            });
            Ok(Some((RecordedChunk { chunk, zstd }, blob)))
        }
    }
}

/// Sends blob `layer` unless this push already did or the registry has it; `make` gives its
/// bytes.
fn send_blob(
    client: &Client,
    layer: Blob,
    tally: &Tally,
    make: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<()> {
    let first = tally
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(layer.digest);
    if !first {
        return Ok(());
    }
    if client.blob_exists(&layer.digest)? {
        tally.bytes_skipped.fetch_add(layer.size, Ordering::Relaxed);
        return Ok(());
    }
    let bytes = make()?;
    client.upload_blob(&layer.digest, &bytes)?;
    tally.uploaded.fetch_add(1, Ordering::Relaxed);
    tally
        .bytes_uploaded
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// A store file that no longer has the bytes its record says: it was changed behind the
/// store's back, which `verify` shows in detail.
fn changed(path: &Path, dir: &Path) -> Error {
    Error::io(
        "push",
        path,
        std::io::Error::other(format!(
            "its bytes differ from its chunk record; run `snapstore verify` on {}",
            shown(dir)
        )),
    )
}
