//! Registry images read lazily (`composefs::oci::lazy::open_tree`),
//! against a real registry (Debian's `docker-registry`) holding an image
//! that Debian's skopeo wrote as zstd:chunked (`skopeo copy
//! --dest-compress-format zstd:chunked`) from an OCI layout made with
//! GNU tar and umoci: two layers, with a whiteout, an opaque directory,
//! hardlinks (in both layers), symlinks, user xattrs, a device, a fifo,
//! owners, setuid, nanosecond mtimes, and files of several MiB (one with
//! a long run of zeros, which zstd:chunked writes as a "zeros" chunk).
//!
//! The same image converted by stargz-snapshotter's `ctr-remote` (the
//! eStargz producer Debian has; skopeo 1.9 writes no eStargz) to eStargz
//! and to its own zstd:chunked is read the same way.
//!
//! Oracles: `umoci unpack` of the same image (for the untransformed
//! tree), and the image pulled by `composefs oci pull` (for the default,
//! transformed tree). Requests are seen through the fault proxy of
//! tests/common/faults.rs in front of the registry: what a read fetches,
//! and a registry that ignores ranges.
//!
//! Needs root (mknod, chown, xattrs for `umoci unpack`), skopeo, umoci,
//! docker-registry, containerd, ctr-remote (stargz-snapshotter), GNU
//! tar, attr, python3, curl.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use composefs::fsverity::Algorithm;
use composefs::oci::lazy::{LazyOptions, open_tree};
use composefs::oci::registry::RegistryOptions;
use composefs::repository::Repository;
use composefs::tree::{FileData, Ino, Kind, Tree};
use sha2::Digest as _;

use common::containerd::Containerd;
use common::faults::{Fault, FaultProxy};
use common::registry::{RegistryProcess, start_registry};
use common::{pseudo_random, require_tool, run_tool, sh, write_file};

// ---------------------------------------------------------------------------
// The image

struct Fixture {
    /// OCI layout (gzip layers, as umoci writes them) with tag `t`, and
    /// tag `hostile` (a layer with a `../` member).
    layout: PathBuf,
    /// `umoci unpack` of `t`.
    rootfs: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (mknod, chown, umoci unpack with owners)"
    );
    for t in [
        "tar",
        "umoci",
        "skopeo",
        "docker-registry",
        "setfattr",
        "python3",
    ] {
        require_tool(t);
    }
    let dir = tempfile::Builder::new()
        .prefix("remote-oci-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    let l1 = dir.join("l1");
    let l2 = dir.join("l2");
    // A file of random bytes, zeros and random bytes again: several
    // content-defined chunks and a "zeros" chunk.
    let mut big = pseudo_random(1, 1_300_000);
    big.extend(vec![0u8; 2 << 20]);
    big.extend(pseudo_random(2, 400_000));
    write_file(&l1.join("usr/bin/big"), &big);
    write_file(&l1.join("usr/lib/random"), &pseudo_random(3, 70_000));
    // Two files alike in size, whose (incompressible) frames are too.
    write_file(&l1.join("usr/lib/twin-a"), &pseudo_random(6, 5000));
    write_file(&l1.join("usr/lib/twin-b"), &pseudo_random(7, 5000));
    write_file(&l1.join("usr/share/big2"), &pseudo_random(4, 1_500_000));
    write_file(&l1.join("etc/hello"), b"hello\n");
    write_file(&l1.join("etc/motd"), b"welcome\n");
    write_file(&l1.join("srv/data/old"), b"old\n");
    write_file(&l1.join("srv/data/keep"), b"kept by no one\n");
    write_file(&l1.join("opt/secret/s"), b"s\n");
    write_file(&l2.join("srv/data/new"), b"new\n");
    write_file(&l2.join("usr/bin/tool"), &pseudo_random(5, 5000));
    write_file(&l2.join("etc/motd"), b"welcome again\n");
    sh(
        &dir,
        r#"
        cd l1
        mkdir -p var run
        : > usr/lib/empty
        ln usr/bin/big usr/bin/big-link
        ln -s big usr/bin/sym
        ln -s ../../etc/hello usr/lib/rel
        mkfifo var/fifo
        mknod var/null c 1 3
        chmod 4755 usr/bin/big
        chown -R 1000:2000 opt/secret
        chmod 0700 opt/secret
        setfattr -n user.greeting -v bonjour etc/hello
        setfattr -n user.binary -v 0x0001ff80 usr/lib/random
        setfattr -n user.dir -v d usr/share
        n=0
        find . -depth -print0 | sort -z | while IFS= read -r -d '' p; do
            n=$((n + 1))
            touch -h -d "@$((1600000000 + n * 1000)).$((n * 7919))" "$p"
        done
        cd ../l2
        mkdir -p etc
        : > etc/.wh.hello
        : > srv/data/.wh..wh..opq
        ln usr/bin/tool usr/bin/tool2
        find . -depth -print0 | while IFS= read -r -d '' p; do
            touch -h -d @1700000000.5 "$p"
        done
        cd ..
        for l in l1 l2; do
            tar --sort=name --format=posix --pax-option=delete=atime,delete=ctime \
                --xattrs --xattrs-include='user.*' --numeric-owner \
                -C $l -cf $l.tar .
        done
        python3 - <<'EOF'
import tarfile, io
with tarfile.open("hostile.tar", "w", format=tarfile.PAX_FORMAT) as t:
    for name in ["usr/", "usr/ok", "../escape"]:
        i = tarfile.TarInfo(name)
        i.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
        data = b"" if i.isdir() else b"x\n"
        i.size = len(data)
        t.addfile(i, io.BytesIO(data))
EOF
        "#,
    );
    let layout = dir.join("layout");
    common::umoci_image(&layout, "t", &[&dir.join("l1.tar"), &dir.join("l2.tar")]);
    common::umoci_image(&layout, "hostile", &[&dir.join("hostile.tar")]);
    let bundle = dir.join("bundle");
    let image = format!("{}:t", layout.display());
    run_tool(
        "umoci",
        &[
            OsStr::new("unpack"),
            OsStr::new("--image"),
            OsStr::new(&image),
            bundle.as_os_str(),
        ],
        Path::new("/"),
    );
    Fixture {
        layout,
        rootfs: bundle.join("rootfs"),
    }
}

/// A registry holding the fixture's `t` as `lazy/zc:1` (zstd:chunked)
/// and `lazy/gz:1` (gzip), and `hostile` as `lazy/hostile:1`
/// (zstd:chunked).
fn registry() -> RegistryProcess {
    let f = fixture();
    let reg = start_registry(true);
    for (tag, name, format) in [
        ("t", "zc:1", "zstd:chunked"),
        ("t", "gz:1", "gzip"),
        ("hostile", "hostile:1", "zstd:chunked"),
    ] {
        reg.push(
            &format!("oci:{}:{tag}", f.layout.display()),
            &format!("lazy/{name}"),
            format,
        );
    }
    reg
}

/// [`registry`], and `lazy/gz:1` converted by stargz-snapshotter's
/// `ctr-remote` to eStargz (`lazy/esgz:1`) and to its zstd:chunked
/// (`lazy/szc:1`, which carries both formats' annotations), in chunks of
/// 64 KiB.
fn stargz_registry() -> (RegistryProcess, Containerd) {
    let reg = registry();
    let c = Containerd::start();
    let at = |name: &str| format!("127.0.0.1:{}/lazy/{name}", reg.port);
    c.ctr(&["content", "fetch", "--plain-http", &at("gz:1")]);
    for (flag, name) in [("--estargz", "esgz:1"), ("--zstdchunked", "szc:1")] {
        // Chunks of 64 KiB: large files are many chunks.
        c.ctr(&[
            "images",
            "convert",
            flag,
            "--estargz-chunk-size=65536",
            "--oci",
            &at("gz:1"),
            &at(name),
        ]);
        c.ctr(&["images", "push", "--plain-http", &at(name)]);
    }
    (reg, c)
}

fn new_repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(&dir.path().join("repo"), Algorithm::Sha256).unwrap();
    (dir, repo)
}

fn raw() -> LazyOptions {
    LazyOptions {
        raw: true,
        ..LazyOptions::default()
    }
}

fn with_retries(retries: u32) -> LazyOptions {
    LazyOptions {
        registry: RegistryOptions {
            retries,
            ..RegistryOptions::default()
        },
        ..raw()
    }
}

/// The manifest of `name:tag` as the registry serves it.
fn manifest(port: u16, name: &str, tag: &str) -> serde_json::Value {
    let out = sh(
        Path::new("/"),
        &format!(
            "curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
             http://127.0.0.1:{port}/v2/{name}/manifests/{tag}"
        ),
    );
    serde_json::from_slice(&out).unwrap()
}

// ---------------------------------------------------------------------------
// What a user sees of a tree

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    /// Size of a non-directory.
    size: u64,
    mtime: (i64, u32),
    rdev: u64,
    target: Option<Vec<u8>>,
    /// sha256 of a regular file's content.
    content: Option<String>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every path (the root as ""), and the hardlink groups.
#[derive(Debug, PartialEq, Eq)]
struct View {
    paths: BTreeMap<String, Seen>,
    links: Vec<Vec<String>>,
}

fn sha(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// A tree as the library shows it, contents read through
/// `content_object` (the way the FUSE view and `cat` read them).
fn tree_view(tree: &dyn Tree, repo: &Repository) -> View {
    let mut paths = BTreeMap::new();
    let mut groups: BTreeMap<Ino, Vec<String>> = BTreeMap::new();
    let mut stack = vec![(tree.root(), String::new())];
    while let Some((ino, path)) = stack.pop() {
        let inode = tree.inode(ino).unwrap();
        let (size, rdev, target, content) = match &inode.kind {
            Kind::Regular(FileData::Inline(b)) => (b.len() as u64, 0, None, Some(sha(b))),
            Kind::Regular(FileData::External { size, .. }) => {
                let id = tree
                    .content_object(ino)
                    .unwrap_or_else(|e| panic!("{path}: {e:#}"))
                    .unwrap();
                let mut data = Vec::new();
                repo.open_object(&id)
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                assert_eq!(data.len() as u64, *size, "{path}");
                (*size, 0, None, Some(sha(&data)))
            }
            Kind::Symlink(t) => (t.len() as u64, 0, Some(t.clone()), None),
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => (0, *rdev, None, None),
            _ => (0, 0, None, None),
        };
        let is_dir = inode.kind.is_dir();
        paths.insert(
            path.clone(),
            Seen {
                mode: inode.st_mode(),
                uid: inode.stat.uid,
                gid: inode.stat.gid,
                size,
                mtime: (inode.stat.mtime.sec, inode.stat.mtime.nsec),
                rdev,
                target,
                content,
                xattrs: inode.xattrs.iter().cloned().collect(),
            },
        );
        if is_dir {
            for e in tree.readdir(ino).unwrap().iter() {
                let name = String::from_utf8(e.name.clone()).unwrap();
                let p = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                stack.push((e.ino, p));
            }
        } else {
            groups.entry(ino).or_default().push(path);
        }
    }
    View {
        paths,
        links: link_groups(groups.into_values()),
    }
}

fn link_groups(groups: impl Iterator<Item = Vec<String>>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = groups
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    out.sort();
    out
}

/// A directory on disk as a user sees it.
fn disk_view(root: &Path) -> View {
    let mut paths = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((p, rel)) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let content = ft.is_file().then(|| sha(&std::fs::read(&p).unwrap()));
        let target = ft.is_symlink().then(|| {
            std::fs::read_link(&p)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        let is_dev = ft.is_char_device_like();
        paths.insert(
            rel.clone(),
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_dir() { 0 } else { m.size() },
                mtime: (m.mtime(), m.mtime_nsec() as u32),
                rdev: if is_dev { m.rdev() } else { 0 },
                target,
                content,
                xattrs: common::xattrs(&p),
            },
        );
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_str().unwrap().to_string();
                let r = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((e.path(), r));
            }
        } else {
            groups.entry(m.ino()).or_default().push(rel);
        }
    }
    View {
        paths,
        links: link_groups(groups.into_values()),
    }
}

trait DeviceLike {
    fn is_char_device_like(&self) -> bool;
}

impl DeviceLike for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device() || self.is_block_device()
    }
}

fn assert_same(want: &View, got: &View, what: &str) {
    let wk: Vec<&String> = want.paths.keys().collect();
    let gk: Vec<&String> = got.paths.keys().collect();
    assert_eq!(wk, gk, "{what}: the paths differ");
    for (p, w) in &want.paths {
        assert_eq!(w, &got.paths[p], "{what}: {p:?}");
    }
    assert_eq!(want.links, got.links, "{what}: hardlinks");
}

// ---------------------------------------------------------------------------
// Requests seen by the proxy

/// Blob GETs the proxy saw, with their Range headers.
fn blob_gets(proxy: &FaultProxy) -> Vec<(String, Option<String>)> {
    proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.contains("/blobs/"))
        .map(|s| (s.path, s.range))
        .collect()
}

/// The length of `bytes=A-B`.
fn range_len(r: &str) -> u64 {
    let (a, b) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
    b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1
}

fn layer_sizes(m: &serde_json::Value) -> Vec<(String, u64)> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn skopeo_writes_zstd_chunked_with_a_table_of_contents() {
    let reg = registry();
    let m = manifest(reg.port, "lazy/zc", "1");
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{l}"
        );
        // Debian 12's skopeo 1.9 writes the pre-2022 annotation names.
        let a = &l["annotations"];
        assert!(
            a["io.containers.zstd-chunked.manifest-checksum"].is_string()
                || a["io.github.containers.zstd-chunked.manifest-checksum"].is_string(),
            "{l}"
        );
    }
}

#[test]
fn untransformed_tree_matches_umoci_unpack() {
    let f = fixture();
    let reg = registry();
    let (_d, repo) = new_repo();
    let name = format!("docker://127.0.0.1:{}/lazy/zc:1", reg.port);
    let tree = open_tree(&repo, &name, &raw()).unwrap();
    let got = tree_view(tree.as_ref(), &repo);
    let want = disk_view(&f.rootfs);
    assert_same(&want, &got, "lazy oci-raw vs umoci unpack");
    // What the layers said, as a check on the fixture itself.
    assert!(!got.paths.contains_key("etc/hello"), "whited out");
    assert!(!got.paths.contains_key("srv/data/old"), "opaque directory");
    assert!(!got.paths.contains_key("srv/data/keep"), "opaque directory");
    assert!(got.paths.contains_key("srv/data/new"));
    assert!(got.paths.contains_key("usr/lib/empty"));
    assert_eq!(
        got.paths["usr/lib/rel"].target.as_deref(),
        Some(&b"../../etc/hello"[..])
    );
    assert_eq!(got.paths["var/null"].rdev, rustix::fs::makedev(1, 3));
    assert_eq!(
        got.links,
        [
            vec!["usr/bin/big".to_string(), "usr/bin/big-link".to_string()],
            vec!["usr/bin/tool".to_string(), "usr/bin/tool2".to_string()],
        ]
    );
    assert_eq!(
        got.paths["usr/lib/random"].xattrs[&b"user.binary"[..]],
        [0, 1, 0xff, 0x80]
    );
    assert_eq!(got.paths["usr/bin/big"].mode, 0o104755);
    assert_ne!(got.paths["usr/bin/big"].mtime.1, 0, "nanoseconds kept");
}

/// stargz-snapshotter's eStargz and zstd:chunked: the same tree as
/// `umoci unpack`, but for mtimes, which its tables hold in whole seconds
/// (rounded); a file read by one range.
#[test]
fn stargz_images_match_umoci_unpack() {
    let f = fixture();
    let (reg, _containerd) = stargz_registry();
    let mut want = disk_view(&f.rootfs);
    for s in want.paths.values_mut() {
        let (sec, nsec) = s.mtime;
        s.mtime = (sec + i64::from(nsec >= 500_000_000), 0);
    }
    for (name, media_type) in [
        ("esgz", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("szc", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let m = manifest(reg.port, &format!("lazy/{name}"), "1");
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], media_type, "{l}");
            assert!(
                l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].is_string(),
                "{l}"
            );
        }
        let proxy = FaultProxy::start(reg.port, |_, _, _| Fault::Pass);
        let (_d, repo) = new_repo();
        let image = format!("docker://{}/lazy/{name}:1", proxy.host());
        let tree = open_tree(&repo, &image, &raw()).unwrap();
        proxy.clear();
        let ino = tree.resolve_path(b"usr/bin/big").unwrap().unwrap();
        tree.content_object(ino).unwrap().unwrap();
        let gets = blob_gets(&proxy);
        assert_eq!(gets.len(), 1, "{name}: {gets:?}");
        assert!(gets[0].1.is_some(), "{name}: {gets:?}");
        let got = tree_view(tree.as_ref(), &repo);
        assert_same(&want, &got, &format!("lazy {name} vs umoci unpack"));
    }
}

/// The default tree is the pulled image's `oci/NAME`. The pull is of the
/// gzip copy: Debian 12's skopeo 1.9 drops the tar's end-of-archive
/// blocks when it writes zstd:chunked, so that layer's uncompressed
/// digest is not the config's diff_id and `oci pull` refuses it (fixed in
/// containers/storage in December 2023); the files are the same.
#[test]
fn default_tree_matches_the_pulled_image() {
    let reg = registry();
    let (_d, repo) = new_repo();
    let name = format!("docker://127.0.0.1:{}/lazy/zc:1", reg.port);
    let tree = open_tree(&repo, &name, &LazyOptions::default()).unwrap();
    let got = tree_view(tree.as_ref(), &repo);

    let (_d2, pulled_repo) = new_repo();
    let src = composefs::oci::registry::Registry::new(
        &format!("127.0.0.1:{}", reg.port),
        "lazy/gz",
        &RegistryOptions::default(),
    )
    .unwrap();
    composefs::oci::pull::pull(
        &pulled_repo,
        &src,
        "1",
        "gz",
        &composefs::oci::pull::host_platform(),
        &NoProgress,
    )
    .unwrap();
    let pulled = composefs::view::open_tree(&pulled_repo, "oci/gz").unwrap();
    let want = tree_view(pulled.as_ref(), &pulled_repo);
    assert_same(&want, &got, "lazy default vs pulled oci/gz");
    // The transform applied: the root took /usr's metadata, user xattrs went.
    assert_eq!(got.paths[""].mtime, got.paths["usr"].mtime);
    assert!(got.paths["etc/motd"].xattrs.is_empty());
    assert!(got.paths["usr/lib/random"].xattrs.is_empty());
}

struct NoProgress;
impl composefs::oci::pull::PullProgress for NoProgress {}

#[test]
fn reading_a_file_fetches_only_its_range_once() {
    let reg = registry();
    let proxy = FaultProxy::start(reg.port, |_, _, _| Fault::Pass);
    let (_d, repo) = new_repo();
    let name = format!("docker://{}/lazy/zc:1", proxy.host());
    let m = manifest(reg.port, "lazy/zc", "1");
    let layers = layer_sizes(&m);
    let config = m["config"]["digest"].as_str().unwrap().to_string();

    let tree = open_tree(&repo, &name, &raw()).unwrap();
    // Opening: the config whole, each layer's table by one range.
    let opened = blob_gets(&proxy);
    assert_eq!(opened.len(), 1 + layers.len(), "{opened:?}");
    for (path, range) in &opened {
        if path.ends_with(&config) {
            assert_eq!(range, &None);
            continue;
        }
        let (_, size) = layers.iter().find(|(d, _)| path.ends_with(d)).unwrap();
        let len = range_len(range.as_deref().unwrap());
        assert!(len < size / 10, "a table of {len} bytes of {size}");
    }
    assert_eq!(repo_objects(&repo), 0, "opening stores no content");

    let read = |path: &str| {
        proxy.clear();
        let ino = tree.resolve_path(path.as_bytes()).unwrap().unwrap();
        let id = tree.content_object(ino).unwrap().unwrap();
        (id, blob_gets(&proxy))
    };
    // A small file: one request, for a few dozen bytes of layer 2.
    let (_, gets) = read("etc/motd");
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0].0.ends_with(&layers[1].0), "{gets:?}");
    assert!(range_len(gets[0].1.as_deref().unwrap()) < 100, "{gets:?}");
    assert_eq!(repo_objects(&repo), 1);

    // A large chunked file: one request for its range, not the layer.
    let (big, gets) = read("usr/bin/big");
    assert_eq!(gets.len(), 1, "{gets:?}");
    let len = range_len(gets[0].1.as_deref().unwrap());
    assert!(gets[0].0.ends_with(&layers[0].0));
    assert!(len < layers[0].1 - 1_000_000, "{len} of {}", layers[0].1);
    // Again, and through its other name: nothing fetched.
    let (again, gets) = read("usr/bin/big");
    assert_eq!((again, gets.len()), (big, 0));
    let (link, gets) = read("usr/bin/big-link");
    assert_eq!((link, gets.len()), (big, 0));
    let mut data = Vec::new();
    repo.open_object(&big)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(
        sha(&data),
        sha(&std::fs::read(fixture().rootfs.join("usr/bin/big")).unwrap())
    );
    // Its object collected (no ref names it): fetched again.
    std::fs::remove_file(repo.object_path(&big)).unwrap();
    let (again, gets) = read("usr/bin/big-link");
    assert_eq!((again, gets.len()), (big, 1));
    assert!(repo.has_object(&big).unwrap());

    // A second tree of the same image (another mount) reads what the first
    // fetched from the repository: only its tables are fetched.
    drop(tree);
    proxy.clear();
    let second = open_tree(&repo, &name, &raw()).unwrap();
    let opened = blob_gets(&proxy).len();
    for path in ["etc/motd", "usr/bin/big"] {
        let ino = second.resolve_path(path.as_bytes()).unwrap().unwrap();
        second.content_object(ino).unwrap().unwrap();
    }
    assert_eq!(
        blob_gets(&proxy).len(),
        opened,
        "the second tree fetched contents the first had stored"
    );
}

fn repo_objects(repo: &Repository) -> usize {
    common::list_objects(repo.path()).len()
}

#[test]
fn concurrent_readers_of_one_file_share_one_fetch() {
    let reg = registry();
    let proxy = FaultProxy::start(reg.port, |_, _, _| Fault::Pass);
    let (_d, repo) = new_repo();
    let name = format!("docker://{}/lazy/zc:1", proxy.host());
    let tree: Arc<dyn Tree> = open_tree(&repo, &name, &raw()).unwrap();
    let big = tree.resolve_path(b"usr/share/big2").unwrap().unwrap();
    let small = tree.resolve_path(b"usr/lib/random").unwrap().unwrap();
    proxy.clear();
    let ids: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let tree = tree.clone();
                s.spawn(move || {
                    let ino = if i == 7 { small } else { big };
                    (ino, tree.content_object(ino).unwrap().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let big_ids: Vec<_> = ids.iter().filter(|(i, _)| *i == big).collect();
    assert!(big_ids.iter().all(|(_, id)| *id == big_ids[0].1));
    assert_eq!(blob_gets(&proxy).len(), 2, "{:?}", blob_gets(&proxy));
}

#[test]
fn a_registry_that_ignores_ranges_still_works() {
    let reg = registry();
    let proxy = FaultProxy::start(reg.port, |_, path, _| {
        if path.contains("/blobs/") {
            Fault::NoRange
        } else {
            Fault::Pass
        }
    });
    let (_d, repo) = new_repo();
    let name = format!("docker://{}/lazy/zc:1", proxy.host());
    let tree = open_tree(&repo, &name, &raw()).unwrap();
    for path in ["etc/motd", "usr/bin/big", "usr/bin/tool"] {
        let ino = tree.resolve_path(path.as_bytes()).unwrap().unwrap();
        let id = tree.content_object(ino).unwrap().unwrap();
        let mut data = Vec::new();
        repo.open_object(&id)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(
            data,
            std::fs::read(fixture().rootfs.join(path)).unwrap(),
            "{path}"
        );
    }
    let m = manifest(reg.port, "lazy/zc", "1");
    let config = m["config"]["digest"].as_str().unwrap();
    assert!(
        blob_gets(&proxy)
            .iter()
            .all(|(p, r)| p.ends_with(config) || r.is_some()),
        "ranges were asked for"
    );
}

#[test]
fn a_gzip_image_is_refused_with_the_pull_hint() {
    let reg = registry();
    let (_d, repo) = new_repo();
    let name = format!("docker://127.0.0.1:{}/lazy/gz:1", reg.port);
    let err = format!("{:#}", open_tree(&repo, &name, &raw()).err().unwrap());
    assert!(err.contains("composefs oci pull"), "{err}");
    assert!(err.contains("table of contents"), "{err}");
    assert!(err.contains("layer 1"), "{err}");
}

#[test]
fn a_table_of_contents_that_does_not_match_its_digest_is_refused() {
    let reg = registry();
    let mut m = manifest(reg.port, "lazy/zc", "1");
    let key = "io.containers.zstd-chunked.manifest-checksum";
    m["layers"][1]["annotations"][key] = format!("sha256:{}", sha(b"another table")).into();
    let body = serde_json::to_vec(&m).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    sh(
        Path::new("/"),
        &format!(
            "curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
             --data-binary @{} http://127.0.0.1:{}/v2/lazy/zc/manifests/bad",
            file.path().display(),
            reg.port
        ),
    );
    let (_d, repo) = new_repo();
    let name = format!("docker://127.0.0.1:{}/lazy/zc:bad", reg.port);
    let err = format!("{:#}", open_tree(&repo, &name, &raw()).err().unwrap());
    assert!(err.contains("layer 2"), "{err}");
    assert!(err.contains("digests to sha256:"), "{err}");
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn altered_content_in_the_registry_is_refused_and_not_stored() {
    let reg = registry();
    let (_d, repo) = new_repo();
    let name = format!("docker://127.0.0.1:{}/lazy/zc:1", reg.port);
    let tree = open_tree(&repo, &name, &with_retries(0)).unwrap();
    let (blob, digest, start, end) = file_range(&reg, 0, "./usr/lib/random");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[(start + end) / 2] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();

    let ino = tree.resolve_path(b"usr/lib/random").unwrap().unwrap();
    let err = format!("{:#}", tree.content_object(ino).unwrap_err());
    assert!(err.contains("usr/lib/random"), "{err}");
    assert!(err.contains(&digest), "{err}");
    assert!(
        err.contains(&format!(
            "http://127.0.0.1:{}/v2/lazy/zc/blobs/{digest}",
            reg.port
        )),
        "{err}"
    );
    assert_eq!(repo_objects(&repo), 0, "nothing stored: {err}");
    assert!(common::tmp_leftovers(repo.path()).is_empty());
}

/// Where a file's compressed bytes are in layer `layer` of `lazy/zc:1`,
/// by its table of contents: the blob's path in the registry's storage,
/// its layer digest, and the file's `offset..endOffset`.
fn file_range(reg: &RegistryProcess, layer: usize, name: &str) -> (PathBuf, String, usize, usize) {
    let m = manifest(reg.port, "lazy/zc", "1");
    let layer = &m["layers"][layer];
    let digest = layer["digest"].as_str().unwrap().to_string();
    let blob = reg.blob_path(digest.strip_prefix("sha256:").unwrap());
    let pos = layer["annotations"]["io.containers.zstd-chunked.manifest-position"]
        .as_str()
        .unwrap();
    let p: Vec<usize> = pos.split(':').map(|v| v.parse().unwrap()).collect();
    let bytes = std::fs::read(&blob).unwrap();
    let toc: serde_json::Value =
        serde_json::from_slice(&zstd::decode_all(&bytes[p[0]..p[0] + p[1]]).unwrap()).unwrap();
    let e = toc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the table"));
    let (start, end) = (
        e["offset"].as_u64().unwrap() as usize,
        e["endOffset"].as_u64().unwrap() as usize,
    );
    (blob, digest, start, end)
}

/// The registry serves another file's (valid) frames where a file's
/// should be: they decompress, but not to the table's sha256.
#[test]
fn content_that_is_not_the_tables_is_refused() {
    let reg = registry();
    let (_d, repo) = new_repo();
    let name = format!("docker://127.0.0.1:{}/lazy/zc:1", reg.port);
    let tree = open_tree(&repo, &name, &with_retries(0)).unwrap();
    let (blob, _, a0, a1) = file_range(&reg, 0, "./usr/lib/twin-a");
    let (_, _, b0, b1) = file_range(&reg, 0, "./usr/lib/twin-b");
    assert_eq!(a1 - a0, b1 - b0, "the twins' frames differ in length");
    let mut bytes = std::fs::read(&blob).unwrap();
    let b = bytes[b0..b1].to_vec();
    bytes[a0..a1].copy_from_slice(&b);
    std::fs::write(&blob, &bytes).unwrap();

    let ino = tree.resolve_path(b"usr/lib/twin-a").unwrap().unwrap();
    let err = format!("{:#}", tree.content_object(ino).unwrap_err());
    let want = hex::encode(sha2::Sha256::digest(
        std::fs::read(fixture().rootfs.join("usr/lib/twin-a")).unwrap(),
    ));
    assert!(
        err.contains(&format!(
            "the table of contents says sha256:{want}: refused"
        )),
        "{err}"
    );
    assert_eq!(repo_objects(&repo), 0, "nothing stored: {err}");
    // The other twin is still read as it is.
    let ino = tree.resolve_path(b"usr/lib/twin-b").unwrap().unwrap();
    tree.content_object(ino).unwrap().unwrap();
}

#[test]
fn an_entry_leaving_the_root_is_refused() {
    let reg = registry();
    let (_d, repo) = new_repo();
    let name = format!("docker://127.0.0.1:{}/lazy/hostile:1", reg.port);
    let err = format!("{:#}", open_tree(&repo, &name, &raw()).err().unwrap());
    assert!(err.contains("../escape"), "{err}");
    assert!(err.contains("out of the image root"), "{err}");
}

#[test]
fn only_registry_references_are_read_lazily() {
    let (_d, repo) = new_repo();
    let err = format!(
        "{:#}",
        open_tree(&repo, "oci:/nonexistent:t", &raw())
            .err()
            .unwrap()
    );
    assert!(err.contains("docker://"), "{err}");
}

/// The command line end to end: `composefs mount docker://…` shows what a
/// mount of the same image pulled (`oci pull` of its gzip copy) shows;
/// `cat` and `ls` take the same name; file contents are fetched by the
/// reads, into the mounting repository.
#[test]
fn the_cli_mounts_lists_and_cats_a_registry_image() {
    let reg = registry();
    let repo = common::Repo::new();
    let name = format!("docker://127.0.0.1:{}/lazy/zc:1", reg.port);
    let before = repo.object_count();
    let scratch = repo.scratch();
    let lazy = common::Mounted::fuse(&repo, &name, &scratch.join("lazy"));
    assert_eq!(
        repo.object_count(),
        before,
        "mounting fetched no file content"
    );
    let got = disk_view(&scratch.join("lazy"));

    let pulled = common::Repo::new();
    pulled.ok(&[
        "oci",
        "pull",
        &format!("docker://127.0.0.1:{}/lazy/gz:1", reg.port),
        "--name",
        "gz",
    ]);
    let local = common::Mounted::fuse(&pulled, "oci/gz", &pulled.scratch().join("m"));
    let want = disk_view(&pulled.scratch().join("m"));
    assert_same(
        &want,
        &got,
        "FUSE mount of docker:// vs of the pulled image",
    );
    assert!(
        repo.object_count() > before,
        "reading every file stored their contents"
    );
    local.umount(&pulled);
    lazy.umount(&repo);

    let tool = std::fs::read(fixture().rootfs.join("usr/bin/tool")).unwrap();
    assert_eq!(repo.ok(&["cat", &format!("{name}:/usr/bin/tool")]), tool);
    let ls = String::from_utf8(repo.ok(&["ls", &format!("{name}:/usr/bin")])).unwrap();
    assert!(ls.contains("tool2"), "ls of docker://…:/usr/bin: {ls}");
}

/// A gzip image is refused with the pull hint; asked to (`--pull`), it is
/// pulled whole and shown from the repository, by `cat` and by a mount.
#[test]
fn a_gzip_image_is_pulled_when_asked() {
    let reg = registry();
    let repo = common::Repo::new();
    let name = format!("docker://127.0.0.1:{}/lazy/gz:1", reg.port);
    let tool = std::fs::read(fixture().rootfs.join("usr/bin/tool")).unwrap();
    let err = repo.fail(&["cat", &format!("{name}:/usr/bin/tool")]);
    common::assert_mentions(
        &err,
        &["table of contents", "oci pull", "--pull"],
        "cat of a gzip image",
    );
    assert_eq!(
        repo.ok(&["cat", "--pull", &format!("{name}:/usr/bin/tool")]),
        tool
    );
    let refs = String::from_utf8(repo.ok(&["refs"])).unwrap();
    assert!(refs.contains("oci/"), "the pulled image is named: {refs}");
    let mnt = repo.scratch().join("m");
    let m = common::Mounted::fuse_with(&repo, &["--pull"], &name, &mnt);
    assert_eq!(std::fs::read(m.path.join("usr/bin/tool")).unwrap(), tool);
    m.umount(&repo);
}
