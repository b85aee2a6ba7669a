#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 600), seeded with the shared fixtures and
# index/envelope/registry samples. A crash is saved under fuzz/artifacts/TARGET/; turn each into a
# regression test in tests/ before fixing it.
#
#   ci/fuzz.sh [SECONDS]        needs the nightly toolchain and `cargo install cargo-fuzz`
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
fixtures=../shared/fixtures/cocoon

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

mkdir -p fuzz/corpus/tar_import fuzz/corpus/index_envelope fuzz/corpus/registry_config
cp -f "$fixtures"/*.tar "$fixtures"/*.tar.gz fuzz/corpus/tar_import/ 2>/dev/null || true
printf '%s' '{"snapshots":{"A":{"id":"A","name":"base","created_at":"2026-07-01T10:00:00Z","data_dir":"/d","size_bytes":1,"pending":true}},"names":{"base":"A"}}' \
    > fuzz/corpus/index_envelope/index.json
printf '%s' '{"config":{"name":"base","cpu":2,"memory":1073741824},"version":1,"files":["mem","disk"]}' \
    > fuzz/corpus/index_envelope/envelope.json

printf '%s' '{"version":1,"chunk_size":16777216,"envelope":{"config":{"name":"base"},"version":1,"files":["disk"]},"files":[{"name":"disk","size":33554432,"chunks":[{"offset":16777216,"length":16777216,"runs":[[16777216,4096],[16785408,8192]],"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","layer":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}]}' \
    > fuzz/corpus/registry_config/config.json
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.snapstore.snapshot.v1+json","config":{"mediaType":"application/vnd.snapstore.snapshot.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":10},"layers":[]}' \
    > fuzz/corpus/registry_config/manifest.json

status=0
for target in tar_import index_envelope registry_config; do
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=1048576 -print_final_stats=1 \
        || status=$?
done
exit "$status"
