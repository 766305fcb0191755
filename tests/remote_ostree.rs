//! Remote ostree commits as lazy trees (`composefs::ostree::remote`),
//! through the library API, against archive repositories made by the real
//! `ostree` CLI (one signed commit, a static delta present) served by nginx,
//! whose access log shows what was fetched: a whole remote tree read and
//! compared with `ostree checkout`; listing, diffing and reading one file
//! fetch what they need only; a corrupted object is refused and nothing of
//! it stored; signatures are required as for a pull; a second open reads
//! the log; `composefs ostree pull` afterwards resumes from it.
//!
//! Needs root (the fixture has foreign owners and security.* xattrs), and
//! ostree, nginx and gpg on $PATH.

mod common;
#[allow(unused_imports)]
#[path = "common/ostree.rs"]
mod ostree_fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use composefs::diff::{DiffOptions, diff_trees};
use composefs::ostree::Checksum;
use composefs::ostree::objects::{DirTree, FileHeader};
use composefs::ostree::remote::{RemoteOptions, open_tree};
use composefs::ostree::signature::Keyring;
use composefs::ostree::trust::Trust;
use composefs::repository::Repository;
use composefs::tree::{FileData, Ino, Kind, Listing, Tree};

use common::Repo;
use common::nginx::{Nginx, Request};
use ostree_fixtures::{
    ArchiveWriter, GpgHome, copy_repo, file_checksum, fixture, object_file, ostree, reachable,
    require_root, scratch_dir, xattrs,
};

/// The fixture's archive repository, copied, with commit 2 (`main`)
/// signed, a static delta to it from commit 1, and a summary.
struct Prepared {
    repo: PathBuf,
    /// The signer's public key (`gpg --export`).
    keyring: Vec<u8>,
    c1: String,
    c2: String,
    checkout1: PathBuf,
    checkout2: PathBuf,
}

fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| {
        require_root();
        let f = fixture();
        let a = f.archive();
        let repo = scratch_dir("remote").join("repo");
        copy_repo(&a.path, &repo);
        let r = repo.to_str().unwrap();
        let signer = GpgHome::new("Remote Signer <remote@example.com>");
        signer.sign_commit(&repo, &a.c2);
        ostree(&["static-delta", "generate", "--repo", r, "main"]);
        ostree(&["summary", "-u", "--repo", r]);
        let deltas = ostree(&["static-delta", "list", "--repo", r]);
        assert!(deltas.contains(&a.c2), "no static delta made: {deltas}");
        Prepared {
            repo,
            keyring: std::fs::read(&signer.keyring).unwrap(),
            c1: a.c1.clone(),
            c2: a.c2.clone(),
            checkout1: a.checkout1.clone(),
            checkout2: a.checkout2.clone(),
        }
    })
}

fn handle(r: &Repo) -> Repository {
    Repository::open(&r.path).unwrap()
}

fn plain() -> RemoteOptions {
    RemoteOptions::default()
}

fn requiring(keyring: &[u8]) -> RemoteOptions {
    RemoteOptions {
        trust: Trust {
            gpg: Some(Keyring::from_bytes(keyring).unwrap()),
            ed25519: None,
            require: true,
        },
        timeout: None,
    }
}

fn open(repo: &Repository, url: &str, rref: &str, opts: &RemoteOptions) -> Arc<dyn Tree> {
    open_tree(repo, url, rref, opts).unwrap_or_else(|e| panic!("open {url}#{rref}: {e:#}"))
}

fn is_filez(r: &Request) -> bool {
    r.path.ends_with(".filez")
}

/// `/objects/xx/yyy.EXT` of object `csum`.
fn object_uri(csum: &str, ext: &str) -> String {
    format!("/objects/{}/{}.{ext}", &csum[..2], &csum[2..])
}

fn paths(rs: &[Request]) -> BTreeSet<String> {
    rs.iter().map(|r| r.path.clone()).collect()
}

fn show(rs: &[Request]) -> String {
    rs.iter()
        .map(|r| format!("{} {} {} {}", r.method, r.path, r.status, r.bytes))
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn ino_of(tree: &dyn Tree, path: &str) -> Ino {
    tree.resolve_path(path.as_bytes())
        .unwrap_or_else(|e| panic!("resolving {path}: {e:#}"))
        .unwrap_or_else(|| panic!("no {path} in the tree"))
}

/// A regular file's bytes: through `content_object` and the repository's
/// object, or inline in its inode.
fn content(tree: &dyn Tree, repo: &Repository, ino: Ino) -> Vec<u8> {
    match tree.content_object(ino).unwrap_or_else(|e| panic!("{e:#}")) {
        Some(id) => {
            let mut v = Vec::new();
            repo.open_object(&id).unwrap().read_to_end(&mut v).unwrap();
            v
        }
        None => match &tree.inode(ino).unwrap().kind {
            Kind::Regular(FileData::Inline(b)) => b.clone(),
            k => panic!("inode {ino}: no object and no inline content: {k:?}"),
        },
    }
}

/// Compare the whole tree with a checkout: names, modes, owners, sizes,
/// xattrs, symlink targets, contents. Returns the number of paths.
fn compare_with_checkout(tree: &dyn Tree, repo: &Repository, checkout: &Path) -> usize {
    let mut problems = Vec::new();
    let mut n = 0;
    let mut stack = vec![(tree.root(), checkout.to_path_buf(), "/".to_string())];
    while let Some((ino, p, what)) = stack.pop() {
        n += 1;
        let m = std::fs::symlink_metadata(&p).unwrap();
        let i = tree
            .inode(ino)
            .unwrap_or_else(|e| panic!("{what}: inode: {e:#}"));
        let mut check = |field: &str, x: String, y: String| {
            if x != y {
                problems.push(format!("{what}: {field}: checkout {x}, remote {y}"));
            }
        };
        check(
            "mode",
            format!("{:o}", m.mode()),
            format!("{:o}", i.st_mode()),
        );
        check("uid", m.uid().to_string(), i.stat.uid.to_string());
        check("gid", m.gid().to_string(), i.stat.gid.to_string());
        let want_x = xattrs(&p);
        let got_x: BTreeMap<Vec<u8>, Vec<u8>> = i.xattrs.iter().cloned().collect();
        check("xattrs", format!("{want_x:?}"), format!("{got_x:?}"));
        if m.is_dir() {
            let mut want: Vec<Vec<u8>> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                .collect();
            want.sort();
            let entries = tree
                .readdir(ino)
                .unwrap_or_else(|e| panic!("{what}: readdir: {e:#}"));
            let got: Vec<Vec<u8>> = entries.iter().map(|e| e.name.clone()).collect();
            if want != got {
                problems.push(format!("{what}: entries differ"));
                continue;
            }
            for e in entries.iter() {
                let name = String::from_utf8_lossy(&e.name);
                let child = if what == "/" {
                    format!("/{name}")
                } else {
                    format!("{what}/{name}")
                };
                stack.push((e.ino, p.join(std::ffi::OsStr::from_bytes(&e.name)), child));
            }
            continue;
        }
        check("size", m.size().to_string(), i.size().to_string());
        if m.file_type().is_symlink() {
            let want = std::fs::read_link(&p).unwrap();
            match &i.kind {
                Kind::Symlink(t) if t.as_slice() == want.as_os_str().as_bytes() => {}
                k => problems.push(format!("{what}: symlink to {want:?}, remote {k:?}")),
            }
        } else {
            let want = std::fs::read(&p).unwrap();
            if content(tree, repo, ino) != want {
                problems.push(format!("{what}: content differs"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the remote tree differs from `ostree checkout` in {} ways:\n  {}",
        problems.len(),
        problems[..problems.len().min(40)].join("\n  ")
    );
    n
}

/// Walk every directory with `readdir_ids` (what `diff` lists by).
fn walk_ids(tree: &dyn Tree) -> usize {
    let mut n = 0;
    let mut stack = vec![tree.root()];
    let mut l = Listing::default();
    while let Some(dir) = stack.pop() {
        tree.readdir_ids(dir, &mut l).unwrap();
        for i in 0..l.len() {
            n += 1;
            assert!(l.id(i).is_some(), "an entry without a subtree id");
            if matches!(l.id(i), Some(composefs::tree::SubtreeId::OstreeDir { .. })) {
                stack.push(l.ino(i));
            }
        }
    }
    n
}

/// The whole signed commit, read through the remote tree (every file's
/// content through `content_object`), equals `ostree checkout`; a static
/// delta on the server changes nothing; afterwards a pull of the commit
/// fetches no file object at all.
#[test]
fn a_whole_remote_commit_reads_as_its_checkout() {
    let p = prepared();
    let nginx = Nginx::serve(&p.repo);
    let url = nginx.url("");
    let r = Repo::new();
    let repo = handle(&r);
    let tree = open(&repo, &url, "main", &requiring(&p.keyring));
    let n = compare_with_checkout(tree.as_ref(), &repo, &p.checkout2);
    assert!(n > 2000, "only {n} paths");
    // Each file object asked for at most twice (its first 64 KiB, then
    // whole when larger), no delta read.
    let reqs = nginx.requests();
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for q in reqs.iter().filter(|q| is_filez(q)) {
        *per.entry(&q.path).or_default() += 1;
    }
    assert!(per.values().all(|&k| k <= 2), "{per:?}");
    assert!(
        !reqs.iter().any(|q| q.path.contains("/deltas/")),
        "a delta was read:\n  {}",
        show(&reqs)
    );
    drop(tree);
    let mark = nginx.mark();
    r.ok(&["ostree", "pull", &url, "main"]);
    let pulled: Vec<Request> = nginx
        .requests_since(mark)
        .into_iter()
        .filter(is_filez)
        .collect();
    assert!(
        pulled.is_empty(),
        "the pull fetched file objects the tree had fetched:\n  {}",
        show(&pulled)
    );
    r.assert_fsck_ok();
}

/// Opening and listing fetch no file object; a file's content fetches that
/// object only; a second open reads the log; a pull afterwards fetches
/// exactly what was not fetched whole; the stored commit then opens from
/// the repository.
#[test]
fn fetches_only_what_is_read_and_a_pull_resumes() {
    let p = prepared();
    let nginx = Nginx::serve(&p.repo);
    let url = nginx.url("");
    let r = Repo::new();
    let repo = handle(&r);

    let tree = open(&repo, &url, "v1", &plain());
    let root = tree.readdir(tree.root()).unwrap();
    assert!(root.iter().any(|e| e.name == b"small"));
    let mut l = Listing::default();
    tree.readdir_ids(tree.root(), &mut l).unwrap();
    let wide = ino_of(tree.as_ref(), "wide");
    assert!(tree.readdir(wide).unwrap().len() > 1000);
    let reqs = nginx.requests();
    assert!(
        !reqs.iter().any(is_filez),
        "opening and listing fetched file objects:\n  {}",
        show(&reqs)
    );

    // One file read: its object only.
    let small = file_checksum(&p.repo, &p.c1, "small");
    let mark = nginx.mark();
    let ino = ino_of(tree.as_ref(), "small");
    assert_eq!(content(tree.as_ref(), &repo, ino), b"hello\n");
    let filez: Vec<Request> = nginx
        .requests_since(mark)
        .into_iter()
        .filter(is_filez)
        .collect();
    assert_eq!(
        paths(&filez),
        BTreeSet::from([object_uri(&small, "filez")]),
        "{}",
        show(&filez)
    );
    // A large file: its header from a part, its content whole.
    let large = file_checksum(&p.repo, &p.c1, "large");
    let ino = ino_of(tree.as_ref(), "large");
    let mark = nginx.mark();
    assert_eq!(tree.inode(ino).unwrap().size(), 8 << 20);
    let got = nginx.requests_since(mark);
    assert_eq!(got.len(), 1, "{}", show(&got));
    assert_eq!(
        (got[0].path.as_str(), got[0].status, got[0].bytes),
        (object_uri(&large, "filez").as_str(), 206, 64 << 10)
    );
    // A file's attributes only: the header, from one part.
    let medium = ino_of(tree.as_ref(), "medium");
    assert_eq!(tree.inode(medium).unwrap().size(), 300_000);

    // The attributes of a directory's files in turn (a readdirplus): from
    // the second one on, the next ones are fetched alongside.
    let names: Vec<Vec<u8>> = tree
        .readdir(wide)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .take(20)
        .collect();
    let stat = |name: &[u8]| {
        tree.inode(tree.lookup(wide, name).unwrap().unwrap())
            .unwrap()
    };
    for n in &names[..2] {
        stat(n);
    }
    let mark = nginx.mark();
    for n in &names[2..] {
        stat(n);
    }
    let got = nginx.requests_since(mark);
    assert!(got.is_empty(), "not fetched ahead:\n  {}", show(&got));

    // Several readers of one file at once: one fetch.
    let mark = nginx.mark();
    let barrier = std::sync::Barrier::new(4);
    let ids: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    tree.content_object(ino).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|i| i.is_some() && *i == ids[0]));
    let got = nginx.requests_since(mark);
    assert_eq!(got.len(), 1, "{}", show(&got));
    assert_eq!(got[0].status, 200);
    let want = std::fs::read(p.checkout1.join("large")).unwrap();
    assert!(content(tree.as_ref(), &repo, ino) == want);
    drop(tree);

    // A second open of the commit reads what is logged.
    let mark = nginx.mark();
    let tree = open(&repo, &url, "v1", &plain());
    tree.readdir(tree.root()).unwrap();
    tree.readdir(ino_of(tree.as_ref(), "wide")).unwrap();
    tree.inode(tree.root()).unwrap();
    let ino = ino_of(tree.as_ref(), "small");
    assert_eq!(content(tree.as_ref(), &repo, ino), b"hello\n");
    let ino = ino_of(tree.as_ref(), "large");
    assert!(tree.content_object(ino).unwrap().is_some());
    let again = nginx.requests_since(mark);
    let objects: Vec<&Request> = again
        .iter()
        .filter(|q| {
            [".filez", ".dirtree", ".dirmeta", ".commit"]
                .iter()
                .any(|e| q.path.ends_with(e))
        })
        .collect();
    assert!(
        objects.is_empty(),
        "a second open fetched again:\n  {}",
        show(&again)
    );

    // The pull, the tree still open, fetches every file object but those
    // fetched whole (`medium`'s header was only read: fetched again).
    let whole: BTreeSet<String> = nginx
        .requests()
        .into_iter()
        .filter(|q| is_filez(q) && q.status / 100 == 2)
        .filter(|q| {
            let hex = format!("{}{}", &q.path[9..11], &q.path[12..q.path.len() - 6]);
            q.status == 200
                || std::fs::metadata(object_file(&p.repo, &hex, "filez"))
                    .unwrap()
                    .len()
                    == q.bytes
        })
        .map(|q| q.path)
        .collect();
    assert!(whole.contains(&object_uri(&small, "filez")));
    assert!(whole.contains(&object_uri(&large, "filez")));
    assert!(!whole.contains(&object_uri(
        &file_checksum(&p.repo, &p.c1, "medium"),
        "filez"
    )));
    let all: BTreeSet<String> = reachable(&p.repo, &p.c1)
        .into_iter()
        .filter(|o| o.ends_with(".filez"))
        .map(|o| format!("/objects/{o}"))
        .collect();
    let mark = nginx.mark();
    r.ok(&["ostree", "pull", &url, "v1"]);
    let pulled: Vec<Request> = nginx
        .requests_since(mark)
        .into_iter()
        .filter(is_filez)
        .collect();
    let want: BTreeSet<String> = all.difference(&whole).cloned().collect();
    assert_eq!(pulled.len(), want.len(), "{}", show(&pulled));
    assert_eq!(paths(&pulled), want);
    r.assert_fsck_ok();
    drop(tree);

    // Stored now: opened from the repository, no object fetched.
    let mark = nginx.mark();
    let tree = open(&repo, &url, "v1", &plain());
    let ino = ino_of(tree.as_ref(), "small");
    assert_eq!(content(tree.as_ref(), &repo, ino), b"hello\n");
    let after = nginx.requests_since(mark);
    assert!(
        !after.iter().any(|q| q.path.starts_with("/objects/")),
        "{}",
        show(&after)
    );
}

/// Two remote commits compared: listings by `readdir_ids`, and `diff`
/// itself, fetch no file object; `diff` reports the same paths as a diff
/// of the two commits pulled, changed files by checksum.
#[test]
fn diffing_two_remote_commits_fetches_no_file() {
    let p = prepared();
    let nginx = Nginx::serve(&p.repo);
    let url = nginx.url("");
    let r = Repo::new();
    let repo = handle(&r);
    let a = open(&repo, &url, "v1", &plain());
    let b = open(&repo, &url, "main", &plain());
    assert!(walk_ids(a.as_ref()) > 2000);
    assert!(walk_ids(b.as_ref()) > 2000);
    let mut remote = Vec::new();
    diff_trees(
        None,
        a.as_ref(),
        b.as_ref(),
        &DiffOptions::default(),
        &mut |c| {
            remote.push((
                String::from_utf8_lossy(&c.path).into_owned(),
                c.status.letter(),
                c.aspects.names(),
            ));
            Ok(())
        },
    )
    .unwrap();
    let reqs = nginx.requests();
    assert!(
        !reqs.iter().any(is_filez),
        "fetched file objects:\n  {}",
        show(&reqs)
    );

    // The same diff of the commits pulled.
    let stored = Repo::new();
    stored.ok(&["ostree", "pull", &url, "v1"]);
    stored.ok(&["ostree", "pull", &url, "main"]);
    let srepo = handle(&stored);
    let sa = composefs::ostree::committree::CommitTree::open(
        &srepo,
        &Checksum::from_hex(&p.c1).unwrap(),
    )
    .unwrap();
    let sb = composefs::ostree::committree::CommitTree::open(
        &srepo,
        &Checksum::from_hex(&p.c2).unwrap(),
    )
    .unwrap();
    let mut local = Vec::new();
    diff_trees(None, &sa, &sb, &DiffOptions::default(), &mut |c| {
        local.push((
            String::from_utf8_lossy(&c.path).into_owned(),
            c.status.letter(),
            c.aspects.names(),
        ));
        Ok(())
    })
    .unwrap();
    let letters = |v: &[(String, char, Vec<&str>)]| -> Vec<(String, char)> {
        v.iter().map(|(p, s, _)| (p.clone(), *s)).collect()
    };
    assert_eq!(letters(&remote), letters(&local));
    assert!(remote.iter().any(|(p, s, _)| p == "/new-file" && *s == 'A'));
    for ((path, s, got), (_, _, want)) in remote.iter().zip(&local) {
        let dir = std::fs::symlink_metadata(p.checkout2.join(&path[1..])).is_ok_and(|m| m.is_dir());
        if *s == 'M' && !dir {
            assert_eq!(got, &["checksum"], "{path}");
        } else {
            assert_eq!(got, want, "{path}");
        }
    }
}

/// A corrupted `.filez` (small: whole in its first part; medium: verified
/// in memory; large: streamed into the store) fails `content_object` with
/// its checksum and URL, stores nothing and logs nothing (asked again, it
/// is fetched again); the other files read fine.
#[test]
fn a_corrupted_object_is_refused_and_nothing_stored() {
    let p = prepared();
    let served = scratch_dir("remote-corrupt").join("repo");
    copy_repo(&p.repo, &served);
    let sum = |path: &str| file_checksum(&served, &p.c1, path);
    let (small, text) = (sum("small"), sum("text"));
    // Another file's object in its place: a checksum mismatch.
    std::fs::copy(
        object_file(&served, &text, "filez"),
        object_file(&served, &small, "filez"),
    )
    .unwrap();
    for name in ["medium", "large"] {
        let f = object_file(&served, &sum(name), "filez");
        let mut b = std::fs::read(&f).unwrap();
        let at = b.len() - 1000;
        b[at] ^= 0x40;
        std::fs::write(&f, b).unwrap();
    }
    let nginx = Nginx::serve(&served);
    let url = nginx.url("");
    let r = Repo::new();
    let repo = handle(&r);
    let tree = open(&repo, &url, "v1", &plain());
    let objects_before = r.object_count();
    for name in ["small", "medium", "large"] {
        let c = sum(name);
        let ino = ino_of(tree.as_ref(), name);
        for attempt in 0..2 {
            let mark = nginx.mark();
            let e = format!("{:#}", tree.content_object(ino).unwrap_err());
            assert!(e.contains(&c), "{name}: {e}");
            assert!(
                e.contains(&format!("{url}{}", &object_uri(&c, "filez")[1..])),
                "{name}: no URL in {e}"
            );
            let got = nginx.requests_since(mark);
            assert!(
                got.iter().any(|q| q.path == object_uri(&c, "filez")),
                "{name}, attempt {attempt}: not fetched:\n  {}",
                show(&got)
            );
        }
    }
    assert_eq!(r.object_count(), objects_before);
    assert!(common::tmp_leftovers(&r.path).is_empty());
    let ino = ino_of(tree.as_ref(), "random-4k");
    assert_eq!(
        content(tree.as_ref(), &repo, ino),
        std::fs::read(p.checkout1.join("random-4k")).unwrap()
    );
    assert!(r.object_count() > objects_before);
}

/// Signatures as for a pull: the signed commit with its key and
/// `require`; the unsigned one refused; a key that did not sign refused.
#[test]
fn signatures_are_required_as_for_a_pull() {
    let p = prepared();
    let nginx = Nginx::serve(&p.repo);
    let url = nginx.url("");
    let r = Repo::new();
    let repo = handle(&r);
    let t = open(&repo, &url, "main", &requiring(&p.keyring));
    assert!(t.readdir(t.root()).is_ok());
    let e = open_tree(&repo, &url, "v1", &requiring(&p.keyring))
        .err()
        .map(|e| format!("{e:#}"))
        .expect("an unsigned commit was opened with signatures required");
    assert!(e.contains("not signed") && e.contains(&p.c1), "{e}");
    let no_key = RemoteOptions {
        trust: Trust {
            gpg: Some(Keyring::new()),
            ed25519: None,
            require: true,
        },
        timeout: None,
    };
    let e = open_tree(&repo, &url, "main", &no_key)
        .err()
        .map(|e| format!("{e:#}"))
        .expect("a commit was opened without a trusted signature");
    assert!(e.contains("no good signature"), "{e}");
    // Neither fetched a file object.
    assert!(!nginx.requests().iter().any(is_filez));
}

/// Other repository modes are refused, naming the mode.
#[test]
fn only_archive_repositories() {
    let f = fixture();
    let nginx = Nginx::serve(&f.repo("bare").path);
    let r = Repo::new();
    let e = open_tree(&handle(&r), &nginx.url(""), "main", &plain())
        .err()
        .map(|e| format!("{e:#}"))
        .expect("a bare repository was opened");
    assert!(e.contains("Bare") && e.contains("archive"), "{e}");
    let e = open_tree(&handle(&r), "/some/path", "main", &plain())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(e.contains("http"), "{e}");
}

/// Hand-made hostile objects: names with `..` or `/` in dirtrees, a header
/// claiming an absurd size, a truncated object: clear errors, no panic,
/// nothing stored.
#[test]
fn hostile_objects_are_errors() {
    require_root();
    let dir = scratch_dir("remote-hostile").join("repo");
    let w = ArchiveWriter::new(&dir);
    let fine = w.put_file(&ArchiveWriter::regular(b"fine\n"), b"fine\n");
    let lie = FileHeader {
        size: 1 << 50,
        ..ArchiveWriter::regular(b"x")
    };
    let absurd = ArchiveWriter::regular(b"x").checksum(b"x");
    w.put_as(&absurd, "filez", &ArchiveWriter::filez_bytes(&lie, b"x"));
    let cut = ArchiveWriter::regular(b"truncated").checksum(b"truncated");
    let bytes = ArchiveWriter::filez_bytes(&ArchiveWriter::regular(b"truncated"), b"truncated");
    w.put_as(&cut, "filez", &bytes[..6]);
    let m = w.dirmeta();
    let dots = w.dirtree(&DirTree {
        files: vec![("..".into(), fine)],
        dirs: vec![],
    });
    let slash = w.dirtree(&DirTree {
        files: vec![("a/b".into(), fine)],
        dirs: vec![],
    });
    let root = w.dirtree(&DirTree {
        files: vec![
            ("absurd".into(), absurd),
            ("fine".into(), fine),
            ("truncated".into(), cut),
        ],
        dirs: vec![("dots".into(), dots, m), ("slash".into(), slash, m)],
    });
    w.commit(&root, &m);
    let nginx = Nginx::serve(&dir);
    let url = nginx.url("");
    let r = Repo::new();
    let repo = handle(&r);
    let tree = open(&repo, &url, "main", &plain());
    assert_eq!(tree.readdir(tree.root()).unwrap().len(), 5);
    let objects_before = r.object_count();
    let ino = ino_of(tree.as_ref(), "fine");
    assert_eq!(content(tree.as_ref(), &repo, ino), b"fine\n");
    for (name, c, why) in [("absurd", absurd, "short"), ("truncated", cut, "truncated")] {
        let ino = ino_of(tree.as_ref(), name);
        for e in [
            tree.inode(ino).map(drop).unwrap_err(),
            tree.content_object(ino).map(drop).unwrap_err(),
        ] {
            let e = format!("{e:#}");
            assert!(e.contains(&c.to_hex()) && e.contains(why), "{name}: {e}");
        }
    }
    for (name, t) in [("dots", dots), ("slash", slash)] {
        let ino = ino_of(tree.as_ref(), name);
        for _ in 0..2 {
            let mark = nginx.mark();
            let e = format!("{:#}", tree.readdir(ino).unwrap_err());
            assert!(
                e.contains("invalid file name") && e.contains(&t.to_hex()),
                "{name}: {e}"
            );
            // Not logged: fetched again.
            assert!(
                nginx
                    .requests_since(mark)
                    .iter()
                    .any(|q| q.path == object_uri(&t.to_hex(), "dirtree"))
            );
        }
    }
    assert_eq!(r.object_count(), objects_before);
    assert!(common::tmp_leftovers(&r.path).is_empty());
}

/// The command line end to end: `composefs mount URL#REF` with the
/// signature flags shows what `ostree checkout` shows; a commit signed by
/// no trusted key is refused at mount time; `ls`, `cat` and `diff` take
/// the same names, and the diff of two remote commits fetches no file
/// object and prints what the diff of the pulled commits prints.
#[test]
fn the_cli_mounts_lists_cats_and_diffs_remote_commits() {
    let p = prepared();
    let nginx = Nginx::serve(&p.repo);
    let url = nginx.url("");
    let r = Repo::new();
    let keyring = r.scratch().join("trusted.gpg");
    std::fs::write(&keyring, &p.keyring).unwrap();
    let keyring = keyring.to_str().unwrap();

    let mnt = r.scratch().join("mnt");
    let m = common::Mounted::fuse_with(
        &r,
        &["--gpg-keyring", keyring, "--require-signatures"],
        &format!("{url}#main"),
        &mnt,
    );
    // Link counts aside: a lazy tree cannot count the names of a file
    // object across the whole commit (a checkout hardlinks them), and
    // says 1 for directories (the "not counted" convention find knows).
    let unlinked = |path: &Path| {
        let mut s = common::snapshot::snapshot(path, false);
        s.entries.values_mut().for_each(|e| e.nlink = 0);
        s.hardlinks.clear();
        s
    };
    common::snapshot::assert_same(
        &unlinked(&m.path),
        &unlinked(&p.checkout2),
        "FUSE mount of URL#main vs ostree checkout",
    );
    m.umount(&r);
    // v1 is not signed: refused when signatures are required.
    let err = r.fail(&[
        "mount",
        "--require-signatures",
        "--gpg-keyring",
        keyring,
        &format!("{url}#v1"),
        r.scratch().join("mnt").to_str().unwrap(),
    ]);
    common::assert_mentions(
        &err,
        &["signature"],
        "an unsigned commit mounted with --require-signatures",
    );

    let small = std::fs::read(p.checkout2.join("small")).unwrap();
    assert_eq!(r.ok(&["cat", &format!("{url}#main:/small")]), small);
    let ls = String::from_utf8(r.ok(&["ls", &format!("{url}#main:/")])).unwrap();
    assert!(ls.contains("small"), "ls URL#main:/ : {ls}");

    // show: the commit as opening it verified it, the tree from its
    // dirtrees; no file fetched.
    let fresh = Repo::new();
    let mark = nginx.mark();
    let shown =
        String::from_utf8(fresh.ok(&["show", "--gpg-keyring", keyring, &format!("{url}#main")]))
            .unwrap();
    common::assert_mentions(
        &shown,
        &[&p.c2, "not fetched", "Remote Signer"],
        "show URL#main",
    );
    let reqs = nginx.requests_since(mark);
    assert!(
        !reqs.iter().any(is_filez),
        "show fetched file objects:\n  {}",
        show(&reqs)
    );

    let fresh = Repo::new();
    let mark = nginx.mark();
    // Exit status 1, as diff(1): the trees differ.
    let out = fresh.run(
        &["diff", &format!("{url}#v1"), &format!("{url}#main")],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote = out.stdout;
    let reqs = nginx.requests_since(mark);
    assert!(
        !reqs.iter().any(is_filez),
        "the diff fetched file objects:\n  {}",
        show(&reqs)
    );
    let stored = Repo::new();
    stored.ok(&["ostree", "pull", &url, "v1"]);
    stored.ok(&["ostree", "pull", &url, "main"]);
    let out = stored.run(&["diff", &p.c1, &p.c2], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = out.stdout;
    assert_eq!(
        String::from_utf8_lossy(&remote),
        String::from_utf8_lossy(&local),
        "name-status of the remote diff vs of the pulled commits"
    );
}

/// The server going away under a FUSE mount of `URL#REF`: a file not
/// fetched yet fails with EIO and a log line naming its object, the mount
/// stays up and serves what it has, and the same file reads once the
/// server is back; a pull afterwards fetches only the rest.
#[test]
fn a_server_gone_fails_reads_with_eio_until_it_is_back() {
    let p = prepared();
    let mut nginx = Nginx::serve(&p.repo);
    let url = nginx.url("");
    let r = Repo::new();
    let log = r.scratch().join("daemon.log");
    let mnt = r.scratch().join("mnt");
    let m = common::Mounted::fuse_with(
        &r,
        &["--log", log.to_str().unwrap()],
        &format!("{url}#v1"),
        &mnt,
    );
    let small = std::fs::read(p.checkout1.join("small")).unwrap();
    let large = std::fs::read(p.checkout1.join("large")).unwrap();
    assert_eq!(std::fs::read(m.path.join("small")).unwrap(), small);
    // Listed (the root's attributes are here), not read.
    assert_eq!(
        std::fs::symlink_metadata(m.path.join("large"))
            .unwrap()
            .len(),
        large.len() as u64
    );

    nginx.stop();
    let err = std::fs::read(m.path.join("large")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(std::fs::read(m.path.join("small")).unwrap(), small);
    let object = file_checksum(&p.repo, &p.c1, "large");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&object),
        "the daemon's log does not name the object {object}:\n{logged}"
    );

    nginx.resume();
    assert_eq!(std::fs::read(m.path.join("large")).unwrap(), large);
    m.umount(&r);

    let mark = nginx.mark();
    r.ok(&["ostree", "pull", &url, "v1"]);
    let again: Vec<Request> = nginx
        .requests_since(mark)
        .into_iter()
        .filter(|q| q.path.ends_with(&object_uri(&object, "filez")))
        .collect();
    assert!(
        again.is_empty(),
        "the pull fetched the object the mount had:\n  {}",
        show(&again)
    );
    r.assert_fsck_ok();
}
