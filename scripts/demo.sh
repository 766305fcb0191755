#!/usr/bin/env bash
# The main job on built-in sample data: import the bundled sample into a
# fresh repository, build its composefs image, mount it (as root, with the
# kernel: EROFS + overlayfs) and show what is inside.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --quiet
bin=$PWD/target/release/composefs

work=$(mktemp -d -t composefs-demo.XXXXXX)
repo=$work/repo
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && "$bin" umount "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT

echo "== composefs init"
"$bin" --repo "$repo" init
echo "== composefs import-tar sample tests/fixtures/sample.tar.gz   (the tar, split into a splitstream)"
"$bin" --repo "$repo" import-tar sample tests/fixtures/sample.tar.gz
echo "== byte-identical when read back?"
gzip -dc tests/fixtures/sample.tar.gz | cmp - <("$bin" --repo "$repo" cat sample) && echo "yes"
echo "== composefs create-image (the same tree as a composefs EROFS image)"
mkdir "$work/tree"
tar -xzf tests/fixtures/sample.tar.gz -C "$work/tree"
"$bin" --repo "$repo" create-image "$work/tree" --name sample
echo "== composefs refs"
"$bin" --repo "$repo" refs
echo "== composefs ls sample /usr/bin"
"$bin" --repo "$repo" ls sample /usr/bin
if [ "$(id -u)" -eq 0 ]; then
  echo "== composefs mount --kernel sample MNT; cat MNT/etc/os-release; diff -r with the source"
  mkdir "$work/mnt"
  "$bin" --repo "$repo" mount --kernel sample "$work/mnt"
  cat "$work/mnt/etc/os-release"
  diff -r "$work/tree" "$work/mnt" && echo "mount matches the source tree"
  "$bin" umount "$work/mnt"
else
  echo "== (run as root to also mount the image with the kernel)"
fi
echo "== composefs fsck"
"$bin" --repo "$repo" fsck
