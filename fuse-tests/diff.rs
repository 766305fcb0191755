//! `composefs diff` against an oracle: both versions of a tree mounted
//! (images with `mount --kernel`, ostree commits through FUSE), then
//! `diff -rq --no-dereference` over the two mounts and a walk of both
//! (type, mode, owner, xattrs, symlink target, device number, hardlink
//! groups by inode number; mtimes left out). The changes `composefs diff
//! --json` reports — paths, statuses and aspects — must be exactly what
//! the oracle finds, and every content difference, "Only in" and type
//! change `diff -rq` prints must be among them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use rustix::fs::FileType;

use super::common::{self, Repo, pseudo_random, require_tool};
use super::{Mounted, chmod, chown, mknod, populate, require_root, setx, write, xattrs};

/// What the oracle looks at for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    fmt: u32,
    perms: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    target: Option<Vec<u8>>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    ino: u64,
}

/// Every path below `root` as `/rel` bytes (the root as `/`).
fn walk(root: &Path) -> BTreeMap<Vec<u8>, Meta> {
    let mut paths = vec![root.to_path_buf()];
    common::walk(root, &mut |p| paths.push(p.to_path_buf()));
    paths
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes();
            let key = [b"/", rel].concat();
            let ft = m.file_type();
            let meta = Meta {
                fmt: m.mode() & 0o170000,
                perms: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    m.rdev()
                } else {
                    0
                },
                target: ft
                    .is_symlink()
                    .then(|| std::fs::read_link(&p).unwrap().into_os_string().into_vec()),
                xattrs: xattrs(&p),
                ino: m.ino(),
            };
            (key, meta)
        })
        .collect()
}

/// Non-directory paths grouped by inode number.
fn link_sets(w: &BTreeMap<Vec<u8>, Meta>) -> BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> {
    let mut by_ino: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (p, m) in w {
        if m.fmt != 0o040000 {
            by_ino.entry(m.ino).or_default().insert(p.clone());
        }
    }
    let mut out = BTreeMap::new();
    for set in by_ino.values() {
        for p in set {
            out.insert(p.clone(), set.clone());
        }
    }
    out
}

fn mnt_path(mnt: &Path, p: &[u8]) -> Vec<u8> {
    let mut v = mnt.as_os_str().as_bytes().to_vec();
    if p != b"/" {
        v.extend_from_slice(p);
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

type Changes = BTreeMap<Vec<u8>, (char, BTreeSet<String>)>;

/// The oracle's changes between the trees mounted at `ma` and `mb`.
fn oracle(ma: &Path, mb: &Path, hardlinks: bool) -> Changes {
    require_tool("diff");
    let (wa, wb) = (walk(ma), walk(mb));
    let (la, lb) = (link_sets(&wa), link_sets(&wb));
    let out = Command::new("diff")
        .args(["-rq", "--no-dereference"])
        .arg(ma)
        .arg(mb)
        .output()
        .unwrap();
    assert!(
        out.status.code() == Some(1) || out.status.code() == Some(0),
        "{out:?}"
    );
    let rq = out.stdout;
    let mut changes = Changes::new();
    let is_dir =
        |w: &BTreeMap<Vec<u8>, Meta>, p: &[u8]| w.get(p).is_some_and(|m| m.fmt == 0o040000);
    let parent = |p: &[u8]| -> Vec<u8> {
        let i = p.iter().rposition(|&b| b == b'/').unwrap();
        if i == 0 {
            b"/".to_vec()
        } else {
            p[..i].to_vec()
        }
    };
    let name = |p: &[u8]| p[p.iter().rposition(|&b| b == b'/').unwrap() + 1..].to_vec();
    for (p, m) in &wa {
        let Some(n) = wb.get(p) else {
            changes.insert(p.clone(), ('D', BTreeSet::new()));
            // diff -rq names the top of a deleted subtree.
            let par = parent(p);
            if is_dir(&wa, &par) && is_dir(&wb, &par) {
                let line = [b"Only in ", &mnt_path(ma, &par)[..], b": ", &name(p), b"\n"].concat();
                assert!(
                    contains(&rq, &line),
                    "diff -rq does not say {:?}",
                    String::from_utf8_lossy(&line)
                );
            }
            continue;
        };
        if m.fmt != n.fmt {
            changes.insert(p.clone(), ('T', BTreeSet::new()));
            let (x, y) = (mnt_path(ma, p), mnt_path(mb, p));
            let line = [b"File ", &x[..], b" is a "].concat();
            assert!(
                contains(&rq, &line)
                    && contains(&rq, &[b" while file ", &y[..], b" is a "].concat())
            );
            continue;
        }
        let mut asp = BTreeSet::new();
        if m.perms != n.perms {
            asp.insert("mode".to_string());
        }
        if (m.uid, m.gid) != (n.uid, n.gid) {
            asp.insert("owner".to_string());
        }
        if m.xattrs != n.xattrs {
            asp.insert("xattrs".to_string());
        }
        if m.target != n.target {
            asp.insert("target".to_string());
        }
        if m.rdev != n.rdev {
            asp.insert("rdev".to_string());
        }
        if m.fmt == 0o100000 {
            let line = [
                b"Files ",
                &mnt_path(ma, p)[..],
                b" and ",
                &mnt_path(mb, p),
                b" differ\n",
            ]
            .concat();
            if contains(&rq, &line) {
                asp.insert("content".to_string());
            }
        }
        if hardlinks && m.fmt != 0o040000 && la.get(p) != lb.get(p) {
            asp.insert("hardlink".to_string());
        }
        if !asp.is_empty() {
            changes.insert(p.clone(), ('M', asp));
        }
    }
    for p in wb.keys() {
        if !wa.contains_key(p) {
            changes.insert(p.clone(), ('A', BTreeSet::new()));
            let par = parent(p);
            if is_dir(&wa, &par) && is_dir(&wb, &par) {
                let line = [b"Only in ", &mnt_path(mb, &par)[..], b": ", &name(p), b"\n"].concat();
                assert!(
                    contains(&rq, &line),
                    "diff -rq does not say {:?}",
                    String::from_utf8_lossy(&line)
                );
            }
        }
    }
    // Every content difference diff -rq prints is one the walk saw.
    let files = rq
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"Files "))
        .count();
    let content = changes
        .values()
        .filter(|(_, a)| a.contains("content"))
        .count();
    assert_eq!(
        files,
        content,
        "diff -rq:\n{}",
        String::from_utf8_lossy(&rq)
    );
    changes
}

/// What `composefs diff A B --json` reports.
fn ours(repo: &Repo, a: &str, b: &str) -> Changes {
    let out = repo.run(&["diff", a, b, "--json"], None);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let path = match c.get("path_bytes") {
                Some(b) => base64::engine::general_purpose::STANDARD
                    .decode(b.as_str().unwrap())
                    .unwrap(),
                None => c["path"].as_str().unwrap().as_bytes().to_vec(),
            };
            let status = c["status"].as_str().unwrap().chars().next().unwrap();
            let asp = c["aspects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            (path, (status, asp))
        })
        .collect()
}

fn show(c: &Changes) -> String {
    c.iter()
        .map(|(p, (s, a))| format!("{s} {} {a:?}", String::from_utf8_lossy(p)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same_changes(ours: &Changes, oracle: &Changes) {
    let only_ours: Changes = ours
        .iter()
        .filter(|(p, v)| oracle.get(*p) != Some(v))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    let only_oracle: Changes = oracle
        .iter()
        .filter(|(p, v)| ours.get(*p) != Some(v))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    assert!(
        only_ours.is_empty() && only_oracle.is_empty(),
        "composefs diff and the oracle disagree.\nonly ours:\n{}\nonly the oracle's:\n{}",
        show(&only_ours),
        show(&only_oracle)
    );
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Version 2 of `populate`'s tree: a change of every kind. `special`:
/// also devices and hardlinks.
fn modify(root: &Path, special: bool) {
    let p = |s: &str| root.join(s);
    std::fs::write(p("small"), b"HELLO\n").unwrap(); // same size
    let mut large = std::fs::read(p("large")).unwrap();
    large.extend_from_slice(b"more");
    std::fs::write(p("large"), large).unwrap();
    chmod(&p("page"), 0o600);
    chown(&p("dup-a"), 7, 8);
    setx(&p("dup-b"), "user.shared", b"now different");
    std::fs::remove_file(p("link")).unwrap();
    symlink("page", p("link")).unwrap();
    std::fs::remove_dir(p("emptydir")).unwrap();
    write(&p("newdir/x/y"), b"y\n");
    std::fs::remove_file(p("sixty-five")).unwrap();
    write(&p("sixty-five/inside"), b"was a file\n");
    std::fs::remove_file(p("dangling")).unwrap();
    write(&p("dangling"), b"was a symlink\n");
    let wide: Vec<_> = std::fs::read_dir(p("wide"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut wide = wide;
    wide.sort();
    for f in &wide[10..20] {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::rename(&wide[50], p("wide/renamed")).unwrap();
    let nl = p("odd")
        .join(OsStr::from_bytes(b"new\nline"))
        .join(OsStr::from_bytes(b"new\nline"));
    std::fs::write(&nl, b"changed content\n").unwrap();
    chmod(&p("sub"), 0o700);
    setx(root, "user.root", b"changed on the root");
    if special {
        std::fs::remove_file(p("null")).unwrap();
        mknod(&p("null"), FileType::CharacterDevice, 0o666, 1, 7);
        std::fs::remove_file(p("sub/hl-small-2")).unwrap();
        write(&p("sub/hl-small-2"), b"tiny");
        std::fs::hard_link(p("setgid"), p("sub/setgid-link")).unwrap();
    } else {
        write(&p("sub/setgid-copy"), &pseudo_random(5, 5000));
    }
}

#[test]
fn diff_of_images_equals_diff_rq_of_kernel_mounts() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let (v1, v2) = (s.join("v1"), s.join("v2"));
    populate(&v1);
    cp_a(&v1, &v2);
    modify(&v2, true);
    repo.ok(&["create-image", v1.to_str().unwrap(), "--name", "v1"]);
    repo.ok(&["create-image", v2.to_str().unwrap(), "--name", "v2"]);
    let (ma, mb) = (s.join("ma"), s.join("mb"));
    let a = Mounted::kernel(&repo, "v1", &ma);
    let b = Mounted::kernel(&repo, "v2", &mb);
    let want = oracle(&ma, &mb, true);
    assert!(
        want.len() >= 25,
        "the oracle found too little:\n{}",
        show(&want)
    );
    for (p, k) in [
        (&b"/null"[..], "rdev"),
        (b"/sub/hl-small-2", "hardlink"),
        (b"/setgid", "hardlink"),
        (b"/dup-b", "xattrs"),
        (b"/small", "content"),
        (b"/", "xattrs"),
    ] {
        assert!(
            want[p].1.contains(k),
            "oracle: {} should have {k}",
            String::from_utf8_lossy(p)
        );
    }
    assert_same_changes(&ours(&repo, "v1", "v2"), &want);
    // The same pair from the directories themselves.
    assert_same_changes(&ours(&repo, v1.to_str().unwrap(), "v2"), &want);
    // And nothing between a mount and itself.
    assert!(oracle(&ma, &ma, true).is_empty());
    assert!(ours(&repo, "v1", "v1").is_empty());
    a.umount(&repo);
    b.umount(&repo);
}

#[test]
fn diff_of_commits_equals_diff_rq_of_fuse_mounts() {
    require_root();
    require_tool("ostree");
    let repo = Repo::new();
    let s = repo.scratch();
    let (v1, v2) = (s.join("v1"), s.join("v2"));
    populate(&v1);
    // What ostree cannot store: devices, fifos, names that are not UTF-8.
    let st = Command::new("find")
        .arg(&v1)
        .args([
            "(",
            "-type",
            "b",
            "-o",
            "-type",
            "c",
            "-o",
            "-type",
            "p",
            "-o",
            "-name",
            "not-utf8-*",
            ")",
            "-prune",
            "-exec",
            "rm",
            "-rf",
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    cp_a(&v1, &v2);
    modify(&v2, false);
    let o = s.join("orepo");
    let os = o.to_str().unwrap();
    let ostree = |args: &[&str]| {
        let out = Command::new("ostree").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ostree {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ostree(&["init", "--mode=archive", &format!("--repo={os}")]);
    for (n, d) in [("v1", &v1), ("v2", &v2)] {
        ostree(&[
            &format!("--repo={os}"),
            "commit",
            &format!("--branch={n}"),
            &format!("--tree=dir={}", d.display()),
        ]);
        repo.ok(&["ostree", "pull", os, n, "--name", n]);
    }
    let (ma, mb) = (s.join("ma"), s.join("mb"));
    let a = Mounted::fuse(&repo, "ostree/v1", &ma);
    let b = Mounted::fuse(&repo, "ostree/v2", &mb);
    // ostree commits have no hardlinks: not compared.
    let want = oracle(&ma, &mb, false);
    assert!(
        want.len() >= 25,
        "the oracle found too little:\n{}",
        show(&want)
    );
    assert!(want.contains_key(&b"/sub/setgid-copy"[..]));
    assert_same_changes(&ours(&repo, "ostree/v1", "ostree/v2"), &want);
    a.umount(&repo);
    b.umount(&repo);
}
