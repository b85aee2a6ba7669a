#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 600), seeded with the shared fixtures and
# index/envelope samples. A crash is saved under fuzz/artifacts/TARGET/; turn each into a
# regression test in tests/ before fixing it.
#
#   ci/fuzz.sh [SECONDS]        needs the nightly toolchain and `cargo install cargo-fuzz`
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
fixtures=../shared/fixtures/cocoon

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

mkdir -p fuzz/corpus/tar_import fuzz/corpus/index_envelope
cp -f "$fixtures"/*.tar "$fixtures"/*.tar.gz fuzz/corpus/tar_import/ 2>/dev/null || true
printf '%s' '{"snapshots":{"A":{"id":"A","name":"base","created_at":"2026-07-01T10:00:00Z","data_dir":"/d","size_bytes":1,"pending":true}},"names":{"base":"A"}}' \
    > fuzz/corpus/index_envelope/index.json
printf '%s' '{"config":{"name":"base","cpu":2,"memory":1073741824},"version":1,"files":["mem","disk"]}' \
    > fuzz/corpus/index_envelope/envelope.json

status=0
for target in tar_import index_envelope; do
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=1048576 -print_final_stats=1 \
        || status=$?
done
exit "$status"
