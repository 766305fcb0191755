//! Fixtures for the `composefs ostree` tests: a source tree with one of
//! everything ostree can store, ostree repositories of every mode made from
//! it by the real `ostree` CLI (two commits each), checkouts to compare
//! with, an HTTP server with an access log, GnuPG homes, a mount guard, a
//! tree comparison, and a writer for hand-made (hostile) archive
//! repositories.
//!
//! The repositories are built once per test binary ([`fixture`]) and must
//! not be modified: tests that need to change a repository copy it first
//! ([`copy_repo`]).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use composefs::ostree::Checksum;
use composefs::ostree::objects::{Commit, DirTree, FileHeader};
use rustix::fs::{AtFlags, CWD};

use crate::common::{self, Repo, pseudo_random, require_tool, write_file};

// ---------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------

/// Run `ostree ARGS`, require success, return stdout as text.
pub fn ostree(args: &[&str]) -> String {
    let out = ostree_out(args);
    assert!(
        out.status.success(),
        "ostree {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn ostree_out(args: &[&str]) -> Output {
    require_tool("ostree");
    Command::new("ostree")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run ostree")
}

/// Run a tool with plain string arguments, require success, return stdout.
pub fn tool(prog: &str, args: &[&str]) -> String {
    require_tool(prog);
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cp -a SRC DST` (DST must not exist).
pub fn copy_repo(src: &Path, dst: &Path) {
    tool("cp", &["-a", src.to_str().unwrap(), dst.to_str().unwrap()]);
}

/// Run `composefs --repo REPO ARGS` with a time limit; `None` when it had to
/// be killed. Never lets a panic go unnoticed.
pub fn run_with_timeout(repo: &Repo, args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = repo
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start composefs");
    // Drain the pipes in threads so that a chatty process cannot block.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = to.join().unwrap();
    let stderr = te.join().unwrap();
    let out = Output {
        status: status?,
        stdout,
        stderr,
    };
    common::assert_no_panic(&format!("composefs {}", args.join(" ")), &out);
    Some(out)
}

// ---------------------------------------------------------------------------
// The source tree
// ---------------------------------------------------------------------------

fn setx(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting xattr {name} on {}: {e}", p.display()));
}

fn chown(p: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        CWD,
        p,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Names that must survive the trip (ostree wants UTF-8 names).
pub const ODD_NAMES: &[&str] = &[
    "with space",
    "  two leading spaces",
    "utf8-é中文-😀",
    "-leading-dash",
    "-",
    "tab\tand\nnewline",
    "back\\slash",
    "...",
    ".hidden",
    "eq=sign",
];

/// Depth of the deep directory chain.
pub const DEEP: usize = 30;
/// Entries in the wide directory.
pub const WIDE: usize = 2000;
/// Size of the large file.
pub const LARGE: usize = 8 << 20;

/// The path (relative) of the bottom directory of the deep chain.
pub fn deep_dir() -> PathBuf {
    let mut p = PathBuf::from("deep");
    for i in 0..DEEP {
        p.push(format!("l{i:02}"));
    }
    p
}

/// Commit 1's tree (needs root: chown, security.* and trusted.* xattrs).
pub fn populate_v1(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let p = |s: &str| root.join(s);
    let all_bytes: Vec<u8> = (0..=255u8).collect();

    // Regular files: empty, small, a page of random data, a large file.
    write_file(&p("empty"), b"");
    write_file(&p("small"), b"hello\n");
    write_file(&p("random-4k"), &pseudo_random(4, 4096));
    write_file(&p("medium"), &pseudo_random(6, 300_000));
    write_file(&p("large"), &pseudo_random(8, LARGE));
    write_file(&p("zeros"), &vec![0u8; 300_000]);
    write_file(&p("text"), "line\n".repeat(5000).as_bytes());

    // The same file in several places (one ostree object), and an empty
    // file again elsewhere.
    let dup = pseudo_random(77, 10_000);
    for d in ["dup/a", "dup/b", "dup/sub/c", "dup-top"] {
        write_file(&p(d), &dup);
    }
    write_file(&p("dup/sub/empty-again"), b"");

    // Symlinks: relative, absolute, dangling, to a directory, long.
    symlink("small", p("link-rel")).unwrap();
    symlink("/etc/passwd", p("link-abs")).unwrap();
    symlink("does/not/exist", p("dangling")).unwrap();
    symlink("dup", p("dirlink")).unwrap();
    symlink("../small", p("dup/up-link")).unwrap();
    symlink("t/".repeat(1000) + "x", p("longlink")).unwrap();

    // Deep chain with a file at the bottom.
    let deep = root.join(deep_dir());
    std::fs::create_dir_all(&deep).unwrap();
    write_file(&deep.join("bottom"), b"at the bottom\n");
    std::fs::create_dir(deep.join("empty-bottom")).unwrap();

    // A wide directory: files (64 different contents, so the objects stay
    // few), symlinks and a few subdirectories.
    let wide = p("wide");
    std::fs::create_dir(&wide).unwrap();
    for i in 0..WIDE {
        let name = format!("entry-{i:05}-{}", "x".repeat(i % 40));
        match i % 10 {
            0 => symlink(format!("target-{i}"), wide.join(&name)).unwrap(),
            9 if i % 100 == 99 => std::fs::create_dir(wide.join(&name)).unwrap(),
            _ => write_file(
                &wide.join(&name),
                format!("content {}\n", i % 64).as_bytes(),
            ),
        }
    }

    // Odd names: as files at the top, as directories with a file below.
    for (i, n) in ODD_NAMES.iter().enumerate() {
        write_file(&root.join(n), format!("odd name {i}\n").as_bytes());
        let d = p("odd").join(n);
        std::fs::create_dir_all(&d).unwrap();
        write_file(&d.join(n), &pseudo_random(i as u64, 100 + i));
        symlink(n, p("odd").join(format!("link-{i}"))).unwrap();
    }

    // Owners (before modes: chown clears setuid/setgid).
    chown(&p("small"), 1234, 5678);
    chown(&p("large"), 3_000_000_000, 4_000_000_000);
    chown(&p("link-rel"), 42, 43);
    write_file(&p("owned"), b"owned by someone else\n");
    chown(&p("owned"), 1000, 2000);
    std::fs::create_dir(p("owned-dir")).unwrap();
    write_file(&p("owned-dir/inside"), b"inside\n");
    chown(&p("owned-dir"), 3000, 4000);
    chown(&p("owned-dir/inside"), 3000, 4000);

    // Modes: setuid, setgid, sticky, none, everything.
    write_file(&p("setuid"), b"#!/bin/sh\necho setuid\n");
    chmod(&p("setuid"), 0o4755);
    write_file(&p("setgid"), &pseudo_random(5, 5000));
    chmod(&p("setgid"), 0o2711);
    write_file(&p("all-bits"), b"x");
    chmod(&p("all-bits"), 0o7777);
    write_file(&p("no-perms"), b"secret");
    chmod(&p("no-perms"), 0o000);
    std::fs::create_dir(p("sticky")).unwrap();
    write_file(&p("sticky/file"), b"in a sticky dir\n");
    chmod(&p("sticky"), 0o1777);
    std::fs::create_dir(p("setgid-dir")).unwrap();
    chmod(&p("setgid-dir"), 0o2770);
    chmod(&p("owned-dir"), 0o700);
    chmod(root, 0o755);

    // Xattrs: user.*, security.*, trusted.*, binary and empty values, on
    // files, directories, symlinks and the root.
    setx(&p("small"), "user.plain", b"value");
    setx(&p("small"), "user.binary", &all_bytes);
    setx(&p("small"), "user.empty", b"");
    setx(&p("small"), "security.s", b"sec\0ret");
    setx(&p("small"), "trusted.t", b"\x00\x01\x02\xff");
    setx(&p("large"), "user.big", &pseudo_random(3, 3000));
    setx(&p("setuid"), "security.capability", &capability_value());
    setx(&p("dup"), "user.dir", b"on a directory");
    setx(&p("sticky"), "security.on-dir", b"S");
    setx(&p("link-abs"), "security.on-symlink", b"\xff");
    setx(&p("empty"), "user.on-empty", b"e");
    setx(root, "user.root", b"on the root");
    setx(&deep.join("bottom"), "user.deep", b"deep");
}

/// A valid `security.capability` (VFS_CAP_REVISION_2, cap_net_raw).
fn capability_value() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes());
    v.extend_from_slice(&[0u8; 12]);
    v
}

/// Turn commit 1's tree into commit 2's: a few files change (content, a
/// few bytes of the large file, mode, an xattr deep down), one is added,
/// one removed, one directory's mode changes.
pub fn modify_v2(root: &Path) {
    let p = |s: &str| root.join(s);
    std::fs::write(p("small"), b"hello again\n").unwrap(); // keeps owner, xattrs
    let mut large = std::fs::read(p("large")).unwrap();
    for b in &mut large[4 << 20..(4 << 20) + 100] {
        *b ^= 0x5a;
    }
    std::fs::write(p("large"), &large).unwrap();
    // Scattered changes: the delta takes this one with bsdiff (the large
    // file's single changed run goes by rollsum).
    let mut medium = std::fs::read(p("medium")).unwrap();
    for i in (0..medium.len()).step_by(997) {
        medium[i] ^= 0x55;
    }
    std::fs::write(p("medium"), &medium).unwrap();
    write_file(&p("new-file"), b"only in commit 2\n");
    std::fs::remove_file(p("dup-top")).unwrap();
    chmod(&p("owned"), 0o600);
    setx(
        &root.join(deep_dir()).join("bottom"),
        "user.deep",
        b"deeper",
    );
    chmod(&p("owned-dir"), 0o750);
}

// ---------------------------------------------------------------------------
// The shared ostree repositories
// ---------------------------------------------------------------------------

/// Commit timestamps (fixed: the same tree makes the same commit in every
/// mode that keeps all metadata).
pub const TS1: u64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC
pub const TS2: u64 = 1_700_086_400; // 2023-11-15 22:13:20 UTC
pub const SUBJECT1: &str = "First commit, with spaces";
pub const SUBJECT2: &str = "Second commit";

/// The repository modes ostree 2022.7 can write.
pub const MODES: &[&str] = &["archive", "bare", "bare-user", "bare-user-only"];

pub struct ModeRepo {
    pub mode: &'static str,
    pub path: PathBuf,
    /// Commit 1 (`heads/v1`, `remotes/origin/main`).
    pub c1: String,
    /// Commit 2 (`heads/main`), whose parent is commit 1.
    pub c2: String,
    /// `ostree checkout` of commit 1 and commit 2.
    pub checkout1: PathBuf,
    pub checkout2: PathBuf,
}

pub struct Fixture {
    pub dir: PathBuf,
    pub repos: Vec<ModeRepo>,
    /// Why bare-split-xattrs repositories cannot be made, if they cannot.
    pub split_xattrs_unsupported: Option<String>,
}

impl Fixture {
    pub fn repo(&self, mode: &str) -> &ModeRepo {
        self.repos
            .iter()
            .find(|r| r.mode == mode)
            .unwrap_or_else(|| panic!("no fixture repository of mode {mode}"))
    }

    pub fn archive(&self) -> &ModeRepo {
        self.repo("archive")
    }
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

extern "C" fn remove_fixture() {
    if std::env::var_os("OSTREE_TEST_KEEP_FIXTURE").is_some() {
        return;
    }
    if let Some(f) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the ostree tests need root (chown, security.* xattrs, mounts)"
    );
}

/// The shared repositories, built on first use.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(build_fixture)
}

/// `ostree commit -b BRANCH` with fixed subject, version and timestamp.
/// ostree writes the branch into the commit (`ostree.ref-binding`) unless
/// `bind` is false, and then refuses to pull it under any other ref name.
fn commit(
    repo: &Path,
    branch: &str,
    tree: &Path,
    subject: &str,
    version: &str,
    ts: u64,
    bind: bool,
) -> String {
    let ts = format!("--timestamp=@{ts}");
    let version = format!("version={version}");
    let mut args = vec![
        "commit",
        "--repo",
        repo.to_str().unwrap(),
        "-b",
        branch,
        "--subject",
        subject,
        "--add-metadata-string",
        &version,
        &ts,
    ];
    if !bind {
        args.push("--no-bindings");
    }
    args.push(tree.to_str().unwrap());
    ostree(&args).trim().to_string()
}

fn build_fixture() -> Fixture {
    require_root();
    require_tool("ostree");
    let t0 = Instant::now();
    // On tmpfs when there is one: creating thousands of small files is
    // several times faster there than on a disk (and tmpfs keeps user.*,
    // security.* and trusted.* xattrs).
    let shm = Path::new("/dev/shm");
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("cfs-ostree-fixture");
        b
    };
    let dir = (if shm.is_dir() {
        builder().tempdir_in(shm).ok()
    } else {
        None
    })
    .unwrap_or_else(|| builder().tempdir().unwrap())
    .keep();
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        libc::atexit(remove_fixture);
    }
    let tree1 = dir.join("tree1");
    let tree2 = dir.join("tree2");
    populate_v1(&tree1);
    copy_repo(&tree1, &tree2);
    modify_v2(&tree2);
    eprintln!("ostree fixture: trees made in {:.1?}", t0.elapsed());

    // One repository per mode, made in parallel.
    let made: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = MODES
            .iter()
            .map(|&mode| {
                let (dir, tree1, tree2) = (&dir, &tree1, &tree2);
                s.spawn(move || {
                    let path = dir.join(format!("repo-{mode}"));
                    let r = path.to_str().unwrap();
                    ostree(&["init", "--repo", r, &format!("--mode={mode}")]);
                    // Scratch repositories: no fsync per object.
                    ostree(&["config", "--repo", r, "set", "core.fsync", "false"]);
                    // Commit 1 is also `v1` and `origin:main`: no binding.
                    let c1 = commit(&path, "main", tree1, SUBJECT1, "1.0", TS1, false);
                    let c2 = commit(&path, "main", tree2, SUBJECT2, "2.0", TS2, true);
                    ostree(&["refs", "--repo", r, "--create=v1", &c1]);
                    ostree(&["refs", "--repo", r, "--create=origin:main", &c1]);
                    (c1, c2)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("ostree fixture: commits made in {:.1?}", t0.elapsed());
    // archive, bare and bare-user keep everything: they make the very same
    // commits (same trees, same timestamps), so one checkout (from bare:
    // hardlinks, fast) serves all three. bare-user-only gets its own.
    let bare = MODES.iter().position(|&m| m == "bare").unwrap();
    let checkout = |mode: &str, c: &str, tag: &str| {
        let co = dir.join(format!("co-{tag}"));
        let repo = dir.join(format!("repo-{mode}"));
        ostree(&[
            "checkout",
            "--repo",
            repo.to_str().unwrap(),
            c,
            co.to_str().unwrap(),
        ]);
        co
    };
    let (b1, b2) = made[bare].clone();
    let full1 = checkout("bare", &b1, "c1");
    let full2 = checkout("bare", &b2, "c2");
    let mut repos = Vec::new();
    for (&mode, (c1, c2)) in MODES.iter().zip(made) {
        let (checkout1, checkout2) = if mode == "bare-user-only" {
            let (co1, co2) = (
                checkout(mode, &c1, "bare-user-only-c1"),
                checkout(mode, &c2, "bare-user-only-c2"),
            );
            // ostree checks bare-user-only repositories out in "user" mode,
            // which adds u+r to files that lack it: `no-perms` is 0000 in
            // the commit (`ostree ls`), 0400 in the checkout. Put the
            // commit's mode back.
            for co in [&co1, &co2] {
                chmod(&co.join("no-perms"), 0o000);
            }
            (co1, co2)
        } else {
            assert_eq!(
                (&c1, &c2),
                (&b1, &b2),
                "{mode} made other commits than bare"
            );
            (full1.clone(), full2.clone())
        };
        repos.push(ModeRepo {
            mode,
            path: dir.join(format!("repo-{mode}")),
            c1,
            c2,
            checkout1,
            checkout2,
        });
    }

    // ostree 2022.7 creates bare-split-xattrs repositories but cannot write
    // to them ("Writing content object: Not allowed due to repo mode").
    let split = dir.join("repo-bare-split-xattrs");
    let sp = split.to_str().unwrap();
    let init = ostree_out(&["init", "--repo", sp, "--mode=bare-split-xattrs"]);
    let split_xattrs_unsupported = if !init.status.success() {
        Some(format!(
            "`ostree init --mode=bare-split-xattrs` failed: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        ))
    } else {
        let out = ostree_out(&[
            "pull-local",
            "--repo",
            sp,
            repos[0].path.to_str().unwrap(),
            "main",
        ]);
        if out.status.success() {
            None
        } else {
            Some(format!(
                "this ostree cannot write bare-split-xattrs repositories: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    if split_xattrs_unsupported.is_none() {
        let c2 = repos[0].c2.clone();
        let c1 = repos[0].c1.clone();
        ostree(&[
            "pull-local",
            "--repo",
            sp,
            repos[0].path.to_str().unwrap(),
            &c1,
        ]);
        ostree(&["refs", "--repo", sp, "--create=v1", &c1]);
        ostree(&["refs", "--repo", sp, "--create=origin:main", &c1]);
        repos.push(ModeRepo {
            mode: "bare-split-xattrs",
            path: split,
            c1,
            c2,
            checkout1: full1,
            checkout2: full2,
        });
    }
    eprintln!(
        "ostree fixture built in {:.1?} at {}",
        t0.elapsed(),
        dir.display()
    );
    Fixture {
        dir,
        repos,
        split_xattrs_unsupported,
    }
}

/// A fresh directory below the fixture directory (removed with it) for a
/// test's copies.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let f = fixture();
    tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir_in(&f.dir)
        .unwrap()
        .keep()
}

// ---------------------------------------------------------------------------
// Looking into archive repositories
// ---------------------------------------------------------------------------

/// `objects/ab/cdef….EXT` below an archive repository.
pub fn object_file(repo: &Path, csum: &str, ext: &str) -> PathBuf {
    repo.join("objects")
        .join(&csum[..2])
        .join(format!("{}.{ext}", &csum[2..]))
}

pub fn read_commit(repo: &Path, csum: &str) -> Commit {
    let data = std::fs::read(object_file(repo, csum, "commit")).unwrap();
    Commit::parse(&data).unwrap()
}

pub fn read_dirtree(repo: &Path, csum: &str) -> DirTree {
    let data = std::fs::read(object_file(repo, csum, "dirtree")).unwrap();
    DirTree::parse(&data).unwrap()
}

/// Every object a commit reaches in an archive repository, as
/// `xx/yyyy….ext` (the path below `objects/`), the commit included.
pub fn reachable(repo: &Path, commit: &str) -> BTreeSet<String> {
    fn name(c: &str, ext: &str) -> String {
        format!("{}/{}.{ext}", &c[..2], &c[2..])
    }
    fn tree(repo: &Path, t: &Checksum, m: &Checksum, out: &mut BTreeSet<String>) {
        out.insert(name(&m.to_hex(), "dirmeta"));
        if !out.insert(name(&t.to_hex(), "dirtree")) {
            return;
        }
        let dt = read_dirtree(repo, &t.to_hex());
        for (_, f) in &dt.files {
            out.insert(name(&f.to_hex(), "filez"));
        }
        for (_, st, sm) in &dt.dirs {
            tree(repo, st, sm, out);
        }
    }
    let c = read_commit(repo, commit);
    let mut out = BTreeSet::new();
    out.insert(name(commit, "commit"));
    tree(repo, &c.root_tree, &c.root_meta, &mut out);
    out
}

/// Resolve a path inside a commit of an archive repository to its dirtree
/// entry: (file checksum) for files.
pub fn file_checksum(repo: &Path, commit: &str, path: &str) -> String {
    let c = read_commit(repo, commit);
    let mut t = read_dirtree(repo, &c.root_tree.to_hex());
    let parts: Vec<&str> = path.split('/').collect();
    for d in &parts[..parts.len() - 1] {
        let (_, st, _) = t
            .dirs
            .iter()
            .find(|(n, _, _)| n == d)
            .unwrap_or_else(|| panic!("no directory {d} on the way to {path}"));
        t = read_dirtree(repo, &st.to_hex());
    }
    let last = parts[parts.len() - 1];
    t.files
        .iter()
        .find(|(n, _)| n == last)
        .unwrap_or_else(|| panic!("no file {path} in {commit}"))
        .1
        .to_hex()
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// `python3 -m http.server` serving a directory on a free port of
/// 127.0.0.1; its stderr (the access log) goes to a file. Killed on drop.
pub struct HttpServer {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _stdout: BufReader<std::process::ChildStdout>,
    _log_file: tempfile::NamedTempFile,
}

/// One access-log entry.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl HttpServer {
    pub fn serve(dir: &Path) -> HttpServer {
        require_tool("python3");
        let log_file = tempfile::Builder::new()
            .prefix("http-access-log")
            .tempfile()
            .unwrap();
        let log = log_file.path().to_path_buf();
        let logf = log_file.reopen().unwrap();
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .expect("cannot start python3 -m http.server");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let port = loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            if n == 0 {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "python3 -m http.server ended without saying its port; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
            if let Some(rest) = line.split(" port ").nth(1) {
                let num: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                if let Ok(p) = num.parse() {
                    break p;
                }
            }
        };
        HttpServer {
            child,
            port,
            log,
            _stdout: stdout,
            _log_file: log_file,
        }
    }

    /// `http://127.0.0.1:PORT/SUB` (no trailing slash unless SUB has one).
    pub fn url(&self, sub: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, sub)
    }

    /// Every request logged so far.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                // 127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 -
                let start = l.find('"')?;
                let end = start + 1 + l[start + 1..].find('"')?;
                let req = &l[start + 1..end];
                let mut parts = req.split(' ');
                let method = parts.next()?.to_string();
                let path = parts.next()?.to_string();
                let status = l[end + 1..].split_whitespace().next()?.parse().ok()?;
                Some(Request {
                    method,
                    path,
                    status,
                })
            })
            .collect()
    }

    /// A position in the log, for [`HttpServer::requests_since`].
    pub fn mark(&self) -> usize {
        self.requests().len()
    }

    pub fn requests_since(&self, mark: usize) -> Vec<Request> {
        let mut r = self.requests();
        let m = mark.min(r.len());
        r.split_off(m)
    }

    /// Requests since `mark` whose path has `/objects/` in it.
    pub fn object_requests_since(&self, mark: usize) -> Vec<Request> {
        self.requests_since(mark)
            .into_iter()
            .filter(|r| r.path.contains("/objects/"))
            .collect()
    }
}

impl HttpServer {
    /// Like [`HttpServer::object_requests_since`], without `.commitmeta`
    /// (detached metadata, which ostree itself asks for beside a delta).
    pub fn object_data_requests_since(&self, mark: usize) -> Vec<Request> {
        self.object_requests_since(mark)
            .into_iter()
            .filter(|r| !r.path.ends_with(".commitmeta"))
            .collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn show_requests(r: &[Request]) -> String {
    r.iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect::<Vec<_>>()
        .join("\n  ")
}

// ---------------------------------------------------------------------------
// GnuPG
// ---------------------------------------------------------------------------

/// A GnuPG home with one ed25519 signing key; the agent it starts is
/// stopped on drop.
pub struct GpgHome {
    pub home: PathBuf,
    pub fingerprint: String,
    /// `gpg --export` of the public key (binary keyring).
    pub keyring: PathBuf,
    _tmp: tempfile::TempDir,
}

impl GpgHome {
    pub fn new(uid: &str) -> GpgHome {
        require_tool("gpg");
        let tmp = tempfile::Builder::new()
            .prefix("g")
            .tempdir_in("/tmp")
            .unwrap();
        let home = tmp.path().join("h");
        std::fs::create_dir(&home).unwrap();
        chmod(&home, 0o700);
        let mut g = GpgHome {
            home: home.clone(),
            fingerprint: String::new(),
            keyring: tmp.path().join("key.gpg"),
            _tmp: tmp,
        };
        g.gpg(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]);
        let list = String::from_utf8(g.gpg(&["--list-keys", "--with-colons"])).unwrap();
        let fingerprint = list
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("no fingerprint in gpg --list-keys")
            .to_string();
        let key = g.gpg(&["--export", &fingerprint]);
        assert!(!key.is_empty(), "gpg --export printed nothing");
        std::fs::write(&g.keyring, key).unwrap();
        g.fingerprint = fingerprint;
        g
    }

    pub fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.home)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `ostree gpg-sign --repo REPO --gpg-homedir HOME COMMIT KEYID`.
    pub fn sign_commit(&self, repo: &Path, commit: &str) {
        ostree(&[
            "gpg-sign",
            "--repo",
            repo.to_str().unwrap(),
            "--gpg-homedir",
            self.home.to_str().unwrap(),
            commit,
            &self.fingerprint,
        ]);
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// Mounts and comparing trees
// ---------------------------------------------------------------------------

pub fn require_kernel() {
    require_root();
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    assert!(
        fs.lines().any(|l| l.trim_end().ends_with("erofs")),
        "the kernel has no EROFS (see /proc/filesystems; try `modprobe erofs`)"
    );
    assert!(
        fs.lines().any(|l| l.trim_end().ends_with("overlay")),
        "the kernel has no overlayfs (see /proc/filesystems; try `modprobe overlay`)"
    );
}

pub use crate::common::Mounted;

pub use crate::common::xattrs;

fn show_x(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    x.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(k).escape_debug(),
                String::from_utf8_lossy(v).escape_debug()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn names_in(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// Compare `actual` (a mount) with `expected` (an ostree checkout) entry by
/// entry: names, file type and mode (setuid/setgid/sticky included),
/// owner, content, symlink targets and xattrs (exact names; without
/// `security.selinux`). Not compared: times, link counts, inode numbers
/// (ostree checkouts hardlink). Returns the number of entries.
pub fn compare_trees(expected: &Path, actual: &Path) -> usize {
    let mut paths = vec![PathBuf::new()];
    common::walk(expected, &mut |p| {
        paths.push(p.strip_prefix(expected).unwrap().to_path_buf())
    });
    paths.sort();
    let mut problems = Vec::new();
    for rel in &paths {
        let e = expected.join(rel);
        let a = actual.join(rel);
        let what = format!("/{}", rel.display()).escape_debug().to_string();
        let em = std::fs::symlink_metadata(&e).unwrap();
        let am = match std::fs::symlink_metadata(&a) {
            Ok(m) => m,
            Err(err) => {
                problems.push(format!("{what}: missing: {err}"));
                continue;
            }
        };
        let mut check = |field: &str, x: String, y: String| {
            if x != y {
                problems.push(format!("{what}: {field}: checkout {x}, pulled {y}"));
            }
        };
        check(
            "mode",
            format!("{:o}", em.mode()),
            format!("{:o}", am.mode()),
        );
        check("uid", em.uid().to_string(), am.uid().to_string());
        check("gid", em.gid().to_string(), am.gid().to_string());
        let ft = em.file_type();
        if !ft.is_dir() {
            check("size", em.size().to_string(), am.size().to_string());
        }
        if ft.is_symlink() {
            let x = std::fs::read_link(&e).unwrap();
            match std::fs::read_link(&a) {
                Ok(y) if x == y => {}
                other => problems.push(format!("{what}: symlink target {x:?}, pulled {other:?}")),
            }
        }
        if ft.is_file() {
            let x = std::fs::read(&e).unwrap();
            match std::fs::read(&a) {
                Ok(y) if x == y => {}
                Ok(y) => problems.push(format!(
                    "{what}: content differs ({} bytes in the checkout, {} pulled)",
                    x.len(),
                    y.len()
                )),
                Err(err) => problems.push(format!("{what}: cannot read: {err}")),
            }
        }
        if ft.is_dir() {
            let x = names_in(&e);
            let y = names_in(&a);
            if x != y {
                problems.push(format!(
                    "{what}: entries differ: only in the checkout {:?}, only pulled {:?}",
                    x.difference(&y).collect::<Vec<_>>(),
                    y.difference(&x).collect::<Vec<_>>()
                ));
            }
        }
        let (xa, xb) = (xattrs(&e), xattrs(&a));
        if xa != xb {
            problems.push(format!(
                "{what}: xattrs differ:\n    checkout: {}\n    pulled:   {}",
                show_x(&xa),
                show_x(&xb)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the pulled tree differs from `ostree checkout` in {} ways:\n  {}",
        problems.len(),
        problems
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    paths.len()
}

// ---------------------------------------------------------------------------
// Hand-made archive repositories
// ---------------------------------------------------------------------------

pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFDIR: u32 = 0o040000;

/// Writes objects of an archive-mode repository byte by byte, so that
/// tests can make repositories ostree would never write.
pub struct ArchiveWriter {
    pub path: PathBuf,
}

impl ArchiveWriter {
    pub fn new(path: &Path) -> ArchiveWriter {
        for d in ["objects", "refs/heads", "refs/remotes", "tmp", "state"] {
            std::fs::create_dir_all(path.join(d)).unwrap();
        }
        std::fs::write(
            path.join("config"),
            "[core]\nrepo_version=1\nmode=archive\n",
        )
        .unwrap();
        ArchiveWriter {
            path: path.to_path_buf(),
        }
    }

    /// Write `data` as object `csum.ext`.
    pub fn put_as(&self, csum: &Checksum, ext: &str, data: &[u8]) -> PathBuf {
        let p = object_file(&self.path, &csum.to_hex(), ext);
        write_file(&p, data);
        p
    }

    /// A metadata object (named by the SHA-256 of its bytes).
    pub fn put_meta(&self, ext: &str, data: &[u8]) -> Checksum {
        let c = Checksum::of(data);
        self.put_as(&c, ext, data);
        c
    }

    /// `.filez` bytes: u32 BE header length, 4 zero bytes, header, raw
    /// deflate of `content`.
    pub fn filez_bytes(header: &FileHeader, content: &[u8]) -> Vec<u8> {
        let h = header.serialize_archive();
        let mut out = Vec::new();
        out.extend_from_slice(&(h.len() as u32).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&h);
        let mut enc = flate2::write::DeflateEncoder::new(out, flate2::Compression::default());
        enc.write_all(content).unwrap();
        enc.finish().unwrap()
    }

    /// A file object, named by ostree's checksum of header and content.
    pub fn put_file(&self, header: &FileHeader, content: &[u8]) -> Checksum {
        let c = header.checksum(content);
        self.put_as(&c, "filez", &Self::filez_bytes(header, content));
        c
    }

    pub fn regular(content: &[u8]) -> FileHeader {
        FileHeader {
            size: content.len() as u64,
            uid: 0,
            gid: 0,
            mode: S_IFREG | 0o644,
            rdev: 0,
            symlink: String::new(),
            xattrs: vec![],
        }
    }

    pub fn dirmeta(&self) -> Checksum {
        use composefs::ostree::objects::DirMeta;
        self.put_meta(
            "dirmeta",
            &DirMeta {
                uid: 0,
                gid: 0,
                mode: S_IFDIR | 0o755,
                xattrs: vec![],
            }
            .serialize(),
        )
    }

    pub fn dirtree(&self, t: &DirTree) -> Checksum {
        self.put_meta("dirtree", &t.serialize())
    }

    pub fn commit_bytes(tree: &Checksum, meta: &Checksum, subject: &str) -> Vec<u8> {
        use composefs::ostree::variant::{V, dict, u64be};
        V::Tuple(vec![
            dict(vec![]),
            V::Bytes(&[]),
            V::Array(vec![], 1),
            V::Str(subject.as_bytes()),
            V::Str(b""),
            u64be(TS1),
            V::Bytes(&tree.0),
            V::Bytes(&meta.0),
        ])
        .to_bytes()
    }

    /// A commit object, and `refs/heads/main` pointing at it.
    pub fn commit(&self, tree: &Checksum, meta: &Checksum) -> Checksum {
        let c = self.put_meta("commit", &Self::commit_bytes(tree, meta, "hand made"));
        self.set_ref("main", &c);
        c
    }

    pub fn set_ref(&self, name: &str, c: &Checksum) {
        write_file(
            &self.path.join("refs/heads").join(name),
            format!("{}\n", c.to_hex()).as_bytes(),
        );
    }
}
