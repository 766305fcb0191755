//! Configured remotes (`composefs remote add/list/delete`, the config
//! file, `remotes/NAME/REF` in `mount --all` and as a name), against an
//! ostree archive repository made by the real `ostree` CLI (with
//! `ostree summary -u`, so its refs can be listed) served by nginx; a
//! registry (`docker-registry`) holding a small image pushed by skopeo
//! under two tags; and a composefs repository served by nginx. The config
//! is a temporary file passed with `COMPOSEFS_REMOTES`.
//!
//! Needs root (the fixture has foreign owners and security.* xattrs),
//! /dev/fuse, and ostree, nginx, gpg, umoci, skopeo and docker-registry
//! on $PATH.

mod common;
#[allow(unused_imports)]
#[path = "common/ostree.rs"]
mod ostree_fixtures;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::nginx::Nginx;
use common::{Mounted, Repo};
use ostree_fixtures::{
    GpgHome, compare_trees, copy_repo, fixture, ostree, require_root, scratch_dir,
};

/// The fixture's archive repository, copied, with one more ref nested
/// by '/' (`team/app`), and a summary; a keyring none of its commits is
/// signed with.
struct Prepared {
    repo: PathBuf,
    checkout1: PathBuf,
    checkout2: PathBuf,
    keyring: PathBuf,
}

fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| {
        require_root();
        common::require_tool("ostree");
        common::require_tool("nginx");
        let f = fixture();
        let a = f.archive();
        let dir = scratch_dir("remotes");
        let repo = dir.join("repo");
        copy_repo(&a.path, &repo);
        let r = repo.to_str().unwrap();
        ostree(&["refs", "--repo", r, "--create=team/app", &a.c1]);
        ostree(&["summary", "-u", "--repo", r]);
        let signer = GpgHome::new("Nobody Signed <nobody@example.com>");
        let keyring = dir.join("trusted.gpg");
        std::fs::copy(&signer.keyring, &keyring).unwrap();
        Prepared {
            repo,
            checkout1: a.checkout1.clone(),
            checkout2: a.checkout2.clone(),
            keyring,
        }
    })
}

/// `composefs --repo REPO ARGS` with the config file `conf`.
fn run(repo: &Repo, conf: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), repo.path.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    common::composefs(&all, None, &[("COMPOSEFS_REMOTES", conf.as_os_str())])
}

fn ok(repo: &Repo, conf: &Path, args: &[&str]) -> String {
    let out = run(repo, conf, args);
    assert!(
        out.status.success(),
        "composefs {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fail(repo: &Repo, conf: &Path, args: &[&str]) -> String {
    let out = run(repo, conf, args);
    assert!(
        !out.status.success(),
        "composefs {args:?} unexpectedly succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// `mount --all` with the remotes of `conf` and a daemon log; the mount
/// and the log's path.
fn mount_all_logged(repo: &Repo, conf: &Path) -> (Mounted, PathBuf) {
    let env = [("COMPOSEFS_REMOTES", conf.as_os_str())];
    let log = repo.scratch().join("daemon.log");
    let mnt = repo.scratch().join("all");
    let m = Mounted::fuse_env(repo, &["--all", "--log", log.to_str().unwrap()], &env, &mnt);
    (m, log)
}

#[test]
fn remote_add_list_delete_round_trip() {
    let repo = Repo::new();
    let conf = repo.scratch().join("config/composefs/remotes.conf");
    let key = repo.scratch().join("key.pub");
    // An ed25519 public key (32 bytes, base64).
    std::fs::write(&key, "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\n").unwrap();
    assert_eq!(ok(&repo, &conf, &["remote", "list"]), "");
    ok(
        &repo,
        &conf,
        &[
            "remote",
            "add",
            "origin",
            "http://127.0.0.1:9/repo",
            "--ed25519-keyfile",
            key.to_str().unwrap(),
            "--require-signatures",
        ],
    );
    ok(
        &repo,
        &conf,
        &["remote", "add", "quay", "docker://localhost:5000/app"],
    );
    assert_eq!(
        ok(&repo, &conf, &["remote", "list"]),
        "origin http://127.0.0.1:9/repo\nquay docker://localhost:5000/app\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&repo, &conf, &["remote", "list", "--json"])).unwrap();
    assert_eq!(json[0]["name"], "origin");
    assert_eq!(json[0]["require_signatures"], true);
    assert_eq!(json[0]["ed25519_keyfile"][0], key.to_str().unwrap());
    assert_eq!(json[1]["url"], "docker://localhost:5000/app");
    // The file is ostree's spelling.
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("[remote \"origin\"]\nurl=http://127.0.0.1:9/repo\n"),
        "{text}"
    );
    assert!(text.contains("require-signatures=true"), "{text}");

    let e = fail(&repo, &conf, &["remote", "add", "origin", "http://x/"]);
    assert!(e.contains("exists already"), "{e}");
    let e = fail(&repo, &conf, &["remote", "add", "a/..", "http://x/"]);
    assert!(e.contains("not a remote name"), "{e}");
    let e = fail(&repo, &conf, &["remote", "add", "x", "ftp://x/"]);
    assert!(e.contains("ftp://"), "{e}");

    ok(&repo, &conf, &["remote", "delete", "origin"]);
    assert_eq!(
        ok(&repo, &conf, &["remote", "list"]),
        "quay docker://localhost:5000/app\n"
    );
    let e = fail(&repo, &conf, &["remote", "delete", "origin"]);
    assert!(e.contains("no remote \"origin\""), "{e}");
    // Nothing left beside it (written through a temporary file).
    assert_eq!(names(conf.parent().unwrap()), vec!["remotes.conf"]);
}

#[test]
fn a_bad_config_file_is_an_error_naming_file_and_line() {
    let repo = Repo::new();
    let conf = repo.scratch().join("remotes.conf");
    std::fs::write(
        &conf,
        "# mine\n[remote \"origin\"]\nurl=http://127.0.0.1:9/repo\ngpg-verify=true\n",
    )
    .unwrap();
    let at = format!("{}:4", conf.display());
    for args in [
        &["remote", "list"][..],
        &["ls", "remotes/origin/main"],
        &["mount", "--all", repo.scratch().to_str().unwrap()],
    ] {
        let e = fail(&repo, &conf, args);
        assert!(e.contains(&at) && e.contains("gpg-verify"), "{args:?}: {e}");
    }
    std::fs::write(&conf, "[remote \"../x\"]\nurl=http://h/\n").unwrap();
    let e = fail(&repo, &conf, &["remote", "list"]);
    assert!(e.contains(&format!("{}:1", conf.display())), "{e}");
}

#[test]
fn mount_all_shows_remotes_their_refs_and_trees() {
    let p = prepared();
    let server = Nginx::serve(&p.repo);
    let repo = Repo::new();
    let conf = repo.scratch().join("remotes.conf");
    ok(&repo, &conf, &["remote", "add", "origin", &server.url("")]);
    let env = [("COMPOSEFS_REMOTES", conf.as_os_str())];

    let mnt = repo.scratch().join("all");
    let m = Mounted::fuse_env(&repo, &["--all"], &env, &mnt);
    let root = &m.path;
    assert!(names(root).contains(&"remotes".to_string()));
    assert_eq!(names(&root.join("remotes")), vec!["origin"]);
    // Looked up first: a listing shows a tree not opened yet as a plain
    // directory (its root's attributes are known once it is opened).
    let n = compare_trees(&p.checkout2, &root.join("remotes/origin/main"));
    assert!(n > 10, "only {n} entries compared");
    assert_eq!(
        names(&root.join("remotes/origin")),
        vec!["main", "team", "v1"]
    );
    assert_eq!(names(&root.join("remotes/origin/team")), vec!["app"]);
    assert!(!root.join("remotes/origin/nothing").exists());
    assert!(!root.join("remotes/elsewhere").exists());
    assert_eq!(
        std::fs::read(root.join("remotes/origin/team/app/small")).unwrap(),
        std::fs::read(p.checkout1.join("small")).unwrap()
    );
    m.umount(&repo);

    // The same tree by name: mount, ls, cat.
    let mnt = repo.scratch().join("one");
    let m = Mounted::fuse_env(&repo, &["remotes/origin/main"], &env, &mnt);
    compare_trees(&p.checkout2, &m.path);
    m.umount(&repo);
    let listed = ok(&repo, &conf, &["ls", "remotes/origin/v1"]);
    assert!(listed.contains("small"), "{listed}");
    assert_eq!(
        ok(&repo, &conf, &["cat", "remotes/origin/v1:/small"]).into_bytes(),
        std::fs::read(p.checkout1.join("small")).unwrap()
    );
    let shown = ok(&repo, &conf, &["show", "remotes/origin/v1"]);
    assert!(shown.contains("kind: ostree commit"), "{shown}");
    let out = run(
        &repo,
        &conf,
        &["diff", "remotes/origin/v1", "remotes/origin/main"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("new-file"));
    let e = fail(&repo, &conf, &["ls", "remotes/nowhere/main"]);
    assert!(e.contains("\"nowhere\""), "{e}");
}

#[test]
fn a_remote_requiring_signatures_refuses_an_unsigned_commit() {
    let p = prepared();
    let server = Nginx::serve(&p.repo);
    let repo = Repo::new();
    let conf = repo.scratch().join("remotes.conf");
    std::fs::write(
        &conf,
        format!(
            "[remote \"strict\"]\nurl={}\ngpg-keyring={}\nrequire-signatures=true\n",
            server.url(""),
            p.keyring.display()
        ),
    )
    .unwrap();
    let (m, log) = mount_all_logged(&repo, &conf);
    // Not there when looked up (a listing shows the summary's refs
    // without opening them).
    let err = std::fs::metadata(m.path.join("remotes/strict/main")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert!(names(&m.path.join("remotes/strict")).contains(&"main".to_string()));
    m.umount(&repo);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("remotes/strict/main") && logged.contains("signature"),
        "{logged}"
    );

    let e = fail(
        &repo,
        &conf,
        &[
            "mount",
            "remotes/strict/main",
            repo.scratch().to_str().unwrap(),
        ],
    );
    assert!(
        e.contains("signature") && e.contains("remotes/strict/main"),
        "{e}"
    );
    let e = fail(&repo, &conf, &["ls", "remotes/strict/main"]);
    assert!(e.contains("signature"), "{e}");
}

/// An OCI layout (tag `t`) of a small image, made with umoci.
fn small_image(dir: &Path) -> PathBuf {
    for t in ["umoci", "skopeo", "docker-registry"] {
        common::require_tool(t);
    }
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let l = layout.to_str().unwrap();
    let tagged = format!("{l}:t");
    let run = |args: &[&str]| {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        common::run_tool("umoci", &args, Path::new("/"));
    };
    run(&["init", "--layout", l]);
    run(&["new", "--image", &tagged]);
    run(&["unpack", "--image", &tagged, bundle.to_str().unwrap()]);
    common::write_file(
        &bundle.join("rootfs/usr/share/hello"),
        b"hello from a tag\n",
    );
    run(&["repack", "--image", &tagged, bundle.to_str().unwrap()]);
    layout
}

#[test]
fn a_registry_remote_lists_its_tags_as_refs() {
    require_root();
    let repo = Repo::new();
    let layout = small_image(&repo.scratch());
    let reg = common::registry::start_registry(false);
    // Tag 1 zstd:chunked (readable in place), tag 2 gzip (not: no table
    // of contents).
    for (tag, format) in [("1", "zstd:chunked"), ("2", "gzip")] {
        reg.push(
            &format!("oci:{}:t", layout.display()),
            &format!("app:{tag}"),
            format,
        );
    }
    let conf = repo.scratch().join("remotes.conf");
    let url = format!("docker://127.0.0.1:{}/app", reg.port);
    ok(&repo, &conf, &["remote", "add", "reg", &url]);
    let (m, log) = mount_all_logged(&repo, &conf);
    assert_eq!(
        std::fs::read(m.path.join("remotes/reg/1/usr/share/hello")).unwrap(),
        b"hello from a tag\n"
    );
    assert!(!m.path.join("remotes/reg/2").exists());
    assert!(!m.path.join("remotes/reg/3").exists());
    assert_eq!(names(&m.path.join("remotes/reg")), vec!["1", "2"]);
    m.umount(&repo);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("remotes/reg/2"), "{logged}");

    assert_eq!(
        ok(&repo, &conf, &["cat", "remotes/reg/1:/usr/share/hello"]),
        "hello from a tag\n"
    );
}

#[test]
fn a_composefs_repository_remote_lists_nothing_but_opens_names() {
    require_root();
    common::require_tool("nginx");
    let theirs = Repo::new();
    let tree = theirs.scratch().join("tree");
    common::write_file(
        &tree.join("usr/share/big"),
        &common::pseudo_random(7, 100_000),
    );
    common::write_file(&tree.join("etc/motd"), b"served as files\n");
    theirs.ok(&["create-image", tree.to_str().unwrap(), "small"]);
    let server = Nginx::serve(&theirs.path);

    let repo = Repo::new();
    let conf = repo.scratch().join("remotes.conf");
    ok(&repo, &conf, &["remote", "add", "cfs", &server.url("")]);
    let env = [("COMPOSEFS_REMOTES", conf.as_os_str())];
    let mnt = repo.scratch().join("all");
    let m = Mounted::fuse_env(&repo, &["--all"], &env, &mnt);
    assert_eq!(names(&m.path.join("remotes/cfs")), Vec::<String>::new());
    let img = m.path.join("remotes/cfs/images/small");
    assert_eq!(
        std::fs::read(img.join("usr/share/big")).unwrap(),
        std::fs::read(tree.join("usr/share/big")).unwrap()
    );
    assert!(!m.path.join("remotes/cfs/images/nothing").exists());
    assert!(!m.path.join("remotes/cfs/nothing").exists());
    m.umount(&repo);
    assert_eq!(
        ok(&repo, &conf, &["cat", "remotes/cfs/images/small:/etc/motd"]),
        "served as files\n"
    );
}
