//! The tar layer: a snapshot as one stream, to a pipe, another host or another tool, compatible
//! both ways with cocoon's `snapshot export` and `snapshot import`.
//!
//! ```text
//! snapshot.json                      the envelope, first
//! config.json                        data files in name order, flat, mode 0644
//! PaxHeaders.0/cow.raw  ('x')        COCOON.sparse.map=[{"o":..,"l":..}] COCOON.sparse.size=N
//! cow.raw                            the data segments, back to back
//! memory-range-0
//! ```
//!
//! `export` writes; `import` reads (see its module for what is accepted and refused). Streams
//! handed to a caller run their writer on a thread feeding a bounded channel: memory stays flat,
//! and dropping the stream stops the writer at its next chunk. The writer ends the stream
//! explicitly; a writer that stops without saying so (a panic, a dropped thread) reaches the
//! reader as an error, never as a clean end of an archive that is in fact cut short.

mod checks;
pub(crate) mod compress;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod sparse;

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

pub use compress::Compression;
pub use import::DEFAULT_MAX_FILE_SIZE;

/// How sparse files are written in an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SparseFormat {
    /// cocoon's PAX records `COCOON.sparse.map` and `COCOON.sparse.size`.
    #[default]
    Cocoon,
    /// GNU tar's PAX sparse format 1.0, which GNU tar extracts with its holes.
    Gnu,
}

/// Options of a tar export.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportOptions {
    /// How sparse files are written.
    pub sparse_format: SparseFormat,
    /// How the stream is compressed.
    pub compression: Compression,
    /// For an export to a file: fsync the archive and its directory before returning, so it
    /// survives a power loss. Off by default: like `tar`, the archive is left to writeback. A
    /// stream's writer is the caller's to sync.
    pub sync: bool,
}

/// Options of a tar import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Overrides the envelope's name.
    pub name: Option<String>,
    /// Overrides the envelope's description.
    pub description: Option<String>,
    /// The largest real size of one file; larger is refused as hostile.
    pub max_file_size: u64,
    /// What to call the archive in errors: its path, or `<stdin>`.
    pub label: std::path::PathBuf,
    /// Fsync every file before the index names the snapshot (the default), so a power loss
    /// cannot leave a listed snapshot with data missing. Off, the import leaves its files to
    /// writeback as `tar -x` does: faster where the disk is slower than the parse, and safe only
    /// for a store that can lose what a crash catches in flight (a scratch or CI store), or a
    /// caller that syncs the filesystem itself before relying on it.
    pub sync: bool,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            name: None,
            description: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            label: std::path::PathBuf::from("<archive stream>"),
            sync: true,
        }
    }
}

/// Chunks in flight between a stream's writer thread and its reader.
const CHANNEL_CHUNKS: usize = 8;
/// Size of one chunk.
const CHANNEL_CHUNK: usize = 1 << 20;

/// What travels through the channel: a chunk, the explicit end (`None`), or the writer's error.
type Message = io::Result<Option<Vec<u8>>>;

/// The reading end of a stream whose writer runs on another thread. Dropping it stops the
/// writer: its next write fails with `BrokenPipe`.
pub(crate) struct ChannelReader {
    chunks: Receiver<Message>,
    current: io::Cursor<Vec<u8>>,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() || self.done {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(Ok(Some(chunk))) => self.current = io::Cursor::new(chunk),
                Ok(Ok(None)) => self.done = true,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // Hung up without ending the stream: whatever it was writing is cut short.
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream's writer stopped before the end",
                    ));
                }
            }
        }
    }
}

/// The writing end: buffers into 1 MiB chunks.
pub(crate) struct ChannelWriter {
    chunks: SyncSender<Message>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// A handle that ends the stream, or passes the writer's failure on to the reader, after
    /// the writer itself has been handed to a compressor.
    pub(crate) fn closer(&self) -> Closer {
        Closer(self.chunks.clone())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHANNEL_CHUNK));
        self.chunks
            .send(Ok(Some(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the stream's reader is gone"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = data.len().min(CHANNEL_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHANNEL_CHUNK {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Ends a stream for its reader, cleanly or with the writer's failure.
pub(crate) struct Closer(SyncSender<Message>);

impl Closer {
    /// The stream is complete: once the reader has every chunk written before this (the
    /// writer flushed), its next `read` returns 0. Nothing happens if the reader is gone.
    pub(crate) fn finish(self) {
        let _ = self.0.send(Ok(None));
    }

    /// The reader's next `read` returns `error`; nothing happens if the reader is gone.
    pub(crate) fn fail(self, error: io::Error) {
        let _ = self.0.send(Err(error));
    }
}

/// A connected writer and reader.
pub(crate) fn channel() -> (ChannelWriter, ChannelReader) {
    let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
    (
        ChannelWriter {
            chunks: tx,
            buf: Vec::with_capacity(CHANNEL_CHUNK),
        },
        ChannelReader {
            chunks: rx,
            current: io::Cursor::new(Vec::new()),
            done: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_carries_bytes_and_the_writers_error() {
        let (mut w, mut r) = channel();
        let t = std::thread::spawn(move || {
            w.write_all(&vec![7u8; 3 * CHANNEL_CHUNK + 5]).unwrap();
            w.flush().unwrap();
            let closer = w.closer();
            drop(w);
            closer.fail(io::Error::other("disk on fire"));
        });
        let mut got = vec![0u8; 3 * CHANNEL_CHUNK + 5];
        r.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 7));
        let err = r.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        t.join().unwrap();
    }

    #[test]
    fn a_stream_ends_only_when_its_writer_says_so() {
        let (mut w, mut r) = channel();
        w.write_all(b"whole").unwrap();
        w.flush().unwrap();
        w.closer().finish();
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"whole");

        // A writer that dies mid-stream (a panic, a dropped thread) never looks like an end.
        let (mut w, mut r) = channel();
        let t = std::thread::spawn(move || {
            w.write_all(b"half").unwrap();
            w.flush().unwrap();
            panic!("the writer dies");
        });
        assert!(t.join().is_err());
        let mut got = Vec::new();
        let err = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"half");
    }

    #[test]
    fn dropping_the_reader_stops_the_writer() {
        let (mut w, r) = channel();
        drop(r);
        let err = w.write_all(&vec![0u8; 2 * CHANNEL_CHUNK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
