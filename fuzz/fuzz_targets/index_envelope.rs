//! Index and envelope parsing on hostile bytes: refused or parsed, never a panic, and what
//! parses reads back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    snapstore::fuzzing::parse_index_and_envelope(data);
});
