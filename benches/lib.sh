# Shared pieces of the benches that time pulls and views against a local
# nginx. Sourced, not run: `. "$(dirname "$0")/lib.sh"`.
#
# The sourcing script sets `$0`-relative paths and calls, in order:
#   bench_binary PREBUILT        -> $built (cargo build --release unless given)
#   bench_workdir NAME SETTLE    -> $work (fresh), waiting out ext4's
#                                   "recently deleted" window (see
#                                   benches/ostree-pull.sh) after a cleanup
#   bench_nginx ROOT             -> $url, $access_log (nginx on 127.0.0.1,
#                                   stopped and $work removed at exit
#                                   unless $keep is 1)
# and then times commands with `timed LABEL CMD...` (caches dropped first;
# appends "LABEL SECONDS PEAK_KIB" to $results) and reads medians with
# `median LABEL FIELD` (FIELD counts LABEL's words: with a one-word label
# the seconds are field 2).

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit "${1:-2}"; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
keep=${keep:-0}

bench_binary() {
    if [ -n "${1:-}" ]; then
        built="$(realpath "$1")"
    else
        log "cargo build --release"
        (cd "$repo_root" && cargo build --release --quiet >&2)
        built="$repo_root/target/release/composefs"
    fi
}

bench_workdir() { # bench_workdir NAME SETTLE_SECONDS
    work="$repo_root/target/bench-work-$1"
    local stamp="$repo_root/target/.bench-work-removed" age
    bench_stamp="$stamp"
    [ -e "$work" ] && { rm -rf "$work"; touch "$stamp"; }
    if [ -f "$stamp" ]; then
        age=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
        if [ "$age" -lt "$2" ]; then
            log "waiting $(($2 - age))s: inodes freed by the last cleanup are still 'recently deleted' for ext4"
            sleep $(($2 - age))
        fi
    fi
    mkdir -p "$work"
    results="$work/results"; : >"$results"
    bench_cleanups=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local c
    for c in "${bench_cleanups[@]}"; do eval "$c" || true; done
    [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
    [ "$keep" -eq 1 ] || { rm -rf "$work"; touch "$bench_stamp"; }
}

bench_nginx() { # bench_nginx ROOT
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    log_format bytes '\$request_uri \$status \$body_bytes_sent';
    access_log $work/nginx/access.log bytes;
    sendfile on; tcp_nopush on; keepalive_requests 100000;
    client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
    server { listen 127.0.0.1:$port; root $1; }
}
CONF
    nginx -c "$work/nginx/nginx.conf"
    url="http://127.0.0.1:$port"
    access_log="$work/nginx/access.log"
}

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now_ns() { date +%s%N; }

timed() { # timed LABEL CMD...
    local label="$1" t0 t1 rc=0; shift
    cold
    t0=$(now_ns)
    /usr/bin/time -f '%M' -o "$work/time.out" "$@" >"$work/cmd.out" 2>"$work/cmd.err" || rc=$?
    t1=$(now_ns)
    [ "$rc" -eq 0 ] || { cat "$work/cmd.err" >&2; die "failed ($rc): $*"; }
    local t r; t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'); r=$(tail -n1 "$work/time.out")
    echo "$label $t $r" >>"$results"
    log "  $label: ${t}s, peak RSS $((r / 1024)) MiB"
}

median() { # median LABEL FIELD: the median of FIELD over $results lines starting with LABEL
    awk -v l="$1 " -v f="$2" 'index($0, l) == 1 { print $f }' "$results" |
        sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Bytes nginx sent for the lines of its access log after line $1.
sent_since() { awk -v n="$1" 'NR > n { s += $3 } END { print s + 0 }' "$access_log"; }
