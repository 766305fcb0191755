//! End to end through the kernel: a directory with every file type, odd
//! names, owners, modes, nanosecond times, xattrs in every namespace and
//! hardlinks goes through `create-image` and `mount --kernel` (EROFS under
//! overlayfs, the objects directory as the data-only lower layer), and the
//! mount is compared with the source directory name by name. Also: both
//! format versions, whiteouts, gc and missing objects, `fsck.erofs` on the
//! stored image, and unmounting.
//!
//! Needs root (mknod, chown, trusted.* xattrs, mounting), EROFS and
//! overlayfs in the kernel; the tests fail with a clear message otherwise.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use common::{
    Mounted, Repo, assert_mentions, assert_no_panic, dump_line, is_mountpoint, parse_dump,
    pseudo_random, require_tool,
};

// ---------------------------------------------------------------------------
// Preconditions and mounts
// ---------------------------------------------------------------------------

fn require_root_and_kernel() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (mknod, chown, trusted.* xattrs, mount)"
    );
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

/// The same for a plain `mount -t overlay` made by a test.
struct PlainMount(PathBuf);

impl Drop for PlainMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

// ---------------------------------------------------------------------------
// Building the source directory
// ---------------------------------------------------------------------------

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, p, &ts, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

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

/// Names that must survive the trip.
fn odd_names() -> Vec<OsString> {
    let mut v: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        b"  two leading spaces".to_vec(),
        b"new\nline".to_vec(),
        b"tab\tand\rcr".to_vec(),
        "utf8-é中文-😀".as_bytes().to_vec(),
        b"back\\slash".to_vec(),
        b"-leading-dash".to_vec(),
        b"-".to_vec(),
        b"eq=sign".to_vec(),
        b".hidden".to_vec(),
        b"...".to_vec(),
        b"not-utf8-\xff\xfe".to_vec(),
        b"x".repeat(255),
    ];
    // 255 bytes of UTF-8: 127 two-byte characters and one ASCII.
    let mut u = "é".repeat(127).into_bytes();
    u.push(b'z');
    assert_eq!(u.len(), 255);
    v.push(u);
    v.into_iter().map(OsString::from_vec).collect()
}

/// A valid `security.capability` (VFS_CAP_REVISION_2, effective,
/// cap_net_raw permitted).
fn capability_value() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes());
    v.extend_from_slice(&[0u8; 12]);
    v
}

/// Build a directory with one of everything (needs root).
fn populate(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let p = |s: &str| root.join(s);

    // Regular files around the inline limit (64 bytes) and large ones.
    write(&p("empty"), b"");
    write(&p("small"), b"hello\n");
    write(&p("sixty-four"), &[b'6'; 64]);
    write(&p("sixty-five"), &pseudo_random(65, 65));
    write(&p("page"), &pseudo_random(4096, 4096));
    write(&p("large"), &pseudo_random(3, (3 << 20) + 17));
    write(&p("zeros"), &vec![0u8; 200_000]);
    // Same content twice: one object, two inodes.
    write(&p("dup-a"), &pseudo_random(77, 10_000));
    write(&p("dup-b"), &pseudo_random(77, 10_000));
    write(
        &p("binary-small"),
        &[0, 0xff, b'\n', b'\\', b' ', b'-', 0x7f],
    );

    // Symlinks: relative, absolute, dangling, to a directory, long targets.
    std::fs::create_dir(p("sub")).unwrap();
    symlink("small", p("link")).unwrap();
    symlink("/etc/passwd", p("abslink")).unwrap();
    symlink("does/not/exist", p("dangling")).unwrap();
    symlink("sub", p("dirlink")).unwrap();
    symlink("t/".repeat(2047) + "x", p("longlink")).unwrap(); // 4095 bytes
    symlink("a".repeat(200), p("midlink")).unwrap();
    symlink("with space and \n newline", p("oddlink")).unwrap();

    // Devices (large major/minor), a fifo.
    mknod(&p("null"), FileType::CharacterDevice, 0o666, 1, 3);
    mknod(
        &p("chr-max"),
        FileType::CharacterDevice,
        0o600,
        4095,
        1_048_575,
    );
    mknod(&p("blk"), FileType::BlockDevice, 0o660, 259, 1_000_000);
    mknod(&p("blk-small"), FileType::BlockDevice, 0o640, 7, 0);
    mknod(&p("fifo"), FileType::Fifo, 0o640, 0, 0);

    // Directories: empty ones, deep nesting.
    std::fs::create_dir(p("emptydir")).unwrap();
    std::fs::create_dir_all(p("sub/emptydir2")).unwrap();
    let mut deep = p("deep");
    for i in 0..40 {
        deep.push(format!("level{i:02}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    write(&deep.join("bottom"), b"at the bottom\n");
    write(&deep.join("bottom-large"), &pseudo_random(40, 70_000));
    std::fs::create_dir(deep.join("empty-bottom")).unwrap();

    // A wide directory: many blocks of entries, names of every length.
    for i in 0..1500usize {
        let len = 1 + i % 255;
        let mut name = format!("{i:04}-");
        while name.len() < len.max(6) {
            name.push((b'a' + (i % 26) as u8) as char);
        }
        write(&p("wide").join(&name), &[i as u8; 3]);
    }

    // Hardlinks: a large file with three names across directories, an inline
    // pair, an empty pair, a symlink, a device and a fifo with two names each.
    std::fs::create_dir_all(p("sub/deeper")).unwrap();
    write(&p("hl-large"), &pseudo_random(9, 100_000));
    std::fs::hard_link(p("hl-large"), p("sub/hl-large-2")).unwrap();
    std::fs::hard_link(p("hl-large"), p("sub/deeper/hl-large-3")).unwrap();
    write(&p("hl-small"), b"tiny");
    std::fs::hard_link(p("hl-small"), p("sub/hl-small-2")).unwrap();
    write(&p("hl-empty"), b"");
    std::fs::hard_link(p("hl-empty"), p("hl-empty-2")).unwrap();
    symlink("small", p("hl-symlink")).unwrap();
    std::fs::hard_link(p("hl-symlink"), p("sub/hl-symlink-2")).unwrap();
    mknod(&p("hl-chr"), FileType::CharacterDevice, 0o600, 10, 200);
    std::fs::hard_link(p("hl-chr"), p("sub/hl-chr-2")).unwrap();
    mknod(&p("hl-fifo"), FileType::Fifo, 0o600, 0, 0);
    std::fs::hard_link(p("hl-fifo"), p("sub/hl-fifo-2")).unwrap();

    // Odd names: as files at the top, as directories (with a file) below.
    std::fs::create_dir(p("odd")).unwrap();
    for (i, n) in odd_names().iter().enumerate() {
        write(&root.join(n), format!("odd name {i}\n").as_bytes());
        let d = p("odd").join(n);
        std::fs::create_dir(&d).unwrap();
        write(&d.join(n), &pseudo_random(i as u64, 100 + i));
        symlink(n, p("odd").join(format!("link-{i}"))).unwrap();
    }

    // Owners (after content, before modes: chown clears setuid/setgid).
    chown(&p("small"), 1234, 70000);
    chown(&p("large"), 3_000_000_000, 4_000_000_000);
    chown(&p("link"), 42, 43);
    chown(&p("null"), 65534, 65534);
    chown(&p("fifo"), 5, 6);
    chown(&p("sub"), 1000, 1000);
    chown(&p("emptydir"), 100_000, 0);
    chown(&p("hl-large"), 777, 888);

    // Modes: setuid, setgid, sticky, nothing at all, everything.
    write(&p("setuid"), b"#!/bin/sh\necho setuid\n");
    chmod(&p("setuid"), 0o4755);
    write(&p("setgid"), &pseudo_random(5, 5000));
    chmod(&p("setgid"), 0o2711);
    write(&p("all-bits"), b"x");
    chmod(&p("all-bits"), 0o7777);
    write(&p("no-perms"), b"secret");
    chmod(&p("no-perms"), 0o000);
    chmod(&p("emptydir"), 0o1777);
    std::fs::create_dir(p("setgid-dir")).unwrap();
    chmod(&p("setgid-dir"), 0o2770);
    chmod(&p("sub/emptydir2"), 0o700);
    chmod(root, 0o751);

    // Xattrs: user., trusted. (with a user-supplied trusted.overlay.*, which
    // the image must escape), security.; binary values; empty values; odd
    // names; shared between inodes; on directories, symlinks, devices,
    // fifos; a large value.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    setx(&p("small"), "user.plain", b"value");
    setx(&p("small"), "user.binary", &all_bytes);
    setx(&p("small"), "user.empty", b"");
    setx(&p("small"), "user.has=equals", b"a=b c");
    setx(&p("small"), "user.sp ace\tand\nnewline", b"x\ny");
    setx(&p("small"), "trusted.t", b"\x00\x01\x02\xff");
    setx(&p("small"), "security.s", b"sec\0ret");
    setx(&p("small"), "trusted.overlay.foo", b"escaped in the image");
    setx(&p("small"), "trusted.overlay.overlay.bar", b"escaped twice");
    setx(&p("small"), "user.overlay.custom", b"u");
    setx(&p("large"), "user.big", &pseudo_random(3, 3000));
    setx(&p("large"), "trusted.overlay.metacopy", b"not the real one");
    setx(&p("sixty-five"), "trusted.overlay.redirect", b"/nowhere");
    setx(&p("setuid"), "security.capability", &capability_value());
    for f in ["empty", "sixty-four", "page", "dup-a", "dup-b", "zeros"] {
        // The same xattr on many inodes: a shared xattr in the image.
        setx(&p(f), "user.shared", b"shared by several inodes");
        setx(&p(f), "trusted.shared", &all_bytes[..100]);
    }
    setx(&p("sub"), "user.dir", b"d");
    setx(&p("sub"), "trusted.dir", b"T\0");
    setx(&p("emptydir"), "security.on-dir", b"S");
    setx(root, "user.root", b"on the root");
    setx(root, "trusted.overlay.rootthing", b"r");
    setx(&p("link"), "trusted.on-symlink", b"L");
    setx(&p("link"), "security.on-symlink", b"\xff");
    setx(&p("fifo"), "trusted.on-fifo", b"F");
    setx(&p("null"), "security.on-dev", b"D");
    setx(&p("blk"), "trusted.overlay.on-blk", b"B");
    setx(&p("hl-large"), "user.hardlinked", b"shared by three names");
    setx(&p("hl-symlink"), "trusted.hl", b"one inode");
    setx(&deep.join("bottom"), "user.deep", b"deep");

    // Times with nanoseconds, last (creating entries changes directories).
    let mut all = Vec::new();
    common::walk(root, &mut |q| all.push(q.to_path_buf()));
    all.push(root.to_path_buf());
    for (i, q) in all.iter().enumerate() {
        let i = i as i64;
        set_mtime(
            q,
            1_600_000_000 + i * 1_000_003,
            (i * 7_919_993) % 1_000_000_000,
        );
    }
    set_mtime(&p("small"), 1_700_000_000, 123_456_789);
    set_mtime(&p("empty"), 0, 0);
    set_mtime(&p("page"), 0, 1);
    set_mtime(&p("large"), 4_102_444_800, 999_999_999); // 2100, beyond 32 bits
    set_mtime(&p("sixty-five"), -1_000_000_000, 250_000_000); // 1938
    set_mtime(&p("link"), 1_234_567_890, 5);
    set_mtime(&p("fifo"), 2_000_000_000, 500_000_000);
    set_mtime(&p("sub"), 1_500_000_000, 999_999_999);

    // The source really has what the comparison is meant to cover.
    let md = |s: &str| std::fs::symlink_metadata(p(s)).unwrap();
    assert_eq!(md("setuid").mode() & 0o7777, 0o4755);
    assert_eq!(md("all-bits").mode() & 0o7777, 0o7777);
    assert_eq!(md("emptydir").mode() & 0o7777, 0o1777);
    assert_eq!(
        (md("large").uid(), md("large").gid()),
        (3_000_000_000, 4_000_000_000)
    );
    assert_eq!(
        (md("sixty-five").mtime(), md("sixty-five").mtime_nsec()),
        (-1_000_000_000, 250_000_000)
    );
    assert_eq!(md("large").mtime(), 4_102_444_800);
    let r = md("chr-max").rdev();
    assert_eq!(
        (rustix::fs::major(r), rustix::fs::minor(r)),
        (4095, 1_048_575)
    );
    assert_eq!(md("hl-large").nlink(), 3);
    assert_eq!(md("hl-symlink").nlink(), 2);
    assert_eq!(
        std::fs::read_link(p("longlink")).unwrap().as_os_str().len(),
        4095
    );
    let x = xattrs(&p("small"));
    for name in [
        "trusted.overlay.foo",
        "trusted.overlay.overlay.bar",
        "security.s",
        "user.binary",
    ] {
        assert!(x.contains_key(name.as_bytes()), "source lacks {name}");
    }
    assert!(xattrs(&p("setuid")).contains_key(&b"security.capability"[..]));
    assert!(xattrs(&p("link")).contains_key(&b"trusted.on-symlink"[..]));
    assert!(xattrs(root).contains_key(&b"trusted.overlay.rootthing"[..]));
}

/// A tiny tree: a few files inline and external, a directory.
fn populate_small(root: &Path) {
    write(&root.join("a/large-1"), &pseudo_random(1, 300_000));
    write(&root.join("a/large-2"), &pseudo_random(2, 5000));
    write(&root.join("b/small"), b"small file\n");
    write(&root.join("b/large-3"), &pseudo_random(3, 70));
    symlink("../a/large-1", root.join("b/link")).unwrap();
}

// ---------------------------------------------------------------------------
// Comparing a mount with the source
// ---------------------------------------------------------------------------

/// All xattrs of `p` (not following symlinks): name → value.
fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut list = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(p, &mut list[..])
        .unwrap_or_else(|e| panic!("llistxattr {}: {e}", p.display()));
    let mut out = BTreeMap::new();
    for name in list[..n].split(|&c| c == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 1 << 16];
        let m =
            rustix::fs::lgetxattr(p, OsStr::from_bytes(name), &mut val[..]).unwrap_or_else(|e| {
                panic!(
                    "lgetxattr {} {}: {e}",
                    p.display(),
                    String::from_utf8_lossy(name)
                )
            });
        val.truncate(m);
        out.insert(name.to_vec(), val);
    }
    out
}

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

/// Every path below `root` (relative, depth first, sorted), root first as "".
fn relative_paths(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::new()];
    common::walk(root, &mut |p| {
        v.push(p.strip_prefix(root).unwrap().to_path_buf())
    });
    v.sort();
    v
}

fn names_in(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// Compare the mount at `mnt` with the directory `src`, every entry:
/// names, type, mode, owner, size, mtime, content, symlink targets, device
/// numbers, xattrs, link counts and hardlink identity. Returns the number of
/// entries compared.
fn compare_tree(src: &Path, mnt: &Path) -> usize {
    compare_tree_with(src, mnt, true)
}

/// [`compare_tree`]; without `hardlinks` (an image made as C `mkcomposefs
/// DIR` makes it) every name of the source is its own inode in the mount,
/// with link count 1.
fn compare_tree_with(src: &Path, mnt: &Path, hardlinks: bool) -> usize {
    let paths = relative_paths(src);
    // Source inode → the mount inode numbers its names have.
    let mut groups: HashMap<(u64, u64), Vec<(PathBuf, u64)>> = HashMap::new();
    let mut mount_dev = None;
    let mut problems = Vec::new();
    for rel in &paths {
        let s = src.join(rel);
        let m = mnt.join(rel);
        let what = format!("/{}", rel.display()).escape_debug().to_string();
        let sm = std::fs::symlink_metadata(&s).unwrap();
        let mm = match std::fs::symlink_metadata(&m) {
            Ok(mm) => mm,
            Err(e) => {
                problems.push(format!("{what}: missing in the mount: {e}"));
                continue;
            }
        };
        let mut check = |field: &str, a: String, b: String| {
            if a != b {
                problems.push(format!("{what}: {field}: source {a}, mount {b}"));
            }
        };
        check(
            "mode",
            format!("{:o}", sm.mode()),
            format!("{:o}", mm.mode()),
        );
        check("uid", sm.uid().to_string(), mm.uid().to_string());
        check("gid", sm.gid().to_string(), mm.gid().to_string());
        check(
            "mtime",
            format!("{}.{:09}", sm.mtime(), sm.mtime_nsec()),
            format!("{}.{:09}", mm.mtime(), mm.mtime_nsec()),
        );
        let ft = sm.file_type();
        // A directory's size is the filesystem's business; its link count
        // is 2 + subdirectories on both sides.
        if !ft.is_dir() {
            check("size", sm.size().to_string(), mm.size().to_string());
        }
        let want_nlink = if hardlinks || ft.is_dir() {
            sm.nlink()
        } else {
            1
        };
        check("nlink", want_nlink.to_string(), mm.nlink().to_string());
        if ft.is_char_device() || ft.is_block_device() {
            check(
                "rdev",
                format!(
                    "{}:{}",
                    rustix::fs::major(sm.rdev()),
                    rustix::fs::minor(sm.rdev())
                ),
                format!(
                    "{}:{}",
                    rustix::fs::major(mm.rdev()),
                    rustix::fs::minor(mm.rdev())
                ),
            );
        }
        if ft.is_symlink() {
            let a = std::fs::read_link(&s).unwrap();
            match std::fs::read_link(&m) {
                Ok(b) if a == b => {}
                other => problems.push(format!("{what}: symlink target {a:?}, mount {other:?}")),
            }
        }
        if ft.is_file() {
            let a = std::fs::read(&s).unwrap();
            match std::fs::read(&m) {
                Ok(b) if a == b => {}
                Ok(b) => problems.push(format!(
                    "{what}: content differs ({} bytes in the source, {} read from the mount)",
                    a.len(),
                    b.len()
                )),
                Err(e) => problems.push(format!("{what}: cannot read from the mount: {e}")),
            }
        }
        if ft.is_dir() {
            let a = names_in(&s);
            let b = names_in(&m);
            if a != b {
                problems.push(format!(
                    "{what}: entries differ: only in source {:?}, only in mount {:?}",
                    a.difference(&b).collect::<Vec<_>>(),
                    b.difference(&a).collect::<Vec<_>>()
                ));
            }
        }
        let (xa, xb) = (xattrs(&s), xattrs(&m));
        if xa != xb {
            problems.push(format!(
                "{what}: xattrs differ:\n    source: {}\n    mount:  {}",
                show_x(&xa),
                show_x(&xb)
            ));
        }
        match mount_dev {
            None => mount_dev = Some(mm.dev()),
            Some(d) => {
                if !ft.is_dir() && mm.dev() != d {
                    problems.push(format!(
                        "{what}: st_dev {} differs from the root's {d}",
                        mm.dev()
                    ));
                }
            }
        }
        if !ft.is_dir() {
            // Without hardlinks, each name is a group of its own.
            let key = if hardlinks {
                (sm.dev(), sm.ino())
            } else {
                (u64::MAX, groups.len() as u64)
            };
            groups.entry(key).or_default().push((rel.clone(), mm.ino()));
        }
    }
    // Hardlink identity: names of one source inode share one st_ino in the
    // mount; names of different source inodes never do.
    let mut owner: HashMap<u64, PathBuf> = HashMap::new();
    for names in groups.values() {
        let first = names[0].1;
        for (rel, ino) in names {
            if *ino != first {
                problems.push(format!(
                    "/{}: hardlinked with /{} in the source, but st_ino {ino} != {first} in the mount",
                    rel.display(),
                    names[0].0.display()
                ));
            }
        }
        if let Some(other) = owner.insert(first, names[0].0.clone()) {
            problems.push(format!(
                "/{} and /{}: different inodes in the source, same st_ino {first} in the mount",
                names[0].0.display(),
                other.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the mount differs from the source in {} ways:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    paths.len()
}

/// `create-image DIR --name NAME [--min-version V]`; returns the image id.
fn create_image(repo: &Repo, dir: &Path, name: &str, version: u32) -> String {
    let v = version.to_string();
    let out = repo.ok(&[
        "create-image",
        dir.to_str().unwrap(),
        "--name",
        name,
        "--min-version",
        &v,
    ]);
    let id = String::from_utf8(out).unwrap().trim().to_string();
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()),
        "create-image printed {id:?}, not an image id"
    );
    id
}

/// The object file an image name resolves to (`images/refs/NAME` followed).
fn image_object(repo: &Repo, name: &str) -> PathBuf {
    let link = repo.path.join("images/refs").join(name);
    let target = std::fs::canonicalize(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    let objects = std::fs::canonicalize(repo.path.join("objects")).unwrap();
    assert!(
        target.starts_with(&objects),
        "images/refs/{name} resolves to {}, outside objects/",
        target.display()
    );
    target
}

/// The stored image is exactly what `mkcomposefs --from-file
/// --min-version V` writes from the image's own dump: `create-image` and
/// `mkcomposefs` agree, and the image has the requested format version.
fn same_image_from_dump(repo: &Repo, name: &str, version: u32) {
    let dump = repo.ok(&["dump", name]);
    let v = version.to_string();
    let out = common::composefs(
        &[
            OsStr::new("mkcomposefs"),
            OsStr::new("--from-file"),
            OsStr::new("--min-version"),
            OsStr::new(&v),
            OsStr::new("-"),
            OsStr::new("-"),
        ],
        Some(&dump),
        &[],
    );
    assert!(
        out.status.success(),
        "mkcomposefs from the dump of {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = std::fs::read(image_object(repo, name)).unwrap();
    assert!(
        out.stdout == stored,
        "{name}: the stored image ({} bytes) is not what mkcomposefs --min-version {version} \
         writes from its dump ({} bytes)",
        stored.len(),
        out.stdout.len()
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The issue's end-to-end test: every file type through create-image and
/// mount --kernel, for format versions 0 and 1 and both repository hashes.
#[test]
fn every_file_type_round_trips_through_a_kernel_mount() {
    require_root_and_kernel();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    populate(&src);

    for (hash, version) in [("sha512", 0), ("sha512", 1), ("sha256", 1)] {
        let repo = Repo::with_args(&["--hash", hash]);
        let name = format!("everything-v{version}");
        create_image(&repo, &src, &name, version);
        same_image_from_dump(&repo, &name, version);
        let mnt = repo.tmp.path().join("mnt");
        let m = Mounted::new(&repo, &name, &mnt);
        let n = compare_tree(&src, &mnt);
        assert!(n > 100, "only {n} entries compared");
        // The mount is read-only.
        let err = std::fs::write(mnt.join("new-file"), b"x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EROFS),
            "writing into the mount: {err}"
        );
        m.umount(&repo);
    }
}

/// The dump of a stored image shows large files as redirects to objects
/// named by the repository's digest of their content, small files inline,
/// and the mount reads the redirect's object.
#[test]
fn large_files_are_served_from_their_objects() {
    require_root_and_kernel();
    let repo = Repo::with_args(&["--hash", "sha256"]);
    let src = repo.scratch().join("src");
    populate_small(&src);
    create_image(&repo, &src, "small", 0);
    let dump = parse_dump(&repo.ok(&["dump", "small"]));
    for rel in ["a/large-1", "a/large-2", "b/large-3"] {
        let l = dump_line(&dump, &format!("/{rel}"));
        let digest = common::fsverity_digest("sha256", &src.join(rel));
        let payload = String::from_utf8(l.payload.clone().expect("a payload")).unwrap();
        assert_eq!(
            payload,
            format!("{}/{}", &digest[..2], &digest[2..]),
            "/{rel}"
        );
        assert_eq!(l.digest.as_deref(), Some(digest.as_str()), "/{rel}");
        assert_eq!(l.content, None, "/{rel} has inline content");
        let obj = repo.path.join("objects").join(&payload);
        assert_eq!(
            std::fs::read(&obj).unwrap(),
            std::fs::read(src.join(rel)).unwrap(),
            "object {payload} for /{rel}"
        );
    }
    let l = dump_line(&dump, "/b/small");
    assert_eq!(l.content.as_deref(), Some(&b"small file\n"[..]));
    assert_eq!(l.payload, None);
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::new(&repo, "small", &mnt);
    compare_tree(&src, &mnt);
    m.umount(&repo);
}

/// A character device 0/0 (an overlay whiteout) in the source directory.
/// What we observe (and what overlayfs documents for "escaped" whiteouts,
/// Documentation/filesystems/overlayfs.rst): the image stores it escaped,
/// so in the composefs mount itself it is an empty regular file carrying
/// `trusted.overlay.whiteout` (and `user.overlay.whiteout`), its directory
/// carries `trusted.overlay.opaque=x` ("holds xwhiteouts", not opaque); the
/// dump shows the original char device 0/0. When the composefs mount is a
/// lower layer of another overlay, the whiteout takes effect: in a merged
/// directory the name is hidden from lookup and readdir, and a same-named
/// entry in a layer below it is hidden too.
#[test]
fn whiteouts_are_escaped_and_take_effect_in_a_stacked_overlay() {
    require_root_and_kernel();
    require_tool("mount");
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    write(&src.join("sub/keep"), b"kept\n");
    mknod(
        &src.join("sub/gone"),
        FileType::CharacterDevice,
        0o644,
        0,
        0,
    );
    mknod(
        &src.join("top-whiteout"),
        FileType::CharacterDevice,
        0o600,
        0,
        0,
    );
    write(&src.join("plain/file"), b"no whiteouts here\n");
    write(
        &src.join("only-here/file"),
        b"only in the composefs layer\n",
    );
    mknod(
        &src.join("only-here/wh"),
        FileType::CharacterDevice,
        0o600,
        0,
        0,
    );

    for version in [0, 1] {
        let name = format!("wh{version}");
        create_image(&repo, &src, &name, version);

        // The dump shows the whiteouts as they were given.
        let dump = parse_dump(&repo.ok(&["dump", &name]));
        let l = dump_line(&dump, "/sub/gone");
        assert_eq!((l.st_mode(), l.rdev), (0o20644, 0), "/sub/gone in the dump");
        let l = dump_line(&dump, "/top-whiteout");
        assert_eq!((l.st_mode(), l.rdev), (0o20600, 0), "/top-whiteout");

        let mnt = repo.tmp.path().join(format!("mnt{version}"));
        let m = Mounted::new(&repo, &name, &mnt);
        // In the composefs mount itself: an escaped whiteout.
        for (wh, perms) in [("sub/gone", 0o644), ("top-whiteout", 0o600)] {
            let md = std::fs::symlink_metadata(mnt.join(wh))
                .unwrap_or_else(|e| panic!("{wh} is not visible in the composefs mount: {e}"));
            assert!(md.file_type().is_file(), "{wh}: {:?}", md.file_type());
            assert_eq!(md.mode() & 0o7777, perms, "{wh}: permissions");
            assert_eq!(md.size(), 0, "{wh}: size");
            let x = xattrs(&mnt.join(wh));
            assert_eq!(
                x.get(&b"trusted.overlay.whiteout"[..]).map(Vec::as_slice),
                Some(&b""[..]),
                "{wh}: xattrs {}",
                show_x(&x)
            );
        }
        let x = xattrs(&mnt.join("sub"));
        assert_eq!(
            x.get(&b"trusted.overlay.opaque"[..]).map(Vec::as_slice),
            Some(&b"x"[..]),
            "/sub: xattrs {}",
            show_x(&x)
        );
        assert_eq!(
            names_in(&mnt.join("sub")),
            ["gone", "keep"].iter().map(OsString::from).collect(),
        );
        // A directory without whiteouts gets no overlay markers.
        let x = xattrs(&mnt.join("plain"));
        assert!(x.is_empty(), "/plain: xattrs {}", show_x(&x));
        assert_eq!(
            std::fs::read(mnt.join("sub/keep")).unwrap(),
            b"kept\n".to_vec()
        );

        // Stacked: the composefs mount above a layer that has the names.
        let below = repo.tmp.path().join(format!("below{version}"));
        write(&below.join("sub/gone"), b"must be hidden\n");
        write(&below.join("sub/other"), b"from below\n");
        let stacked = repo.tmp.path().join(format!("stacked{version}"));
        std::fs::create_dir_all(&stacked).unwrap();
        let opts = format!("lowerdir={}:{}", mnt.display(), below.display());
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&stacked)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stacking an overlay on the composefs mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let guard = PlainMount(stacked.clone());
        assert_eq!(
            names_in(&stacked.join("sub")),
            ["keep", "other"].iter().map(OsString::from).collect(),
            "the merged directory in the stacked overlay"
        );
        assert_eq!(
            names_in(&stacked),
            ["only-here", "plain", "sub"]
                .iter()
                .map(OsString::from)
                .collect(),
            "the merged root directory in the stacked overlay"
        );
        // A directory only the composefs layer has (not merged): the
        // whiteout hides nothing, and lookup does not find it. Observed on
        // 6.18: readdir of such a directory still lists the name (overlayfs
        // passes readdir of a non-merged directory through), so only
        // lookup is asserted.
        let err = std::fs::symlink_metadata(stacked.join("only-here/wh")).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOENT),
            "only-here/wh: {err}"
        );
        eprintln!(
            "readdir of a non-merged directory holding a whiteout in the stacked overlay: {:?}",
            names_in(&stacked.join("only-here"))
        );
        let err = std::fs::symlink_metadata(stacked.join("sub/gone")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "sub/gone: {err}");
        let err = std::fs::symlink_metadata(stacked.join("top-whiteout")).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOENT),
            "top-whiteout: {err}"
        );
        assert_eq!(
            std::fs::read(stacked.join("sub/other")).unwrap(),
            b"from below\n".to_vec()
        );
        drop(guard);
        assert!(!is_mountpoint(&stacked));
        m.umount(&repo);
    }
}

/// gc keeps what a stored image needs (the mount still reads every file);
/// deleting an object an image redirects to makes reading that file fail
/// with an error, never with wrong bytes.
#[test]
fn image_survives_gc_and_a_missing_object_is_an_error() {
    require_root_and_kernel();
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    populate_small(&src);
    create_image(&repo, &src, "img", 1);
    let before = repo.objects();
    let out = repo.ok(&["gc"]);
    assert_eq!(
        repo.objects(),
        before,
        "gc changed the objects of a referenced image:\n{}",
        String::from_utf8_lossy(&out)
    );
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::new(&repo, "img", &mnt);
    compare_tree(&src, &mnt);
    m.umount(&repo);

    // Delete the object behind /a/large-1, then mount afresh (nothing
    // cached) and read it.
    let dump = parse_dump(&repo.ok(&["dump", "img"]));
    let payload = String::from_utf8(
        dump_line(&dump, "/a/large-1")
            .payload
            .clone()
            .expect("an external file"),
    )
    .unwrap();
    std::fs::remove_file(repo.path.join("objects").join(&payload)).unwrap();
    let m = Mounted::new(&repo, "img", &mnt);
    // Metadata comes from the image and is still there.
    let md = std::fs::symlink_metadata(mnt.join("a/large-1")).unwrap();
    assert_eq!(md.len(), 300_000);
    let res = std::fs::read(mnt.join("a/large-1"));
    match res {
        Err(e) => {
            // Observed on 6.18: open() fails with ENOENT, and the kernel
            // logs "overlayfs: lazy lowerdata lookup failed (a/large-1,
            // err=-2)": the data-only layer is looked up at first open.
            // EIO is accepted too (what a reader might expect).
            eprintln!(
                "reading a file whose object is gone: {e} ({:?})",
                e.raw_os_error()
            );
            assert!(
                matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOENT)),
                "unexpected error reading a file whose object is gone: {e}"
            );
        }
        Ok(bytes) => panic!(
            "reading a file whose object was deleted returned {} bytes instead of an error",
            bytes.len()
        ),
    }
    // The other files are unaffected.
    assert_eq!(
        std::fs::read(mnt.join("a/large-2")).unwrap(),
        std::fs::read(src.join("a/large-2")).unwrap()
    );
    assert_eq!(
        std::fs::read(mnt.join("b/small")).unwrap(),
        b"small file\n".to_vec()
    );
    m.umount(&repo);
}

/// `fsck.erofs` (erofs-utils) accepts the image object a ref points to,
/// for both format versions, and decodes every file in it.
#[test]
fn fsck_erofs_accepts_the_stored_image() {
    require_root_and_kernel();
    require_tool("fsck.erofs");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    populate(&src);
    let repo = Repo::new();
    for version in [0, 1] {
        let name = format!("img{version}");
        create_image(&repo, &src, &name, version);
        let obj = image_object(&repo, &name);
        for args in [&[][..], &["--extract"][..]] {
            let out = Command::new("fsck.erofs")
                .args(args)
                .arg(&obj)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "fsck.erofs {args:?} {} (version {version}) failed:\n{}{}",
                obj.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `umount` unmounts; unmounting again, or a directory that was never
/// mounted, fails with an error naming the mountpoint, not a panic.
#[test]
fn umount_works_and_a_second_umount_fails_cleanly() {
    require_root_and_kernel();
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    populate_small(&src);
    create_image(&repo, &src, "img", 0);
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::new(&repo, "img", &mnt);
    assert!(is_mountpoint(&mnt));
    m.umount(&repo);
    assert!(
        names_in(&mnt).is_empty(),
        "the mountpoint is not empty after umount"
    );
    let err = repo.fail(&["umount", mnt.to_str().unwrap()]);
    assert_mentions(&err, &["mnt"], "second umount");
    let never = repo.tmp.path().join("never-mounted");
    std::fs::create_dir(&never).unwrap();
    let err = repo.fail(&["umount", never.to_str().unwrap()]);
    assert_mentions(&err, &["never-mounted"], "umount of an unmounted directory");
    let err = repo.fail(&["umount", "/nonexistent/mountpoint"]);
    assert_mentions(
        &err,
        &["/nonexistent/mountpoint"],
        "umount of a missing path",
    );

    // Mounting onto a missing directory fails cleanly too.
    let out = repo.run(
        &["mount", "--kernel", "img", "/nonexistent/mountpoint"],
        None,
    );
    assert_no_panic("mount onto a missing directory", &out);
    assert!(!out.status.success());
}

/// Two mounts of one image at once, and a mount (by image id) of a second
/// image that shares objects with the first, are independent.
#[test]
fn two_mounts_at_once() {
    require_root_and_kernel();
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    populate_small(&src);
    create_image(&repo, &src, "one", 0);
    let src2 = repo.scratch().join("src2");
    populate_small(&src2);
    write(&src2.join("extra"), &pseudo_random(99, 1000));
    // The second one is mounted by its image id rather than its ref.
    let id_two = create_image(&repo, &src2, "two", 1);
    let (m1, m2, m3) = (
        repo.tmp.path().join("m1"),
        repo.tmp.path().join("m2"),
        repo.tmp.path().join("m3"),
    );
    let a = Mounted::new(&repo, "one", &m1);
    let b = Mounted::new(&repo, "one", &m2);
    let c = Mounted::new(&repo, &id_two, &m3);
    compare_tree(&src, &m1);
    compare_tree(&src, &m2);
    compare_tree(&src2, &m3);
    b.umount(&repo);
    // The others are still there.
    compare_tree(&src, &m1);
    compare_tree(&src2, &m3);
    a.umount(&repo);
    c.umount(&repo);
}

/// The comparison itself can fail: change the source after the import
/// (a time, an xattr, content of the same size, a new name) and every
/// change is reported.
#[test]
fn the_comparison_notices_differences() {
    require_root_and_kernel();
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    populate_small(&src);
    create_image(&repo, &src, "img", 0);
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::new(&repo, "img", &mnt);
    compare_tree(&src, &mnt);
    set_mtime(&src.join("b/small"), 1, 2);
    setx(&src.join("a/large-2"), "user.added", b"later");
    write(&src.join("b/large-3"), &pseudo_random(33, 70));
    write(&src.join("a/new"), b"new");
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compare_tree(&src, &mnt)));
    let msg = match res {
        Ok(n) => panic!("compare_tree found no difference in {n} entries"),
        Err(e) => e
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "?".to_string()),
    };
    for needle in [
        "/b/small: mtime",
        "/a/large-2: xattrs differ",
        "/b/large-3: content differs",
        "/a/new: missing in the mount",
        "/a: entries differ",
    ] {
        assert!(msg.contains(needle), "{needle:?} not reported in:\n{msg}");
    }
    m.umount(&repo);
}

/// `mkcomposefs --digest-store STORE SRC IMAGE` makes a pair the kernel
/// mounts the way composefs documents it, without this tool: the image
/// with mount(8) as EROFS, then overlayfs with the store as the data-only
/// lower layer (`lowerdir=EROFS::STORE`); the mount matches the source.
#[test]
fn mkcomposefs_digest_store_mounts_with_plain_mount() {
    require_root_and_kernel();
    require_tool("mount");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    populate(&src);
    let store = work.path().join("store");
    let img = work.path().join("image.cfs");
    for version in ["0", "1"] {
        let out = common::composefs(
            &[
                OsStr::new("mkcomposefs"),
                OsStr::new("--min-version"),
                OsStr::new(version),
                OsStr::new("--digest-store"),
                store.as_os_str(),
                src.as_os_str(),
                img.as_os_str(),
            ],
            None,
            &[],
        );
        assert!(
            out.status.success(),
            "mkcomposefs --digest-store failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let erofs = work.path().join(format!("erofs{version}"));
        let mnt = work.path().join(format!("mnt{version}"));
        std::fs::create_dir_all(&erofs).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let st = Command::new("mount")
            .args(["-t", "erofs", "-o", "ro,loop"])
            .arg(&img)
            .arg(&erofs)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "mount -t erofs failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let g1 = PlainMount(erofs.clone());
        let opts = format!(
            "ro,metacopy=on,redirect_dir=on,lowerdir={}::{}",
            erofs.display(),
            store.display()
        );
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "mount -t overlay ({opts}) failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let g2 = PlainMount(mnt.clone());
        // As C mkcomposefs 1.0.8: every path its own inode.
        compare_tree_with(&src, &mnt, false);
        drop(g2);
        drop(g1);
        assert!(!is_mountpoint(&mnt) && !is_mountpoint(&erofs));
    }
}

/// The loop-device path (what kernels without file-backed EROFS take) mounts
/// the same image with the same content; the loop device goes away with the
/// mount (autoclear).
#[test]
fn loop_device_mount_serves_the_same_content() {
    use composefs::fsverity::Algorithm;
    use composefs::importdir::{ContentSink, tree_from_directory};
    use composefs::mount::{MountOptions, mount_image, unmount};
    use composefs::repository::Repository;
    use composefs::tree::dirsource::DirOptions;

    require_root_and_kernel();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write(&src.join("small"), b"tiny\n");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write(&src.join("big"), &big);
    let repo = Repository::init(&tmp.path().join("repo"), Algorithm::Sha256).unwrap();
    let (tree, _) = tree_from_directory(
        &src,
        &DirOptions::default(),
        &ContentSink::Repository(&repo),
        2,
    )
    .unwrap();
    let mut image = Vec::new();
    composefs::erofs::writer::write_image(
        &tree,
        composefs::erofs::writer::FormatVersion::V0,
        &mut image,
    )
    .unwrap();
    let id = repo.commit_image(&image[..], Some("img")).unwrap();
    let (_, file) = repo.open_image(&id.to_hex()).unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let objects = std::fs::canonicalize(tmp.path().join("repo/objects")).unwrap();
    mount_image(
        &file,
        &objects,
        &mnt,
        MountOptions {
            require_verity: false,
            loop_device: true,
        },
    )
    .unwrap();
    let read = (|| {
        Ok::<_, std::io::Error>((
            std::fs::read(mnt.join("small"))?,
            std::fs::read(mnt.join("big"))?,
        ))
    })();
    unmount(&mnt).unwrap();
    let (small, got_big) = read.expect("reading through the loop-backed mount");
    assert_eq!(small, b"tiny\n");
    assert!(
        got_big == big,
        "big file differs through the loop-backed mount"
    );
    assert!(!is_mountpoint(&mnt), "still mounted after unmount");
    let loops = Command::new("losetup")
        .arg("-j")
        .arg(repo.object_path(&id))
        .output()
        .unwrap();
    assert!(
        loops.stdout.is_empty(),
        "loop device left behind: {}",
        String::from_utf8_lossy(&loops.stdout)
    );
}
