//! `composefs fetch URL NAME`: a repository made by this tool (an image
//! from `create-image`, an ostree commit from `ostree pull`, an OCI image
//! from `oci pull`) and one made by `cfsctl`, served by python's
//! http.server (whose access log tells what was asked for) or read through
//! `file://`, fetched into empty repositories: fsck is clean, `dump` shows
//! the same tree as in the source, a second fetch asks for no object, and
//! a damaged object fails the fetch, named, with no ref published.
//!
//! Needs python3, ostree and umoci on $PATH (cfsctl for the last test).

mod common;
#[path = "common/ostree.rs"]
#[allow(unused_imports)]
mod ostree_fixtures;

use std::path::Path;

use common::{Repo, pseudo_random, write_file};
use ostree_fixtures::{HttpServer, ostree, show_requests};

/// A small tree: a `usr/` (so that an OCI image gets a composefs image),
/// files over and under 64 bytes, a symlink, an empty file, a subdirectory.
fn small_tree(root: &Path, seed: u64) {
    write_file(&root.join("usr/bin/tool"), &pseudo_random(seed, 10_000));
    write_file(&root.join("usr/lib/big"), &pseudo_random(seed + 1, 300_000));
    write_file(&root.join("usr/share/small"), b"tiny\n");
    write_file(&root.join("etc/empty"), b"");
    write_file(&root.join("etc/conf"), &pseudo_random(seed + 2, 100));
    std::os::unix::fs::symlink("../usr/bin/tool", root.join("etc/link")).unwrap();
}

/// The source repository: `images/small`, `ostree/main`, `oci/app:1`.
fn source() -> Repo {
    common::require_tool("python3");
    common::require_tool("ostree");
    common::require_tool("umoci");
    let src = Repo::new();
    let s = src.scratch();
    let tree = s.join("tree");
    small_tree(&tree, 1);
    src.ok(&["create-image", tree.to_str().unwrap(), "small"]);

    let orepo = s.join("ostree");
    let otree = s.join("otree");
    small_tree(&otree, 2);
    let o = orepo.to_str().unwrap();
    ostree(&["init", "--repo", o, "--mode=archive"]);
    ostree(&[
        "commit",
        "--repo",
        o,
        "--branch=main",
        "--subject=s",
        "--tree",
        &format!("dir={}", otree.display()),
    ]);
    src.ok(&["ostree", "pull", o, "main"]);

    let ltree = s.join("ltree");
    small_tree(&ltree, 3);
    let tar = s.join("layer.tar");
    common::make_tar(&ltree, &tar, &[]);
    let layout = s.join("layout");
    common::umoci_image(&layout, "t", &[&tar]);
    src.ok(&[
        "oci",
        "pull",
        &format!("oci:{}:t", layout.display()),
        "--name",
        "localhost/app:1",
    ]);
    src
}

const NAMES: [&str; 3] = ["images/small", "ostree/main", "oci/localhost/app:1"];

fn fetch_ok(dst: &Repo, url: &str, name: &str) -> String {
    String::from_utf8(dst.ok(&["fetch", url, name])).unwrap()
}

#[test]
fn fetch_over_http_into_an_empty_repository_then_again() {
    let src = source();
    let server = HttpServer::serve(&src.path);
    let url = server.url("");
    let dst = Repo::new();
    for name in NAMES {
        let mark = server.mark();
        let out = fetch_ok(&dst, &url, name);
        assert!(out.contains(&format!(" {name}: fetched ")), "{out}");
        let asked = server.object_requests_since(mark);
        assert!(!asked.is_empty(), "{name}: no object fetched");
        assert!(
            asked.iter().all(|r| r.status == 200),
            "{name}: {}",
            show_requests(&asked)
        );
        assert_eq!(
            dst.ok(&["dump", name]),
            src.ok(&["dump", name]),
            "{name}: the fetched tree differs"
        );
    }
    dst.assert_fsck_ok();
    // What the pulls name, the fetch names too.
    assert_eq!(dst.ok(&["refs"]), src.ok(&["refs"]));
    assert_eq!(dst.ok(&["oci", "images"]), src.ok(&["oci", "images"]));
    assert_eq!(dst.ok(&["ostree", "list"]), src.ok(&["ostree", "list"]));
    assert!(
        !dst.ok(&["ls", "oci/localhost/app:1", "/usr/bin"])
            .is_empty()
    );

    // Again: nothing is asked for but the root.
    for name in NAMES {
        let mark = server.mark();
        let out = fetch_ok(&dst, &url, name);
        assert!(out.contains(": fetched 0 objects"), "{out}");
        let asked = server.object_requests_since(mark);
        assert!(asked.is_empty(), "{name}: {}", show_requests(&asked));
    }
    dst.assert_fsck_ok();

    // A collection keeps everything: every ref reaches what it needs.
    dst.ok(&["gc"]);
    dst.assert_fsck_ok();
    for name in NAMES {
        assert_eq!(dst.ok(&["dump", name]), src.ok(&["dump", name]));
    }
}

#[test]
fn fetch_through_file_urls_and_stream_names() {
    let src = source();
    let dst = Repo::new();
    let url = format!("file://{}", src.path.display());
    let out = fetch_ok(&dst, &url, "ostree/main");
    assert!(out.starts_with("ostree-commit-"), "{out}");
    assert_eq!(
        dst.ok(&["dump", "ostree/main"]),
        src.ok(&["dump", "ostree/main"])
    );
    // A stream by its content id: linked, not named.
    let entry = src
        .stream_entries()
        .into_iter()
        .find(|e| e.starts_with("oci-config-"))
        .unwrap();
    let out = fetch_ok(&dst, &url, &format!("streams/{entry}"));
    assert!(out.starts_with(&entry), "{out}");
    assert!(dst.stream_entries().contains(&entry));
    dst.assert_fsck_ok();
    // A content id the content does not have is refused.
    let wrong = entry.replace("oci-config-", "oci-layer-");
    std::os::unix::fs::symlink(
        std::fs::read_link(src.path.join("streams").join(&entry)).unwrap(),
        src.path.join("streams").join(&wrong),
    )
    .unwrap();
    let err = dst.fail(&["fetch", &url, &format!("streams/{wrong}")]);
    assert!(err.contains("its content is"), "{err}");
    // Names that say nothing are refused, as are missing ones.
    let err = dst.fail(&["fetch", &url, "small"]);
    assert!(err.contains("images/NAME"), "{err}");
    let err = dst.fail(&["fetch", &url, "images/nothing"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn a_damaged_object_fails_the_fetch_and_publishes_nothing() {
    let src = source();
    // The object holding the image's /usr/lib/big.
    let big = std::fs::read(src.scratch().join("tree/usr/lib/big")).unwrap();
    let (hex, path) = src
        .objects()
        .into_iter()
        .find(|(_, p)| std::fs::read(p).unwrap() == big)
        .unwrap();
    let mut data = big;
    data[1000] ^= 0x40;
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&path, perm).unwrap();
    std::fs::write(&path, &data).unwrap();

    let server = HttpServer::serve(&src.path);
    let dst = Repo::new();
    let err = dst.fail(&["fetch", &server.url(""), "images/small"]);
    assert!(err.contains(&hex), "the object is not named: {err}");
    assert!(err.contains("corrupt"), "{err}");
    assert!(!dst.path.join("images/refs/small").exists());
    assert!(!dst.objects().iter().any(|(h, _)| *h == hex));
    dst.assert_fsck_ok();

    // A missing object is named with its URL.
    std::fs::remove_file(&path).unwrap();
    let err = dst.fail(&["fetch", &server.url(""), "images/small"]);
    assert!(err.contains(&hex) && err.contains("not found"), "{err}");
    assert!(!dst.path.join("images/refs/small").exists());
}

#[test]
fn fetch_from_a_cfsctl_repository() {
    common::require_tool("python3");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let tree = tmp.path().join("tree");
    small_tree(&tree, 4);
    let init = common::cfsctl::run(&[
        std::ffi::OsStr::new("init"),
        std::ffi::OsStr::new("--insecure"),
        repo.as_os_str(),
    ]);
    assert!(init.status.success(), "cfsctl init: {init:?}");
    common::cfsctl::ok(&repo, &["create-image", tree.to_str().unwrap(), "c"]);

    let server = HttpServer::serve(&repo);
    let dst = Repo::new();
    fetch_ok(&dst, &server.url(""), "images/c");
    dst.assert_fsck_ok();
    let theirs = common::composefs(
        &[
            std::ffi::OsStr::new("--repo"),
            repo.as_os_str(),
            std::ffi::OsStr::new("dump"),
            std::ffi::OsStr::new("images/c"),
        ],
        None,
        &[],
    );
    assert!(theirs.status.success());
    assert_eq!(dst.ok(&["dump", "images/c"]), theirs.stdout);
}
