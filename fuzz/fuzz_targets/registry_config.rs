//! A registry artifact's manifest and config on hostile bytes: refused or parsed, never a
//! panic; what parses keeps every run inside its file and reads back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    snapstore::fuzzing::parse_registry_artifact(data);
});
