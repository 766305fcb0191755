//! Reading a directory on disk into a tree (`mkcomposefs DIR`): every file
//! type, xattrs in several namespaces, hardlinks, odd names, empty and large
//! files, compared with what `stat`, `getfattr` and `fsverity` report; the
//! options; and errors that name the path.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use composefs::dumpfile;
use composefs::fsverity::{Algorithm, digest_bytes};
use composefs::tree::dirsource::{DirOptions, read_dir_tree, scan_dir};
use composefs::tree::{FileData, Ino, Kind, MemTree, Tree};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use common::{fsverity_digest, pseudo_random, require_tool};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    };
    rustix::fs::utimensat(CWD, p, &t, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn lsetxattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting {name} on {}: {e}", p.display()));
}

fn write(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
}

/// Names that must survive: spaces, newlines, UTF-8, backslashes, a leading
/// '-', '=', tabs, and bytes that are not UTF-8.
fn odd_names() -> Vec<OsString> {
    [
        &b"with space"[..],
        b"new\nline",
        b"utf8-\xc3\xa9\xe4\xb8\xad",
        b"back\\slash",
        b"-leading-dash",
        b"-",
        b"eq=sign",
        b"tab\there",
        b"not-utf8-\xff\xfe",
    ]
    .iter()
    .map(|n| OsString::from_vec(n.to_vec()))
    .collect()
}

/// Build a directory with one of everything.
fn populate(root: &Path) {
    let p = |s: &str| root.join(s);
    write(&p("empty"), b"");
    write(&p("small"), b"hello\n");
    write(&p("exactly64"), &[b'x'; 64]);
    write(&p("large"), &pseudo_random(7, (1 << 20) + 3));
    std::fs::create_dir(p("sub")).unwrap();
    std::fs::create_dir(p("sub/deeper")).unwrap();
    write(&p("sub/deeper/file"), b"deep");
    std::fs::create_dir(p("emptydir")).unwrap();
    symlink("small", p("link")).unwrap();
    symlink("nowhere/at/all", p("dangling")).unwrap();
    symlink("sub", p("dirlink")).unwrap();
    symlink("/etc/passwd", p("abslink")).unwrap();
    rustix::fs::mknodat(
        CWD,
        p("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(p("socket")).unwrap();
    if is_root() {
        let dev = |maj, min| rustix::fs::makedev(maj, min);
        rustix::fs::mknodat(
            CWD,
            p("null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            dev(1, 3),
        )
        .unwrap();
        rustix::fs::mknodat(
            CWD,
            p("loop0"),
            FileType::BlockDevice,
            Mode::from_raw_mode(0o660),
            dev(7, 0),
        )
        .unwrap();
        rustix::fs::mknodat(
            CWD,
            p("bigdev"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            dev(300, 70000),
        )
        .unwrap();
        rustix::fs::mknodat(
            CWD,
            p("sub/whiteout"),
            FileType::CharacterDevice,
            Mode::empty(),
            dev(0, 0),
        )
        .unwrap();
    }
    // Hardlinks: three names of one file across directories, and a pair.
    write(&p("hl1"), &pseudo_random(9, 5000));
    std::fs::hard_link(p("hl1"), p("sub/hl2")).unwrap();
    std::fs::hard_link(p("hl1"), p("sub/deeper/hl3")).unwrap();
    write(&p("pair-a"), b"tiny");
    std::fs::hard_link(p("pair-a"), p("pair-b")).unwrap();
    for (i, n) in odd_names().iter().enumerate() {
        write(&root.join(n), format!("odd {i}").as_bytes());
        std::fs::create_dir(root.join("sub").join(n)).unwrap();
    }
    // Permissions and owners.
    write(&p("setuid"), b"#!/bin/sh\n");
    std::fs::set_permissions(
        p("setuid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(
        p("emptydir"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1700),
    )
    .unwrap();
    if is_root() {
        rustix::fs::chownat(
            CWD,
            p("small"),
            Some(rustix::process::Uid::from_raw(1234)),
            Some(rustix::process::Gid::from_raw(70000)),
            AtFlags::empty(),
        )
        .unwrap();
        rustix::fs::chownat(
            CWD,
            p("link"),
            Some(rustix::process::Uid::from_raw(42)),
            Some(rustix::process::Gid::from_raw(43)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
    // Xattrs: user., trusted., security.; binary values; on dirs, symlinks,
    // fifos, devices; an empty value; an `=` in a name.
    lsetxattr(&p("small"), "user.plain", b"value");
    lsetxattr(&p("small"), "user.binary", &(0..=255u8).collect::<Vec<_>>());
    lsetxattr(&p("small"), "user.empty", b"");
    lsetxattr(&p("small"), "user.has=equals", b"a=b c");
    lsetxattr(&p("large"), "user.big", &pseudo_random(3, 4000));
    lsetxattr(&p("sub"), "user.dir", b"d");
    if is_root() {
        lsetxattr(&p("small"), "trusted.t", b"\x00\x01\x02");
        lsetxattr(&p("small"), "security.s", b"sec\0");
        lsetxattr(&p("small"), "trusted.overlay.custom", b"escaped-in-images");
        lsetxattr(&p("link"), "trusted.on-symlink", b"L");
        lsetxattr(&p("fifo"), "trusted.on-fifo", b"F");
        lsetxattr(&p("null"), "security.on-dev", b"D");
        lsetxattr(&p("sub"), "trusted.dir", b"T");
    }
    lsetxattr(&p("hl1"), "user.hardlinked", b"shared by three names");
    // Times with nanoseconds (last, so nothing above disturbs them).
    set_mtime(&p("small"), 1_700_000_000, 123_456_789);
    set_mtime(&p("link"), 1_600_000_000, 1);
    set_mtime(&p("sub"), 1_500_000_000, 999_999_999);
    set_mtime(&p("fifo"), 0, 5);
    set_mtime(&p("large"), 2_000_000_000, 0);
    std::mem::forget(_sock); // keep the socket file; the listener can close
}

/// Inline up to 64 bytes, otherwise an object named by its sha256 fs-verity
/// digest (what `create-image` will do).
fn content_fn(
    seen: &mut Vec<(PathBuf, u64)>,
) -> impl FnMut(&Path, &File, u64) -> Result<FileData> + '_ {
    move |path: &Path, file: &File, size: u64| {
        seen.push((path.to_path_buf(), size));
        let mut data = Vec::new();
        let mut f = file;
        f.read_to_end(&mut data)?;
        Ok(if size <= 64 {
            FileData::Inline(data)
        } else {
            FileData::object(digest_bytes(Algorithm::Sha256, &data), size)
        })
    }
}

fn read(root: &Path, opts: &DirOptions) -> MemTree {
    let mut seen = Vec::new();
    let mut f = content_fn(&mut seen);
    match read_dir_tree(root, opts, &mut f) {
        Ok(t) => t,
        Err(e) => panic!("read_dir_tree failed: {e:#}"),
    }
}

/// Every name in the tree, depth first: path (relative, bytes) → ino.
fn names(t: &dyn Tree) -> BTreeMap<Vec<u8>, Ino> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(t.root(), Vec::new())];
    while let Some((ino, path)) = stack.pop() {
        out.insert(path.clone(), ino);
        if t.inode(ino).unwrap().kind.is_dir() {
            for e in t.readdir(ino).unwrap().iter() {
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&e.name);
                stack.push((e.ino, p));
            }
        }
    }
    out
}

struct StatOut {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, u32),
    rdev: (u32, u32),
    nlink: u64,
    id: (u64, u64),
}

/// `stat` (coreutils) for many paths at once, NUL-separated records.
fn stat_many(paths: &[PathBuf]) -> Vec<StatOut> {
    require_tool("stat");
    let out = Command::new("stat")
        .arg("--printf=%f %u %g %s %.9Y %t %T %h %d %i\\0")
        .arg("--")
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<&[u8]> = out
        .stdout
        .split(|&c| c == 0)
        .filter(|r| !r.is_empty())
        .collect();
    assert_eq!(recs.len(), paths.len());
    recs.iter()
        .map(|r| {
            let s = std::str::from_utf8(r).unwrap();
            let f: Vec<&str> = s.split(' ').collect();
            let (sec, nsec) = f[4].split_once('.').unwrap();
            StatOut {
                mode: u32::from_str_radix(f[0], 16).unwrap(),
                uid: f[1].parse().unwrap(),
                gid: f[2].parse().unwrap(),
                size: f[3].parse().unwrap(),
                mtime: (sec.parse().unwrap(), nsec.parse().unwrap()),
                rdev: (
                    u32::from_str_radix(f[5], 16).unwrap(),
                    u32::from_str_radix(f[6], 16).unwrap(),
                ),
                nlink: f[7].parse().unwrap(),
                id: (f[8].parse().unwrap(), f[9].parse().unwrap()),
            }
        })
        .collect()
}

/// `getfattr -h -d -m - -e hex` for one path: name → value.
fn getfattr(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    require_tool("getfattr");
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", "--"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "getfattr {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = BTreeMap::new();
    for line in out.stdout.split(|&c| c == b'\n') {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let (k, v) = match line.iter().position(|&c| c == b'=') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        let v = match v.strip_prefix(b"0x") {
            Some(h) => hex::decode(h).unwrap(),
            None if v.is_empty() => Vec::new(),
            None => {
                // Quoted text values are only used for empty ones ("").
                assert_eq!(
                    v,
                    b"\"\"",
                    "unexpected getfattr value {:?}",
                    String::from_utf8_lossy(v)
                );
                Vec::new()
            }
        };
        m.insert(unescape_octal(k), v);
    }
    m
}

/// getfattr writes `=`, `\\`, control characters and spaces in names as `\ooo`.
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn every_file_type_matches_stat_and_getfattr() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    populate(&root);
    set_mtime(&root, 1_234_567_890, 42);

    let mut seen = Vec::new();
    let mut f = content_fn(&mut seen);
    let scan = scan_dir(&root, &DirOptions::default(), &mut f).unwrap();
    drop(f);
    let files = scan.files.clone();
    let t = scan.build().unwrap();

    let all = names(&t);
    // The tree holds exactly what is on disk (find lists every name).
    let mut on_disk = Vec::new();
    common::walk(&root, &mut |p| {
        on_disk.push(
            p.strip_prefix(&root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )
    });
    let mut ours: Vec<Vec<u8>> = all.keys().filter(|k| !k.is_empty()).cloned().collect();
    on_disk.sort();
    ours.sort();
    assert_eq!(
        ours.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>(),
        on_disk
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
    );

    let paths: Vec<PathBuf> = all
        .keys()
        .map(|k| {
            if k.is_empty() {
                root.clone()
            } else {
                root.join(OsStr::from_bytes(k))
            }
        })
        .collect();
    let stats = stat_many(&paths);
    let mut by_id: HashMap<(u64, u64), Ino> = HashMap::new();
    for ((rel, &ino), (path, st)) in all.iter().zip(paths.iter().zip(&stats)) {
        let what = path.display().to_string();
        let inode = t.inode(ino).unwrap();
        assert_eq!(inode.st_mode(), st.mode, "{what}: mode");
        assert_eq!(
            (inode.stat.uid, inode.stat.gid),
            (st.uid, st.gid),
            "{what}: owner"
        );
        assert_eq!(
            (inode.stat.mtime.sec, inode.stat.mtime.nsec),
            st.mtime,
            "{what}: mtime"
        );
        match &inode.kind {
            Kind::Directory => {}
            Kind::Regular(d) => {
                assert_eq!(d.size(), st.size, "{what}: size");
                match d {
                    FileData::Inline(c) => assert_eq!(c, &std::fs::read(path).unwrap(), "{what}"),
                    FileData::External {
                        digest, redirect, ..
                    } => {
                        let d = digest.unwrap();
                        assert_eq!(
                            d.to_hex(),
                            fsverity_digest("sha256", path),
                            "{what}: digest"
                        );
                        assert_eq!(redirect.as_deref(), Some(d.object_path().as_bytes()));
                    }
                }
            }
            Kind::Symlink(target) => {
                assert_eq!(target.len() as u64, st.size, "{what}: size");
                assert_eq!(
                    target,
                    std::fs::read_link(path).unwrap().as_os_str().as_bytes(),
                    "{what}: target"
                );
            }
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => {
                let want = rustix::fs::makedev(st.rdev.0, st.rdev.1);
                assert_eq!(*rdev, want, "{what}: rdev");
            }
            Kind::Fifo | Kind::Socket => {}
        }
        // Hardlink identity: same (dev, ino) on disk ⇔ same inode here
        // (directories are never shared).
        if !inode.kind.is_dir() {
            match by_id.get(&st.id) {
                Some(&other) => assert_eq!(other, ino, "{what}: hardlink identity"),
                None => {
                    by_id.insert(st.id, ino);
                }
            }
            let n_names = all.values().filter(|&&i| i == ino).count() as u64;
            assert_eq!(n_names, st.nlink, "{what}: nlink");
        }
        let want_x = getfattr(path);
        let got_x: BTreeMap<Vec<u8>, Vec<u8>> = inode.xattrs.iter().cloned().collect();
        assert_eq!(got_x, want_x, "{what}: xattrs");
        let _ = rel;
    }
    let distinct: std::collections::HashSet<Ino> = all.values().copied().collect();
    assert_eq!(
        distinct.len(),
        by_id.len()
            + all
                .values()
                .filter(|&&i| t.inode(i).unwrap().kind.is_dir())
                .count()
    );

    // Spot checks of what must be there.
    let get = |p: &str| t.inode(all[p.as_bytes()]).unwrap();
    assert_eq!(
        get("hl1").xattr(b"user.hardlinked"),
        Some(&b"shared by three names"[..])
    );
    assert_eq!(all[&b"hl1"[..]], all[&b"sub/hl2"[..]]);
    assert_eq!(all[&b"hl1"[..]], all[&b"sub/deeper/hl3"[..]]);
    assert_eq!(all[&b"pair-a"[..]], all[&b"pair-b"[..]]);
    assert_ne!(all[&b"pair-a"[..]], all[&b"hl1"[..]]);
    assert_eq!(get("dirlink").kind, Kind::Symlink(b"sub".to_vec()));
    assert_eq!(get("socket").kind, Kind::Socket);
    assert_eq!(get("fifo").kind, Kind::Fifo);
    assert_eq!(get("empty").kind, Kind::Regular(FileData::Inline(vec![])));
    assert_eq!(get("setuid").stat.perms, 0o4755);
    assert_eq!(get("emptydir").stat.perms, 0o1700);
    assert_eq!(get("small").xattr(b"user.binary").unwrap().len(), 256);
    assert_eq!(get("small").xattr(b"user.empty"), Some(&b""[..]));
    assert_eq!(get("").stat.mtime.sec, 1_234_567_890);
    if is_root() {
        assert_eq!(
            get("null").kind,
            Kind::CharDevice {
                rdev: rustix::fs::makedev(1, 3)
            }
        );
        assert_eq!(
            get("loop0").kind,
            Kind::BlockDevice {
                rdev: rustix::fs::makedev(7, 0)
            }
        );
        assert_eq!(get("sub/whiteout").kind, Kind::CharDevice { rdev: 0 });
        assert_eq!(
            (get("small").stat.uid, get("small").stat.gid),
            (1234, 70000)
        );
        assert_eq!(
            get("small").xattr(b"trusted.overlay.custom"),
            Some(&b"escaped-in-images"[..])
        );
    }
    for n in odd_names() {
        let k = n.as_bytes();
        assert!(all.contains_key(k), "{n:?} missing");
        assert!(
            all.contains_key(&[&b"sub/"[..], k].concat()[..]),
            "sub/{n:?} missing"
        );
    }

    // The content function ran once per regular-file inode, with its size.
    let regular: Vec<Ino> = distinct
        .iter()
        .copied()
        .filter(|&i| matches!(t.inode(i).unwrap().kind, Kind::Regular(_)))
        .collect();
    assert_eq!(files.len(), regular.len());
    assert_eq!(seen.len(), regular.len());
    for (ino, (path, size)) in files.iter().zip(&seen) {
        assert!(path.starts_with(&root));
        assert_eq!(t.inode(*ino).unwrap().size(), *size);
    }

    // And through the dumpfile and back: the same tree.
    let mut text = Vec::new();
    dumpfile::write(&t, &mut text).unwrap();
    let back = dumpfile::parse(&text).unwrap();
    let bn = names(&back);
    assert_eq!(
        bn.keys().collect::<Vec<_>>(),
        all.keys().collect::<Vec<_>>()
    );
    for (k, &ino) in &all {
        assert_eq!(
            *t.inode(ino).unwrap(),
            *back.inode(bn[k]).unwrap(),
            "{}",
            String::from_utf8_lossy(k)
        );
    }
}

#[test]
fn options_mirror_mkcomposefs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    populate(root);

    let t = read(
        root,
        &DirOptions {
            skip_xattrs: true,
            ..Default::default()
        },
    );
    for ino in names(&t).values() {
        assert!(t.inode(*ino).unwrap().xattrs.is_empty());
    }

    let t = read(
        root,
        &DirOptions {
            user_xattrs_only: true,
            ..Default::default()
        },
    );
    let mut n_user = 0;
    for ino in names(&t).values() {
        for (k, _) in &t.inode(*ino).unwrap().xattrs {
            assert!(k.starts_with(b"user."), "{}", String::from_utf8_lossy(k));
            n_user += 1;
        }
    }
    assert!(n_user >= 5);

    let t = read(
        root,
        &DirOptions {
            skip_devices: true,
            ..Default::default()
        },
    );
    let all = names(&t);
    for ino in all.values() {
        assert!(!matches!(
            t.inode(*ino).unwrap().kind,
            Kind::CharDevice { .. } | Kind::BlockDevice { .. }
        ));
    }
    assert!(all.contains_key(&b"fifo"[..]) && all.contains_key(&b"socket"[..]));

    let t = read(
        root,
        &DirOptions {
            ignore_hardlinks: true,
            ..Default::default()
        },
    );
    let all = names(&t);
    assert_ne!(all[&b"hl1"[..]], all[&b"sub/hl2"[..]]);
    assert_ne!(all[&b"pair-a"[..]], all[&b"pair-b"[..]]);
    assert_eq!(
        t.inode(all[&b"hl1"[..]]).unwrap(),
        t.inode(all[&b"sub/hl2"[..]]).unwrap()
    );

    let t = read(
        root,
        &DirOptions {
            use_epoch: true,
            ..Default::default()
        },
    );
    for ino in names(&t).values() {
        let m = t.inode(*ino).unwrap().stat.mtime;
        assert_eq!((m.sec, m.nsec), (0, 0));
    }

    let mut f = |_: &Path, _: &File, _: u64| -> Result<FileData> { unreachable!() };
    let e = read_dir_tree(
        root,
        &DirOptions {
            skip_xattrs: true,
            user_xattrs_only: true,
            ..Default::default()
        },
        &mut f,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("contradict"));
}

#[test]
fn symlinks_are_not_followed_except_the_root_path() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir_all(real.join("d")).unwrap();
    write(&real.join("d/f"), b"x");
    symlink(tmp.path().join("outside"), real.join("escape")).unwrap();
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    write(&tmp.path().join("outside/secret"), b"no");
    let alias = tmp.path().join("alias");
    symlink(&real, &alias).unwrap();
    let t = read(&alias, &DirOptions::default());
    let all = names(&t);
    assert_eq!(
        all.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>(),
        vec!["", "d", "d/f", "escape"]
    );
    assert!(matches!(
        t.inode(all[&b"escape"[..]]).unwrap().kind,
        Kind::Symlink(_)
    ));
}

#[test]
fn errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir(root.join("a")).unwrap();
    write(&root.join("a/bad file"), b"0123456789");
    write(&root.join("ok"), b"1");

    // The content function fails: the error names the file.
    let mut f = |p: &Path, _: &File, _: u64| -> Result<FileData> {
        if p.ends_with("bad file") {
            anyhow::bail!("digest failed")
        }
        Ok(FileData::Inline(b"1".to_vec()))
    };
    let e = format!(
        "{:#}",
        read_dir_tree(root, &DirOptions::default(), &mut f).unwrap_err()
    );
    assert!(
        e.contains("a/bad file") && e.contains("digest failed"),
        "{e}"
    );

    // It returns the wrong size: refused, naming the file.
    let mut f =
        |_: &Path, _: &File, _: u64| -> Result<FileData> { Ok(FileData::Inline(b"12".to_vec())) };
    let e = format!(
        "{:#}",
        read_dir_tree(root, &DirOptions::default(), &mut f).unwrap_err()
    );
    assert!(
        e.contains("bytes") && (e.contains("bad file") || e.contains("/ok")),
        "{e}"
    );

    // Not a directory, or missing.
    let mut f = |_: &Path, _: &File, s: u64| -> Result<FileData> {
        Ok(FileData::Inline(vec![0; s as usize]))
    };
    let e = format!(
        "{:#}",
        read_dir_tree(&root.join("ok"), &DirOptions::default(), &mut f).unwrap_err()
    );
    assert!(e.contains("ok"), "{e}");
    let e = format!(
        "{:#}",
        read_dir_tree(&root.join("missing"), &DirOptions::default(), &mut f).unwrap_err()
    );
    assert!(e.contains("missing"), "{e}");

    // An unreadable subdirectory (only meaningful when not root).
    if !is_root() {
        std::fs::set_permissions(
            root.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            read_dir_tree(root, &DirOptions::default(), &mut f).unwrap_err()
        );
        assert!(e.contains("/a"), "{e}");
        std::fs::set_permissions(
            root.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
}

#[test]
fn empty_and_large_files_and_a_wide_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("zero"), b"");
    let big = pseudo_random(11, 3 * 1024 * 1024 + 17);
    write(&root.join("big"), &big);
    std::fs::create_dir(root.join("wide")).unwrap();
    for i in 0..2000 {
        write(
            &root.join(format!("wide/f{i:05}")),
            format!("{i}").as_bytes(),
        );
    }
    let t = read(root, &DirOptions::default());
    let all = names(&t);
    assert_eq!(all.len(), 2000 + 4);
    assert_eq!(
        t.inode(all[&b"zero"[..]]).unwrap().kind,
        Kind::Regular(FileData::Inline(vec![]))
    );
    assert_eq!(
        t.inode(all[&b"big"[..]]).unwrap().kind,
        Kind::Regular(FileData::object(
            digest_bytes(Algorithm::Sha256, &big),
            big.len() as u64
        ))
    );
    let wide = t.readdir(all[&b"wide"[..]]).unwrap();
    assert!(wide.windows(2).all(|w| w[0].name < w[1].name));
}
