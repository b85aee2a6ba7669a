//! Taking one blob from the registry: streamed through its sha256 and its decompressor into
//! the places of its window's runs, and checked (its size, its digest, its data's digest, and
//! exactly as much data as the map says) before the window counts as written. A blob that
//! breaks off mid-stream is fetched again; one that fails its checks is refused, naming the file
//! and the window.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::registry::client::{ATTEMPTS, Client, backoff, is_transient_io};
use crate::registry::digest::{Digest, Hasher};
use crate::registry::format::{ChunkMap, Descriptor, LAYER_ZSTD};

/// Bytes written at a time.
pub(crate) const WRITE_SIZE: usize = 1 << 20;

/// Why a blob could not be taken.
pub(crate) enum BlobFailure {
    /// The request failed: unreachable, denied.
    Failed(Error),
    /// The blob is not what its descriptor or map says.
    Invalid(String),
}

/// Downloads a window's blob into `file`, retrying when the connection breaks; returns the
/// blob's size.
#[allow(clippy::too_many_arguments)]
pub(crate) fn download(
    client: &Client,
    file: &File,
    path: &Path,
    name: &str,
    map: &ChunkMap,
    layers: &HashMap<Digest, &Descriptor>,
    reference: &str,
    progress: &Progress,
) -> Result<u64> {
    let invalid = |reason: String| Error::BlobInvalid {
        reference: reference.to_string(),
        digest: map.layer.to_string(),
        file: name.to_string(),
        start: map.chunk.offset,
        end: map.chunk.end(),
        reason,
    };
    let Some(layer) = layers.get(&map.layer) else {
        return Err(invalid("not in the manifest".into()));
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write_window(client, file, path, map, layer, progress) {
            Ok(()) => return Ok(layer.size),
            Err(Attempt::Transient(_)) if attempt < ATTEMPTS => backoff(attempt, None),
            Err(Attempt::Transient(e) | Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Invalid(reason)) => return Err(invalid(reason)),
        }
    }
}

/// Why a window could not be written.
enum Attempt {
    /// The connection broke: worth another try.
    Transient(Error),
    Failed(Error),
    Invalid(String),
}

/// One attempt at a window: streams the blob through its sha256 and its decompressor into the
/// runs' places in `file`, then checks the blob's size and digest and the data's digest.
fn write_window(
    client: &Client,
    file: &File,
    path: &Path,
    map: &ChunkMap,
    layer: &Descriptor,
    progress: &Progress,
) -> std::result::Result<(), Attempt> {
    let body = client.get_blob(&layer.digest).map_err(Attempt::Failed)?;
    let mut counted = Counted::new(body, layer.size);
    // A raw blob is the data itself: its sha256 is the data's, and hashing it twice would be
    // half the work of a fast pull.
    let raw = layer.media_type != LAYER_ZSTD;
    let outcome = {
        let data: Box<dyn Read + '_> = if !raw {
            let decoder = zstd::Decoder::new(&mut counted)
                .map_err(|e| Attempt::Failed(Error::io("decompress", path, e)))?;
            Box::new(decoder)
        } else {
            Box::new(&mut counted)
        };
        place_runs(data, file, path, map, !raw, progress)
    };
    // However the data ended, the blob's own digest says first whether the registry's copy is
    // the one the manifest names.
    if let Err(e) = io::copy(&mut counted, &mut io::sink())
        && is_transient_io(&e)
    {
        return Err(Attempt::Transient(client.unreachable(e)));
    }
    let broke = counted.broke;
    let (size, blob_digest, overflow) = counted.finish();
    let outcome = match outcome {
        Err(Place::Io(e)) if broke => {
            return Err(Attempt::Transient(client.unreachable(e)));
        }
        other => other,
    };
    if overflow || size != layer.size {
        return Err(Attempt::Invalid(format!(
            "the registry sent {}{size} bytes for a blob of {}",
            if overflow { "over " } else { "" },
            layer.size
        )));
    }
    if blob_digest != layer.digest {
        return Err(Attempt::Invalid(format!(
            "its bytes hash to {blob_digest}: the registry's copy is corrupt"
        )));
    }
    let outcome = outcome.map(|digest| digest.unwrap_or(blob_digest));
    match outcome {
        Ok(data_digest) if data_digest == map.chunk.digest => Ok(()),
        Ok(data_digest) => Err(Attempt::Invalid(format!(
            "its data hashes to {data_digest}, not to the window's {}",
            map.chunk.digest
        ))),
        Err(Place::Short) => Err(Attempt::Invalid(
            "the blob holds less data than its map".into(),
        )),
        Err(Place::Long) => Err(Attempt::Invalid(
            "the blob holds more data than its map".into(),
        )),
        Err(Place::Io(e)) => Err(Attempt::Invalid(format!("its data does not decode: {e}"))),
        Err(Place::Write(e)) => Err(Attempt::Failed(e)),
    }
}

/// How placing a window's data failed.
enum Place {
    Short,
    Long,
    /// Reading or decoding the blob.
    Io(io::Error),
    /// Writing the file.
    Write(Error),
}

/// Writes the data stream's bytes at the runs' places, hashing them when `hash`; the stream
/// must hold exactly the runs' bytes.
fn place_runs(
    mut data: Box<dyn Read + '_>,
    file: &File,
    path: &Path,
    map: &ChunkMap,
    hash: bool,
    progress: &Progress,
) -> std::result::Result<Option<Digest>, Place> {
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; WRITE_SIZE];
    for &[start, len] in &map.chunk.runs {
        let mut pos = start;
        while pos < start + len {
            let want = (start + len - pos).min(WRITE_SIZE as u64) as usize;
            let got = read_full(&mut data, &mut buf[..want]).map_err(Place::Io)?;
            if got < want {
                return Err(Place::Short);
            }
            file.write_all_at(&buf[..want], pos)
                .map_err(|e| Place::Write(Error::io("write", path, e)))?;
            if hash {
                hasher.update(&buf[..want]);
            }
            progress.advance(want as u64);
            pos += want as u64;
        }
    }
    match read_full(&mut data, &mut [0u8; 1]).map_err(Place::Io)? {
        0 => Ok(hash.then(|| hasher.finish())),
        _ => Err(Place::Long),
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(data: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match data.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A blob body, hashed and counted as it is read, and cut off past its descriptor's size so a
/// registry cannot make a pull read forever.
struct Counted<R> {
    inner: R,
    hasher: Hasher,
    limit: u64,
    overflow: bool,
    /// Whether reading the body itself failed in a way another request may not: only then is a
    /// decoder's error the connection's fault rather than the blob's.
    broke: bool,
}

impl<R: Read> Counted<R> {
    fn new(inner: R, limit: u64) -> Counted<R> {
        Counted {
            inner,
            hasher: Hasher::default(),
            limit,
            overflow: false,
            broke: false,
        }
    }

    fn finish(self) -> (u64, Digest, bool) {
        (self.hasher.len(), self.hasher.finish(), self.overflow)
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.overflow {
            return Ok(0);
        }
        let room = (self.limit - self.hasher.len()).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want]).inspect_err(|e| {
            self.broke |= is_transient_io(e);
        })?;
        if self.hasher.len() + n as u64 > self.limit {
            self.overflow = true;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a small blob (the config) whole and checks it against its descriptor.
pub(crate) fn read_blob(
    client: &Client,
    descriptor: &Descriptor,
) -> std::result::Result<Vec<u8>, BlobFailure> {
    let body = client
        .get_blob(&descriptor.digest)
        .map_err(BlobFailure::Failed)?;
    let mut counted = Counted::new(body, descriptor.size);
    let mut bytes = Vec::new();
    counted
        .read_to_end(&mut bytes)
        .map_err(|e| BlobFailure::Failed(client.unreachable(e)))?;
    let (size, digest, overflow) = counted.finish();
    if overflow || size != descriptor.size || digest != descriptor.digest {
        return Err(BlobFailure::Invalid(format!(
            "{size} bytes hashing to {digest}, not the {} bytes of {}",
            descriptor.size, descriptor.digest
        )));
    }
    Ok(bytes)
}
