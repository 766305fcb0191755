#!/usr/bin/env bash
# composefs oci pull vs skopeo copy, side by side, from a local registry.
#
#   benches/oci-pull.sh [-n RUNS] [--bin=PATH]
#
# Setup (untimed): the debootstrap minbase bookworm rootfs tar
# (benches/rootfs.sh) as a one-layer OCI image (umoci), pushed with skopeo
# to Debian's docker-registry on 127.0.0.1 (skopeo gzips the layer on the
# way). Each run, alternating the order:
#   (a) skopeo copy docker://127.0.0.1:PORT/bench/rootfs:1 oci:<fresh dir>:1
#   (b) composefs --repo <fresh repo> oci pull docker://127.0.0.1:PORT/bench/rootfs:1
# with `sync; drop_caches` before each, and peak RSS from GNU time. Then
# the time from `composefs mount oci/rootfs` starting to `ls` of the root
# returning. Needs root (drop_caches). stdout: the table only.
set -euo pipefail
runs=5
prebuilt=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n) runs="$2"; shift ;;
        --bin=*) prebuilt="${1#--bin=}" ;;
        *) echo "usage: $0 [-n RUNS] [--bin=PATH]" >&2; exit 2 ;;
    esac
    shift
done
log() { printf 'bench: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/deps.sh
if [ -n "$prebuilt" ]; then bin="$(realpath "$prebuilt")"; else
    cargo build --release --quiet >&2; bin="$root/target/release/composefs"; fi
mapfile -t inputs < <(benches/rootfs.sh)
tarball="${inputs[0]}"
work="$root/target/bench-work-oci"
rm -rf "$work"; mkdir -p "$work"
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
image="docker://127.0.0.1:$port/bench/rootfs:1"
umoci init --layout "$work/layout" >&2
umoci new --image "$work/layout:1" >&2
umoci raw add-layer --image "$work/layout:1" "$tarball" >&2
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$work/layout:1" "$image" >&2
media=$(skopeo inspect --raw --tls-verify=false "$image" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(", ".join(l["mediaType"].rsplit(".",1)[-1] + " " + str(l["size"]) for l in m["layers"]))')
log "image: $image, layers: $media"

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
    a=(timed skopeo skopeo --insecure-policy copy --quiet --src-tls-verify=false "$image" "oci:$work/skopeo-$i:1")
    b=(timed composefs "$bin" --repo "$work/repo-$i" oci pull "$image" --name rootfs)
    "$bin" --repo "$work/repo-$i" init >/dev/null
    if [ $((i % 2)) -eq 1 ]; then "${a[@]}"; "${b[@]}"; else "${b[@]}"; "${a[@]}"; fi
    t0=$(date +%s%N); "$bin" --repo "$work/repo-$i" mount oci/rootfs "$mnt"; ls "$mnt" >/dev/null; t1=$(date +%s%N)
    echo "mount_ls $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') 0" >>"$results"
    "$bin" umount "$mnt"
done
med() { awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
s=$(med skopeo 2); c=$(med composefs 2)
printf 'oci pull of the rootfs image (%s), medians of %s runs\n' "$media" "$runs"
printf '%-28s %8s %8s %8s\n' measure skopeo composefs ratio
printf '%-28s %8s %8s %8s\n' "pull seconds" "$s" "$c" "$(awk -v a="$c" -v b="$s" 'BEGIN { printf "%.2f", a / b }')"
printf '%-28s %8s %8s\n' "peak RSS MiB" "$(med skopeo 3)" "$(med composefs 3)"
printf '%-28s %8s %8s\n' "mount + first ls seconds" "-" "$(med mount_ls 2)"
