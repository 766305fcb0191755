#!/usr/bin/env bash
# composefs oci pull vs skopeo copy, side by side, from a local registry.
#
#   benches/oci-pull.sh [-n RUNS] [--bin=PATH] [--settle=SECONDS]
#
# Setup (untimed): the debootstrap minbase bookworm rootfs (benches/rootfs.sh)
# as two OCI images (umoci): `rootfs:1`, one layer holding the whole tar,
# and `rootfs:2`, two layers (./usr, then everything else), pushed with
# skopeo to Debian's docker-registry on 127.0.0.1 (skopeo gzips the
# layers on the way). Each run, for each image, alternating the order:
#   (a) skopeo copy docker://127.0.0.1:PORT/bench/rootfs:T oci:<fresh dir>:T
#   (b) composefs --repo <fresh repo> oci pull docker://127.0.0.1:PORT/bench/rootfs:T
# with `sync; drop_caches` before each, and peak RSS from GNU time. Then
# the time from `composefs mount oci/rootfs` starting to `ls` of the root
# returning. Needs root (drop_caches). stdout: the table only.
#
# ext4 without a journal (as on the machines here) scans for "recently
# deleted" inodes when it allocates new ones for a few minutes after a mass
# delete: file creation is then several times slower. A run that starts less
# than --settle seconds (default 361) after this benchmark last removed its
# work directory waits out the rest; --settle=0 skips the wait.
set -euo pipefail
runs=5
prebuilt=""
settle_s=361
while [ $# -gt 0 ]; do
    case "$1" in
        -n) runs="$2"; shift ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        --settle=*) settle_s="${1#--settle=}" ;;
        *) echo "usage: $0 [-n RUNS] [--bin=PATH] [--settle=SECONDS]" >&2; exit 2 ;;
    esac
    shift
done
log() { printf 'bench: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/deps.sh
if [ -n "$prebuilt" ]; then src_bin="$(realpath "$prebuilt")"; else
    cargo build --release --quiet >&2; src_bin="$root/target/release/composefs"; fi
mapfile -t inputs < <(benches/rootfs.sh)
tarball="${inputs[0]}"
rootdir="${tarball%.tar}"
work="$root/target/bench-work-oci"
stamp="$root/target/.bench-work-oci-removed"
if [ -e "$work" ]; then rm -rf "$work"; sync; touch "$stamp"; fi
mkdir -p "$work"
# A copy: a concurrent cargo build cannot swap the binary mid-run.
bin="$work/composefs"; cp "$src_bin" "$bin"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg=$!
mnt="$work/mnt"; mkdir -p "$mnt"
cleanup() { mountpoint -q "$mnt" && "$bin" umount "$mnt"; kill "$reg" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
base="docker://127.0.0.1:$port/bench/rootfs"
umoci init --layout "$work/layout" >&2
umoci new --image "$work/layout:1" >&2
umoci raw add-layer --image "$work/layout:1" "$tarball" >&2
umoci new --image "$work/layout:2" >&2
tar -C "$rootdir" -cf "$work/usr.tar" ./usr
tar -C "$rootdir" --exclude=./usr -cf "$work/rest.tar" .
umoci raw add-layer --image "$work/layout:2" "$work/usr.tar" >&2
umoci raw add-layer --image "$work/layout:2" "$work/rest.tar" >&2
rm -f "$work/usr.tar" "$work/rest.tar"
media=()
for t in 1 2; do
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$work/layout:$t" "$base:$t" >&2
    media[$t]=$(skopeo inspect --raw --tls-verify=false "$base:$t" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(" + ".join(l["mediaType"].rsplit(".",1)[-1] + " " + str(l["size"]) for l in m["layers"]))')
    log "image $base:$t, layers: ${media[$t]}"
done
if [ -f "$stamp" ]; then
    age=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
    if [ "$age" -lt "$settle_s" ]; then
        log "waiting $((settle_s - age))s: inodes freed by the last cleanup are still 'recently deleted' for ext4"
        sleep $((settle_s - age))
    fi
fi

results="$work/results"; : >"$results"
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
timed() { # timed KEY CMD...: seconds and peak RSS into results
    local key="$1"; shift
    cold
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r secs kib <"$work/time"
    echo "$key $secs $((kib / 1024))" >>"$results"
    log "$key ${secs}s $((kib / 1024)) MiB"
}
for i in $(seq 1 "$runs"); do
  for t in 1 2; do
    a=(timed "skopeo$t" skopeo --insecure-policy copy --quiet --src-tls-verify=false "$base:$t" "oci:$work/skopeo-$t-$i:$t")
    b=(timed "composefs$t" "$bin" --repo "$work/repo-$t-$i" oci pull "$base:$t" --name rootfs)
    "$bin" --repo "$work/repo-$t-$i" init >/dev/null
    if [ $(((i + t) % 2)) -eq 1 ]; then "${a[@]}"; "${b[@]}"; else "${b[@]}"; "${a[@]}"; fi
    t0=$(date +%s%N); "$bin" --repo "$work/repo-$t-$i" mount oci/rootfs "$mnt"; ls "$mnt" >/dev/null; t1=$(date +%s%N)
    echo "mount_ls$t $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') 0" >>"$results"
    "$bin" umount "$mnt"
  done
done
med() { awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf 'oci pull of the debootstrap minbase rootfs from a local registry, medians of %s runs\n' "$runs"
printf '%-34s %8s %8s %8s\n' measure skopeo composefs ratio
for t in 1 2; do
    s=$(med "skopeo$t" 2); c=$(med "composefs$t" 2)
    printf '%-34s %8s %8s %8s\n' "pull seconds, $t layer(s)" "$s" "$c" "$(awk -v a="$c" -v b="$s" 'BEGIN { printf "%.2f", a / b }')"
    printf '%-34s %8s %8s\n' "peak RSS MiB, $t layer(s)" "$(med "skopeo$t" 3)" "$(med "composefs$t" 3)"
    printf '%-34s %8s %8s\n' "mount + first ls seconds, $t layer(s)" "-" "$(med "mount_ls$t" 2)"
done
for t in 1 2; do printf 'image %s: %s\n' "$t" "${media[$t]}"; done
