//! Entry points for the cargo-fuzz targets in `fuzz/`: the parsers that take bytes from outside
//! (tar import, the index, the envelope, a registry artifact's manifest and config), reachable
//! without a whole store. Not a stable API.

use std::path::Path;

use crate::archive::{compress, import};
use crate::envelope::Envelope;
use crate::error::Result;
use crate::index::Index;
use crate::registry::format::{ArtifactConfig, Descriptor, LAYER_ZSTD, Manifest};

/// The real-size limit the tar target imports with, so a hostile map stays cheap to write.
const FUZZ_MAX_FILE_SIZE: u64 = 1 << 30;

/// Imports `bytes` (raw, gzip or zstd tar) into the empty dir `staging`, as `import` does.
///
/// # Errors
/// Whatever the import refuses; it must never panic.
pub fn import_tar(bytes: &[u8], staging: &Path) -> Result<()> {
    let label = Path::new("<fuzz input>");
    let input = compress::decompressor(Box::new(bytes))
        .map_err(|e| crate::error::Error::io("read archive", label, e))?;
    let progress = crate::progress::Progress::default();
    import::read_tar(input, label, staging, FUZZ_MAX_FILE_SIZE, false, &progress).map(drop)
}

/// What [`parse_index_and_envelope`] found `bytes` to be, so that a regression test can say
/// what its input must parse as, and not pass because it stopped parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// It parsed as an index with readable records, and round-tripped.
    pub index: bool,
    /// It parsed as an envelope, and round-tripped.
    pub envelope: bool,
}

/// Parses `bytes` as an index and as an envelope; what parses must survive a write and a read.
///
/// # Panics
/// When a parsed index or envelope does not read back as itself: a real bug.
pub fn parse_index_and_envelope(bytes: &[u8]) -> Parsed {
    let label = Path::new("<fuzz input>");
    let mut parsed = Parsed {
        index: false,
        envelope: false,
    };
    if let Ok(mut index) = Index::parse(bytes, label)
        && index.records().is_ok()
    {
        let first = from_fields(&mut index);
        let written = serde_json::to_vec(&first).expect("a parsed index serializes");
        let mut again = Index::parse(&written, label).expect("a written index parses");
        assert_eq!(from_fields(&mut again), first, "index round trip");
        parsed.index = true;
    }
    if let Ok(envelope) = Envelope::parse(bytes, label) {
        let again = Envelope::parse(&envelope.to_bytes(), Path::new("<fuzz output>"))
            .expect("a written envelope parses");
        assert_eq!(again, envelope, "envelope round trip");
        parsed.envelope = true;
    }
    parsed
}

/// The index as JSON with every record written from its parsed fields, not its raw bytes, so
/// that parsing and writing records is what a round trip tests.
fn from_fields(index: &mut Index) -> serde_json::Value {
    let ids: Vec<_> = index
        .complete_ids()
        .chain(index.pending_ids())
        .cloned()
        .collect();
    for id in &ids {
        index.get_mut(id).expect("every record parsed before");
    }
    let bytes = index.to_bytes(Path::new("<fuzz output>"));
    serde_json::from_slice(&bytes.expect("a parsed index serializes")).expect("it is JSON")
}

/// Parses `bytes` as a registry manifest and as an artifact config (against layers that carry
/// every digest the config names, so that the checks past the layer lookup run too). What the
/// config parser accepts must keep every run inside its file and read back as itself.
///
/// # Panics
/// When an accepted config breaks those promises: a real bug.
pub fn parse_registry_artifact(bytes: &[u8]) {
    let _ = Manifest::parse(bytes);
    let Ok(unchecked) = serde_json::from_slice::<ArtifactConfig>(bytes) else {
        return;
    };
    let layers: Vec<Descriptor> = unchecked
        .files
        .iter()
        .flat_map(|f| &f.chunks)
        .map(|c| Descriptor {
            media_type: LAYER_ZSTD.to_string(),
            digest: c.layer,
            size: 1,
        })
        .collect();
    let Ok(config) = ArtifactConfig::parse(bytes, &layers) else {
        return;
    };
    for file in &config.files {
        for chunk in &file.chunks {
            for [start, len] in &chunk.chunk.runs {
                assert!(
                    start + len <= file.size,
                    "run past the end of {:?}",
                    file.name
                );
            }
        }
    }
    let again =
        ArtifactConfig::parse(&config.to_bytes(), &layers).expect("a written config parses");
    assert_eq!(again, config, "config round trip");
}
