//! `composefs diff`: two versions of a tree with one change of every kind
//! (added/removed files and directories, content, mode, owner, xattrs,
//! symlink target, file ↔ directory, file ↔ symlink, device number,
//! hardlinks, a rename), stored as composefs images (`create-image --no-propagate-usr-to-root`: the tree as it is, every xattr kept), as
//! ostree commits (made by the real `ostree` CLI, then `ostree pull`) and
//! as OCI images (made by `umoci`, then `oci pull`), and as plain local
//! directories. Checks the exact name-status list, `--stat`, `--json`,
//! `--content` (against `diff -u`, and applied with `patch`), `-- PATH`
//! limits, `--mtime`, quoting of odd names, exit codes 0/1/2, and through
//! the library that unchanged subtrees of two commits are never read.
//!
//! Needs root (mknod, chown, trusted xattrs), and ostree, umoci, diff,
//! patch on $PATH.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use composefs::diff::{Change, DiffOptions, diff_trees};
use composefs::repository::Repository;
use composefs::tree::{DirEntry, Ino, Inode, SubtreeId, Tree};
use rustix::fs::{AtFlags, CWD, FileType, Mode};

use common::{Repo, pseudo_random, require_tool, write_file};

// ---------------------------------------------------------------------------
// Building the trees
// ---------------------------------------------------------------------------

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (mknod, chown, trusted xattrs)"
    );
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        CWD,
        p,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn setx(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

fn mknod(p: &Path, ft: FileType, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        p,
        ft,
        Mode::from_raw_mode(0o644),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

fn text_lines(n: usize, tag: &str) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("line {i} of the {tag} configuration\n"))
        .collect::<String>()
        .into_bytes()
}

/// Version 1. `special`: devices, a fifo and hardlinks (what ostree
/// cannot store, or stores as separate files).
fn build_v1(root: &Path, special: bool) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(root).unwrap();
    chmod(root, 0o755);
    write_file(&p("data.bin"), &pseudo_random(1, 10_000));
    write_file(&p("etc/small"), b"small\n");
    write_file(&p("etc/old.conf"), b"old\n");
    write_file(&p("etc/renamed-from"), b"rename me\n");
    write_file(&p("etc/xattr-file"), b"x\n");
    setx(&p("etc/xattr-file"), "user.foo", b"1");
    write_file(&p("etc/mtime-only"), b"m\n");
    write_file(&p("etc/owned"), b"o\n");
    write_file(&p("etc/text.conf"), &text_lines(200, "old"));
    write_file(&p("usr/bin/tool"), &pseudo_random(2, 200_000));
    write_file(&p("usr/bin/script"), b"#!/bin/sh\necho hi\n");
    chmod(&p("usr/bin/script"), 0o644);
    std::fs::create_dir_all(p("usr/lib")).unwrap();
    symlink("target-a", p("usr/lib/link")).unwrap();
    symlink("x", p("usr/lib/same-link")).unwrap();
    write_file(&p("srv/olddir/a"), b"a\n");
    write_file(&p("srv/olddir/sub/b"), &pseudo_random(3, 5000));
    write_file(&p("swap/file-to-dir"), b"a file\n");
    write_file(&p("swap/dir-to-file/x"), b"x\n");
    write_file(&p("swap/file-to-link"), b"a file\n");
    std::fs::create_dir_all(p("var/dirmode")).unwrap();
    chmod(&p("var/dirmode"), 0o755);
    for i in 0..20 {
        write_file(
            &p(&format!("unchanged/d{}/f{i}", i % 4)),
            &pseudo_random(100 + i, 100 * i as usize),
        );
    }
    if special {
        std::fs::create_dir_all(p("dev")).unwrap();
        mknod(&p("dev/thing"), FileType::CharacterDevice, 1, 3);
        mknod(&p("dev/fifo"), FileType::Fifo, 0, 0);
        write_file(&p("hl/a"), b"linked\n");
        std::fs::hard_link(p("hl/a"), p("hl/b")).unwrap();
        write_file(&p("hl/c"), b"cd\n");
        write_file(&p("hl/d"), b"cd\n");
    }
}

/// Version 2: version 1 with one change of every kind.
fn make_v2(root: &Path, special: bool) {
    let p = |s: &str| root.join(s);
    let mut data = std::fs::read(p("data.bin")).unwrap();
    data[100] ^= 1;
    std::fs::write(p("data.bin"), &data).unwrap();
    std::fs::write(p("etc/small"), b"SMALL\n").unwrap();
    std::fs::remove_file(p("etc/old.conf")).unwrap();
    std::fs::rename(p("etc/renamed-from"), p("etc/renamed-to")).unwrap();
    setx(&p("etc/xattr-file"), "user.foo", b"2");
    Command::new("touch")
        .args(["-h", "-d", "@978307200"])
        .arg(p("etc/mtime-only"))
        .status()
        .unwrap();
    chown(&p("etc/owned"), 1000, 1000);
    let mut text = String::from_utf8(std::fs::read(p("etc/text.conf")).unwrap()).unwrap();
    text = text
        .replace("line 10 of", "line TEN of")
        .replace("line 100 of the old configuration\n", "")
        .replace(
            "line 150 of the old configuration\n",
            "line 150 of the old configuration\ninserted\nlines\n",
        );
    std::fs::write(p("etc/text.conf"), text).unwrap();
    write_file(&p("etc/new.conf"), b"new\n");
    std::fs::write(p("usr/bin/tool"), pseudo_random(22, 200_000)).unwrap();
    chmod(&p("usr/bin/script"), 0o755);
    std::fs::remove_file(p("usr/lib/link")).unwrap();
    symlink("target-b", p("usr/lib/link")).unwrap();
    std::fs::remove_dir_all(p("srv/olddir")).unwrap();
    write_file(&p("opt/newdir/a"), b"new a\n");
    write_file(&p("opt/newdir/sub/b"), &pseudo_random(4, 3000));
    std::fs::remove_file(p("swap/file-to-dir")).unwrap();
    write_file(&p("swap/file-to-dir/inside"), b"inside\n");
    std::fs::remove_dir_all(p("swap/dir-to-file")).unwrap();
    write_file(&p("swap/dir-to-file"), b"now a file\n");
    std::fs::remove_file(p("swap/file-to-link")).unwrap();
    symlink("elsewhere", p("swap/file-to-link")).unwrap();
    chmod(&p("var/dirmode"), 0o700);
    if special {
        std::fs::remove_file(p("dev/thing")).unwrap();
        mknod(&p("dev/thing"), FileType::CharacterDevice, 1, 5);
        // b: no longer a link of a (same bytes); c and d: now one inode.
        std::fs::remove_file(p("hl/b")).unwrap();
        write_file(&p("hl/b"), b"linked\n");
        std::fs::remove_file(p("hl/d")).unwrap();
        std::fs::hard_link(p("hl/c"), p("hl/d")).unwrap();
    }
}

/// The expected name-status list of v1 → v2 (in walk order).
fn expected(special: bool) -> Vec<String> {
    let mut v = vec!["M\t/data.bin"];
    if special {
        v.push("M\t/dev/thing");
    }
    v.extend([
        "A\t/etc/new.conf",
        "D\t/etc/old.conf",
        "M\t/etc/owned",
        "D\t/etc/renamed-from",
        "A\t/etc/renamed-to",
        "M\t/etc/small",
        "M\t/etc/text.conf",
        "M\t/etc/xattr-file",
    ]);
    if special {
        v.extend(["M\t/hl/a", "M\t/hl/b", "M\t/hl/c", "M\t/hl/d"]);
    }
    v.extend([
        "A\t/opt",
        "A\t/opt/newdir",
        "A\t/opt/newdir/a",
        "A\t/opt/newdir/sub",
        "A\t/opt/newdir/sub/b",
        "D\t/srv/olddir",
        "D\t/srv/olddir/a",
        "D\t/srv/olddir/sub",
        "D\t/srv/olddir/sub/b",
        "T\t/swap/dir-to-file",
        "D\t/swap/dir-to-file/x",
        "T\t/swap/file-to-dir",
        "A\t/swap/file-to-dir/inside",
        "T\t/swap/file-to-link",
        "M\t/usr/bin/script",
        "M\t/usr/bin/tool",
        "M\t/usr/lib/link",
        "M\t/var/dirmode",
    ]);
    v.into_iter().map(String::from).collect()
}

/// Aspects expected for each `M` (special paths included).
fn expected_aspects() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("/data.bin", vec!["content"]),
        ("/dev/thing", vec!["rdev"]),
        ("/etc/owned", vec!["owner"]),
        ("/etc/small", vec!["content"]),
        ("/etc/text.conf", vec!["content"]),
        ("/etc/xattr-file", vec!["xattrs"]),
        ("/hl/a", vec!["hardlink"]),
        ("/hl/b", vec!["hardlink"]),
        ("/hl/c", vec!["hardlink"]),
        ("/hl/d", vec!["hardlink"]),
        ("/usr/bin/script", vec!["mode"]),
        ("/usr/bin/tool", vec!["content"]),
        ("/usr/lib/link", vec!["target"]),
        ("/var/dirmode", vec!["mode"]),
    ])
}

/// Both versions on disk: `s/v1`, `s/v2`.
fn versions(s: &Path, special: bool) -> (PathBuf, PathBuf) {
    let v1 = s.join("v1");
    let v2 = s.join("v2");
    build_v1(&v1, special);
    let st = Command::new("cp")
        .args(["-a"])
        .arg(&v1)
        .arg(&v2)
        .status()
        .unwrap();
    assert!(st.success());
    make_v2(&v2, special);
    (v1, v2)
}

// ---------------------------------------------------------------------------
// Running `composefs diff`
// ---------------------------------------------------------------------------

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }

    fn lines(&self) -> Vec<String> {
        self.text().lines().map(String::from).collect()
    }
}

fn diff(repo: &Repo, args: &[&str]) -> Out {
    let mut all = vec!["diff"];
    all.extend_from_slice(args);
    let out = repo.run(&all, None);
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `diff`, required to exit with `code`.
fn diff_code(repo: &Repo, args: &[&str], code: i32) -> Out {
    let o = diff(repo, args);
    assert_eq!(
        o.code,
        code,
        "composefs diff {args:?}: exit {} (want {code}); stderr:\n{}\nstdout:\n{}",
        o.code,
        o.stderr,
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn ostree(args: &[&str]) {
    require_tool("ostree");
    let out = Command::new("ostree").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ostree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Commit each directory to a fresh archive repository as branch NAME
/// and pull it into `repo` as ostree/NAME.
fn commit_and_pull(repo: &Repo, s: &Path, dirs: &[(&str, &Path)]) {
    let o = s.join("ostree-repo");
    let os = o.to_str().unwrap();
    if !o.exists() {
        ostree(&["init", "--mode=archive", &format!("--repo={os}")]);
    }
    for (name, dir) in dirs {
        ostree(&[
            &format!("--repo={os}"),
            "commit",
            &format!("--branch={name}"),
            &format!("--tree=dir={}", dir.display()),
        ]);
        repo.ok(&["ostree", "pull", os, name, "--name", name]);
    }
}

fn json_changes(o: &Out) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("--json output is not JSON ({e}):\n{}", o.text());
    });
    v["changes"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn images_every_kind_of_change() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let (v1, v2) = versions(&s, true);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v1.to_str().unwrap(),
        "--name",
        "v1",
    ]);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v2.to_str().unwrap(),
        "--name",
        "v2",
    ]);

    let o = diff_code(&repo, &["v1", "v2"], 1);
    assert_eq!(o.lines(), expected(true));
    assert_eq!(
        diff_code(&repo, &["v1", "v2", "--name-status"], 1).lines(),
        expected(true)
    );
    // Same image twice, and the other way round (A ↔ D).
    assert!(diff_code(&repo, &["v1", "images/v1"], 0).stdout.is_empty());
    let back = diff_code(&repo, &["v2", "v1"], 1).lines();
    let swapped: Vec<String> = expected(true)
        .iter()
        .map(|l| match &l[..1] {
            "A" => format!("D{}", &l[1..]),
            "D" => format!("A{}", &l[1..]),
            _ => l.clone(),
        })
        .collect();
    let mut b = back.clone();
    let mut w = swapped.clone();
    b.sort();
    w.sort();
    assert_eq!(b, w, "v2 → v1 is v1 → v2 reversed");

    // --json: the same paths, with aspects and details.
    let changes = json_changes(&diff_code(&repo, &["v1", "v2", "--json"], 1));
    let listed: Vec<String> = changes
        .iter()
        .map(|c| {
            format!(
                "{}\t{}",
                c["status"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(listed, expected(true));
    let aspects = expected_aspects();
    for c in &changes {
        let path = c["path"].as_str().unwrap();
        let got: Vec<&str> = c["aspects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        if c["status"] == "M" {
            assert_eq!(Some(&got), aspects.get(path), "aspects of {path}");
        } else {
            assert!(got.is_empty(), "{path}: aspects only for M");
        }
    }
    let by_path = |p: &str| changes.iter().find(|c| c["path"] == p).unwrap().clone();
    let dev = by_path("/dev/thing");
    assert_eq!(dev["old"]["rdev"], rustix::fs::makedev(1, 3));
    assert_eq!(dev["new"]["rdev"], rustix::fs::makedev(1, 5));
    assert_eq!(dev["new"]["type"], "char");
    let owned = by_path("/etc/owned");
    assert_eq!(
        (owned["old"]["uid"].as_u64(), owned["new"]["uid"].as_u64()),
        (Some(0), Some(1000))
    );
    assert_eq!(owned["new"]["gid"], 1000);
    let script = by_path("/usr/bin/script");
    assert_eq!(
        (
            script["old"]["mode"].as_str(),
            script["new"]["mode"].as_str()
        ),
        (Some("100644"), Some("100755"))
    );
    let link = by_path("/usr/lib/link");
    assert_eq!(link["old"]["target"], "target-a");
    assert_eq!(link["new"]["target"], "target-b");
    let x = by_path("/etc/xattr-file");
    assert_eq!(x["old"]["xattrs"][0]["name"], "user.foo");
    assert_eq!(x["old"]["xattrs"][0]["value"], "1");
    assert_eq!(x["new"]["xattrs"][0]["value"], "2");
    let tool = by_path("/usr/bin/tool");
    assert_eq!(tool["old"]["size"], 200_000);
    assert_ne!(tool["old"]["object"], tool["new"]["object"]);
    let a = by_path("/hl/a");
    assert_eq!(a["old_links"], serde_json::json!(["/hl/a", "/hl/b"]));
    assert_eq!(a["new_links"], serde_json::json!(["/hl/a"]));
    let d = by_path("/hl/d");
    assert_eq!(d["old_links"], serde_json::json!(["/hl/d"]));
    assert_eq!(d["new_links"], serde_json::json!(["/hl/c", "/hl/d"]));
    let t = by_path("/swap/file-to-link");
    assert_eq!(
        (t["old"]["type"].as_str(), t["new"]["type"].as_str()),
        (Some("file"), Some("symlink"))
    );
    assert!(by_path("/opt/newdir").get("old").unwrap().is_null());
    // --no-hardlinks: the hardlink-only changes go.
    let nh = diff_code(&repo, &["v1", "v2", "--no-hardlinks"], 1).lines();
    let want: Vec<String> = expected(true)
        .into_iter()
        .filter(|l| !l.contains("/hl/"))
        .collect();
    assert_eq!(nh, want);

    // --stat: one line per top-level directory, totals = the list.
    let st = diff_code(&repo, &["v1", "v2", "--stat"], 1).text();
    let rows: BTreeMap<String, Vec<u64>> = st
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1..].iter().map(|n| n.parse().unwrap()).collect(),
            )
        })
        .collect();
    assert!(
        st.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["path", "added", "deleted", "modified", "+bytes", "-bytes"])
    );
    let count = |c: char| expected(true).iter().filter(|l| l.starts_with(c)).count() as u64;
    let total = &rows["total"];
    assert_eq!(
        total[..3],
        [count('A'), count('D'), count('M') + count('T')],
        "{st}"
    );
    assert_eq!(rows["/opt"], vec![5, 0, 0, 6 + 3000, 0], "{st}");
    assert_eq!(rows["/srv"], vec![0, 4, 0, 0, 2 + 5000], "{st}");
    assert_eq!(rows["/"], vec![0, 0, 1, 10_000, 10_000], "{st}");
    assert_eq!(rows["/usr"][..3], [0, 0, 3], "{st}");
    assert_eq!(rows["/usr"][3..], [200_000, 200_000], "{st}");
    let group_sum: u64 = rows
        .iter()
        .filter(|(k, _)| *k != "total")
        .map(|(_, v)| v[0] + v[1] + v[2])
        .sum();
    assert_eq!(group_sum, expected(true).len() as u64);
    // Aligned columns: every line as long as the header.
    let widths: Vec<usize> = st.lines().map(str::len).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "{st}");
}

#[test]
fn local_directories_on_either_side() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let (v1, v2) = versions(&s, true);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v1.to_str().unwrap(),
        "--name",
        "v1",
    ]);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v2.to_str().unwrap(),
        "--name",
        "v2",
    ]);
    let (a, b) = (v1.to_str().unwrap(), v2.to_str().unwrap());
    // Image against directory (contents digested, only where sizes match),
    // directory against directory (bytes compared), both ways.
    assert_eq!(diff_code(&repo, &["v1", b], 1).lines(), expected(true));
    assert_eq!(diff_code(&repo, &[a, "v2"], 1).lines(), expected(true));
    assert_eq!(diff_code(&repo, &[a, b], 1).lines(), expected(true));
    assert!(diff_code(&repo, &["v2", b], 0).stdout.is_empty());
    assert!(diff_code(&repo, &[a, a], 0).stdout.is_empty());
    // A relative spelling with ./ (run from the scratch directory).
    let out = repo
        .command()
        .current_dir(&s)
        .args(["diff", "./v1", "v2"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        expected(true),
        "`v2` is a directory here: it wins over the image of that name"
    );
    // Same bytes, one file rewritten in place with the same size: the
    // local side is digested and found equal; a change of one byte is seen.
    std::fs::write(v2.join("usr/bin/tool"), pseudo_random(2, 200_000)).unwrap();
    let l = diff_code(&repo, &["v1", b, "--", "/usr/bin/tool"], 0);
    assert!(l.stdout.is_empty());
    let mut t = pseudo_random(2, 200_000);
    t[199_999] ^= 0x80;
    std::fs::write(v2.join("usr/bin/tool"), &t).unwrap();
    assert_eq!(
        diff_code(&repo, &["v1", b, "--", "/usr/bin/tool"], 1).lines(),
        ["M\t/usr/bin/tool"]
    );
}

#[test]
fn ostree_commits_every_kind_of_change() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    // ostree stores neither devices nor fifos, and gives hardlinks no
    // meaning: the same changes without them.
    let (v1, v2) = versions(&s, false);
    commit_and_pull(&repo, &s, &[("v1", &v1), ("v2", &v2)]);
    assert_eq!(
        diff_code(&repo, &["ostree/v1", "ostree/v2"], 1).lines(),
        expected(false)
    );
    assert_eq!(
        diff_code(&repo, &["v1", "v2", "--mtime"], 1).lines(),
        expected(false),
        "commits have no mtimes"
    );
    assert!(diff_code(&repo, &["v1", "v1"], 0).stdout.is_empty());
    // A commit against the directory it was made from, and against an
    // image of it (inline small files there, objects here): equal.
    assert!(
        diff_code(&repo, &["v2", v2.to_str().unwrap()], 0)
            .stdout
            .is_empty()
    );
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v1.to_str().unwrap(),
        "--name",
        "img1",
    ]);
    assert!(
        diff_code(&repo, &["ostree/v1", "images/img1"], 0)
            .stdout
            .is_empty()
    );
    assert_eq!(
        diff_code(&repo, &["images/img1", "ostree/v2"], 1).lines(),
        expected(false)
    );
    // The checksum and a prefix name the commits too.
    let list = String::from_utf8(repo.ok(&["ostree", "list"])).unwrap();
    let c2 = list
        .lines()
        .find(|l| l.contains("v2"))
        .and_then(|l| l.split_whitespace().find(|w| w.len() == 64))
        .unwrap_or_else(|| panic!("no checksum for v2 in:\n{list}"))
        .to_string();
    assert_eq!(
        diff_code(&repo, &["v1", &format!("commits/{c2}")], 1).lines(),
        expected(false)
    );
    assert_eq!(
        diff_code(&repo, &["v1", &c2[..12]], 1).lines(),
        expected(false)
    );

    // Hardlinks are not compared against a commit: the image of a tree
    // with hardlinks equals the commit of it.
    let hl = s.join("hl");
    write_file(&hl.join("a"), &pseudo_random(5, 1000));
    std::fs::hard_link(hl.join("a"), hl.join("b")).unwrap();
    chmod(&hl, 0o755);
    commit_and_pull(&repo, &s, &[("hl", &hl)]);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        hl.to_str().unwrap(),
        "--name",
        "hl-img",
    ]);
    assert!(
        diff_code(&repo, &["ostree/hl", "images/hl-img"], 0)
            .stdout
            .is_empty()
    );
    assert!(
        diff_code(&repo, &["images/hl-img", hl.to_str().unwrap()], 0)
            .stdout
            .is_empty()
    );
}

#[test]
fn ostree_commit_and_oci_image_of_the_same_content_are_equal() {
    require_root();
    require_tool("umoci");
    let repo = Repo::new();
    let s = repo.scratch();
    let l = s.join("layout");
    let lp = l.to_str().unwrap();
    let bundle = s.join("bundle");
    let umoci = |args: &[&str]| {
        let out = Command::new("umoci").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    umoci(&["init", "--layout", lp]);
    umoci(&["new", "--image", &format!("{lp}:t")]);
    umoci(&[
        "unpack",
        "--image",
        &format!("{lp}:t"),
        bundle.to_str().unwrap(),
    ]);
    let root = bundle.join("rootfs");
    build_v1(&root, false);
    // A hardlink too: OCI keeps it, ostree cannot say it; not a difference.
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-link")).unwrap();
    umoci(&[
        "repack",
        "--image",
        &format!("{lp}:t"),
        bundle.to_str().unwrap(),
    ]);
    repo.ok(&["oci", "pull", &format!("oci:{lp}:t"), "--name", "img"]);
    commit_and_pull(&repo, &s, &[("same", &root)]);
    // The layers as they are (oci-raw/): oci/img is the composefs image's
    // tree, whose OCI transform drops the user xattr.
    assert_eq!(
        diff_code(&repo, &["oci/img", "ostree/same"], 1).lines(),
        vec!["M\t/etc/xattr-file".to_string()]
    );
    let o = diff_code(&repo, &["oci-raw/img", "ostree/same"], 0);
    assert!(o.stdout.is_empty(), "{}", o.text());
    assert!(
        diff_code(&repo, &["ostree/same", "oci-raw/img"], 0)
            .stdout
            .is_empty()
    );
    // With --mtime they differ (ostree stores 0, the layer real times).
    let m = diff_code(
        &repo,
        &["oci-raw/img", "ostree/same", "--mtime", "--json"],
        1,
    );
    let changes = json_changes(&m);
    assert!(!changes.is_empty());
    assert!(
        changes
            .iter()
            .all(|c| c["status"] == "M" && c["aspects"] == serde_json::json!(["mtime"]))
    );
    // And the OCI image against the directory: hardlinks on both sides.
    assert!(
        diff_code(&repo, &["oci-raw/img", root.to_str().unwrap()], 0)
            .stdout
            .is_empty()
    );

    // Then a second layer with changes: diff sees exactly them.
    make_v2(&root, false);
    umoci(&[
        "repack",
        "--image",
        &format!("{lp}:t"),
        bundle.to_str().unwrap(),
    ]);
    repo.ok(&["oci", "pull", &format!("oci:{lp}:t"), "--name", "img2"]);
    // tool-link is a hardlink of tool, rewritten in place: its content
    // changed too (and it is still one inode with tool in img2; the commit
    // has them as two files, which is no difference).
    let mut want = expected(false);
    let pos = want.iter().position(|l| l == "M\t/usr/bin/tool").unwrap();
    want.insert(pos + 1, "M\t/usr/bin/tool-link".to_string());
    assert_eq!(
        diff_code(&repo, &["oci-raw/img", "oci-raw/img2"], 1).lines(),
        want
    );
    assert_eq!(
        diff_code(&repo, &["ostree/same", "oci-raw/img2"], 1).lines(),
        want
    );
}

#[test]
fn content_patches_match_diff_u_and_apply() {
    require_root();
    require_tool("diff");
    require_tool("patch");
    let repo = Repo::new();
    let s = repo.scratch();
    let (v1, v2) = versions(&s, true);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v1.to_str().unwrap(),
        "--name",
        "v1",
    ]);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v2.to_str().unwrap(),
        "--name",
        "v2",
    ]);
    let o = diff_code(&repo, &["v1", "v2", "--content"], 1);
    let text = o.text();
    // The list first, then the patches.
    let first_patch = text.find("diff --git ").expect("no patch");
    assert_eq!(
        text[..first_patch].lines().collect::<Vec<_>>(),
        expected(true)
    );
    let patches = &text[first_patch..];
    // text.conf: the hunks are exactly `diff -u`'s.
    let du = Command::new("diff")
        .arg("-u")
        .arg(v1.join("etc/text.conf"))
        .arg(v2.join("etc/text.conf"))
        .output()
        .unwrap();
    assert_eq!(du.status.code(), Some(1));
    let du = String::from_utf8(du.stdout).unwrap();
    let du_hunks: String = du.lines().skip(2).map(|l| format!("{l}\n")).collect();
    let start = patches
        .find("diff --git a/etc/text.conf b/etc/text.conf\n")
        .unwrap();
    let section = &patches[start..];
    let end = section[1..]
        .find("diff --git ")
        .map_or(section.len(), |i| i + 1);
    let section = &section[..end];
    let lines: Vec<&str> = section.lines().collect();
    assert_eq!(lines[1], "--- a/etc/text.conf");
    assert_eq!(lines[2], "+++ b/etc/text.conf");
    let ours: String = lines[3..].iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(ours, du_hunks);
    // Binary and mode lines as git writes them.
    assert!(
        patches.contains(
            "diff --git a/data.bin b/data.bin\nBinary files a/data.bin and b/data.bin differ\n"
        ),
        "{patches}"
    );
    assert!(patches.contains("diff --git a/etc/new.conf b/etc/new.conf\nnew file mode 100644\n--- /dev/null\n+++ b/etc/new.conf\n@@ -0,0 +1 @@\n+new\n"), "{patches}");
    assert!(patches.contains("diff --git a/etc/old.conf b/etc/old.conf\ndeleted file mode 100644\n--- a/etc/old.conf\n+++ /dev/null\n@@ -1 +0,0 @@\n-old\n"), "{patches}");
    assert!(
        !patches.contains("a/usr/bin/script"),
        "mode-only change: no patch"
    );

    // The patches of the text files, applied with GNU patch to a copy of
    // v1, give v2's files.
    let limited = diff_code(
        &repo,
        &[
            "v1",
            "v2",
            "--content",
            "--",
            "/etc/text.conf",
            "/etc/small",
            "/etc/new.conf",
            "/etc/renamed-from",
            "/etc/renamed-to",
            "/opt/newdir/a",
        ],
        1,
    )
    .text();
    let patch_text = &limited[limited.find("diff --git ").unwrap()..];
    let work = s.join("work");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&v1)
        .arg(&work)
        .status()
        .unwrap();
    assert!(st.success());
    let mut child = Command::new("patch")
        .args(["-p1", "-s", "-d"])
        .arg(&work)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), patch_text.as_bytes()).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "patch refused:\n{patch_text}"
    );
    for f in [
        "etc/text.conf",
        "etc/small",
        "etc/new.conf",
        "etc/renamed-to",
        "opt/newdir/a",
    ] {
        assert_eq!(
            std::fs::read(work.join(f)).unwrap(),
            std::fs::read(v2.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!work.join("etc/renamed-from").exists());
}

#[test]
fn path_limits() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let (v1, v2) = versions(&s, true);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v1.to_str().unwrap(),
        "--name",
        "v1",
    ]);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v2.to_str().unwrap(),
        "--name",
        "v2",
    ]);
    let l = |paths: &[&str]| {
        let mut args = vec!["v1", "v2", "--"];
        args.extend_from_slice(paths);
        diff(&repo, &args)
    };
    assert_eq!(
        l(&["/usr", "/etc/small"]).lines(),
        [
            "M\t/etc/small",
            "M\t/usr/bin/script",
            "M\t/usr/bin/tool",
            "M\t/usr/lib/link"
        ]
    );
    assert_eq!(
        l(&["swap/file-to-dir"]).lines(),
        ["T\t/swap/file-to-dir", "A\t/swap/file-to-dir/inside"]
    );
    assert_eq!(
        l(&["/opt/newdir/sub"]).lines(),
        ["A\t/opt/newdir/sub", "A\t/opt/newdir/sub/b"]
    );
    assert_eq!(l(&["/srv/olddir/sub/b"]).lines(), ["D\t/srv/olddir/sub/b"]);
    assert_eq!(
        l(&["etc/../etc/./small/", "/etc/small", "/etc"])
            .lines()
            .len(),
        8,
        "nested and repeated limits count once"
    );
    let same = l(&["/unchanged", "/usr/lib/same-link"]);
    assert_eq!((same.code, same.stdout.len()), (0, 0));
    let bad = l(&["/no/such/path"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("/no/such/path"), "{}", bad.stderr);
    // With --mtime, the touched file (and only it, at this limit).
    assert_eq!(l(&["/etc/mtime-only"]).code, 0);
    let m = diff_code(
        &repo,
        &["v1", "v2", "--mtime", "--json", "--", "/etc/mtime-only"],
        1,
    );
    let ch = json_changes(&m);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0]["aspects"], serde_json::json!(["mtime"]));
    assert_eq!(ch[0]["new"]["mtime"]["sec"], 978_307_200);
}

#[test]
fn exit_codes_and_errors() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let (v1, _) = versions(&s, false);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        v1.to_str().unwrap(),
        "--name",
        "v1",
    ]);
    assert_eq!(diff(&repo, &["v1", "v1"]).code, 0);
    for (args, words) in [
        (vec!["v1", "nope"], "nope"),
        (vec!["nope", "v1"], "nope"),
        (vec!["v1", "/no/such/dir"], "/no/such/dir"),
        (vec!["v1", "./missing"], "missing"),
        (vec!["v1", "oci/nothing"], "nothing"),
        (vec!["v1", "commits/abc"], "checksum"),
        (vec!["v1", "v1", "--stat", "--json"], "cannot be used"),
        (vec!["v1", "v1", "--json", "--content"], "cannot be used"),
        (vec!["v1"], "required"),
        (vec!["v1", "v1", "--bogus"], "bogus"),
    ] {
        let o = diff(&repo, &args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(words),
            "{args:?}: error should mention {words:?}:\n{}",
            o.stderr
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // No repository at all: local directories still work; names fail.
    let out = Command::new(common::bin())
        .args(["--repo", "/nonexistent/repo", "diff"])
        .arg(&v1)
        .arg(&v1)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(common::bin())
        .args(["--repo", "/nonexistent/repo", "diff", "v1"])
        .arg(&v1)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A damaged object: content compared through it cannot be read for
    // --content, and the error says which.
    let other = s.join("other");
    std::fs::create_dir_all(&other).unwrap();
    chmod(&other, 0o755);
    write_file(&other.join("big"), &pseudo_random(9, 100_000));
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        other.to_str().unwrap(),
        "--name",
        "o1",
    ]);
    let hex = common::fsverity_digest("sha512", &other.join("big"));
    let obj = repo.path.join("objects").join(&hex[..2]).join(&hex[2..]);
    std::fs::remove_file(&obj).unwrap();
    let o = diff(&repo, &["o1", "v1", "--content"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("/big") || o.stderr.contains(&hex[..16]),
        "{}",
        o.stderr
    );
}

#[test]
fn odd_names_are_quoted() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let a = s.join("a");
    std::fs::create_dir_all(&a).unwrap();
    chmod(&a, 0o755);
    let b = s.join("b");
    std::fs::create_dir_all(&b).unwrap();
    chmod(&b, 0o755);
    let names: [&[u8]; 6] = [
        b"tab\there",
        b"new\nline",
        b"back\\slash",
        b"bad\xff",
        b"quote\"d",
        "caf\u{e9}".as_bytes(),
    ];
    for n in names {
        std::fs::write(b.join(std::ffi::OsStr::from_bytes(n)), b"x").unwrap();
    }
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        a.to_str().unwrap(),
        "--name",
        "a",
    ]);
    repo.ok(&[
        "create-image",
        "--no-propagate-usr-to-root",
        b.to_str().unwrap(),
        "--name",
        "b",
    ]);
    let o = diff_code(&repo, &["a", "b"], 1);
    let want: &[u8] = b"A\t\"/back\\\\slash\"\nA\t\"/bad\\377\"\nA\t/caf\xc3\xa9\nA\t\"/new\\nline\"\nA\t\"/quote\\\"d\"\nA\t\"/tab\\there\"\n";
    assert_eq!(o.stdout, want, "{}", String::from_utf8_lossy(&o.stdout));
    let ch = json_changes(&diff_code(&repo, &["a", "b", "--json"], 1));
    let bad = ch.iter().find(|c| c.get("path_bytes").is_some()).unwrap();
    assert_eq!(bad["path_bytes"], "L2JhZP8=");
    assert_eq!(bad["path"], "/bad\u{fffd}");
    assert_eq!(
        ch.iter().filter(|c| c.get("path_bytes").is_some()).count(),
        1
    );
    assert!(ch.iter().any(|c| c["path"] == "/new\nline"));
}

// ---------------------------------------------------------------------------
// Unchanged subtrees are skipped (through the library)
// ---------------------------------------------------------------------------

/// A tree that counts what is asked of it; `ids`: pass subtree ids on.
struct Counting {
    inner: Arc<dyn Tree>,
    ids: bool,
    readdirs: AtomicUsize,
    inodes: AtomicUsize,
}

impl Counting {
    fn new(inner: Arc<dyn Tree>, ids: bool) -> Counting {
        Counting {
            inner,
            ids,
            readdirs: AtomicUsize::new(0),
            inodes: AtomicUsize::new(0),
        }
    }
}

impl Tree for Counting {
    fn root(&self) -> Ino {
        self.inner.root()
    }
    fn inode(&self, ino: Ino) -> anyhow::Result<Arc<Inode>> {
        self.inodes.fetch_add(1, Ordering::Relaxed);
        self.inner.inode(ino)
    }
    fn readdir(&self, dir: Ino) -> anyhow::Result<Arc<[DirEntry]>> {
        self.readdirs.fetch_add(1, Ordering::Relaxed);
        self.inner.readdir(dir)
    }
    fn nlink(&self, ino: Ino) -> anyhow::Result<Option<u64>> {
        self.inner.nlink(ino)
    }
    fn subtree_id(&self, ino: Ino) -> Option<SubtreeId> {
        if self.ids {
            self.inner.subtree_id(ino)
        } else {
            None
        }
    }
}

fn run_diff(repo: &Repository, a: &dyn Tree, b: &dyn Tree) -> Vec<String> {
    let mut out = Vec::new();
    diff_trees(
        Some(repo),
        a,
        b,
        &DiffOptions::default(),
        &mut |c: Change| {
            out.push(format!(
                "{}\t{}",
                c.status.letter(),
                String::from_utf8_lossy(&c.path)
            ));
            Ok(())
        },
    )
    .unwrap();
    out
}

#[test]
fn unchanged_subtrees_of_commits_are_not_read() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let v1 = s.join("v1");
    for d in 0..30 {
        for sub in 0..3 {
            for f in 0..10 {
                write_file(
                    &v1.join(format!("d{d:02}/s{sub}/f{f}")),
                    format!("{d} {sub} {f}\n").as_bytes(),
                );
            }
        }
    }
    chmod(&v1, 0o755);
    let v2 = s.join("v2");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&v1)
            .arg(&v2)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(v2.join("d17/s1/f4"), b"changed\n").unwrap();
    commit_and_pull(&repo, &s, &[("v1", &v1), ("v2", &v2)]);

    let r = Repository::open(&repo.path).unwrap();
    let load = |n: &str| composefs::view::open_tree(&r, n).unwrap();
    let (a, b) = (
        Counting::new(load("v1"), true),
        Counting::new(load("v2"), true),
    );
    assert_eq!(run_diff(&r, &a, &b), ["M\t/d17/s1/f4"]);
    // Only the directories on the way to the change are listed (/, /d17,
    // /d17/s1) and only they and the file are decoded.
    for t in [&a, &b] {
        assert_eq!(t.readdirs.load(Ordering::Relaxed), 3);
        assert_eq!(t.inodes.load(Ordering::Relaxed), 4);
    }
    // Without subtree ids every directory is listed: the ids are what
    // makes the difference.
    let (a, b) = (
        Counting::new(load("v1"), false),
        Counting::new(load("v2"), false),
    );
    assert_eq!(run_diff(&r, &a, &b), ["M\t/d17/s1/f4"]);
    assert_eq!(a.readdirs.load(Ordering::Relaxed), 1 + 30 + 90);
    assert!(a.inodes.load(Ordering::Relaxed) > 900);
    // A commit and itself: nothing read below the root.
    let (a, b) = (
        Counting::new(load("v1"), true),
        Counting::new(load("v1"), true),
    );
    assert!(run_diff(&r, &a, &b).is_empty());
    assert_eq!(
        a.readdirs.load(Ordering::Relaxed) + a.inodes.load(Ordering::Relaxed),
        0
    );
}
