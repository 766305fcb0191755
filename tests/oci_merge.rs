//! `oci::merge`: tar layers stored as splitstreams, merged into one tree.
//!
//! Layers come from GNU tar (real archives of real directories: PAX and GNU
//! formats, xattrs, devices, hardlinks, long names) and from a small raw
//! tar writer below (whiteouts, odd paths, PAX and base-256 fields, broken
//! input), are stored with `tarsplit::split`, and the merged tree is
//! checked through the `Tree` trait.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use composefs::fsverity::{Algorithm, ObjectId};
use composefs::oci::merge::merge;
use composefs::repository::Repository;
use composefs::splitstream::content_type;
use composefs::tarsplit;
use composefs::tree::{FileData, Ino, Inode, Kind, MemTree, Tree};

// ---------------------------------------------------------------------------
// Repository and merge helpers
// ---------------------------------------------------------------------------

struct Repo {
    _dir: tempfile::TempDir,
    repo: Repository,
}

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(&dir.path().join("repo"), Algorithm::Sha256).unwrap();
    Repo { _dir: dir, repo }
}

impl Repo {
    /// Store an uncompressed tar as an OCI layer splitstream.
    fn store(&self, tar: &[u8]) -> ObjectId {
        let mut w = self.repo.stream_writer(content_type::OCI_LAYER).unwrap();
        tarsplit::split(tar, &mut w, |_| {}).unwrap();
        w.finish().unwrap()
    }

    fn merge(&self, tars: &[Vec<u8>]) -> anyhow::Result<MemTree> {
        let ids: Vec<ObjectId> = tars.iter().map(|t| self.store(t)).collect();
        merge(&self.repo, &ids)
    }

    fn object(&self, id: &ObjectId) -> Vec<u8> {
        let mut v = Vec::new();
        self.repo
            .open_object(id)
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    /// A file's bytes, inline or from its object.
    fn content(&self, inode: &Inode) -> Vec<u8> {
        match &inode.kind {
            Kind::Regular(FileData::Inline(v)) => v.clone(),
            Kind::Regular(FileData::External {
                size,
                digest: Some(id),
                redirect,
            }) => {
                assert_eq!(redirect.as_deref(), Some(id.object_path().as_bytes()));
                let v = self.object(id);
                assert_eq!(v.len() as u64, *size);
                v
            }
            k => panic!("not a stored regular file: {k:?}"),
        }
    }
}

fn merge_ok(tars: &[Vec<u8>]) -> (Repo, MemTree) {
    let r = repo();
    let t = r.merge(tars).unwrap();
    (r, t)
}

fn merge_err(tars: &[Vec<u8>]) -> String {
    let r = repo();
    match r.merge(tars) {
        Ok(t) => panic!("merge succeeded: {:?}", listing(&t)),
        Err(e) => format!("{e:#}"),
    }
}

fn ino(t: &MemTree, path: &str) -> Ino {
    t.resolve_path(path.as_bytes())
        .unwrap()
        .unwrap_or_else(|| panic!("{path} missing; tree: {:?}", listing(t)))
}

fn node(t: &MemTree, path: &str) -> Arc<Inode> {
    t.inode(ino(t, path)).unwrap()
}

fn missing(t: &MemTree, path: &str) -> bool {
    t.resolve_path(path.as_bytes()).unwrap().is_none()
}

/// Every path in the tree, directories with a trailing `/`, sorted.
fn listing(t: &MemTree) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(t.root(), String::new())];
    while let Some((d, p)) = stack.pop() {
        for e in t.readdir(d).unwrap().iter() {
            let path = format!("{p}/{}", String::from_utf8_lossy(&e.name));
            if t.inode(e.ino).unwrap().kind.is_dir() {
                out.push(format!("{path}/"));
                stack.push((e.ino, path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn inline(data: &[u8]) -> Kind {
    Kind::Regular(FileData::Inline(data.to_vec()))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

// ---------------------------------------------------------------------------
// A raw tar writer
// ---------------------------------------------------------------------------

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}\0", w = field.len() - 1);
    assert_eq!(s.len(), field.len(), "{v} does not fit an octal field");
    field.copy_from_slice(s.as_bytes());
}

/// A ustar header; `f` may change any field before the checksum is set.
fn header(name: &[u8], typ: u8, size: u64, f: impl FnOnce(&mut [u8; 512])) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], if typ == b'5' { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = typ;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    f(&mut h);
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = [key, b"=", value, b"\n"].concat();
    let mut n = body.len() + 2;
    while format!("{n} ").len() + body.len() != n {
        n += 1;
    }
    [format!("{n} ").into_bytes(), body].concat()
}

#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn new() -> Self {
        Self::default()
    }

    /// A header and its data, padded.
    fn raw(&mut self, h: [u8; 512], data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn entry(
        &mut self,
        name: &str,
        typ: u8,
        data: &[u8],
        f: impl FnOnce(&mut [u8; 512]),
    ) -> &mut Self {
        let h = header(name.as_bytes(), typ, data.len() as u64, f);
        self.raw(h, data)
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, b'0', data, |_| {})
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, b'5', b"", |_| {})
    }

    fn dir_mode(&mut self, name: &str, mode: u64) -> &mut Self {
        self.entry(name, b'5', b"", |h| octal(&mut h[100..108], mode))
    }

    fn link(&mut self, typ: u8, name: &str, target: &str) -> &mut Self {
        self.entry(name, typ, b"", |h| {
            h[157..157 + target.len()].copy_from_slice(target.as_bytes())
        })
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(b'2', name, target)
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(b'1', name, target)
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let h = header(b"PaxHeaders/x", b'x', data.len() as u64, |_| {});
        self.raw(h, &data)
    }

    /// A PAX global header (ignored by the merge).
    fn global(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let h = header(b"GlobalHead", b'g', data.len() as u64, |_| {});
        self.raw(h, &data)
    }

    /// A GNU long name (`L`) or long link (`K`) record.
    fn gnu_long(&mut self, typ: u8, value: &[u8]) -> &mut Self {
        let data = [value, b"\0"].concat();
        let h = header(b"././@LongLink", typ, data.len() as u64, |_| {});
        self.raw(h, &data)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

/// `tar ARGS -C dir -cf - .` with GNU tar.
fn gnu_tar(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .args(args)
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .expect("GNU tar is needed");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn setfattr(path: &Path, name: &str, value: &str) -> bool {
    Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn mknod(path: &Path, kind: &str, major: u32, minor: u32) {
    let st = Command::new("mknod")
        .arg(path)
        .args([kind, &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

// ---------------------------------------------------------------------------
// Real archives
// ---------------------------------------------------------------------------

/// Compare an inode of the tree with the file on disk it came from
/// (`ns`: the archive kept nanoseconds).
fn same_as_disk(r: &Repo, t: &MemTree, root: &Path, rel: &str, ns: bool) {
    let p = root.join(rel);
    let md = std::fs::symlink_metadata(&p).unwrap();
    let n = node(t, rel);
    assert_eq!(n.st_mode(), md.mode(), "{rel}: mode");
    assert_eq!(n.stat.uid, md.uid(), "{rel}: uid");
    assert_eq!(n.stat.gid, md.gid(), "{rel}: gid");
    assert_eq!(n.stat.mtime.sec, md.mtime(), "{rel}: mtime");
    let nsec = if ns { md.mtime_nsec() as u32 } else { 0 };
    assert_eq!(n.stat.mtime.nsec, nsec, "{rel}: mtime ns");
    let ft = md.file_type();
    if ft.is_file() {
        assert_eq!(r.content(&n), std::fs::read(&p).unwrap(), "{rel}: content");
        let external = matches!(n.kind, Kind::Regular(FileData::External { .. }));
        assert_eq!(external, md.len() > tarsplit::INLINE_MAX, "{rel}: storage");
    } else if ft.is_symlink() {
        let target = std::fs::read_link(&p).unwrap();
        assert_eq!(
            n.kind,
            Kind::Symlink(target.into_os_string().into_encoded_bytes())
        );
    } else if ft.is_dir() {
        assert!(n.kind.is_dir(), "{rel}: not a directory");
    }
}

#[test]
fn gnu_tar_pax_layer() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("root");
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("small"), b"small file").unwrap();
    std::fs::write(root.join("edge64"), [b'e'; 64]).unwrap();
    std::fs::write(root.join("edge65"), [b'f'; 65]).unwrap();
    let big: Vec<u8> = (0..200_003u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("dir/sub/big"), &big).unwrap();
    symlink("dir/sub/big", root.join("link")).unwrap();
    std::fs::write(root.join("hl1"), [b'h'; 1000]).unwrap();
    std::fs::hard_link(root.join("hl1"), root.join("dir/hl2")).unwrap();
    std::fs::write(root.join("tiny1"), b"t").unwrap();
    std::fs::hard_link(root.join("tiny1"), root.join("tiny2")).unwrap();
    std::fs::write(root.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir(root.join("sticky")).unwrap();
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o3777)).unwrap();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    std::fs::create_dir(root.join("d".repeat(120))).unwrap();
    std::fs::write(root.join(&long), b"long name").unwrap();
    // Nanosecond mtime.
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(root.join("small"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let xattrs = setfattr(&root.join("small"), "user.greeting", "hello")
        && setfattr(&root.join("small"), "user.another", "0x00ff01")
        && setfattr(&root.join("dir"), "user.on-dir", "yes");
    if is_root() {
        mknod(&root.join("chr"), "c", 1, 3);
        mknod(&root.join("blk"), "b", 259, 300);
        std::os::unix::fs::chown(root.join("small"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link"), Some(42), Some(43)).unwrap();
    }
    assert!(
        Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();

    let tar = gnu_tar(&root, &["--format=pax", "--xattrs", "--xattrs-include=*"]);
    let (r, t) = merge_ok(&[tar]);

    for rel in [
        "empty",
        "small",
        "edge64",
        "edge65",
        "dir",
        "dir/sub",
        "dir/sub/big",
        "link",
        "hl1",
        "dir/hl2",
        "tiny1",
        "suid",
        "sticky",
        &long,
        "fifo",
    ] {
        same_as_disk(&r, &t, &root, rel, true);
    }
    // The `./` entry sets the root's metadata.
    let rootmd = std::fs::metadata(&root).unwrap();
    let rt = t.inode(t.root()).unwrap();
    assert_eq!(rt.st_mode(), rootmd.mode());
    assert_eq!(rt.stat.mtime.sec, rootmd.mtime());

    assert_eq!(node(&t, "suid").stat.perms, 0o4755);
    assert_eq!(node(&t, "sticky").stat.perms, 0o3777);
    assert_eq!(
        node(&t, "small").stat.mtime,
        composefs::tree::Timespec {
            sec: 1_700_000_000,
            nsec: 123_456_789
        }
    );
    assert_eq!(node(&t, "fifo").kind, Kind::Fifo);
    assert_eq!(node(&t, "edge64").kind, inline(&[b'e'; 64]));
    match &node(&t, "dir/sub/big").kind {
        Kind::Regular(FileData::External { size, digest, .. }) => {
            assert_eq!(*size, big.len() as u64);
            assert_eq!(r.object(digest.as_ref().unwrap()), big);
        }
        k => panic!("big file is {k:?}"),
    }
    // Hardlinks: one inode, external or inline.
    assert_eq!(ino(&t, "hl1"), ino(&t, "dir/hl2"));
    assert_eq!(ino(&t, "tiny1"), ino(&t, "tiny2"));
    assert_ne!(ino(&t, "hl1"), ino(&t, "tiny1"));
    let counts = composefs::tree::link_counts(&t).unwrap();
    assert_eq!(counts[&ino(&t, "hl1")], 2);
    if xattrs {
        let small = node(&t, "small");
        assert_eq!(small.xattr(b"user.greeting"), Some(&b"hello"[..]));
        assert_eq!(small.xattr(b"user.another"), Some(&[0u8, 0xff, 1][..]));
        let names: Vec<_> = small.xattrs.iter().map(|(n, _)| n.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(node(&t, "dir").xattr(b"user.on-dir"), Some(&b"yes"[..]));
    } else {
        eprintln!("user xattrs unsupported here: xattr checks skipped");
    }
    if is_root() {
        same_as_disk(&r, &t, &root, "chr", true);
        same_as_disk(&r, &t, &root, "blk", true);
        assert_eq!(
            node(&t, "chr").kind,
            Kind::CharDevice {
                rdev: rustix::fs::makedev(1, 3)
            }
        );
        assert_eq!(
            node(&t, "blk").kind,
            Kind::BlockDevice {
                rdev: rustix::fs::makedev(259, 300)
            }
        );
        assert_eq!(
            (node(&t, "small").stat.uid, node(&t, "small").stat.gid),
            (1234, 5678)
        );
        assert_eq!(
            (node(&t, "link").stat.uid, node(&t, "link").stat.gid),
            (42, 43)
        );
    } else {
        eprintln!("not root: device and ownership checks skipped");
    }
    // Nothing that is not on disk.
    let mut expected: Vec<String> = walk(&root);
    expected.sort();
    assert_eq!(listing(&t), expected);
}

/// The paths under `root` as `listing` shows them.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("/{rel}/"));
                stack.push(e.path());
            } else {
                out.push(format!("/{rel}"));
            }
        }
    }
    out
}

#[test]
fn gnu_tar_gnu_format_long_names_and_links() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("root");
    let deep = format!("{}/{}", "a".repeat(110), "b".repeat(120));
    std::fs::create_dir_all(root.join(&deep)).unwrap();
    let file = format!("{deep}/{}", "c".repeat(200));
    std::fs::write(root.join(&file), [b'z'; 3000]).unwrap();
    // A long hardlink target and a long symlink target (GNU `K`).
    std::fs::hard_link(root.join(&file), root.join("hard")).unwrap();
    symlink(&file, root.join("soft")).unwrap();
    let tar = gnu_tar(&root, &["--format=gnu"]);
    assert!(
        tar.windows(13).any(|w| w == b"././@LongLink"),
        "GNU tar wrote no long-name records"
    );
    let (r, t) = merge_ok(&[tar]);
    same_as_disk(&r, &t, &root, &file, false);
    same_as_disk(&r, &t, &root, "soft", false);
    assert_eq!(ino(&t, "hard"), ino(&t, &file));
    assert_eq!(
        node(&t, "soft").kind,
        Kind::Symlink(file.clone().into_bytes())
    );
    assert_eq!(r.content(&node(&t, "hard")), vec![b'z'; 3000]);
}

#[test]
fn gnu_tar_ustar_prefix() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("root");
    let dir = format!("{}/{}", "x".repeat(70), "y".repeat(60));
    std::fs::create_dir_all(root.join(&dir)).unwrap();
    let file = format!("{dir}/{}", "z".repeat(90));
    std::fs::write(root.join(&file), b"ustar").unwrap();
    let tar = gnu_tar(&root, &["--format=ustar"]);
    let (r, t) = merge_ok(&[tar]);
    same_as_disk(&r, &t, &root, &file, false);
    same_as_disk(&r, &t, &root, &dir, false);
}

#[test]
fn gnu_tar_layers_with_whiteouts() {
    // Layers as a container engine would export them: overlay whiteouts
    // as `.wh.` files, an opaque directory as `.wh..wh..opq`.
    let src = tempfile::tempdir().unwrap();
    let l1 = src.path().join("l1");
    std::fs::create_dir_all(l1.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(l1.join("var/cache/pkg")).unwrap();
    std::fs::write(l1.join("etc/passwd"), b"root:x:0:0\n").unwrap();
    std::fs::write(l1.join("etc/conf.d/a"), b"a").unwrap();
    std::fs::write(l1.join("var/cache/pkg/big"), [b'p'; 10_000]).unwrap();
    std::fs::write(l1.join("var/cache/index"), b"i").unwrap();
    let l2 = src.path().join("l2");
    std::fs::create_dir_all(l2.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(l2.join("var")).unwrap();
    std::fs::write(l2.join("etc/.wh.passwd"), b"").unwrap();
    std::fs::write(l2.join("etc/conf.d/.wh..wh..opq"), b"").unwrap();
    std::fs::write(l2.join("etc/conf.d/b"), b"b").unwrap();
    std::fs::write(l2.join("var/.wh.cache"), b"").unwrap();
    let (_r, t) = merge_ok(&[gnu_tar(&l1, &[]), gnu_tar(&l2, &["--format=pax"])]);
    assert_eq!(
        listing(&t),
        ["/etc/", "/etc/conf.d/", "/etc/conf.d/b", "/var/"]
    );
}

// ---------------------------------------------------------------------------
// Content, metadata, names
// ---------------------------------------------------------------------------

#[test]
fn inline_and_external_files() {
    let sizes = [0usize, 1, 63, 64, 65, 511, 512, 513, 5000];
    let mut tar = Tar::new();
    for s in sizes {
        let data: Vec<u8> = (0..s).map(|i| (i % 256) as u8).collect();
        tar.file(&format!("f{s}"), &data);
    }
    let (r, t) = merge_ok(&[tar.finish()]);
    for s in sizes {
        let n = node(&t, &format!("f{s}"));
        let data: Vec<u8> = (0..s).map(|i| (i % 256) as u8).collect();
        assert_eq!(n.size(), s as u64);
        assert_eq!(r.content(&n), data);
        if s as u64 <= tarsplit::INLINE_MAX {
            assert_eq!(n.kind, inline(&data));
        } else {
            assert!(matches!(n.kind, Kind::Regular(FileData::External { .. })));
        }
        assert_eq!(n.stat.perms, 0o644);
        assert_eq!(n.stat.mtime.sec, 1_600_000_000);
    }
}

#[test]
fn headers_straddling_stream_pieces() {
    // An odd-sized object leaves the next inline chunk unaligned, so its
    // 64 KiB pieces cut headers and PAX records in two.
    let mut tar = Tar::new();
    tar.file("odd", &[b'o'; 1001]);
    for i in 0..400 {
        tar.file(&format!("many/f{i:03}"), format!("content {i}").as_bytes());
    }
    let huge = vec![b'v'; 60_000];
    tar.pax(&[(b"SCHILY.xattr.user.big", &huge)]);
    tar.file("xattr", b"x");
    tar.file("last", &[b'l'; 100]);
    let (r, t) = merge_ok(&[tar.finish()]);
    for i in 0..400 {
        assert_eq!(
            node(&t, &format!("many/f{i:03}")).kind,
            inline(format!("content {i}").as_bytes())
        );
    }
    assert_eq!(node(&t, "xattr").xattr(b"user.big"), Some(&huge[..]));
    assert_eq!(r.content(&node(&t, "last")), vec![b'l'; 100]);
    assert_eq!(r.content(&node(&t, "odd")), vec![b'o'; 1001]);
}

#[test]
fn pax_and_base256_metadata() {
    let long_path = format!("{}/{}", "p".repeat(150), "q".repeat(200));
    let mut tar = Tar::new();
    tar.global(&[(b"path", b"global-path"), (b"uid", b"99")]);
    tar.pax(&[
        (b"path", long_path.as_bytes()),
        (b"uid", b"3000000"),
        (b"gid", b"4294967295"),
        (b"mtime", b"1234567890.000000042"),
        (b"uname", b"someone"),
        (b"atime", b"1.5"),
        (b"SCHILY.xattr.user.z", b"last"),
        (b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\0\0"),
        (b"LIBARCHIVE.xattr.user.with%20space%3D", b"AAEC"),
        (b"LIBARCHIVE.xattr.user.unpadded", b"aGk"),
        (b"SCHILY.xattr.user.dup", b"first"),
        (b"LIBARCHIVE.xattr.user.dup", b"c2Vjb25k"),
    ]);
    tar.file("short-name-overridden", b"pax");
    // Base-256 uid, negative base-256 mtime.
    tar.entry("b256", b'0', b"b", |h| {
        h[108..116].copy_from_slice(&[0x80, 0, 0, 0, 0, 0x10, 0, 0]);
        h[136..148].copy_from_slice(&[0xff; 12]);
    });
    // Negative PAX time.
    tar.pax(&[(b"mtime", b"-10.25")]);
    tar.file("before-epoch", b"");
    // ustar prefix field.
    tar.entry("name-part", b'0', b"u", |h| {
        h[345..357].copy_from_slice(b"prefix/part1")
    });
    let (_r, t) = merge_ok(&[tar.finish()]);
    let n = node(&t, &long_path);
    assert_eq!(n.kind, inline(b"pax"));
    assert_eq!((n.stat.uid, n.stat.gid), (3_000_000, u32::MAX));
    assert_eq!(n.stat.mtime.sec, 1_234_567_890);
    assert_eq!(n.stat.mtime.nsec, 42);
    let names: Vec<&[u8]> = n.xattrs.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"security.capability"[..],
            b"user.dup",
            b"user.unpadded",
            b"user.with space=",
            b"user.z"
        ]
    );
    assert_eq!(n.xattr(b"user.with space="), Some(&[0u8, 1, 2][..]));
    assert_eq!(n.xattr(b"user.unpadded"), Some(&b"hi"[..]));
    assert_eq!(n.xattr(b"user.dup"), Some(&b"second"[..]));
    assert_eq!(
        n.xattr(b"security.capability"),
        Some(&b"\x01\x00\x00\x02\0\0"[..])
    );
    assert!(missing(&t, "short-name-overridden"));
    let b = node(&t, "b256");
    assert_eq!(b.stat.uid, 0x100000);
    assert_eq!(b.stat.mtime.sec, -1);
    assert_eq!(
        node(&t, "before-epoch").stat.mtime,
        composefs::tree::Timespec {
            sec: -11,
            nsec: 750_000_000
        }
    );
    assert_eq!(node(&t, "prefix/part1/name-part").kind, inline(b"u"));
    // PAX records apply to the next entry only; global ones not at all.
    assert!(node(&t, "b256").xattrs.is_empty());
    assert!(missing(&t, "global-path"));
    assert_eq!(node(&t, "prefix/part1/name-part").stat.uid, 0);
}

#[test]
fn gnu_long_records() {
    let name = format!("{}/{}", "n".repeat(100), "m".repeat(180));
    let target = "t".repeat(300);
    let mut tar = Tar::new();
    tar.gnu_long(b'L', name.as_bytes());
    tar.file("truncated-name", &[b'g'; 70]);
    tar.gnu_long(b'K', target.as_bytes());
    tar.gnu_long(b'L', b"sym");
    tar.symlink("x", "short");
    tar.gnu_long(b'K', name.as_bytes());
    tar.hardlink("hard", "ignored");
    let (r, t) = merge_ok(&[tar.finish()]);
    assert_eq!(r.content(&node(&t, &name)), vec![b'g'; 70]);
    assert_eq!(node(&t, "sym").kind, Kind::Symlink(target.into_bytes()));
    assert_eq!(ino(&t, "hard"), ino(&t, &name));
    assert!(missing(&t, "x") && missing(&t, "truncated-name"));
}

#[test]
fn devices_fifos_and_modes() {
    let mut tar = Tar::new();
    tar.entry("dev/null", b'3', b"", |h| {
        octal(&mut h[100..108], 0o666);
        octal(&mut h[329..337], 1);
        octal(&mut h[337..345], 3);
    });
    tar.entry("dev/sda1", b'4', b"", |h| {
        octal(&mut h[100..108], 0o660);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 6);
        octal(&mut h[329..337], 8);
        octal(&mut h[337..345], 1);
    });
    tar.entry("run/fifo", b'6', b"", |h| octal(&mut h[100..108], 0o600));
    // Type bits in the mode field are ignored, setuid/setgid/sticky kept.
    tar.entry("bin/su", b'0', b"su", |h| octal(&mut h[100..108], 0o104755));
    tar.entry("tmp", b'5', b"", |h| octal(&mut h[100..108], 0o1777));
    tar.entry("owned", b'7', b"contiguous", |h| {
        octal(&mut h[108..116], 1000);
        octal(&mut h[116..124], 100);
    });
    let (_r, t) = merge_ok(&[tar.finish()]);
    let null = node(&t, "dev/null");
    assert_eq!(
        null.kind,
        Kind::CharDevice {
            rdev: rustix::fs::makedev(1, 3)
        }
    );
    assert_eq!(null.stat.perms, 0o666);
    let sda = node(&t, "dev/sda1");
    assert_eq!(
        sda.kind,
        Kind::BlockDevice {
            rdev: rustix::fs::makedev(8, 1)
        }
    );
    assert_eq!((sda.stat.perms, sda.stat.gid), (0o660, 6));
    assert_eq!(node(&t, "run/fifo").kind, Kind::Fifo);
    assert_eq!(node(&t, "run/fifo").st_mode(), 0o010600);
    assert_eq!(node(&t, "bin/su").stat.perms, 0o4755);
    assert_eq!(node(&t, "tmp").stat.perms, 0o1777);
    let owned = node(&t, "owned");
    assert_eq!((owned.stat.uid, owned.stat.gid), (1000, 100));
    assert_eq!(owned.kind, inline(b"contiguous"));
    // Implicit parents: 0755, root-owned, mtime 0.
    let dev = node(&t, "dev");
    assert_eq!(
        (dev.st_mode(), dev.stat.uid, dev.stat.mtime.sec),
        (0o040755, 0, 0)
    );
}

// ---------------------------------------------------------------------------
// Layer semantics
// ---------------------------------------------------------------------------

#[test]
fn root_entry_and_absolute_paths() {
    let (_r, t) = merge_ok(&[
        Tar::new()
            .file("/abs/file", b"1")
            .file("./rel", b"2")
            .finish(),
        Tar::new()
            .entry("./", b'5', b"", |h| {
                octal(&mut h[100..108], 0o700);
                octal(&mut h[108..116], 5);
            })
            .file("//abs//./other", b"3")
            .file("x/../y", b"4")
            .finish(),
    ]);
    assert_eq!(
        listing(&t),
        ["/abs/", "/abs/file", "/abs/other", "/rel", "/y"]
    );
    let root = t.inode(t.root()).unwrap();
    assert_eq!((root.st_mode(), root.stat.uid), (0o040700, 5));
    assert_eq!(t.root(), 0);
    // No root entry: 0755.
    let (_r, t) = merge_ok(&[Tar::new().file("a", b"").finish()]);
    assert_eq!(t.inode(t.root()).unwrap().st_mode(), 0o040755);
}

#[test]
fn whiteouts_remove_lower_files_and_directories() {
    let lower = Tar::new()
        .dir("etc")
        .file("etc/keep", b"k")
        .file("etc/gone", b"g")
        .dir("usr")
        .dir("usr/share")
        .file("usr/share/big", &[b'b'; 1000])
        .file("usr/share/deep/er/file", b"d")
        .symlink("usr/lib64", "lib")
        .finish();
    let upper = Tar::new()
        .file("etc/.wh.gone", b"")
        .file("usr/.wh.share", b"")
        .file("usr/.wh.lib64", b"")
        .file(".wh.never-existed", b"")
        .file("missing-dir/.wh.x", b"")
        .file("etc/.wh..wh.aufs", b"")
        .finish();
    let (_r, t) = merge_ok(&[lower.clone(), upper.clone()]);
    assert_eq!(listing(&t), ["/etc/", "/etc/keep", "/usr/"]);
    // Re-adding in a later layer.
    let again = Tar::new().file("usr/share/new", b"n").finish();
    let (_r, t) = merge_ok(&[lower, upper, again]);
    assert_eq!(
        listing(&t),
        [
            "/etc/",
            "/etc/keep",
            "/usr/",
            "/usr/share/",
            "/usr/share/new"
        ]
    );
    // Implicitly recreated: fresh metadata, not the whited-out directory's.
    assert_eq!(node(&t, "usr/share").stat.mtime.sec, 0);
}

#[test]
fn whiteout_does_not_hide_the_same_layer() {
    let lower = Tar::new()
        .file("f", b"lower")
        .file("d/lower", b"l")
        .finish();
    for whiteout_first in [true, false] {
        let mut upper = Tar::new();
        if whiteout_first {
            upper.file(".wh.f", b"").file(".wh.d", b"");
        }
        upper.file("f", b"upper").file("d/upper", b"u");
        if !whiteout_first {
            upper.file(".wh.f", b"").file(".wh.d", b"");
        }
        let (_r, t) = merge_ok(&[lower.clone(), upper.finish()]);
        assert_eq!(
            listing(&t),
            ["/d/", "/d/upper", "/f"],
            "first: {whiteout_first}"
        );
        assert_eq!(node(&t, "f").kind, inline(b"upper"));
    }
}

#[test]
fn opaque_directory_in_any_order() {
    let lower = Tar::new()
        .dir("d")
        .file("d/a", b"lower a")
        .file("d/b", b"lower b")
        .dir("d/sub")
        .file("d/sub/x", b"x")
        .file("other/y", b"y")
        .finish();
    for marker_first in [true, false] {
        let mut upper = Tar::new();
        upper.dir_mode("d", 0o700);
        if marker_first {
            upper.file("d/.wh..wh..opq", b"");
        }
        upper.file("d/a", b"upper a").file("d/sub/new", b"n");
        if !marker_first {
            upper.file("d/.wh..wh..opq", b"");
        }
        let (_r, t) = merge_ok(&[lower.clone(), upper.finish()]);
        assert_eq!(
            listing(&t),
            [
                "/d/",
                "/d/a",
                "/d/sub/",
                "/d/sub/new",
                "/other/",
                "/other/y"
            ],
            "marker first: {marker_first}"
        );
        assert_eq!(node(&t, "d/a").kind, inline(b"upper a"));
        assert_eq!(node(&t, "d").stat.perms, 0o700);
    }
    // An opaque root hides every lower layer.
    let (_r, t) = merge_ok(&[
        lower,
        Tar::new()
            .file("new", b"")
            .file(".wh..wh..opq", b"")
            .finish(),
    ]);
    assert_eq!(listing(&t), ["/new"]);
}

#[test]
fn replacements() {
    let lower = Tar::new()
        .file("file-to-dir", b"f")
        .dir("dir-to-file")
        .file("dir-to-file/child", b"c")
        .dir_mode("dir-over-dir", 0o700)
        .file("dir-over-dir/kept", b"k")
        .file("sym", b"was a file")
        .file("dev", b"")
        .finish();
    let upper = Tar::new()
        .dir("file-to-dir")
        .file("file-to-dir/inside", b"i")
        .file("dir-to-file", b"now a file")
        .entry("dir-over-dir", b'5', b"", |h| {
            octal(&mut h[100..108], 0o751);
            octal(&mut h[108..116], 77);
        })
        .symlink("sym", "target")
        .entry("dev", b'3', b"", |h| octal(&mut h[329..337], 5))
        // Later entries of one layer win the same way.
        .file("twice", b"first")
        .file("twice", b"second")
        .dir("dir-then-file")
        .file("dir-then-file/x", b"")
        .file("dir-then-file", b"file")
        .finish();
    let (_r, t) = merge_ok(&[lower, upper]);
    assert_eq!(
        listing(&t),
        [
            "/dev",
            "/dir-over-dir/",
            "/dir-over-dir/kept",
            "/dir-then-file",
            "/dir-to-file",
            "/file-to-dir/",
            "/file-to-dir/inside",
            "/sym",
            "/twice"
        ]
    );
    let d = node(&t, "dir-over-dir");
    assert_eq!((d.stat.perms, d.stat.uid), (0o751, 77));
    assert_eq!(node(&t, "dir-to-file").kind, inline(b"now a file"));
    assert_eq!(node(&t, "sym").kind, Kind::Symlink(b"target".to_vec()));
    assert_eq!(
        node(&t, "dev").kind,
        Kind::CharDevice {
            rdev: rustix::fs::makedev(5, 0)
        }
    );
    assert_eq!(node(&t, "twice").kind, inline(b"second"));
    assert_eq!(node(&t, "dir-then-file").kind, inline(b"file"));
}

#[test]
fn hardlinks_within_and_across_layers() {
    let l1 = Tar::new()
        .file("a/file", &[b'a'; 200])
        .hardlink("a/same-layer", "a/file")
        .file("small", b"s")
        .finish();
    let l2 = Tar::new()
        .hardlink("b/lower-target", "./a/file")
        .hardlink("b/absolute", "/small")
        .finish();
    let (r, t) = merge_ok(&[l1.clone(), l2.clone()]);
    let a = ino(&t, "a/file");
    assert_eq!(ino(&t, "a/same-layer"), a);
    assert_eq!(ino(&t, "b/lower-target"), a);
    assert_eq!(ino(&t, "b/absolute"), ino(&t, "small"));
    assert_eq!(r.content(&node(&t, "b/lower-target")), vec![b'a'; 200]);
    assert_eq!(composefs::tree::link_counts(&t).unwrap()[&a], 3);
    // Replacing one name leaves the others with the old inode.
    let l3 = Tar::new().file("a/file", b"new").finish();
    let (_r, t) = merge_ok(&[l1, l2, l3]);
    assert_eq!(node(&t, "a/file").kind, inline(b"new"));
    assert_ne!(ino(&t, "a/file"), ino(&t, "a/same-layer"));
    assert_eq!(ino(&t, "a/same-layer"), ino(&t, "b/lower-target"));
    assert_eq!(node(&t, "a/same-layer").size(), 200);
}

#[test]
fn compacted_inode_numbers() {
    // Replaced and whited-out inodes do not linger in the result.
    let mut l1 = Tar::new();
    for i in 0..50 {
        l1.file(&format!("d/f{i}"), b"x");
    }
    let l2 = Tar::new().file(".wh.d", b"").file("only", b"o").finish();
    let (_r, t) = merge_ok(&[l1.finish(), l2]);
    assert_eq!(listing(&t), ["/only"]);
    assert_eq!(t.root(), 0);
    assert_eq!(ino(&t, "only"), 1);
    assert!(t.inode(2).is_err());
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn dotdot_escape_is_refused() {
    let e = merge_err(&[
        Tar::new().file("ok", b"").finish(),
        Tar::new().file("a/../../evil", b"x").finish(),
    ]);
    assert!(e.contains("layer 2 of 2"), "{e}");
    assert!(e.contains("a/../../evil"), "{e}");
    assert!(e.contains("out of the image root"), "{e}");
    let e = merge_err(&[Tar::new().dir("../").finish()]);
    assert!(e.contains("layer 1 of 1") && e.contains("\"../\""), "{e}");
    let e = merge_err(&[Tar::new().hardlink("x", "../etc/shadow").finish()]);
    assert!(e.contains("out of the image root"), "{e}");
}

#[test]
fn bad_hardlinks_are_refused() {
    let e = merge_err(&[
        Tar::new().file("present", b"").finish(),
        Tar::new().hardlink("link", "absent").finish(),
    ]);
    assert!(e.contains("layer 2 of 2") && e.contains("\"link\""), "{e}");
    assert!(e.contains("does not exist"), "{e}");
    let e = merge_err(&[Tar::new().dir("d").hardlink("link", "d").finish()]);
    assert!(e.contains("is a directory"), "{e}");
    let e = merge_err(&[Tar::new().hardlink("link", "./").finish()]);
    assert!(e.contains("root"), "{e}");
    // A whited-out target is gone.
    let e = merge_err(&[
        Tar::new().file("f", b"").finish(),
        Tar::new().file(".wh.f", b"").hardlink("g", "f").finish(),
    ]);
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn paths_through_non_directories_are_refused() {
    let e = merge_err(&[
        Tar::new().dir("real").symlink("link", "real").finish(),
        Tar::new().file("link/file", b"").finish(),
    ]);
    assert!(e.contains("layer 2 of 2") && e.contains("link/file"), "{e}");
    assert!(e.contains("\"link\" is not a directory"), "{e}");
    let e = merge_err(&[Tar::new().file("f", b"").file("f/g/h", b"").finish()]);
    assert!(e.contains("\"f\" is not a directory"), "{e}");
    let e = merge_err(&[Tar::new().file("f", b"").file("f/.wh.x", b"").finish()]);
    assert!(e.contains("not a directory"), "{e}");
    // The root must stay a directory.
    let e = merge_err(&[Tar::new().file("./", b"").finish()]);
    assert!(e.contains("root must be a directory"), "{e}");
}

#[test]
fn bad_names_and_types_are_refused() {
    let long = "l".repeat(256);
    let mut t = Tar::new();
    t.pax(&[(b"path", long.as_bytes())]).file("x", b"");
    assert!(merge_err(&[t.finish()]).contains("longer than 255"));
    // Longer than PATH_MAX is fine (the kernel and FUSE walk one name at a
    // time); longer than MAX_ENTRY_PATH (1 MiB) is refused.
    let deep = vec!["d".repeat(200); 5300].join("/");
    let mut t = Tar::new();
    t.pax(&[(b"path", deep.as_bytes())]).file("x", b"");
    let e = merge_err(&[t.finish()]);
    assert!(
        e.contains("more than 1048576"),
        "{}",
        &e[..e.len().min(500)]
    );
    assert!(e.len() < 2000, "a {}-byte message", e.len());
    let e = merge_err(&[Tar::new().entry("vol", b'V', b"", |_| {}).finish()]);
    assert!(
        e.contains("unsupported tar entry type") && e.contains("vol"),
        "{e}"
    );
    let e = merge_err(&[Tar::new().symlink("empty-target", "").finish()]);
    assert!(e.contains("symlink target"), "{e}");
    let e = merge_err(&[Tar::new().file(".wh.", b"").finish()]);
    assert!(e.contains("whiteout"), "{e}");
}

/// A splitstream written directly (not through `tarsplit`), for input
/// tarsplit would refuse.
fn raw_stream(r: &Repo, ct: u64, bytes: &[u8]) -> ObjectId {
    let mut w = r.repo.stream_writer(ct).unwrap();
    w.write_inline(bytes).unwrap();
    w.finish().unwrap()
}

#[test]
fn broken_streams_are_refused() {
    let r = repo();
    // A size far beyond what the stream holds: an error, no huge allocation.
    let mut t = Tar::new();
    t.raw(header(b"huge", b'0', 1 << 32, |_| {}), b"only this");
    let id = raw_stream(&r, content_type::OCI_LAYER, &t.0);
    let e = format!("{:#}", merge(&r.repo, &[id]).unwrap_err());
    assert!(e.contains("truncated") && e.contains("huge"), "{e}");
    // The same with a PAX size.
    let mut t = Tar::new();
    t.pax(&[(b"size", b"99999999999")]);
    t.raw(header(b"paxhuge", b'0', 3, |_| {}), b"abc");
    let id = raw_stream(&r, content_type::OCI_LAYER, &t.finish());
    let e = format!("{:#}", merge(&r.repo, &[id]).unwrap_err());
    assert!(e.contains("truncated"), "{e}");
    // An oversized PAX header.
    let mut t = Tar::new();
    t.raw(header(b"pax", b'x', 1 << 30, |_| {}), b"");
    let id = raw_stream(&r, content_type::OCI_LAYER, &t.finish());
    let e = format!("{:#}", merge(&r.repo, &[id]).unwrap_err());
    assert!(e.contains("refusing more than"), "{e}");
    // No end-of-archive marker, ending at a member boundary: a complete
    // archive (as umoci writes layers).
    let mut t = Tar::new();
    t.file("a", b"a");
    let id = raw_stream(&r, content_type::OCI_LAYER, &t.0);
    let tree = merge(&r.repo, &[id]).unwrap();
    assert!(tree.lookup(tree.root(), b"a").unwrap().is_some());
    // Nor the last member's padding (umoci 0.4's insert writes layers so), or only
    // part of it: complete, the content whole; one byte of content
    // short: cut short.
    for (cut, ok) in [(512 + 3, true), (512 + 100, true), (512 + 2, false)] {
        let mut t = Tar::new();
        t.file("a", b"abc");
        let id = raw_stream(&r, content_type::OCI_LAYER, &t.0[..cut]);
        match merge(&r.repo, &[id]) {
            Ok(tree) if ok => assert!(tree.lookup(tree.root(), b"a").unwrap().is_some()),
            Ok(_) => panic!("a layer cut at {cut}, inside the content, merged"),
            Err(e) => {
                let e = format!("{e:#}");
                assert!(!ok && e.contains("truncated"), "cut at {cut}: {e}");
            }
        }
    }
    // Ending after an extended header, before its member: cut short.
    let mut t = Tar::new();
    t.file("a", b"a");
    t.pax(&[(b"path", b"b")]);
    let id = raw_stream(&r, content_type::OCI_LAYER, &t.0);
    let e = format!("{:#}", merge(&r.repo, &[id]).unwrap_err());
    assert!(e.contains("after an extended header"), "{e}");
    // A damaged checksum.
    let mut bytes = Tar::new().file("a", b"a").finish();
    bytes[0] = b'b';
    let id = raw_stream(&r, content_type::OCI_LAYER, &bytes);
    let e = format!("{:#}", merge(&r.repo, &[id]).unwrap_err());
    assert!(e.contains("checksum"), "{e}");
    // Not a layer stream.
    let id = raw_stream(&r, content_type::OCI_CONFIG, b"{}");
    let e = format!("{:#}", merge(&r.repo, &[id]).unwrap_err());
    assert!(e.contains("not a tar layer"), "{e}");
    // Not a stream at all.
    let id = r.repo.store_bytes(b"just bytes").unwrap();
    assert!(merge(&r.repo, &[id]).is_err());
}

#[test]
fn no_layers_is_an_empty_root() {
    let r = repo();
    let t = merge(&r.repo, &[]).unwrap();
    assert!(t.readdir(t.root()).unwrap().is_empty());
    assert_eq!(t.inode(t.root()).unwrap().st_mode(), 0o040755);
    // Only the end-of-archive marker.
    let (_r, t) = merge_ok(&[vec![0u8; 10240]]);
    assert!(t.readdir(t.root()).unwrap().is_empty());
}
