#!/usr/bin/env bash
# composefs ostree pull vs ostree itself, side by side, on a real root filesystem.
#
#   benches/ostree-pull.sh [-n RUNS] [--changed=N] [--bin=PATH] [--keep]
#                          [--settle=SECONDS] [--hash=sha512,sha256]
#                          [--simd=avx2|none]
#
# --hash: the composefs repositories' fs-verity algorithms, each timed
# against the same ostree run (default sha512, as `composefs init`).
# --simd: cap composefs's multi-buffer SHA-512 (COMPOSEFS_SIMD) to measure
# what a CPU without AVX-512 gets; ostree's SHA-256 (SHA-NI) and zlib use no
# AVX-512 either way.
#
# Setup (untimed, cached under target/bench-data/ostree-src/): the debootstrap
# minbase bookworm tree from benches/rootfs.sh (without its /dev nodes, which
# ostree cannot hold) committed with `ostree commit`
# into an archive repository (commit C1), a second commit C2 in which N files
# (default 300) changed, a static delta C1 -> C2 and `ostree summary -u`.
# nginx serves that repository on 127.0.0.1 (a private config under the work
# dir; stopped at exit).
#
# Then RUNS times (default 3), each into fresh repositories, caches dropped
# before each timed command (sync; echo 3 > drop_caches):
#
#   local  ostree pull-local SRC C1 into a fresh bare-user repo
#          vs composefs ostree pull SRC C1 into a fresh composefs repo
#   http   ostree pull origin C1 (remote = nginx, fresh bare-user repo,
#          --no-gpg-verify, deltas disabled: the summary offers none from
#          scratch) vs composefs ostree pull http://… C1
#   delta  both sides already hold C1 (untimed pull), then pull C2 from
#          nginx: ostree uses the C1->C2 delta, so does composefs
#
# Wall-clock time and peak RSS (GNU time) of each command; the table shows
# medians and the ratio composefs/ostree. stdout: the table only.
# Outputs are removed only at the end, and a run that starts less than
# --settle seconds (default 361) after the previous cleanup waits out the
# rest: ext4 without a journal (as here) scans for "recently deleted" inodes
# on every file creation for 60-360 s after mass deletes, which showed up as
# 25% of the profile (see benches/import-tar.sh).

set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs=3
changed=300
prebuilt=""
settle_s=361
hashes=sha512
simd=""

while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; runs="$2"; shift ;;
        -n*) runs="${1#-n}" ;;
        --changed=*) changed="${1#--changed=}" ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        --keep) keep=1 ;;
        --settle=*) settle_s="${1#--settle=}" ;;
        --hash=*) hashes="${1#--hash=}" ;;
        --simd=*) simd="${1#--simd=}" ;;
        -h|--help) usage 0 ;;
        *) usage ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || die "must run as root (commits with owners, dropping caches, nginx)"
IFS=, read -r -a hash_list <<<"$hashes"
for h in "${hash_list[@]}"; do case "$h" in sha256|sha512) ;; *) die "--hash: sha256 or sha512, not $h" ;; esac; done
case "$simd" in ""|avx2|none) ;; *) die "--simd: avx2 or none, not $simd" ;; esac
[ -z "$simd" ] || export COMPOSEFS_SIMD="$simd"
for t in ostree nginx; do command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh installs it)"; done

cd "$repo_root"
bench_binary "$prebuilt"

mapfile -t inputs < <("$repo_root/benches/rootfs.sh")
rootfs="${inputs[0]%.tar}"
[ -d "$rootfs" ] || die "no root filesystem at $rootfs"

# --- source repository (cached) -------------------------------------------
src="$repo_root/target/bench-data/ostree-src"
if [ ! -f "$src/.complete-$changed" ]; then
    log "building the source repository (ostree commit of $rootfs, $changed changed files)"
    rm -rf "$src" "$src.tree2"
    ostree init --repo="$src" --mode=archive
    # ostree holds regular files, symlinks and directories only: no /dev nodes.
    cp -a "$rootfs" "$src.tree2"
    find "$src.tree2" \( -type b -o -type c -o -type p -o -type s \) -delete
    ostree commit --repo="$src" -b main --subject "bench C1" --add-metadata-string version=1 "$src.tree2" >/dev/null
    # Change N regular files of at least 1 KiB: a few bytes in the middle.
    find "$src.tree2/usr" -type f -size +1k | sort | awk -v n="$changed" 'NR % 7 == 0 && c < n { print; c++ }' |
        while read -r f; do printf 'composefs-bench' | dd of="$f" bs=1 seek=512 conv=notrunc status=none; done
    ostree commit --repo="$src" -b main --subject "bench C2" --add-metadata-string version=2 "$src.tree2" >/dev/null
    rm -rf "$src.tree2"
    ostree static-delta generate --repo="$src" main >/dev/null
    ostree summary --repo="$src" -u
    touch "$src/.complete-$changed"
fi
c2="$(ostree rev-parse --repo="$src" main)"
c1="$(ostree rev-parse --repo="$src" main^)"
log "C1 $c1, C2 $c2"

bench_workdir ostree "$settle_s"
bin="$work/composefs"; cp "$built" "$bin"
bench_nginx "$src"
python3 -c "import urllib.request; urllib.request.urlopen('$url/config')" 2>/dev/null || die "nginx does not answer on $url"

new_ostree() { ostree init --repo="$1" --mode=bare-user; ostree remote add --repo="$1" --no-gpg-verify origin "$url"; }
new_cfs() { "$bin" --repo "$1" init --hash "$2" >/dev/null 2>&1; }

for i in $(seq 1 "$runs"); do
    log "run $i"
    d="$work/run$i"; mkdir -p "$d"
    new_ostree "$d/o-local"; timed "local ostree" ostree pull-local --repo="$d/o-local" "$src" "$c1"
    for h in "${hash_list[@]}"; do
        new_cfs "$d/c-local-$h" "$h"; timed "local composefs-$h" "$bin" --repo "$d/c-local-$h" ostree pull "$src" "$c1"
    done
    new_ostree "$d/o-http"; timed "http ostree" ostree pull --repo="$d/o-http" origin "$c1"
    for h in "${hash_list[@]}"; do
        new_cfs "$d/c-http-$h" "$h"; timed "http composefs-$h" "$bin" --repo "$d/c-http-$h" ostree pull "$url" "$c1"
    done
    # delta: both hold C1 now (the http pulls); pull C2. The access log
    # shows what each side fetched.
    n0=$(wc -l <"$access_log")
    timed "delta ostree" ostree pull --repo="$d/o-http" origin main
    for h in "${hash_list[@]}"; do
        n1=$(wc -l <"$access_log")
        timed "delta composefs-$h" "$bin" --repo "$d/c-http-$h" ostree pull "$url" main
        n2=$(wc -l <"$access_log")
        grep -q "delta: from" "$work/cmd.out" || die "composefs did not use the delta: $(cat "$work/cmd.out")"
    done
    log "  delta requests: ostree $(sed -n "$((n0 + 1)),${n1}p" "$access_log" | grep -c '/deltas/') delta + $(sed -n "$((n0 + 1)),${n1}p" "$access_log" | grep -c '/objects/') object GETs;" \
        "composefs (last) $(sed -n "$((n1 + 1)),${n2}p" "$access_log" | grep -c '/deltas/') + $(sed -n "$((n1 + 1)),${n2}p" "$access_log" | grep -c '/objects/')"
done

echo "ostree pull benchmark: $(nproc) CPUs, $runs runs, source $(du -sh "$src" | cut -f1) archive repo, C2 changes $changed files, SIMD cap ${simd:-none (best the CPU has)}"
printf '%-6s %-7s %10s %12s %7s %11s %14s %s\n' case hash ostree_s composefs_s ratio ostree_MiB composefs_MiB per-run-ratios
for c in local http delta; do
    for h in "${hash_list[@]}"; do
        med() { awk -v c="$c" -v t="$1" -v f="$2" '$1 == c && $2 == t { print $f }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
        o=$(med ostree 3); m=$(med "composefs-$h" 3); orss=$(med ostree 4); mrss=$(med "composefs-$h" 4)
        per=$(paste -d' ' <(awk -v c="$c" '$1 == c && $2 == "ostree" { print $3 }' "$results") \
                         <(awk -v c="$c" -v t="composefs-$h" '$1 == c && $2 == t { print $3 }' "$results") |
              awk '{ printf "%s%.2f", (NR > 1 ? "," : ""), $2 / $1 }')
        printf '%-6s %-7s %10s %12s %7s %11s %14s %s\n' "$c" "$h" "$o" "$m" "$(awk -v a="$m" -v b="$o" 'BEGIN { printf "%.2f", a / b }')" \
            "$((orss / 1024))" "$((mrss / 1024))" "$per"
    done
done
