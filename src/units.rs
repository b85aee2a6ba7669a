//! Values as people read and write them, the same everywhere: sizes and durations as the
//! command line writes them (`bench`, import limits, gc), and paths as messages show them.
//!
//! Sizes are plain bytes or a number with `K`, `M`, `G`, `T` (also `KiB`, `MiB`, `GiB`, `TiB`),
//! powers of 1024 as `truncate` and `dd` read them. Durations are a number with `s`, `m`, `h`
//! or `d`.

use std::fmt::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// A path as a message shows it: see [`shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a Path);

/// `path` as a message shows it: control characters and backslashes escaped (`\n`, `\u{1b}`,
/// `\\`) and bytes that are not UTF-8 as `\xNN`, so that a name from an archive, a registry or
/// someone's directory can neither rewrite the terminal nor forge a line of output; everything
/// else, other scripts included, as it is.
pub fn shown(path: &Path) -> Shown<'_> {
    Shown(path)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.as_os_str().as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() || c == '\\' {
                    write!(f, "{}", c.escape_debug())?;
                } else {
                    f.write_char(c)?;
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Parses a size: `4096`, `64K`, `512MiB`, `8G`, `1T`.
///
/// # Errors
/// A message naming the text when it is not a size or overflows.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: use bytes or K, M, G, T (powers of 1024)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: no number"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a duration: `30s`, `15m`, `24h`, `7d`.
///
/// # Errors
/// A message naming the text when it is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: use s, m, h or d, as in 30s or 24h"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: no number"))?;
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        for bad in ["", "G", "1.5G", "-1", "10Q", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_s_m_h_d() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "30", "h", "1.5h", "3w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_shown_with_what_could_forge_a_line_escaped() {
        use std::ffi::OsStr;
        let show = |bytes: &[u8]| shown(Path::new(OsStr::from_bytes(bytes))).to_string();
        assert_eq!(
            show(b"/var/lib/caf\xc3\xa9/disk.raw"),
            "/var/lib/caf\u{e9}/disk.raw"
        );
        assert_eq!(show(b"a\nb\x1b[2Jc"), "a\\nb\\u{1b}[2Jc");
        assert_eq!(show(b"bad\xffname"), "bad\\xffname");
        assert_eq!(show(b"back\\slash"), "back\\\\slash");
    }
}
