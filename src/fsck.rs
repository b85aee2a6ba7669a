//! fsck: checks the index against the data dirs, and with `repair` mends what can be mended
//! without losing anything.
//!
//! Each complete record must have its data dir, holding exactly the files its sidecar lists, at
//! the sizes listed (without a sidecar, as cocoon writes none, the sizes must add up to the
//! record's `size_bytes`). A data dir must have a record. With `repair`: a record whose data is
//! gone is dropped; a missing or unreadable sidecar is written anew from the record when the
//! sizes agree; a data dir without a record gets its record back from its sidecar when its files
//! check out; a corrupt index is renamed aside (never deleted) and rebuilt from the sidecars.
//! Missing or resized files are reported, never "repaired": that would lose the evidence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::index::{Index, IndexLock};
use crate::layout::Layout;
use crate::layout::sidecar::Sidecar;
use crate::types::{SnapshotId, gotime};
use crate::units::shown;

/// What fsck found, and what it repaired.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Complete snapshots checked.
    pub checked: usize,
    /// Every problem found, repaired or not.
    pub problems: Vec<Problem>,
    /// Where a corrupt index was moved when the index was rebuilt.
    pub kept_corrupt_index: Option<PathBuf>,
}

impl FsckReport {
    /// The problems that remain.
    pub fn unrepaired(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.repaired)
    }
}

/// One problem, naming the snapshot and file it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The snapshot, when the problem belongs to one.
    pub id: Option<SnapshotId>,
    /// The file, when the problem is about one.
    pub file: Option<String>,
    /// The path it was found at.
    pub path: PathBuf,
    /// Details: sizes expected and found, or why a repair was not made.
    pub detail: String,
    /// Whether `--repair` mended it.
    pub repaired: bool,
}

/// The kinds of problem fsck finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The index does not parse.
    CorruptIndex,
    /// A complete record whose data dir is missing.
    RecordWithoutData,
    /// A data dir without a record.
    DataWithoutRecord,
    /// A file the sidecar lists is missing.
    FileMissing,
    /// A file (or, without a sidecar, the snapshot) is not the size recorded.
    WrongSize,
    /// A file in the data dir that the sidecar does not list.
    UnlistedFile,
    /// The snapshot has no sidecar.
    SidecarMissing,
    /// The sidecar does not parse.
    SidecarInvalid,
}

impl ProblemKind {
    /// The name reports print.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::CorruptIndex => "corrupt index",
            ProblemKind::RecordWithoutData => "record without data",
            ProblemKind::DataWithoutRecord => "data without record",
            ProblemKind::FileMissing => "file missing",
            ProblemKind::WrongSize => "wrong size",
            ProblemKind::UnlistedFile => "unlisted file",
            ProblemKind::SidecarMissing => "sidecar missing",
            ProblemKind::SidecarInvalid => "sidecar invalid",
        }
    }
}

/// Checks (and with `repair`, mends) the store at `layout`, holding the index lock throughout.
pub(crate) fn check(layout: &Layout, repair: bool) -> Result<FsckReport> {
    let _lock = IndexLock::acquire(&layout.index_lock(), true)?;
    let index_path = layout.index_file();
    let mut report = FsckReport::default();
    let mut changed = false;
    let mut index = match Index::load(&index_path) {
        Ok(index) => Some(index),
        Err(Error::CorruptIndex { source, .. }) => {
            let mut problem = Problem {
                kind: ProblemKind::CorruptIndex,
                id: None,
                file: None,
                path: index_path.clone(),
                detail: source.to_string(),
                repaired: false,
            };
            if repair {
                let kept = corrupt_name(&index_path);
                fsutil::rename(&index_path, &kept)?;
                fsutil::fsync_dir(&layout.db_dir())?;
                problem.repaired = true;
                problem.detail = format!("{}; kept as {}", problem.detail, shown(&kept));
                report.kept_corrupt_index = Some(kept);
                changed = true;
            }
            report.problems.push(problem);
            repair.then(Index::default)
        }
        Err(e) => return Err(e),
    };

    let dirs = data_dirs(layout)?;
    if let Some(index) = &mut index {
        changed |= check_records(layout, index, &dirs, repair, &mut report)?;
        changed |= adopt_orphans(layout, index, &dirs, repair, &mut report)?;
        if changed && repair {
            index.save(&index_path)?;
        }
    } else {
        // The index is unreadable and stays untouched: check the data against the sidecars.
        for id in &dirs {
            let dir = layout.data_dir(id);
            if let Ok(sidecar) = Sidecar::read(&layout.sidecar_file(id)) {
                report.problems.extend(compare(id, &dir, &sidecar)?);
            }
        }
    }
    Ok(report)
}

/// Checks every complete record against its data dir (one of `dirs`, the data dirs there are,
/// in order) and sidecar.
fn check_records(
    layout: &Layout,
    index: &mut Index,
    dirs: &[SnapshotId],
    repair: bool,
    report: &mut FsckReport,
) -> Result<bool> {
    let mut changed = false;
    let complete: Vec<SnapshotId> = index.complete_ids().cloned().collect();
    for id in complete {
        report.checked += 1;
        let dir = layout.data_dir(&id);
        // Known from the one listing of the data root: no stat per record in a directory of
        // hundreds of thousands of entries.
        if dirs.binary_search(&id).is_err() {
            if repair {
                index.remove(&id);
                fsutil::remove_all(&layout.sidecar_file(&id))?;
                changed = true;
            }
            report.problems.push(problem(
                ProblemKind::RecordWithoutData,
                &id,
                None,
                &dir,
                "the record was dropped".to_string(),
                repair,
            ));
            continue;
        }
        let sidecar_path = layout.sidecar_file(&id);
        let (kind, detail) = match Sidecar::read(&sidecar_path) {
            Ok(sidecar) => {
                report.problems.extend(compare(&id, &dir, &sidecar)?);
                continue;
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                (ProblemKind::SidecarMissing, String::new())
            }
            Err(e) => (ProblemKind::SidecarInvalid, error_chain(&e)),
        };
        let Some(record) = index.get(&id)?.cloned() else {
            continue;
        };
        let files = present_files(&dir)?;
        let total: u64 = files.values().sum();
        if total != record.size_bytes {
            report.problems.push(problem(
                ProblemKind::WrongSize,
                &id,
                None,
                &dir,
                format!(
                    "files total {total} bytes, the record says {}",
                    record.size_bytes
                ),
                false,
            ));
        }
        let mendable = total == record.size_bytes;
        if repair && mendable {
            let sizes = files.iter().map(|(name, &bytes)| (name.as_str(), bytes));
            Sidecar::new(record, sizes).write(&sidecar_path)?;
        }
        report.problems.push(problem(
            kind,
            &id,
            None,
            &sidecar_path,
            detail,
            repair && mendable,
        ));
    }
    Ok(changed)
}

/// Data dirs without a record: with `repair`, records come back from intact sidecars.
fn adopt_orphans(
    layout: &Layout,
    index: &mut Index,
    dirs: &[SnapshotId],
    repair: bool,
    report: &mut FsckReport,
) -> Result<bool> {
    let mut changed = false;
    for id in dirs {
        if index.contains(id) {
            continue; // complete (checked above) or pending (gc's to judge)
        }
        let dir = layout.data_dir(id);
        let (detail, repaired) = match Sidecar::read(&layout.sidecar_file(id)) {
            Err(e) => (
                format!("no usable sidecar ({}); gc removes it", error_chain(&e)),
                false,
            ),
            Ok(sidecar) => {
                let mismatches = compare(id, &dir, &sidecar)?;
                if !mismatches.is_empty() {
                    let detail = format!("its files do not match its sidecar: {}", {
                        let first = &mismatches[0];
                        format!("{} {}", first.kind.as_str(), first.detail)
                    });
                    report.problems.extend(mismatches);
                    (detail, false)
                } else if !repair {
                    ("its sidecar can restore the record".to_string(), false)
                } else {
                    let mut record = sidecar.record;
                    record.pending = false;
                    record.config.id = id.to_string();
                    record.data_dir = dir.display().to_string();
                    match index.insert(id.clone(), record) {
                        Ok(()) => {
                            changed = true;
                            ("record restored from its sidecar".to_string(), true)
                        }
                        Err(e) => (error_chain(&e), false),
                    }
                }
            }
        };
        report.problems.push(problem(
            ProblemKind::DataWithoutRecord,
            id,
            None,
            &dir,
            detail,
            repaired,
        ));
    }
    Ok(changed)
}

/// The differences between the data dir `dir` and what its sidecar lists.
fn compare(id: &SnapshotId, dir: &Path, sidecar: &Sidecar) -> Result<Vec<Problem>> {
    let mut present = present_files(dir)?;
    let mut problems = Vec::new();
    for listed in &sidecar.files {
        let path = dir.join(&listed.name);
        let found = present.remove(&listed.name);
        let (kind, detail) = match found {
            None => (
                ProblemKind::FileMissing,
                format!("{} bytes expected", listed.bytes),
            ),
            Some(bytes) if bytes != listed.bytes => (
                ProblemKind::WrongSize,
                format!("{bytes} bytes, {} expected", listed.bytes),
            ),
            Some(_) => continue,
        };
        problems.push(problem(kind, id, Some(&listed.name), &path, detail, false));
    }
    for (name, bytes) in present {
        let detail = format!("{bytes} bytes, not in the sidecar");
        let path = dir.join(&name);
        problems.push(problem(
            ProblemKind::UnlistedFile,
            id,
            Some(&name),
            &path,
            detail,
            false,
        ));
    }
    Ok(problems)
}

fn problem(
    kind: ProblemKind,
    id: &SnapshotId,
    file: Option<&str>,
    path: &Path,
    detail: String,
    repaired: bool,
) -> Problem {
    Problem {
        kind,
        id: Some(id.clone()),
        file: file.map(str::to_string),
        path: path.to_path_buf(),
        detail,
        repaired,
    }
}

/// The entries of `dir` by name, with their apparent sizes.
fn present_files(dir: &Path) -> Result<BTreeMap<String, u64>> {
    Ok(fsutil::list_dir(dir)?
        .into_iter()
        .map(|(name, meta)| (name.to_string_lossy().into_owned(), meta.len()))
        .collect())
}

/// The snapshot IDs of the data dirs under the data root, in order.
fn data_dirs(layout: &Layout) -> Result<Vec<SnapshotId>> {
    Ok(fsutil::list_subdirs(&layout.data_root())?
        .into_iter()
        .filter_map(|name| SnapshotId::try_from(name.into_string().ok()?).ok())
        .collect())
}

/// Where a corrupt index is kept: beside it, stamped with the time, never overwriting.
fn corrupt_name(index: &Path) -> PathBuf {
    let stamp = gotime::now().format("%Y%m%dT%H%M%S%.f");
    let name = format!(
        "{}.corrupt-{stamp}",
        index.file_name().map_or_else(
            || "snapshots.json".into(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    index.with_file_name(name)
}

/// An error and its causes on one line.
fn error_chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
