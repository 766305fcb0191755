#!/usr/bin/env bash
# Build (once) a real root filesystem and its tar for the import benchmarks.
#
#   benches/rootfs.sh [--include=PKG,PKG...] [--copies=N] [OUTDIR]
#
# Runs `debootstrap --variant=minbase bookworm` (as root) against the Debian
# mirror configured in /etc/apt/sources.list.d/*.sources (deb822) or
# /etc/apt/sources.list, then `tar -C DIR -cf NAME.tar .` and a gzip copy
# (`gzip -6`). Everything lands in OUTDIR (default: target/bench-data/ under
# the repository, so that it is on the same disk as the build tree) and is
# reused on later runs: delete OUTDIR/NAME* to rebuild. Downloaded .debs are
# kept in OUTDIR/debs (debootstrap --cache-dir) so a rebuild does not
# download them again; the tree is the same as without --cache-dir.
#
#   --include=PKG,...  extra packages for debootstrap, to grow the tree (plain
#                      minbase bookworm already gives a ~195 MiB / 204 MB tar:
#                      121 MiB /usr, 48 MiB of apt Packages lists and 31 MiB
#                      of .debs that debootstrap leaves in var/cache/apt/archives)
#   --copies=N         also write NAME-xN.tar: one tar holding N copies of the
#                      root filesystem (copy1/ ... copyN/), for memory-flatness
#                      checks on a larger input
#   COMPOSEFS_BENCH_MIRROR=URI overrides the mirror found in apt's sources.
#
# Prints, on stdout, the absolute paths of the plain tar and the gzip tar (and
# of the -xN tar when --copies is given), one per line. Progress goes to stderr.
# Installs debootstrap and GNU time (/usr/bin/time) with apt-get when missing.

set -euo pipefail

SUITE=bookworm
VARIANT=minbase
include=""
copies=0
outdir=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit "${1:-2}"; }
log() { printf 'rootfs: %s\n' "$*" >&2; }
die() { printf 'rootfs: error: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
    case "$arg" in
        --include=*) include="${arg#--include=}" ;;
        --copies=*) copies="${arg#--copies=}" ;;
        -h|--help) usage 0 ;;
        -*) usage ;;
        *) [ -z "$outdir" ] || usage; outdir="$arg" ;;
    esac
done
[[ "$copies" =~ ^[0-9]+$ ]] || die "--copies wants a number, not '$copies'"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
outdir="${outdir:-$repo_root/target/bench-data}"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, and tar restoring owners)"

apt_updated=0
need_pkg() { # need_pkg COMMAND-PATH PACKAGE
    if [ ! -x "$1" ] && ! command -v "$1" >/dev/null 2>&1; then
        if [ "$apt_updated" -eq 0 ]; then
            log "apt-get update"
            apt-get update -qq >&2
            apt_updated=1
        fi
        log "installing $2"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
    fi
}
need_pkg /usr/bin/time time
need_pkg gzip gzip

# The name encodes what went into the tree, so different --include sets are
# cached side by side.
name="$SUITE-$VARIANT"
if [ -n "$include" ]; then
    include="$(tr ',' '\n' <<<"$include" | sed '/^$/d' | sort -u | paste -sd, -)"
    name="$name-plus-$(printf '%s' "$include" | sha256sum | cut -c1-8)"
fi
dir="$outdir/$name"
tarfile="$outdir/$name.tar"
gzfile="$outdir/$name.tar.gz"

# The mirror: the first enabled deb822 stanza (or one-line entry) of type
# `deb` whose suites include bookworm.
find_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uris != "") {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                types = suites = uris = ""; enabled = "yes"
            }
            BEGIN { enabled = "yes" }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 }
            tolower($1) == "uris:"    { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }
        ' "$f"
    done | head -n1 | grep . && return 0
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($i ~ /\]$/ && $2 ~ /^\[/) i++; if ($(i+1) == suite) { print $i; exit } }' |
        grep . && return 0
    return 1
}

if [ ! -s "$tarfile" ] || [ ! -f "$dir/.bench-complete" ]; then
    if [ ! -f "$dir/.bench-complete" ]; then
        need_pkg debootstrap debootstrap
        mirror="${COMPOSEFS_BENCH_MIRROR:-$(find_mirror || true)}"
        [ -n "$mirror" ] || die "no '$SUITE' mirror found in /etc/apt/sources.list(.d); set COMPOSEFS_BENCH_MIRROR"
        rm -rf "$dir" "$tarfile" "$gzfile"
        mkdir -p "$outdir/debs"
        log "debootstrap --variant=$VARIANT${include:+ --include=$include} $SUITE from $mirror (a few minutes)"
        # Mounts that debootstrap makes inside the target are undone by its
        # own exit trap; output goes to a log that is shown on failure.
        if ! debootstrap --variant="$VARIANT" ${include:+--include="$include"} \
                --cache-dir="$outdir/debs" "$SUITE" "$dir" "$mirror" >"$outdir/$name.debootstrap.log" 2>&1; then
            tail -n 30 "$outdir/$name.debootstrap.log" >&2
            die "debootstrap failed (log: $outdir/$name.debootstrap.log)"
        fi
        # Leave nothing from the build host mounted in the tree.
        for m in proc sys dev/pts dev; do
            if mountpoint -q "$dir/$m" 2>/dev/null; then umount -l "$dir/$m" || true; fi
        done
        touch "$dir/.bench-complete"
    fi
    log "tar -C $dir -cf $tarfile ."
    # The marker file is not part of the root filesystem.
    tar -C "$dir" --exclude=./.bench-complete -cf "$tarfile.tmp" .
    mv "$tarfile.tmp" "$tarfile"
    rm -f "$gzfile"
fi

if [ ! -s "$gzfile" ]; then
    log "gzip -6 $tarfile"
    gzip -6 -n -c "$tarfile" >"$gzfile.tmp"
    mv "$gzfile.tmp" "$gzfile"
fi

printf '%s\n%s\n' "$tarfile" "$gzfile"

if [ "$copies" -gt 0 ]; then
    big="$outdir/$name-x$copies.tar"
    if [ ! -s "$big" ]; then
        log "tar of $copies copies of the tree -> $big"
        # Each copy under its own top-level name; the tree is stored N times
        # (file contents repeat, so a content-addressed store dedups them).
        # GNU tar applies every --transform to every member, so append the
        # copies one at a time (-r) instead of naming the tree N times.
        rm -f "$big.tmp"
        for i in $(seq 1 "$copies"); do
            tar -C "$dir" --exclude=./.bench-complete --transform="s,^\\.,copy$i," -rf "$big.tmp" .
        done
        mv "$big.tmp" "$big"
    fi
    printf '%s\n' "$big"
fi

log "$(du -h --apparent-size "$tarfile" | cut -f1) $tarfile ($(tar -tf "$tarfile" | wc -l) members), $(du -h --apparent-size "$gzfile" | cut -f1) gzip"
