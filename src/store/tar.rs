//! The store's side of the tar layer: exports to a writer, to a file (temp file, renamed into
//! place only when complete) and as a stream read while it is written; tar import as a
//! [`Source`] for the create path. The format itself lives in `archive`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::archive::{self, ExportOptions, ImportOptions, compress, export, import};
use crate::clone;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::progress::Progress;
use crate::store::create::{Overrides, Source, Staged};
use crate::store::{CreateReport, LocalFile, TarStream};
use crate::types::Config;

/// Mode of an archive [`LocalFile::export_to_file`] writes, as `tar` and `cp` leave one.
const ARCHIVE_MODE: u32 = 0o644;

impl LocalFile {
    /// Writes the snapshot as a tar archive to `out`: `snapshot.json`, then its data files,
    /// sparse files in `opts.sparse_format`, compressed as `opts.compression` says. `label`
    /// names the output in errors. Holds a lease on the snapshot while it reads.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Io`] naming the file read or the output written.
    pub async fn export_to(
        &self,
        reference: &str,
        opts: ExportOptions,
        out: Box<dyn Write + Send>,
        label: PathBuf,
    ) -> Result<()> {
        let reference = reference.to_string();
        self.blocking(move |store| {
            let (lease, dir, config, names) = store.open_for_read(&reference)?;
            let envelope = Envelope::new(config, names.clone());
            write_archive(
                &dir,
                &names,
                Some(&envelope),
                opts,
                out,
                &label,
                &store.progress,
            )?;
            store.touch(&lease)
        })
        .await
    }

    /// Writes the snapshot as a tar archive (see [`LocalFile::export_to`]) to the file `path`.
    ///
    /// The archive goes to a temp file beside `path` and is renamed into place only when
    /// complete: a failed export, or one whose future is dropped (the caller's Ctrl-C), leaves
    /// no output and never clobbers an older file at `path`; a dropped one also stops writing at
    /// its next block. Like `tar`, it leaves the archive to the kernel's writeback unless
    /// `opts.sync`, which fsyncs it and its directory before returning.
    ///
    /// # Errors
    /// Those of [`LocalFile::export_to`], and [`Error::Io`] naming the temp file or `path`.
    pub async fn export_to_file(
        &self,
        reference: &str,
        path: PathBuf,
        opts: ExportOptions,
    ) -> Result<()> {
        let dir = fsutil::parent_dir(&path).to_path_buf();
        let temp = tempfile::Builder::new()
            .prefix(".snapstore-export-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(ARCHIVE_MODE))
            .tempfile_in(&dir)
            .map_err(|e| Error::io("create a temp file in", &dir, e))?;
        let file = temp
            .reopen()
            .map_err(|e| Error::io("open", temp.path(), e))?;
        // Dropping this future drops `cancel`, which stops the writer, and `temp`, which removes
        // the partial archive.
        let cancel = Cancel::default();
        let out = Box::new(BufWriter::with_capacity(
            1 << 20,
            Cancellable {
                inner: file,
                cancelled: Arc::clone(&cancel.0),
            },
        ));
        self.export_to(reference, opts, out, path.clone()).await?;
        if opts.sync {
            let file = temp.as_file();
            file.sync_all()
                .map_err(|e| Error::io("fsync", temp.path(), e))?;
        }
        temp.persist(&path)
            .map_err(|e| Error::io("rename the archive to", &path, e.error))?;
        if opts.sync {
            fsutil::fsync_dir(&dir)?;
        }
        drop(cancel);
        Ok(())
    }

    /// A new snapshot from a tar archive, raw, gzip or zstd (detected by magic bytes).
    ///
    /// # Errors
    /// [`Error::HostileEntry`], [`Error::EnvelopeMissing`], [`Error::ListedFileMissing`],
    /// [`Error::EnvelopeVersion`], [`Error::NameTaken`], [`Error::Io`] for a truncated or
    /// corrupt stream. On any error nothing remains and the name is free.
    pub async fn import_with(&self, input: TarStream, opts: ImportOptions) -> Result<CreateReport> {
        self.blocking(move |store| {
            let overrides = Overrides {
                name: opts.name.clone(),
                description: opts.description.clone(),
            };
            store.create_from(TarSource { input, opts }, overrides)
        })
        .await
    }

    /// A tar stream of the snapshot, written on its own thread while the caller reads; with the
    /// envelope first (`export`) or without it (`restore`).
    pub(super) fn stream(
        &self,
        reference: &str,
        opts: ExportOptions,
        with_envelope: bool,
    ) -> Result<(Config, TarStream)> {
        let (lease, dir, config, names) = self.open_for_read(reference)?;
        let envelope = with_envelope.then(|| Envelope::new(config.clone(), names.clone()));
        let (writer, reader) = archive::channel();
        let closer = writer.closer();
        let store = self.clone();
        std::thread::spawn(move || {
            let label = PathBuf::from("<export stream>");
            if let Err(e) = write_archive(
                &dir,
                &names,
                envelope.as_ref(),
                opts,
                Box::new(writer),
                &label,
                &store.progress,
            ) {
                // Gone when the reader dropped the stream, which is how a caller stops it.
                closer.fail(std::io::Error::other(e));
            } else {
                closer.finish();
                // The reader has every byte by now; a failed update only leaves the snapshot
                // looking older to gc's eviction, so there is no one to tell.
                let _ = store.touch(&lease);
            }
            drop(lease);
        });
        Ok((config, Box::new(reader)))
    }
}

/// A tar stream, raw, gzip or zstd, read into the staging dir.
struct TarSource {
    input: TarStream,
    opts: ImportOptions,
}

impl Source for TarSource {
    fn name(&self) -> Option<&str> {
        // The envelope's name is known only once the stream is read; an override is known now.
        self.opts.name.as_deref()
    }

    fn fill(&mut self, store: &LocalFile, staging: &Path) -> Result<Staged> {
        let label = &self.opts.label;
        let input = std::mem::replace(&mut self.input, Box::new(std::io::empty()));
        let input =
            compress::decompressor(input).map_err(|e| Error::io("read archive", label, e))?;
        let imported = import::read_tar(
            input,
            label,
            staging,
            self.opts.max_file_size,
            self.opts.sync,
            &store.progress,
        )?;
        Ok(Staged {
            config: imported.envelope.config,
            files: imported.files,
            skipped: Vec::new(),
        })
    }
}

/// Writes a tar archive of `names` in `dir` to `out`, compressed on every core.
fn write_archive(
    dir: &Path,
    names: &[String],
    envelope: Option<&Envelope>,
    opts: ExportOptions,
    out: Box<dyn Write + Send>,
    label: &Path,
    progress: &Progress,
) -> Result<()> {
    let threads = clone::cores();
    let write_err = |e| Error::io("write archive", label, e);
    let mut out = compress::compressor(opts.compression, out, threads).map_err(write_err)?;
    export::write_tar(
        &mut out,
        label,
        dir,
        names,
        envelope,
        opts.sparse_format,
        progress,
    )?;
    out.finish().map_err(write_err)
}

/// Set when dropped: tells a [`Cancellable`] writer that no one waits for its output.
#[derive(Default)]
struct Cancel(Arc<AtomicBool>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A writer that fails once its [`Cancel`] is dropped, so abandoned work stops.
struct Cancellable<W> {
    inner: W,
    cancelled: Arc<AtomicBool>,
}

impl<W: Write> Write for Cancellable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("export cancelled"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
