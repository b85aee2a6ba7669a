//! What tar import checks of its input before trusting it: that the stream is a tar at all
//! (and not some other compressor's, or no archive), that the numbers of the PAX records it
//! reads parse as GNU tar would parse them, that names are UTF-8, and that no error message
//! carries the input's control bytes to a terminal.

use std::collections::HashMap;
use std::io::{self, Read};

/// The PAX records snapstore reads as numbers (comma-separated, for the repeated GNU 0.0 ones),
/// each with the reason an entry is refused when one does not parse. (`COCOON.sparse.size` is
/// checked with its map, as "not a decimal".)
const NUMERIC_RECORDS: [(&str, &str); 8] = [
    ("size", "malformed PAX record: size"),
    ("GNU.sparse.size", "malformed PAX record: GNU.sparse.size"),
    (
        "GNU.sparse.realsize",
        "malformed PAX record: GNU.sparse.realsize",
    ),
    ("GNU.sparse.major", "malformed PAX record: GNU.sparse.major"),
    ("GNU.sparse.minor", "malformed PAX record: GNU.sparse.minor"),
    (
        "GNU.sparse.numblocks",
        "malformed PAX record: GNU.sparse.numblocks",
    ),
    (
        "GNU.sparse.offset",
        "malformed PAX record: GNU.sparse.offset",
    ),
    (
        "GNU.sparse.numbytes",
        "malformed PAX record: GNU.sparse.numbytes",
    ),
];

/// The reason to refuse an entry one of whose numeric PAX records is not a decimal number
/// that fits in 64 bits (`12x`, `-1`, empty, or past `u64::MAX`); `None` when all parse.
pub(super) fn malformed_number(pax: &HashMap<String, Vec<u8>>) -> Option<&'static str> {
    let number = |part: &[u8]| {
        !part.is_empty()
            && part.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(part).is_ok_and(|p| p.parse::<u64>().is_ok())
    };
    NUMERIC_RECORDS.iter().find_map(|(key, reason)| {
        let value = pax.get(*key)?;
        (!value.split(|&b| b == b',').all(number)).then_some(*reason)
    })
}

/// Size of a tar header block.
const BLOCK: usize = 512;

/// `input` with its first header checked, so that a stream that is no tar at all says so
/// instead of whatever its bytes make of a header field, and with a leading GNU volume label
/// (`V`: metadata about the medium, whose size field may be empty) skipped, as GNU tar and
/// libarchive skip it.
pub(super) fn first_header_checked<R: Read>(
    mut input: R,
) -> io::Result<io::Chain<io::Cursor<Vec<u8>>, R>> {
    let mut first = vec![0u8; BLOCK];
    let mut got = 0;
    while got < BLOCK {
        match input.read(&mut first[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    first.truncate(got);
    let zero = first.iter().all(|&b| b == 0);
    if got == BLOCK && !zero {
        let stored = octal(&first[148..156]);
        // The checksum counts its own field as eight spaces (POSIX ustar, "chksum").
        let sum: u64 = first
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if stored != Some(sum) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a tar archive (header checksum mismatch at byte 0)",
            ));
        }
        if first[156] == b'V' {
            let size = octal(&first[124..136]).unwrap_or(0);
            let skip = size.next_multiple_of(BLOCK as u64);
            io::copy(&mut (&mut input).take(skip), &mut io::sink())?;
            first.clear();
        }
    }
    Ok(io::Cursor::new(first).chain(input))
}

/// A header's octal number field: digits between optional spaces and NULs; empty is `None`.
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 8).ok()
}

/// An error whose message may quote the input's bytes (tar-rs quotes a header field it cannot
/// parse) with every control character and U+FFFD escaped, so none reaches a terminal.
pub(super) fn escape_error(e: io::Error) -> io::Error {
    let text = e.to_string();
    let clean = text
        .chars()
        .all(|c| !c.is_control() && c != char::REPLACEMENT_CHARACTER);
    if clean {
        return e;
    }
    let escaped: String = text
        .chars()
        .map(|c| match c {
            c if c.is_control() || c == char::REPLACEMENT_CHARACTER => {
                c.escape_unicode().to_string()
            }
            c => c.to_string(),
        })
        .collect();
    io::Error::new(e.kind(), escaped)
}

/// Why a name that is not UTF-8 is refused.
pub(super) const NOT_UTF8: &str = "names must be UTF-8 (the index and snapshot.json are JSON)";

/// Bytes shown as text: printable ASCII as it is, every other byte as `\xNN`.
pub(super) fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
