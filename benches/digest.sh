#!/usr/bin/env bash
# fs-verity digest throughput: `composefs measure` against `fsverity digest`
# (fsverity-utils, Debian package `fsverity`) on the same file, warm cache.
#
#   benches/digest.sh                 # 1 GiB file, 5 runs per tool and algorithm
#   SIZE_MIB=256 RUNS=3 benches/digest.sh
#
# Builds the release binary, writes a random file under target/ (the disk the
# project is on), drops the page cache when run as root and reads the file
# once, so both tools hash from a warm cache: this compares hashing, not I/O.
# Reports the best time of each tool, throughput and the ratio ours/fsverity
# (below 1 means we are faster). Digests of both tools must agree.
#
# Until `composefs measure` exists, the `measure` example (same digest code)
# stands in for it.
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-5}
ALGS=${ALGS:-"sha256 sha512"}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

command -v fsverity >/dev/null || {
    echo "digest.sh: the fsverity command is missing (apt-get install fsverity)" >&2
    exit 1
}

echo "== building (cargo build --release)"
cargo build --release --quiet
cargo build --release --quiet --example measure

mkdir -p target
tmp=$(mktemp -d "$root/target/digest-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
file=$tmp/data

echo "== writing ${SIZE_MIB} MiB of random data to $file"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$file"
sync "$file" 2>/dev/null || sync

if [ "$(id -u)" = 0 ]; then
    echo 3 >/proc/sys/vm/drop_caches
    echo "== dropped the page cache (root)"
fi
cat "$file" >/dev/null # warm it: both tools read from the page cache

# Pick our command: `composefs measure`, else the example.
ours=(target/release/composefs measure --hash)
if ! out=$("${ours[@]}" sha256 "$file" 2>/dev/null) || ! [[ ${out%% *} =~ ^[0-9a-f]{64}$ ]]; then
    echo "== 'composefs measure' unavailable: using target/release/examples/measure"
    ours=(target/release/examples/measure --hash)
fi

now_ns() { date +%s%N; }

# best_of CMD...: run RUNS times, print the best wall time in seconds.
best_of() {
    local best="" t0 t1 dt i
    for ((i = 0; i < RUNS; i++)); do
        t0=$(now_ns)
        "$@" >/dev/null
        t1=$(now_ns)
        dt=$((t1 - t0))
        if [ -z "$best" ] || [ "$dt" -lt "$best" ]; then best=$dt; fi
    done
    awk -v ns="$best" 'BEGIN { printf "%.3f", ns / 1e9 }'
}

echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "== fsverity: $(fsverity --version 2>&1 | head -1); ours: ${ours[0]}; best of $RUNS runs"
printf '%-7s %14s %14s %12s %12s %8s\n' alg "fsverity (s)" "ours (s)" "fsverity MB/s" "ours MB/s" ratio

status=0
for alg in $ALGS; do
    ref=$(fsverity digest --hash-alg="$alg" "$file" | awk '{print $1}')
    got=$("${ours[@]}" "$alg" "$file" | awk '{print $1}')
    if [ "${ref#"$alg":}" != "$got" ]; then
        echo "digest mismatch for $alg: fsverity ${ref#"$alg":}, ours $got" >&2
        status=1
    fi
    t_ref=$(best_of fsverity digest --hash-alg="$alg" "$file")
    t_ours=$(best_of "${ours[@]}" "$alg" "$file")
    awk -v alg="$alg" -v r="$t_ref" -v o="$t_ours" -v mib="$SIZE_MIB" 'BEGIN {
        bytes = mib * 1048576
        printf "%-7s %14.3f %14.3f %12.0f %12.0f %8.2f\n", alg, r, o, bytes / r / 1e6, bytes / o / 1e6, o / r
    }'
done
exit "$status"
