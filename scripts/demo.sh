#!/usr/bin/env bash
# The main job on built-in sample data: serve the bundled sample ostree
# repository (tests/fixtures/sample-ostree.tar.gz: two commits of a tiny OS,
# a static delta between them, a summary) over HTTP on 127.0.0.1, mount and
# diff them remotely before any pull, pull both commits into a fresh
# composefs repository (the second one through the delta), mount both live
# through FUSE straight from the repository and `diff -r` them (and `composefs diff` them from the repository), build a
# composefs image of the newest, mount it with the
# kernel (as root: EROFS + overlayfs), compare it with `ostree checkout`.
# Then the tar path: import the bundled sample tar and read it back byte for
# byte. With --keep, the FUSE mounts stay up for you to browse.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --quiet
bin=$PWD/target/release/composefs

work=$(mktemp -d -t composefs-demo.XXXXXX)
repo=$work/repo
server=""
keep=0
[ "${1:-}" = "--keep" ] && keep=1
cleanup() {
  if [ "$keep" -eq 0 ]; then
    for m in "$work/v1.0" "$work/v1.1"; do
      mountpoint -q "$m" 2>/dev/null && "$bin" umount "$m"
    done
  fi
  mountpoint -q "$work/mnt" 2>/dev/null && "$bin" umount "$work/mnt"
  mountpoint -q "$work/remote" 2>/dev/null && "$bin" umount "$work/remote"
  [ "$keep" -eq 0 ] && mountpoint -q "$work/all" 2>/dev/null && "$bin" umount "$work/all"
  [ "$keep" -eq 1 ] && return
  [ -n "$server" ] && kill "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/ostree"
tar -xzf tests/fixtures/sample-ostree.tar.gz -C "$work/ostree"
python3 -m http.server 0 --bind 127.0.0.1 --directory "$work/ostree" >"$work/http.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q "port" "$work/http.log" && break; sleep 0.05; done
port=$(grep -o 'port [0-9]*' "$work/http.log" | head -n1 | cut -d' ' -f2)
url="http://127.0.0.1:$port"

echo "== composefs init"
"$bin" --repo "$repo" init
echo "== composefs ostree ls-remote $url"
"$bin" --repo "$repo" ostree ls-remote "$url"
v10=$(ostree --repo="$work/ostree" rev-parse sample/stable^)
echo "== composefs mount $url#sample/stable REMOTE   (before any pull: directories first, each file fetched and verified on first read)"
mkdir -p "$work/remote"
"$bin" --repo "$repo" mount "$url#sample/stable" "$work/remote"
ls "$work/remote"
echo "REMOTE/etc/os-release:"; cat "$work/remote/etc/os-release"
"$bin" umount "$work/remote"
echo "== composefs diff $url#$v10 $url#sample/stable   (two remote versions compared from their checksums: no file fetched)"
"$bin" --repo "$repo" diff "$url#$v10" "$url#sample/stable" || true
echo "== composefs ostree pull $url $v10 --name sample-1.0   (object by object, each verified)"
"$bin" --repo "$repo" ostree pull "$url" "$v10" --name sample-1.0
echo "== composefs ostree pull $url sample/stable   (1.1: through the static delta from 1.0)"
"$bin" --repo "$repo" ostree pull "$url" sample/stable
echo "== composefs ostree list"
"$bin" --repo "$repo" ostree list
echo "== composefs ostree log sample/stable --stat"
"$bin" --repo "$repo" ostree log sample/stable --stat
echo "== composefs mount sample-1.0 V1.0; composefs mount sample/stable V1.1   (live FUSE views, nothing checked out)"
mkdir "$work/v1.0" "$work/v1.1"
"$bin" --repo "$repo" mount sample-1.0 "$work/v1.0"
"$bin" --repo "$repo" mount sample/stable "$work/v1.1"
ls -l "$work/v1.1/usr/bin"
echo "== diff -r V1.0 V1.1   (what changed between the two versions)"
diff -r --no-dereference "$work/v1.0" "$work/v1.1" || true
echo "== composefs diff sample-1.0 sample/stable --stat   (the same from the repository: equal subtrees skipped by checksum)"
"$bin" --repo "$repo" diff sample-1.0 sample/stable || true
"$bin" --repo "$repo" diff sample-1.0 sample/stable --stat || true
echo "== composefs cat sample/stable:/etc/os-release   (the same, without mounting)"
"$bin" --repo "$repo" cat sample/stable:/etc/os-release
echo "== composefs ostree create-image sample/stable --image-name sample"
"$bin" --repo "$repo" ostree create-image sample/stable --image-name sample
echo "== composefs ls sample /usr/bin"
"$bin" --repo "$repo" ls sample /usr/bin
if [ "$(id -u)" -eq 0 ]; then
  echo "== composefs mount --kernel sample MNT; cat MNT/etc/os-release; diff -r with ostree checkout"
  mkdir "$work/mnt"
  "$bin" --repo "$repo" mount --kernel sample "$work/mnt"
  cat "$work/mnt/etc/os-release"
  ostree --repo="$work/ostree" checkout sample/stable "$work/checkout"
  diff -r "$work/checkout" "$work/mnt" && echo "mount matches ostree checkout"
  "$bin" umount "$work/mnt"
else
  echo "== (run as root to also mount the image with the kernel)"
fi

echo "== composefs import-tar sample tests/fixtures/sample.tar.gz   (a tar, split into a splitstream)"
"$bin" --repo "$repo" import-tar sample tests/fixtures/sample.tar.gz
echo "== byte-identical when read back?"
gzip -dc tests/fixtures/sample.tar.gz | cmp - <("$bin" --repo "$repo" cat sample) && echo "yes"
echo "== composefs fsck"
"$bin" --repo "$repo" fsck
echo "== composefs mount ALL   (the whole repository, live: every ref and commit, no REF given)"
mkdir -p "$work/all"
"$bin" --repo "$repo" mount "$work/all"
for d in ostree ostree/sample images commits; do echo "ALL/$d/: $(ls "$work/all/$d" | tr '\n' ' ')"; done
echo "ALL/ostree/sample/stable/etc/os-release:"; cat "$work/all/ostree/sample/stable/etc/os-release"
if [ "$keep" -eq 1 ]; then
  echo "== still mounted: the two versions at $work/v1.0 and $work/v1.1, everything at $work/all"
  echo "   unmount with: $bin umount $work/v1.0; $bin umount $work/v1.1; $bin umount $work/all"
else
  "$bin" umount "$work/all"
fi
