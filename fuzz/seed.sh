#!/usr/bin/env bash
# Regenerate the fuzz fixtures (fuzz/fixtures) and the seed corpora
# (fuzz/corpus/<target>) from real files: the golden EROFS images and
# dumpfiles of tests/fixtures/erofs (made by the C mkcomposefs), tars made
# by GNU tar, splitstreams made by `composefs import-tar`, `oci pull` and
# `ostree pull`, ostree objects, summaries, static deltas and signatures
# made by the real `ostree` CLI and gpg, OCI documents made by umoci and
# skopeo, and registry challenges as registries send them.
#
# Needs root (ostree commits owned by other users, xattrs), ostree, gpg,
# openssl, umoci, skopeo, xz, python3 (scripts/deps.sh installs them) and
# python3-gi for /usr/bin/python3 (GLib's GVariant serialiser).
# The old seeds are replaced; fixtures change too (new keys, new commit),
# so commit both together.
set -euo pipefail
[ -n "${SEED_DEBUG:-}" ] && set -x
cd "$(dirname "$0")"
FUZZ=$PWD
ROOT=$(cd .. && pwd)

(cd "$ROOT" && cargo build --release --bin composefs)
CFS="$ROOT/target/release/composefs"
work=$(mktemp -d /tmp/composefs-seed.XXXXXX)
export GNUPGHOME="$work/gnupg"
cleanup() {
  gpgconf --kill all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -m 700 "$GNUPGHOME"

seed() { # seed TARGET NAME < data
  mkdir -p "corpus/$1"
  cat >"corpus/$1/$2"
}
obj() { # obj REPO CHECKSUM EXT: path of an ostree object
  echo "$1/objects/${2:0:2}/${2:2}.$3"
}
u32le() { python3 -c 'import sys; sys.stdout.buffer.write(int(sys.argv[1]).to_bytes(4, "little"))' "$1"; }

rm -rf corpus fixtures
mkdir -p corpus fixtures

# ---------------------------------------------------------------------------
# EROFS images and dumpfiles: the golden fixtures (C mkcomposefs output).
# ---------------------------------------------------------------------------
G="$ROOT/tests/fixtures/erofs"
for f in simple.v1 hardlinks.v0 xattrs.v1 whiteouts.v0; do
  seed erofs "$f.img" <"$G/$f.img"
done
for f in simple hardlinks names owners whiteouts xattrs empty deep; do
  seed dumpfile "$f.dump" <"$G/$f.dump"
done

# ---------------------------------------------------------------------------
# Tars (GNU tar) and splitstreams (composefs import-tar)
# ---------------------------------------------------------------------------
mk_tree() { # a small root filesystem with one of each kind of entry
  local t=$1
  mkdir -p "$t/etc" "$t/usr/bin" "$t/usr/lib" "$t/var/empty" "$t/dev"
  printf 'fuzzhost\n' >"$t/etc/hostname"
  printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' >"$t/etc/passwd"
  seq 1 1200 >"$t/usr/bin/tool"                      # ~5 KB: an object
  head -c 300 /dev/zero | tr '\0' 'z' >"$t/usr/lib/data" # > 64 bytes: an object
  ln -s ../lib/data "$t/usr/bin/link"
  ln "$t/usr/bin/tool" "$t/usr/bin/tool-hardlink"
  mkfifo "$t/var/fifo"
  mkdir -p "$t/$(printf 'long%.0s' {1..30})/dir"
  printf 'x\n' >"$t/$(printf 'long%.0s' {1..30})/dir/file-with-a-long-path"
  setfattr -n user.fuzz -v value "$t/etc/hostname" 2>/dev/null || true
  chmod 4755 "$t/usr/bin/tool"
  chown 1000:1000 "$t/etc/passwd"
}
TARFLAGS=(--sort=name --mtime=@1700000000 --numeric-owner)
mk_tree "$work/base"
tar "${TARFLAGS[@]}" --format=posix --xattrs \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf fixtures/base.tar -C "$work/base" .
seed tarsplit base-posix.tar <fixtures/base.tar
tar "${TARFLAGS[@]}" --format=gnu -cf - -C "$work/base" . | seed tarsplit base-gnu.tar
tar "${TARFLAGS[@]}" --format=ustar -cf - -C "$work/base" etc usr var | seed tarsplit base-ustar.tar
# An upper layer: whiteouts, an opaque directory, a replaced file, a
# hardlink to a file of the lower layer.
mkdir -p "$work/upper/etc" "$work/upper/usr/lib" "$work/upper/var"
printf 'newhost\n' >"$work/upper/etc/hostname"
: >"$work/upper/etc/.wh.passwd"
: >"$work/upper/usr/lib/.wh..wh..opq"
: >"$work/upper/var/.wh.fifo"
tar "${TARFLAGS[@]}" --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf "$work/upper.tar" -C "$work/upper" .
gzip -9n <"$work/upper.tar" | seed tarsplit upper.tar.gz      # import-tar decompresses
tar "${TARFLAGS[@]}" --format=gnu -cf - -C "$work/base" etc | zstd -q -19 | seed tarsplit etc.tar.zst
python3 - "$work/upper.tar" <<'EOF' | seed tarsplit upper-whiteouts.tar
# Append a hardlink to a lower-layer file (GNU tar cannot make one).
import sys, tarfile, io
src = tarfile.open(sys.argv[1])
out = io.BytesIO()
dst = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
for m in src.getmembers():
    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
h = tarfile.TarInfo("./usr/bin/another-name")
h.type = tarfile.LNKTYPE
h.linkname = "./usr/bin/tool"
h.mtime = 1700000000
dst.addfile(h)
dst.close()
sys.stdout.buffer.write(out.getvalue())
EOF

R512="$work/repo512"
R256="$work/repo256"
"$CFS" --repo "$R512" init >/dev/null
"$CFS" --repo "$R256" init --hash sha256 >/dev/null
stream() { # stream REPO REF: the splitstream file a stream ref names
  readlink -f "$1/streams/refs/$2"
}
"$CFS" --repo "$R512" import-tar base fixtures/base.tar >/dev/null
"$CFS" --repo "$R256" import-tar base fixtures/base.tar >/dev/null
"$CFS" --repo "$R512" import-tar upper corpus/tarsplit/upper-whiteouts.tar >/dev/null
seed splitstream base-sha512 <"$(stream "$R512" base)"
seed splitstream base-sha256 <"$(stream "$R256" base)"
seed splitstream upper-sha512 <"$(stream "$R512" upper)"
# The base stream's chunks, decompressed, after its size: what the
# splitstream target also wraps in a container of its own (fuzz_api).
python3 - "$(stream "$R512" base)" <<'EOF' | seed splitstream base-chunks
import struct, subprocess, sys
f = open(sys.argv[1], "rb").read()
info = struct.unpack_from("<Q", f, 16)[0]
start, end = struct.unpack_from("<QQ", f, info + 32)
size = struct.unpack_from("<Q", f, info + 72)[0]
chunks = subprocess.run(["zstd", "-dc"], input=f[start:end], capture_output=True, check=True).stdout
sys.stdout.buffer.write(struct.pack("<Q", size) + chunks)
EOF

# ---------------------------------------------------------------------------
# OCI: a layout made by umoci, the same image as a docker archive and a
# Docker schema 2 directory by skopeo; pulled, for the config and manifest
# splitstreams (named refs).
# ---------------------------------------------------------------------------
L="$work/oci"
umoci init --layout "$L"
umoci new --image "$L:v1"
# unpack/repack (umoci 0.4.7's `insert` writes layers without their last
# padding and end-of-archive marker, which `oci pull` rightly refuses).
umoci unpack --image "$L:v1" "$work/bundle" >/dev/null
cp -a "$work/base/." "$work/bundle/rootfs/"
umoci repack --image "$L:v1" "$work/bundle" >/dev/null
umoci config --image "$L:v1" --config.cmd=/usr/bin/tool --config.env=PATH=/usr/bin \
  --config.user=1000 --config.workingdir=/ --architecture=amd64 --os=linux
rm -rf "$work/bundle"
umoci unpack --image "$L:v1" "$work/bundle" >/dev/null
rm -rf "$work/bundle/rootfs/etc/passwd" "$work/bundle/rootfs/usr/lib"
mkdir "$work/bundle/rootfs/usr/lib"
printf 'replacement\n' >"$work/bundle/rootfs/usr/lib/other"
umoci repack --image "$L:v1" "$work/bundle" >/dev/null
seed oci_json umoci-index.json <"$L/index.json"
blob() { echo "$L/blobs/sha256/${1#sha256:}"; }
mdigest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$L/index.json")
seed oci_json umoci-manifest.json <"$(blob "$mdigest")"
cdigest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["digest"])' "$(blob "$mdigest")")
seed oci_json umoci-config.json <"$(blob "$cdigest")"
skopeo copy -q "oci:$L:v1" "docker-archive:$work/docker.tar:fuzz:v1"
seed oci_archive docker-archive.tar <"$work/docker.tar"
skopeo copy -q "oci:$L:v1" "oci-archive:$work/oci.tar:v1"
seed oci_archive oci-archive.tar <"$work/oci.tar"
tar -xOf "$work/docker.tar" manifest.json | seed oci_json docker-archive-manifest.json
skopeo copy -q --format v2s2 "oci:$L:v1" "dir:$work/v2s2"
seed oci_json docker-v2s2-manifest.json <"$work/v2s2/manifest.json"
"$CFS" --repo "$R512" oci pull "oci:$L:v1" --name fuzz >/dev/null
for s in "$R512"/streams/oci-manifest-* "$R512"/streams/oci-config-*; do
  [ -e "$s" ] || continue
  case "$s" in
    *oci-manifest-*) seed splitstream oci-manifest <"$(readlink -f "$s")" ;;
    *oci-config-*) seed splitstream oci-config <"$(readlink -f "$s")" ;;
  esac
done

# ---------------------------------------------------------------------------
# ostree: an archive repository, two commits, signatures, summary, deltas.
# ---------------------------------------------------------------------------
O="$work/ostree"
ostree init --repo="$O" --mode=archive
mkdir -p "$work/t1/sub/dir" "$work/t1/empty-dir"
printf 'hello\n' >"$work/t1/small"
: >"$work/t1/empty"
seq 1 4000 >"$work/t1/numbers"          # ~19 KB, compresses well
head -c 6000 /dev/urandom >"$work/t1/sub/random"
ln -s small "$work/t1/link"
ln -s ../../small "$work/t1/sub/dir/up"
chmod 755 "$work/t1/numbers"
chmod 1777 "$work/t1/empty-dir"
setfattr -n user.fuzz -v 'some value' "$work/t1/small" 2>/dev/null || true
setfattr -n user.dir -v d "$work/t1/sub" 2>/dev/null || true
chown 1000:100 "$work/t1/sub/random" 2>/dev/null || true
C1=$(ostree commit --repo="$O" -b main --tree=dir="$work/t1" -s "first" \
  --body "The first commit." --add-metadata-string=version=1.0 --timestamp=2024-01-01T00:00:00Z)
cp -a "$work/t1" "$work/t2"
seq 1 4100 >"$work/t2/numbers"          # appended to: rollsum in the delta
# Scattered small changes defeat rollsum: bsdiff in the delta.
/usr/bin/python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[::700] = bytes(len(b[::700])); open(sys.argv[1], "wb").write(b)' "$work/t2/sub/random"
printf 'new\n' >"$work/t2/sub/new-file"
rm "$work/t2/empty"
C2=$(ostree commit --repo="$O" -b main --tree=dir="$work/t2" -s "second" \
  --add-metadata-string=version=2.0 --timestamp=2024-02-01T00:00:00Z)

# Signatures: an OpenPGP key (RSA, as most ostree remotes use) and ed25519.
gpg --batch --passphrase '' --quick-gen-key 'composefs fuzz <fuzz@example.invalid>' rsa2048 sign never 2>/dev/null
FPR=$(gpg --list-keys --with-colons | awk -F: '/^fpr:/ { print $10; exit }')
gpg --export --armor "$FPR" >fixtures/signing-keys.asc
openssl genpkey -algorithm ed25519 -outform DER -out "$work/ed.der" 2>/dev/null
openssl pkey -inform DER -in "$work/ed.der" -pubout -outform DER -out "$work/ed.pub.der"
ED_SECRET=$( (tail -c 32 "$work/ed.der"; tail -c 32 "$work/ed.pub.der") | base64 -w0)
tail -c 32 "$work/ed.pub.der" | base64 -w0 >fixtures/ed25519.pub
echo >>fixtures/ed25519.pub
# ed25519 signatures are added by hand (GLib's serialiser, through
# python3-gi): Debian's ostree is built without libsodium, so `ostree sign`
# cannot make them.
ed_sign() { # ed_sign FILE > 64-byte signature
  openssl pkeyutl -sign -rawin -inkey "$work/ed.der" -keyform DER -in "$1"
}
add_ed25519() { # add_ed25519 A{SV}-FILE SIGNATURE-FILE
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import sys
from gi.repository import GLib
path, sig = sys.argv[1], open(sys.argv[2], "rb").read()
d = GLib.Variant.new_from_bytes(GLib.VariantType("a{sv}"), GLib.Bytes(open(path, "rb").read()), False)
entries = {k: d.lookup_value(k, None) for k in d.keys()}
entries["ostree.sign.ed25519"] = GLib.Variant("aay", [sig])
out = GLib.Variant("a{sv}", entries)
open(path, "wb").write(out.get_data_as_bytes().get_data())
EOF
}
for c in "$C1" "$C2"; do
  ostree gpg-sign --repo="$O" "$c" "$FPR"
  ed_sign "$(obj "$O" "$c" commit)" >"$work/sig"
  chmod u+w "$(obj "$O" "$c" commitmeta)"
  add_ed25519 "$(obj "$O" "$c" commitmeta)" "$work/sig"
done
cp "$(obj "$O" "$C2" commit)" fixtures/signed.commit

seed ostree_commit first.commit <"$(obj "$O" "$C1" commit)"
seed ostree_commit second.commit <"$(obj "$O" "$C2" commit)"
seed ostree_detached_metadata signed.commitmeta <"$(obj "$O" "$C2" commitmeta)"
seed ostree_detached_metadata other-commit.commitmeta <"$(obj "$O" "$C1" commitmeta)"

# A few of each metadata object, the smallest first, and some .filez.
n=0
for f in $(ls -S -r "$O"/objects/*/*.dirtree); do
  seed ostree_dirtree "$(basename "$f")" <"$f"; n=$((n + 1)); [ $n -lt 5 ] || break
done
for f in "$O"/objects/*/*.dirmeta; do
  seed ostree_dirmeta "$(basename "$f")" <"$f"
done
n=0
for f in $(ls -S -r "$O"/objects/*/*.filez); do
  seed ostree_fileheader "$(basename "$f")" <"$f"; n=$((n + 1)); [ $n -lt 8 ] || break
done

# Static deltas: scratch, from C1 to C2 (bsdiff), inline, big-endian,
# signed; then the summary (it lists them), signed too.
ostree static-delta generate --repo="$O" --empty --to="$C1"
ostree static-delta generate --repo="$O" --from="$C1" --to="$C2"
delta_dir() { # delta_dir FROM|"" TO
  python3 - "$1" "$2" <<'EOF'
import base64, sys
def b64(h):
    return base64.b64encode(bytes.fromhex(h)).decode().rstrip("=").replace("/", "_")
f, t = sys.argv[1], sys.argv[2]
name = b64(t) if not f else b64(f) + "-" + b64(t)
print(f"deltas/{name[:2]}/{name[2:]}")
EOF
}
D1="$O/$(delta_dir "" "$C1")"
D2="$O/$(delta_dir "$C1" "$C2")"
seed ostree_delta_superblock scratch.superblock <"$D1/superblock"
seed ostree_delta_superblock from.superblock <"$D2/superblock"
part_seed() { # part_seed SUPERBLOCK PART: LEN, superblock, part
  u32le "$(stat -c %s "$1")"; cat "$1" "$2"
}
part_seed "$D1/superblock" "$D1/0" | seed ostree_delta_part scratch-0
part_seed "$D2/superblock" "$D2/0" | seed ostree_delta_part from-0
# The same parts uncompressed (compression byte 0), as ostree also reads.
for d in D1 D2; do
  dir=${!d}
  { tail -c +2 "$dir/0" | xz -dc >"$work/$d.raw"; } 2>/dev/null || continue
  { printf '\0'; cat "$work/$d.raw"; } >"$work/$d.part0"
  part_seed "$dir/superblock" "$work/$d.part0" | seed ostree_delta_part "$d-uncompressed"
done
ostree static-delta generate --repo="$O" --from="$C1" --to="$C2" --inline \
  --set-endianness=B --filename="$work/inline-be"
seed ostree_delta_superblock inline-bigendian.superblock <"$work/inline-be"
# A signed superblock (taya{sv}): magic, superblock, signatures.
ostree static-delta generate --repo="$O" --from="$C1" --to="$C2" --inline --filename="$work/signed"
ed_sign "$work/signed" >"$work/sig"
/usr/bin/python3 - "$work/signed" "$work/sig" <<'EOF' | seed ostree_delta_superblock signed.superblock
import sys
from gi.repository import GLib
sb, sig = (open(p, "rb").read() for p in sys.argv[1:3])
magic = int.from_bytes(b"OSTSGNDT", sys.byteorder)
v = GLib.Variant("(taya{sv})", (magic, list(sb), {"ostree.sign.ed25519": GLib.Variant("aay", [sig])}))
sys.stdout.buffer.write(v.get_data_as_bytes().get_data())
EOF

ostree summary --repo="$O" -u --gpg-sign="$FPR"
seed ostree_summary summary <"$O/summary"
seed ostree_detached_metadata summary.sig <"$O/summary.sig"
ostree summary --repo="$O" -u --add-metadata=ostree.summary.indexed-deltas=true 2>/dev/null || true
for f in "$O"/delta-indexes/*/*.index; do
  [ -e "$f" ] && seed ostree_summary "delta-index-$(basename "$f")" <"$f"
done

# The commit stream a pull stores (composefs ostree pull): a splitstream
# framed with stored frames. The seeds `ostree-commit` (unframed, from
# before pulls framed their streams) and `ostree-commit-framed-zstd`
# (compressed frames, from before they were stored) were kept by hand:
# regenerating drops them.
"$CFS" --repo "$R512" ostree pull "$O" main --name fuzz \
  --gpg-keyring fixtures/signing-keys.asc --require-signatures >/dev/null
seed splitstream ostree-commit-framed <"$(stream "$R512" ostree/fuzz)"

# ---------------------------------------------------------------------------
# Registry challenges and responses, as registries send them.
# ---------------------------------------------------------------------------
A() { printf '%s' "$2" | seed auth_challenge "$1"; }
A docker-hub 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'
A ghcr 'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull"'
A quay 'Bearer realm="https://quay.io/v2/auth",service="quay.io"'
A distribution-basic 'Basic realm="Registry Realm"'
A two-challenges 'Basic realm="a, b", Bearer realm="https://t.example/",service="s",scope="repository:x:pull repository:y:pull"'
A escaped 'Bearer realm="https://auth.example/token?x=1",service="svc \"quoted\"",error="insufficient_scope"'
A error-body '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"library/x","Action":"pull"}]}]}'
A location '/v2/library/alpine/blobs/sha256:0000?X-Amz-Signature=abc#frag'
A location-absolute '//cdn.example:8443/blobs/x'

echo "seeds:"
du -sh corpus/* | sort -k2
echo "fixtures:"
ls -l fixtures
