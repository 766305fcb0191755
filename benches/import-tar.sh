#!/usr/bin/env bash
# composefs import-tar vs GNU tar -x, side by side, on a real root filesystem.
#
#   benches/import-tar.sh [-n RUNS] [--hash=sha512|sha256] [--copies=N]
#                         [--include=PKG,...] [--data=DIR] [--bin=PATH]
#                         [--rm-between] [--settle=SECONDS] [--keep]
#
# Builds `cargo build --release`, gets a debootstrap minbase bookworm tar (and
# its gzip copy) from benches/rootfs.sh (cached in target/bench-data/), then
# RUNS times (default 5) measures, for the plain tar and for the .tar.gz:
#
#   (a) tar -xf TAR -C <fresh dir>                   (GNU tar as root: owners
#                                                     and modes restored)
#   (b) composefs --repo <fresh repo> import-tar bench TAR
#       (after an untimed `composefs --repo <fresh repo> init`)
#
# Before every timed command: `sync`, `echo 3 > /proc/sys/vm/drop_caches`,
# then `cat TAR > /dev/null`: warm input, cold output dir. Everything is
# written under target/bench-work/ (same filesystem as the input). The order
# of (a) and (b) alternates from run to run.
#
# Outputs are kept until all runs are done and removed (untimed) at the end:
# on ext4 without a journal (as here) the inode allocator skips inodes freed
# less than 60 s ago (fs/ext4/ialloc.c recently_deleted()), which made every
# run right after an `rm -rf` of the previous run's 5000+ files pay for a
# scan in the kernel (the window grows to 360 s while the inode table block
# is dirty, so other work on the same filesystem can still get in the way).
# For the same reason a benchmark that starts less than --settle seconds
# (default 361 = 60 + 300 s) after the previous one cleaned up waits out the
# rest; --settle=0 skips the wait (expect slower, noisier numbers then).
# --rm-between restores "rm -rf after every run" (less disk: ~1 GiB).
#
# --bin=PATH benchmarks a prebuilt composefs instead of building this tree.
# The binary is copied into the work dir first, so a concurrent
# `cargo build` cannot swap it in the middle of the runs.
#
# `import-tar` ends with a syncfs(2) before it publishes its ref, GNU tar
# does not sync at all; the table therefore also shows "tar+syncfs": tar -x
# followed by a timed `sync -f DIR` (syncfs of the output filesystem), for
# reference only: the goal compares against plain tar -x.
#
# --copies=N adds a row for one tar holding N copies of the root filesystem
# (file contents repeat, so the repository dedups them) to check that peak
# RSS does not grow with the input.
#
# Wall-clock time is the measure; CPU time (user+sys, from GNU time) is shown
# too because it is less disturbed by other load on the machine.
#
# stdout: the results table only. Progress: stderr.

set -euo pipefail

runs=5
hash=sha512
copies=0
include=""
datadir=""
keep=0
rm_between=0
settle_s=361
prebuilt=""
label=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit "${1:-2}"; }
log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ $# -ge 2 ] || usage; runs="$2"; shift ;;
        -n*) runs="${1#-n}" ;;
        --runs=*) runs="${1#--runs=}" ;;
        --hash=*) hash="${1#--hash=}" ;;
        --copies=*) copies="${1#--copies=}" ;;
        --include=*) include="${1#--include=}" ;;
        --data=*) datadir="${1#--data=}" ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        --rm-between) rm_between=1 ;;
        --settle=*) settle_s="${1#--settle=}" ;;
        --keep) keep=1 ;;
        -h|--help) usage 0 ;;
        *) usage ;;
    esac
    shift
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive number"
[[ "$copies" =~ ^[0-9]+$ ]] || die "--copies wants a number"
[[ "$settle_s" =~ ^[0-9]+$ ]] || die "--settle wants a number of seconds"
case "$hash" in sha256|sha512) ;; *) die "--hash is sha256 or sha512" ;; esac
[ "$(id -u)" -eq 0 ] || die "must run as root (tar restoring owners, dropping caches)"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# --- inputs ---------------------------------------------------------------
if [ -n "$prebuilt" ]; then
    built="$(realpath "$prebuilt")"
    [ -x "$built" ] || die "--bin=$prebuilt is not an executable"
else
    log "cargo build --release"
    cargo build --release --quiet >&2
    built="$repo_root/target/release/composefs"
    [ -x "$built" ] || die "no $built after cargo build"
    label="$(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)"
fi

rootfs_args=()
[ -n "$include" ] && rootfs_args+=("--include=$include")
[ "$copies" -gt 0 ] && rootfs_args+=("--copies=$copies")
[ -n "$datadir" ] && rootfs_args+=("$datadir")
mapfile -t inputs < <("$repo_root/benches/rootfs.sh" "${rootfs_args[@]}")
[ "${#inputs[@]}" -ge 2 ] || die "benches/rootfs.sh gave no tar"
plain="${inputs[0]}"
gz="${inputs[1]}"
big="${inputs[2]:-}"
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) missing; benches/rootfs.sh should have installed it"

work="$repo_root/target/bench-work"
stamp="$repo_root/target/.bench-work-removed"
remove() { # remove PATH...: rm -rf, and remember when (see recently_deleted above)
    rm -rf "$@"
    touch "$stamp"
}
settle() {
    local age
    [ -f "$stamp" ] || return 0
    age=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
    if [ "$age" -lt "$settle_s" ]; then
        log "waiting $((settle_s - age))s: inodes freed by the last cleanup are still 'recently deleted' for ext4"
        sleep $((settle_s - age))
    fi
}
[ -e "$work" ] && { sync; remove "$work"; }
mkdir -p "$work"
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() { [ "$keep" -eq 1 ] || { sync; remove "$work"; }; }
trap cleanup EXIT
bin="$work/composefs"
cp "$built" "$bin"

in_fs="$(findmnt -no FSTYPE -T "$plain")"; out_fs="$(findmnt -no FSTYPE -T "$work")"
[ "$(stat -c %d "$plain")" = "$(stat -c %d "$work")" ] || log "warning: input ($in_fs) and output ($out_fs) are on different filesystems"

drop_ok=1
cold() { # cold INPUT: flush, drop the page cache, then warm the input again
    sync
    if [ "$drop_ok" -eq 1 ] && ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        drop_ok=0
        log "warning: cannot drop caches; output dirs are not cold"
    fi
    cat "$1" >/dev/null
}

now_ns() { date +%s%N; }

# timed OUTVAR RSSVAR CMD...: wall-clock seconds and peak RSS (KiB) of CMD;
# its CPU seconds (user+sys) go to $cpu.
timed() {
    local __t __r t0 t1 rc=0
    __t="$1"; __r="$2"; shift 2
    t0=$(now_ns)
    /usr/bin/time -f '%M %U %S' -o "$work/time.out" "$@" >"$work/cmd.out" 2>"$work/cmd.err" || rc=$?
    t1=$(now_ns)
    if [ "$rc" -ne 0 ]; then
        cat "$work/cmd.err" >&2
        die "failed ($rc): $*"
    fi
    printf -v "$__t" '%s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
    printf -v "$__r" '%s' "$(tail -n1 "$work/time.out" | awk '{ print $1 }')"
    cpu="$(tail -n1 "$work/time.out" | awk '{ printf "%.2f", $2 + $3 }')"
}

# Results: one line per measurement in $work/results:
# CASE TOOL WALL_SECONDS PEAK_RSS_KIB CPU_SECONDS
results="$work/results"
: >"$results"

run_tar() { # run_tar CASE INPUT RUN
    # shellcheck disable=SC2034 # sync_rss: set by timed, not needed
    local t r ts sync_rss cpu x="$work/run$3/tar-$1"
    mkdir -p "$x"
    cold "$2"
    timed t r tar -xf "$2" -C "$x"
    local tcpu="$cpu"
    timed ts sync_rss sync -f "$x"
    echo "$1 tar $t $r $tcpu" >>"$results"
    echo "$1 tarsync $(awk -v a="$t" -v b="$ts" 'BEGIN { printf "%.3f", a + b }') $r $tcpu" >>"$results"
    log "  run $3 $1: tar -x ${t}s (+ syncfs ${ts}s), cpu ${tcpu}s, peak RSS $((r / 1024)) MiB"
    [ "$rm_between" -eq 0 ] || { sync; remove "$x"; }
}

run_cfs() { # run_cfs CASE INPUT RUN
    local t r cpu repo="$work/run$3/repo-$1"
    mkdir -p "$work/run$3"
    "$bin" --repo "$repo" init --hash "$hash" >/dev/null 2>&1 || die "composefs init failed"
    cold "$2"
    timed t r "$bin" --repo "$repo" import-tar bench "$2"
    echo "$1 composefs $t $r $cpu" >>"$results"
    log "  run $3 $1: composefs import-tar ${t}s, cpu ${cpu}s, peak RSS $((r / 1024)) MiB"
    if [ "$3" -eq 1 ]; then
        # Once per input, untimed: the stored stream must give back the tar.
        local want
        case "$2" in *.gz) want="gzip -dc $(printf %q "$2")" ;; *) want="cat $(printf %q "$2")" ;; esac
        cmp -s <("$bin" --repo "$repo" cat bench) <(eval "$want") || die "composefs cat differs from $2"
        du -s --block-size=1 "$repo" | awk '{ print $1 }' >"$work/repo-bytes.$1"
    fi
    [ "$rm_between" -eq 0 ] || { sync; remove "$repo"; }
}

# Room for every run's output when nothing is removed in between.
if [ "$rm_between" -eq 0 ]; then
    need=0
    for f in "${inputs[@]}"; do
        case "$f" in *.gz) ;; *) need=$((need + 2 * $(stat -c %s "$f") * runs)) ;; esac
    done
    need=$((need + 2 * $(stat -c %s "$plain") * runs)) # the gzip case unpacks to the same
    avail=$(( $(df --output=avail -B1 "$work" | tail -n1) ))
    if [ "$need" -gt $((avail * 8 / 10)) ]; then
        log "warning: not enough room to keep every run's output ($((need >> 20)) MiB); removing after each run"
        rm_between=1
    fi
fi
settle
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

cases=("plain:$plain" "gzip:$gz")
[ -n "$big" ] && cases+=("x$copies:$big")

for i in $(seq 1 "$runs"); do
    log "run $i/$runs"
    for c in "${cases[@]}"; do
        name="${c%%:*}"; input="${c#*:}"
        if [ $((i % 2)) -eq 1 ]; then
            run_tar "$name" "$input" "$i"; run_cfs "$name" "$input" "$i"
        else
            run_cfs "$name" "$input" "$i"; run_tar "$name" "$input" "$i"
        fi
    done
done

# --- table ----------------------------------------------------------------
stat_of() { # stat_of CASE TOOL median|best|maxrss|cpu
    awk -v c="$1" -v t="$2" -v w="$3" '$1 == c && $2 == t { print (w == "cpu" ? $5 : $3), $4 }' "$results" | sort -n |
        awk -v what="$3" '
            { s[NR] = $1; if ($2 > m) m = $2 }
            END {
                if (what == "best") printf "%.2f", s[1]
                else if (what == "maxrss") printf "%.1f", m / 1024
                else printf "%.2f", (NR % 2) ? s[(NR + 1) / 2] : (s[NR / 2] + s[NR / 2 + 1]) / 2
            }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.0f", b / 1048576 }'; }

members="$(tar -tf "$plain" | wc -l)"
echo "composefs import-tar vs GNU tar -x: warm input, cold output dir; $runs runs, median (best) seconds"
echo "input: $(basename "$plain") $(mib "$plain") MiB, $members members; $(basename "$gz") $(mib "$gz") MiB${big:+; $(basename "$big") $(mib "$big") MiB}"
echo "output on $out_fs ($(df --output=source "$work" | tail -n1)); composefs --hash $hash ($( [ -n "$prebuilt" ] && echo "$built" || echo "tree at $label")); $(nproc) CPUs; load average before/after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg)$([ "$drop_ok" -eq 1 ] || echo '; CACHES NOT DROPPED')$([ "$rm_between" -eq 0 ] || echo '; outputs removed between runs')"
echo
printf '%-7s %-13s %-13s %-13s %-9s %-9s %-9s %-9s %-9s %s\n' \
    case "tar -x" "tar+syncfs" "composefs" "ratio" "ratio" "cpu tar" "cpu cfs" "RSS tar" "RSS composefs"
printf '%-7s %-13s %-13s %-13s %-9s %-9s %-9s %-9s %-9s %s\n' \
    "" "med (best)" "med (best)" "med (best)" "med" "best" "med" "med" "max MiB" "max MiB"
for c in "${cases[@]}"; do
    name="${c%%:*}"
    tm=$(stat_of "$name" tar median); tb=$(stat_of "$name" tar best)
    sm=$(stat_of "$name" tarsync median); sb=$(stat_of "$name" tarsync best)
    cm=$(stat_of "$name" composefs median); cb=$(stat_of "$name" composefs best)
    printf '%-7s %-13s %-13s %-13s %-9s %-9s %-9s %-9s %-9s %s\n' "$name" \
        "$tm ($tb)" "$sm ($sb)" "$cm ($cb)" \
        "$(ratio "$cm" "$tm")" "$(ratio "$cb" "$tb")" \
        "$(stat_of "$name" tar cpu)" "$(stat_of "$name" composefs cpu)" \
        "$(stat_of "$name" tar maxrss)" "$(stat_of "$name" composefs maxrss)"
done
echo
echo "seconds; ratio = composefs / tar -x (goal: <= 1.00); cpu = user+sys seconds;"
echo "RSS = peak resident set (GNU time %M), max over runs (goal: composefs <= 64 MiB)"
for c in "${cases[@]}"; do
    name="${c%%:*}"
    [ -f "$work/repo-bytes.$name" ] && printf 'repository size after import (%s): %.0f MiB\n' "$name" \
        "$(awk '{ print $1 / 1048576 }' "$work/repo-bytes.$name")"
done
if [ "$keep" -eq 1 ]; then
    echo "raw measurements: $results"
fi
exit 0
