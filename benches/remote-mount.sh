#!/usr/bin/env bash
# Remote ostree commits looked at without a pull: `composefs mount URL#REF`,
# `composefs diff URL#A URL#B`, against pulling first.
#
#   benches/remote-mount.sh [-n RUNS] [--bin=PATH] [--keep] [--settle=SECONDS]
#
# Source (untimed, cached): the ostree archive repository of
# benches/ostree-pull.sh (target/bench-data/ostree-src: the debootstrap
# minbase rootfs as C1 = main^, and C2 = main with 300 files changed; run
# that bench once to build it), served by nginx on 127.0.0.1 (a private
# config, stopped at exit). RUNS times (default 3), each into fresh
# composefs repositories (sha512), caches dropped before each timed command:
#
#   first_ls    composefs mount URL#C1 MNT, then ls MNT (the mount returns
#               when the view is ready)
#   tar_remote  tar -cf - . | wc -c over that mount: every file fetched,
#               verified and stored on the way; then the daemon's peak RSS
#   diff_remote composefs diff URL#C1 URL#C2 in a fresh repository, and
#               the bytes nginx sent for it
#   pull_both   composefs ostree pull URL C1, then C2, in a fresh
#               repository, and the bytes nginx sent for C1
#   tar_local   tar over the FUSE mount of the pulled C1
#
# Goals (issue 22): first_ls <= 0.3 s; diff_remote <= 0.2x pull_both in
# time and < 2 % of C1's pulled bytes; tar_remote <= 1.5x (pull of C1 +
# tar_local); daemon peak RSS <= 128 MiB. stdout: the table only.
# Outputs are removed at the end; --settle as in benches/ostree-pull.sh.

set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs=3
prebuilt=""
settle_s=361
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; runs="$2"; shift ;;
        -n*) runs="${1#-n}" ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        --keep) keep=1 ;;
        --settle=*) settle_s="${1#--settle=}" ;;
        -h|--help) usage 0 ;;
        *) usage ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || die "must run as root (dropping caches, mounts, nginx)"
for t in ostree nginx fusermount3; do command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh installs it)"; done

bench_binary "$prebuilt"
src="$repo_root/target/bench-data/ostree-src"
compgen -G "$src/.complete-*" >/dev/null ||
    die "no ostree source repository at $src: run benches/ostree-pull.sh -n 1 once to build it"
src="$(realpath "$src")"
c1="$(ostree rev-parse --repo="$src" main^)"
c2="$(ostree rev-parse --repo="$src" main)"
log "C1 $c1, C2 $c2"

bench_workdir remote "$settle_s"
bin="$work/composefs"; cp "$built" "$bin"
bench_nginx "$src"
python3 -c "import urllib.request; urllib.request.urlopen('$url/config')" 2>/dev/null || die "nginx does not serve $url/config"
bench_cleanups+=('for m in "$work"/run*/mnt*; do mountpoint -q "$m" && "$bin" umount "$m"; done')

daemon_rss() { # the peak RSS (MiB) of the daemon serving mount point $1
    local pid; pid=$(pgrep -f -n "composefs --repo .* mount .* $1\$" || true)
    [ -n "$pid" ] || die "no daemon found for $1"
    awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"
}

for i in $(seq 1 "$runs"); do
    log "run $i"
    d="$work/run$i"; mkdir -p "$d/mnt" "$d/mnt-local"
    "$bin" --repo "$d/r" init --hash sha512 >/dev/null 2>&1
    timed first_ls sh -c "'$bin' --repo '$d/r' mount '$url#$c1' '$d/mnt' && ls '$d/mnt' >/dev/null"
    timed tar_remote sh -c "tar -C '$d/mnt' -cf - . | wc -c"
    echo "rss $(daemon_rss "$d/mnt")" >>"$results"
    "$bin" umount "$d/mnt"

    "$bin" --repo "$d/diff" init --hash sha512 >/dev/null 2>&1
    n0=$(wc -l <"$access_log")
    # diff exits 1 when the trees differ, as diff(1) does.
    timed diff_remote sh -c "'$bin' --repo '$d/diff' diff '$url#$c1' '$url#$c2' >/dev/null; [ \$? -eq 1 ]"
    echo "diff_bytes $(sent_since "$n0")" >>"$results"

    "$bin" --repo "$d/pull" init --hash sha512 >/dev/null 2>&1
    n0=$(wc -l <"$access_log")
    timed pull_c1 "$bin" --repo "$d/pull" ostree pull "$url" "$c1"
    echo "pull_bytes $(sent_since "$n0")" >>"$results"
    timed pull_c2 "$bin" --repo "$d/pull" ostree pull "$url" "$c2"
    "$bin" --repo "$d/pull" mount "ostree/$c1" "$d/mnt-local"
    timed tar_local sh -c "tar -C '$d/mnt-local' -cf - . | wc -c"
    "$bin" umount "$d/mnt-local"
done

m() { median "$1" 2; }
pull_both=$(awk -v a="$(m pull_c1)" -v b="$(m pull_c2)" 'BEGIN { printf "%.3f", a + b }')
local_path=$(awk -v a="$(m pull_c1)" -v b="$(m tar_local)" 'BEGIN { printf "%.3f", a + b }')
echo "remote mount benchmark: $(nproc) CPUs, $runs runs, source $(du -sh "$src" | cut -f1) archive repo, medians"
printf '%-36s %10s %10s %7s %s\n' measure remote baseline ratio goal
printf '%-36s %10s %10s %7s %s\n' "mount -> first ls (s)" "$(m first_ls)" - - "<= 0.3 s"
printf '%-36s %10s %10s %7s %s\n' "diff C1 C2 (s) vs pull both" "$(m diff_remote)" "$pull_both" "$(ratio "$(m diff_remote)" "$pull_both")" "<= 0.2"
printf '%-36s %10s %10s %7s %s\n' "diff bytes vs pull C1 bytes" "$(m diff_bytes)" "$(m pull_bytes)" \
    "$(awk -v a="$(m diff_bytes)" -v b="$(m pull_bytes)" 'BEGIN { printf "%.4f", a / b }')" "< 0.02"
printf '%-36s %10s %10s %7s %s\n' "tar remote (s) vs pull + tar local" "$(m tar_remote)" "$local_path" "$(ratio "$(m tar_remote)" "$local_path")" "<= 1.5"
printf '%-36s %10s %10s %7s %s\n' "daemon peak RSS (MiB)" "$(m rss)" - - "<= 128"
