#!/usr/bin/env bash
# Runs a command with loop-mounted btrfs and XFS (reflink=1) scratch filesystems, and a small
# (256 MiB) ext4 one for running out of space, then removes them.
#
#   ci/with-cow-fs.sh cargo test
#
# Exports SNAPSTORE_TEST_BTRFS, SNAPSTORE_TEST_XFS and SNAPSTORE_TEST_SMALL (the mounts) and,
# once all mounts succeed, SNAPSTORE_REQUIRE_COW=1, which makes those tests fail instead of skip.
# Without root or loop devices it says `SKIPPED: <reason>` loudly and runs the command anyway,
# so the tests on the root filesystem (no reflink: the fallbacks) still run.
# Installs btrfs-progs, xfsprogs and docker-registry with apt-get when they are missing and it
# can; with docker-registry there, exports SNAPSTORE_REQUIRE_REGISTRY=1 (registry tests must run).
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi

size=${SNAPSTORE_COW_FS_SIZE:-16G}
work=""
mounted=()

cleanup() {
    for m in "${mounted[@]}"; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip() {
    echo "SKIPPED: $*" >&2
}

need_tools() {
    command -v mkfs.btrfs >/dev/null && command -v mkfs.xfs >/dev/null && return 0
    if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
        echo "installing btrfs-progs and xfsprogs" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq btrfs-progs xfsprogs; } >&2 || true
    fi
    command -v mkfs.btrfs >/dev/null && command -v mkfs.xfs >/dev/null
}

# The registry tests run against Debian's docker-registry (the CNCF distribution server) on
# loopback; the tests start and stop their own instances.
need_registry() {
    command -v docker-registry >/dev/null && return 0
    if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
        echo "installing docker-registry" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry; } >&2 || true
    fi
    command -v docker-registry >/dev/null
}
if need_registry; then
    export SNAPSTORE_REQUIRE_REGISTRY=1
else
    skip "docker-registry not installed and cannot be: the registry tests will not run"
fi

# mount_fs TYPE: makes an image, formats and loop-mounts it; prints the mount point.
mount_fs() {
    local type=$1 img="$work/$1.img" mnt="$work/mnt-$1"
    case $type in
        btrfs) truncate -s "$size" "$img" && mkfs.btrfs -q "$img" >&2 ;;
        xfs) truncate -s "$size" "$img" && mkfs.xfs -q -m reflink=1 "$img" >&2 ;;
        # No blocks reserved for root, so the tests (run as root) see the same free space.
        small) truncate -s 256M "$img" && mkfs.ext4 -q -F -m 0 "$img" >&2 ;;
    esac
    mkdir -p "$mnt"
    mount -o loop "$img" "$mnt" >&2
    echo "$mnt"
}

if [ "$(id -u)" -ne 0 ]; then
    skip "not root: cannot loop-mount btrfs and XFS; reflink tests will not run"
elif [ ! -e /dev/loop-control ]; then
    skip "no /dev/loop-control: this machine has no loop devices; reflink tests will not run"
elif ! need_tools; then
    skip "mkfs.btrfs or mkfs.xfs missing and could not be installed; reflink tests will not run"
else
    work=$(mktemp -d /var/tmp/snapstore-cowfs.XXXXXX)
    ok=1
    for type in btrfs xfs small; do
        if mnt=$(mount_fs "$type"); then
            mounted+=("$mnt")
            var=SNAPSTORE_TEST_$(echo "$type" | tr a-z A-Z)
            export "$var=$mnt"
            echo "$var=$mnt" >&2
        else
            skip "could not make or mount a $type image in $work"
            ok=0
        fi
    done
    if [ "$ok" -eq 1 ]; then
        export SNAPSTORE_REQUIRE_COW=1
    fi
fi

"$@"
