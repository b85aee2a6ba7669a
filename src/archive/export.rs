//! Writing a snapshot as a tar stream: `snapshot.json` first, then each data file in name
//! order, flat. A file with any hole (found with SEEK_DATA/SEEK_HOLE) is written sparse, in
//! cocoon's format or GNU's PAX 1.0; only its data segments are read and written, so a 64 GiB
//! disk with 300 MiB of data costs 300 MiB. Memory stays flat: one 1 MiB buffer per file.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tar::{EntryType, Header};

use crate::archive::SparseFormat;
use crate::archive::sparse::{self, Segment};
use crate::clone::sparse::data_segments;
use crate::envelope::{ENVELOPE_FILE, Envelope};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::progress::Progress;

/// Mode of every entry in an archive; the importer ignores modes anyway.
const ENTRY_MODE: u32 = 0o644;

/// Read size of a data file.
const READ_BUF: usize = 1 << 20;

/// Writes a tar stream of `names` in `dir` to `out`, preceded by `envelope` when given (export)
/// or not (restore). `label` names the output in errors.
pub(crate) fn write_tar(
    out: &mut dyn Write,
    label: &Path,
    dir: &Path,
    names: &[String],
    envelope: Option<&Envelope>,
    format: SparseFormat,
    progress: &Progress,
) -> Result<()> {
    let write_err = |e| Error::io("write archive", label, e);
    let mut builder = tar::Builder::new(out);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some(envelope) = envelope {
        let bytes = envelope.to_bytes();
        let header = header(ENVELOPE_FILE, bytes.len() as u64, mtime).map_err(write_err)?;
        builder.append(&header, &bytes[..]).map_err(write_err)?;
    }
    // Every file's data segments first, so the progress total is known from the start.
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        let file = fsutil::open(&path)?;
        let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        let len = meta.len();
        let segments: Vec<Segment> = data_segments(&file, len)
            .map_err(|e| Error::io("find the data segments of", &path, e))?
            .into_iter()
            .map(|(offset, length)| Segment { offset, length })
            .collect();
        progress.add_total(segments.iter().map(|s| s.length).sum());
        files.push((name, path, file, len, segments));
    }
    for (name, path, file, len, segments) in files {
        let data_len: u64 = segments.iter().map(|s| s.length).sum();
        let reader = BufReader::with_capacity(READ_BUF, Segments::new(&file, &segments, progress));
        let sparse = data_len < len;
        // A name too long for the ustar field travels whole in a PAX `path` record.
        let long_name = (name.len() > NAME_FIELD).then(|| ("path", name.clone()));
        let appended = if !sparse {
            let header = header(name, len, mtime).map_err(write_err)?;
            match &long_name {
                Some(path) => append_pax(&mut builder, name, std::slice::from_ref(path), mtime)
                    .and_then(|()| builder.append(&header, reader)),
                None => builder.append(&header, reader),
            }
        } else {
            match format {
                SparseFormat::Cocoon => {
                    let mut records = vec![
                        ("COCOON.sparse.map", sparse::cocoon_map(&segments)),
                        ("COCOON.sparse.size", len.to_string()),
                    ];
                    records.extend(long_name);
                    append_pax(&mut builder, name, &records, mtime)
                        .and_then(|()| header(name, data_len, mtime))
                        .and_then(|header| builder.append(&header, reader))
                }
                SparseFormat::Gnu => {
                    let map = sparse::gnu_10_map(&segments, len);
                    let records = [
                        ("GNU.sparse.major", "1".to_string()),
                        ("GNU.sparse.minor", "0".to_string()),
                        ("GNU.sparse.name", name.clone()),
                        ("GNU.sparse.realsize", len.to_string()),
                    ];
                    // GNU tar names the entry itself like this; a reader that knows nothing
                    // of sparse files extracts the raw map and data there instead of `name`.
                    let stand_in = format!("GNUSparseFile.0/{name}");
                    let size = map.len() as u64 + data_len;
                    append_pax(&mut builder, &stand_in, &records, mtime)
                        .and_then(|()| header(&stand_in, size, mtime))
                        .and_then(|header| {
                            builder.append(&header, io::Cursor::new(map).chain(reader))
                        })
                }
            }
        };
        // A read error of the data file comes back through the builder; name the file.
        appended.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::io("read", &path, e),
            _ => write_err(e),
        })?;
    }
    builder
        .into_inner()
        .map_err(write_err)?
        .flush()
        .map_err(write_err)
}

/// Bytes of a name a ustar header holds (its name field, less the NUL some readers want).
const NAME_FIELD: usize = 99;

/// `name` cut to at most `max` bytes on a character boundary, never inside a character.
fn fitting(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A ustar header for a regular file. A name longer than the field is cut to fit; the caller
/// carries the whole name in a PAX record (`path`, or `GNU.sparse.name`).
fn header(name: &str, size: u64, mtime: u64) -> io::Result<Header> {
    let mut header = Header::new_ustar();
    header.set_path(fitting(name, NAME_FIELD))?;
    header.set_size(size);
    header.set_mode(ENTRY_MODE);
    header.set_mtime(mtime);
    header.set_entry_type(EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

/// Appends a PAX extended header ('x') carrying `records` for the entry named `name`.
fn append_pax<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    records: &[(&'static str, String)],
    mtime: u64,
) -> io::Result<()> {
    let data = pax_records(records);
    let mut header = Header::new_ustar();
    // As GNU tar names them; the name of an 'x' entry carries nothing.
    let pax_name = format!("PaxHeaders.0/{}", name.rsplit('/').next().unwrap_or(name));
    header.set_path(fitting(&pax_name, NAME_FIELD))?;
    header.set_size(data.len() as u64);
    header.set_mode(ENTRY_MODE);
    header.set_mtime(mtime);
    header.set_entry_type(EntryType::XHeader);
    header.set_cksum();
    builder.append(&header, &data[..])
}

/// PAX records, each `"LEN KEY=VALUE\n"` where LEN counts the whole record, its own digits too.
pub(crate) fn pax_records(records: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
    }
    out
}

/// Reads a file's data segments back to back, failing if the file shrank under it.
struct Segments<'a> {
    file: &'a File,
    segments: &'a [Segment],
    index: usize,
    done: u64,
    progress: &'a Progress,
}

impl<'a> Segments<'a> {
    fn new(file: &'a File, segments: &'a [Segment], progress: &'a Progress) -> Segments<'a> {
        Segments {
            file,
            segments,
            index: 0,
            done: 0,
            progress,
        }
    }
}

impl Read for Segments<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(segment) = self.segments.get(self.index) {
            let left = segment.length - self.done;
            if left == 0 {
                self.index += 1;
                self.done = 0;
                continue;
            }
            let want = (left as usize).min(buf.len());
            let n = self
                .file
                .read_at(&mut buf[..want], segment.offset + self.done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being archived",
                ));
            }
            self.done += n as u64;
            self.progress.advance(n as u64);
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let out = pax_records(&[("a", "b".into())]);
        assert_eq!(out, b"6 a=b\n");
        // 9 + 1 digit = 10 would need 2 digits: the length settles at 11.
        let out = pax_records(&[("abcd", "ef".into())]);
        assert_eq!(out, b"11 abcd=ef\n");
        let long = "x".repeat(200);
        let out = pax_records(&[("GNU.sparse.name", long.clone())]);
        let text = String::from_utf8(out).unwrap();
        let (len, rest) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), text.len());
        assert_eq!(rest, format!("GNU.sparse.name={long}\n"));
    }
}
