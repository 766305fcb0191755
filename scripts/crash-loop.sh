#!/usr/bin/env bash
# The crash-consistency and concurrency acceptance runs, with a summary:
#   kill -9 harness (tests/crash.rs)    CRASH_ROUNDS=ROUNDS kills (default 204)
#   pulls + gc at once (tests/concurrency.rs) and mounted trees read while
#   gc runs (fuse-tests/concurrency.rs)  CONCURRENCY_ROUNDS rounds (default 52)
# CRASH_SEED / CONCURRENCY_SEED replay a failed run (each run prints its seed).
# Needs root, /dev/fuse, and the packages of scripts/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-204}
conc=${CONCURRENCY_ROUNDS:-52}
scripts/deps.sh
cargo test --release --test crash --test concurrency --test fuse --no-run 2>&1 | tail -n 1

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
t0=$(date +%s)
step() {
  local name=$1; shift
  local s; s=$(date +%s)
  echo "== $name"
  if "$@" >"$logs/$name" 2>&1; then
    echo "   ok ($(( $(date +%s) - s )) s)"
  else
    status=1
    echo "   FAILED ($(( $(date +%s) - s )) s); its output:"
    sed 's/^/   | /' "$logs/$name"
  fi
}
export CRASH_ROUNDS=$rounds CONCURRENCY_ROUNDS=$conc
step crash cargo test --release --test crash -- --nocapture --test-threads=1
step concurrency cargo test --release --test concurrency -- --nocapture
step fuse-concurrency cargo test --release --test fuse concurrency:: -- --nocapture --test-threads=1

echo
echo "== summary ($(( $(date +%s) - t0 )) s in all)"
grep -hE '^crash harness:|^  [a-z].*(kills|unkilled:|publications)|^concurrency:|^single-tree mount:|^test .* \.\.\. |^test result:' \
  "$logs/crash" "$logs/concurrency" "$logs/fuse-concurrency" 2>/dev/null | sed 's/^/  /' || true
exit "$status"
