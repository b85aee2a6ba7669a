//! Reading a snapshot archive into a staging dir: any tar stream cocoon, GNU tar or snapstore
//! writes, raw, gzip or zstd.
//!
//! Accepted: regular entries (written with zero-block detection, so a non-sparse archive of a
//! sparse disk lands sparse), cocoon's `COCOON.sparse.*`, GNU sparse (old 'S' entries and PAX
//! 0.0, 0.1, 1.0); directory entries are skipped. Refused, as [`Error::HostileEntry`]: names that
//! are not one plain component (`..`, absolute, nested; a leading `./` alone is fine), links,
//! devices, fifos, a name twice, a bad sparse map, a real size above the limit. Nothing is
//! written outside the staging dir: every name is checked before a file is created, and files
//! are created with O_EXCL in the staging dir itself.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use tar::EntryType;

use crate::archive::checks::{
    NOT_UTF8, escape_error, escaped, first_header_checked, malformed_number,
};
use crate::archive::sparse::{self, Segment};
use crate::envelope::{ENVELOPE_FILE, Envelope};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::progress::Progress;
use crate::sys;
use crate::types::{CloneMethod, FileReport, is_plain_name};

/// Blocks of this size that are all zero become holes.
const ZERO_BLOCK: usize = 4096;

/// Read size from the archive.
const READ_BUF: usize = 1 << 20;

/// Bytes written between two starts of writeback.
const WRITEBACK_EVERY: u64 = 64 << 20;

/// The largest `snapshot.json` accepted.
const MAX_ENVELOPE: u64 = 1 << 20;

/// The default ceiling on a file's real size: 16 TiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 40;

/// What came out of an archive.
pub(crate) struct Imported {
    pub(crate) envelope: Envelope,
    pub(crate) files: Vec<FileReport>,
}

/// Reads the tar stream `input` into the empty dir `staging`. `label` names the archive in
/// errors. Checks that `snapshot.json` arrived and, when it lists files, that exactly those did.
/// When `durable`, every file is on disk (fsynced) before this returns.
pub(crate) fn read_tar(
    input: impl Read,
    label: &Path,
    staging: &Path,
    max_size: u64,
    durable: bool,
    progress: &Progress,
) -> Result<Imported> {
    let read_err = |e| Error::io("read archive", label, escape_error(e));
    let hostile = |entry: &str, reason: &'static str| Error::HostileEntry {
        archive: label.to_path_buf(),
        entry: entry.to_string(),
        reason,
    };
    let input = first_header_checked(input).map_err(read_err)?;
    let mut archive = tar::Archive::new(input);
    let mut envelope = None;
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    let flusher = if durable {
        Some(Flusher::spawn().map_err(|e| Error::io("start a writeback thread for", staging, e))?)
    } else {
        None
    };
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        // The index and snapshot.json are JSON: a name that is not UTF-8 could only be stored
        // renamed, and two such names could collide. Refused, shown escaped.
        let raw_name = match String::from_utf8(entry.path_bytes().into_owned()) {
            Ok(name) => name,
            Err(e) => return Err(hostile(&escaped(e.as_bytes()), NOT_UTF8)),
        };
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory | EntryType::XGlobalHeader => continue,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {}
            EntryType::Symlink => return Err(hostile(&raw_name, "symlinks are refused")),
            EntryType::Link => return Err(hostile(&raw_name, "hardlinks are refused")),
            EntryType::Char | EntryType::Block => {
                return Err(hostile(&raw_name, "devices are refused"));
            }
            EntryType::Fifo => return Err(hostile(&raw_name, "fifos are refused")),
            _ => return Err(hostile(&raw_name, "unsupported entry type")),
        }
        let pax = pax_records(&mut entry).map_err(read_err)?;
        let shown = match pax.get("GNU.sparse.name") {
            None => raw_name.clone(),
            Some(name) => String::from_utf8(name.clone())
                .map_err(|e| hostile(&escaped(e.as_bytes()), NOT_UTF8))?,
        };
        let name = plain_name(&shown)
            .ok_or_else(|| hostile(&shown, "names must be one plain file name"))?;
        // tar-rs reads an entry whose PAX `size` does not parse with its ustar size instead;
        // GNU tar calls the record malformed. Refused, so the two never disagree on content.
        if let Some(reason) = malformed_number(&pax) {
            return Err(hostile(&name, reason));
        }
        if !seen.insert(name.clone()) {
            return Err(hostile(&name, "the same name appears twice"));
        }
        if name == ENVELOPE_FILE {
            if entry.size() > MAX_ENVELOPE {
                return Err(hostile(&name, "snapshot.json is too large"));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read_err)?;
            envelope = Some(Envelope::parse(&bytes, &label.join(ENVELOPE_FILE))?);
            continue;
        }

        let layout = sparse_layout(&mut entry, &pax).map_err(|e| match e {
            Layout::Bad(reason) => hostile(&name, reason),
            Layout::Io(e) => read_err(e),
        })?;
        if layout.real_size > max_size {
            return Err(hostile(&name, "real size above the limit"));
        }
        let path = staging.join(&name);
        let file = fsutil::create_new(&path, 0o644)?;
        file.set_len(layout.real_size)
            .map_err(|e| Error::io("size", &path, e))?;
        let staged = Arc::new(Staged { file, path });
        write_segments(
            &mut entry,
            &staged,
            &layout.segments,
            flusher.as_ref(),
            progress,
        )
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::Other => {
                read_err(e)
            }
            _ => Error::io("write", &staged.path, e),
        })?;
        if let Some(flusher) = &flusher {
            flusher.send(Flush::Sync(staged));
        }
        files.push(FileReport {
            name,
            method: CloneMethod::Copy,
            bytes: layout.real_size,
        });
    }

    // tar stops at the end-of-archive blocks; read the stream to its end so a gzip trailer's
    // CRC-32 and size, and a zstd frame's end, are checked too.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err)?;

    let envelope = envelope.ok_or_else(|| Error::EnvelopeMissing {
        dir: label.to_path_buf(),
    })?;
    if let Some(listed) = &envelope.files {
        for name in listed {
            if !seen.contains(name) {
                return Err(Error::ListedFileMissing {
                    dir: label.to_path_buf(),
                    name: name.clone(),
                });
            }
        }
        let listed: BTreeSet<&String> = listed.iter().collect();
        if let Some(extra) = files.iter().find(|f| !listed.contains(&f.name)) {
            return Err(hostile(&extra.name, "not listed in snapshot.json"));
        }
    }
    if let Some(flusher) = flusher {
        flusher.finish()?;
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Imported { envelope, files })
}

/// An entry's name as one plain file name: a leading `./` is dropped, anything else that is
/// not a single normal component (`..`, `/x`, `a/b`, empty) is `None`. As tar-rs notes for
/// CVE-2001-1267, `..` in archive names is the classic way out of the target directory; for a
/// flat snapshot there is no reason to accept any path at all.
fn plain_name(raw: &str) -> Option<String> {
    let name = raw.strip_prefix("./").unwrap_or(raw);
    is_plain_name(name).then(|| name.to_string())
}

/// An entry's PAX records by key. Repeated keys (GNU 0.0's offset/numbytes) are joined with ','.
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<HashMap<String, Vec<u8>>> {
    let mut records: HashMap<String, Vec<u8>> = HashMap::new();
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(records);
    };
    for ext in extensions {
        let ext = ext?;
        let key = String::from_utf8_lossy(ext.key_bytes()).into_owned();
        let slot = records.entry(key).or_default();
        if !slot.is_empty() {
            slot.push(b',');
        }
        slot.extend_from_slice(ext.value_bytes());
    }
    Ok(records)
}

struct SparseLayout {
    real_size: u64,
    segments: Vec<Segment>,
}

enum Layout {
    Bad(&'static str),
    Io(io::Error),
}

impl From<&'static str> for Layout {
    fn from(reason: &'static str) -> Layout {
        Layout::Bad(reason)
    }
}

/// Where an entry's data goes in the real file, by whichever sparse format it uses.
fn sparse_layout<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    pax: &HashMap<String, Vec<u8>>,
) -> Result<SparseLayout, Layout> {
    let text = |key: &str| {
        pax.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let data_size = entry.size();
    let (real_size, segments, data_size) = if let Some(map) = pax.get("COCOON.sparse.map") {
        let size =
            text("COCOON.sparse.size").ok_or("COCOON.sparse.map without COCOON.sparse.size")?;
        (
            sparse::parse_size(&size)?,
            sparse::parse_cocoon_map(map)?,
            data_size,
        )
    } else if text("GNU.sparse.major").as_deref() == Some("1") {
        if text("GNU.sparse.minor").as_deref() != Some("0") {
            return Err(Layout::Bad("unknown GNU sparse format version"));
        }
        let size =
            text("GNU.sparse.realsize").ok_or("GNU sparse 1.0 without GNU.sparse.realsize")?;
        let real_size = sparse::parse_size(&size)?;
        let (segments, used) = sparse::read_gnu_10_map(entry).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => Layout::Bad("malformed GNU sparse 1.0 map"),
            _ => Layout::Io(e),
        })?;
        let data = data_size
            .checked_sub(used)
            .ok_or("GNU sparse map is longer than its entry")?;
        (real_size, segments, data)
    } else if let Some(map) = text("GNU.sparse.map").or_else(|| gnu_00_map(pax)) {
        let size = text("GNU.sparse.size")
            .or_else(|| text("GNU.sparse.realsize"))
            .ok_or("GNU sparse map without GNU.sparse.size")?;
        (
            sparse::parse_size(&size)?,
            sparse::parse_gnu_01_map(&map)?,
            data_size,
        )
    } else {
        // Plain entries, and old GNU 'S' entries, which tar-rs expands with zeros for holes:
        // both are written with zero-block detection.
        (
            data_size,
            vec![Segment {
                offset: 0,
                length: data_size,
            }],
            data_size,
        )
    };
    sparse::validate(&segments, real_size, data_size)?;
    Ok(SparseLayout {
        real_size,
        segments,
    })
}

/// GNU PAX 0.0 repeats `GNU.sparse.offset` and `GNU.sparse.numbytes`; as joined by
/// [`pax_records`], they interleave into a 0.1-style map.
fn gnu_00_map(pax: &HashMap<String, Vec<u8>>) -> Option<String> {
    let offsets = String::from_utf8_lossy(pax.get("GNU.sparse.offset")?).into_owned();
    let lengths = String::from_utf8_lossy(pax.get("GNU.sparse.numbytes")?).into_owned();
    let (offsets, lengths): (Vec<&str>, Vec<&str>) =
        (offsets.split(',').collect(), lengths.split(',').collect());
    if offsets.len() != lengths.len() {
        return Some("unbalanced".to_string());
    }
    Some(
        offsets
            .iter()
            .zip(&lengths)
            .map(|(o, l)| format!("{o},{l}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// A file being written into the staging dir.
struct Staged {
    file: File,
    path: PathBuf,
}

/// Work for the [`Flusher`].
enum Flush {
    /// Start writeback of `len` bytes at `offset`.
    Range(Arc<Staged>, u64, u64),
    /// Wait for all of the file to be on disk: nothing more will be written to it.
    Sync(Arc<Staged>),
}

/// Makes imported files durable on a thread of its own, overlapping the disk with the parse.
/// Starting writeback blocks while the filesystem allocates and submits, once per data run on
/// XFS: about 65k times for a GiB of half-zero guest memory. On the reading thread that stalled
/// the parse for seconds. Jobs run in order, so a file's fsync follows its last range.
struct Flusher {
    jobs: Option<SyncSender<Flush>>,
    thread: Option<JoinHandle<Result<()>>>,
    cancel: Arc<AtomicBool>,
}

/// Ranges queued ahead of the flusher before the parse waits for it: bounds the dirty data an
/// import runs ahead of the disk by, at `FLUSH_QUEUE * WRITEBACK_EVERY`.
const FLUSH_QUEUE: usize = 8;

impl Flusher {
    fn spawn() -> io::Result<Flusher> {
        let (jobs, queue) = sync_channel::<Flush>(FLUSH_QUEUE);
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = Arc::clone(&cancel);
        let thread = std::thread::Builder::new()
            .name("snapstore-flush".into())
            .spawn(move || {
                // The first error is kept and the rest of the queue drained, so the parse never
                // blocks on a flusher that stopped; the import fails when it finishes.
                let mut first = Ok(());
                for job in queue {
                    if first.is_err() || cancelled.load(Ordering::Relaxed) {
                        continue;
                    }
                    first = match job {
                        Flush::Range(staged, offset, len) => {
                            sys::start_writeback(&staged.file, offset, len)
                                .map_err(|e| Error::io("start writeback of", &staged.path, e))
                        }
                        Flush::Sync(staged) => staged
                            .file
                            .sync_all()
                            .map_err(|e| Error::io("fsync", &staged.path, e)),
                    };
                }
                first
            })?;
        Ok(Flusher {
            jobs: Some(jobs),
            thread: Some(thread),
            cancel,
        })
    }

    /// Queues `job`; waits while the queue is full.
    fn send(&self, job: Flush) {
        if let Some(jobs) = &self.jobs {
            // Fails only when the thread is gone, which `finish` reports.
            let _ = jobs.send(job);
        }
    }

    /// Waits for every queued job; the first error any of them met.
    fn finish(mut self) -> Result<()> {
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::io(
                "make durable",
                Path::new("<imported files>"),
                io::Error::other("the writeback thread panicked"),
            )),
            None => Ok(()),
        }
    }
}

impl Drop for Flusher {
    /// An import that failed: skip what is queued, and be gone before the staging dir is.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies each segment's bytes from `data` to its place in `staged`; all-zero 4 KiB blocks are
/// left as holes (the file was already sized). With a `flusher`, writeback of every few MiB
/// written is started there, so the closing fsync waits for less.
fn write_segments(
    data: &mut impl Read,
    staged: &Arc<Staged>,
    segments: &[Segment],
    flusher: Option<&Flusher>,
    progress: &Progress,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    // Segments come in file order, so what is unflushed is one range: `window..end`.
    let mut window: Option<u64> = None;
    for segment in segments {
        let mut done = 0u64;
        while done < segment.length {
            let n = ((segment.length - done) as usize).min(READ_BUF);
            let at = segment.offset + done;
            data.read_exact(&mut buf[..n])?;
            write_nonzero(&staged.file, &buf[..n], at)?;
            progress.advance(n as u64);
            done += n as u64;
            let start = *window.get_or_insert(at);
            let end = at + n as u64;
            if let Some(flusher) = flusher
                && end - start >= WRITEBACK_EVERY
            {
                flusher.send(Flush::Range(Arc::clone(staged), start, end - start));
                window = None;
            }
        }
    }
    Ok(())
}

/// Writes the runs of `buf` that are not all-zero blocks at `offset`.
fn write_nonzero(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    while pos < buf.len() {
        let end = (pos + ZERO_BLOCK).min(buf.len());
        let zero = is_zero(&buf[pos..end]);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(start)) => {
                file.write_all_at(&buf[start..pos], offset + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(start) = run_start {
        file.write_all_at(&buf[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Whether every byte of `block` is zero. OR-ing 64 bytes at a time vectorizes, where a
/// byte-by-byte `all` does not; stopping between chunks keeps a data block cheap.
fn is_zero(block: &[u8]) -> bool {
    let mut chunks = block.chunks_exact(64);
    chunks.all(|chunk| chunk.iter().fold(0, |acc, &b| acc | b) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn names_must_be_one_plain_component() {
        assert_eq!(plain_name("./mem").as_deref(), Some("mem"));
        assert_eq!(plain_name("cow.raw").as_deref(), Some("cow.raw"));
        for bad in [
            "../x",
            "/etc/passwd",
            "a/b",
            "./a/b",
            "./",
            "",
            "..",
            ".",
            "././x",
        ] {
            assert_eq!(plain_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_block_is_zero_only_when_every_byte_is() {
        for len in [0, 1, 63, 64, 65, 4095, 4096] {
            let mut block = vec![0u8; len];
            assert!(is_zero(&block), "{len} zeros");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    block[at] = 0x80;
                    assert!(!is_zero(&block), "{len} bytes, one set at {at}");
                    block[at] = 0;
                }
            }
        }
    }

    #[test]
    fn zero_blocks_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut data = vec![0u8; 64 * 1024];
        data[10_000] = 1; // block 2
        data[40_000] = 2; // block 9
        file.set_len(data.len() as u64 + 8192).unwrap();
        write_nonzero(&file, &data, 0).unwrap();
        file.sync_all().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[..data.len()], &data[..]);
        assert_eq!(
            back.len(),
            data.len() + 8192,
            "a trailing hole keeps the size"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().blocks(),
            16,
            "two 4 KiB blocks allocated"
        );
    }
}
