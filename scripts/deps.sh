#!/usr/bin/env bash
# Install the Debian packages composefs's tests and demo use (idempotent).
# Runs apt-get as root, or through sudo for a user.
set -euo pipefail

PKGS=(
  fsverity   # `fsverity digest`: the oracle for our digests
  attr       # getfattr/setfattr: xattrs in test trees
  tar gzip zstd
  fuse3      # fusermount3: FUSE mounts for users, and the FUSE tests
  util-linux # flock, mknod helpers
  util-linux-extra # fincore: fuse-tests/prefetch.rs sees what the read-ahead cached
  time       # GNU /usr/bin/time for peak-memory figures in benches
  erofs-utils # fsck.erofs checks every image we write; mkfs.erofs for benches
  ostree     # makes the repositories we pull, and the checkouts we compare with
  gpg        # keys and signatures for signed commits
  python3    # `python3 -m http.server` serves ostree repositories in tests
  nginx-light # serves ostree repositories in the pull benchmark
  skopeo     # builds OCI layouts and archives, pushes them to the registry
  umoci      # the oracle for OCI images: `umoci unpack`
  docker-registry # a real OCI registry on 127.0.0.1 for the tests
  containerd stargz-snapshotter # ctr-remote converts images to eStargz (tests/remote_oci.rs)
  strace     # tests/crash.rs: refs are published only after a syncfs
  g++        # compiles libFuzzer for the fuzz targets (scripts/fuzz.sh)
  podman     # builds, saves and pushes OCI images: layers as real producers write them
  curl xz-utils gpgv debian-archive-keyring # scripts/c-composefs.sh: Debian's C tools, verified
  man-db zsh # tests/cli_experience.rs: `man -l` renders our pages, zsh parses our completions
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# cfsctl (composefs-rs 0.9.4): the oracle for the shared repository format,
# stream bytes and image digests (tests/compat_*.rs), with its `http`
# feature for `cfsctl fetch` from our served repositories (tests/fetch.rs).
# Built from crates.io once (about 8 minutes); an installed 0.9.4 that has
# `fetch` is reused.
CFSCTL_VERSION=0.9.4
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! "$cargo_bin/cfsctl" --version 2>/dev/null | grep -qx "cfsctl $CFSCTL_VERSION" ||
   ! "$cargo_bin/cfsctl" --help 2>/dev/null | grep -qw fetch; then
  echo "installing: cfsctl $CFSCTL_VERSION (cargo install --locked composefs-ctl --features http)" >&2
  cargo install --locked --quiet --force --features http "composefs-ctl@$CFSCTL_VERSION" >&2
fi

# The C composefs 1.0.8 tools and upstream test assets (scripts/c-composefs.sh):
# the oracle for `composefs mkcomposefs` and `composefs dump` (tests/c_*.rs).
"$(dirname "$0")/c-composefs.sh"
