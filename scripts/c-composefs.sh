#!/usr/bin/env bash
# The C composefs 1.0.8 tools, the oracle for `composefs mkcomposefs` and
# `composefs dump`: Debian's own binary packages, and the upstream test assets
# from Debian's source package. Nothing is compiled.
#
# Debian ships composefs 1.0.8 only in unstable/testing, built against a newer
# C library than this machine's (bookworm), so the binaries run with
# unstable's libc6 through its own dynamic loader (`ld.so --library-path`),
# extracted beside them; libcrypto comes from the host.
#
# Everything is checked: the archive's InRelease with gpgv against
# debian-archive-keyring, the package indexes against it, each .deb and the
# source tarball against the indexes (the tarball also against a pinned
# sha256).
#
#   scripts/c-composefs.sh [DIR]     (default $COMPOSEFS_C_DIR, else
#                                     /var/cache/composefs-c-1.0.8 for root,
#                                     ~/.cache/composefs-c-1.0.8 for users)
# leaves DIR/bin/{mkcomposefs,composefs-info} and DIR/tests/ (the upstream
# tests/ folder: assets and test-*.sh). Idempotent: a complete DIR is kept.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then default=/var/cache/composefs-c-1.0.8
else default="${XDG_CACHE_HOME:-$HOME/.cache}/composefs-c-1.0.8"; fi
DIR="${1:-${COMPOSEFS_C_DIR:-$default}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ORIG=composefs_1.0.8.orig.tar.gz
ORIG_SHA256=2b2b11f9a25744c82e9e12b098eefd0ab42d56ae6322634c15f966b3a64926ef

if [ -f "$DIR/VERSIONS" ] && printf '/ 0 40755 1 0 0 0 0.0 - - -\n' |
  "$DIR/bin/mkcomposefs" --print-digest-only --from-file - >/dev/null 2>&1; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
fetch() { curl -fsS --retry 3 -m 300 -o "$2" "$1"; }

# A verified index of SUITE: prints the local path of FILE (e.g.
# main/binary-amd64/Packages.xz), checked against the signed InRelease.
index() {
  local suite=$1 file=$2 out="$work/$1-${2//\//_}"
  if [ ! -f "$work/$suite.Release" ]; then
    fetch "$MIRROR/dists/$suite/InRelease" "$work/$suite.InRelease"
    gpgv --keyring "$KEYRING" --output "$work/$suite.Release" "$work/$suite.InRelease" 2>/dev/null ||
      { echo "c-composefs: bad signature on $suite InRelease" >&2; exit 1; }
  fi
  fetch "$MIRROR/dists/$suite/$file" "$out"
  local want
  want=$(awk -v f="$file" '/^SHA256:/{s=1;next} /^[^ ]/{s=0} s&&$3==f{print $1}' "$work/$suite.Release")
  [ -n "$want" ] && echo "$want  $out" | sha256sum -c --quiet - >&2 ||
    { echo "c-composefs: $suite/$file does not match InRelease" >&2; exit 1; }
  echo "$out"
}

# "Filename SHA256 Version" of PACKAGE in a Packages.xz.
pkg() {
  xz -dc "$1" | awk -v p="$2" '
    $0 == "Package: " p { f = 1 }
    f && /^Version:/ { v = $2 } f && /^Filename:/ { n = $2 } f && /^SHA256:/ { s = $2 }
    f && /^$/ { if (!done) print n, s, v; done = 1; f = 0 }'
}

mkdir -p "$work/root"
found=""
for suite in unstable testing; do
  packages=$(index "$suite" main/binary-amd64/Packages.xz)
  read -r _ _ v < <(pkg "$packages" composefs) || true
  case "${v:-}" in 1.0.8-*) found=$suite; break ;; esac
done
[ -n "$found" ] || { echo "c-composefs: no composefs 1.0.8 in Debian unstable or testing" >&2; exit 1; }
for p in composefs libcomposefs1 libc6; do
  read -r file sha ver < <(pkg "$packages" "$p")
  echo "$p $ver ($found)" >> "$work/VERSIONS"
  fetch "$MIRROR/$file" "$work/$p.deb"
  echo "$sha  $work/$p.deb" | sha256sum -c --quiet - || { echo "c-composefs: $file: bad sha256" >&2; exit 1; }
  dpkg-deb -x "$work/$p.deb" "$work/root"
done

fetch "$MIRROR/pool/main/c/composefs/$ORIG" "$work/$ORIG"
echo "$ORIG_SHA256  $work/$ORIG" | sha256sum -c --quiet - || { echo "c-composefs: $ORIG: bad sha256" >&2; exit 1; }
tar -xzf "$work/$ORIG" -C "$work" composefs-1.0.8/tests

rm -rf "$DIR.new"
mkdir -p "$DIR.new/bin"
mv "$work/root" "$DIR.new/root"
mv "$work/composefs-1.0.8/tests" "$DIR.new/tests"
for tool in mkcomposefs composefs-info; do
  cat > "$DIR.new/bin/$tool" <<EOF
#!/bin/sh
# Debian's $tool 1.0.8, run with its own C library (scripts/c-composefs.sh).
exec "$DIR/root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$DIR/root/usr/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$DIR/root/usr/bin/$tool" "\$@"
EOF
  chmod +x "$DIR.new/bin/$tool"
done
mv "$work/VERSIONS" "$DIR.new/VERSIONS"
rm -rf "$DIR"
mv "$DIR.new" "$DIR"
sed 's/^/c-composefs: /' "$DIR/VERSIONS" >&2
