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

runs=3
prebuilt=""
keep=0
settle_s=361
jobs=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit "${1:-2}"; }
log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

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

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
if [ -n "$prebuilt" ]; then
    built="$(realpath "$prebuilt")"
else
    log "cargo build --release"
    cargo build --release --quiet >&2
    built="$repo_root/target/release/composefs"
fi

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

work="$repo_root/target/bench-work-fetch"
stamp="$repo_root/target/.bench-work-removed"
[ -e "$work" ] && { rm -rf "$work"; touch "$stamp"; }
if [ -f "$stamp" ]; then
    age=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
    if [ "$age" -lt "$settle_s" ]; then
        log "waiting $((settle_s - age))s: inodes freed by the last cleanup are still 'recently deleted' for ext4"
        sleep $((settle_s - age))
    fi
fi
mkdir -p "$work"
bin="$work/composefs"; cp "$built" "$bin"

# --- nginx ----------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx" "$work/www"
ln -s "$src" "$work/www/ostree"
ln -s "$cfs" "$work/www/cfs-src"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log $work/nginx/access.log;
    sendfile on; tcp_nopush on; keepalive_requests 100000;
    client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
    server { listen 127.0.0.1:$port; root $work/www; }
}
EOF
nginx -c "$work/nginx/nginx.conf"
cleanup() {
    [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
    [ "$keep" -eq 1 ] || { rm -rf "$work"; touch "$stamp"; }
}
trap cleanup EXIT
url="http://127.0.0.1:$port"
for p in ostree/config cfs-src/meta.json cfs-src/streams/refs/ostree/bench; do
    python3 -c "import urllib.request; urllib.request.urlopen('$url/$p')" 2>/dev/null || die "nginx does not serve $url/$p"
done

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now_ns() { date +%s%N; }
results="$work/results"; : >"$results"
timed() { # timed TOOL CMD...
    local tool="$1" t0 t1 rc=0; shift
    cold
    t0=$(now_ns)
    /usr/bin/time -f '%M' -o "$work/time.out" "$@" >"$work/cmd.out" 2>"$work/cmd.err" || rc=$?
    t1=$(now_ns)
    [ "$rc" -eq 0 ] || { cat "$work/cmd.err" >&2; die "failed ($rc): $*"; }
    local t r; t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'); r=$(tail -n1 "$work/time.out")
    echo "$tool $t $r" >>"$results"
    log "  $tool: ${t}s, peak RSS $((r / 1024)) MiB"
}

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
med() { awk -v t="$1" -v f="$2" '$1 == t { print $f }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
o=$(med ostree 2); m=$(med composefs 2); orss=$(med ostree 3); mrss=$(med composefs 3)
per=$(paste -d' ' <(awk '$1 == "ostree" { print $2 }' "$results") <(awk '$1 == "composefs" { print $2 }' "$results") |
      awk '{ printf "%s%.2f", (NR > 1 ? "," : ""), $2 / $1 }')
printf '%10s %12s %7s %11s %14s %s\n' "$o" "$m" "$(awk -v a="$m" -v b="$o" 'BEGIN { printf "%.2f", a / b }')" \
    "$((orss / 1024))" "$((mrss / 1024))" "$per"
