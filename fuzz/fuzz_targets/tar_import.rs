//! Tar import on hostile bytes: any input is refused or imported, never a panic, and nothing
//! is written outside the staging dir.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir_in(scratch_root()).expect("scratch dir");
    let staging = scratch.path().join("staging");
    std::fs::create_dir(&staging).expect("staging dir");
    let _ = snapstore::fuzzing::import_tar(data, &staging);
    let outside: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("scratch dir lists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|name| name != "staging")
        .collect();
    assert!(
        outside.is_empty(),
        "import wrote outside staging: {outside:?}"
    );
});

/// tmpfs when there is one: the target writes files on every run.
fn scratch_root() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
