//! OCI images made by real producers, pulled by `composefs oci pull`
//! through every transport, and compared with an independent oracle:
//! `umoci unpack` of the same image.
//!
//! Producers and transports:
//! - GNU tar → `podman import` → `podman push` to a registry, as an OCI
//!   and as a Docker schema 2 image → `docker://`;
//! - that image with three layers on top from `podman build` (`COPY`,
//!   and `ADD` of the tar, which buildah unpacks) → `podman save` as
//!   `oci-archive` (also `--uncompressed`) and `docker-archive` (also
//!   `-m`, two images) → `oci-archive:` / `docker-archive:`;
//! - a manifest list of two imported images (s390x and ppc64le) made with
//!   `podman manifest`, pushed as a Docker manifest list, an OCI index and
//!   an oci-archive → each platform by `--platform`;
//! - `umoci init`/`new`/`repack`/`insert` (a whiteout, an opaque
//!   directory, and layers without end-of-archive blocks or the last
//!   member's padding, as umoci 0.4.7 writes them) → `oci:`;
//! - `skopeo copy --dest-compress-format zstd` and `gzip` of that image
//!   into a layout and into a registry → `oci:` and `docker://`.
//!
//! The oracle: `umoci unpack` of the same image in an OCI layout (copied
//! there with skopeo where the producer wrote something else), as root, so
//! owners, devices and xattrs are applied. What we compare it with is our
//! FUSE mount of `oci-raw/NAME`: the layers merged untransformed, which is
//! what `umoci unpack` gives (docs/compatibility.md). Everything a user
//! sees is compared: paths, file type and mode, owner, size, content,
//! symlink targets, hardlinks (same inode, link counts), xattrs, device
//! numbers, mtimes to the nanosecond, directory link counts. Directory
//! sizes are left out: they are each file system's own business.
//!
//! `oci/NAME` (composefs-rs's OCI transform: the root takes `/usr`'s
//! metadata, `/run` is emptied and takes `/usr`'s mtime, only
//! `security.capability` xattrs stay) is compared with the oracle so
//! transformed, here in the test, independently of `src/oci/transform.rs`.
//! And every pull of one image, whatever the transport and compression,
//! gives the same composefs image id.
//!
//! Needs root (mknod, chown, security.* xattrs, FUSE), /dev/fuse, podman,
//! skopeo, umoci, docker-registry, GNU tar, attr.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::podman::Podman;
use common::registry::{RegistryProcess, start_registry};
use common::{Repo, pseudo_random, run_tool, sh, write_file};
use sha2::Digest as _;

// ---------------------------------------------------------------------------
// What a user sees of a tree

/// What a user sees of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// st_mode: file type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    /// Size of a non-directory.
    size: u64,
    mtime: (i64, i64),
    /// Device number of a device node.
    rdev: u64,
    nlink: u64,
    target: Option<PathBuf>,
    /// sha256 of a regular file's content.
    content: Option<String>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every path below a root (the root itself as ""), and the hardlink
/// groups: the paths of each non-directory inode that has more than one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    paths: BTreeMap<PathBuf, Seen>,
    links: Vec<Vec<PathBuf>>,
}

fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut names)
        .unwrap_or_else(|e| panic!("llistxattr {}: {e}", p.display()));
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cname = std::ffi::CString::new(name).unwrap();
        let mut val = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, cname.as_c_str(), &mut val)
            .unwrap_or_else(|e| panic!("lgetxattr {} {cname:?}: {e}", p.display()));
        out.insert(name.to_vec(), val[..len].to_vec());
    }
    out
}

fn view(root: &Path) -> View {
    let mut paths = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = m.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        } else {
            inodes.entry(m.ino()).or_default().push(rel.clone());
        }
        let content = ft.is_file().then(|| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            hex::encode(sha2::Sha256::digest(&data))
        });
        paths.insert(
            rel,
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_dir() { 0 } else { m.size() },
                mtime: (m.mtime(), m.mtime_nsec()),
                rdev: if ft.is_block_device() || ft.is_char_device() {
                    m.rdev()
                } else {
                    0
                },
                nlink: m.nlink(),
                target: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                content,
                xattrs: xattrs_of(&p),
            },
        );
    }
    let mut links: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    links.sort();
    View { paths, links }
}

/// Every difference between `want` (the oracle) and `got`, one a line.
fn differences(want: &View, got: &View) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in &want.paths {
        match got.paths.get(p) {
            None => out.push(format!("/{}: missing", p.display())),
            Some(g) if g != w => out.push(format!("/{}:\n  want {w:?}\n  got  {g:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in got.paths.keys().filter(|p| !want.paths.contains_key(*p)) {
        out.push(format!("/{}: not in the oracle", p.display()));
    }
    if want.links != got.links {
        out.push(format!(
            "hardlink groups:\n  want {:?}\n  got  {:?}",
            want.links, got.links
        ));
    }
    out
}

fn assert_same(want: &View, got: &View, what: &str) {
    let d = differences(want, got);
    assert!(
        d.is_empty(),
        "{what}: {} differences from the oracle:\n{}",
        d.len(),
        d.join("\n")
    );
}

/// The oracle as composefs-rs's OCI transform makes it, done here from
/// the transform's description: the root takes `/usr`'s permissions,
/// owner, mtime and xattrs; `/run` is emptied (and so has two links) and
/// takes `/usr`'s mtime; only `security.capability` xattrs stay.
fn oci_transformed(raw: &View) -> View {
    let usr = raw.paths[Path::new("usr")].clone();
    let run = Path::new("run");
    let mut paths: BTreeMap<PathBuf, Seen> = raw
        .paths
        .iter()
        .filter(|(p, _)| !(p.starts_with(run) && *p != run))
        .map(|(p, s)| (p.clone(), s.clone()))
        .collect();
    for s in paths.values_mut() {
        s.xattrs.retain(|k, _| k == b"security.capability");
    }
    let root = paths.get_mut(Path::new("")).unwrap();
    root.mode = usr.mode;
    root.uid = usr.uid;
    root.gid = usr.gid;
    root.mtime = usr.mtime;
    root.xattrs = usr.xattrs.clone();
    root.xattrs.retain(|k, _| k == b"security.capability");
    if let Some(r) = paths.get_mut(run) {
        r.mtime = usr.mtime;
        r.nlink = 2;
    }
    let links = raw
        .links
        .iter()
        .map(|g| g.iter().filter(|p| !p.starts_with(run)).cloned().collect())
        .filter(|g: &Vec<PathBuf>| g.len() > 1)
        .collect();
    View { paths, links }
}

// ---------------------------------------------------------------------------
// Our side: pulls and FUSE mounts

/// A FUSE mount by `composefs mount`, undone when dropped (also when an
/// assertion failed): `composefs umount`, then `umount -l`.
struct Fuse {
    path: PathBuf,
}

impl Fuse {
    fn new(repo: &Path, reference: &str, path: &Path) -> Fuse {
        std::fs::create_dir_all(path).unwrap();
        common::ok_in(repo, &["mount", reference, path.to_str().unwrap()]);
        let m = Fuse {
            path: path.to_path_buf(),
        };
        assert!(
            common::is_mountpoint(path),
            "mount {reference} succeeded, nothing is mounted"
        );
        m
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        let ok = Command::new(common::bin())
            .arg("umount")
            .arg(&self.path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok || common::is_mountpoint(&self.path) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// What our FUSE mount of `reference` in `repo` shows.
fn mounted_view(repo: &Path, reference: &str, mnt: &Path) -> View {
    let m = Fuse::new(repo, reference, mnt);
    let v = view(&m.path);
    drop(m);
    assert!(
        !common::is_mountpoint(mnt),
        "{} still mounted",
        mnt.display()
    );
    v
}

/// `composefs oci pull SOURCE --name img` into `repo`; stdout.
fn pull(repo: &Repo, source: &str) -> String {
    String::from_utf8(repo.ok(&["oci", "pull", source, "--name", "img"])).unwrap()
}

/// `composefs oci compute-id img`.
fn image_id(repo: &Repo) -> String {
    let id = String::from_utf8(repo.ok(&["oci", "compute-id", "img"])).unwrap();
    let id = id.trim().to_string();
    assert!(
        id.len() >= 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id:?}"
    );
    id
}

/// The stored manifest of `img`.
fn stored_manifest(repo: &Repo) -> serde_json::Value {
    serde_json::from_slice(&repo.ok(&["oci", "inspect", "img", "--manifest"])).unwrap()
}

/// Pull `source` into a new repository and require that the whole image
/// came from it (every layer fetched, none reused); then compare our
/// `oci-raw/img` with `oracle`, and `oci/img` with the oracle transformed.
/// Returns the repository and its image id.
fn pull_and_compare(source: &str, oracle: &View, scratch: &Path, what: &str) -> (Repo, String) {
    pull_and_compare_with(&[source], oracle, scratch, what)
}

/// [`pull_and_compare`] of `oci pull ARGS… --name img`.
fn pull_and_compare_with(
    args: &[&str],
    oracle: &View,
    scratch: &Path,
    what: &str,
) -> (Repo, String) {
    let repo = Repo::new();
    let mut all = vec!["oci", "pull"];
    all.extend_from_slice(args);
    all.extend(["--name", "img"]);
    let out = String::from_utf8(repo.ok(&all)).unwrap();
    let layers = stored_manifest(&repo)["layers"].as_array().unwrap().len();
    assert!(
        out.contains(&format!("oci/img: fetched {layers} layers")) && out.contains("reused 0,"),
        "{what}: {out}"
    );
    let mnt = scratch.join(format!(
        "mnt-{}",
        what.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    ));
    let raw = mounted_view(&repo.path, "oci-raw/img", &mnt);
    assert_same(oracle, &raw, &format!("{what}: oci-raw/img"));
    let transformed = mounted_view(&repo.path, "oci/img", &mnt);
    assert_same(
        &oci_transformed(oracle),
        &transformed,
        &format!("{what}: oci/img"),
    );
    repo.assert_fsck_ok();
    let id = image_id(&repo);
    assert!(
        out.contains(&format!("composefs image {id}")),
        "{what}: the pull linked another image than compute-id's {id}: {out}"
    );
    (repo, id)
}

// ---------------------------------------------------------------------------
// Producers' tools

fn tool(prog: &str, args: &[&OsStr]) -> Vec<u8> {
    run_tool(prog, args, Path::new("/"))
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `skopeo --insecure-policy copy --quiet ARGS` (the machine's signature
/// policy plays no part).
fn skopeo_copy(args: &[&str]) {
    let mut all = vec!["--insecure-policy", "copy", "--quiet"];
    all.extend_from_slice(args);
    let all: Vec<&OsStr> = all.iter().map(|a| os(a)).collect();
    tool("skopeo", &all);
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE` (as root: owners, devices,
/// xattrs applied): what its rootfs shows, and the directories no layer
/// has an entry for (parents a layer left out, which `umoci unpack` makes
/// at the time it runs and our merge with mtime 0, the one deterministic
/// choice: docs/formats.md). Their mtime in the returned view is 0.
fn umoci_oracle(layout: &Path, tag: &str, bundle: &Path) -> (View, Vec<PathBuf>) {
    let image = format!("{}:{tag}", layout.display());
    tool(
        "umoci",
        &[os("unpack"), os("--image"), os(&image), bundle.as_os_str()],
    );
    let mut v = view(&bundle.join("rootfs"));
    // A directory's link count as POSIX file systems give it (two and one
    // for each subdirectory), whatever the bundle's file system says
    // (btrfs says 1).
    let is_dir = |s: &Seen| s.mode & 0o170000 == 0o040000;
    let mut subdirs: HashMap<PathBuf, u64> = HashMap::new();
    for (p, s) in &v.paths {
        if is_dir(s) && !p.as_os_str().is_empty() {
            *subdirs
                .entry(p.parent().unwrap().to_path_buf())
                .or_default() += 1;
        }
    }
    for (p, s) in v.paths.iter_mut() {
        if is_dir(s) {
            s.nlink = 2 + subdirs.get(p).copied().unwrap_or(0);
        }
    }
    let named = layer_members(layout, &layout_manifest(layout, tag));
    let mut implicit = Vec::new();
    for (p, s) in v.paths.iter_mut() {
        if is_dir(s) && !named.contains(p) {
            s.mtime = (0, 0);
            implicit.push(p.clone());
        }
    }
    (v, implicit)
}

/// The uncompressed bytes of each layer of `manifest` in `layout` (gzip
/// or uncompressed).
fn layer_tars(layout: &Path, manifest: &serde_json::Value) -> Vec<Vec<u8>> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let hex = l["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            let blob = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
            match l["mediaType"].as_str().unwrap() {
                "application/vnd.oci.image.layer.v1.tar+gzip" => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&blob[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
                "application/vnd.oci.image.layer.v1.tar" => blob,
                t => panic!("layer of type {t} in {}", layout.display()),
            }
        })
        .collect()
}

/// Every path some layer has an entry for ("" for the root), read here
/// from the tar headers (ustar prefix, GNU long names, PAX paths).
fn layer_members(
    layout: &Path,
    manifest: &serde_json::Value,
) -> std::collections::BTreeSet<PathBuf> {
    let octal = |f: &[u8]| -> usize {
        let t: String = f
            .iter()
            .map(|&b| b as char)
            .filter(|c| c.is_digit(8))
            .collect();
        usize::from_str_radix(&t, 8).unwrap_or(0)
    };
    let cstr = |f: &[u8]| f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec();
    let mut out = std::collections::BTreeSet::new();
    for tar in layer_tars(layout, manifest) {
        let mut at = 0;
        let mut next_name: Option<Vec<u8>> = None;
        while at + 512 <= tar.len() {
            let h = &tar[at..at + 512];
            if h.iter().all(|&b| b == 0) {
                break;
            }
            let size = octal(&h[124..136]);
            let data = &tar[at + 512..(at + 512 + size).min(tar.len())];
            at += 512 + size.next_multiple_of(512);
            match h[156] {
                b'L' => next_name = Some(cstr(data)),
                b'x' => {
                    let mut rest = data;
                    while let Some(sp) = rest.iter().position(|&b| b == b' ') {
                        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
                        let rec = &rest[sp + 1..len - 1];
                        if let Some(path) = rec.strip_prefix(b"path=") {
                            next_name = Some(path.to_vec());
                        }
                        rest = &rest[len..];
                    }
                }
                b'g' | b'K' => {}
                _ => {
                    let name = next_name.take().unwrap_or_else(|| {
                        let mut n = cstr(&h[345..500]);
                        if &h[257..262] == b"ustar" && !n.is_empty() {
                            n.push(b'/');
                        } else {
                            n.clear();
                        }
                        n.extend(cstr(&h[..100]));
                        n
                    });
                    let name = String::from_utf8(name).unwrap();
                    let name = name.trim_start_matches("./").trim_start_matches('/');
                    let name = name.trim_end_matches('/');
                    out.insert(PathBuf::from(if name == "." { "" } else { name }));
                }
            }
        }
    }
    out
}

/// The manifest `tag` of the OCI layout `layout` and its layers' media
/// types.
fn layout_manifest(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {index}"));
    let digest = desc["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn layer_types(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// A tree with what images hold, below `root` (which exists or is made):
/// /usr with an executable (large enough to be an object), a hardlink to
/// it, relative and absolute symlinks, an empty directory, a file with a
/// user xattr and an old mtime with nanoseconds, one with a file
/// capability, a setuid file, names with spaces, non-ASCII and over 100
/// bytes, a character device and a fifo; /etc with a file owned by
/// 1000:100; a sticky /tmp; /run with content (emptied by the OCI
/// transform).
fn producer_tree(root: &Path) {
    write_file(&root.join("usr/bin/tool"), &pseudo_random(1, 200_000));
    let long = "n".repeat(120);
    sh(
        root,
        &format!(
            r#"
            chmod 0755 usr/bin/tool
            ln usr/bin/tool usr/bin/tool-again
            ln -s tool usr/bin/tool-link
            mkdir -p usr/lib usr/sbin usr/share/empty "usr/share/odd dir" etc tmp run/lock
            ln -s /usr/bin/tool usr/lib/abs-link
            printf 'small\n' > usr/lib/small.txt
            setfattr -n user.note -v 'hello world' usr/lib/small.txt
            touch -h -d @1000000000.123456789 usr/lib/small.txt
            printf '#!/bin/sh\n' > usr/sbin/ping
            chmod 0755 usr/sbin/ping
            setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 usr/sbin/ping
            printf 'suid\n' > usr/bin/suid
            chmod 4755 usr/bin/suid
            printf 'spaces\n' > "usr/share/odd dir/name with spaces.txt"
            printf 'unicode\n' > "usr/share/ünïcødé"
            printf 'long\n' > "usr/share/{long}"
            mknod usr/share/null c 1 3
            mkfifo usr/share/fifo
            printf 'owned\n' > etc/owned
            chown 1000:100 etc/owned
            chmod 1777 tmp
            printf 'pid\n' > run/lock/stale
            chmod 0751 usr
            "#
        ),
    );
}

/// Asserts that the oracle shows what [`producer_tree`] made (the
/// producer kept it), so that the comparison covers it.
fn assert_tree_features(oracle: &View, what: &str) {
    let get = |p: &str| {
        oracle
            .paths
            .get(Path::new(p))
            .unwrap_or_else(|| panic!("{what}: the oracle has no /{p}"))
    };
    assert!(
        oracle.links.iter().any(|g| g
            == &vec![
                PathBuf::from("usr/bin/tool"),
                PathBuf::from("usr/bin/tool-again")
            ]),
        "{what}: hardlinks {:?}",
        oracle.links
    );
    assert_eq!(get("usr/bin/tool").nlink, 2, "{what}");
    assert_eq!(
        get("usr/bin/tool-link").target,
        Some("tool".into()),
        "{what}"
    );
    assert_eq!(
        get("usr/lib/small.txt").mtime,
        (1_000_000_000, 123_456_789),
        "{what}"
    );
    assert_eq!(
        get("usr/lib/small.txt").xattrs.get(&b"user.note"[..]),
        Some(&b"hello world".to_vec()),
        "{what}"
    );
    assert!(
        get("usr/sbin/ping")
            .xattrs
            .contains_key(&b"security.capability"[..]),
        "{what}"
    );
    assert_eq!(get("usr/bin/suid").mode, 0o104755, "{what}");
    assert_eq!(
        get("usr/share/null").rdev,
        rustix::fs::makedev(1, 3),
        "{what}"
    );
    assert_eq!(get("usr/share/null").mode & 0o170000, 0o020000, "{what}");
    assert_eq!(get("usr/share/fifo").mode & 0o170000, 0o010000, "{what}");
    assert_eq!(
        (get("etc/owned").uid, get("etc/owned").gid),
        (1000, 100),
        "{what}"
    );
    assert_eq!(get("tmp").mode, 0o41777, "{what}");
    assert_eq!(get("usr").mode, 0o40751, "{what}");
    get("usr/share/odd dir/name with spaces.txt");
    get("usr/share/ünïcødé");
    get(&format!("usr/share/{}", "n".repeat(120)));
    get("usr/share/empty");
    get("run/lock/stale");
}

/// GNU tar (PAX, with xattrs and nanosecond mtimes, numeric owners) of a
/// [`producer_tree`] at `dir/tree`, written to `dir/layer.tar`.
fn gnu_tar(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    producer_tree(&tree);
    let tar = dir.join("layer.tar");
    common::make_tar(
        &tree,
        &tar,
        &[
            "--format=pax",
            "--pax-option=delete=atime,delete=ctime",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
        ],
    );
    tar
}

/// A podman image `localhost/test/imported:1` imported from [`gnu_tar`].
/// Returns podman and the image id (its config's digest).
fn podman_image(dir: &Path) -> (Podman, String) {
    let tar = gnu_tar(dir);
    let podman = Podman::new();
    let id = podman.import(&tar, "localhost/test/imported:1");
    assert!(id.starts_with("sha256:"), "podman import printed {id:?}");
    (podman, id)
}

// ---------------------------------------------------------------------------
// podman

#[test]
fn podman_push_to_registry_pulled_by_docker_transport() {
    let tmp = tempfile::tempdir().unwrap();
    let (podman, _) = podman_image(tmp.path());
    let reg = start_registry(false);
    // Pushed as an OCI image and as a Docker schema 2 image.
    let remote = format!("127.0.0.1:{}/test/imported:1", reg.port);
    let remote_v2s2 = format!("127.0.0.1:{}/test/imported:v2s2", reg.port);
    let name = "localhost/test/imported:1";
    podman.push(name, &format!("docker://{remote}"), &["--format", "oci"]);
    podman.push(
        name,
        &format!("docker://{remote_v2s2}"),
        &["--format", "v2s2"],
    );

    // The oracle: the pushed image, copied from the registry into a
    // layout by skopeo, unpacked by umoci.
    let layout = tmp.path().join("oracle-layout");
    skopeo_copy(&[
        "--src-tls-verify=false",
        &format!("docker://{remote}"),
        &format!("oci:{}:t", layout.display()),
    ]);
    let (oracle, implicit) = umoci_oracle(&layout, "t", &tmp.path().join("bundle"));
    assert!(implicit.is_empty(), "{implicit:?}");
    assert_tree_features(&oracle, "podman push");

    let (repo, id) = pull_and_compare(
        &format!("docker://{remote}"),
        &oracle,
        tmp.path(),
        "docker://",
    );
    // What the registry serves is what we stored.
    let digests = |m: &serde_json::Value| -> Vec<String> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let manifest = stored_manifest(&repo);
    assert_eq!(digests(&manifest), digests(&layout_manifest(&layout, "t")));
    assert_eq!(
        manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json",
        "{manifest}"
    );

    // The Docker schema 2 push: the same tree, the same image.
    let (v2s2, v2s2_id) = pull_and_compare(
        &format!("docker://{remote_v2s2}"),
        &oracle,
        tmp.path(),
        "docker:// (v2s2)",
    );
    let manifest = stored_manifest(&v2s2);
    assert_eq!(
        manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{manifest}"
    );
    assert_eq!(digests(&manifest), digests(&layout_manifest(&layout, "t")));
    assert_eq!(v2s2_id, id);

    // Again by digest, into the same repository: nothing fetched, the same
    // image.
    let digest = String::from_utf8(repo.ok(&["oci", "images"])).unwrap();
    let digest = digest.split('\t').nth(1).unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let out = String::from_utf8(repo.ok(&[
        "oci",
        "pull",
        &format!("docker://127.0.0.1:{}/test/imported@{digest}", reg.port),
        "--name",
        "again",
    ]))
    .unwrap();
    assert!(out.contains("fetched 0 layers"), "{out}");
    assert_eq!(
        String::from_utf8(repo.ok(&["oci", "compute-id", "again"]))
            .unwrap()
            .trim(),
        id
    );
    drop(reg);
}

/// Built by `podman build` on the imported image: `COPY` of a file and of
/// a directory, and `ADD` of the GNU tar (which buildah unpacks) into
/// /opt/unpacked; four layers. Returns its name and id (its config's
/// digest).
fn podman_built_image(dir: &Path, podman: &Podman) -> (&'static str, String) {
    let ctx = dir.join("context");
    write_file(&ctx.join("added.txt"), b"added by COPY\n");
    write_file(&ctx.join("dir/sub/file"), &pseudo_random(7, 5000));
    std::fs::copy(dir.join("layer.tar"), ctx.join("layer.tar")).unwrap();
    write_file(
        &ctx.join("Containerfile"),
        b"FROM localhost/test/imported:1\n\
          COPY added.txt /usr/added.txt\n\
          COPY dir /usr/lib/copied\n\
          ADD layer.tar /opt/unpacked/\n",
    );
    let name = "localhost/test/built:1";
    let id = podman.build(&ctx, name);
    assert!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "podman build printed {id:?}"
    );
    (name, format!("sha256:{id}"))
}

#[test]
fn podman_save_archives_pulled_by_archive_transports() {
    let tmp = tempfile::tempdir().unwrap();
    let (podman, imported_id) = podman_image(tmp.path());
    let (name, built_id) = podman_built_image(tmp.path(), &podman);
    let oci_archive = podman.save(&[name], "oci-archive", &tmp.path().join("img.oci.tar"));
    let docker_archive = podman.save(
        &[name],
        "docker-archive",
        &tmp.path().join("img.docker.tar"),
    );

    // Also with its layers uncompressed (`--uncompressed`: media type
    // `application/vnd.oci.image.layer.v1.tar`).
    let uncompressed = tmp.path().join("img.uncompressed.oci.tar");
    podman.ok(&[
        os("save"),
        os("--quiet"),
        os("--uncompressed"),
        os("--format"),
        os("oci-archive"),
        os("-o"),
        uncompressed.as_os_str(),
        os(name),
    ]);

    let mut ids = Vec::new();
    for (label, transport, archive) in [
        ("oci-archive", "oci-archive", &oci_archive),
        ("uncompressed", "oci-archive", &uncompressed),
        ("docker-archive", "docker-archive", &docker_archive),
    ] {
        // The oracle: this archive, copied into a layout by skopeo,
        // unpacked by umoci.
        let layout = tmp.path().join(format!("oracle-{label}"));
        skopeo_copy(&[
            &format!("{transport}:{}", archive.display()),
            &format!("oci:{}:t", layout.display()),
        ]);
        let (oracle, implicit) =
            umoci_oracle(&layout, "t", &tmp.path().join(format!("bundle-{label}")));
        assert!(implicit.is_empty(), "{label}: {implicit:?}");
        assert_tree_features(&oracle, label);
        assert_eq!(layer_types(&layout_manifest(&layout, "t")).len(), 4);
        for p in [
            "usr/added.txt",
            "usr/lib/copied/sub/file",
            "opt/unpacked/usr/bin/tool-again",
            "opt/unpacked/usr/share/null",
        ] {
            assert!(oracle.paths.contains_key(Path::new(p)), "{label}: no /{p}");
        }
        let (repo, id) = pull_and_compare(
            &format!("{transport}:{}", archive.display()),
            &oracle,
            tmp.path(),
            label,
        );
        if label == "uncompressed" {
            assert_eq!(
                layer_types(&stored_manifest(&repo)),
                vec!["application/vnd.oci.image.layer.v1.tar"; 4]
            );
        }
        ids.push(id);
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the archives' image ids: {ids:?}"
    );

    // Both archives into one repository: the second pull reuses the
    // layers the first stored, and gives the same image.
    let repo = Repo::new();
    let first = pull(&repo, &format!("oci-archive:{}", oci_archive.display()));
    assert!(first.contains("fetched 4 layers"), "{first}");
    let out = String::from_utf8(repo.ok(&[
        "oci",
        "pull",
        &format!("docker-archive:{}", docker_archive.display()),
        "--name",
        "img2",
    ]))
    .unwrap();
    assert!(
        out.contains("fetched 0 layers") && out.contains("reused 4,"),
        "{out}"
    );
    assert_eq!(image_id(&repo), ids[0]);
    assert_eq!(
        String::from_utf8(repo.ok(&["oci", "compute-id", "img2"]))
            .unwrap()
            .trim(),
        ids[0]
    );

    // The image named as podman recorded it (`localhost/test/built:1`
    // in the oci-archive's index), split at the first ':' as skopeo does.
    let named = Repo::new();
    pull(
        &named,
        &format!("oci-archive:{}:{name}", oci_archive.display()),
    );
    assert_eq!(image_id(&named), ids[0]);
    assert_eq!(stored_manifest(&named)["config"]["digest"], built_id);
    let err = named.fail(&[
        "oci",
        "pull",
        &format!(
            "oci-archive:{}:localhost/test/absent:1",
            oci_archive.display()
        ),
    ]);
    assert!(
        err.contains("no image tagged \"localhost/test/absent:1\""),
        "{err}"
    );

    // A docker-archive of two images (`podman save -m`): one must be
    // named, by a name of its RepoTags or by its place, as skopeo takes
    // them; each is the image asked for.
    let multi = podman.save(
        &[name, "localhost/test/imported:1"],
        "docker-archive",
        &tmp.path().join("multi.docker.tar"),
    );
    let multi_ref = |sel: &str| format!("docker-archive:{}{sel}", multi.display());
    let err = named.fail(&["oci", "pull", &multi_ref("")]);
    assert!(
        err.contains("holds 2 images") && err.contains("localhost/test/imported:1"),
        "{err}"
    );
    for (sel, config, layers) in [
        (format!(":{name}"), &built_id, 4),
        (":@0".to_string(), &built_id, 4),
        (":localhost/test/imported:1".to_string(), &imported_id, 1),
        (":@1".to_string(), &imported_id, 1),
    ] {
        let r = Repo::new();
        pull(&r, &multi_ref(&sel));
        let m = stored_manifest(&r);
        assert_eq!(&m["config"]["digest"], config, "{sel}");
        assert_eq!(m["layers"].as_array().unwrap().len(), layers, "{sel}");
        if config == &built_id {
            assert_eq!(image_id(&r), ids[0], "{sel}");
        }
    }
    for (sel, want) in [
        (":@2", "no image @2"),
        (":localhost/test/absent:1", "no image tagged"),
    ] {
        let err = named.fail(&["oci", "pull", &multi_ref(sel)]);
        assert!(err.contains(want), "{sel}: {err}");
    }
}

/// A manifest list made by `podman manifest` of two imported images, one
/// for linux/s390x (the [`producer_tree`]) and one for linux/ppc64le (a
/// small tree of its own), pushed with all its images to a registry as a
/// Docker manifest list and as an OCI index, and to an oci-archive: each
/// platform, chosen with `--platform`, is its own image, equal to `umoci
/// unpack` of what skopeo picks for that platform.
#[test]
fn podman_manifest_list_pulled_by_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s390x_tar = gnu_tar(dir);
    let small = dir.join("small");
    write_file(&small.join("usr/arch"), b"ppc64le\n");
    let ppc_tar = dir.join("small.tar");
    common::make_tar(&small, &ppc_tar, &["--format=pax"]);
    let podman = Podman::new();
    let mut config_digest = HashMap::new();
    for (arch, tar) in [("s390x", &s390x_tar), ("ppc64le", &ppc_tar)] {
        let name = format!("localhost/test/{arch}:1");
        let id = podman.ok(&[
            os("import"),
            os("--quiet"),
            os("--os"),
            os("linux"),
            os("--arch"),
            os(arch),
            tar.as_os_str(),
            os(&name),
        ]);
        config_digest.insert(arch, String::from_utf8(id).unwrap().trim().to_string());
    }
    let list = "localhost/test/list:1";
    podman.ok(&["manifest", "create", list]);
    for arch in ["s390x", "ppc64le"] {
        podman.ok(&[
            "manifest",
            "add",
            list,
            &format!("containers-storage:localhost/test/{arch}:1"),
        ]);
    }
    let reg = start_registry(false);
    let docker_list = format!("docker://127.0.0.1:{}/test/list:1", reg.port);
    let oci_index = format!("docker://127.0.0.1:{}/test/list:oci", reg.port);
    let archive = dir.join("list.oci.tar");
    let archive_ref = format!("oci-archive:{}", archive.display());
    let push = |dest: &str, opts: &[&str]| {
        let mut args = vec!["manifest", "push", "--quiet", "--all", "--tls-verify=false"];
        args.extend_from_slice(opts);
        args.extend([list, dest]);
        podman.ok(&args);
    };
    push(&docker_list, &[]);
    push(&oci_index, &["--format", "oci"]);
    push(&archive_ref, &[]);

    let mut ids = HashMap::new();
    for arch in ["s390x", "ppc64le"] {
        let layout = dir.join(format!("oracle-{arch}"));
        skopeo_copy(&[
            "--src-tls-verify=false",
            "--override-os",
            "linux",
            "--override-arch",
            arch,
            &docker_list,
            &format!("oci:{}:t", layout.display()),
        ]);
        let (oracle, implicit) = umoci_oracle(&layout, "t", &dir.join(format!("bundle-{arch}")));
        assert!(implicit.is_empty(), "{arch}: {implicit:?}");
        if arch == "s390x" {
            assert_tree_features(&oracle, arch);
        } else {
            assert!(oracle.paths.contains_key(Path::new("usr/arch")), "{arch}");
        }
        let platform = format!("linux/{arch}");
        for source in [&docker_list, &oci_index, &archive_ref] {
            let what = format!("{source} {platform}");
            let (repo, id) =
                pull_and_compare_with(&[source, "--platform", &platform], &oracle, dir, &what);
            let config: serde_json::Value =
                serde_json::from_slice(&repo.ok(&["oci", "inspect", "img", "--config"])).unwrap();
            assert_eq!(config["architecture"], arch, "{what}");
            assert_eq!(
                stored_manifest(&repo)["config"]["digest"],
                config_digest[arch],
                "{what}"
            );
            let previous = ids.entry(arch).or_insert_with(|| id.clone());
            assert_eq!(previous, &id, "{what}: another image id");
        }
    }
    assert_ne!(ids["s390x"], ids["ppc64le"]);

    // Without --platform: this machine's, which the list does not offer.
    let host = match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    };
    if let Some(host) = host {
        let err = Repo::new().fail(&["oci", "pull", &docker_list]);
        assert!(
            err.contains(&format!("no image for linux/{host}"))
                && err.contains("linux/s390x")
                && err.contains("linux/ppc64le"),
            "{err}"
        );
    }
    drop(reg);
}

// ---------------------------------------------------------------------------
// umoci

/// An image `t` in the OCI layout `dir/umoci-layout`, made by umoci
/// alone, in five layers:
/// 1. `umoci repack` of a [`producer_tree`] made in its unpacked rootfs;
/// 2. `umoci insert` of a directory at /opt/new;
/// 3. `umoci insert --opaque` of the same directory at /usr/share (its
///    earlier content hidden);
/// 4. `umoci insert --whiteout /etc/owned`;
/// 5. `umoci repack` after removing /usr/bin/tool-again and /tmp and
///    changing /opt/new/file (whiteouts and a new version).
fn umoci_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("umoci-layout");
    let image = format!("{}:t", layout.display());
    let image = image.as_str();
    tool("umoci", &[os("init"), os("--layout"), layout.as_os_str()]);
    tool("umoci", &[os("new"), os("--image"), os(image)]);
    let b1 = dir.join("umoci-b1");
    tool(
        "umoci",
        &[os("unpack"), os("--image"), os(image), b1.as_os_str()],
    );
    producer_tree(&b1.join("rootfs"));
    tool(
        "umoci",
        &[os("repack"), os("--image"), os(image), b1.as_os_str()],
    );

    let ins = dir.join("insert");
    write_file(&ins.join("file"), b"inserted\n");
    write_file(&ins.join("sub/big"), &pseudo_random(5, 70_000));
    tool(
        "umoci",
        &[
            os("insert"),
            os("--image"),
            os(image),
            ins.as_os_str(),
            os("/opt/new"),
        ],
    );
    tool(
        "umoci",
        &[
            os("insert"),
            os("--image"),
            os(image),
            os("--opaque"),
            ins.as_os_str(),
            os("/usr/share"),
        ],
    );
    tool(
        "umoci",
        &[
            os("insert"),
            os("--image"),
            os(image),
            os("--whiteout"),
            os("/etc/owned"),
        ],
    );

    let b2 = dir.join("umoci-b2");
    tool(
        "umoci",
        &[os("unpack"), os("--image"), os(image), b2.as_os_str()],
    );
    sh(
        &b2.join("rootfs"),
        "rm usr/bin/tool-again && rm -r tmp && printf 'changed\\n' > opt/new/file",
    );
    tool(
        "umoci",
        &[os("repack"), os("--image"), os(image), b2.as_os_str()],
    );
    layout
}

#[test]
fn umoci_insert_and_repack_pulled_from_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path());
    let manifest = layout_manifest(&layout, "t");
    assert_eq!(layer_types(&manifest).len(), 5, "{manifest}");

    // What umoci 0.4.7 writes, and what this test therefore covers:
    // layers without the end-of-archive blocks, and one whose last
    // member's content has no padding either.
    let layers = layer_tars(&layout, &manifest);
    let ends_in_zero_blocks =
        |l: &Vec<u8>| l.len() >= 1024 && l[l.len() - 1024..].iter().all(|&b| b == 0);
    assert!(
        layers.iter().any(|l| !ends_in_zero_blocks(l)),
        "every umoci layer has end-of-archive blocks: {:?}",
        layers.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        layers.iter().any(|l| l.len() % 512 != 0),
        "no umoci layer lacks its last member's padding: {:?}",
        layers.iter().map(Vec::len).collect::<Vec<_>>()
    );

    let (oracle, implicit) = umoci_oracle(&layout, "t", &tmp.path().join("bundle"));
    // `umoci insert` of /opt/new wrote no entry for /opt.
    assert_eq!(implicit, [PathBuf::from("opt")]);
    // The layers' changes, as umoci applies them.
    let has = |p: &str| oracle.paths.contains_key(Path::new(p));
    assert!(has("opt/new/sub/big") && has("usr/share/sub/big"));
    assert!(!has("usr/share/empty") && !has("usr/share/null"), "opaque");
    assert!(!has("etc/owned") && !has("usr/bin/tool-again") && !has("tmp"));
    assert!(has("usr/bin/tool") && has("usr/sbin/ping") && has("run/lock/stale"));
    assert_eq!(oracle.paths[Path::new("usr/bin/tool")].nlink, 1);
    assert!(
        oracle.paths[Path::new("usr/lib/small.txt")]
            .xattrs
            .contains_key(&b"user.note"[..])
    );

    let (repo, id) = pull_and_compare(
        &format!("oci:{}:t", layout.display()),
        &oracle,
        tmp.path(),
        "oci: (umoci)",
    );
    assert_eq!(
        repo.cat("oci-raw/img:/opt/new/file"),
        b"changed\n",
        "the last layer's version"
    );
    // The layer streams give the layers back byte for byte (no padding
    // or end blocks made up).
    let config: serde_json::Value =
        serde_json::from_slice(&repo.ok(&["oci", "inspect", "img", "--config"])).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let stream = format!("oci-layer-{}", diff_id.as_str().unwrap());
        assert!(repo.cat(&stream) == *layer, "{stream} is not the layer");
    }
    // Pulled again, into another repository: the same image.
    let again = Repo::new();
    pull(&again, &format!("oci:{}:t", layout.display()));
    assert_eq!(image_id(&again), id);

    // `umoci new` alone: an image of no layers, an empty root (and so no
    // composefs image: no /usr).
    let empty = format!("{}:empty", layout.display());
    tool("umoci", &[os("new"), os("--image"), os(&empty)]);
    let (oracle, implicit) = umoci_oracle(&layout, "empty", &tmp.path().join("bundle-empty"));
    assert_eq!(oracle.paths.len(), 1, "{oracle:?}");
    assert_eq!(implicit, [PathBuf::new()]);
    let r = Repo::new();
    let out = pull(&r, &format!("oci:{empty}"));
    assert!(
        out.contains("fetched 0 layers") && out.contains("no /usr directory"),
        "{out}"
    );
    let raw = mounted_view(&r.path, "oci-raw/img", &tmp.path().join("mnt-empty"));
    assert_same(&oracle, &raw, "oci:…:empty, oci-raw/img");
}

// ---------------------------------------------------------------------------
// skopeo: zstd and gzip, layout and registry

#[test]
fn skopeo_zstd_and_gzip_copies_pulled_from_layout_and_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let src = umoci_layout(tmp.path());
    let src_ref = format!("oci:{}:t", src.display());
    let src_manifest = layout_manifest(&src, "t");

    // zstd from umoci's gzip; gzip again from the zstd copy (so skopeo
    // decompresses zstd and compresses anew, rather than passing umoci's
    // blobs through; both use the same gzip library and level, so the
    // gzip blobs come out byte-identical to umoci's).
    let zstd = tmp.path().join("zstd-layout");
    let zstd_ref = format!("oci:{}:t", zstd.display());
    skopeo_copy(&["--dest-compress-format", "zstd", &src_ref, &zstd_ref]);
    let gzip = tmp.path().join("gzip-layout");
    let gzip_ref = format!("oci:{}:t", gzip.display());
    skopeo_copy(&["--dest-compress-format", "gzip", &zstd_ref, &gzip_ref]);
    let n = layer_types(&src_manifest).len();
    assert_eq!(
        layer_types(&layout_manifest(&zstd, "t")),
        vec!["application/vnd.oci.image.layer.v1.tar+zstd"; n]
    );
    let gzip_manifest = layout_manifest(&gzip, "t");
    assert_eq!(
        layer_types(&gzip_manifest),
        vec!["application/vnd.oci.image.layer.v1.tar+gzip"; n]
    );

    // Each into its own registry (so that no registry already holds a
    // blob of the other compression that skopeo could reuse).
    let zstd_reg = start_registry(false);
    let gzip_reg = start_registry(false);
    let remote = |reg: &RegistryProcess, what: &str| {
        format!("docker://127.0.0.1:{}/test/{what}:1", reg.port)
    };
    let zstd_remote = remote(&zstd_reg, "zstd");
    let gzip_remote = remote(&gzip_reg, "gzip");
    skopeo_copy(&[
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd",
        &src_ref,
        &zstd_remote,
    ]);
    skopeo_copy(&[
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "gzip",
        &zstd_ref,
        &gzip_remote,
    ]);

    // The oracle: umoci cannot read zstd layers ("blob is not correct
    // mediatype"); it unpacks the gzip copy skopeo made from them.
    let (oracle, implicit) = umoci_oracle(&gzip, "t", &tmp.path().join("bundle"));
    assert_eq!(implicit, [PathBuf::from("opt")]);
    let (plain, _) = umoci_oracle(&src, "t", &tmp.path().join("bundle-src"));
    assert_same(&plain, &oracle, "umoci unpack of the gzip copy");

    let mut ids = Vec::new();
    for (source, compression) in [
        (&zstd_ref, "zstd"),
        (&zstd_remote, "zstd"),
        (&gzip_ref, "gzip"),
        (&gzip_remote, "gzip"),
    ] {
        let (repo, id) = pull_and_compare(source, &oracle, tmp.path(), source);
        assert_eq!(
            layer_types(&stored_manifest(&repo)),
            vec![format!("application/vnd.oci.image.layer.v1.tar+{compression}"); n],
            "{source}"
        );
        ids.push((source.clone(), id));
    }
    let umoci_pull = Repo::new();
    pull(&umoci_pull, &src_ref);
    let want = image_id(&umoci_pull);
    for (source, id) in &ids {
        assert_eq!(id, &want, "{source}: another image id than umoci's gzip");
    }
    drop((zstd_reg, gzip_reg));
}
