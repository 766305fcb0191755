//! Each tool reads what the other stored, checked by what a user sees:
//! - a tar imported by either tool (`import-tar`, `cfsctl oci
//!   import-layer`) is one stream, and `cat` by either tool gives the
//!   original tar back, byte for byte;
//! - an OCI image and an ostree commit pulled by `cfsctl` 0.9.4, seen
//!   through our FUSE mount, through our kernel mount of the image cfsctl
//!   linked, and through cfsctl's own kernel mount, is the same tree as our
//!   own pull of the same source through our FUSE mount: paths, kinds,
//!   modes, owners, sizes, mtimes, device numbers, symlink targets,
//!   contents, xattrs and hardlink groups (nlink and shared inodes).
//!
//! Needs root (kernel mounts, the ostree fixture, devices), cfsctl 0.9.4,
//! umoci, ostree, fsck.erofs.

mod common;
#[path = "common/ostree.rs"]
#[allow(unused_imports)]
mod ostree_fixtures;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{Repo, cfsctl, write_file};

/// What a user sees of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    rdev: u64,
    nlink: u64,
    target: Option<PathBuf>,
    content: Option<u64>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Everything under `root`, by relative path, and the hardlink groups
/// (paths sharing an inode, more than one).
struct View {
    paths: BTreeMap<PathBuf, Seen>,
    links: Vec<Vec<PathBuf>>,
}

fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(p, &mut names) {
        Ok(n) => n,
        Err(e) => panic!("llistxattr {}: {e}", p.display()),
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 65536];
        let cname = std::ffi::CString::new(name).unwrap();
        let len = rustix::fs::lgetxattr(p, cname.as_c_str(), &mut val)
            .unwrap_or_else(|e| panic!("lgetxattr {} {:?}: {e}", p.display(), cname));
        out.insert(name.to_vec(), val[..len].to_vec());
    }
    out
}

fn view(root: &Path, with_xattrs: bool) -> View {
    let mut paths = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let target = ft.is_symlink().then(|| std::fs::read_link(&p).unwrap());
        let content = ft.is_file().then(|| {
            let mut h = DefaultHasher::new();
            h.write(&std::fs::read(&p).unwrap());
            h.finish()
        });
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        } else {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        let is_dev = ft.is_block_device() || ft.is_char_device();
        paths.insert(
            rel.clone(),
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                // A directory's size is the file system's business.
                size: if ft.is_dir() { 0 } else { m.size() },
                mtime: m.mtime(),
                rdev: if is_dev { m.rdev() } else { 0 },
                nlink: if ft.is_dir() { 0 } else { m.nlink() },
                target,
                content,
                xattrs: if with_xattrs {
                    xattrs_of(&p)
                } else {
                    BTreeMap::new()
                },
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

fn assert_same(a: &View, b: &View, what: &str) {
    let ka: Vec<_> = a.paths.keys().collect();
    let kb: Vec<_> = b.paths.keys().collect();
    assert_eq!(ka, kb, "{what}: paths");
    for (p, s) in &a.paths {
        assert_eq!(s, &b.paths[p], "{what}: {}", p.display());
    }
    assert_eq!(a.links, b.links, "{what}: hardlink groups");
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

fn composefs_in(repo: &Path, args: &[&str]) -> String {
    let mut all: Vec<&OsStr> = vec!["--repo".as_ref(), repo.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let out = common::composefs(&all, None, &[]);
    common::assert_no_panic(&args.join(" "), &out);
    assert!(
        out.status.success(),
        "composefs --repo {} {args:?} failed:\n{}",
        repo.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cfsctl_init(dir: &Path, alg: &str) -> PathBuf {
    let out = cfsctl::run(&[
        "init".as_ref(),
        "--insecure".as_ref(),
        "--algorithm".as_ref(),
        format!("fsverity-{alg}-12").as_ref(),
        dir.as_os_str(),
    ]);
    assert!(out.status.success(), "cfsctl init: {out:?}");
    dir.to_path_buf()
}

/// A mount that goes away however the test ends.
struct Mount {
    path: PathBuf,
}

impl Mount {
    /// `composefs --repo REPO mount ARGS... MNT` (FUSE or `--kernel`).
    fn ours(repo: &Path, args: &[&str], mnt: &Path) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let mut a: Vec<&str> = vec!["mount"];
        a.extend_from_slice(args);
        a.push(p(mnt));
        composefs_in(repo, &a);
        Mount {
            path: mnt.to_path_buf(),
        }
    }

    /// `cfsctl --repo REPO ARGS... MNT` (a kernel mount).
    fn cfsctl(repo: &Path, args: &[&str], mnt: &Path) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let mut a: Vec<&str> = args.to_vec();
        a.push(p(mnt));
        cfsctl::ok(repo, &a);
        Mount {
            path: mnt.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn tar_import_and_cat_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    common::mixed_tree(&root, 7, 300);
    write_file(&root.join("exactly64"), &[b'x'; 64]);
    write_file(&root.join("exactly65"), &[b'y'; 65]);
    write_file(&root.join("big"), &common::pseudo_random(9, 3 << 20));
    std::os::unix::fs::symlink("exactly64", root.join("link")).unwrap();
    let tar = tmp.path().join("layer.tar");
    let bytes = common::make_tar(&root, &tar, &[]);
    let diff_id = format!("sha256:{}", common::sha256sum(&tar));

    let ours = Repo::new();
    let (sid, content_id) = ours.import("t", &tar);
    assert_eq!(content_id, format!("oci-layer-{diff_id}"));
    let theirs = cfsctl_init(&tmp.path().join("theirs"), "sha512");
    let out = std::process::Command::new(cfsctl::path())
        .args(["--repo", p(&theirs), "oci", "import-layer", &diff_id])
        .stdin(std::fs::File::open(&tar).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "cfsctl oci import-layer: {out:?}");
    let entry = |r: &Path| std::fs::read_link(r.join("streams").join(&content_id)).unwrap();
    assert_eq!(entry(&ours.path), entry(&theirs), "one stream object");
    assert!(entry(&ours.path).to_str().unwrap().contains(&sid[2..]));

    // cfsctl cat of ours, our cat of cfsctl's: the tar, byte for byte.
    let cat_theirs = std::process::Command::new(cfsctl::path())
        .args(["--repo", p(&ours.path), "cat", &content_id])
        .output()
        .unwrap();
    assert!(cat_theirs.status.success(), "cfsctl cat: {cat_theirs:?}");
    assert!(cat_theirs.stdout == bytes, "cfsctl cat of our stream");
    let mut all: Vec<&OsStr> = vec!["--repo".as_ref(), theirs.as_os_str()];
    all.extend(["cat".as_ref(), OsStr::new(&content_id)]);
    let cat_ours = common::composefs(&all, None, &[]);
    assert!(cat_ours.status.success(), "{cat_ours:?}");
    assert!(cat_ours.stdout == bytes, "our cat of cfsctl's stream");
    assert!(cfsctl::ok(&ours.path, &["fsck"]).contains("status: ok"));
    ours.assert_fsck_ok();
    assert!(composefs_in(&theirs, &["fsck"]).contains(" 0 problems"));
}

#[test]
fn oci_image_pulled_by_cfsctl_is_the_tree_of_ours() {
    common::require_tool("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::mixed_tree(&root, 11, 400);
    write_file(&root.join("usr/bin/tool"), &common::pseudo_random(1, 9000));
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    write_file(&root.join("run/leftover"), b"emptied by the transform");
    write_file(&root.join("etc/cap"), b"#!/bin/sh\n");
    let setcap = std::process::Command::new("setfattr")
        .args(["-n", "security.capability", "-v"])
        .arg("0x0100000200200000000000000000000000000000")
        .arg(root.join("etc/cap"))
        .status()
        .unwrap();
    assert!(setcap.success());
    let tar = tmp.path().join("l.tar");
    common::make_tar(&root, &tar, &["--xattrs", "--xattrs-include=*"]);
    let lay = tmp.path().join("layout");
    common::umoci_image(&lay, "t", &[&tar]);
    let src = format!("oci:{}:t", lay.display());

    let ours = Repo::new();
    ours.ok(&["oci", "pull", &src, "--name", "img"]);
    let theirs = cfsctl_init(&tmp.path().join("theirs"), "sha512");
    cfsctl::ok(&theirs, &["oci", "pull", &src, "img"]);
    let id = composefs_in(&theirs, &["oci", "compute-id", "img"]);
    let id = id.trim();
    assert!(
        theirs.join("images").join(id).exists(),
        "cfsctl linked {id}"
    );

    let m = tmp.path().join("m");
    let reference = {
        let _m = Mount::ours(&ours.path, &["oci/img"], &m.join("ours-fuse"));
        view(&m.join("ours-fuse"), true)
    };
    assert!(
        reference.paths.contains_key(Path::new("run")),
        "the image has /run"
    );
    assert!(
        !reference.paths.contains_key(Path::new("run/leftover")),
        "/run is emptied"
    );
    assert_eq!(
        reference.paths[Path::new("etc/cap")]
            .xattrs
            .keys()
            .collect::<Vec<_>>(),
        vec![&b"security.capability".to_vec()]
    );
    assert!(
        reference
            .links
            .iter()
            .any(|g| g.contains(&PathBuf::from("usr/bin/tool"))),
        "hardlinks are one inode"
    );
    {
        let _m = Mount::ours(&theirs, &["oci/img"], &m.join("theirs-fuse"));
        assert_same(
            &reference,
            &view(&m.join("theirs-fuse"), true),
            "our FUSE view of cfsctl's pull",
        );
    }
    {
        let _m = Mount::ours(&theirs, &["--kernel", id], &m.join("theirs-kernel"));
        assert_same(
            &reference,
            &view(&m.join("theirs-kernel"), true),
            "our kernel mount of cfsctl's image",
        );
    }
    {
        let _m = Mount::cfsctl(
            &ours.path,
            &["oci", "mount", "img"],
            &m.join("cfsctl-kernel"),
        );
        assert_same(
            &reference,
            &view(&m.join("cfsctl-kernel"), true),
            "cfsctl's kernel mount of our pull",
        );
    }
}

#[test]
fn ostree_commit_pulled_by_cfsctl_is_the_tree_of_ours() {
    let f = ostree_fixtures::fixture();
    let src = f.repo("bare");
    let s = p(&src.path);
    // On disk, not in the fixture's tmpfs: cfsctl mounts images
    // file-backed only, which tmpfs does not offer ("Block device required").
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ours = dir.join("ours");
    let init = common::composefs(
        &["init".as_ref(), "--insecure".as_ref(), ours.as_os_str()],
        None,
        &[],
    );
    assert!(init.status.success(), "{init:?}");
    composefs_in(&ours, &["ostree", "pull", s, "main"]);
    let theirs = cfsctl_init(&dir.join("theirs"), "sha512");
    cfsctl::ok(&theirs, &["ostree", "pull-local", s, "main"]);
    let id = composefs_in(&theirs, &["ostree", "compute-id", "main"]);
    let id = id.trim();
    assert!(
        theirs.join("images").join(id).exists(),
        "cfsctl linked {id}"
    );

    let m = dir.join("m");
    let reference = {
        let _m = Mount::ours(&ours, &["ostree/main"], &m.join("ours-fuse"));
        view(&m.join("ours-fuse"), true)
    };
    assert!(!reference.links.is_empty(), "the fixture has hardlinks");
    {
        let _m = Mount::ours(&theirs, &["ostree/main"], &m.join("theirs-fuse"));
        assert_same(
            &reference,
            &view(&m.join("theirs-fuse"), true),
            "our FUSE view of cfsctl's commit",
        );
    }
    // Images of commits keep ostree's NUL-terminated xattr names, as
    // composefs-rs writes them, which the kernel cannot look up by name:
    // kernel mounts are compared without xattrs (docs/formats.md).
    let bare = View {
        paths: reference
            .paths
            .iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                v.xattrs.clear();
                (k.clone(), v)
            })
            .collect(),
        links: reference.links.clone(),
    };
    {
        let _m = Mount::ours(&theirs, &["--kernel", id], &m.join("theirs-kernel"));
        assert_same(
            &bare,
            &view(&m.join("theirs-kernel"), false),
            "our kernel mount of cfsctl's image",
        );
    }
    {
        let _m = Mount::cfsctl(
            &ours,
            &["ostree", "mount", "main"],
            &m.join("cfsctl-kernel"),
        );
        assert_same(
            &bare,
            &view(&m.join("cfsctl-kernel"), false),
            "cfsctl's kernel mount of our commit",
        );
    }
}

/// An OCI layer that ends right after its last member, without the tar
/// end-of-archive blocks (as umoci and many Go-built images write them):
/// it pulls, its files show, and cfsctl stores the same stream objects.
#[test]
fn layer_without_end_of_archive_blocks_pulls() {
    common::require_tool("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write_file(&root.join("usr/bin/tool"), &common::pseudo_random(3, 5000));
    write_file(&root.join("zz-last"), b"last\n");
    let tar = tmp.path().join("full.tar");
    let bytes = common::make_tar(&root, &tar, &[]);
    // Everything up to the end of the last member's padding: the last
    // member's content ends in a non-zero byte, so the zeros after it are
    // its padding and the end-of-archive blocks.
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    let cut = end.next_multiple_of(512);
    assert!(
        cut + 1024 <= bytes.len(),
        "the tar had end-of-archive blocks"
    );
    let short = tmp.path().join("short.tar");
    std::fs::write(&short, &bytes[..cut]).unwrap();
    let lay = tmp.path().join("layout");
    common::umoci_image(&lay, "t", &[&short]);
    let src = format!("oci:{}:t", lay.display());
    let ours = Repo::new();
    ours.ok(&["oci", "pull", &src, "--name", "img"]);
    let ls = String::from_utf8(ours.ok(&["ls", "oci-raw/img"])).unwrap();
    assert!(ls.contains("zz-last"), "{ls}");
    assert_eq!(ours.ok(&["cat", "oci/img:/zz-last"]), b"last\n");
    let theirs = cfsctl_init(&tmp.path().join("theirs"), "sha512");
    cfsctl::ok(&theirs, &["oci", "pull", &src, "img"]);
    let entries = |r: &Path| -> Vec<(String, PathBuf)> {
        let mut v: Vec<_> = std::fs::read_dir(r.join("streams"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("oci-layer-") || n.starts_with("oci-config-"))
            .map(|n| {
                let t = std::fs::read_link(r.join("streams").join(&n)).unwrap();
                (n, t)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(entries(&ours.path), entries(&theirs));
    assert_eq!(
        composefs_in(&theirs, &["oci", "compute-id", "img"]),
        String::from_utf8(ours.ok(&["oci", "compute-id", "img"])).unwrap()
    );
}
