//! Pull: the manifest and config fetched and checked, then each window written into a staging
//! dir on the store's filesystem, holes left as holes. A window whose data a snapshot in the
//! store already has is cloned from it (FICLONERANGE, so the two share extents; a copy where
//! the filesystem cannot) after its bytes are checked against the digest; every other window
//! is downloaded, and its blob is untrusted until its sha256 and its data's sha256 match.
//!
//! The staging dir is keyed by the manifest's digest and each finished window is noted in a
//! journal beside it, so a pull that was cut off resumes where it stopped; a noted window is
//! kept only if its bytes still hash to its digest. The files are fsynced once, whole, before
//! the commit. The store commits the files through its one create path; nothing is listed
//! before that.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::clone::parallel_on;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::{DIR_MODE, Layout};
use crate::progress::Progress;
use crate::registry::blob::{
    BlobFailure, Place, RunsReader, download, place_runs, read_blob, runs_digest,
};
use crate::registry::client::{Client, Connection};
use crate::registry::dest::Dest;
use crate::registry::digest::Digest;
use crate::registry::format::{
    ArtifactConfig, BLOCK, Chunk, ChunkMap, Descriptor, LAYER_ZSTD, MANIFEST_TYPE,
    MAX_MANIFEST_BYTES, Manifest,
};
use crate::registry::record::{Blob, ChunkRecord, RecordedChunk, RecordedFile};
use crate::registry::reference::{Reference, Version};
use crate::sys::{self, FileLock};
use crate::types::{CloneMethod, FileReport, SnapshotId};

/// What a manifest GET accepts: ours, and the kinds whose arrival we name as "not ours".
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Options of [`LocalFile::pull`](crate::LocalFile::pull).
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The new snapshot's name, instead of the artifact's.
    pub name: Option<String>,
    /// Windows downloaded at once.
    pub jobs: usize,
    /// How to reach the registry.
    pub connection: Connection,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            name: None,
            jobs: 4,
            connection: Connection::default(),
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// The new snapshot's ID.
    pub id: SnapshotId,
    /// The manifest's digest.
    pub digest: String,
    /// Bytes of blobs downloaded.
    pub bytes_downloaded: u64,
    /// Bytes of data taken from snapshots already in the store instead.
    pub bytes_cloned_locally: u64,
    /// One report per data file: `download` when any of it came over the network, else how
    /// its windows were taken from the store (`reflink` or `copy`).
    pub files: Vec<FileReport>,
}

/// The windows of the snapshots in the store, by content: where to find a window's bytes
/// without downloading them.
#[derive(Default)]
pub(crate) struct LocalWindows {
    by_content: HashMap<WindowKey, (PathBuf, u64)>,
}

/// What makes two windows hold the same bytes: their data's digest, their length, and where in
/// them the data runs are.
type WindowKey = (Digest, u64, Vec<[u64; 2]>);

impl LocalWindows {
    /// Adds the windows of the snapshot whose data dir is `dir` and whose chunk record is
    /// `record`.
    pub(crate) fn add(&mut self, dir: &Path, record: &ChunkRecord) {
        for file in &record.files {
            for c in &file.chunks {
                let key = (c.chunk.digest, c.chunk.length, c.chunk.shape());
                self.by_content
                    .entry(key)
                    .or_insert_with(|| (dir.join(&file.name), c.chunk.offset));
            }
        }
    }

    fn find(&self, map: &ChunkMap) -> Option<&(PathBuf, u64)> {
        let c = &map.chunk;
        self.by_content.get(&(c.digest, c.length, c.shape()))
    }
}

/// An artifact fetched into its staging dir, checked and fsynced, ready to commit.
pub(crate) struct Fetched {
    /// The staging dir, holding one file per [`ArtifactConfig::files`].
    pub(crate) dir: PathBuf,
    pub(crate) config: ArtifactConfig,
    pub(crate) digest: Digest,
    /// The windows' digests and blobs, for the new snapshot's chunk record.
    pub(crate) record: ChunkRecord,
    /// How each file got here, in config order.
    pub(crate) methods: Vec<CloneMethod>,
    pub(crate) bytes_downloaded: u64,
    pub(crate) bytes_cloned: u64,
    journal: PathBuf,
    lock_path: PathBuf,
    _lock: FileLock,
}

impl Fetched {
    /// Removes what is left of the staging once the files were committed.
    pub(crate) fn discard(self) -> Result<()> {
        fsutil::remove_all(&self.dir)?;
        fsutil::remove_all(&self.journal)?;
        // The lock file goes while it is held: a pull that opens it now locks an unlinked
        // inode, and starts afresh, which is all it could do anyway.
        fsutil::remove_all(&self.lock_path)
    }
}

/// How one window got into place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Got {
    Journaled,
    Downloaded(u64),
    Local(CloneMethod, u64),
}

/// An artifact whose manifest and config were fetched and checked: what a pull will write,
/// known before any window is downloaded.
pub(crate) struct Artifact {
    client: Client,
    reference: String,
    digest: Digest,
    layers: Vec<Descriptor>,
    /// The config, checked.
    pub(crate) config: ArtifactConfig,
}

impl Artifact {
    /// Fetches and checks `source`'s manifest and config.
    pub(crate) fn open(source: &Reference, opts: &PullOptions) -> Result<Artifact> {
        let client = Client::new(source, &opts.connection, false)?;
        let reference = source.to_string();
        let version = source.version_text().unwrap_or_else(|| "latest".into());
        let manifest_bytes = client
            .get_manifest(&version, ACCEPT, MAX_MANIFEST_BYTES)?
            .ok_or_else(|| Error::ManifestUnknown {
                reference: reference.clone(),
            })?;
        let digest = Digest::of(&manifest_bytes);
        if let Some(Version::Digest(asked)) = &source.version
            && *asked != digest
        {
            return Err(Error::ArtifactInvalid {
                reference,
                reason: format!("the registry sent a manifest whose digest is {digest}"),
            });
        }
        let manifest = Manifest::parse(&manifest_bytes).map_err(|reason| Error::NotAnArtifact {
            reference: reference.clone(),
            reason,
        })?;
        if manifest.media_type != MANIFEST_TYPE && !manifest.media_type.is_empty() {
            return Err(Error::NotAnArtifact {
                reference,
                reason: format!("its manifest is {:?}", manifest.media_type),
            });
        }
        let config_bytes = read_blob(&client, &manifest.config).map_err(|e| match e {
            BlobFailure::Failed(e) => e,
            BlobFailure::Invalid(reason) => Error::ArtifactInvalid {
                reference: reference.clone(),
                reason: format!("config blob: {reason}"),
            },
        })?;
        let config = ArtifactConfig::parse(&config_bytes, &manifest.layers).map_err(|reason| {
            Error::ArtifactInvalid {
                reference: reference.clone(),
                reason,
            }
        })?;
        Ok(Artifact {
            client,
            reference,
            digest,
            layers: manifest.layers,
            config,
        })
    }

    /// Writes every window into the pull's staging dir, resuming a previous run's, with up to
    /// `jobs` downloads at once.
    pub(crate) fn fetch(
        self,
        layout: &Layout,
        local: &LocalWindows,
        jobs: usize,
        progress: &Progress,
    ) -> Result<Fetched> {
        let Artifact {
            client,
            reference,
            digest,
            layers,
            config,
        } = self;
        let hex = digest.hex();
        fsutil::create_dirs(&layout.staging_root(), DIR_MODE)?;
        let lock_path = layout.pull_lock(&hex);
        let lock_file =
            fsutil::open_lock_file(&lock_path).map_err(|e| Error::io("open", &lock_path, e))?;
        let lock = FileLock::try_lock(lock_file, true)
            .map_err(|e| Error::io("lock", &lock_path, e))?
            .ok_or_else(|| {
                Error::io(
                    "lock",
                    &lock_path,
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "another pull of this artifact is running",
                    ),
                )
            })?;
        let dir = layout.pull_dir(&hex);
        if !dir.is_dir() {
            fsutil::create_dir(&dir, DIR_MODE)?;
        }
        let journal_path = layout.pull_journal(&hex);
        let files = open_files(&dir, &config)?;
        let mut done = read_journal(&journal_path, &config);
        done.retain(|(i, _)| files.get(*i).is_some_and(|(_, kept)| *kept));
        let journal = Journal::open(&journal_path)?;

        let windows: Vec<(usize, &ChunkMap)> = config
            .files
            .iter()
            .enumerate()
            .flat_map(|(i, f)| f.chunks.iter().map(move |c| (i, c)))
            .collect();
        let layers: HashMap<Digest, &Descriptor> = layers.iter().map(|l| (l.digest, l)).collect();
        progress.add_total(windows.iter().map(|(_, c)| c.chunk.data_len()).sum());
        progress.add_items(windows.len() as u64);
        let got = parallel_on(jobs, &windows, |&(i, map)| {
            let dest = &files[i].0;
            // A window a previous run noted is kept if its bytes on disk are still its digest's:
            // after a power cut they may not be, and then it is fetched again.
            if done.contains(&(i, map.chunk.offset))
                && runs_digest(dest.file(), map, map.chunk.offset).ok() == Some(map.chunk.digest)
            {
                progress.advance(map.chunk.data_len());
                progress.item_done();
                return Ok(Got::Journaled);
            }
            let from_store = match local.find(map) {
                Some((src, at)) => clone_local(dest, map, src, *at)?,
                None => None,
            };
            let got = match from_store {
                Some(method) => Got::Local(method, map.chunk.data_len()),
                None => Got::Downloaded(download(
                    &client,
                    dest,
                    &config.files[i].name,
                    map,
                    &layers,
                    &reference,
                    progress,
                )?),
            };
            if let Got::Local(_, n) = got {
                progress.advance(n);
            }
            journal.finished(i, &map.chunk);
            progress.item_done();
            Ok(got)
        })?;

        let mut methods = vec![None::<CloneMethod>; config.files.len()];
        let (mut downloaded, mut cloned) = (0, 0);
        for (&(i, _), got) in windows.iter().zip(&got) {
            let method = match *got {
                Got::Journaled => CloneMethod::Download,
                Got::Downloaded(n) => {
                    downloaded += n;
                    CloneMethod::Download
                }
                Got::Local(method, n) => {
                    cloned += n;
                    method
                }
            };
            methods[i] = Some(match (methods[i], method) {
                (Some(CloneMethod::Download), _) | (_, CloneMethod::Download) => {
                    CloneMethod::Download
                }
                (Some(CloneMethod::Copy), _) | (_, CloneMethod::Copy) => CloneMethod::Copy,
                _ => method,
            });
        }
        for (dest, _) in &files {
            dest.file()
                .sync_all()
                .map_err(|e| Error::io("fsync", dest.path(), e))?;
        }
        fsutil::fsync_dir(&dir)?;
        let record = record_of(&config, &layers);
        Ok(Fetched {
            dir,
            methods: methods
                .into_iter()
                .map(|m| m.unwrap_or(CloneMethod::Download))
                .collect(),
            record,
            config,
            digest,
            bytes_downloaded: downloaded,
            bytes_cloned: cloned,
            journal: journal_path,
            lock_path,
            _lock: lock,
        })
    }
}

/// The journal of a pull: the windows it finished, one line `INDEX OFFSET DIGEST` each. Not
/// fsynced, and not trusted either: a re-run keeps a noted window only if the bytes in place
/// hash to its digest, so a line that outlived its data (a power cut) costs a download, never
/// a wrong byte.
struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    fn open(path: &Path) -> Result<Journal> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Notes a finished window of file `i`. Best effort: a window whose line is lost is fetched
    /// again by the next run.
    fn finished(&self, i: usize, chunk: &Chunk) {
        let line = format!("{i} {} {}\n", chunk.offset, chunk.digest);
        if lock_mutex(&self.file).write_all(line.as_bytes()).is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Opens each file of the config in `dir`: a file of a previous run with the right size is
/// kept (`true`), anything else is made anew at its apparent size, all holes.
fn open_files(dir: &Path, config: &ArtifactConfig) -> Result<Vec<(Dest, bool)>> {
    config
        .files
        .iter()
        .map(|f| {
            let path = dir.join(&f.name);
            let kept =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == f.size);
            if kept {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io("open", &path, e))?;
                return Ok((Dest::new(file, path), true));
            }
            fsutil::remove_all(&path)?;
            // Read as well as written: a window cloned from the store is checked where it lands.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            file.set_len(f.size)
                .map_err(|e| Error::io("truncate", &path, e))?;
            Ok((Dest::new(file, path), false))
        })
        .collect()
}

/// The windows a previous run finished: `(file index, offset)`. A line counts only whole
/// (ended by its newline) and naming a window of `config` by its data's digest, so that a
/// line torn by a crash can never pass for another window.
fn read_journal(path: &Path, config: &ArtifactConfig) -> HashSet<(usize, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter_map(|line| {
            let mut fields = line.strip_suffix('\n')?.split(' ');
            let (i, offset, digest) = (fields.next()?, fields.next()?, fields.next()?);
            let (i, offset): (usize, u64) = (i.parse().ok()?, offset.parse().ok()?);
            let chunk = config
                .files
                .get(i)?
                .chunks
                .iter()
                .find(|c| c.chunk.offset == offset)?;
            (chunk.chunk.digest.to_string() == digest && fields.next().is_none())
                .then_some((i, offset))
        })
        .collect()
}

/// The chunk record of the pulled snapshot: the config's windows and their zstd blobs.
fn record_of(config: &ArtifactConfig, layers: &HashMap<Digest, &Descriptor>) -> ChunkRecord {
    let files = config
        .files
        .iter()
        .map(|f| RecordedFile {
            name: f.name.clone(),
            size: f.size,
            chunks: f
                .chunks
                .iter()
                .map(|c| RecordedChunk {
                    chunk: c.chunk.clone(),
                    zstd: layers
                        .get(&c.layer)
                        .filter(|l| l.media_type == LAYER_ZSTD)
                        .map(|l| Blob {
                            digest: l.digest,
                            size: l.size,
                        }),
                })
                .collect(),
        })
        .collect();
    ChunkRecord::new(config.chunk_size, files)
}

/// Takes a window from a local snapshot's file: cloned where the filesystem shares extents,
/// copied otherwise, and checked against the window's digest either way. `None` when the local
/// bytes are not what the record promised (the window is then downloaded over them).
fn clone_local(
    dest: &Dest,
    map: &ChunkMap,
    src_path: &Path,
    src_offset: u64,
) -> Result<Option<CloneMethod>> {
    let (dst, dst_path) = (dest.file(), dest.path());
    let chunk = &map.chunk;
    let Ok(src) = File::open(src_path) else {
        return Ok(None);
    };
    // A file's last window may end off a block boundary: the clone takes the whole blocks, a
    // copy the rest.
    let aligned = chunk.length / BLOCK * BLOCK;
    let cloned = match sys::ficlone_range(dst, chunk.offset, &src, src_offset, aligned) {
        Ok(()) => true,
        Err(e) if sys::clone_unsupported(&e) => false,
        Err(e) => return Err(Error::io("clone", dst_path, e)),
    };
    let quiet = Progress::default();
    let digest = if cloned {
        let mut tail = vec![0u8; (chunk.length - aligned) as usize];
        if src.read_exact_at(&mut tail, src_offset + aligned).is_err() {
            return Ok(None);
        }
        dst.write_all_at(&tail, chunk.offset + aligned)
            .map_err(|e| Error::io("write", dst_path, e))?;
        // The clone's bytes are checked where they now are.
        match runs_digest(dst, map, chunk.offset) {
            Ok(digest) => digest,
            Err(_) => return Ok(None),
        }
    } else {
        let runs = Box::new(RunsReader::new(&src, map, src_offset));
        match place_runs(runs, dest, map, true, &quiet) {
            Ok(Some(digest)) => digest,
            Err(Place::Write(e)) => return Err(e),
            Ok(None) | Err(_) => return Ok(None),
        }
    };
    if digest != chunk.digest {
        // Whatever came besides the runs must not stay.
        sys::punch_hole(dst, chunk.offset, chunk.length)
            .map_err(|e| Error::io("punch", dst_path, e))?;
        return Ok(None);
    }
    Ok(Some(if cloned {
        CloneMethod::Reflink
    } else {
        CloneMethod::Copy
    }))
}

fn lock_mutex<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
