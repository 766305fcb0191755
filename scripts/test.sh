#!/usr/bin/env bash
# The whole test suite: unit, integration and FUSE tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# A real root filesystem for tests/c_rootfs.rs (debootstrap minbase
# bookworm, built once into target/bench-data, about 4 minutes; needs root).
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO bash benches/rootfs.sh >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --all-targets --features fuzzing 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
