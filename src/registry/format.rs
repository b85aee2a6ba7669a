//! The artifact a push writes and a pull reads: an OCI image manifest v1.1 whose config blob maps
//! every file of the snapshot onto chunk layers. `docs/registry-format.md` is the reference for
//! other tools; this module is its parser, and nothing it accepts can write outside the staging
//! dir or past a file's size.
//!
//! ```text
//! manifest  artifactType application/vnd.snapstore.snapshot.v1+json
//!   config  application/vnd.snapstore.snapshot.config.v1+json
//!           { "version": 1, "chunk_size": 67108864, "envelope": { snapshot.json },
//!             "files": [ { "name": "disk.raw", "size": 8589934592, "chunks": [
//!               { "offset": 0, "length": 67108864, "runs": [[0, 4096], [1048576, 65536]],
//!                 "digest": "sha256:<data>", "layer": "sha256:<blob>" } ] } ] }
//!   layers  application/vnd.snapstore.chunk.v1.zstd (or .v1 uncompressed), one per distinct
//!           blob: a window's runs, back to back, compressed
//! ```
//!
//! A file is cut into windows of `chunk_size` at fixed offsets. A chunk lists a window's data
//! runs (absolute offsets; holes and all-zero 4 KiB blocks left out), the sha256 of those runs'
//! bytes back to back (`digest`) and the blob that carries them (`layer`). A window without
//! data has no chunk.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::envelope::{ENVELOPE_FILE, Envelope};
use crate::registry::digest::Digest;
use crate::types::is_plain_name;

/// The manifest's media type.
pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The manifest's `artifactType`.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.snapstore.snapshot.v1+json";
/// The config blob's media type.
pub(crate) const CONFIG_TYPE: &str = "application/vnd.snapstore.snapshot.config.v1+json";
/// A chunk blob compressed with zstd.
pub(crate) const LAYER_ZSTD: &str = "application/vnd.snapstore.chunk.v1.zstd";
/// A chunk blob stored as it is.
pub(crate) const LAYER_RAW: &str = "application/vnd.snapstore.chunk.v1";

/// The only config version there is.
const CONFIG_VERSION: u64 = 1;
/// The largest config blob a pull reads.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The largest manifest a pull reads: registries refuse larger ones.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The most layers a pull accepts.
pub(crate) const MAX_LAYERS: usize = 100_000;
/// The largest apparent file size a pull accepts: 256 TiB.
pub(crate) const MAX_FILE_SIZE: u64 = 1 << 48;
/// The granularity of zero detection: an all-zero block of this size is left out of a run.
pub(crate) const BLOCK: u64 = 4096;
/// The smallest window `--chunk-size` takes.
pub const MIN_CHUNK_SIZE: u64 = 16 << 20;
/// The largest window `--chunk-size` takes.
pub const MAX_CHUNK_SIZE: u64 = 256 << 20;
/// The window a push cuts files into unless told otherwise.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// An OCI image manifest, as much of it as snapstore writes and reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) schema_version: u32,
    #[serde(default)]
    pub(crate) media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) artifact_type: Option<String>,
    pub(crate) config: Descriptor,
    #[serde(default)]
    pub(crate) layers: Vec<Descriptor>,
}

impl Manifest {
    /// The manifest of a snapshot whose config blob is `config` and whose chunks are `layers`.
    pub(crate) fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: MANIFEST_TYPE.to_string(),
            artifact_type: Some(ARTIFACT_TYPE.to_string()),
            config,
            layers,
        }
    }

    /// Parses manifest bytes and checks that they describe a snapstore snapshot.
    ///
    /// # Errors
    /// The reason, for [`Error::NotAnArtifact`](crate::Error::NotAnArtifact).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("its manifest is not an OCI image manifest ({e})"))?;
        if manifest.schema_version != 2 {
            return Err(format!(
                "manifest schemaVersion {}",
                manifest.schema_version
            ));
        }
        if manifest.config.media_type != CONFIG_TYPE {
            return Err(format!(
                "its config is {:?}, not {CONFIG_TYPE}",
                manifest.config.media_type
            ));
        }
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(format!(
                "its config is {} bytes, over the limit of {MAX_CONFIG_BYTES}",
                manifest.config.size
            ));
        }
        if manifest.layers.len() > MAX_LAYERS {
            return Err(format!(
                "{} layers, over the limit of {MAX_LAYERS}",
                manifest.layers.len()
            ));
        }
        for layer in &manifest.layers {
            if layer.media_type != LAYER_ZSTD && layer.media_type != LAYER_RAW {
                return Err(format!("a layer of type {:?}", layer.media_type));
            }
        }
        Ok(manifest)
    }

    /// The manifest's bytes: compact JSON, fields in a fixed order, so that the same snapshot
    /// always gives the same digest.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest of strings and numbers serializes")
    }
}

/// One window of a file with data in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// Where the window starts: a multiple of the chunk size.
    pub(crate) offset: u64,
    /// The window's length: the chunk size, or less for a file's last window.
    pub(crate) length: u64,
    /// The data runs, `[offset, length]` in the file, sorted, apart and inside the window.
    pub(crate) runs: Vec<[u64; 2]>,
    /// sha256 of the runs' bytes back to back.
    pub(crate) digest: Digest,
    /// Where the source file had blocks in the window (its data segments, which may hold zero
    /// blocks the runs leave out), `[offset, length]`: a hint, not part of the data. A pull
    /// writes these ranges whole, zeros and all, so the copy is allocated as its source was
    /// and written in large pieces; what lies outside them stays a hole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) extents: Vec<[u64; 2]>,
}

impl Chunk {
    /// Whether two chunks describe the same bytes, whatever their allocation hints.
    pub(crate) fn same_data(&self, other: &Chunk) -> bool {
        (self.offset, self.length, &self.runs, self.digest)
            == (other.offset, other.length, &other.runs, other.digest)
    }

    /// The bytes of data the runs hold.
    pub(crate) fn data_len(&self) -> u64 {
        self.runs.iter().map(|[_, len]| len).sum()
    }

    /// The end of the window.
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.length
    }

    /// The runs relative to the window's start: two windows with the same digest and the same
    /// relative runs hold the same bytes.
    pub(crate) fn shape(&self) -> Vec<[u64; 2]> {
        self.runs
            .iter()
            .map(|[o, l]| [o - self.offset, *l])
            .collect()
    }
}

/// A chunk of the artifact: a window and the layer carrying its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkMap {
    #[serde(flatten)]
    pub(crate) chunk: Chunk,
    /// The layer blob's digest.
    pub(crate) layer: Digest,
}

/// One file of the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileMap {
    pub(crate) name: String,
    /// Its apparent size.
    pub(crate) size: u64,
    pub(crate) chunks: Vec<ChunkMap>,
}

/// The config blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ArtifactConfig {
    pub(crate) version: u64,
    pub(crate) chunk_size: u64,
    /// The snapshot's envelope, as `snapshot.json` holds it.
    pub(crate) envelope: Envelope,
    /// The data files, in name order.
    pub(crate) files: Vec<FileMap>,
}

impl ArtifactConfig {
    /// A version-1 config.
    pub(crate) fn new(chunk_size: u64, envelope: Envelope, files: Vec<FileMap>) -> ArtifactConfig {
        ArtifactConfig {
            version: CONFIG_VERSION,
            chunk_size,
            envelope,
            files,
        }
    }

    /// The config's bytes: compact JSON in a fixed field order.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a config of strings and numbers serializes")
    }

    /// Parses a config blob and checks it against itself and against `layers`, the manifest's
    /// layer descriptors: every name a plain one and unique, every size within bounds, every
    /// run inside its window and its file, every chunk's layer among `layers`, and a raw
    /// layer's size equal to its runs.
    ///
    /// # Errors
    /// The reason, for [`Error::ArtifactInvalid`](crate::Error::ArtifactInvalid).
    pub(crate) fn parse(bytes: &[u8], layers: &[Descriptor]) -> Result<ArtifactConfig, String> {
        let config: ArtifactConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("config does not parse: {e}"))?;
        config.check(layers)?;
        Ok(config)
    }

    fn check(&self, layers: &[Descriptor]) -> Result<(), String> {
        if self.version != CONFIG_VERSION {
            return Err(format!("config version {} (want 1)", self.version));
        }
        let size = self.chunk_size;
        if !valid_chunk_size(size) {
            return Err(format!(
                "chunk size {size} (want a multiple of 4096 from 16 to 256 MiB)"
            ));
        }
        let by_digest: BTreeMap<Digest, &Descriptor> =
            layers.iter().map(|l| (l.digest, l)).collect();
        let mut names = HashSet::new();
        for file in &self.files {
            let name = &file.name;
            if !is_plain_name(name) || name == ENVELOPE_FILE {
                return Err(format!("file name {name:?} is not one plain name"));
            }
            if !names.insert(name.as_str()) {
                return Err(format!("file name {name:?} appears twice"));
            }
            if file.size > MAX_FILE_SIZE {
                return Err(format!(
                    "file {name:?} has an apparent size of {} bytes, over the limit of {MAX_FILE_SIZE}",
                    file.size
                ));
            }
            let mut next = 0;
            for map in &file.chunks {
                let chunk = &map.chunk;
                check_chunk(chunk, file.size, size, next)
                    .map_err(|why| format!("file {name:?}, window at {}: {why}", chunk.offset))?;
                next = chunk.end();
                let Some(layer) = by_digest.get(&map.layer) else {
                    return Err(format!(
                        "file {name:?}, window at {}: layer {} is not in the manifest",
                        chunk.offset, map.layer
                    ));
                };
                if layer.media_type == LAYER_RAW && layer.size != chunk.data_len() {
                    return Err(format!(
                        "file {name:?}, window at {}: raw layer of {} bytes for {} bytes of runs",
                        chunk.offset,
                        layer.size,
                        chunk.data_len()
                    ));
                }
            }
        }
        if let Some(listed) = &self.envelope.files {
            let mut listed: Vec<&str> = listed.iter().map(String::as_str).collect();
            let mut ours: Vec<&str> = names.into_iter().collect();
            listed.sort_unstable();
            ours.sort_unstable();
            if listed != ours {
                return Err("the envelope lists other files than the config maps".into());
            }
        }
        Ok(())
    }
}

/// Whether files may be cut into windows of `size`: a multiple of 4 KiB from 16 to 256 MiB.
pub(crate) fn valid_chunk_size(size: u64) -> bool {
    (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) && size.is_multiple_of(BLOCK)
}

/// Checks one chunk of a file of `file_size` cut into windows of `window`, the previous chunk
/// having ended at `next`.
fn check_chunk(chunk: &Chunk, file_size: u64, window: u64, next: u64) -> Result<(), String> {
    if !chunk.offset.is_multiple_of(window) || chunk.offset < next {
        return Err("window not on its own boundary, or out of order".into());
    }
    if chunk.offset >= file_size {
        return Err(format!("window past the file's size {file_size}"));
    }
    if chunk.length != window.min(file_size - chunk.offset) {
        return Err(format!("window length {}", chunk.length));
    }
    if chunk.runs.is_empty() {
        return Err("no runs".into());
    }
    check_ranges(chunk, &chunk.runs, "run")?;
    check_ranges(chunk, &chunk.extents, "extent")
}

/// Checks that `ranges` are sorted, apart, non-empty and inside the chunk's window.
fn check_ranges(chunk: &Chunk, ranges: &[[u64; 2]], what: &str) -> Result<(), String> {
    let mut pos = chunk.offset;
    for &[start, len] in ranges {
        let end = start
            .checked_add(len)
            .ok_or_else(|| format!("{what} overflows"))?;
        if len == 0 || start < pos || end > chunk.end() {
            return Err(format!(
                "{what} [{start}, {len}] overlaps another or leaves the window"
            ));
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Config;

    const MIB: u64 = 1 << 20;

    fn layer(n: u8, media_type: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(&[n]),
            size,
        }
    }

    fn chunk(offset: u64, length: u64, runs: Vec<[u64; 2]>, layer: u8) -> ChunkMap {
        ChunkMap {
            chunk: Chunk {
                offset,
                length,
                runs,
                digest: Digest::of(b"data"),
                extents: vec![[offset, length]],
            },
            layer: Digest::of(&[layer]),
        }
    }

    fn config(files: Vec<FileMap>) -> ArtifactConfig {
        let names = files.iter().map(|f| f.name.clone()).collect();
        ArtifactConfig::new(16 * MIB, Envelope::new(Config::default(), names), files)
    }

    fn file(name: &str, size: u64, chunks: Vec<ChunkMap>) -> FileMap {
        FileMap {
            name: name.into(),
            size,
            chunks,
        }
    }

    fn check(files: Vec<FileMap>) -> Result<ArtifactConfig, String> {
        let layers = [layer(1, LAYER_ZSTD, 10), layer(2, LAYER_RAW, 4096)];
        ArtifactConfig::parse(&config(files).to_bytes(), &layers)
    }

    #[test]
    fn a_well_formed_config_round_trips() {
        let files = vec![
            file(
                "disk.raw",
                40 * MIB,
                vec![
                    chunk(0, 16 * MIB, vec![[0, 4096], [MIB, 8192]], 1),
                    chunk(32 * MIB, 8 * MIB, vec![[32 * MIB, 4096]], 2),
                ],
            ),
            file("empty", 0, vec![]),
        ];
        let parsed = check(files.clone()).expect("valid");
        assert_eq!(parsed.files, files);
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in ["/etc/passwd", "../x", "a/b", "..", ".", "", "snapshot.json"] {
            let err = check(vec![file(name, 0, vec![])]).expect_err(name);
            assert!(err.contains("plain name"), "{name}: {err}");
        }
        // JSON strings are Unicode: a name that is not UTF-8 can only come as a lone surrogate.
        let layers = [layer(1, LAYER_ZSTD, 10)];
        let bytes = br#"{"version":1,"chunk_size":16777216,"envelope":{"config":{"name":""},"version":1},"files":[{"name":"disk\udcff","size":0,"chunks":[]}]}"#;
        let err = ArtifactConfig::parse(bytes, &layers).expect_err("not UTF-8");
        assert!(err.contains("does not parse"), "{err}");
        let twice = vec![file("a", 0, vec![]), file("a", 0, vec![])];
        assert!(check(twice).expect_err("dup").contains("twice"));
    }

    #[test]
    fn sizes_and_runs_out_of_bounds_are_refused() {
        let huge = vec![file("d", 1 << 50, vec![])];
        assert!(check(huge).expect_err("1 PiB").contains("over the limit"));
        let cases = [
            (vec![[0, 8192], [4096, 4096]], "overlaps"),
            (vec![[4096, 4096], [0, 4096]], "overlaps"),
            (vec![[16 * MIB - 4096, 8192]], "leaves the window"),
            (vec![[0, 0]], "overlaps"),
            (vec![[u64::MAX - 1, 4096]], "overflows"),
            (vec![], "no runs"),
        ];
        let mut odd = chunk(0, 16 * MIB, vec![[0, 1]], 1);
        odd.chunk.extents = vec![[4096, 4096], [0, 4096]];
        let err = check(vec![file("d", 32 * MIB, vec![odd])]).expect_err("extents");
        assert!(err.contains("extent"), "{err}");
        for (runs, want) in cases {
            let err = check(vec![file(
                "d",
                32 * MIB,
                vec![chunk(0, 16 * MIB, runs.clone(), 1)],
            )])
            .expect_err("bad runs");
            assert!(err.contains(want), "{runs:?}: {err}");
        }
        // A run past the file's size: the last window is shorter than the chunk size.
        let past = vec![file(
            "d",
            20 * MIB,
            vec![chunk(16 * MIB, 4 * MIB, vec![[20 * MIB, 4096]], 1)],
        )];
        assert!(check(past).expect_err("past").contains("leaves the window"));
        let misplaced = vec![file(
            "d",
            32 * MIB,
            vec![chunk(4096, 16 * MIB, vec![[4096, 1]], 1)],
        )];
        assert!(check(misplaced).expect_err("offset").contains("boundary"));
        let beyond = vec![file(
            "d",
            MIB,
            vec![chunk(16 * MIB, MIB, vec![[16 * MIB, 1]], 1)],
        )];
        assert!(check(beyond).expect_err("beyond").contains("past the file"));
    }

    #[test]
    fn layers_must_be_in_the_manifest_and_raw_ones_the_size_of_their_runs() {
        let unknown = vec![file(
            "d",
            16 * MIB,
            vec![chunk(0, 16 * MIB, vec![[0, 1]], 9)],
        )];
        assert!(
            check(unknown)
                .expect_err("unknown")
                .contains("not in the manifest")
        );
        let short = vec![file(
            "d",
            16 * MIB,
            vec![chunk(0, 16 * MIB, vec![[0, 1]], 2)],
        )];
        assert!(check(short).expect_err("raw").contains("raw layer"));
    }

    #[test]
    fn manifests_that_are_not_snapstore_artifacts_are_named_so() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        assert!(
            Manifest::parse(image)
                .expect_err("image")
                .contains("config is")
        );
        assert!(Manifest::parse(b"{}").is_err());
        assert!(Manifest::parse(b"\xff").is_err());
        let config = Descriptor {
            media_type: CONFIG_TYPE.into(),
            digest: Digest::of(b"c"),
            size: MAX_CONFIG_BYTES + 1,
        };
        let big = Manifest::new(config.clone(), vec![]).to_bytes();
        assert!(
            Manifest::parse(&big)
                .expect_err("big")
                .contains("over the limit")
        );
        let small = Descriptor { size: 10, ..config };
        let many = Manifest::new(small, vec![layer(1, LAYER_RAW, 1); MAX_LAYERS + 1]).to_bytes();
        assert!(Manifest::parse(&many).expect_err("many").contains("layers"));
    }
}
