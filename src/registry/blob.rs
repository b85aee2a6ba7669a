//! Taking one blob from the registry: streamed through its sha256 and its decompressor into
//! the places of its window's runs, and checked (its size, its digest, its data's digest, and
//! exactly as much data as the map says) before the window counts as written. A blob that
//! breaks off mid-stream is fetched again; one that fails its checks is refused, naming the file
//! and the window.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::registry::client::{ATTEMPTS, Client, backoff, is_transient_io};
use crate::registry::dest::{AlignedBuf, Dest};
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

/// Downloads a window's blob into `dest`, retrying when the connection breaks; returns the
/// blob's size.
pub(crate) fn download(
    client: &Client,
    dest: &Dest,
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
        match write_window(client, dest, map, layer, progress) {
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
/// runs' places in `dest`, then checks the blob's size and digest and the data's digest.
fn write_window(
    client: &Client,
    dest: &Dest,
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
                .map_err(|e| Attempt::Failed(Error::io("decompress", dest.path(), e)))?;
            Box::new(decoder)
        } else {
            Box::new(&mut counted)
        };
        place_runs(data, dest, map, !raw, progress)
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
pub(crate) enum Place {
    Short,
    Long,
    /// Reading or decoding the blob.
    Io(io::Error),
    /// Writing the file.
    Write(Error),
}

/// Writes the data stream's bytes at the runs' places, hashing them when `hash`; the stream
/// must hold exactly the runs' bytes. The window's extents (where its source had blocks) are
/// written whole, zeros between the runs included, in aligned pieces of up to [`WRITE_SIZE`]:
/// the copy is allocated as its source was, and a window of small runs costs a few large writes,
/// not one per run. Outside them, holes stay holes.
pub(crate) fn place_runs(
    mut data: Box<dyn Read + '_>,
    dest: &Dest,
    map: &ChunkMap,
    hash: bool,
    progress: &Progress,
) -> std::result::Result<Option<Digest>, Place> {
    let runs = &map.chunk.runs;
    let mut hasher = Hasher::default();
    let mut buf = AlignedBuf::new(WRITE_SIZE);
    // The next run to fill, and where in it the stream stands.
    let mut next = 0;
    let mut at = runs.first().map_or(0, |[start, _]| *start);
    for [start, len] in regions(&map.chunk.runs, &map.chunk.extents) {
        dest.allocate(start, len)
            .map_err(|e| Place::Write(Error::io("allocate", dest.path(), e)))?;
        let mut pos = start;
        while pos < start + len {
            let n = (start + len - pos).min(WRITE_SIZE as u64);
            let piece = &mut buf.as_mut_slice()[..n as usize];
            // How much of the piece is set; the gaps between runs are zeroed as they are passed.
            let mut set = 0;
            while let Some(&[run_start, run_len]) = runs.get(next) {
                let run_end = run_start + run_len;
                if run_start >= pos + n {
                    break;
                }
                let stop = run_end.min(pos + n);
                let (from, to) = ((at - pos) as usize, (stop - pos) as usize);
                piece[set..from].fill(0);
                let bytes = &mut piece[from..to];
                let got = read_full(&mut data, bytes).map_err(Place::Io)?;
                if got < bytes.len() {
                    return Err(Place::Short);
                }
                if hash {
                    hasher.update(bytes);
                }
                progress.advance(got as u64);
                (set, at) = (to, stop);
                if stop < run_end {
                    break;
                }
                next += 1;
                at = runs.get(next).map_or(at, |[s, _]| *s);
            }
            piece[set..].fill(0);
            dest.write_at(piece, pos)
                .map_err(|e| Place::Write(Error::io("write", dest.path(), e)))?;
            pos += n;
        }
    }
    match read_full(&mut data, &mut [0u8; 1]).map_err(Place::Io)? {
        0 => Ok(hash.then(|| hasher.finish())),
        _ => Err(Place::Long),
    }
}

/// The ranges to write: the runs and the extents, merged, in order.
fn regions(runs: &[[u64; 2]], extents: &[[u64; 2]]) -> Vec<[u64; 2]> {
    let mut all: Vec<[u64; 2]> = runs.iter().chain(extents).copied().collect();
    all.sort_unstable();
    let mut merged: Vec<[u64; 2]> = Vec::with_capacity(all.len());
    for [start, len] in all {
        match merged.last_mut() {
            Some([s, l]) if start <= *s + *l => *l = (*l).max(start + len - *s),
            _ => merged.push([start, len]),
        }
    }
    merged
}

/// The bytes of a window's runs, read back to back from `file`, where the window starts at
/// `base` instead of at the runs' own window offset: the stream a window's blob would carry.
pub(crate) struct RunsReader<'a> {
    file: &'a File,
    /// The runs, moved to where they are in `file`.
    runs: Vec<[u64; 2]>,
    next: usize,
    done: u64,
}

impl<'a> RunsReader<'a> {
    pub(crate) fn new(file: &'a File, map: &ChunkMap, base: u64) -> RunsReader<'a> {
        let shift = |o: u64| o - map.chunk.offset + base;
        RunsReader {
            file,
            runs: map.chunk.runs.iter().map(|&[o, l]| [shift(o), l]).collect(),
            next: 0,
            done: 0,
        }
    }
}

impl Read for RunsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(&[start, len]) = self.runs.get(self.next) else {
            return Ok(0);
        };
        let want = (len - self.done).min(buf.len() as u64) as usize;
        self.file
            .read_exact_at(&mut buf[..want], start + self.done)?;
        self.done += want as u64;
        if self.done == len {
            self.next += 1;
            self.done = 0;
        }
        Ok(want)
    }
}

/// The sha256 of the runs of `map`'s window as they are in `file`, whose window starts at
/// `base`: what the window's digest must be.
pub(crate) fn runs_digest(file: &File, map: &ChunkMap, base: u64) -> io::Result<Digest> {
    let mut runs = RunsReader::new(file, map, base);
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; WRITE_SIZE];
    loop {
        match runs.read(&mut buf)? {
            0 => return Ok(hasher.finish()),
            n => hasher.update(&buf[..n]),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::format::Chunk;

    fn map(runs: Vec<[u64; 2]>, extents: Vec<[u64; 2]>) -> ChunkMap {
        ChunkMap {
            chunk: Chunk {
                offset: 0,
                length: 1 << 24,
                runs,
                digest: Digest::of(b""),
                extents,
            },
            layer: Digest::of(b""),
        }
    }

    #[test]
    fn runs_land_in_place_and_extents_are_written_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let file = File::create(&path).expect("create");
        file.set_len(1 << 24).expect("size");
        let dest = Dest::new(file, path.clone());
        let runs = vec![[4096, 10], [8192, 4096], [3 << 20, 5000]];
        // A run outside every extent is still written; the first extent spans two runs and
        // the zeros between them, and is longer than one write.
        let extents = vec![[0, 2 << 20]];
        let stream: Vec<u8> = (0..(10 + 4096 + 5000))
            .map(|i| (i % 251 + 1) as u8)
            .collect();
        let placed = place_runs(
            Box::new(&stream[..]),
            &dest,
            &map(runs.clone(), extents),
            true,
            &Progress::default(),
        );
        let Ok(Some(digest)) = placed else {
            panic!("placing failed")
        };
        assert_eq!(digest, Digest::of(&stream));
        let bytes = std::fs::read(&path).expect("read");
        let mut at = 0;
        for [start, len] in runs {
            let (start, len) = (start as usize, len as usize);
            assert_eq!(&bytes[start..start + len], &stream[at..at + len]);
            at += len;
        }
        assert!(bytes[..4096].iter().all(|&b| b == 0));
        assert!(bytes[4106..8192].iter().all(|&b| b == 0));
        let segments = crate::clone::sparse::data_segments(dest.file(), 1 << 24).expect("segments");
        assert_eq!(segments.first(), Some(&(0, 2 << 20)), "{segments:?}");
        // A stream of other than 200 bytes for a run of 200.
        let place_200 = |data: &[u8]| {
            let window = map(vec![[0, 200]], vec![]);
            place_runs(Box::new(data), &dest, &window, false, &Progress::default())
        };
        assert!(matches!(place_200(&stream[..100]), Err(Place::Short)));
        assert!(matches!(place_200(&stream[..]), Err(Place::Long)));
    }
}
