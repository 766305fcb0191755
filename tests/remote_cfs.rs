//! Remote names of a composefs repository served as plain files by nginx
//! (tests/common/nginx.rs, whose access log says what was asked for; and
//! once through `file://`):
//! `mount URL#NAME`, `ls`, `cat`, `diff`, `show` read the tree in place.
//!
//! The repositories: one made by `composefs` (ostree commits pulled with
//! `composefs ostree pull` from a repository the ostree CLI made, and an
//! image from `create-image`) and one made by `cfsctl` (`create-image`,
//! `oci pull`). Checked: the FUSE mount of `URL#NAME` shows what the
//! source's own mount of NAME shows, and `ostree checkout`; opening a
//! tree asks for metadata only (no file content), `cat` of one file for
//! exactly that file's object, and a later `fetch` for what was not
//! fetched yet; nothing is named in the repository that reads; a
//! corrupt object fails its own file only (EIO through FUSE, `cat`
//! naming the object) and is not stored; a server gone fails reads with
//! EIO while the mount serves what it has, and reads work again once it
//! is back; `diff` of two remote commits says what the local diff says;
//! bad names are refused with clear messages.
//!
//! Needs nginx, ostree, umoci and cfsctl on $PATH, root and /dev/fuse.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::nginx::{Nginx, Request};
use common::snapshot::{assert_same, snapshot};
use common::{Mounted, Repo, parse_dump, pseudo_random, require_tool, write_file};

fn ostree(args: &[&str]) {
    require_tool("ostree");
    let out = Command::new("ostree").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ostree {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setx(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting xattr {name} on {}: {e}", p.display()));
}

/// Forty lines of text, one of them changed in `version` 2.
fn motd(version: u32) -> Vec<u8> {
    (0..40)
        .map(|i| {
            if i == 20 && version == 2 {
                "line twenty, changed\n".to_string()
            } else {
                format!("line {i} of the message of the day\n")
            }
        })
        .collect::<String>()
        .into_bytes()
}

/// A tree with owners, modes, xattrs, symlinks, files inline and not;
/// `version` 2 changes, adds and removes a few.
fn populate(root: &Path, version: u32) {
    write_file(&root.join("usr/bin/tool"), &pseudo_random(1, 10_000));
    chmod(&root.join("usr/bin/tool"), 0o4755);
    write_file(&root.join("usr/lib/big"), &pseudo_random(2, 300_000));
    write_file(&root.join("usr/share/small"), b"tiny\n");
    write_file(&root.join("etc/config"), b"key=value\n");
    chmod(&root.join("etc/config"), 0o600);
    std::os::unix::fs::lchown(root.join("etc/config"), Some(1000), Some(1001)).unwrap();
    setx(&root.join("etc/config"), "user.note", b"\x00binary\xff");
    setx(&root.join("usr"), "user.dir", b"on a directory");
    write_file(&root.join("etc/motd"), &motd(version));
    symlink("../usr/bin/tool", root.join("etc/link")).unwrap();
    symlink("../nowhere", root.join("etc/dangling")).unwrap();
    std::fs::create_dir_all(root.join("etc/empty")).unwrap();
    chmod(&root.join("etc/empty"), 0o1777);
    write_file(
        &root.join("changed"),
        format!("version {version}\n").as_bytes(),
    );
    if version == 1 {
        write_file(&root.join("gone"), &pseudo_random(3, 5_000));
    } else {
        write_file(&root.join("usr/new"), &pseudo_random(4, 7_000));
    }
}

/// The served repository (made by `composefs`): `images/small` (version
/// 1 of the tree), `ostree/main` (version 1) and `ostree/next` (version
/// 2), committed by the ostree CLI into `ostree`.
struct Source {
    repo: Repo,
    tree: PathBuf,
    ostree: PathBuf,
}

fn source() -> Source {
    let repo = Repo::new();
    let s = repo.scratch();
    let tree = s.join("tree");
    populate(&tree, 1);
    repo.ok(&["create-image", tree.to_str().unwrap(), "small"]);
    let tree2 = s.join("tree2");
    populate(&tree2, 2);
    let orepo = s.join("ostree");
    let o = orepo.to_str().unwrap();
    ostree(&["init", "--repo", o, "--mode=archive"]);
    for (branch, t) in [("main", &tree), ("next", &tree2)] {
        ostree(&[
            "commit",
            "--repo",
            o,
            &format!("--branch={branch}"),
            "--subject=s",
            t.to_str().unwrap(),
        ]);
        repo.ok(&["ostree", "pull", o, branch]);
    }
    Source {
        repo,
        tree,
        ostree: orepo,
    }
}

/// The content objects (hex) of the files of `name` in `repo`.
fn content_objects(repo: &Repo, name: &str) -> BTreeSet<String> {
    parse_dump(&repo.ok(&["dump", name]))
        .into_iter()
        .filter_map(|l| l.digest)
        .collect()
}

/// The content object of file `path` (`/usr/bin/tool`) of `name`.
fn object_of(repo: &Repo, name: &str, path: &str) -> String {
    let dump = parse_dump(&repo.ok(&["dump", name]));
    common::dump_line(&dump, path)
        .digest
        .clone()
        .unwrap_or_else(|| panic!("{name}:{path} has no object"))
}

/// The object a request asked for (hex), if it asked for one.
fn object_hex(r: &Request) -> Option<String> {
    r.path.strip_prefix("/objects/").map(|p| p.replace('/', ""))
}

fn objects_asked(asked: &[Request]) -> Vec<String> {
    asked.iter().filter_map(object_hex).collect()
}

fn show(asked: &[Request]) -> String {
    asked
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Only what opening a tree needs was asked for: `meta.json`, the name's
/// ref, and objects that are no file's content (streams, images).
fn assert_metadata_only(asked: &[Request], content: &BTreeSet<String>, what: &str) {
    assert!(
        asked.iter().any(|r| r.path == "/meta.json"),
        "{what}: meta.json was not asked for:\n  {}",
        show(asked)
    );
    for r in asked {
        let expected = r.path == "/meta.json"
            || r.path.starts_with("/streams/refs/")
            || r.path.starts_with("/images/refs/")
            || object_hex(r).is_some_and(|h| !content.contains(&h));
        assert!(
            expected && r.status == 200 && r.method == "GET",
            "{what}: {} {} {} was asked for:\n  {}",
            r.method,
            r.path,
            r.status,
            show(asked)
        );
    }
}

/// The repository that read names nothing: no ref, no entry.
fn assert_nothing_named(repo: &Repo) {
    assert_eq!(repo.ref_names(), Vec::<String>::new(), "stream refs");
    assert_eq!(
        repo.stream_entries(),
        Vec::<String>::new(),
        "stream entries"
    );
    let images: Vec<_> = std::fs::read_dir(repo.path.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "refs")
        .collect();
    assert!(images.is_empty(), "image entries: {images:?}");
    let image_refs = std::fs::read_dir(repo.path.join("images/refs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(image_refs, 0, "image refs");
}

fn errno(r: std::io::Result<Vec<u8>>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn mounts_fetch_metadata_first_and_show_what_local_mounts_and_checkouts_show() {
    let src = source();
    let server = Nginx::serve(&src.repo.path);
    let url = server.url("");
    for name in ["ostree/main", "images/small"] {
        // (Each in a repository of its own: the two share contents.)
        let dst = Repo::new();
        let content = content_objects(&src.repo, name);
        assert!(content.len() >= 4, "{name}: {content:?}");
        let mark = server.mark();
        let mnt = dst
            .scratch()
            .join(format!("remote-{}", name.replace('/', "_")));
        let m = Mounted::fuse(&dst, &format!("{url}#{name}"), &mnt);

        // The root listed and looked at: no file content asked for.
        let mut top: Vec<String> = std::fs::read_dir(&m.path)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                e.metadata().unwrap();
                e.file_name().to_string_lossy().into_owned()
            })
            .collect();
        top.sort();
        assert_eq!(top, ["changed", "etc", "gone", "usr"], "{name}");
        let asked = server.requests_since(mark);
        assert_metadata_only(&asked, &content, name);
        assert_nothing_named(&dst);

        // Everything: as the source's own mount shows it.
        let local = Mounted::fuse(
            &src.repo,
            name,
            &src.repo
                .scratch()
                .join(format!("local-{}", name.replace('/', "_"))),
        );
        let got = snapshot(&m.path, true);
        assert_same(&got, &snapshot(&local.path, true), name);
        if name.starts_with("ostree/") {
            // (`create-image` keeps only the xattrs composefs-rs allows.)
            assert_eq!(
                got.entries[&b"etc/config"[..]].xattrs[&b"user.note"[..]],
                b"\x00binary\xff",
                "{name}"
            );
        }
        // Each content object asked for once, and nothing else new.
        let mut asked = objects_asked(&server.requests_since(mark));
        asked.retain(|h| content.contains(h));
        let distinct: BTreeSet<String> = asked.iter().cloned().collect();
        assert_eq!(distinct, content, "{name}: contents fetched");
        assert_eq!(asked.len(), distinct.len(), "{name}: {asked:?}");
        assert_nothing_named(&dst);
        m.umount(&dst);
        dst.assert_fsck_ok();
    }

    // The commit is what `ostree checkout` gives.
    let dst = Repo::new();
    let checkout = src.repo.scratch().join("checkout");
    let o = src.ostree.to_str().unwrap();
    ostree(&["checkout", "--repo", o, "main", checkout.to_str().unwrap()]);
    let mnt = dst.scratch().join("again");
    let m = Mounted::fuse(&dst, &format!("{url}#ostree/main"), &mnt);
    assert_same(
        &snapshot(&m.path, false),
        &snapshot(&checkout, false),
        "URL#ostree/main vs ostree checkout",
    );
    m.umount(&dst);
    dst.assert_fsck_ok();
}

#[test]
fn cat_fetches_one_object_and_a_later_fetch_the_rest() {
    let src = source();
    let server = Nginx::serve(&src.repo.path);
    let url = server.url("");
    let dst = Repo::new();
    let name = "ostree/main";
    let content = content_objects(&src.repo, name);
    let tool = object_of(&src.repo, name, "/usr/bin/tool");

    let mark = server.mark();
    let out = dst.ok(&["cat", &format!("{url}#{name}:/usr/bin/tool")]);
    assert_eq!(out, std::fs::read(src.tree.join("usr/bin/tool")).unwrap());
    let asked = server.requests_since(mark);
    let contents: Vec<String> = objects_asked(&asked)
        .into_iter()
        .filter(|h| content.contains(h))
        .collect();
    assert_eq!(contents, std::slice::from_ref(&tool), "{}", show(&asked));
    assert_nothing_named(&dst);

    // Again: the object is stored; no object at all is asked for.
    let mark = server.mark();
    dst.ok(&["cat", &format!("{url}#{name}:/usr/bin/tool")]);
    let asked = server.requests_since(mark);
    assert!(objects_asked(&asked).is_empty(), "{}", show(&asked));

    // `ls` as of the stored tree (an image with its directory sizes too).
    for n in [name, "images/small"] {
        for p in ["/", "/etc"] {
            assert_eq!(
                String::from_utf8(dst.ok(&["ls", &format!("{url}#{n}:{p}")])).unwrap(),
                String::from_utf8(src.repo.ok(&["ls", &format!("{n}:{p}")])).unwrap(),
                "ls {n}:{p}"
            );
        }
    }
    // `show` as of the stored commit (no local name points to it).
    let json = |r: &Repo, n: &str| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_slice(&r.ok(&["show", "--json", n])).unwrap();
        v.as_object_mut().unwrap().remove("refs");
        v
    };
    assert_eq!(
        json(&dst, &format!("{url}#{name}")),
        json(&src.repo, name),
        "show"
    );

    // A fetch of the name asks for the contents not fetched yet only.
    let mark = server.mark();
    let out = String::from_utf8(dst.ok(&["fetch", &url, name])).unwrap();
    assert!(
        out.contains(&format!(": fetched {} objects", content.len() - 1)),
        "{out}"
    );
    let asked: BTreeSet<String> = objects_asked(&server.requests_since(mark))
        .into_iter()
        .collect();
    let mut rest = content.clone();
    rest.remove(&tool);
    assert_eq!(asked, rest, "the fetch after the cat");
    dst.assert_fsck_ok();
    assert_eq!(dst.ok(&["dump", name]), src.repo.ok(&["dump", name]));

    // The same through a file:// URL (the repository's directory).
    let other = Repo::new();
    let file_url = format!("file://{}", src.repo.path.display());
    assert_eq!(
        other.ok(&["cat", &format!("{file_url}#images/small:/usr/lib/big")]),
        std::fs::read(src.tree.join("usr/lib/big")).unwrap()
    );
    assert_nothing_named(&other);
}

/// Flip a byte of the object holding `data` in `repo`; its hex.
fn corrupt_object_of(repo: &Repo, data: &[u8]) -> String {
    let (hex, path) = repo
        .objects()
        .into_iter()
        .find(|(_, p)| std::fs::read(p).unwrap() == data)
        .expect("no object holds the data");
    let mut bad = data.to_vec();
    bad[1000] ^= 0x40;
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&path, perm).unwrap();
    std::fs::write(&path, &bad).unwrap();
    hex
}

#[test]
fn a_corrupt_object_fails_its_file_only_and_is_not_stored() {
    let src = source();
    let big = std::fs::read(src.tree.join("usr/lib/big")).unwrap();
    let tool = std::fs::read(src.tree.join("usr/bin/tool")).unwrap();
    let hex = corrupt_object_of(&src.repo, &big);
    let server = Nginx::serve(&src.repo.path);
    let remote = format!("{}#images/small", server.url(""));
    let dst = Repo::new();

    let err = dst.fail(&["cat", &format!("{remote}:/usr/lib/big")]);
    assert!(err.contains(&hex), "the object is not named: {err}");
    assert!(err.contains("corrupt"), "{err}");
    assert!(!dst.objects().iter().any(|(h, _)| *h == hex));
    assert_eq!(dst.ok(&["cat", &format!("{remote}:/usr/bin/tool")]), tool);

    let log = dst.scratch().join("daemon.log");
    let mnt = dst.scratch().join("mnt");
    let m = Mounted::fuse_with(&dst, &["--log", log.to_str().unwrap()], &remote, &mnt);
    assert_eq!(
        errno(std::fs::read(m.path.join("usr/lib/big"))),
        Some(libc::EIO)
    );
    assert_eq!(std::fs::read(m.path.join("usr/bin/tool")).unwrap(), tool);
    assert_eq!(
        std::fs::read(m.path.join("etc/motd")).unwrap(),
        motd(1),
        "another file"
    );
    // Asked again: the same answer, the mount still up.
    assert_eq!(
        errno(std::fs::read(m.path.join("usr/lib/big"))),
        Some(libc::EIO)
    );
    assert!(std::fs::read_dir(m.path.join("usr")).unwrap().count() >= 3);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&hex),
        "the log does not name the object:\n{logged}"
    );
    assert!(!dst.objects().iter().any(|(h, _)| *h == hex));
    m.umount(&dst);
    dst.assert_fsck_ok();
}

#[test]
fn a_server_gone_fails_reads_with_eio_and_they_work_once_it_is_back() {
    let src = source();
    let mut server = Nginx::serve(&src.repo.path);
    let remote = format!("{}#ostree/main", server.url(""));
    let dst = Repo::new();
    let log = dst.scratch().join("daemon.log");
    let mnt = dst.scratch().join("mnt");
    let m = Mounted::fuse_with(&dst, &["--log", log.to_str().unwrap()], &remote, &mnt);
    let tool = std::fs::read(src.tree.join("usr/bin/tool")).unwrap();
    let big = std::fs::read(src.tree.join("usr/lib/big")).unwrap();
    assert_eq!(std::fs::read(m.path.join("usr/bin/tool")).unwrap(), tool);

    server.stop();
    assert_eq!(
        errno(std::fs::read(m.path.join("usr/lib/big"))),
        Some(libc::EIO)
    );
    // What was fetched still reads; metadata is all here.
    assert_eq!(std::fs::read(m.path.join("usr/bin/tool")).unwrap(), tool);
    assert_eq!(
        std::fs::symlink_metadata(m.path.join("usr/lib/big"))
            .unwrap()
            .len(),
        big.len() as u64
    );
    assert!(std::fs::read_dir(m.path.join("etc")).unwrap().count() >= 5);
    let big_hex = object_of(&src.repo, "ostree/main", "/usr/lib/big");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&big_hex),
        "the log does not name the object:\n{logged}"
    );

    server.resume();
    assert_eq!(std::fs::read(m.path.join("usr/lib/big")).unwrap(), big);
    m.umount(&dst);
    dst.assert_fsck_ok();

    // A fetch of the name asks for what the mount did not fetch only.
    let content = content_objects(&src.repo, "ostree/main");
    let read: BTreeSet<String> = ["/usr/bin/tool", "/usr/lib/big"]
        .iter()
        .map(|p| object_of(&src.repo, "ostree/main", p))
        .collect();
    let mark = server.mark();
    let out = String::from_utf8(dst.ok(&["fetch", &server.url(""), "ostree/main"])).unwrap();
    let rest: BTreeSet<String> = content.difference(&read).cloned().collect();
    assert!(!rest.is_empty());
    assert!(
        out.contains(&format!(": fetched {} objects", rest.len())),
        "{out}"
    );
    let asked: BTreeSet<String> = objects_asked(&server.requests_since(mark))
        .into_iter()
        .collect();
    assert_eq!(asked, rest, "the fetch after the mount");
    dst.assert_fsck_ok();
}

#[test]
fn diff_of_two_remote_commits_says_what_the_local_diff_says() {
    let src = source();
    let server = Nginx::serve(&src.repo.path);
    let url = server.url("");
    let dst = Repo::new();
    let (a, b) = (format!("{url}#ostree/main"), format!("{url}#ostree/next"));
    for opts in [&[][..], &["--content"][..], &["--stat"][..]] {
        let mut local: Vec<&str> = vec!["diff"];
        local.extend_from_slice(opts);
        let mut remote = local.clone();
        local.extend(["ostree/main", "ostree/next"]);
        remote.extend([a.as_str(), b.as_str()]);
        let want = src.repo.run(&local, None);
        let got = dst.run(&remote, None);
        assert_eq!(want.status.code(), Some(1), "{opts:?}: {want:?}");
        assert_eq!(got.status.code(), Some(1), "{opts:?}: {got:?}");
        assert_eq!(
            String::from_utf8(got.stdout).unwrap(),
            String::from_utf8(want.stdout).unwrap(),
            "diff {opts:?}"
        );
    }
    dst.assert_fsck_ok();
}

/// A repository made by cfsctl (`init --insecure`), holding `create-image`
/// of a tree as `images/c` and an OCI image of it as `oci/img`.
fn cfsctl_repo(dir: &Path) -> PathBuf {
    require_tool("umoci");
    let repo = dir.join("repo");
    let tree = dir.join("tree");
    write_file(&tree.join("usr/bin/tool"), &pseudo_random(5, 10_000));
    write_file(&tree.join("usr/lib/big"), &pseudo_random(6, 300_000));
    write_file(&tree.join("usr/share/small"), b"tiny\n");
    write_file(&tree.join("etc/conf"), &pseudo_random(7, 100));
    chmod(&tree.join("etc/conf"), 0o640);
    symlink("../usr/bin/tool", tree.join("etc/link")).unwrap();
    let init = common::cfsctl::run(&[
        std::ffi::OsStr::new("init"),
        std::ffi::OsStr::new("--insecure"),
        repo.as_os_str(),
    ]);
    assert!(init.status.success(), "cfsctl init: {init:?}");
    common::cfsctl::ok(&repo, &["create-image", tree.to_str().unwrap(), "c"]);
    let tar = dir.join("layer.tar");
    common::make_tar(&tree, &tar, &[]);
    let layout = dir.join("layout");
    common::umoci_image(&layout, "t", &[&tar]);
    common::cfsctl::ok(
        &repo,
        &["oci", "pull", &format!("oci:{}:t", layout.display()), "img"],
    );
    repo
}

#[test]
fn a_cfsctl_repository_mounts_as_its_own_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let theirs = Repo {
        path: cfsctl_repo(tmp.path()),
        tmp,
    };
    let server = Nginx::serve(&theirs.path);
    let url = server.url("");
    let dst = Repo::new();
    for name in ["images/c", "oci/img"] {
        let content = content_objects(&theirs, name);
        let mark = server.mark();
        let m = Mounted::fuse(
            &dst,
            &format!("{url}#{name}"),
            &dst.scratch().join(name.replace('/', "_")),
        );
        std::fs::read_dir(&m.path).unwrap().for_each(drop);
        assert_metadata_only(&server.requests_since(mark), &content, name);
        let local = Mounted::fuse(
            &theirs,
            name,
            &theirs.scratch().join(name.replace('/', "_")),
        );
        assert_same(
            &snapshot(&m.path, true),
            &snapshot(&local.path, true),
            &format!("{name} of cfsctl's repository"),
        );
        m.umount(&dst);
    }
    assert_nothing_named(&dst);
    dst.assert_fsck_ok();
}

#[test]
fn bad_remote_names_are_refused_clearly() {
    let src = source();
    let server = Nginx::serve(&src.repo.path);
    let url = server.url("");
    let empty = tempfile::tempdir().unwrap();
    let nothing = Nginx::serve(empty.path());
    let dst = Repo::new();
    let mnt = dst.scratch().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = mnt.to_str().unwrap();

    let err = dst.fail(&["ls", &format!("{url}#")]);
    assert!(err.contains("nothing after '#'"), "{err}");
    let err = dst.fail(&["mount", "ftp://x#y", m]);
    assert!(err.contains("ftp://") && err.contains("URL#REF"), "{err}");
    let err = dst.fail(&["cat", "ftp://x#y:/etc/motd"]);
    assert!(err.contains("ftp://"), "{err}");
    let err = dst.fail(&["ls", &format!("{}#images/small", nothing.url(""))]);
    assert!(
        err.contains("serves neither")
            && err.contains(&nothing.url("config"))
            && err.contains(&nothing.url("meta.json")),
        "{err}"
    );
    let err = dst.fail(&["ls", &format!("{url}#small")]);
    assert!(err.contains("images/NAME"), "{err}");
    let err = dst.fail(&["mount", &format!("{url}#images/nothing"), m]);
    assert!(
        err.contains("images/refs/nothing") && err.contains("not found"),
        "{err}"
    );
    let err = dst.fail(&["mount", "--kernel", &format!("{url}#images/small"), m]);
    assert!(err.contains("remote"), "{err}");
    assert!(!common::is_mountpoint(&mnt));

    // A repository of the other algorithm cannot take the objects.
    let other = Repo::with_args(&["--hash", "sha256"]);
    let err = other.fail(&["ls", &format!("{url}#images/small")]);
    assert!(err.contains("cannot be shared"), "{err}");

    // A repository this tool may not write to is refused up front.
    let meta = dst.path.join("meta.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    v["features"]["read-only-compatible"] = serde_json::json!(["from-the-future"]);
    std::fs::remove_file(&meta).unwrap();
    std::fs::write(&meta, serde_json::to_vec(&v).unwrap()).unwrap();
    let mark = server.mark();
    let err = dst.fail(&["mount", &format!("{url}#images/small"), m]);
    assert!(err.contains("cannot be written"), "{err}");
    assert!(server.requests_since(mark).is_empty());
}

#[test]
fn readers_of_one_file_at_once_fetch_it_once() {
    let src = source();
    let server = Nginx::serve(&src.repo.path);
    let remote = format!("{}#ostree/next", server.url(""));
    let dst = Repo::new();
    let m = Mounted::fuse(&dst, &remote, &dst.scratch().join("mnt"));
    let big = std::fs::read(src.tree.join("usr/lib/big")).unwrap();
    let big_hex = object_of(&src.repo, "ostree/next", "/usr/lib/big");
    let mark = server.mark();
    let paths = ["usr/lib/big", "usr/new", "usr/bin/tool", "etc/motd"];
    std::thread::scope(|s| {
        for i in 0..8 {
            let p = m.path.join(if i % 2 == 0 {
                paths[0]
            } else {
                paths[i / 2 % 4]
            });
            let big = &big;
            s.spawn(move || {
                let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                if p.ends_with("usr/lib/big") {
                    assert!(got == *big, "{} differs", p.display());
                }
            });
        }
    });
    let asked = objects_asked(&server.requests_since(mark));
    assert_eq!(
        asked.iter().filter(|h| **h == big_hex).count(),
        1,
        "{asked:?}"
    );
    let distinct: BTreeSet<&String> = asked.iter().collect();
    assert_eq!(
        distinct.len(),
        asked.len(),
        "an object asked for twice: {asked:?}"
    );
    m.umount(&dst);
    dst.assert_fsck_ok();
}

/// A walk's read-ahead fetches too: once a listed directory's first file
/// is read through the FUSE view, the other files' objects are fetched
/// (in parallel, verified, stored) without being read, and then read
/// from the repository.
#[test]
fn reading_a_listed_directory_fetches_its_next_files_ahead() {
    let src = Repo::new();
    let tree = src.scratch().join("tree");
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("d/f{i:02}"), pseudo_random(100 + i, 20_000)))
        .collect();
    for (name, data) in &files {
        write_file(&tree.join(name), data);
    }
    src.ok(&["create-image", tree.to_str().unwrap(), "many"]);
    let server = Nginx::serve(&src.path);
    let dst = Repo::new();
    let mnt = dst.scratch().join("mnt");
    let m = Mounted::fuse(&dst, &format!("{}#images/many", server.url("")), &mnt);
    let wanted = content_objects(&src, "images/many");
    assert_eq!(wanted.len(), files.len());
    let stored = || -> BTreeSet<String> {
        common::list_objects(&dst.path)
            .into_iter()
            .map(|(hex, _)| hex)
            .filter(|h| wanted.contains(h))
            .collect()
    };
    assert!(stored().is_empty(), "mounting fetched file contents");

    assert_eq!(
        std::fs::read_dir(m.path.join("d")).unwrap().count(),
        files.len()
    );
    assert_eq!(std::fs::read(m.path.join(&files[0].0)).unwrap(), files[0].1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stored().len() < files.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "read ahead: {} of {} objects fetched",
            stored().len(),
            files.len()
        );
        std::thread::yield_now();
    }
    let mark = server.mark();
    for (name, data) in &files {
        assert_eq!(&std::fs::read(m.path.join(name)).unwrap(), data, "{name}");
    }
    let again = objects_asked(&server.requests_since(mark));
    assert!(
        again.is_empty(),
        "read again after the read-ahead: {again:?}"
    );
    m.umount(&dst);
    dst.assert_fsck_ok();
}
