#!/usr/bin/env bash
# Run the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer), one after the other.
#
#   scripts/fuzz.sh [--smoke] [--time SECONDS] [TARGET...]
#
# Builds every target (stable Rust: no sanitizer, see docs/fuzzing.md),
# then runs each given target (default: all) for SECONDS (default 600;
# --smoke: 1 s each on an unoptimised build, which compiles in a fraction
# of the time: for CI, so the targets keep building and their seeds still
# run clean). Each run starts from the seeds in fuzz/corpus/TARGET plus
# what earlier runs found (fuzz/work/TARGET, not committed; a smoke run
# starts from the seeds alone and keeps nothing), logs to fuzz/work/logs/,
# and prints execs/s and coverage from libFuzzer's final stats. A crash, panic,
# timeout (a slow input is a finding) or out-of-memory leaves the input in
# fuzz/artifacts/TARGET/ and makes the exit status non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-0}"
}

time_each=600
time_each_set=
smoke=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; time_each=${time_each_set:-1} ;;
    --time) time_each=${2:?--time needs a number of seconds}; time_each_set=$time_each; shift ;;
    --time=*) time_each=${1#--time=}; time_each_set=$time_each ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage 2 >&2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
case "$time_each" in ''|*[!0-9]*) echo "--time wants whole seconds" >&2; exit 2 ;; esac

all=()
for f in fuzz/fuzz_targets/*.rs; do
  all+=("$(basename "$f" .rs)")
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "no fuzz target $t (have: ${all[*]})" >&2; exit 2; }
done

# Per target: -max_len (bytes; above the largest seed), -rss_limit_mb
# (also the largest single allocation: libFuzzer's -malloc_limit_mb
# defaults to it).
declare -A MAX_LEN=(
  [splitstream]=65536 [erofs]=131072 [dumpfile]=65536 [tarsplit]=131072
  [ostree_commit]=16384 [ostree_dirtree]=16384 [ostree_dirmeta]=4096
  [ostree_fileheader]=65536 [ostree_summary]=16384
  [ostree_delta_superblock]=65536 [ostree_delta_part]=131072
  [ostree_detached_metadata]=16384 [oci_json]=16384 [oci_archive]=131072 [auth_challenge]=4096
)
declare -A RSS=(
  [tarsplit]=2048 [ostree_delta_part]=2048 [ostree_delta_superblock]=2048
  [splitstream]=2048 [erofs]=2048 [dumpfile]=2048 [ostree_fileheader]=1024
)
TIMEOUT=10 # seconds one input may take

TRIPLE=x86_64-unknown-linux-gnu
echo "== building fuzz targets"
build_start=$(date +%s)
if [ "$smoke" -eq 1 ]; then
  # What `cargo fuzz build -s none --dev` runs (cargo-fuzz 0.13), without
  # needing cargo-fuzz: compiling it would add ~40 s to a CI step that
  # must stay under 2 minutes. Same flags, same artifacts.
  RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
    -Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions" \
    cargo build --manifest-path fuzz/Cargo.toml --target "$TRIPLE" --bins
  BIN="${CARGO_TARGET_DIR:-$ROOT/fuzz/target}/$TRIPLE/debug"
else
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
  # -s none: the sanitizers need nightly; the targets are safe Rust and
  # libFuzzer still sees panics, timeouts and memory limits
  # (docs/fuzzing.md).
  (cd fuzz && cargo fuzz build -s none)
  BIN="${CARGO_TARGET_DIR:-$ROOT/fuzz/target}/$TRIPLE/release"
fi
build_secs=$(( $(date +%s) - build_start ))
echo "built in ${build_secs}s"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/composefs-fuzz.XXXXXX")
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  rm -rf "$scratch"
  scratch=$(mktemp -d /dev/shm/composefs-fuzz.XXXXXX)
fi
trap 'rm -rf "$scratch"' EXIT

found=()
summary=()
for t in "${targets[@]}"; do
  work="fuzz/work/$t"
  # A smoke run starts from the seeds alone, and keeps nothing.
  [ "$smoke" -eq 0 ] || work="$scratch/work-$t"
  arts="fuzz/artifacts/$t"
  log="fuzz/work/logs/$t.log"
  [ "$smoke" -eq 0 ] || log="$scratch/$t.log"
  mkdir -p "$work" "$arts" "$(dirname "$log")"
  echo "== $t: ${time_each}s"
  status=0
  COMPOSEFS_FUZZ_TMPDIR="$scratch/$t" "$BIN/$t" \
    -max_total_time="$time_each" \
    -max_len="${MAX_LEN[$t]:-65536}" \
    -rss_limit_mb="${RSS[$t]:-512}" \
    -timeout="$TIMEOUT" \
    -print_final_stats=1 \
    -artifact_prefix="$arts/" \
    "$work" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  rm -rf "${scratch:?}/$t"
  execs=$(grep -a '^stat::number_of_executed_units:' "$log" | tail -n 1 | awk '{ print $2 }')
  rate=$(grep -a '^stat::average_exec_per_sec:' "$log" | tail -n 1 | awk '{ print $2 }')
  slowest=$(grep -a '^stat::slowest_unit_time_sec:' "$log" | tail -n 1 | awk '{ print $2 }')
  rss=$(grep -a '^stat::peak_rss_mb:' "$log" | tail -n 1 | awk '{ print $2 }')
  last=$(grep -a -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
  if [ "$status" -eq 0 ]; then
    result="ok"
  else
    what=$(grep -a -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^:]*:[0-9]+' "$log" || echo "exit $status")
    art=$(grep -a -m1 -oE "Test unit written to [^ ]+" "$log" | sed 's/Test unit written to //' || true)
    result="FOUND ($what) ${art:-see $log}"
    found+=("$t")
    echo "   $t: $result"
    grep -a -A12 -E 'panicked at|ERROR: libFuzzer' "$log" | head -n 40 | sed 's/^/   /' || true
  fi
  line=$(printf '%-26s %6ss %11s %8s %6s %7s %12s %7s %6s  %s' "$t" "$time_each" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${slowest:-?}s" "${rss:-?}M" "$result")
  summary+=("$line")
  echo "$line"
done

echo
echo "== fuzz summary (build ${build_secs}s)"
printf '%-26s %7s %11s %8s %6s %7s %12s %7s %6s  %s\n' target time execs exec/s cov ft corpus slowest rss result
printf '%s\n' "${summary[@]}"
if [ ${#found[@]} -gt 0 ]; then
  echo "findings in: ${found[*]} (inputs under fuzz/artifacts/; see docs/fuzzing.md)"
  exit 1
fi
