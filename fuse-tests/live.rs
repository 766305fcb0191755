//! The whole repository mounted live (`composefs mount MNT`), bounded
//! caches (`--cache-size`), and `--verify`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use std::os::unix::fs::PermissionsExt;

use super::common::{self, Repo, pseudo_random, require_tool};
use super::{
    Mounted, assert_same, chmod, errno_of, ostree, repo_with_image, require_root,
    run_with_deadline, snapshot, write,
};

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// An ostree repository (archive mode) at `o` with commits made from `tree`.
struct OstreeRepo {
    path: String,
}

impl OstreeRepo {
    fn new(path: &Path) -> OstreeRepo {
        let path = path.to_str().unwrap().to_string();
        ostree(&["init", "--mode=archive", &format!("--repo={path}")]);
        OstreeRepo { path }
    }

    /// Commit `tree` to `branch`; its checksum.
    fn commit(&self, branch: &str, tree: &Path) -> String {
        let repo = format!("--repo={}", self.path);
        ostree(&[
            &repo,
            "commit",
            "-b",
            branch,
            "-s",
            "x",
            tree.to_str().unwrap(),
        ]);
        String::from_utf8(ostree(&[&repo, "rev-parse", branch]))
            .unwrap()
            .trim()
            .to_string()
    }

    fn checkout(&self, rev: &str, dest: &Path) {
        let repo = format!("--repo={}", self.path);
        ostree(&[&repo, "checkout", rev, dest.to_str().unwrap()]);
    }
}

#[test]
fn whole_repository_live_view() {
    require_root();
    require_tool("ostree");
    let repo = Repo::new();
    let s = repo.scratch();
    let o = OstreeRepo::new(&s.join("orepo"));
    let tree = s.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let big = pseudo_random(5, 400_000);
    write(&tree.join("big"), &big);
    write(&tree.join("etc/version"), b"1\n");
    chmod(&tree.join("etc/version"), 0o640);
    let first = o.commit("main", &tree);
    repo.ok(&["ostree", "pull", &o.path, "main"]);
    // An image under a nested ref.
    let img_src = s.join("img");
    std::fs::create_dir_all(&img_src).unwrap();
    write(&img_src.join("hello"), b"hello from the image\n");
    repo.ok(&[
        "create-image",
        img_src.to_str().unwrap(),
        "--name",
        "img/one",
    ]);

    // A name that is both an ostree ref and an image ref is refused; the
    // view's spellings say which.
    repo.ok(&["create-image", img_src.to_str().unwrap(), "--name", "main"]);
    let err = repo.fail(&["ls", "main"]);
    assert!(
        err.contains("ostree/main") && err.contains("images/main"),
        "{err}"
    );
    assert!(
        String::from_utf8(repo.ok(&["ls", "images/main"]))
            .unwrap()
            .contains("hello")
    );
    assert!(
        String::from_utf8(repo.ok(&["ls", "ostree/main"]))
            .unwrap()
            .contains("big")
    );
    let c = format!("commits/{first}");
    assert!(
        String::from_utf8(repo.ok(&["ls", &c]))
            .unwrap()
            .contains("big")
    );
    repo.ok(&["refs", "--delete", "images/refs/main"]);

    // No REF: the whole repository.
    let mnt = s.join("mnt");
    let m = Mounted::new(&repo, &[], "", &mnt);
    assert_eq!(names(&mnt), ["commits", "images", "oci", "ostree"]);
    assert_eq!(names(&mnt.join("ostree")), ["main"]);
    assert_eq!(names(&mnt.join("images")), ["img"]);
    assert_eq!(names(&mnt.join("images/img")), ["one"]);
    assert_eq!(names(&mnt.join("commits")), vec![first.clone()]);
    let meta = std::fs::metadata(mnt.join("ostree")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o555);

    // Each tree is served as itself: the commit equals its checkout (by
    // name and by checksum), the image equals its single mount.
    let checkout = s.join("checkout1");
    o.checkout(&first, &checkout);
    let want = snapshot(&checkout, false);
    assert_same(
        &snapshot(&mnt.join("ostree/main"), false),
        &want,
        "ostree/main",
    );
    assert_same(
        &snapshot(&mnt.join("commits").join(&first), false),
        &want,
        "commits/<first>",
    );
    let single = Mounted::fuse(&repo, "img/one", &s.join("single"));
    assert_same(
        &snapshot(&mnt.join("images/img/one"), true),
        &snapshot(&s.join("single"), true),
        "images/img/one",
    );
    single.umount(&repo);

    // A miss in an immutable tree is cached by the kernel, and is still a
    // miss; a miss above the trees is not cached: the ref can appear.
    for _ in 0..2 {
        assert_eq!(
            errno_of(std::fs::metadata(mnt.join("ostree/main/nothing"))),
            Some(libc::ENOENT)
        );
    }
    assert_eq!(
        errno_of(std::fs::metadata(mnt.join("ostree/next"))),
        Some(libc::ENOENT)
    );

    // A pull that finishes while mounted shows up.
    write(&tree.join("etc/version"), b"2\n");
    write(&tree.join("big"), &pseudo_random(6, 400_000));
    let second = o.commit("next", &tree);
    repo.ok(&["ostree", "pull", &o.path, "next"]);
    assert_eq!(names(&mnt.join("ostree")), ["main", "next"]);
    assert!(std::fs::metadata(mnt.join("ostree/next/etc/version")).is_ok());
    // A name with slashes (stored as composefs-rs spells it, `os%2Fnext`)
    // is nested directories in the view.
    repo.ok(&["ostree", "pull", &o.path, "next", "--name", "os/next"]);
    assert_eq!(names(&mnt.join("ostree")), ["main", "next", "os"]);
    assert_eq!(names(&mnt.join("ostree/os")), ["next"]);
    assert_eq!(
        std::fs::read(mnt.join("ostree/os/next/etc/version")).unwrap(),
        b"2\n"
    );
    repo.ok(&["refs", "--delete", "ostree/os/next"]);
    assert_eq!(names(&mnt.join("ostree")), ["main", "next"]);
    let mut commits = vec![first.clone(), second.clone()];
    commits.sort();
    assert_eq!(names(&mnt.join("commits")), commits);
    assert_eq!(
        std::fs::read(mnt.join("ostree/next/etc/version")).unwrap(),
        b"2\n"
    );
    assert_eq!(
        std::fs::read(mnt.join("ostree/main/etc/version")).unwrap(),
        b"1\n"
    );

    // Open a file of the first commit, then remove its ref and gc: it goes
    // from the listings, gc does not wait for the mount, and the open file
    // still reads whole.
    let mut open = std::fs::File::open(mnt.join("ostree/main/big")).unwrap();
    let mut head = vec![0u8; 4096];
    open.read_exact(&mut head).unwrap();
    repo.ok(&["refs", "--delete", "ostree/main"]);
    let out = run_with_deadline(repo.command().arg("gc"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&first),
        "gc did not remove the first commit: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(names(&mnt.join("ostree")), ["next"]);
    assert_eq!(names(&mnt.join("commits")), vec![second.clone()]);
    let mut all = Vec::new();
    open.seek(SeekFrom::Start(0)).unwrap();
    open.read_to_end(&mut all).unwrap();
    assert!(all == big, "the open file changed after gc");
    drop(open);

    // A ref moved to another commit shows the new content.
    repo.ok(&["ostree", "pull", &o.path, "next", "--name", "main"]);
    assert_eq!(names(&mnt.join("ostree")), ["main", "next"]);
    // (A name looked up in the last second may still be cached: list the
    // directory, which is always read afresh.)
    assert_eq!(names(&mnt.join("ostree/main/etc")), ["version"]);
    assert_same(
        &snapshot(&mnt.join("commits").join(&second), false),
        &snapshot(&mnt.join("ostree/next"), false),
        "commits/<second> vs ostree/next",
    );
    // Writes are refused above the trees too.
    assert_eq!(
        errno_of(std::fs::create_dir(mnt.join("ostree/new"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno_of(std::fs::read_dir(mnt.join("ostree/absent"))),
        Some(libc::ENOENT)
    );
    m.umount(&repo);
}

#[test]
fn tiny_cache_serves_the_same_tree() {
    // A cache far smaller than the tree: everything is decoded again and
    // again, and must come out the same.
    let (repo, _src) = repo_with_image();
    let big = repo.tmp.path().join("big");
    let small = repo.tmp.path().join("small");
    let a = Mounted::fuse(&repo, "t", &big);
    let b = Mounted::new(&repo, &["--cache-size", "4K"], "t", &small);
    assert_same(
        &snapshot(&small, true),
        &snapshot(&big, true),
        "4K cache vs default",
    );
    // Twice: the second walk is served after evictions.
    assert_same(
        &snapshot(&small, true),
        &snapshot(&big, true),
        "second walk",
    );
    a.umount(&repo);
    b.umount(&repo);

    // The same for an ostree commit (decoded from its stream).
    require_tool("ostree");
    let s = repo.scratch();
    let o = OstreeRepo::new(&s.join("orepo"));
    let tree = s.join("tree");
    for i in 0..300u64 {
        let dir = tree.join(format!("d{}/e{}", i % 7, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        write(
            &dir.join(format!("f{i}")),
            &pseudo_random(i, (i * 97 % 5000) as usize),
        );
    }
    std::os::unix::fs::symlink("d1/e1", tree.join("link")).unwrap();
    o.commit("main", &tree);
    repo.ok(&["ostree", "pull", &o.path, "main"]);
    let checkout = s.join("checkout");
    o.checkout("main", &checkout);
    let m = Mounted::new(&repo, &["--cache-size", "4K"], "ostree/main", &s.join("m"));
    assert_same(
        &snapshot(&s.join("m"), false),
        &snapshot(&checkout, false),
        "4K cache vs checkout",
    );
    m.umount(&repo);

    let out = repo.run(
        &["mount", "--cache-size", "12Q", "t", s.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12Q"));
}

#[test]
fn verify_catches_a_corrupt_object() {
    let (repo, src) = repo_with_image();
    // fs-verity on meta.json <=> the repository's objects need it (the
    // kernel then checks every read, and --verify adds nothing).
    let verity = std::process::Command::new("fsverity")
        .arg("measure")
        .arg(repo.path.join("meta.json"))
        .output()
        .is_ok_and(|o| o.status.success());
    if verity {
        // CI's kernel has no fs-verity: there this must run.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the repository has fs-verity in CI: --verify went untested"
        );
        eprintln!("skipped: this repository has fs-verity (the kernel verifies)");
        return;
    }
    // Flip one byte of `large`'s object, keeping its size.
    let large = std::fs::read(src.join("large")).unwrap();
    let (hex, obj) = common::list_objects(&repo.path)
        .into_iter()
        .find(|(_, p)| std::fs::read(p).unwrap() == large)
        .expect("the object of `large`");
    let mut bad = large.clone();
    bad[1000] ^= 0x40;
    std::fs::write(&obj, &bad).unwrap();

    // Without --verify the bytes are served as stored.
    let plain = repo.tmp.path().join("plain");
    let m = Mounted::fuse(&repo, "t", &plain);
    assert_eq!(std::fs::read(plain.join("large")).unwrap(), bad);
    m.umount(&repo);

    // With it: EIO on that file, a log line naming the object (the
    // background daemon's --log), the rest fine.
    let mnt = repo.tmp.path().join("verified");
    let log = repo.tmp.path().join("log");
    let m = Mounted::new(
        &repo,
        &["--verify", "--log", log.to_str().unwrap()],
        "t",
        &mnt,
    );
    assert_eq!(errno_of(std::fs::read(mnt.join("large"))), Some(libc::EIO));
    assert_eq!(std::fs::read(mnt.join("small")).unwrap(), b"hello\n");
    m.umount(&repo);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&hex[..32]) && logged.contains("corrupt"),
        "the log does not name the corrupt object {hex}:\n{logged}"
    );
}

/// Run `composefs ARGS` as user and group 65534 (nobody/nogroup).
fn as_nobody(bin: &Path, repo: &Repo, args: &[&str]) -> std::process::Output {
    run_with_deadline(
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(bin)
            .arg("--repo")
            .arg(&repo.path)
            .args(args),
    )
}

#[test]
fn unprivileged_user_mounts_through_fusermount3() {
    let (repo, src) = repo_with_image();
    require_tool("setpriv");
    require_tool("fusermount3");
    // Users reach FUSE through /dev/fuse being open to all (udev's rule on
    // a normal system; some containers make it root's only).
    let dev = std::fs::metadata("/dev/fuse").unwrap();
    if dev.permissions().mode() & 0o006 != 0o006 {
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o20666)).unwrap();
    }
    // The user needs to reach the repository, the binary and the mount
    // point (its own).
    let top = repo.tmp.path();
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = top.join("composefs");
    std::fs::copy(common::bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = top.join("user-mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(65534), Some(65534)).unwrap();

    let out = as_nobody(&bin, &repo, &["mount", "t", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "mount as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = Mounted::adopt(&mnt);
    assert!(super::is_mountpoint(&mnt));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.contains(mnt.to_str().unwrap()))
        .unwrap();
    assert!(line.contains("user_id=65534"), "{line}");
    // The user reads through it; root does not (no allow_other).
    let out = run_with_deadline(
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg("cat")
            .arg(mnt.join("large")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == std::fs::read(src.join("large")).unwrap());
    assert_eq!(errno_of(std::fs::read_dir(&mnt)), Some(libc::EACCES));

    let out = as_nobody(&bin, &repo, &["umount", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "umount as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!super::is_mountpoint(&mnt), "still mounted after umount");
    drop(guard);
}

#[test]
fn a_killed_daemon_leaves_no_mount() {
    let (repo, _src) = repo_with_image();
    let mnt = repo.tmp.path().join("mnt");
    let m = Mounted::fuse(&repo, "t", &mnt);
    let daemons = super::daemons_for(&mnt);
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemons[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(
        super::poll(
            std::time::Duration::from_secs(30),
            || !super::is_mountpoint(&mnt)
        ),
        "the mount outlived its killed daemon"
    );
    drop(m);
}

/// Bytes a process has read with read(2) and friends (`rchar`).
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn passthrough_reads_bypass_the_daemon() {
    let (repo, src) = repo_with_image();
    let large = std::fs::read(src.join("large")).unwrap();
    assert!(large.len() > 100_000);
    let plain = repo.tmp.path().join("plain");
    let pt = repo.tmp.path().join("pt");
    let log = repo.tmp.path().join("log");
    let a = Mounted::fuse(&repo, "t", &plain);
    let b = Mounted::new(
        &repo,
        &["--passthrough", "--log", log.to_str().unwrap()],
        "t",
        &pt,
    );
    // Everything the same either way.
    assert_same(
        &snapshot(&pt, true),
        &snapshot(&plain, true),
        "passthrough vs plain",
    );

    // Who read the bytes: the daemon (plain) or the kernel (passthrough).
    let read_by_daemon = |mnt: &Path, name: &str| {
        let d = super::daemons_for(mnt);
        assert_eq!(d.len(), 1, "{d:?}");
        // Evict the page cache the snapshot filled, so the read happens now.
        std::fs::write("/proc/sys/vm/drop_caches", b"3").unwrap();
        let before = rchar(d[0]);
        let got = std::fs::read(mnt.join(name)).unwrap();
        (got, rchar(d[0]) - before)
    };
    let (got, n) = read_by_daemon(&plain, "hl-large");
    assert!(got == std::fs::read(src.join("hl-large")).unwrap());
    let size = got.len() as u64;
    assert!(n >= size, "plain FUSE: the daemon read {n} of {size} bytes");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    if logged.contains("passthrough") {
        eprintln!("passthrough unavailable here, checked the fallback only: {logged}");
    } else {
        let (got, n) = read_by_daemon(&pt, "hl-large");
        assert!(got == std::fs::read(src.join("hl-large")).unwrap());
        assert!(
            n < size / 2,
            "passthrough: the daemon read {n} of {size} bytes"
        );
    }
    a.umount(&repo);
    b.umount(&repo);
}

/// `--repo` given as a relative path: the background daemon runs from `/`,
/// and the whole repository's view still finds its refs (it read them
/// relative to `/` and showed empty directories).
#[test]
fn whole_view_of_a_repository_named_by_a_relative_path() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let src = s.join("img");
    std::fs::create_dir_all(src.join("usr")).unwrap();
    write(&src.join("usr/hello"), b"relative\n");
    repo.ok(&["create-image", src.to_str().unwrap(), "--name", "rel"]);
    let parent = repo.path.parent().unwrap();
    let rel = repo.path.file_name().unwrap();
    let mnt = s.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    common::run_tool(
        common::bin(),
        &["--repo".as_ref(), rel, "mount".as_ref(), mnt.as_os_str()],
        parent,
    );
    let read = std::fs::read(mnt.join("images/rel/usr/hello"));
    let listed = names(&mnt.join("images"));
    repo.ok(&["umount", mnt.to_str().unwrap()]);
    assert_eq!(listed, ["rel"]);
    assert_eq!(read.unwrap(), b"relative\n");
}
