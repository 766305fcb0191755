#!/usr/bin/env bash
# composefs create-image vs mkfs.erofs + fsverity digest, side by side, on a
# real root filesystem (debootstrap minbase bookworm, from benches/rootfs.sh);
# and mkcomposefs --from-file of the same tree's dumpfile.
#
#   benches/create-image.sh [-n RUNS]
#
# For each run (alternating order), after `sync` and dropping caches (as root),
# then reading the tree once (`tar -cf - DIR | wc -c`: warm input):
#   (a) mkfs.erofs IMG DIR  +  fsverity digest --hash-alg=sha512 of every file
#       (what producing the same information costs with the standard tools)
#   (b) composefs --repo <fresh repo> create-image DIR   (includes its syncfs)
#   (c) composefs mkcomposefs --from-file DUMP IMG       (the dumpfile of the tree)
# Work goes to target/bench-work/; outputs are removed at the end, not between
# runs (ext4 scans recently freed inodes when allocating: see import-tar.sh).
# stdout: the results table. Progress: stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    *) echo "usage: $0 [-n RUNS]" >&2; exit 2 ;;
  esac
done

command -v mkfs.erofs >/dev/null || { echo "needs mkfs.erofs (apt-get install erofs-utils)" >&2; exit 1; }
command -v fsverity >/dev/null || { echo "needs fsverity (apt-get install fsverity)" >&2; exit 1; }
bash benches/rootfs.sh >/dev/null
src=target/bench-data/bookworm-minbase
[ -d "$src" ] || { echo "no root filesystem at $src" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d -p "$PWD/target" bench-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
bin="$work/composefs"
cp target/release/composefs "$bin"

nfiles=$(find "$src" -type f | wc -l)
bytes=$(du -sb "$src" | cut -f1)
echo "tree: $src, $(find "$src" | wc -l) entries, $nfiles regular files, $((bytes / 1048576)) MiB" >&2

now() { date +%s.%N; }
settle() {
  sync
  if [ "$(id -u)" -eq 0 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  tar -cf - -C "$src" . | wc -c >/dev/null
}

digest_all() { find "$src" -type f -print0 | xargs -0 -n 256 fsverity digest --hash-alg=sha512 >/dev/null; }

# The tree's dumpfile, for (c).
"$bin" --repo "$work/r0" init >/dev/null
"$bin" --repo "$work/r0" create-image "$src" --name t >/dev/null
"$bin" --repo "$work/r0" dump t > "$work/tree.dump"

declare -a ta tb tc
for i in $(seq 1 "$runs"); do
  for which in a b; do
    [ $((i % 2)) -eq 0 ] && which=$([ $which = a ] && echo b || echo a)
    settle
    if [ $which = a ]; then
      t0=$(now); mkfs.erofs --quiet "$work/img$i.erofs" "$src" >/dev/null; digest_all; t1=$(now)
      ta+=("$(echo "$t1 - $t0" | bc)")
      echo "run $i: mkfs.erofs + fsverity digest ${ta[-1]} s" >&2
    else
      "$bin" --repo "$work/r$i" init >/dev/null
      t0=$(now); "$bin" --repo "$work/r$i" create-image "$src" --name t >/dev/null; t1=$(now)
      tb+=("$(echo "$t1 - $t0" | bc)")
      echo "run $i: composefs create-image ${tb[-1]} s" >&2
    fi
  done
  t0=$(now); "$bin" mkcomposefs --from-file "$work/tree.dump" "$work/fromfile$i.img"; t1=$(now)
  tc+=("$(echo "$t1 - $t0" | bc)")
done
peak=$(/usr/bin/time -f %M "$bin" mkcomposefs --from-file "$work/tree.dump" "$work/peak.img" 2>&1 >/dev/null | tail -1)

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f", a[int((NR+1)/2)], a[1]}'; }
read -r ma ba <<<"$(stats "${ta[@]}")"
read -r mb bb <<<"$(stats "${tb[@]}")"
read -r mc bc_ <<<"$(stats "${tc[@]}")"
printf '%-44s %9s %9s\n' "" "median s" "best s"
printf '%-44s %9s %9s\n' "mkfs.erofs + fsverity digest (sha512)" "$ma" "$ba"
printf '%-44s %9s %9s\n' "composefs create-image (incl. syncfs)" "$mb" "$bb"
printf '%-44s %9s %9s\n' "composefs mkcomposefs --from-file" "$mc" "$bc_"
printf 'ratio create-image / (mkfs.erofs + digest): median %.2f, best %.2f\n' \
  "$(echo "$mb / $ma" | bc -l)" "$(echo "$bb / $ba" | bc -l)"
echo "mkcomposefs --from-file peak RSS: $((peak / 1024)) MiB; dumpfile $(wc -l < "$work/tree.dump") lines"
