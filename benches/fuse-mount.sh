#!/usr/bin/env bash
# The FUSE view vs the kernel mount of the same tree, side by side.
#
#   benches/fuse-mount.sh [-n RUNS] [--bin=PATH]
#
# Setup (untimed): a composefs repository under target/bench-work-fuse/ with
# the debootstrap minbase bookworm tree (benches/rootfs.sh) as an image
# (`create-image`) and, when benches/ostree-pull.sh has built its source
# repository, its first commit pulled as `ostree/c1`. Three mounts:
#
#   kernel   composefs mount --kernel rootfs      (EROFS + overlayfs)
#   fuse     composefs mount rootfs               (FUSE over the same image)
#   commit   composefs mount ostree/c1            (FUSE over the commit stream)
#
# A second version of each tree, in which 300 regular files under /usr
# changed (16 bytes in the middle, the same files as benches/ostree-pull.sh's
# C2): `rootfs2` as an image, `ostree/c2` as a commit.
#
# Each run: `tar -cf - . | wc -c` cold (page cache dropped), `find . -printf`
# of every stat field cold, `diff -rq` of the two versions mounted side by
# side (same kind) cold; then the same three warm, the kinds alternating
# (all mounted and cached at once, three rounds, medians), and the time
# from `composefs mount` starting to the first `ls` of the root returning
# (fresh mount each time). After the runs, the FUSE daemons' peak RSS (VmHWM) after
# walking and reading everything. The same first `ls` and peak RSS for a
# 100k-file tree (built once, as an image and an ostree commit). Needs root. stdout: the table only.

set -euo pipefail
runs=3
prebuilt=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n) runs="$2"; shift ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        *) echo "usage: $0 [-n RUNS] [--bin=PATH]" >&2; exit 2 ;;
    esac
    shift
done
log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (kernel mounts, dropping caches)"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
if [ -n "$prebuilt" ]; then built="$(realpath "$prebuilt")"; else
    cargo build --release --quiet >&2; built="$repo_root/target/release/composefs"; fi
mapfile -t inputs < <("$repo_root/benches/rootfs.sh")
rootfs="${inputs[0]%.tar}"

work="$repo_root/target/bench-work-fuse"
mnts=()
cleanup() {
    for m in "${mnts[@]}"; do
        if mountpoint -q "$m"; then "$bin" umount "$m" 2>/dev/null || umount -l "$m" || true; fi
    done
    return 0
}
trap cleanup EXIT
mkdir -p "$work"
bin="$work/composefs"; cp "$built" "$bin"
repo="$work/repo"
if [ ! -f "$work/.ready" ]; then
    rm -rf "$repo"
    "$bin" --repo "$repo" init >/dev/null
    "$bin" --repo "$repo" create-image "$rootfs" --name rootfs >/dev/null
    touch "$work/.ready"
fi
# The second version: the same 300 files changed as in ostree-pull.sh's C2.
if [ ! -f "$work/.ready-v2" ]; then
    v2="$work/tree-v2"; rm -rf "$v2"
    cp -a "$rootfs" "$v2"
    find "$v2/usr" -type f -size +1k | sort | awk 'NR % 7 == 0 && c < 300 { print; c++ }' |
        while read -r f; do printf 'composefs-bench' | dd of="$f" bs=1 seek=512 conv=notrunc status=none; done
    "$bin" --repo "$repo" create-image "$v2" --name rootfs2 >/dev/null
    rm -rf "$v2"
    touch "$work/.ready-v2"
fi
# Both commits of benches/ostree-pull.sh's source repository, when it has
# been built (that script builds it): C1 and C2 (the same 300 files changed).
src="$repo_root/target/bench-data/ostree-src"
if [ -f "$src/.complete-300" ]; then
    for c in c1:main^ c2:main; do
        want="$(ostree rev-parse --repo="$src" "${c#*:}")"
        "$bin" --repo "$repo" ostree list | grep -q "^${c%%:*} $want " ||
            "$bin" --repo "$repo" ostree pull "$src" "$want" --name "${c%%:*}" >/dev/null
    done
fi
# A 100k-file tree (100 directories of 1000 files), as an image and as an
# ostree commit: mount time must not grow with the tree.
if [ ! -f "$work/.ready-100k" ]; then
    big="$work/tree-100k"; rm -rf "$big" "$work/ostree-100k"
    for d in $(seq -w 0 99); do
        mkdir -p "$big/d$d"
        (cd "$big/d$d" && for f in $(seq -w 0 999); do printf '%s/%s\n' "$d" "$f" >"f$f"; done)
    done
    "$bin" --repo "$repo" create-image "$big" --name big-image >/dev/null
    ostree init --repo="$work/ostree-100k" --mode=archive
    ostree commit --repo="$work/ostree-100k" -b big -s big "$big" >/dev/null
    "$bin" --repo "$repo" ostree pull "$work/ostree-100k" big >/dev/null
    rm -rf "$big" "$work/ostree-100k"
    touch "$work/.ready-100k"
fi
kinds=(kernel fuse)
"$bin" --repo "$repo" ostree list | grep -q '^c1 ' && "$bin" --repo "$repo" ostree list | grep -q '^c2 ' && kinds+=(commit)

mount_as() { # mount_as KIND DIR IMAGE COMMIT
    case "$1" in
        kernel) "$bin" --repo "$repo" mount --kernel "$3" "$2" ;;
        fuse) "$bin" --repo "$repo" mount "$3" "$2" ;;
        commit) "$bin" --repo "$repo" mount "ostree/$4" "$2" ;;
    esac
}
mount_kind() { mount_as "$1" "$2" rootfs c1; }
mount_v2() { mount_as "$1" "$2" rootfs2 c2; }
mount_big() { mount_as "$1" "$2" big-image big; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
results="$work/results"; : >"$results"
# Warm figures, the kinds alternating: both versions of every kind mounted
# and cached at once, then three rounds of tar, find and diff -rq over each
# kind in turn; each measure's median of the three goes in. Measured this
# way, all kinds see the same machine state (measured one kind after the
# other, the first pass after a cold one varied most, for every kind).
warm_round() { # warm_round KIND DIR DIR2 (appends to $warm_log)
    local t0 t1
    t0=$(now); (cd "$2" && tar -cf - . | wc -c >/dev/null); t1=$(now)
    echo "$1 tar_warm $(secs "$t0" "$t1")" >>"$warm_log"
    t0=$(now); (cd "$2" && find . -printf '%p %m %U %G %s %n %T@ %i %l\n' | wc -l >/dev/null); t1=$(now)
    echo "$1 find_warm $(secs "$t0" "$t1")" >>"$warm_log"
    t0=$(now); { diff -rq --no-dereference "$2" "$3" >/dev/null || [ $? -eq 1 ]; } || die "$1: warm diff failed"; t1=$(now)
    echo "$1 diff_warm $(secs "$t0" "$t1")" >>"$warm_log"
}
warm_log="$work/warm"

for i in $(seq 1 "$runs"); do
    for k in "${kinds[@]}"; do
        m="$work/m-$k"; mkdir -p "$m"
        t0=$(now); mount_kind "$k" "$m"; ls "$m" >/dev/null; t1=$(now)
        mnts+=("$m")
        echo "$k first_ls $(secs "$t0" "$t1")" >>"$results"
        cold; t0=$(now); (cd "$m" && tar -cf - . | wc -c >/dev/null); t1=$(now)
        echo "$k tar_cold $(secs "$t0" "$t1")" >>"$results"
        "$bin" umount "$m"; mount_kind "$k" "$m"
        cold; t0=$(now); (cd "$m" && find . -printf '%p %m %U %G %s %n %T@ %i %l\n' | wc -l >/dev/null); t1=$(now)
        echo "$k find_cold $(secs "$t0" "$t1")" >>"$results"
        # Two versions side by side: diff -rq (symlinks compared as links,
        # not followed: /bin is usr/bin) reads every file of both
        # whose size matches, and must find exactly the 300 changed ones.
        "$bin" umount "$m"; mount_kind "$k" "$m"
        m2="$work/m2-$k"; mkdir -p "$m2"; mount_v2 "$k" "$m2"; mnts+=("$m2")
        cold
        t0=$(now); n=$( { diff -rq --no-dereference "$m" "$m2" || [ $? -eq 1 ]; } | wc -l); t1=$(now)
        [ "$n" -eq 300 ] || die "$k: diff -rq found $n differences, not 300"
        echo "$k diff_cold $(secs "$t0" "$t1")" >>"$results"
        "$bin" umount "$m2"
        if [ "$k" != kernel ] && [ "$i" -eq "$runs" ]; then
            (cd "$m" && tar -cf - . | wc -c >/dev/null)
            pid=$(pgrep -f -n "composefs --repo $repo mount .* $m\$" || true)
            [ -n "$pid" ] && echo "$k rss_mib $(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")" >>"$results"
        fi
        "$bin" umount "$m"
        t0=$(now); mount_big "$k" "$m"; ls "$m" >/dev/null; t1=$(now)
        echo "$k first_ls_100k $(secs "$t0" "$t1")" >>"$results"
        if [ "$k" != kernel ] && [ "$i" -eq "$runs" ]; then
            (cd "$m" && find . -printf '%p %m %U %G %s %n %T@ %i %l\n' | wc -l >/dev/null && tar -cf - . | wc -c >/dev/null)
            pid=$(pgrep -f -n "composefs --repo $repo mount .* $m\$" || true)
            [ -n "$pid" ] && echo "$k rss_mib_100k $(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")" >>"$results"
        fi
        "$bin" umount "$m"
        log "run $i $k done"
    done
    for k in "${kinds[@]}"; do
        mkdir -p "$work/w-$k" "$work/w2-$k"
        mount_kind "$k" "$work/w-$k"; mount_v2 "$k" "$work/w2-$k"; mnts+=("$work/w-$k" "$work/w2-$k")
    done
    : >"$warm_log"
    for round in 0 1 2 3; do # round 0 fills the caches
        for k in "${kinds[@]}"; do warm_round "$k" "$work/w-$k" "$work/w2-$k"; done
        if [ "$round" -eq 0 ]; then : >"$warm_log"; fi
    done
    for k in "${kinds[@]}"; do
        for meas in tar_warm find_warm diff_warm; do
            echo "$k $meas $(awk -v k="$k" -v m="$meas" '$1 == k && $2 == m { print $3 }' "$warm_log" | sort -n | sed -n 2p)" >>"$results"
        done
        "$bin" umount "$work/w-$k"; "$bin" umount "$work/w2-$k"
    done
    log "run $i warm done"
done

printf '%-10s' measure; for k in "${kinds[@]}"; do printf ' %10s' "$k"; done; for k in "${kinds[@]:1}"; do printf ' %10s' "$k/kern"; done; echo
for meas in first_ls tar_cold tar_warm find_cold find_warm diff_cold diff_warm rss_mib first_ls_100k rss_mib_100k; do
    printf '%-10s' "$meas"
    declare -A med=()
    for k in "${kinds[@]}"; do
        med[$k]=$(awk -v k="$k" -v m="$meas" '$1 == k && $2 == m { print $3 }' "$results" | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "-" }')
        printf ' %10s' "${med[$k]}"
    done
    for k in "${kinds[@]:1}"; do
        printf ' %10s' "$(awk -v a="${med[$k]}" -v b="${med[kernel]}" 'BEGIN { if (b + 0 > 0 && a != "-") printf "%.2f", a / b; else print "-" }')"
    done
    echo
done
