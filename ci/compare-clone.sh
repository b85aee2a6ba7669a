#!/usr/bin/env bash
# Whole-process wall time of snapstore against the cp a user would otherwise run, same dir, same run.
#
#   ci/compare-clone.sh DIR [reflink|sparse]
#
# Writes a 9 GiB-apparent VM snapshot dir in DIR (1 GiB memory, 8 GiB sparse disk with 256 MiB of
# scattered data, small metadata), saves it, then times with hyperfine:
#   reflink: snapstore clone / save / export --to-dir  vs  cp -a --reflink=always
#   sparse:  snapstore clone                          vs  cp -a --sparse=always
# and prints each snapstore figure as a ratio to cp's. Removes everything it wrote.
set -euo pipefail

dir=${1:?usage: $0 DIR [reflink|sparse]}
mode=${2:-reflink}
bin=$(realpath "${SNAPSTORE:-target/release/snapstore}")
runs=${RUNS:-10}
command -v hyperfine >/dev/null || { echo "hyperfine is needed (apt-get install hyperfine)" >&2; exit 1; }

work=$(mktemp -d "$dir/snapstore-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/src root=$work/root
mkdir "$src"

# Memory: 1 GiB, every other 2 MiB run random, the rest zero pages written as zeros.
for i in $(seq 0 255); do
    if (( i % 2 == 0 )); then head -c 2M /dev/urandom; else head -c 2M /dev/zero; fi
done > "$src/memory-range-0"
truncate -s 8G "$src/cow.raw"
for i in $(seq 0 15); do
    dd if=/dev/urandom of="$src/cow.raw" bs=1M count=16 seek=$((i * 512 + 37)) conv=notrunc status=none
done
echo '{"cpus":{"boot_vcpus":2},"memory":{"size":1073741824}}' > "$src/config.json"
echo '{"state":"paused"}' > "$src/state.json"
sync

id=$("$bin" --root "$root" save --from-dir "$src" --name base)
data=$root/snapshot/localfile/$id
fs=$(stat -f -c %T "$dir")
echo "filesystem: $fs ($dir); snapshot: $(du -sh --apparent-size "$src" | cut -f1) apparent, $(du -sh "$src" | cut -f1) allocated" >&2

# compare NAME SNAPSTORE_CMD CP_CMD PREPARE: prints "NAME snapstore_s cp_s ratio".
compare() {
    local name=$1 ours=$2 theirs=$3 prepare=$4 json=$work/$1.json
    hyperfine -N --style none --warmup 2 --runs "$runs" --prepare "$prepare" \
        --export-json "$json" "$ours" "$theirs" >/dev/null 2>&1 \
      || hyperfine --style none --warmup 2 --runs "$runs" --prepare "$prepare" \
        --export-json "$json" "$ours" "$theirs" >/dev/null
    python3 - "$name" "$json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
ours, theirs = (r["median"] for r in json.load(open(path))["results"])
print(f"{name:<22} snapstore {ours*1000:9.1f} ms   cp {theirs*1000:9.1f} ms   ratio {ours/theirs:5.2f}")
PY
}

clean="rm -rf $work/dst"
if [ "$mode" = reflink ]; then
    compare clone "$bin --root $root clone base --to-dir $work/dst" "cp -a --reflink=always $data $work/dst" "$clean"
    compare export-to-dir "$bin --root $root export base --to-dir $work/dst" "cp -a --reflink=always $data $work/dst" "$clean"
    compare save "$bin --root $root save --from-dir $src --name again" "cp -a --reflink=always $src $work/dst" \
        "sh -c '$bin --root $root rm again >/dev/null 2>&1; rm -rf $work/dst'"
else
    compare clone "$bin --root $root clone base --to-dir $work/dst" "cp -a --sparse=always $data $work/dst" "$clean"
fi
"$bin" --root "$root" --json clone base --to-dir "$work/methods" |
    python3 -c 'import json,sys; print("methods:", ", ".join(x["name"] + "=" + x["method"] for x in json.load(sys.stdin)["files"]))'
