#!/usr/bin/env bash
# composefs diff of two stored ostree commits vs `diff -rq` over the two
# kernel-mounted images of the same commits, side by side.
#
#   benches/diff.sh [-n RUNS] [--copies=N] [--bin=PATH]
#
# Setup (untimed, cached under target/bench-work-diff/): the debootstrap
# minbase bookworm tree (benches/rootfs.sh; without its /dev nodes, which
# ostree cannot hold) committed with `ostree commit` as v1, and three
# variants of it, each committed on its own branch:
#
#   one    1 file changed
#   v2     ~370 paths: 200 files edited, 50 chmod'ed, 50 deleted, a new
#          directory /opt/bench-new with 50 files, 20 new files in /etc
#   many   every second file over 1 KiB edited, at most 2000 (~1800 on
#          minbase: a few bytes in the middle)
#
# --copies=N (default 1) makes v1 N copies of the tree (/copy1 … /copyN),
# the same changes spread over all of them: a bigger tree, the same
# change, to show what grows with what (cached separately).
#
# All four are pulled into a composefs repository (`composefs ostree
# pull`) and imaged (`composefs ostree create-image`) for kernel mounts
# (`composefs mount --kernel`: EROFS + overlayfs). Then RUNS times
# (default 5), for each pair v1→one, v1→v2, v1→many:
#
#   composefs   composefs diff v1 X >/dev/null
#   diff -rq    diff -rq --no-dereference MNT/v1 MNT/X >/dev/null
#
# timed with hyperfine, warm (after 2 warm-up runs) and cold (sync; echo 3
# >/proc/sys/vm/drop_caches before each run, then each tool's binary paged
# back in by running it once with --version: cold data, warm programs).
# The table shows medians in seconds and the ratio diff -rq / composefs.
# Needs root, hyperfine and python3. stdout: the table only.

set -euo pipefail
# Backtraces are a debugging aid: with RUST_BACKTRACE set, every error
# made on the way (name lookups that miss) walks the stack.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
runs=5
copies=1
prebuilt=""
usage() { echo "usage: $0 [-n RUNS] [--copies=N] [--bin=PATH]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; runs="$2"; shift ;;
        --copies=*) copies="${1#--copies=}" ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        *) usage ;;
    esac
    shift
done
[[ "$copies" =~ ^[1-9][0-9]*$ ]] || usage
log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (commits with owners, kernel mounts, dropping caches)"
command -v ostree >/dev/null || die "ostree missing (scripts/deps.sh installs it)"
command -v hyperfine >/dev/null || die "hyperfine missing (apt-get install hyperfine)"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
if [ -n "$prebuilt" ]; then built="$(realpath "$prebuilt")"; else
    cargo build --release --quiet >&2; built="$repo_root/target/release/composefs"; fi
mapfile -t inputs < <("$repo_root/benches/rootfs.sh")
rootfs="${inputs[0]%.tar}"
[ -d "$rootfs" ] || die "no root filesystem at $rootfs"

work="$repo_root/target/bench-work-diff"
[ "$copies" -eq 1 ] || work="$work-x$copies"
mkdir -p "$work"
bin="$work/composefs"; cp "$built" "$bin"
repo="$work/repo"
osrc="$work/ostree-src"
tree="$work/tree"
mnts=()
cleanup() {
    for m in "${mnts[@]}"; do
        if mountpoint -q "$m"; then "$bin" umount "$m" 2>/dev/null || umount -l "$m" || true; fi
    done
    return 0
}
trap cleanup EXIT

# A fresh copy of v1 in $tree (ostree holds no device nodes, fifos, sockets).
fresh_tree() {
    rm -rf "$tree"
    if [ "$copies" -eq 1 ]; then
        cp -a "$rootfs" "$tree"
    else
        mkdir "$tree"
        for i in $(seq 1 "$copies"); do cp -a "$rootfs" "$tree/copy$i"; done
    fi
    find "$tree" -name .bench-complete -delete
    find "$tree" \( -type b -o -type c -o -type p -o -type s \) -delete
}
commit() { ostree commit --repo="$osrc" -b "$1" --subject "bench $1" "$tree" >/dev/null; }
# Regular files of at least 1 KiB whose path contains $1, every $2-th, at most $3.
pick() { find "$tree" -type f -size +1k -path "*$1*" | sort | awk -v k="$2" -v n="$3" 'NR % k == 0 && c < n { print; c++ }'; }
poke() { while read -r f; do printf 'composefs-bench' | dd of="$f" bs=1 seek=512 conv=notrunc status=none; done; }

# .ready-2: commit streams with stored frames (older caches are rebuilt).
if [ ! -f "$work/.ready-2" ]; then
    log "building the commits (ostree commit of $rootfs and three variants)"
    rm -rf "$repo" "$osrc"
    ostree init --repo="$osrc" --mode=archive
    fresh_tree; commit v1
    # one: a single file.
    pick /usr/bin/ 1 1 | poke; commit one
    fresh_tree
    # v2: a few hundred paths of every kind.
    pick /usr/share/ $((11 * copies)) 200 | while read -r f; do echo "# edited by benches/diff.sh" >>"$f"; done
    pick /usr/bin/ $((3 * copies)) 50 | xargs -d "\n" chmod 0700
    pick /usr/lib/ $((13 * copies)) 50 | xargs -d "\n" rm -f
    mkdir -p "$tree/opt/bench-new"
    for i in $(seq -w 1 50); do head -c $((10#$i * 300)) /dev/urandom >"$tree/opt/bench-new/file-$i"; done
    mkdir -p "$tree/etc"
    for i in $(seq -w 1 20); do echo "setting $i" >"$tree/etc/bench-new-$i.conf"; done
    commit v2
    fresh_tree
    # many: ~2000 files.
    pick / $((2 * copies)) 2000 | poke; commit many
    rm -rf "$tree"
    "$bin" --repo "$repo" init >/dev/null
    for c in v1 one v2 many; do
        "$bin" --repo "$repo" ostree pull "$osrc" "$c" --name "$c" >/dev/null
        "$bin" --repo "$repo" ostree create-image "$c" --image-name "img-$c" >/dev/null
    done
    touch "$work/.ready-2"
fi

for c in v1 one v2 many; do
    m="$work/mnt-$c"; mkdir -p "$m"
    mountpoint -q "$m" && "$bin" umount "$m"
    "$bin" --repo "$repo" mount --kernel "img-$c" "$m"
    mnts+=("$m")
done

# Times come from hyperfine (run directly, no shell: -N), the usual tool
# for timing commands; both tools are timed the same way. Warm: after 2
# warm-up runs. Cold data: before each run every cache is dropped, then
# both programs run once on nothing so their own binaries are back in
# memory (composefs's 9.5 MB of text costs ~20 ms to page in cold, GNU
# diff's 0.2 MB nothing; what is measured is reading the two trees, not
# loading the tool).
cold="sh -c 'sync; echo 3 >/proc/sys/vm/drop_caches; $bin --version >/dev/null; diff --version >/dev/null'"
results="$work/results"; : >"$results"

pairs=(one v2 many)
for p in "${pairs[@]}"; do
    n=$("$bin" --repo "$repo" diff v1 "$p" | wc -l || true)
    nrq=$(diff -rq --no-dereference "$work/mnt-v1" "$work/mnt-$p" | wc -l || true)
    echo "$p paths $n" >>"$results"
    echo "$p rq_lines $nrq" >>"$results"
    log "v1 -> $p: composefs diff lists $n paths, diff -rq prints $nrq lines"
done
# Medians of a hyperfine JSON export, one line per command: "ours" then "theirs".
medians() {
    python3 -c 'import json, statistics, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("%.4f" % statistics.median(r["times"]))' "$1"
}
for p in "${pairs[@]}"; do
    ours="$bin --repo $repo diff v1 $p"
    theirs="diff -rq --no-dereference $work/mnt-v1 $work/mnt-$p"
    hyperfine -N -i --style none --warmup 2 --runs "$runs" \
        --export-json "$work/warm-$p.json" "$ours" "$theirs" >/dev/null 2>&1
    hyperfine -N -i --style none --runs "$runs" --prepare "$cold" \
        --export-json "$work/cold-$p.json" "$ours" "$theirs" >/dev/null 2>&1
    for temp in warm cold; do
        { read -r o; read -r t; } < <(medians "$work/$temp-$p.json")
        echo "$p ours_$temp $o" >>"$results"
        echo "$p theirs_$temp $t" >>"$results"
    done
    log "v1 -> $p timed"
done

med() { awk -v p="$1" -v m="$2" '$1 == p && $2 == m { print $3 }' "$results" | sort -n |
    awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.0fx", a / b; else print "-" }'; }
printf '%-6s %6s  %10s %10s %7s  %10s %10s %7s\n' pair paths "cfs warm" "rq warm" ratio "cfs cold" "rq cold" ratio
for p in "${pairs[@]}"; do
    ow=$(med "$p" ours_warm); tw=$(med "$p" theirs_warm)
    oc=$(med "$p" ours_cold); tc=$(med "$p" theirs_cold)
    printf '%-6s %6s  %10s %10s %7s  %10s %10s %7s\n' "$p" "$(med "$p" paths)" \
        "$ow" "$tw" "$(ratio "$tw" "$ow")" "$oc" "$tc" "$(ratio "$tc" "$oc")"
done
