//! FUSE tests: mount stored trees through `/dev/fuse` with `composefs mount`
//! and compare them with an independent oracle: the kernel mount of the
//! same image (`mount --kernel`), or `ostree checkout` of the same commit.
//! Also: read-only refusals, a missing object, unmounting by command and by
//! signal, prompt failures, and concurrent readers.
//!
//! Needs root (mknod, chown, trusted.* xattrs), `/dev/fuse`, EROFS and
//! overlayfs for the kernel comparison, `ostree` and `diff`.

#[path = "../tests/common/mod.rs"]
mod common;
mod concurrency;
mod diff;
mod live;
mod oci;
mod prefetch;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::{CWD, FileType, Mode};

use common::{Repo, pseudo_random, require_tool};

/// CI runs as root with `/dev/fuse`; every FUSE test depends on it.
#[test]
fn dev_fuse_is_a_character_device() {
    let meta = std::fs::metadata("/dev/fuse").expect("/dev/fuse is missing: FUSE tests cannot run");
    assert!(
        meta.file_type().is_char_device(),
        "/dev/fuse is not a character device"
    );
}

// ---------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (mknod, chown, trusted.* xattrs, mount)"
    );
}

/// Is something mounted at `p` (per /proc/self/mountinfo)?
fn is_mountpoint(p: &Path) -> bool {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let info = std::fs::read("/proc/self/mountinfo").unwrap();
    let want = p.as_os_str().as_bytes();
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|m| unescape_mountinfo(m) == want)
    })
}

/// The per-mount options of the mount at `p` (`ro,nosuid,…`).
fn mount_options(p: &Path) -> String {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let info = std::fs::read("/proc/self/mountinfo").unwrap();
    let want = p.as_os_str().as_bytes();
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            (f.len() > 5 && unescape_mountinfo(f[4]) == want)
                .then(|| String::from_utf8_lossy(f[5]).to_string())
        })
        .next_back()
        .unwrap_or_default()
}

fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && let Some(v) = std::str::from_utf8(&s[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Wait for `cond` with a deadline (for things outside our control, like
/// a daemon exiting); false if it never held.
fn poll(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount undone when dropped, also when an assertion failed:
/// `composefs umount`, then `umount -l`.
struct Mounted {
    path: PathBuf,
    active: bool,
}

impl Mounted {
    /// `composefs mount [ARGS] [REF] PATH` (creates PATH; no REF when
    /// `name` is empty), required to work.
    fn new(repo: &Repo, args: &[&str], name: &str, path: &Path) -> Mounted {
        std::fs::create_dir_all(path).unwrap();
        let mut all = vec!["mount"];
        all.extend_from_slice(args);
        if !name.is_empty() {
            all.push(name);
        }
        all.push(path.to_str().unwrap());
        let out = run_with_deadline(repo.command().args(&all));
        assert!(
            out.status.success(),
            "composefs {all:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = Mounted {
            path: path.to_path_buf(),
            active: true,
        };
        assert!(
            is_mountpoint(path),
            "mount succeeded but nothing is mounted"
        );
        m
    }

    fn fuse(repo: &Repo, name: &str, path: &Path) -> Mounted {
        Mounted::new(repo, &[], name, path)
    }

    fn kernel(repo: &Repo, name: &str, path: &Path) -> Mounted {
        Mounted::new(repo, &["--kernel"], name, path)
    }

    /// A mount made some other way (a foreground daemon).
    fn adopt(path: &Path) -> Mounted {
        Mounted {
            path: path.to_path_buf(),
            active: true,
        }
    }

    /// `composefs umount`, required to work and to leave nothing mounted.
    fn umount(mut self, repo: &Repo) {
        self.active = false;
        repo.ok(&["umount", self.path.to_str().unwrap()]);
        assert!(
            !is_mountpoint(&self.path),
            "still mounted after `composefs umount`"
        );
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.active || !is_mountpoint(&self.path) {
            return;
        }
        let ok = Command::new(common::bin())
            .arg("umount")
            .arg(&self.path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A child process killed (and reaped) when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run a command, failing the test if it takes more than a minute (a
/// `composefs mount` that never returns is a bug we test for).
fn run_with_deadline(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("cannot start command");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.unwrap();
            common::assert_no_panic("command", &out);
            out
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within a minute");
        }
    }
}

/// Processes whose command line is `composefs … mount … PATH`.
fn daemons_for(path: &Path) -> Vec<u32> {
    let want = path.as_os_str().as_bytes();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !is_zombie
            && args.iter().any(|a| *a == b"mount")
            && args.contains(&want)
            && args.first().is_some_and(|a| a.ends_with(b"composefs"))
        {
            out.push(pid);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Snapshots: everything `stat`, `readlink`, `read` and xattrs show
// ---------------------------------------------------------------------------

use common::snapshot::{Snapshot, assert_same, snapshot, xattrs};

// ---------------------------------------------------------------------------
// The source directory
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
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mknod(p: &Path, ft: FileType, perms: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        p,
        ft,
        Mode::from_raw_mode(perms),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

fn write(p: &Path, data: &[u8]) {
    common::write_file(p, data);
}

/// One of every file type, odd names, owners, modes, xattrs, hardlinks.
fn populate(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let p = |s: &str| root.join(s);
    write(&p("empty"), b"");
    write(&p("small"), b"hello\n");
    write(&p("sixty-five"), &pseudo_random(65, 65));
    write(&p("page"), &pseudo_random(4096, 4096));
    write(&p("large"), &pseudo_random(3, (3 << 20) + 17));
    write(&p("dup-a"), &pseudo_random(77, 10_000));
    write(&p("dup-b"), &pseudo_random(77, 10_000));
    std::fs::create_dir_all(p("sub/deeper")).unwrap();
    std::fs::create_dir(p("emptydir")).unwrap();
    symlink("small", p("link")).unwrap();
    symlink("/etc/passwd", p("abslink")).unwrap();
    symlink("does/not/exist", p("dangling")).unwrap();
    symlink("t/".repeat(1000) + "x", p("longlink")).unwrap();
    mknod(&p("null"), FileType::CharacterDevice, 0o666, 1, 3);
    mknod(
        &p("chr-max"),
        FileType::CharacterDevice,
        0o600,
        4095,
        1_048_575,
    );
    mknod(&p("blk"), FileType::BlockDevice, 0o660, 259, 1_000_000);
    mknod(&p("fifo"), FileType::Fifo, 0o640, 0, 0);
    for i in 0..300usize {
        write(
            &p("wide").join(format!("{i:04}-{}", "n".repeat(i % 200))),
            &[i as u8; 3],
        );
    }
    write(&p("hl-large"), &pseudo_random(9, 100_000));
    std::fs::hard_link(p("hl-large"), p("sub/hl-large-2")).unwrap();
    std::fs::hard_link(p("hl-large"), p("sub/deeper/hl-large-3")).unwrap();
    write(&p("hl-small"), b"tiny");
    std::fs::hard_link(p("hl-small"), p("sub/hl-small-2")).unwrap();
    symlink("small", p("hl-symlink")).unwrap();
    std::fs::hard_link(p("hl-symlink"), p("sub/hl-symlink-2")).unwrap();
    mknod(&p("hl-fifo"), FileType::Fifo, 0o600, 0, 0);
    std::fs::hard_link(p("hl-fifo"), p("sub/hl-fifo-2")).unwrap();
    let odd: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        "utf8-é中文-😀".as_bytes().to_vec(),
        b"not-utf8-\xff\xfe".to_vec(),
        b"...".to_vec(),
        b"x".repeat(255),
    ];
    std::fs::create_dir(p("odd")).unwrap();
    for (i, n) in odd.into_iter().enumerate() {
        let n = OsString::from_vec(n);
        write(&root.join(&n), format!("odd name {i}\n").as_bytes());
        let d = p("odd").join(&n);
        std::fs::create_dir(&d).unwrap();
        write(&d.join(&n), &pseudo_random(i as u64, 100 + i * 1000));
    }
    chown(&p("small"), 1234, 70000);
    chown(&p("large"), 3_000_000_000, 4_000_000_000);
    chown(&p("link"), 42, 43);
    chown(&p("fifo"), 5, 6);
    chown(&p("sub"), 1000, 1000);
    write(&p("setuid"), b"#!/bin/sh\necho setuid\n");
    chmod(&p("setuid"), 0o4755);
    write(&p("setgid"), &pseudo_random(5, 5000));
    chmod(&p("setgid"), 0o2711);
    write(&p("no-perms"), b"secret");
    chmod(&p("no-perms"), 0o000);
    chmod(&p("emptydir"), 0o1777);
    chmod(root, 0o751);
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    setx(&p("small"), "user.plain", b"value");
    setx(&p("small"), "user.binary", &all_bytes);
    setx(&p("small"), "user.empty", b"");
    setx(&p("small"), "trusted.t", b"\x00\x01\x02\xff");
    setx(&p("large"), "user.big", &pseudo_random(3, 3000));
    setx(&p("sub"), "user.dir", b"d");
    setx(&p("sub"), "trusted.dir", b"T\0");
    setx(root, "user.root", b"on the root");
    setx(&p("link"), "trusted.on-symlink", b"L");
    setx(&p("fifo"), "trusted.on-fifo", b"F");
    setx(&p("hl-large"), "user.hardlinked", b"shared by three names");
    for f in ["empty", "page", "dup-a", "dup-b"] {
        setx(&p(f), "user.shared", b"shared by several inodes");
    }
    let mut all = vec![root.to_path_buf()];
    common::walk(root, &mut |q| all.push(q.to_path_buf()));
    for (i, q) in all.iter().enumerate() {
        let i = i as i64;
        let t = rustix::fs::Timespec {
            tv_sec: 1_600_000_000 + i * 1_000_003,
            tv_nsec: (i * 7_919_993) % 1_000_000_000,
        };
        let t = if q.ends_with("sixty-five") {
            rustix::fs::Timespec {
                tv_sec: -1_000_000_000,
                tv_nsec: 250_000_000,
            }
        } else {
            t
        };
        rustix::fs::utimensat(
            CWD,
            q,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

/// A repository with the populated directory stored as image `t`.
fn repo_with_image() -> (Repo, PathBuf) {
    require_root();
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    populate(&src);
    repo.ok(&["create-image", src.to_str().unwrap(), "--name", "t"]);
    (repo, src)
}

// ---------------------------------------------------------------------------
// 1. The FUSE view equals the kernel mount of the same image
// ---------------------------------------------------------------------------

#[test]
fn fuse_view_equals_kernel_mount() {
    let (repo, _src) = repo_with_image();
    let fuse_mnt = repo.tmp.path().join("fuse");
    let kernel_mnt = repo.tmp.path().join("kernel");
    let f = Mounted::fuse(&repo, "t", &fuse_mnt);
    let k = Mounted::kernel(&repo, "t", &kernel_mnt);
    let a = snapshot(&fuse_mnt, true);
    let b = snapshot(&kernel_mnt, true);
    assert!(a.entries.len() > 300, "the walk found too little");
    assert_same(&a, &b, "FUSE vs kernel");

    // Spot checks that the comparison covered what it should.
    let e = |p: &str| &a.entries[p.as_bytes()];
    assert_eq!(e("setuid").mode & 0o7777, 0o4755);
    assert_eq!(e("emptydir").mode & 0o7777, 0o1777);
    assert_eq!(
        (e("large").uid, e("large").gid),
        (3_000_000_000, 4_000_000_000)
    );
    assert_eq!(e("sixty-five").mtime, (-1_000_000_000, 250_000_000));
    assert_eq!(e("hl-large").nlink, 3);
    assert_eq!(e("small").xattrs[&b"user.binary"[..]].len(), 256);
    assert_eq!(e("small").xattrs[&b"trusted.t"[..]], b"\x00\x01\x02\xff");
    let r = e("chr-max").rdev;
    assert_eq!(
        (rustix::fs::major(r), rustix::fs::minor(r)),
        (4095, 1_048_575)
    );
    assert!(a.hardlinks.contains(&vec![
        b"hl-large".to_vec(),
        b"sub/deeper/hl-large-3".to_vec(),
        b"sub/hl-large-2".to_vec()
    ]));

    // xattr edge cases straight through the syscalls.
    let small = fuse_mnt.join("small");
    let mut tiny = [0u8; 2];
    assert_eq!(
        rustix::fs::lgetxattr(&small, "user.plain", &mut tiny[..]),
        Err(rustix::io::Errno::RANGE)
    );
    assert_eq!(
        rustix::fs::lgetxattr(&small, "user.missing", &mut tiny[..]),
        Err(rustix::io::Errno::NODATA)
    );
    assert_eq!(
        rustix::fs::llistxattr(&small, &mut tiny[..]),
        Err(rustix::io::Errno::RANGE)
    );
    assert_eq!(
        rustix::fs::lgetxattr(&small, "user.empty", &mut tiny[..]),
        Ok(0)
    );
    let st = rustix::fs::statfs(&fuse_mnt).unwrap();
    assert_eq!(st.f_namelen, 255);

    // Inode numbers are stable: a second FUSE mount shows the same ones.
    let fuse2 = repo.tmp.path().join("fuse2");
    let f2 = Mounted::fuse(&repo, "t", &fuse2);
    for p in ["small", "sub/hl-large-2", "odd", "wide/0007-nnnnnnn"] {
        assert_eq!(
            std::fs::symlink_metadata(fuse_mnt.join(p)).unwrap().ino(),
            std::fs::symlink_metadata(fuse2.join(p)).unwrap().ino(),
            "{p}"
        );
    }
    assert_eq!(std::fs::metadata(&fuse_mnt).unwrap().ino(), 1);
    f2.umount(&repo);
    k.umount(&repo);
    f.umount(&repo);
}

// ---------------------------------------------------------------------------
// 2. ostree commits equal `ostree checkout`
// ---------------------------------------------------------------------------

fn ostree(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ostree").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ostree {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn ostree_commit_equals_checkout() {
    require_root();
    require_tool("ostree");
    require_tool("diff");
    let repo = Repo::new();
    let s = repo.scratch();
    let orepo = s.join("orepo");
    let o = orepo.to_str().unwrap();
    ostree(&["init", "--mode=archive", &format!("--repo={o}")]);

    let tree = s.join("tree");
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc/empty")).unwrap();
    write(&tree.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n");
    chmod(&tree.join("usr/bin/tool"), 0o4755);
    write(&tree.join("etc/config"), b"key=value\n");
    chmod(&tree.join("etc/config"), 0o600);
    chown(&tree.join("etc/config"), 1000, 1001);
    write(&tree.join("big"), &pseudo_random(11, 300_000));
    write(&tree.join("gone"), b"removed in the second commit\n");
    write(&tree.join("changed"), b"first version\n");
    symlink("usr/bin/tool", tree.join("tool-link")).unwrap();
    symlink("../nowhere", tree.join("etc/dangling")).unwrap();
    setx(&tree.join("etc/config"), "user.note", b"\x00binary\xff");
    setx(&tree.join("usr"), "user.dir", b"on a directory");
    chmod(&tree.join("etc/empty"), 0o1777);
    let commit = |subject: &str| {
        ostree(&[
            &format!("--repo={o}"),
            "commit",
            "-b",
            "main",
            "-s",
            subject,
            tree.to_str().unwrap(),
        ]);
        String::from_utf8(ostree(&[&format!("--repo={o}"), "rev-parse", "main"]))
            .unwrap()
            .trim()
            .to_string()
    };
    let first = commit("first");
    repo.ok(&["ostree", "pull", o, "main"]);

    let checkout = s.join("checkout");
    ostree(&[
        &format!("--repo={o}"),
        "checkout",
        "main",
        checkout.to_str().unwrap(),
    ]);
    let mnt = s.join("mnt");
    let m = Mounted::fuse(&repo, "ostree/main", &mnt);
    let a = snapshot(&mnt, false);
    let b = snapshot(&checkout, false);
    assert_same(&a, &b, "FUSE vs ostree checkout");
    assert_eq!(a.entries[&b"usr/bin/tool"[..]].mode & 0o7777, 0o4755);
    assert_eq!(
        a.entries[&b"etc/config"[..]].xattrs[&b"user.note"[..]],
        b"\x00binary\xff"
    );
    m.umount(&repo);

    // A second commit, both mounted side by side (by name and by prefix).
    std::fs::remove_file(tree.join("gone")).unwrap();
    write(&tree.join("changed"), b"second version\n");
    write(&tree.join("usr/new"), b"added\n");
    let second = commit("second");
    assert_ne!(first, second);
    repo.ok(&["ostree", "pull", o, "main"]);
    let m1 = Mounted::fuse(&repo, &first[..12], &s.join("m1"));
    let m2 = Mounted::fuse(&repo, "main", &s.join("m2"));
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(s.join("m1"))
        .arg(s.join("m2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "diff -r: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with(['<', '>'])
                && !l.starts_with("---")
                && !l.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    lines.sort();
    let (d1, d2) = (s.join("m1"), s.join("m2"));
    let mut want = vec![
        format!(
            "diff -r --no-dereference {}/changed {}/changed",
            d1.display(),
            d2.display()
        ),
        format!("Only in {}: gone", d1.display()),
        format!("Only in {}/usr: new", d2.display()),
    ];
    want.sort();
    assert_eq!(lines, want, "diff -r output:\n{text}");
    m1.umount(&repo);
    m2.umount(&repo);
}

// ---------------------------------------------------------------------------
// 3. Read-only, missing objects, unmounting, failures
// ---------------------------------------------------------------------------

fn errno_of(r: std::io::Result<impl std::fmt::Debug>) -> Option<i32> {
    match r {
        Ok(v) => panic!("unexpectedly succeeded: {v:?}"),
        Err(e) => e.raw_os_error(),
    }
}

#[test]
fn read_only() {
    let (repo, _src) = repo_with_image();
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::fuse(&repo, "t", &mnt);
    let erofs = Some(libc::EROFS);
    assert_eq!(errno_of(std::fs::write(mnt.join("new"), b"x")), erofs);
    assert_eq!(errno_of(std::fs::create_dir(mnt.join("newdir"))), erofs);
    assert_eq!(errno_of(std::fs::remove_file(mnt.join("small"))), erofs);
    assert_eq!(errno_of(std::fs::remove_dir(mnt.join("emptydir"))), erofs);
    assert_eq!(
        errno_of(std::fs::rename(mnt.join("small"), mnt.join("small2"))),
        erofs
    );
    assert_eq!(
        errno_of(
            std::fs::OpenOptions::new()
                .write(true)
                .open(mnt.join("small"))
        ),
        erofs
    );
    assert_eq!(
        errno_of(
            std::fs::OpenOptions::new()
                .append(true)
                .open(mnt.join("large"))
        ),
        erofs
    );
    assert_eq!(errno_of(symlink("x", mnt.join("newlink"))), erofs);
    assert_eq!(
        errno_of(std::fs::hard_link(mnt.join("small"), mnt.join("hl"))),
        erofs
    );
    assert_eq!(
        errno_of(std::fs::set_permissions(
            mnt.join("small"),
            std::fs::Permissions::from_mode(0o777)
        )),
        erofs
    );
    assert_eq!(
        rustix::fs::lsetxattr(
            mnt.join("small"),
            "user.x",
            b"y",
            rustix::fs::XattrFlags::empty()
        ),
        Err(rustix::io::Errno::ROFS)
    );
    assert_eq!(
        rustix::fs::lremovexattr(mnt.join("small"), "user.plain"),
        Err(rustix::io::Errno::ROFS)
    );
    // Still intact.
    assert_eq!(std::fs::read(mnt.join("small")).unwrap(), b"hello\n");
    // A view for looking, not running: setuid bits and device nodes show
    // but take no effect (and reads record no access times).
    let opts = mount_options(&mnt);
    assert!(
        ["nosuid", "nodev", "noatime"]
            .iter()
            .all(|want| opts.split(',').any(|o| o == *want)),
        "mount options: {opts}"
    );
    let null = mnt.join("null");
    assert_eq!(
        std::fs::symlink_metadata(&null).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    assert_eq!(errno_of(std::fs::File::open(&null)), Some(libc::EACCES));
    m.umount(&repo);
}

/// `composefs mount --foreground` as a child with standard error in a file.
fn foreground(repo: &Repo, name: &str, mnt: &Path, log: &Path) -> (Reaped, Mounted) {
    foreground_with(repo, &[name], mnt, log)
}

/// `composefs mount --foreground ARGS... MNT`, logging to `log`.
fn foreground_with(repo: &Repo, args: &[&str], mnt: &Path, log: &Path) -> (Reaped, Mounted) {
    std::fs::create_dir_all(mnt).unwrap();
    let child = repo
        .command()
        .args(["mount", "--foreground"])
        .args(args)
        .arg(mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let guard = Mounted::adopt(mnt);
    assert!(
        poll(Duration::from_secs(60), || is_mountpoint(mnt)
            || child.0.try_wait().unwrap().is_some()),
        "the foreground mount never appeared"
    );
    assert!(
        is_mountpoint(mnt),
        "the foreground daemon exited: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (child, guard)
}

#[test]
fn missing_object_gives_eio_and_sigterm_unmounts() {
    let (repo, src) = repo_with_image();
    // Remove the object holding `large`'s bytes.
    let large = std::fs::read(src.join("large")).unwrap();
    let (hex, obj) = common::list_objects(&repo.path)
        .into_iter()
        .find(|(_, p)| std::fs::metadata(p).unwrap().len() == large.len() as u64)
        .expect("the object of `large`");
    assert_eq!(std::fs::read(&obj).unwrap(), large);
    std::fs::remove_file(&obj).unwrap();

    let mnt = repo.tmp.path().join("mnt");
    let log = repo.tmp.path().join("log");
    let (mut child, guard) = foreground(&repo, "t", &mnt, &log);
    let err = std::fs::read(mnt.join("large")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Everything else still works.
    assert_eq!(std::fs::read(mnt.join("small")).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read(mnt.join("hl-large")).unwrap(),
        std::fs::read(src.join("hl-large")).unwrap()
    );
    assert_eq!(
        std::fs::symlink_metadata(mnt.join("large")).unwrap().len(),
        large.len() as u64
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&hex[hex.len() - 32..]),
        "the log does not name the object {hex}:\n{logged}"
    );

    // SIGTERM: the daemon unmounts and exits.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.0.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let mut status = None;
    assert!(
        poll(Duration::from_secs(30), || {
            status = child.0.try_wait().unwrap();
            status.is_some()
        }),
        "the daemon did not exit on SIGTERM"
    );
    assert!(status.unwrap().success(), "exit status {status:?}");
    assert!(!is_mountpoint(&mnt), "stale mount after SIGTERM");
    drop(guard);
}

#[test]
fn background_daemon_umount_and_sigterm() {
    let (repo, _src) = repo_with_image();
    // `composefs umount` of a background mount: unmounted, daemon gone.
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::fuse(&repo, "t", &mnt);
    assert_eq!(std::fs::read(mnt.join("small")).unwrap(), b"hello\n");
    let daemons = daemons_for(&mnt);
    assert_eq!(daemons.len(), 1, "one daemon serves the mount: {daemons:?}");
    m.umount(&repo);
    assert!(
        poll(Duration::from_secs(30), || daemons_for(&mnt).is_empty()),
        "the daemon outlived its mount"
    );

    // SIGTERM to the background daemon.
    let _m = Mounted::fuse(&repo, "t", &mnt);
    let daemons = daemons_for(&mnt);
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemons[0] as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(
        poll(Duration::from_secs(30), || !is_mountpoint(&mnt)),
        "still mounted after SIGTERM"
    );
    assert!(
        poll(Duration::from_secs(30), || daemons_for(&mnt).is_empty()),
        "the daemon did not exit on SIGTERM"
    );
}

#[test]
fn mount_failures_are_prompt() {
    let (repo, _src) = repo_with_image();
    let mnt = repo.tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = run_with_deadline(repo.command().args(["mount", "no-such-ref"]).arg(&mnt));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-ref"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mountpoint(&mnt));
    let out = run_with_deadline(
        repo.command()
            .args(["mount", "t"])
            .arg(repo.tmp.path().join("does-not-exist")),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does-not-exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Onto a regular file.
    let file = repo.tmp.path().join("file");
    write(&file, b"x");
    let out = run_with_deadline(repo.command().args(["mount", "t"]).arg(&file));
    assert!(!out.status.success());
}

// ---------------------------------------------------------------------------
// 4. Concurrent readers
// ---------------------------------------------------------------------------

#[test]
fn concurrent_readers() {
    let (repo, src) = repo_with_image();
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::fuse(&repo, "t", &mnt);
    let mut files = Vec::new();
    common::walk(&src, &mut |p| {
        if std::fs::symlink_metadata(p).unwrap().file_type().is_file() {
            files.push(p.strip_prefix(&src).unwrap().to_path_buf());
        }
    });
    assert!(files.len() > 300);
    std::thread::scope(|s| {
        for t in 0..8usize {
            let (files, src, mnt) = (&files, &src, &mnt);
            s.spawn(move || {
                // Each thread its own order, and a directory walk of its own.
                let n = files.len();
                let mut seen = 0;
                common::walk(mnt, &mut |_| seen += 1);
                assert!(seen > n);
                for i in 0..n {
                    let rel = &files[(i * (2 * t + 1) + t * 37) % n];
                    let want = std::fs::read(src.join(rel)).unwrap();
                    let got = std::fs::read(mnt.join(rel))
                        .unwrap_or_else(|e| panic!("thread {t}: {}: {e}", rel.display()));
                    assert!(got == want, "thread {t}: {} differs", rel.display());
                }
            });
        }
    });
    m.umount(&repo);
}
