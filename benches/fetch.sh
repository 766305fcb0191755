#!/usr/bin/env bash
# composefs fetch (a composefs repository served as plain files) vs ostree
# pull (an ostree archive repository), the same tree from the same nginx.
#
#   benches/fetch.sh [-n RUNS] [--bin=PATH] [--keep] [--settle=SECONDS]
#                    [--jobs=N]
#
# Setup (untimed, cached under target/bench-data/): the ostree archive
# repository of benches/ostree-pull.sh (target/bench-data/ostree-src: the
# debootstrap minbase bookworm tree from benches/rootfs.sh; run that bench
# once to build it) and a composefs repository (target/bench-data/cfs-src,
# sha512) made by `composefs ostree pull` of its commit C1 (`main^`) as
# ostree/bench, so both sides serve the same tree. One nginx (a private
# config under the work dir, stopped at exit) serves both on 127.0.0.1:
# /ostree/ and /cfs-src/ (symlinks into bench-data, which nginx follows).
#
# Then RUNS times (default 3), each into fresh repositories, caches dropped
# before each timed command (sync; echo 3 > drop_caches):
#
#   ostree     ostree pull origin C1 (remote = nginx, fresh bare-user repo,
#              --no-gpg-verify), as the http case of benches/ostree-pull.sh
#   composefs  composefs fetch http://…/cfs-src ostree/bench into a fresh
#              composefs repository (sha512); --jobs=N passed on if given
#
# Wall-clock time and peak RSS (GNU time) of each command; the table shows
# medians and the ratio composefs/ostree. stdout: the table only.
# Outputs are removed only at the end, and a run that starts less than
# --settle seconds (default 361) after the previous cleanup waits out the
# rest (ext4 without a journal: see benches/ostree-pull.sh).

set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs=3
prebuilt=""
settle_s=361
jobs=""

while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; runs="$2"; shift ;;
        -n*) runs="${1#-n}" ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        --keep) keep=1 ;;
        --settle=*) settle_s="${1#--settle=}" ;;
        --jobs=*) jobs="${1#--jobs=}" ;;
        -h|--help) usage 0 ;;
        *) usage ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || die "must run as root (dropping caches, nginx)"
for t in ostree nginx; do command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh installs it)"; done

bench_binary "$prebuilt"

# --- source repositories (cached) -----------------------------------------
src="$repo_root/target/bench-data/ostree-src"
compgen -G "$src/.complete-*" >/dev/null ||
    die "no ostree source repository at $src: run benches/ostree-pull.sh -n 1 once to build it"
src="$(realpath "$src")"
c1="$(ostree rev-parse --repo="$src" main^)"
log "C1 $c1"

cfs="$repo_root/target/bench-data/cfs-src"
if [ ! -f "$cfs/.complete-$c1" ]; then
    log "building the composefs source repository (composefs ostree pull of C1)"
    rm -rf "$cfs"
    "$built" --repo "$cfs" init --hash sha512 >/dev/null
    "$built" --repo "$cfs" ostree pull --name bench "$src" "$c1" >&2
    touch "$cfs/.complete-$c1"
fi
cfs="$(realpath "$cfs")"

bench_workdir fetch "$settle_s"
bin="$work/composefs"; cp "$built" "$bin"

# --- nginx ----------------------------------------------------------------
mkdir -p "$work/www"
ln -s "$src" "$work/www/ostree"
ln -s "$cfs" "$work/www/cfs-src"
bench_nginx "$work/www"
for p in ostree/config cfs-src/meta.json cfs-src/streams/refs/ostree/bench; do
    python3 -c "import urllib.request; urllib.request.urlopen('$url/$p')" 2>/dev/null || die "nginx does not serve $url/$p"
done

for i in $(seq 1 "$runs"); do
    log "run $i"
    d="$work/run$i"; mkdir -p "$d"
    ostree init --repo="$d/o" --mode=bare-user
    ostree remote add --repo="$d/o" --no-gpg-verify origin "$url/ostree"
    timed ostree ostree pull --repo="$d/o" origin "$c1"
    "$bin" --repo "$d/c" init --hash sha512 >/dev/null 2>&1
    timed composefs "$bin" --repo "$d/c" fetch ${jobs:+--jobs "$jobs"} "$url/cfs-src" ostree/bench
    log "  $(cat "$work/cmd.out")"
    grep -q "^ostree-commit-$c1 " "$work/cmd.out" || die "composefs fetch did not store C1: $(cat "$work/cmd.out")"
done

echo "fetch benchmark: $(nproc) CPUs, $runs runs, ostree archive $(du -sh "$src" | cut -f1), composefs repo $(du -sh "$cfs" | cut -f1)"
printf '%10s %12s %7s %11s %14s %s\n' ostree_s composefs_s ratio ostree_MiB composefs_MiB per-run-ratios
o=$(median ostree 2); m=$(median composefs 2); orss=$(median ostree 3); mrss=$(median composefs 3)
per=$(paste -d' ' <(awk '$1 == "ostree" { print $2 }' "$results") <(awk '$1 == "composefs" { print $2 }' "$results") |
      awk '{ printf "%s%.2f", (NR > 1 ? "," : ""), $2 / $1 }')
printf '%10s %12s %7s %11s %14s %s\n' "$o" "$m" "$(awk -v a="$m" -v b="$o" 'BEGIN { printf "%.2f", a / b }')" \
    "$((orss / 1024))" "$((mrss / 1024))" "$per"
