//! Stored ostree commits against the oracle, composefs-rs 0.9.4's `cfsctl`:
//! the same commit pulled by either tool is the same stream (byte for byte,
//! same object id, same names) with the same image; each tool reads what
//! the other stored (list, ls, cat, images, dumps, fsck, gc); older
//! commit streams of ours still read; damaged streams give errors naming
//! the commit. On the shared ostree fixture (every repository mode, xattrs,
//! hardlinks, odd names, a wide directory, a deep chain) in SHA-256 and
//! SHA-512 repositories.
//!
//! Needs root (the fixture), ostree, python3 and cfsctl 0.9.4.

mod common;
#[path = "common/ostree.rs"]
#[allow(unused_imports)]
mod ostree_fixtures;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_no_panic, cfsctl, composefs};
use ostree_fixtures::{HttpServer, fixture, scratch_dir};

const ALGS: &[&str] = &["sha256", "sha512"];

/// A repository made by `cfsctl init --insecure` (EROFS format 1; no
/// fs-verity on meta.json, so objects need none).
fn init(dir: &Path, alg: &str) -> PathBuf {
    let p = dir.to_path_buf();
    let out = cfsctl::run(&[
        OsStr::new("init"),
        OsStr::new("--insecure"),
        OsStr::new("--algorithm"),
        OsStr::new(&format!("fsverity-{alg}-12")),
        p.as_os_str(),
    ]);
    assert!(out.status.success(), "cfsctl init: {out:?}");
    p
}

/// A repository made by `composefs init --insecure` (format 1, as cfsctl's).
fn init_ours(dir: &Path, alg: &str) -> PathBuf {
    let p = dir.to_path_buf();
    let out = composefs(
        &[
            OsStr::new("init"),
            OsStr::new("--insecure"),
            OsStr::new("--hash"),
            OsStr::new(alg),
            p.as_os_str(),
        ],
        None,
        &[],
    );
    assert!(out.status.success(), "composefs init: {out:?}");
    p
}

fn run(repo: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), repo.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    composefs(&all, None, &[])
}

/// `composefs --repo REPO ARGS`, required to succeed; stdout.
fn ours(repo: &Path, args: &[&str]) -> String {
    let out = run(repo, args);
    assert_no_panic(&args.join(" "), &out);
    assert!(
        out.status.success(),
        "composefs {args:?} in {} failed:\n{}",
        repo.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `composefs --repo REPO ARGS`, required to fail without a panic; stderr.
fn ours_fail(repo: &Path, args: &[&str]) -> String {
    let out = run(repo, args);
    assert_no_panic(&args.join(" "), &out);
    assert!(
        !out.status.success(),
        "composefs {args:?} unexpectedly succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The bytes and object (symlink target) of `streams/ostree-commit-C`.
fn stream(repo: &Path, commit: &str) -> (Vec<u8>, PathBuf) {
    let p = repo.join("streams").join(format!("ostree-commit-{commit}"));
    (
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        std::fs::read_link(&p).unwrap(),
    )
}

/// Every ref below `streams/refs/ostree` → its symlink target.
fn ostree_refs(repo: &Path) -> BTreeMap<String, PathBuf> {
    let dir = repo.join("streams/refs/ostree");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read_link(e.path()).unwrap(),
        );
    }
    out
}

fn images(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "refs")
        .collect();
    v.sort();
    v
}

/// One fixture repository pulled (`main`: commit 2, `v1`: commit 1, by
/// ref) into a repository by each tool.
struct Pair {
    _dir: PathBuf,
    cfs: PathBuf,
    ours: PathBuf,
    c1: String,
    c2: String,
}

fn pull_both(mode: &str, alg: &str) -> Pair {
    let f = fixture();
    let src = f.repo(mode);
    let dir = scratch_dir(&format!("compat-{mode}-{alg}"));
    let cfs = init(&dir.join("cfs"), alg);
    let our = init_ours(&dir.join("ours"), alg);
    let s = src.path.to_str().unwrap();
    for r in ["main", "v1"] {
        cfsctl::ok(&cfs, &["ostree", "pull-local", s, r]);
        ours(&our, &["ostree", "pull", s, r]);
    }
    Pair {
        _dir: dir,
        cfs,
        ours: our,
        c1: src.c1.clone(),
        c2: src.c2.clone(),
    }
}

#[test]
fn pulled_streams_are_byte_identical() {
    for &alg in ALGS {
        for mode in ["archive", "bare", "bare-user", "bare-user-only"] {
            let p = pull_both(mode, alg);
            for c in [&p.c1, &p.c2] {
                let (a, ta) = stream(&p.cfs, c);
                let (b, tb) = stream(&p.ours, c);
                assert_eq!(ta, tb, "{mode} {alg}: stream object of {c}");
                assert!(a == b, "{mode} {alg}: stream bytes of {c} differ");
            }
            assert_eq!(
                ostree_refs(&p.cfs),
                ostree_refs(&p.ours),
                "{mode} {alg}: refs"
            );
            assert_eq!(images(&p.cfs), images(&p.ours), "{mode} {alg}: images");
            assert_eq!(images(&p.ours).len(), 2, "{mode} {alg}: one image a commit");
        }
    }
}

#[test]
fn http_pull_stream_is_cfsctls() {
    let f = fixture();
    let src = f.archive();
    let server = HttpServer::serve(&src.path);
    for &alg in ALGS {
        let dir = scratch_dir(&format!("compat-http-{alg}"));
        let cfs = init(&dir.join("cfs"), alg);
        let our = init_ours(&dir.join("ours"), alg);
        cfsctl::ok(&cfs, &["ostree", "pull", &server.url(""), "main"]);
        ours(&our, &["ostree", "pull", &server.url(""), "main"]);
        let (a, ta) = stream(&cfs, &src.c2);
        let (b, tb) = stream(&our, &src.c2);
        assert_eq!(ta, tb, "{alg}: stream object");
        assert!(a == b, "{alg}: stream bytes differ");
        assert_eq!(ostree_refs(&cfs), ostree_refs(&our));
    }
}

#[test]
fn cfsctl_reads_our_commits() {
    for &alg in ALGS {
        let p = pull_both("bare", alg);
        let fsck = cfsctl::ok(&p.ours, &["fsck"]);
        assert!(fsck.contains("status: ok"), "{alg}: cfsctl fsck:\n{fsck}");
        for r in ["main", "v1"] {
            let theirs = cfsctl::ok(&p.ours, &["ostree", "compute-id", r]);
            let mine = ours(&p.ours, &["ostree", "compute-id", r]);
            assert_eq!(theirs.trim(), mine.trim(), "{alg} {r}: image id");
            assert!(images(&p.ours).contains(&mine.trim().to_string()));
            assert_eq!(
                cfsctl::ok(&p.ours, &["ostree", "dump", r]),
                cfsctl::ok(&p.cfs, &["ostree", "dump", r]),
                "{alg} {r}: cfsctl ostree dump"
            );
        }
        let list = cfsctl::ok(&p.ours, &["ostree", "images"]);
        for c in [&p.c1, &p.c2] {
            assert!(
                list.contains(c.as_str()),
                "{alg}: images lacks {c}:\n{list}"
            );
        }
        // Nothing of ours is garbage to cfsctl, nothing of cfsctl's to us.
        cfsctl::ok(&p.ours, &["gc"]);
        let fsck = cfsctl::ok(&p.ours, &["fsck"]);
        assert!(fsck.contains("status: ok"), "{alg}: after gc:\n{fsck}");
        ours(&p.ours, &["ls", "main", "/"]);
        ours(&p.ours, &["fsck"]);
        ours(&p.ours, &["gc"]);
        cfsctl::ok(&p.cfs, &["gc"]);
        ours(&p.cfs, &["gc"]);
        let fsck = cfsctl::ok(&p.cfs, &["fsck"]);
        assert!(fsck.contains("status: ok"), "{alg}: after our gc:\n{fsck}");
        assert_eq!(
            cfsctl::ok(&p.cfs, &["ostree", "compute-id", "main"]),
            cfsctl::ok(&p.ours, &["ostree", "compute-id", "main"])
        );
    }
}

/// `composefs ls` of a commit's directories that hold every kind of entry
/// (hardlinked objects, symlinks, owners, odd names, many entries).
fn listing(repo: &Path, name: &str) -> String {
    let mut out = String::new();
    for d in ["/", "/dup", "/dup/sub", "/wide", "/odd", "/owned-dir"] {
        out.push_str(&format!("{d}:\n{}", ours(repo, &["ls", name, d])));
    }
    out
}

#[test]
fn we_read_cfsctls_commits() {
    for &alg in ALGS {
        let p = pull_both("archive", alg);
        // list: the same names and commits.
        let l1 = ours(&p.cfs, &["ostree", "list"]);
        let l2 = ours(&p.ours, &["ostree", "list"]);
        assert_eq!(l1, l2, "{alg}: ostree list");
        assert!(l1.contains(&p.c2), "{alg}: {l1}");
        // ls and cat.
        assert_eq!(listing(&p.cfs, "main"), listing(&p.ours, "main"), "{alg}");
        for f in ["small", "large", "dup/sub/c", "link-rel"] {
            let a = run(&p.cfs, &["cat", &format!("main:/{f}")]);
            let b = run(&p.ours, &["cat", &format!("main:/{f}")]);
            assert_eq!(a.status.success(), b.status.success(), "{alg}: cat {f}");
            assert!(a.stdout == b.stdout, "{alg}: cat {f} differs");
        }
        // Diffs between the two commits: the same either side.
        assert_eq!(
            run(&p.cfs, &["diff", "v1", "main"]).stdout,
            run(&p.ours, &["diff", "v1", "main"]).stdout,
            "{alg}: diff"
        );
        assert_eq!(run(&p.cfs, &["diff", "main", &p.c2]).status.code(), Some(0));
        // create-image = cfsctl compute-id = the image cfsctl recorded.
        for r in ["main", "v1"] {
            let id = cfsctl::ok(&p.cfs, &["ostree", "compute-id", r]);
            assert_eq!(ours(&p.cfs, &["ostree", "compute-id", r]), id);
            let before = stream(&p.cfs, if r == "main" { &p.c2 } else { &p.c1 });
            assert_eq!(ours(&p.cfs, &["ostree", "create-image", r]), id);
            // Already recorded: the stream stays as cfsctl wrote it.
            assert_eq!(
                stream(&p.cfs, if r == "main" { &p.c2 } else { &p.c1 }).1,
                before.1
            );
        }
        // The image dumps as cfsctl dumps the commit.
        let id = cfsctl::ok(&p.cfs, &["ostree", "compute-id", "main"]);
        let ours_dump = ours(&p.cfs, &["dump", id.trim()]);
        let theirs_dump = cfsctl::ok(&p.cfs, &["ostree", "dump", "main"]);
        assert_eq!(
            dump_lines(&ours_dump),
            dump_lines(&theirs_dump),
            "{alg}: dump of the image vs cfsctl ostree dump"
        );
    }
}

/// Dump lines, sorted (the two dumpers may order entries differently),
/// directory sizes left out (cfsctl's dump of the tree says 0, ours of the
/// image the directory's EROFS size), hardlinks as their target (cfsctl
/// prints nothing else for them, ours the whole inode).
fn dump_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(' ').collect();
            if f.len() > 8 && f[2].starts_with('@') {
                // A hardlink: the dumpers agree on the target only.
                return format!("{} @ {}", f[0], f[8]);
            }
            if f.len() > 2 && f[2].starts_with('4') {
                f[1] = "-";
            }
            f.join(" ")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn create_image_records_the_image_as_cfsctl() {
    for &alg in ALGS {
        let dir = scratch_dir(&format!("compat-record-{alg}"));
        let cfs = init(&dir.join("cfs"), alg);
        let our = init_ours(&dir.join("ours"), alg);
        let src = fixture().archive();
        let s = src.path.to_str().unwrap();
        cfsctl::ok(&cfs, &["ostree", "pull-local", s, "main"]);
        ours(&our, &["ostree", "pull", s, "main"]);
        // Our stream without its image ref (as a pull into a repository
        // whose format we cannot write leaves it), then create-image.
        let plain = ours(&our, &["ostree", "compute-id", "main"]);
        let img = our.join("images").join(plain.trim());
        std::fs::remove_file(&img).unwrap();
        rewrite_without_image(&our, &src.c2);
        ours(&our, &["ostree", "create-image", "main"]);
        let (a, ta) = stream(&cfs, &src.c2);
        let (b, tb) = stream(&our, &src.c2);
        assert_eq!(ta, tb, "{alg}: re-recorded stream object");
        assert!(a == b, "{alg}: re-recorded stream bytes");
        // The cache followed the stream: no rebuild, no stale copy.
        let caches: Vec<_> = std::fs::read_dir(our.join("ostree/cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let sid = tb
            .to_string_lossy()
            .replace("../objects/", "")
            .replace('/', "");
        assert_eq!(caches, vec![format!("{}.{sid}", src.c2)], "{alg}");
    }
}

/// Replace the stream of `commit` by the same objects without the
/// `composefs.image` named ref (as this library writes it).
fn rewrite_without_image(repo: &Path, commit: &str) {
    use composefs::ostree::{Checksum, cache, image, shared};
    use composefs::repository::Repository;
    let r = Repository::open(repo).unwrap();
    let c = Checksum::from_hex(commit).unwrap();
    let (_, reader) = r.open_stream(&format!("ostree-commit-{commit}")).unwrap();
    let read = shared::read(reader, &c).unwrap();
    assert!(read.image.is_some());
    let old = cache::stream_id(&r, &c).unwrap();
    let new = image::publish(&r, &c, &read.objects, None, None).unwrap();
    assert_ne!(old, new);
    cache::moved(&r, &c, &old, &new);
}

#[test]
fn older_commit_streams_still_read() {
    use composefs::ostree::commitstream::{self, content_id};
    use composefs::ostree::{Checksum, shared};
    use composefs::repository::{RefKind, Repository};
    let dir = scratch_dir("compat-legacy");
    let our = init_ours(&dir.join("ours"), "sha512");
    let src = fixture().archive();
    ours(
        &our,
        &["ostree", "pull", src.path.to_str().unwrap(), "main"],
    );
    let want_ls = listing(&our, "main");
    let want_id = ours(&our, &["ostree", "compute-id", "main"]);
    // Store it as earlier versions did: our framed `ostreecm` stream as the
    // commit stream, ref `ostree/main`, no cache.
    {
        let r = Repository::open(&our).unwrap();
        let c = Checksum::from_hex(&src.c2).unwrap();
        let (_, reader) = r.open_stream(&content_id(&c)).unwrap();
        let read = shared::read(reader, &c).unwrap();
        let mut w = r
            .stream_writer(commitstream::CONTENT_TYPE)
            .unwrap()
            .framed(composefs::splitstream::FrameCoding::Stored)
            .unwrap();
        commitstream::write(&mut w, &read.objects).unwrap();
        r.commit_stream(w, &content_id(&c), None).unwrap();
        r.set_ref(RefKind::Stream, "ostree/main", &content_id(&c))
            .unwrap();
    }
    std::fs::remove_dir_all(our.join("ostree/cache")).unwrap();
    assert_eq!(listing(&our, "main"), want_ls);
    assert_eq!(ours(&our, &["ostree", "compute-id", "main"]), want_id);
    assert!(ours(&our, &["ostree", "list"]).contains(&src.c2));
    assert_eq!(ours(&our, &["ostree", "create-image", "main"]), want_id);
    assert!(
        !our.join("ostree/cache").exists(),
        "an older stream needs no cache"
    );
}

#[test]
fn caches_are_rebuilt_when_missing_stale_or_damaged() {
    let dir = scratch_dir("compat-cache");
    let cfs = init(&dir.join("cfs"), "sha256");
    let src = fixture().archive();
    cfsctl::ok(
        &cfs,
        &["ostree", "pull-local", src.path.to_str().unwrap(), "main"],
    );
    assert!(!cfs.join("ostree/cache").exists());
    let want = listing(&cfs, "main");
    let cache_dir = cfs.join("ostree/cache");
    let files = || -> Vec<PathBuf> {
        std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    assert_eq!(files().len(), 1, "built on first use");
    let good = files()[0].clone();
    // Damaged: replaced.
    std::fs::write(&good, b"garbage").unwrap();
    assert_eq!(listing(&cfs, "main"), want);
    assert!(std::fs::metadata(&good).unwrap().len() > 100);
    // Stale (built from another stream object): ignored, replaced, removed.
    let stale = cache_dir.join(format!("{}.{}", src.c2, "ab".repeat(32)));
    std::fs::rename(&good, &stale).unwrap();
    assert_eq!(listing(&cfs, "main"), want);
    assert_eq!(files(), vec![good.clone()]);
    // gc drops caches of commits no longer stored.
    std::fs::remove_file(cfs.join("streams/refs/ostree/main")).unwrap();
    ours(&cfs, &["gc"]);
    assert!(files().is_empty(), "cache of a collected commit kept");
}

#[test]
fn damaged_commit_streams_name_the_commit() {
    let dir = scratch_dir("compat-damage");
    let cfs = init(&dir.join("cfs"), "sha256");
    let src = fixture().archive();
    cfsctl::ok(
        &cfs,
        &["ostree", "pull-local", src.path.to_str().unwrap(), "main"],
    );
    let link = cfs
        .join("streams")
        .join(format!("ostree-commit-{}", src.c2));
    let obj = cfs.join("streams").join(std::fs::read_link(&link).unwrap());
    let good = std::fs::read(&obj).unwrap();
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("truncated header", good[..40].to_vec()),
        ("corrupted", {
            let mut b = good.clone();
            let n = b.len();
            for x in &mut b[n - 200..n - 100] {
                *x ^= 0x5a;
            }
            b
        }),
    ];
    for (what, bytes) in damaged {
        let _ = std::fs::remove_dir_all(cfs.join("ostree/cache"));
        std::fs::write(&obj, &bytes).unwrap();
        for args in [
            &["ls", "main", "/"][..],
            &["ostree", "create-image", "main"][..],
            &["ostree", "compute-id", "main"][..],
            &["cat", "main:/small"][..],
        ] {
            let err = ours_fail(&cfs, args);
            assert!(
                err.contains(&src.c2),
                "{what}: {args:?}: error does not name the commit:\n{err}"
            );
        }
    }
    std::fs::write(&obj, &good).unwrap();
    ours(&cfs, &["ls", "main", "/"]);
}

#[test]
fn fuse_view_has_the_images_links() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch_dir("compat-fuse");
    let cfs = init(&dir.join("cfs"), "sha512");
    let src = fixture().repo("bare");
    cfsctl::ok(
        &cfs,
        &["ostree", "pull-local", src.path.to_str().unwrap(), "main"],
    );
    let dump = cfsctl::ok(&cfs, &["ostree", "dump", "main"]);
    // Path → nlink, from the dump (hardlink lines name their target).
    let mut nlink: BTreeMap<String, u64> = BTreeMap::new();
    let mut alias: BTreeMap<String, String> = BTreeMap::new();
    for l in dump.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let path = unescape(f[0]);
        if f[2].starts_with('@') {
            alias.insert(path, unescape(f[8]));
        } else {
            nlink.insert(path, f[3].parse().unwrap());
        }
    }
    assert!(!alias.is_empty(), "the fixture has hardlinked objects");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    ours(&cfs, &["mount", "main", mnt.to_str().unwrap()]);
    let check = || {
        for (p, n) in &nlink {
            let m = std::fs::symlink_metadata(mnt.join(p.trim_start_matches('/'))).unwrap();
            assert_eq!(m.nlink(), *n, "nlink of {p}");
        }
        for (p, target) in &alias {
            let a = std::fs::symlink_metadata(mnt.join(p.trim_start_matches('/'))).unwrap();
            let b = std::fs::symlink_metadata(mnt.join(target.trim_start_matches('/'))).unwrap();
            assert_eq!(a.ino(), b.ino(), "{p} is a hardlink of {target}");
            assert_eq!(a.nlink(), nlink[target], "nlink of {p}");
        }
    };
    let r = std::panic::catch_unwind(check);
    ours(&cfs, &["umount", mnt.to_str().unwrap()]);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// Undo composefs-dump(5) escapes (`\xNN`, `\\`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'x' && i + 3 < b.len() {
                out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                i += 4;
                continue;
            }
            let c = match b[i + 1] {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                c => c,
            };
            out.push(c);
            i += 2;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A rootfs-sized tree (6,000 files in 300 directories, sizes around both
/// inline thresholds, shared contents, symlinks), committed by ostree: the
/// same stream and image from either tool, in both algorithms.
#[test]
fn rootfs_sized_commit_is_the_same() {
    let dir = scratch_dir("compat-big");
    let tree = dir.join("tree");
    for d in 0..300u64 {
        let sub = tree.join(format!("usr/lib/d{d:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..20u64 {
            let n = d * 20 + f;
            // 1/4 shared contents; sizes 0..4 KiB, many near 64 and 128.
            let len = match n % 5 {
                0 => 60 + (n % 9) as usize,
                1 => 124 + (n % 9) as usize,
                _ => (n * 37 % 4096) as usize,
            };
            let seed = if n % 4 == 0 { n % 17 } else { n };
            common::write_file(
                &sub.join(format!("f{f}")),
                &common::pseudo_random(seed, len),
            );
        }
        std::os::unix::fs::symlink(format!("d{d:03}/f0"), tree.join(format!("usr/lib/l{d}")))
            .unwrap();
    }
    let src = dir.join("src");
    let s = src.to_str().unwrap();
    ostree_fixtures::ostree(&["init", "--repo", s, "--mode=archive"]);
    let c = ostree_fixtures::ostree(&[
        "commit",
        "--repo",
        s,
        "-b",
        "big",
        "-s",
        "big",
        "--no-xattrs",
        "--timestamp=@0",
        tree.to_str().unwrap(),
    ])
    .trim()
    .to_string();
    for &alg in ALGS {
        let cfs = init(&dir.join(format!("cfs-{alg}")), alg);
        let our = init_ours(&dir.join(format!("ours-{alg}")), alg);
        cfsctl::ok(&cfs, &["ostree", "pull-local", s, "big"]);
        ours(&our, &["ostree", "pull", s, "big"]);
        let (a, ta) = stream(&cfs, &c);
        let (b, tb) = stream(&our, &c);
        assert_eq!(ta, tb, "{alg}: stream object");
        assert!(a == b, "{alg}: stream bytes");
        let id = cfsctl::ok(&cfs, &["ostree", "compute-id", "big"]);
        assert_eq!(ours(&cfs, &["ostree", "compute-id", "big"]), id, "{alg}");
        assert_eq!(ours(&our, &["ostree", "create-image", "big"]), id, "{alg}");
        assert_eq!(listing_of(&cfs, "big"), listing_of(&our, "big"), "{alg}");
    }
}

fn listing_of(repo: &Path, name: &str) -> String {
    ["/usr/lib", "/usr/lib/d000", "/usr/lib/d299"]
        .iter()
        .map(|d| ours(repo, &["ls", name, d]))
        .collect()
}

/// Pulls through static deltas (from scratch, then from the parent) over
/// HTTP store the same streams as cfsctl's delta pulls.
#[test]
fn delta_pulls_store_cfsctls_streams() {
    let f = fixture();
    let dir = scratch_dir("compat-delta");
    let src = dir.join("src");
    ostree_fixtures::copy_repo(&f.archive().path, &src);
    let s = src.to_str().unwrap();
    ostree_fixtures::ostree(&["static-delta", "generate", "--repo", s, "--empty", "v1"]);
    ostree_fixtures::ostree(&["static-delta", "generate", "--repo", s, "main"]);
    ostree_fixtures::ostree(&["summary", "-u", "--repo", s]);
    let server = HttpServer::serve(&src);
    for &alg in ALGS {
        let cfs = init(&dir.join(format!("cfs-{alg}")), alg);
        let our = init_ours(&dir.join(format!("ours-{alg}")), alg);
        for r in ["v1", "main"] {
            cfsctl::ok(&cfs, &["ostree", "pull", &server.url(""), r]);
            let out = ours(&our, &["ostree", "pull", &server.url(""), r]);
            assert!(out.contains("delta: "), "{alg} {r}: {out}");
            assert!(
                !out.contains("delta: none"),
                "{alg} {r}: no delta used: {out}"
            );
        }
        for c in [&f.archive().c1, &f.archive().c2] {
            let (a, ta) = stream(&cfs, c);
            let (b, tb) = stream(&our, c);
            assert_eq!(ta, tb, "{alg}: stream object of {c}");
            assert!(a == b, "{alg}: stream bytes of {c}");
        }
    }
}

/// Repositories whose images are EROFS format 2 (cfsctl's legacy format)
/// and 0: the commit streams (which name the image made at pull) are the
/// same bytes, the images the same objects, compute-id agrees both ways.
#[test]
fn format_0_and_2_repositories_agree() {
    let f = fixture();
    let src = f.repo("bare");
    let s = src.path.to_str().unwrap();
    for version in ["0", "2"] {
        let dir = scratch_dir(&format!("compat-erofs-v{version}"));
        let cfs = dir.join("cfs");
        let out = cfsctl::run(&[
            OsStr::new("init"),
            OsStr::new("--insecure"),
            OsStr::new("--erofs-version"),
            OsStr::new(version),
            cfs.as_os_str(),
        ]);
        assert!(out.status.success(), "cfsctl init: {out:?}");
        let our = dir.join("ours");
        let out = composefs(
            &[
                OsStr::new("init"),
                OsStr::new("--insecure"),
                OsStr::new("--erofs-version"),
                OsStr::new(version),
                our.as_os_str(),
            ],
            None,
            &[],
        );
        assert!(out.status.success(), "composefs init: {out:?}");
        assert_eq!(
            std::fs::read(cfs.join("meta.json")).unwrap(),
            std::fs::read(our.join("meta.json")).unwrap(),
            "format {version}: meta.json"
        );
        cfsctl::ok(&cfs, &["ostree", "pull-local", s, "main"]);
        ours(&our, &["ostree", "pull", s, "main"]);
        let (a, ta) = stream(&cfs, &src.c2);
        let (b, tb) = stream(&our, &src.c2);
        assert_eq!(ta, tb, "format {version}: stream object");
        assert!(a == b, "format {version}: stream bytes differ");
        assert_eq!(images(&cfs), images(&our), "format {version}: images");
        let id = ours(&our, &["ostree", "compute-id", "main"]);
        assert_eq!(
            cfsctl::ok(&our, &["ostree", "compute-id", "main"]).trim(),
            id.trim(),
            "format {version}"
        );
        assert_eq!(
            ours(&cfs, &["ostree", "compute-id", "main"]).trim(),
            id.trim(),
            "format {version}"
        );
        let img = std::fs::canonicalize(our.join("images").join(id.trim())).unwrap();
        let out = std::process::Command::new("fsck.erofs")
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "format {version}: {out:?}");
    }
}
