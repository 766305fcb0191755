#!/usr/bin/env bash
# composefs mkcomposefs vs the C mkcomposefs 1.0.8, side by side, on a real
# root filesystem directory (debootstrap minbase bookworm, benches/rootfs.sh),
# checking on every run that both wrote the same bytes.
#
#   benches/mkcomposefs.sh [-n RUNS]
#
# Cases, each run in alternating order, medians of RUNS (default 7):
#   warm:  mkcomposefs DIR IMG, the tree already in the page cache
#   cold:  the same after `sync; echo 3 > /proc/sys/vm/drop_caches` (root)
#   store: mkcomposefs --digest-store=STORE DIR IMG into an empty store (warm
#          input; both tools copy every file and fsync it)
# The C tools come from scripts/c-composefs.sh (Debian's binaries, run with
# their own C library through its loader: a few ms of start-up included).
# Prints a table of medians and the ratio ours / C. Progress: stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=7
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    *) echo "usage: $0 [-n RUNS]" >&2; exit 2 ;;
  esac
done

bash scripts/c-composefs.sh >&2
cdir=${COMPOSEFS_C_DIR:-$([ "$(id -u)" -eq 0 ] && echo /var/cache/composefs-c-1.0.8 || echo "${XDG_CACHE_HOME:-$HOME/.cache}/composefs-c-1.0.8")}
cmk="$cdir/bin/mkcomposefs"
bash benches/rootfs.sh >/dev/null
src=target/bench-data/bookworm-minbase
[ -d "$src" ] || { echo "no root filesystem at $src" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d -p "$PWD/target" bench-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
ours="$work/composefs"
cp target/release/composefs "$ours"
echo "tree: $src, $(find "$src" | wc -l) entries, $(du -sm "$src" | cut -f1) MiB" >&2

now() { date +%s.%N; }
drop() { sync; if [ "$(id -u)" -eq 0 ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
warm() { tar -cf - -C "$src" . | wc -c >/dev/null; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# run CASE TOOL: prints seconds; leaves $work/TOOL.img
run() {
  local case=$1 tool=$2 args=()
  rm -rf "$work/store-$tool"
  case $case in
    cold) drop ;;
    *) warm ;;
  esac
  [ "$case" = store ] && args=(--digest-store="$work/store-$tool")
  local t0 t1
  t0=$(now)
  if [ "$tool" = c ]; then "$cmk" "${args[@]}" "$src" "$work/$tool.img"
  else "$ours" mkcomposefs "${args[@]}" "$src" "$work/$tool.img"; fi
  t1=$(now)
  echo "$t1 - $t0" | bc
}

printf '| case | C mkcomposefs (s) | composefs mkcomposefs (s) | ours / C |\n|---|---|---|---|\n'
for case in warm cold store; do
  tc=() to=()
  for i in $(seq 1 "$runs"); do
    order="c ours"; [ $((i % 2)) -eq 0 ] && order="ours c"
    for tool in $order; do
      t=$(run "$case" "$tool")
      if [ "$tool" = c ]; then tc+=("$t"); else to+=("$t"); fi
    done
    cmp -s "$work/c.img" "$work/ours.img" || { echo "images differ ($case, run $i)" >&2; exit 1; }
    echo "$case run $i: C ${tc[-1]} s, ours ${to[-1]} s" >&2
  done
  mc=$(median "${tc[@]}") mo=$(median "${to[@]}")
  printf '| %s | %.3f | %.3f | %.2f |\n' "$case" "$mc" "$mo" "$(echo "$mo / $mc" | bc -l)"
done
