//! One test per input the fuzzers in `fuzz/` found to crash, kept in `fuzz/regressions/`: each
//! must now be refused or parsed without a panic, and what parses must read back as itself.

use snapstore::fuzzing::{import_tar, parse_index_and_envelope};

/// A timestamp on a leap second (`10:00:60Z`) was written back one tenth of a second later
/// (`10:00:60.1Z`): chrono keeps the leap second in the nanoseconds, which were printed as a
/// fraction. Found by `index_envelope`.
#[test]
fn a_leap_second_timestamp_round_trips() {
    let parsed = parse_index_and_envelope(include_bytes!(
        "../fuzz/regressions/index_envelope-leap-second.json"
    ));
    // It must still parse as an index, or the round trip it once failed is not being tested.
    assert!(parsed.index, "{parsed:?}");
}

/// Every kept input, through both targets: none may panic.
#[test]
fn every_kept_input_is_handled_by_both_targets() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for entry in std::fs::read_dir(dir).expect("fuzz/regressions lists") {
        let path = entry.expect("a directory entry").path();
        let bytes = std::fs::read(&path).expect("a kept input reads");
        parse_index_and_envelope(&bytes);
        let staging = tempfile::tempdir().expect("a scratch dir");
        let _ = import_tar(&bytes, staging.path());
    }
}
