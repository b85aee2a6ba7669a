//! Compression of archives: gzip on every core, zstd multithreaded, and detection by magic
//! bytes on import.
//!
//! Parallel gzip is written here rather than taken from `gzp`, whose writer panics in `Drop` when
//! its output has failed, which is exactly what happens when a caller drops an export stream.
//! Input is cut into 1 MiB chunks; each is compressed on a worker into its own gzip member, and
//! the members are written in order. A gzip file of several members is one stream (RFC 1952
//! §2.2): GNU tar, `gzip -d`, Go's `gzip.Reader` and flate2's `MultiGzDecoder` read it whole,
//! checking each member's CRC-32 and size.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    #[default]
    None,
    /// gzip, compressed on every core.
    Gzip,
    /// zstd, multithreaded.
    Zstd,
}

impl Compression {
    /// The file name suffix: `.tar`, `.tar.gz`, `.tar.zst`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".tar",
            Compression::Gzip => ".tar.gz",
            Compression::Zstd => ".tar.zst",
        }
    }
}

/// Bytes of input per gzip member.
const CHUNK: usize = 1 << 20;

/// gzip level: 1, the speed `tar | gzip -1` is measured against.
const GZIP_LEVEL: u32 = 1;

/// zstd level: 3, zstd's own default, which compresses better than gzip -1 and faster.
const ZSTD_LEVEL: i32 = 3;

/// zstd's work unit per thread: small enough to keep memory flat, large enough to compress well.
const ZSTD_JOB: u32 = 2 << 20;

/// A writer that must be finished to write its trailer.
pub(crate) trait FinishWrite: Write {
    /// Writes what is buffered and any trailer, and flushes.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

struct Plain<W: Write>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for Plain<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for zstd::stream::write::Encoder<'static, W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut inner = (*self).finish()?;
        inner.flush()
    }
}

/// Wraps `out` in the compressor `compression` asks for, using `threads` threads.
pub(crate) fn compressor<W: Write + Send + 'static>(
    compression: Compression,
    out: W,
    threads: usize,
) -> io::Result<Box<dyn FinishWrite + Send>> {
    Ok(match compression {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(ParGz::new(out, threads)),
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            if threads > 1 {
                encoder.multithread(threads as u32)?;
                // Each worker holds a job's input and output; zstd's default job of 4x the
                // window grows the process by ~16 MiB per worker on incompressible data.
                encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
            }
            Box::new(encoder)
        }
    })
}

type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

/// Parallel gzip: independent 1 MiB members compressed on `threads` workers, written in order.
pub(crate) struct ParGz<W: Write> {
    out: W,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    members: usize,
}

impl<W: Write> ParGz<W> {
    pub(crate) fn new(out: W, threads: usize) -> ParGz<W> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        // The lock is held only to take a job, not to compress it.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((chunk, reply)) = job else { return };
                        // The receiver is gone only if the writer was dropped: nothing to do.
                        let _ = reply.send(gzip_member(&chunk));
                    }
                })
            })
            .collect();
        ParGz {
            out,
            buf: Vec::with_capacity(CHUNK),
            jobs: Some(tx),
            pending: VecDeque::new(),
            workers,
            in_flight: 2 * threads,
            members: 0,
        }
    }

    fn submit(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let (reply, result) = sync_channel(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip writer is finished"))?;
        jobs.send((chunk, reply))
            .map_err(|_| io::Error::other("gzip workers are gone"))?;
        self.pending.push_back(result);
        self.members += 1;
        while self.pending.len() > self.in_flight {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.pending.pop_front() {
            let member = result
                .recv()
                .map_err(|_| io::Error::other("a gzip worker died"))??;
            self.out.write_all(&member)?;
        }
        Ok(())
    }
}

fn gzip_member(chunk: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(chunk.len() / 2 + 64),
        flate2::Compression::new(GZIP_LEVEL),
    );
    encoder.write_all(chunk)?;
    encoder.finish()
}

impl<W: Write> Write for ParGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.submit(chunk)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Members are whole or absent; a flush writes those already compressed.
        self.out.flush()
    }
}

impl<W: Write> FinishWrite for ParGz<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        if !self.buf.is_empty() || self.members == 0 {
            let chunk = std::mem::take(&mut self.buf);
            self.submit(chunk)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()
    }
}

impl<W: Write> Drop for ParGz<W> {
    fn drop(&mut self) {
        // Closing the job channel ends the workers once their current member is done.
        self.jobs = None;
        self.pending.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The reader for an archive, decompressing gzip or zstd as its magic bytes say.
///
/// # Errors
/// `UnexpectedEof` for an empty input; the reader's own errors.
pub(crate) fn decompressor<'a>(
    mut input: Box<dyn Read + Send + 'a>,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut magic = Vec::with_capacity(6);
    (&mut input).take(6).read_to_end(&mut magic)?;
    if magic.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive is empty",
        ));
    }
    if let Some((format, tool)) = unsupported(&magic) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{format} stream: snapstore reads raw, gzip and zstd tar; \
                 try {tool} -dc FILE | snapstore import -"
            ),
        ));
    }
    let whole = io::Cursor::new(magic.clone()).chain(input);
    let buffered = BufReader::with_capacity(1 << 20, whole);
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?)
    } else {
        Box::new(buffered)
    })
}

/// A compressed format snapstore does not read, told by its magic bytes, and the tool that
/// decompresses it.
fn unsupported(magic: &[u8]) -> Option<(&'static str, &'static str)> {
    const KNOWN: [(&[u8], &str, &str); 4] = [
        (b"BZh", "bzip2-compressed", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz-compressed", "xz"),
        (&[0x1f, 0x9d], "compress(1)-compressed (.Z)", "gzip"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4-compressed", "lz4"),
    ];
    KNOWN
        .iter()
        .find(|(prefix, _, _)| magic.starts_with(prefix))
        .map(|&(_, format, tool)| (format, tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_of_other_compressors_are_named_not_parsed() {
        let cases: [(&[u8], &str); 4] = [
            (b"BZh91AY&SY", "bzip2"),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0x00, 0x00, 0x04], "xz"),
            (&[0x1f, 0x9d, 0x90, 0x2e, 0x00], "compress(1)"),
            (&[0x04, 0x22, 0x4d, 0x18, 0x64, 0x40], "lz4"),
        ];
        for (bytes, format) in cases {
            let input: Box<dyn Read + Send> = Box::new(io::Cursor::new(bytes.to_vec()));
            let err = decompressor(input).err().expect("refused");
            let text = err.to_string();
            assert!(text.starts_with(format), "{text}");
            assert!(text.contains("| snapstore import -"), "{text}");
            assert!(
                text.is_ascii() && !text.chars().any(|c| c.is_control()),
                "{text:?}"
            );
        }
    }

    fn round_trip(compression: Compression, data: &[u8]) -> Vec<u8> {
        let (tx, rx) = std::sync::mpsc::channel();
        struct Sink(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = compressor(compression, Sink(tx), 3).unwrap();
        for piece in data.chunks(7919) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        let bytes: Vec<u8> = rx.into_iter().flatten().collect();
        let mut out = Vec::new();
        decompressor(Box::new(io::Cursor::new(bytes)))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn data() -> Vec<u8> {
        (0..3 * CHUNK + 12345)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    #[test]
    fn every_compression_round_trips_across_chunks() {
        let data = data();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert!(round_trip(c, &data) == data, "{c:?}");
        }
        // Compressed, nothing is still a stream (an empty raw archive is refused on import).
        for c in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(round_trip(c, b""), b"", "{c:?} of nothing");
        }
    }

    #[test]
    fn parallel_gzip_is_read_whole_by_gnu_gzip() {
        let data = data();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = compressor(Compression::Gzip, file, 2).unwrap();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout == data);
    }

    #[test]
    fn a_bad_gzip_crc_or_truncated_zstd_is_an_error() {
        let data = data();
        let mut gz = Vec::new();
        let mut enc = GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        enc.finish().unwrap();
        let n = gz.len();
        gz[n - 8] ^= 0xff; // the CRC-32 in the trailer
        let mut out = Vec::new();
        assert!(
            decompressor(Box::new(io::Cursor::new(gz)))
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );

        let mut zst = zstd::encode_all(&data[..], 3).unwrap();
        zst.truncate(zst.len() / 2);
        let mut out = Vec::new();
        assert!(
            decompressor(Box::new(io::Cursor::new(zst)))
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(decompressor(Box::new(io::empty())).is_err());
    }

    #[test]
    fn dropping_a_writer_midway_does_not_panic() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = data();
        // Members in flight are written later: the failure surfaces by `finish` at the latest.
        let mut w = compressor(Compression::Gzip, Broken, 2).unwrap();
        let written = w.write_all(&data);
        assert!(written.is_err() || w.finish().is_err());
        // And a writer dropped mid-stream, unfinished, stops its workers quietly.
        let mut w = compressor(Compression::Gzip, Broken, 2).unwrap();
        let _ = w.write_all(&data[..CHUNK + 10]);
        drop(w);
    }
}
