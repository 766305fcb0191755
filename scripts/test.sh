#!/usr/bin/env bash
# The whole test suite: unit, integration and FUSE tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo test --release --all-targets
