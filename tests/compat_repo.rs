//! The repository format, directory image digests, EROFS format versions
//! and gc against the oracle, composefs-rs 0.9.4's `cfsctl`, both ways:
//! `meta.json` as `cfsctl init` writes it; each tool opens, checks and
//! writes into the other's repositories; `compute-id` / `create-image` of
//! directories equal for EROFS formats 0, 1 and 2; version-2 images pass
//! `fsck.erofs` and mount in the kernel; gc by either tool keeps what the
//! other's refs reach; bad `meta.json` gives clear errors.
//!
//! Needs root (devices, `trusted.*` xattrs, mounts), `cfsctl` 0.9.4,
//! `fsck.erofs`, `umoci`, `skopeo`, `setfattr`.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{Mounted, Repo, assert_mentions, assert_no_panic, cfsctl, sh};

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap().trim().to_string()
}

/// `composefs ARGS` (no repository), required to work; stdout trimmed.
fn cfs(args: &[&str]) -> String {
    let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let out = common::composefs(&a, None, &[]);
    assert_no_panic(&format!("composefs {args:?}"), &out);
    assert!(
        out.status.success(),
        "composefs {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text(out.stdout)
}

/// `composefs ARGS`, required to fail without panicking; stderr.
fn cfs_fail(args: &[&str]) -> String {
    let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let out = common::composefs(&a, None, &[]);
    assert_no_panic(&format!("composefs {args:?}"), &out);
    assert!(
        !out.status.success(),
        "composefs {args:?} unexpectedly worked:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `cfsctl ARGS` (no `--repo`), required to work; stdout trimmed.
fn oracle(args: &[&str]) -> String {
    let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let out = cfsctl::run(&a);
    assert!(
        out.status.success(),
        "cfsctl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text(out.stdout)
}

/// cfsctl prints ids as `sha512:HEX`; ours are bare hex.
fn bare(id: &str) -> String {
    id.rsplit(':').next().unwrap().to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Unmounts a mount made by cfsctl when dropped (also when a check fails).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (devices, trusted.* xattrs, mounts)"
    );
}

/// Whether fs-verity can be enabled on a file in `dir` (probed with `fsverity enable`).
fn fs_has_verity(dir: &Path) -> bool {
    let f = dir.join("verity-probe");
    std::fs::write(&f, b"probe").unwrap();
    let ok = std::process::Command::new("fsverity")
        .arg("enable")
        .arg(&f)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let _ = std::fs::remove_file(&f);
    ok
}

/// A tree with every kind of thing cfsctl reads from a directory:
/// hardlinks (also across directories, also of inline files), symlinks
/// (short, long), xattrs (user, trusted, trusted.overlay, security,
/// shared and not), devices, a whiteout, fifos, empty files, files of 64
/// and 65 bytes, a 255-byte name, a 60-deep path, a directory whose
/// entries need several blocks, sub-second and old mtimes, odd modes and
/// owners, and `usr/` and `run/` for the container-root transform.
fn generated_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    sh(
        root,
        r#"
        mkdir -p usr/bin usr/lib run/sub d wide
        cp /usr/bin/true usr/bin/true
        head -c 5000 /dev/urandom > usr/lib/five-k
        for i in $(seq 1 300); do echo "file $i" > d/f$i; done
        for i in $(seq 1 40); do head -c $((i*37)) /dev/urandom > d/big$i; setfattr -n user.same -v shared d/big$i; done
        for i in $(seq 1 400); do : > wide/entry-with-a-longish-name-$i; done
        ln d/big1 usr/hardlink-one; ln d/big1 hardlink-two; ln d/f7 d/f7-again
        mkdir -p deep/$(printf 'a/%.0s' $(seq 1 60))
        echo deep > deep/$(printf 'a/%.0s' $(seq 1 60))/leaf
        : > "d/$(printf 'x%.0s' $(seq 1 255))"
        ln -s "$(printf 'y%.0s' $(seq 1 3000))" longlink
        ln -s d/f1 short-link
        mknod cdev c 1 3; mknod bdev b 7 0; mknod whiteout c 0 0
        mkfifo fifo; mkfifo run/sub/fifo; echo run > run/sub/file
        head -c 64 /dev/urandom > f64; head -c 65 /dev/urandom > f65; : > empty
        setfattr -n trusted.overlay.foo -v bar f64
        setfattr -n security.selinux -v system_u:object_r:usr_t:s0 f65
        setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= usr/bin/true
        setfattr -n trusted.x -v 1 f65; setfattr -n user.a -v 1 usr; setfattr -n user.b -v "" d
        chmod 4755 usr/bin/true; chmod 1777 run; chmod 0600 f64
        chown 1234:5678 f65; chown 70000:80000 d/f2
        touch -d '2001-01-01 00:00:00.123456789' f64
        touch -d '1965-06-01 12:00:00' d/f3
        touch -h -d '2010-01-01 00:00:00.5' short-link
        "#,
    );
}

/// A copy of parts of `/usr` (real binaries, libraries, docs, symlinks,
/// hardlinks as the system has them) under `root/usr`.
fn usr_subset(root: &Path) {
    std::fs::create_dir_all(root.join("usr")).unwrap();
    sh(
        root,
        r#"
        for d in /usr/sbin /usr/share/doc /usr/lib/os-release /usr/share/zoneinfo /usr/lib/python3*/json; do
            [ -e "$d" ] || continue
            mkdir -p "usr/$(dirname "${d#/usr/}")"
            cp -a "$d" "usr/$(dirname "${d#/usr/}")/"
        done
        "#,
    );
}

/// `composefs compute-id` and `cfsctl compute-id` agree on `dir` for every
/// format version and read mode; returns how many digests were compared.
fn compare_compute_id(dir: &Path, hashes: &[&str]) -> usize {
    let mut n = 0;
    for hash in hashes {
        for v in ["0", "1", "2"] {
            for mode in [
                &[][..],
                &["--no-propagate-usr-to-root"][..],
                &["--xattrs", "keep-user-xattrs"][..],
            ] {
                let mut ours = vec!["compute-id", "--hash", hash, "--erofs-version", v];
                ours.extend_from_slice(mode);
                ours.push(p(dir));
                let mut theirs = vec!["--no-repo", "--hash", hash, "--erofs-version", v];
                theirs.push("compute-id");
                theirs.extend_from_slice(mode);
                theirs.push(p(dir));
                let (a, b) = (cfs(&ours), oracle(&theirs));
                assert_eq!(
                    a,
                    bare(&b),
                    "compute-id {} differs from cfsctl: {hash}, EROFS {v}, {mode:?}",
                    dir.display()
                );
                n += 1;
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------
// meta.json and opening each other's repositories
// ---------------------------------------------------------------------------

/// `composefs init` writes the very bytes `cfsctl init` writes, for each
/// hash, format version and (where the filesystem allows) security mode;
/// fs-verity on meta.json iff not insecure.
#[test]
fn init_writes_what_cfsctl_init_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let verity = fs_has_verity(tmp.path());
    let modes: &[bool] = if verity { &[true, false] } else { &[true] };
    if !verity {
        eprintln!(
            "note: {} has no fs-verity: only insecure repositories are compared",
            tmp.path().display()
        );
    }
    let mut compared = 0;
    for hash in ["sha256", "sha512"] {
        for v in ["0", "1", "2"] {
            for &insecure in modes {
                let tag = format!("{hash}-{v}-{insecure}");
                let ours = tmp.path().join(format!("ours-{tag}"));
                let theirs = tmp.path().join(format!("theirs-{tag}"));
                let mut a = vec!["init", "--hash", hash, "--erofs-version", v];
                let alg = format!("fsverity-{hash}-12");
                let mut b = vec!["init", "--algorithm", &alg, "--erofs-version", v];
                if insecure {
                    a.push("--insecure");
                    b.push("--insecure");
                }
                a.push(p(&ours));
                b.push(p(&theirs));
                cfs(&a);
                oracle(&b);
                let (ma, mb) = (
                    std::fs::read(ours.join("meta.json")).unwrap(),
                    std::fs::read(theirs.join("meta.json")).unwrap(),
                );
                assert_eq!(
                    String::from_utf8_lossy(&ma),
                    String::from_utf8_lossy(&mb),
                    "meta.json of {tag}"
                );
                for r in [&ours, &theirs] {
                    let m = std::process::Command::new("fsverity")
                        .arg("measure")
                        .arg(r.join("meta.json"))
                        .output()
                        .unwrap();
                    assert_eq!(
                        m.status.success(),
                        !insecure,
                        "fs-verity on {}",
                        r.display()
                    );
                }
                compared += 1;
            }
        }
    }
    assert!(compared >= 6);
    // Without fs-verity on the filesystem, a secure init falls back to an
    // insecure repository (cfsctl refuses); both tools then read it so.
    if !verity {
        let r = tmp.path().join("fallback");
        let out = cfs(&["init", p(&r)]);
        assert_mentions(
            &out,
            &["no fs-verity"],
            "init on a filesystem without fs-verity",
        );
        cfsctl::ok(&r, &["fsck"]);
        assert!(cfsctl::ok(&r, &["fsck"]).contains("status: ok"));
    }
}

/// A repository `cfsctl init --insecure` made (no objects/, streams/,
/// images/ yet) works with every command of ours, and cfsctl reads what we
/// write into it; and the other way round.
#[test]
fn each_tool_works_in_the_others_repository() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    generated_tree(&tree);

    // Theirs, used by us.
    let theirs = tmp.path().join("theirs");
    oracle(&["init", "--insecure", p(&theirs)]);
    assert!(!theirs.join("objects").exists() && !theirs.join("images").exists());
    let r = |args: &[&str]| {
        let mut a = vec!["--repo", p(&theirs)];
        a.extend_from_slice(args);
        cfs(&a)
    };
    assert_mentions(
        &r(&["fsck"]),
        &["0 problems"],
        "fsck of a fresh cfsctl repository",
    );
    r(&["refs"]);
    let ours_id = r(&["create-image", p(&tree), "--name", "by-us"]);
    let their_id = bare(cfsctl::ok(&theirs, &["create-image", p(&tree), "by-them"]).trim());
    assert_eq!(
        ours_id, their_id,
        "create-image in a cfsctl repository (EROFS 1)"
    );
    assert_mentions(
        &r(&["fsck"]),
        &["0 problems"],
        "fsck after both created images",
    );
    assert!(cfsctl::ok(&theirs, &["fsck"]).contains("status: ok"));
    let images = cfsctl::ok(&theirs, &["images"]);
    assert_mentions(&images, &["by-us", "by-them"], "cfsctl images");
    let ls = r(&["ls", "by-them", "/usr/bin"]);
    assert_mentions(&ls, &["true"], "ls of cfsctl's image");
    r(&["ostree", "list"]);

    // Ours, used by cfsctl: mount an image we made, read a file through it.
    let ours = tmp.path().join("ours");
    cfs(&["init", "--insecure", p(&ours)]);
    let id = cfs(&[
        "--repo",
        p(&ours),
        "create-image",
        p(&tree),
        "--name",
        "img",
    ]);
    assert!(cfsctl::ok(&ours, &["fsck"]).contains("status: ok"));
    assert_mentions(
        &cfsctl::ok(&ours, &["images"]),
        &["img"],
        "cfsctl images of ours",
    );
    let objs = cfsctl::ok(&ours, &["image-objects", "refs/img"]);
    assert!(objs.lines().count() >= 40, "image-objects listed {objs}");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    cfsctl::ok(&ours, &["mount", &id, p(&mnt)]);
    let read = std::fs::read(mnt.join("d/big7"));
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(read.unwrap(), std::fs::read(tree.join("d/big7")).unwrap());
}

/// Bad or foreign meta.json: clear errors (no panic), read-only when
/// only read-only-compatible features are unknown; a pre-meta.json
/// cfsctl repository is explained.
#[test]
fn bad_meta_json_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    sh(tmp.path(), "mkdir t; echo x > t/f");
    let case = |name: &str, meta: Option<&str>| -> PathBuf {
        let r = tmp.path().join(name);
        std::fs::create_dir_all(r.join("objects")).unwrap();
        if let Some(m) = meta {
            std::fs::write(r.join("meta.json"), m).unwrap();
        }
        r
    };
    let alg = r#""algorithm":"fsverity-sha512-12""#;
    for (name, meta, words) in [
        ("garbage", Some("{not json".to_string()), &["meta.json"][..]),
        (
            "incompat",
            Some(format!(
                r#"{{"version":1,{alg},"features":{{"incompatible":["warp-drive"]}}}}"#
            )),
            &["warp-drive", "upgrade"][..],
        ),
        (
            "v2",
            Some(format!(r#"{{"version":2,{alg}}}"#)),
            &["version 2", "upgrade"][..],
        ),
        (
            "erofs9",
            Some(format!(
                r#"{{"version":1,{alg},"erofs_formats":{{"default":9}}}}"#
            )),
            &["EROFS format version 9"][..],
        ),
        (
            "md5",
            Some(r#"{"version":1,"algorithm":"md5"}"#.to_string()),
            &["md5"][..],
        ),
        ("old-cfsctl", None, &["meta.json", "cfsctl", "upgrade"][..]),
    ] {
        let r = case(name, meta.as_deref());
        for cmd in [
            &["fsck"][..],
            &["refs"][..],
            &["create-image", p(&tree)][..],
        ] {
            let mut a = vec!["--repo", p(&r)];
            a.extend_from_slice(cmd);
            let err = cfs_fail(&a);
            assert_mentions(&err, words, &format!("{name}: {cmd:?}"));
        }
    }
    // Unknown read-only-compatible feature: reads work, writes refused.
    let ro = case(
        "ro",
        Some(&format!(
            r#"{{"version":1,{alg},"features":{{"read-only-compatible":["shiny"]}},"erofs_formats":{{"default":1}}}}"#
        )),
    );
    cfs(&["--repo", p(&ro), "fsck"]);
    let err = cfs_fail(&["--repo", p(&ro), "create-image", p(&tree)]);
    assert_mentions(
        &err,
        &["read-only"],
        "create-image with an unknown ro-compat feature",
    );
    // An empty directory is no repository.
    let none = tmp.path().join("nothing");
    std::fs::create_dir_all(&none).unwrap();
    assert_mentions(
        &cfs_fail(&["--repo", p(&none), "fsck"]),
        &["not a composefs repository", "composefs init"],
        "fsck of an empty directory",
    );
}

/// A repository of an earlier version of this tool (`no-fsverity` flag, no
/// `erofs_formats`) opens; fsck explains; both tools treat it as EROFS 2.
#[test]
fn earlier_repositories_open_with_notes() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("t");
    sh(
        tmp.path(),
        "mkdir t; head -c 1000 /dev/urandom > t/big; echo x > t/small",
    );
    let r = tmp.path().join("old");
    std::fs::create_dir_all(r.join("objects")).unwrap();
    std::fs::write(
        r.join("meta.json"),
        r#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"compatible":["no-fsverity"],"read-only-compatible":[],"incompatible":[]}}"#,
    )
    .unwrap();
    let id = cfs(&["--repo", p(&r), "create-image", p(&tree), "--name", "x"]);
    let made = bare(
        cfsctl::ok(
            &r,
            &["create-image", "--no-propagate-usr-to-root", p(&tree)],
        )
        .trim(),
    );
    assert_eq!(
        id, made,
        "both write EROFS 2 into a repository without erofs_formats"
    );
    let fsck = cfs(&["--repo", p(&r), "fsck"]);
    assert_mentions(
        &fsck,
        &["note:", "no-fsverity", "erofs_formats"],
        "fsck of an old repository",
    );
    assert!(cfsctl::ok(&r, &["fsck"]).contains("status: ok"));
}

// ---------------------------------------------------------------------------
// Directory digests and images of every format version
// ---------------------------------------------------------------------------

/// `compute-id DIR` equals cfsctl's for a generated tree with every kind
/// of entry (both hashes) and a copy of parts of /usr, for EROFS 0, 1 and
/// 2, in each read mode.
#[test]
fn compute_id_matches_cfsctl() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("generated");
    generated_tree(&generated);
    let n = compare_compute_id(&generated, &["sha512", "sha256"]);
    let usr = tmp.path().join("usr-subset");
    usr_subset(&usr);
    let m = compare_compute_id(&usr, &["sha512"]);
    assert_eq!(n + m, 27, "digests compared");
    // Without --repo and --hash: sha512 and EROFS 1, as cfsctl.
    assert_eq!(
        cfs(&["compute-id", p(&generated)]),
        bare(&oracle(&["--no-repo", "compute-id", p(&generated)]))
    );
}

/// `create-image DIR` in repositories of each EROFS version, made by each
/// tool: the same id and image bytes as `cfsctl create-image`; `images`,
/// `fsck` and `fsck.erofs` accept every image.
#[test]
fn create_image_matches_cfsctl_for_each_version() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    generated_tree(&tree);
    for v in ["0", "1", "2"] {
        let ours = tmp.path().join(format!("ours-{v}"));
        let theirs = tmp.path().join(format!("theirs-{v}"));
        cfs(&["init", "--insecure", "--erofs-version", v, p(&ours)]);
        oracle(&["init", "--insecure", "--erofs-version", v, p(&theirs)]);
        let a = cfs(&["--repo", p(&ours), "create-image", p(&tree), "mine"]);
        let b = bare(cfsctl::ok(&theirs, &["create-image", p(&tree), "theirs"]).trim());
        assert_eq!(a, b, "create-image, EROFS {v}");
        // Each tool into the other's repository.
        let c = bare(cfsctl::ok(&ours, &["create-image", p(&tree), "theirs"]).trim());
        let d = cfs(&["--repo", p(&theirs), "create-image", p(&tree), "mine"]);
        assert_eq!(
            (c.as_str(), d.as_str()),
            (a.as_str(), a.as_str()),
            "EROFS {v} cross"
        );
        let img_a = std::fs::read(ours.join("images").join(&a)).unwrap();
        let img_b = std::fs::read(theirs.join("images").join(&b)).unwrap();
        assert!(img_a == img_b, "EROFS {v}: image bytes differ");
        let hdr_version = u32::from_le_bytes(img_a[12..16].try_into().unwrap());
        assert_eq!(
            hdr_version.to_string(),
            v,
            "composefs_version in the header"
        );
        let out = std::process::Command::new("fsck.erofs")
            .arg(ours.join("images").join(&a))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fsck.erofs of the EROFS {v} image:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for r in [&ours, &theirs] {
            assert_mentions(
                &cfs(&["--repo", p(r), "fsck"]),
                &["0 problems"],
                &format!("fsck EROFS {v}"),
            );
            assert!(cfsctl::ok(r, &["fsck"]).contains("status: ok"));
            assert_mentions(&cfsctl::ok(r, &["images"]), &["mine", "theirs"], "images");
            // Our reader: the dump of the image names every file.
            let dump = cfs(&["--repo", p(r), "dump", "mine"]);
            assert_mentions(&dump, &["/usr/bin/true", "/d/big40", "/longlink"], "dump");
        }
    }
}

/// Version-2 images (also 0 and 1) mount in the kernel with our `mount
/// --kernel` and with cfsctl, and through our FUSE mount, and show the tree: contents, modes, owners,
/// whole-second mtimes, symlinks, xattrs.
#[test]
fn every_version_mounts_in_the_kernel() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    generated_tree(&tree);
    // Whole seconds (version 2 keeps no nanoseconds); no whiteout (it
    // hides itself in an overlay mount).
    sh(
        &tree,
        "rm whiteout; find . -exec touch -h -d @1700000000 {} +",
    );
    for v in ["0", "1", "2"] {
        let repo = Repo::with_args(&["--insecure", "--erofs-version", v]);
        let id = text(repo.ok(&[
            "create-image",
            "--no-propagate-usr-to-root",
            p(&tree),
            "--name",
            "m",
        ]));
        let mnt = repo.tmp.path().join("mnt");
        let m = Mounted::new(&repo, "m", &mnt);
        let n = compare(&tree, &mnt);
        assert!(n > 700, "EROFS {v}: only {n} entries compared");
        m.umount(&repo);
        // cfsctl mounts our image too (by digest: by ref name it always
        // asks the kernel for fs-verity, which this filesystem lacks).
        let mnt2 = repo.tmp.path().join("mnt2");
        std::fs::create_dir_all(&mnt2).unwrap();
        cfsctl::ok(&repo.path, &["mount", &id, p(&mnt2)]);
        let guard = Unmount(mnt2.clone());
        let n2 = compare(&tree, &mnt2);
        drop(guard);
        assert_eq!(n, n2, "EROFS {v}: cfsctl's mount");
        // Our FUSE mount reads the image with our own reader.
        let mnt3 = repo.tmp.path().join("mnt3");
        std::fs::create_dir_all(&mnt3).unwrap();
        repo.ok(&["mount", "m", p(&mnt3)]);
        let guard = Unmount(mnt3.clone());
        let n3 = compare(&tree, &mnt3);
        drop(guard);
        assert_eq!(n, n3, "EROFS {v}: FUSE mount");
    }
}

/// Compare a mount with its source: every path's type, mode, owner,
/// mtime seconds, size, content or target, and user xattrs.
fn compare(src: &Path, mnt: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    let mut problems = Vec::new();
    common::walk(src, &mut |path| {
        let rel = path.strip_prefix(src).unwrap();
        let there = mnt.join(rel);
        let (a, b) = match (
            std::fs::symlink_metadata(path),
            std::fs::symlink_metadata(&there),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (_, Err(e)) => {
                problems.push(format!("{}: {e}", rel.display()));
                return;
            }
            (Err(e), _) => panic!("{e}"),
        };
        n += 1;
        let fields = [
            ("mode", a.mode() as i64, b.mode() as i64),
            ("uid", a.uid() as i64, b.uid() as i64),
            ("gid", a.gid() as i64, b.gid() as i64),
            ("mtime", a.mtime(), b.mtime()),
            ("rdev", a.rdev() as i64, b.rdev() as i64),
        ];
        for (f, x, y) in fields {
            if x != y {
                problems.push(format!("{}: {f} {x} vs {y}", rel.display()));
            }
        }
        if a.is_file() && std::fs::read(path).ok() != std::fs::read(&there).ok() {
            problems.push(format!("{}: content", rel.display()));
        }
        if a.is_symlink() && std::fs::read_link(path).ok() != std::fs::read_link(&there).ok() {
            problems.push(format!("{}: target", rel.display()));
        }
    });
    assert!(
        problems.is_empty(),
        "{} differences:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    n
}

// ---------------------------------------------------------------------------
// gc both ways
// ---------------------------------------------------------------------------

/// A repository holding an OCI image pulled by cfsctl (its EROFS image
/// kept only by the config stream's `composefs.image` named ref), images
/// of both tools with refs, and garbage (an unreferenced image, a removed
/// ref). gc by us, then by cfsctl (and the other order on a copy): both
/// remove the same garbage, keep everything a ref reaches, and both fsck
/// clean; the OCI image still mounts.
#[test]
fn gc_by_either_tool_keeps_what_any_ref_reaches() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    generated_tree(&tree);
    // An OCI layout with one layer (a tar of part of the tree).
    let layer = tmp.path().join("layer.tar");
    sh(
        tmp.path(),
        &format!("tar -C {} -cf {} usr d", p(&tree), p(&layer)),
    );
    let layout = tmp.path().join("oci");
    common::umoci_image(&layout, "latest", &[&layer]);

    let base = tmp.path().join("base");
    oracle(&["init", "--insecure", p(&base)]);
    cfsctl::ok(
        &base,
        &[
            "oci",
            "pull",
            &format!("oci:{}:latest", p(&layout)),
            "pulled",
        ],
    );
    let oci_images: Vec<String> = std::fs::read_dir(base.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "refs")
        .collect();
    assert_eq!(
        oci_images.len(),
        1,
        "cfsctl oci pull made one EROFS image: {oci_images:?}"
    );
    let kept_ours = cfs(&[
        "--repo",
        p(&base),
        "create-image",
        p(&tree),
        "--name",
        "ours",
    ]);
    let kept_theirs = bare(
        cfsctl::ok(
            &base,
            &[
                "create-image",
                "--no-propagate-usr-to-root",
                p(&tree),
                "theirs",
            ],
        )
        .trim(),
    );
    // Garbage: an image without ref, and one whose ref is removed.
    sh(&tree, "echo changed > d/f1");
    let loose = cfs(&["--repo", p(&base), "create-image", p(&tree)]);
    sh(&tree, "echo changed again > d/f2");
    let dropped = cfs(&[
        "--repo",
        p(&base),
        "create-image",
        p(&tree),
        "--name",
        "gone",
    ]);
    cfs(&["--repo", p(&base), "refs", "--delete", "images/refs/gone"]);

    let survivors = |r: &Path| -> Vec<String> { common::object_names(r) };
    let ours_first = tmp.path().join("ours-first");
    let theirs_first = tmp.path().join("theirs-first");
    common::copy_dir(&base, &ours_first);
    common::copy_dir(&base, &theirs_first);

    cfs(&["--repo", p(&ours_first), "gc"]);
    let after_ours = survivors(&ours_first);
    assert_mentions(
        &cfsctl::ok(&ours_first, &["gc"]),
        &["0 removed"],
        "cfsctl gc after ours",
    );
    cfsctl::ok(&theirs_first, &["gc"]);
    let after_theirs = survivors(&theirs_first);
    let again = cfs(&["--repo", p(&theirs_first), "gc"]);
    assert_mentions(&again, &["removed 0 objects"], "our gc after cfsctl's");
    assert_eq!(
        after_ours, after_theirs,
        "objects surviving gc by each tool"
    );

    for r in [&ours_first, &theirs_first] {
        assert_mentions(
            &cfs(&["--repo", p(r), "fsck"]),
            &["0 problems"],
            "fsck after gc",
        );
        assert!(cfsctl::ok(r, &["fsck"]).contains("status: ok"));
        assert!(cfsctl::ok(r, &["oci", "fsck"]).contains("ok"));
        for id in [&kept_ours, &kept_theirs, &oci_images[0]] {
            assert!(r.join("images").join(id).exists(), "image {id} kept");
            assert!(survivors(r).contains(id), "image object {id} kept");
        }
        for id in [&loose, &dropped] {
            assert!(!survivors(r).contains(id), "image {id} collected");
        }
        let mnt = r.join("../mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        cfsctl::ok(r, &["oci", "mount", "pulled", p(&mnt)]);
        let read = std::fs::read(mnt.join("d/big9"));
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        assert_eq!(
            read.unwrap(),
            std::fs::read(tree.join("d/big9")).unwrap(),
            "OCI mount after gc"
        );
        cfs(&["--repo", p(r), "ls", "ours", "/d"]);
    }
}

/// An ostree commit pulled by cfsctl (its EROFS image kept only by the
/// commit stream's `composefs.image` named ref): our gc removes exactly
/// what cfsctl's removes, and cfsctl still checks and mounts the commit.
#[test]
fn gc_keeps_what_a_cfsctl_ostree_commit_reaches() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    sh(
        &tree,
        "mkdir -p usr/bin etc; cp /usr/bin/true /usr/bin/env usr/bin/; \
         for i in $(seq 1 30); do head -c $((i*100)) /dev/urandom > etc/f$i; done; \
         ln -s ../usr/bin/true etc/link",
    );
    let ost = tmp.path().join("ostree");
    sh(
        tmp.path(),
        &format!(
            "ostree init --repo={0} --mode=archive && ostree commit --repo={0} -b main --tree=dir={1} >/dev/null",
            p(&ost),
            p(&tree)
        ),
    );
    let base = tmp.path().join("base");
    oracle(&["init", "--insecure", p(&base)]);
    cfsctl::ok(&base, &["ostree", "pull-local", p(&ost), "main"]);
    // Garbage of ours next to it.
    let loose = cfs(&["--repo", p(&base), "create-image", p(&tree)]);
    let ours = tmp.path().join("ours");
    let theirs = tmp.path().join("theirs");
    common::copy_dir(&base, &ours);
    common::copy_dir(&base, &theirs);
    cfs(&["--repo", p(&ours), "gc"]);
    cfsctl::ok(&theirs, &["gc"]);
    let (a, b) = (common::object_names(&ours), common::object_names(&theirs));
    assert_eq!(a, b, "objects surviving gc by each tool");
    assert!(!a.contains(&loose), "the unreferenced image was collected");
    assert!(a.len() > 30, "only {} objects survived", a.len());
    assert!(cfsctl::ok(&ours, &["fsck"]).contains("status: ok"));
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    cfsctl::ok(&ours, &["ostree", "mount", "main", p(&mnt)]);
    let read = std::fs::read(mnt.join("etc/f30"));
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(read.unwrap(), std::fs::read(tree.join("etc/f30")).unwrap());
}
