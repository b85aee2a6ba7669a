//! Entry points for the cargo-fuzz targets in `fuzz/`: the parsers that take bytes from outside
//! (tar import, the index, the envelope), reachable without a whole store. Not a stable API.

use std::path::Path;

use crate::archive::{compress, import};
use crate::envelope::Envelope;
use crate::error::Result;
use crate::index::Index;

/// The real-size limit the tar target imports with, so a hostile map stays cheap to write.
const FUZZ_MAX_FILE_SIZE: u64 = 1 << 30;

/// Imports `bytes` (raw, gzip or zstd tar) into the empty dir `staging`, as `import` does.
///
/// # Errors
/// Whatever the import refuses; it must never panic.
pub fn import_tar(bytes: &[u8], staging: &Path) -> Result<()> {
    let label = Path::new("<fuzz input>");
    let input = compress::decompressor(Box::new(bytes))
        .map_err(|e| crate::Error::io("read archive", label, e))?;
    import::read_tar(
        input,
        label,
        staging,
        FUZZ_MAX_FILE_SIZE,
        &Default::default(),
    )
    .map(drop)
}

/// Parses `bytes` as an index and as an envelope; what parses must survive a write and a read.
///
/// # Panics
/// When a parsed index or envelope does not read back as itself: a real bug.
pub fn parse_index_and_envelope(bytes: &[u8]) {
    if let Ok(index) = serde_json::from_slice::<Index>(bytes) {
        let written = serde_json::to_vec(&index).expect("a parsed index serializes");
        let again: Index = serde_json::from_slice(&written).expect("a written index parses");
        assert_eq!(
            serde_json::to_value(&again).ok(),
            serde_json::to_value(&index).ok(),
            "index round trip"
        );
    }
    if let Ok(envelope) = Envelope::parse(bytes, Path::new("<fuzz input>")) {
        let again = Envelope::parse(&envelope.to_bytes(), Path::new("<fuzz output>"))
            .expect("a written envelope parses");
        assert_eq!(again, envelope, "envelope round trip");
    }
}
