#!/usr/bin/env bash
# The main job on built-in sample data: import the bundled sample tar into a
# fresh repository and show what is stored.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --quiet
bin=target/release/composefs

repo=$(mktemp -d -t composefs-demo.XXXXXX)
trap 'rm -rf "$repo"' EXIT
echo "== composefs init (repository in $repo)"
"$bin" --repo "$repo" init
echo "== composefs import-tar sample tests/fixtures/sample.tar.gz"
"$bin" --repo "$repo" import-tar sample tests/fixtures/sample.tar.gz
echo "== composefs refs"
"$bin" --repo "$repo" refs
echo "== composefs cat sample | tar -tv"
"$bin" --repo "$repo" cat sample | tar -tv
echo "== byte-identical to the original?"
gzip -dc tests/fixtures/sample.tar.gz | cmp - <("$bin" --repo "$repo" cat sample) && echo "yes"
echo "== composefs fsck"
"$bin" --repo "$repo" fsck
