//! Sparse maps in tar archives: where a file's data segments lie, and how each format says so.
//!
//! - cocoon: PAX records `COCOON.sparse.map` = `[{"o": offset, "l": length}, ...]` (or `null`
//!   for a file without data) and `COCOON.sparse.size` = the real size in decimal; the entry's
//!   data is the segments' bytes concatenated.
//! - GNU PAX 1.0: records `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name`,
//!   `GNU.sparse.realsize`; the map is at the start of the entry's data, in decimal lines
//!   (count, then offset and length of each segment), padded with NULs to a 512-byte block.
//!   GNU tar takes the extracted size from the last segment's end, so a file that ends in a hole
//!   gets a final `(realsize, 0)` segment.
//! - GNU PAX 0.0 (repeated `GNU.sparse.offset` / `GNU.sparse.numbytes`) and 0.1
//!   (`GNU.sparse.map` = "o,l,o,l,..."), with `GNU.sparse.size`: read only.
//!
//! Every map read from an archive is checked before a byte is written: segments in order, not
//! overlapping, inside the real size, adding up to the entry's data size.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// Where a data segment of a sparse file lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Segment {
    /// Offset in the real file.
    #[serde(rename = "o")]
    pub(crate) offset: u64,
    /// Length in bytes.
    #[serde(rename = "l")]
    pub(crate) length: u64,
}

/// The tar block size; a GNU 1.0 map is padded to it.
const BLOCK: usize = 512;

/// Longest GNU 1.0 map text accepted: 1 MiB holds about 40,000 segments.
const MAX_GNU_MAP: usize = 1 << 20;

/// Why a map is refused.
pub(crate) type MapError = &'static str;

/// Checks that `segments` are sorted, do not overlap, lie inside `real_size`, and add up to
/// `data_size`, the bytes the entry carries.
pub(crate) fn validate(
    segments: &[Segment],
    real_size: u64,
    data_size: u64,
) -> Result<(), MapError> {
    let mut end = 0u64;
    let mut total = 0u64;
    for s in segments {
        if s.offset < end {
            return Err("sparse map is unsorted or overlapping");
        }
        end = s
            .offset
            .checked_add(s.length)
            .ok_or("sparse map overflows")?;
        if end > real_size {
            return Err("sparse map reaches past the file's real size");
        }
        total = total.checked_add(s.length).ok_or("sparse map overflows")?;
    }
    if total != data_size {
        return Err("sparse map lengths do not add up to the entry's size");
    }
    Ok(())
}

/// Parses a decimal size as PAX records carry it.
pub(crate) fn parse_size(text: &str) -> Result<u64, MapError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("sparse size is not a decimal number");
    }
    text.parse().map_err(|_| "sparse size is out of range")
}

/// `COCOON.sparse.map`: a JSON array of segments, or `null` for none.
pub(crate) fn parse_cocoon_map(text: &[u8]) -> Result<Vec<Segment>, MapError> {
    let map: Option<Vec<Segment>> =
        serde_json::from_slice(text).map_err(|_| "COCOON.sparse.map is not a JSON segment list")?;
    Ok(map.unwrap_or_default())
}

/// `COCOON.sparse.map` for `segments`, as cocoon's Go writer emits it (`null` when empty).
pub(crate) fn cocoon_map(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return "null".to_string();
    }
    serde_json::to_string(segments).expect("segments of integers serialize")
}

/// `GNU.sparse.map` of format 0.1: "offset,length,offset,length,...".
pub(crate) fn parse_gnu_01_map(text: &str) -> Result<Vec<Segment>, MapError> {
    let numbers: Vec<u64> = text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(parse_size)
        .collect::<Result<_, _>>()?;
    pairs(&numbers)
}

/// Segments from a flat list of offset, length, offset, length, ...
pub(crate) fn pairs(numbers: &[u64]) -> Result<Vec<Segment>, MapError> {
    if !numbers.len().is_multiple_of(2) {
        return Err("sparse map has an offset without a length");
    }
    Ok(numbers
        .chunks_exact(2)
        .map(|p| Segment {
            offset: p[0],
            length: p[1],
        })
        .collect())
}

/// The GNU 1.0 map block(s) for `segments` of a file of `real_size` bytes, padded to 512 bytes.
/// A file that ends in a hole, or has no data, gets a final `(real_size, 0)` segment.
pub(crate) fn gnu_10_map(segments: &[Segment], real_size: u64) -> Vec<u8> {
    let mut all = segments.to_vec();
    if all.last().is_none_or(|s| s.offset + s.length < real_size) {
        all.push(Segment {
            offset: real_size,
            length: 0,
        });
    }
    let mut text = format!("{}\n", all.len());
    for s in &all {
        text.push_str(&format!("{}\n{}\n", s.offset, s.length));
    }
    let mut bytes = text.into_bytes();
    bytes.resize(bytes.len().next_multiple_of(BLOCK), 0);
    bytes
}

/// Reads a GNU 1.0 map from the start of an entry's data; returns the segments and the bytes
/// the map took (a multiple of 512). A `(real_size, 0)` end marker is dropped.
pub(crate) fn read_gnu_10_map(data: &mut impl Read) -> io::Result<(Vec<Segment>, u64)> {
    let mut text = Vec::new();
    let mut parsed = 0; // bytes of `text` already parsed as whole lines
    let mut numbers: Vec<u64> = Vec::new();
    let mut block = [0u8; BLOCK];
    loop {
        data.read_exact(&mut block)?;
        text.extend_from_slice(&block);
        if text.len() > MAX_GNU_MAP {
            return Err(bad("GNU sparse map is too long"));
        }
        while let Some(newline) = text[parsed..].iter().position(|&b| b == b'\n') {
            let line = &text[parsed..parsed + newline];
            parsed += newline + 1;
            let line = std::str::from_utf8(line).map_err(|_| bad("GNU sparse map is not text"))?;
            numbers.push(parse_size(line).map_err(bad)?);
            let count = numbers[0];
            if count > (MAX_GNU_MAP / 4) as u64 {
                return Err(bad("GNU sparse map is too long"));
            }
            if numbers.len() as u64 == 1 + 2 * count {
                let mut segments = pairs(&numbers[1..]).map_err(bad)?;
                if segments.last().is_some_and(|s| s.length == 0) {
                    segments.pop();
                }
                return Ok((segments, text.len() as u64));
            }
        }
        if text[parsed..].first() == Some(&0) {
            return Err(bad("GNU sparse map ends before its last segment"));
        }
    }
}

fn bad(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, length: u64) -> Segment {
        Segment { offset, length }
    }

    #[test]
    fn validation_refuses_bad_maps() {
        assert!(validate(&[seg(0, 10), seg(20, 5)], 30, 15).is_ok());
        assert!(validate(&[], 30, 0).is_ok());
        assert_eq!(
            validate(&[seg(20, 5), seg(0, 10)], 30, 15),
            Err("sparse map is unsorted or overlapping")
        );
        assert_eq!(
            validate(&[seg(0, 10), seg(5, 10)], 30, 20),
            Err("sparse map is unsorted or overlapping")
        );
        assert_eq!(
            validate(&[seg(25, 10)], 30, 10),
            Err("sparse map reaches past the file's real size")
        );
        assert_eq!(
            validate(&[seg(0, 10)], 30, 11),
            Err("sparse map lengths do not add up to the entry's size")
        );
        assert!(validate(&[seg(u64::MAX, 2)], u64::MAX, 2).is_err());
    }

    #[test]
    fn sizes_must_be_decimal() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        for bad in ["", "-1", "0x10", "1e9", "12a", "99999999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cocoon_maps_read_null_and_write_as_go_does() {
        assert_eq!(parse_cocoon_map(b"null").unwrap(), []);
        assert_eq!(
            parse_cocoon_map(br#"[{"o":4096,"l":512}]"#).unwrap(),
            [seg(4096, 512)]
        );
        assert!(parse_cocoon_map(b"[{\"o\":\"x\"}]").is_err());
        assert_eq!(cocoon_map(&[]), "null");
        assert_eq!(cocoon_map(&[seg(1, 2)]), r#"[{"o":1,"l":2}]"#);
    }

    #[test]
    fn gnu_10_map_round_trips_and_marks_a_trailing_hole() {
        let map = gnu_10_map(&[seg(0, 4096), seg(8192, 4096)], 65536);
        assert_eq!(map.len(), 512);
        assert!(map.starts_with(b"3\n0\n4096\n8192\n4096\n65536\n0\n\0"));
        let (segments, used) = read_gnu_10_map(&mut &map[..]).unwrap();
        assert_eq!(segments, [seg(0, 4096), seg(8192, 4096)]);
        assert_eq!(used, 512);
        // A file whose data runs to its end needs no marker.
        let map = gnu_10_map(&[seg(0, 100)], 100);
        assert!(map.starts_with(b"1\n0\n100\n\0"));
        // A file with no data is one marker.
        assert!(gnu_10_map(&[], 7).starts_with(b"1\n7\n0\n\0"));
    }

    #[test]
    fn a_gnu_10_map_longer_than_a_block_reads() {
        let segments: Vec<Segment> = (0..200).map(|i| seg(i * 8192, 4096)).collect();
        let map = gnu_10_map(&segments, 200 * 8192);
        assert!(map.len() > 512);
        let (read, used) = read_gnu_10_map(&mut &map[..]).unwrap();
        assert_eq!(read, segments);
        assert_eq!(used as usize, map.len());
    }

    #[test]
    fn a_number_split_across_blocks_reads_whole_and_truncated_maps_fail() {
        // The offset is written with leading zeros so its digits straddle byte 512.
        let mut text = format!("1\n{}12345\n10\n", "0".repeat(508)).into_bytes();
        text.resize(1024, 0);
        let (segments, used) = read_gnu_10_map(&mut &text[..]).unwrap();
        assert_eq!(segments, [seg(12345, 10)]);
        assert_eq!(used, 1024);
        let short = b"3\n0\n10\n";
        let mut block = short.to_vec();
        block.resize(512, 0);
        assert!(read_gnu_10_map(&mut &block[..]).is_err());
        assert!(
            read_gnu_10_map(&mut &b"1\n0\n"[..]).is_err(),
            "a truncated block"
        );
    }

    #[test]
    fn gnu_01_map_parses() {
        assert_eq!(
            parse_gnu_01_map("0,10,20,5").unwrap(),
            [seg(0, 10), seg(20, 5)]
        );
        assert!(parse_gnu_01_map("0,10,20").is_err());
        assert!(parse_gnu_01_map("0,x").is_err());
    }
}
