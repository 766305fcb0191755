//! Repository-wide CLI behaviour: init and meta.json, opening (and refusing)
//! repositories, `$COMPOSEFS_REPO`, the on-disk ref layout, gc, fsck, and the
//! shared/exclusive repository lock.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn meta(repo: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(repo.join("meta.json")).expect("meta.json exists");
    serde_json::from_str(&text).expect("meta.json is JSON")
}

fn write_meta(repo: &Path, json: &str) {
    std::fs::write(repo.join("meta.json"), json).unwrap();
}

/// Three files > 64 bytes, two of them shared with [`tar_b`], plus a small one.
fn tar_a(dir: &Path) -> PathBuf {
    tar_of(
        dir,
        "a",
        &[
            ("shared1", pseudo_random(1, 1000)),
            ("shared2", pseudo_random(2, 70_000)),
            ("only-a", pseudo_random(3, 3000)),
            ("small", b"small file".to_vec()),
        ],
    )
}

fn tar_b(dir: &Path) -> PathBuf {
    tar_of(
        dir,
        "b",
        &[
            ("x/shared1", pseudo_random(1, 1000)),
            ("shared2-again", pseudo_random(2, 70_000)),
            ("only-b", pseudo_random(4, 7000)),
        ],
    )
}

/// A repository holding tar A as ref `a`; returns (repo, tar path, stream hex, content id).
fn repo_with_a() -> (Repo, PathBuf, String, String) {
    let repo = Repo::new();
    let tar = tar_a(&repo.scratch());
    let (hex, cid) = repo.import("a", &tar);
    (repo, tar, hex, cid)
}

fn digest_of(dir: &Path, data: &[u8]) -> String {
    let f = dir.join("digest-input");
    std::fs::write(&f, data).unwrap();
    fsverity_digest("sha512", &f)
}

fn object_file(repo: &Repo, hex: &str) -> PathBuf {
    repo.path.join("objects").join(&hex[..2]).join(&hex[2..])
}

/// Every path below the repository with its type, size and link target.
fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, &mut |p| {
        let m = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if m.is_symlink() {
            out.push(format!(
                "{rel} -> {}",
                std::fs::read_link(p).unwrap().display()
            ));
        } else if m.is_dir() {
            out.push(format!("{rel}/"));
        } else {
            out.push(format!("{rel} {} {}", m.len(), m.mtime_nsec()));
        }
    });
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// init and meta.json
// ---------------------------------------------------------------------------

#[test]
fn init_writes_meta_json_sha512_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r");
    let out = composefs(
        &[OsStr::new("--repo"), path.as_os_str(), OsStr::new("init")],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = meta(&path);
    assert_eq!(m["version"], 1, "meta.json: {m}");
    assert_eq!(m["algorithm"], "fsverity-sha512-12", "meta.json: {m}");
    let features = m["features"].as_object().expect("features object");
    for k in ["compatible", "read-only-compatible", "incompatible"] {
        assert!(
            features.get(k).is_some_and(|v| v.is_array()),
            "meta.json features lack {k:?}: {m}"
        );
    }
    assert_eq!(m["features"]["incompatible"].as_array().unwrap().len(), 0);
    for d in ["objects", "streams/refs", "images/refs"] {
        assert!(path.join(d).is_dir(), "init did not create {d}/");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("sha512"));
}

#[test]
fn init_sha256_names_objects_with_sha256() {
    let repo = Repo::with_args(&["--hash", "sha256"]);
    let m = meta(&repo.path);
    assert_eq!(m["version"], 1);
    assert_eq!(m["algorithm"], "fsverity-sha256-12");
    let tar = tar_a(&repo.scratch());
    let (hex, _) = repo.import("a", &tar);
    assert_eq!(
        hex.len(),
        64,
        "a sha256 repository printed a {}-digit id",
        hex.len()
    );
    let objects = repo.objects();
    assert_eq!(
        objects.len(),
        4,
        "3 big files + 1 stream expected: {objects:?}"
    );
    for (name, path) in &objects {
        assert_eq!(name.len(), 64);
        assert_eq!(
            &fsverity_digest("sha256", path),
            name,
            "object {} misnamed",
            path.display()
        );
    }
    assert_eq!(repo.cat("a"), std::fs::read(&tar).unwrap());
    repo.assert_fsck_ok();
}

#[test]
fn init_twice_fails_and_keeps_the_repository() {
    let (repo, tar, _, _) = repo_with_a();
    let before = std::fs::read(repo.path.join("meta.json")).unwrap();
    let err = repo.fail(&["init"]);
    assert_mentions(&err, &["already"], "second init");
    let err = repo.fail(&["init", "--hash", "sha256"]);
    assert_mentions(&err, &["already"], "second init with another hash");
    assert_eq!(std::fs::read(repo.path.join("meta.json")).unwrap(), before);
    assert_eq!(repo.cat("a"), std::fs::read(&tar).unwrap());
}

#[test]
fn init_in_existing_directory_and_bad_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("existing");
    std::fs::create_dir(&path).unwrap();
    let ok = composefs(
        &[OsStr::new("--repo"), path.as_os_str(), OsStr::new("init")],
        None,
        &[],
    );
    assert!(
        ok.status.success(),
        "init into an existing empty directory failed"
    );
    let bad = tmp.path().join("bad");
    let out = composefs(
        &[
            OsStr::new("--repo"),
            bad.as_os_str(),
            OsStr::new("init"),
            OsStr::new("--hash"),
            OsStr::new("md5"),
        ],
        None,
        &[],
    );
    assert!(!out.status.success(), "init --hash md5 succeeded");
    assert!(!bad.join("meta.json").exists());
}

#[test]
fn init_with_closed_stdout_does_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin())
        .arg("--repo")
        .arg(&path)
        .arg("init")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_no_panic("init with a closed stdout", &out);
}

#[test]
fn opening_a_non_repository_points_to_init() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = tmp.path().join("missing");
    let tar = tar_of(tmp.path(), "t", &[("f", pseudo_random(1, 100))]);
    for dir in [&empty, &missing] {
        for args in [
            vec!["refs"],
            vec!["cat", "x"],
            vec!["gc"],
            vec!["fsck"],
            vec!["import-tar", "x", tar.to_str().unwrap()],
        ] {
            let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), dir.as_os_str()];
            all.extend(args.iter().map(OsStr::new));
            let out = composefs(&all, None, &[]);
            assert!(
                !out.status.success(),
                "{args:?} on {} succeeded",
                dir.display()
            );
            assert_mentions(
                &String::from_utf8_lossy(&out.stderr),
                &["composefs init"],
                &format!("{args:?} on {}", dir.display()),
            );
        }
    }
    assert!(!missing.exists(), "opening a missing repository created it");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "opening a non-repository wrote into it"
    );
}

#[test]
fn newer_format_version_is_refused() {
    let (repo, _, _, _) = repo_with_a();
    write_meta(
        &repo.path,
        r#"{"version":2,"algorithm":"fsverity-sha512-12","features":{"compatible":[],"read-only-compatible":[],"incompatible":[]}}"#,
    );
    let tar = tar_b(&repo.scratch());
    let before = snapshot(&repo.path);
    for args in [
        vec!["refs"],
        vec!["cat", "a"],
        vec!["gc"],
        vec!["fsck"],
        vec!["import-tar", "b", tar.to_str().unwrap()],
    ] {
        let err = repo.fail(&args);
        assert_mentions(
            &err,
            &["version 2"],
            &format!("{args:?} on a version 2 repository"),
        );
    }
    assert_eq!(
        snapshot(&repo.path),
        before,
        "a refused repository was modified"
    );
}

#[test]
fn unknown_incompatible_feature_is_refused() {
    let (repo, _, _, _) = repo_with_a();
    write_meta(
        &repo.path,
        r#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"compatible":["some-compat-thing"],"read-only-compatible":[],"incompatible":["warp-drive"]}}"#,
    );
    let before = snapshot(&repo.path);
    for args in [vec!["refs"], vec!["cat", "a"], vec!["gc"], vec!["fsck"]] {
        let err = repo.fail(&args);
        assert_mentions(
            &err,
            &["warp-drive"],
            &format!("{args:?} with an unknown incompatible feature"),
        );
    }
    assert_eq!(snapshot(&repo.path), before);
}

#[test]
fn unknown_compatible_features_are_ignored_and_read_only_ones_forbid_writing() {
    let (repo, tar, _, _) = repo_with_a();
    write_meta(
        &repo.path,
        r#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"compatible":["no-fsverity","something-new"],"read-only-compatible":[],"incompatible":[]},"extra-key":{"x":1}}"#,
    );
    assert_eq!(repo.cat("a"), std::fs::read(&tar).unwrap());
    repo.assert_fsck_ok();

    write_meta(
        &repo.path,
        r#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"compatible":["no-fsverity"],"read-only-compatible":["future-ro"],"incompatible":[]}}"#,
    );
    // Reading still works.
    assert_eq!(repo.cat("a"), std::fs::read(&tar).unwrap());
    assert!(
        String::from_utf8(repo.ok(&["refs"]))
            .unwrap()
            .contains("streams/refs/a\t")
    );
    repo.assert_fsck_ok();
    // Writing does not.
    let tar_b = tar_b(&repo.scratch());
    let err = repo.fail(&["import-tar", "b", tar_b.to_str().unwrap()]);
    assert_mentions(
        &err,
        &["read-only"],
        "import into a read-only-compatible repository",
    );
    std::fs::remove_file(repo.path.join("streams/refs/a")).unwrap();
    let err = repo.fail(&["gc"]);
    assert_mentions(
        &err,
        &["read-only"],
        "gc of a read-only-compatible repository",
    );
    assert_eq!(
        repo.object_count(),
        4,
        "gc deleted objects from a read-only repository"
    );
}

#[test]
fn broken_meta_json_is_refused() {
    let (repo, _, _, _) = repo_with_a();
    for (json, word) in [
        ("{not json", "meta.json"),
        (r#"{"version":1,"algorithm":"md5-weird"}"#, "md5-weird"),
        (
            r#"{"version":1,"algorithm":"fsverity-sha512-16"}"#,
            "fsverity-sha512-16",
        ),
        (r#"{"algorithm":"fsverity-sha512-12"}"#, "version"),
    ] {
        write_meta(&repo.path, json);
        let err = repo.fail(&["refs"]);
        assert_mentions(&err, &[word], json);
    }
    std::fs::remove_file(repo.path.join("meta.json")).unwrap();
    assert_mentions(
        &repo.fail(&["refs"]),
        &["composefs init"],
        "missing meta.json",
    );
}

#[test]
fn composefs_repo_environment_variable_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("env-repo");
    let tar = tar_a(tmp.path());
    let env = [("COMPOSEFS_REPO", path.as_os_str())];
    let run = |args: &[&str]| {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = composefs(&args, None, &env);
        assert!(
            out.status.success(),
            "{args:?} with $COMPOSEFS_REPO failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&["init"]);
    assert!(
        path.join("meta.json").is_file(),
        "init ignored $COMPOSEFS_REPO"
    );
    run(&["import-tar", "a", tar.to_str().unwrap()]);
    assert!(path.join("streams/refs/a").is_symlink());
    assert_eq!(run(&["cat", "a"]), std::fs::read(&tar).unwrap());
    assert!(
        String::from_utf8(run(&["refs"]))
            .unwrap()
            .contains("streams/refs/a\t")
    );
    run(&["fsck"]);
    // --repo wins over the environment.
    let other = Repo::new();
    let args: Vec<&OsStr> = vec![
        OsStr::new("--repo"),
        other.path.as_os_str(),
        OsStr::new("import-tar"),
        OsStr::new("b"),
        tar.as_os_str(),
    ];
    let out = composefs(&args, None, &env);
    assert!(out.status.success());
    assert!(
        other.path.join("streams/refs/b").is_symlink(),
        "--repo was not used"
    );
    assert!(
        !path.join("streams/refs/b").exists(),
        "$COMPOSEFS_REPO was used despite --repo"
    );
}

// ---------------------------------------------------------------------------
// Refs on disk
// ---------------------------------------------------------------------------

/// `streams/refs/NAME` must be a relative symlink that resolves (through
/// `streams/<content-id>`) to the stream object, as composefs-rs lays it out.
#[test]
fn ref_symlinks_resolve_to_the_stream() {
    let repo = Repo::new();
    let tar = tar_a(&repo.scratch());
    let mut problems = Vec::new();
    for name in ["top", "a/b", "deeply/nested/ref/name"] {
        let (hex, cid) = repo.import(name, &tar);
        let link = repo.path.join("streams/refs").join(name);
        let target = std::fs::read_link(&link).unwrap();
        assert!(
            target.is_relative(),
            "{name}: absolute target {}",
            target.display()
        );
        let want = std::fs::canonicalize(object_file(&repo, &hex)).unwrap();
        match std::fs::canonicalize(&link) {
            Ok(p) if p == want => {}
            Ok(p) => problems.push(format!(
                "streams/refs/{name} -> {} resolves to {}",
                target.display(),
                p.display()
            )),
            Err(e) => problems.push(format!(
                "streams/refs/{name} -> {} does not resolve ({e}); streams/{cid} is at {}",
                target.display(),
                repo.path.join("streams").join(&cid).display()
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "dangling ref symlinks:\n{}",
        problems.join("\n")
    );
}

/// A ref written the way composefs-rs writes it (`streams/refs/NAME` ->
/// `../<content-id>`) is read, listed and kept by gc.
#[test]
fn composefs_rs_style_refs_are_understood() {
    let (repo, tar, hex, cid) = repo_with_a();
    std::os::unix::fs::symlink(format!("../{cid}"), repo.path.join("streams/refs/handmade"))
        .unwrap();
    std::fs::create_dir_all(repo.path.join("streams/refs/dir")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../{cid}"),
        repo.path.join("streams/refs/dir/nested"),
    )
    .unwrap();
    assert_eq!(repo.cat("handmade"), std::fs::read(&tar).unwrap());
    assert_eq!(repo.cat("dir/nested"), std::fs::read(&tar).unwrap());
    let refs = String::from_utf8(repo.ok(&["refs"])).unwrap();
    assert!(
        refs.contains(&format!("streams/refs/handmade\t{cid}\t{hex}")),
        "{refs}"
    );
    assert!(
        refs.contains(&format!("streams/refs/dir/nested\t{cid}\t{hex}")),
        "{refs}"
    );
    std::fs::remove_file(repo.path.join("streams/refs/a")).unwrap();
    std::fs::remove_file(repo.path.join("streams/refs/handmade")).unwrap();
    let before = repo.objects();
    repo.ok(&["gc"]);
    assert_eq!(
        repo.objects(),
        before,
        "gc removed objects reachable from a composefs-rs style ref"
    );
    repo.assert_fsck_ok();
}

#[test]
fn refs_lists_every_ref() {
    let repo = Repo::new();
    let s = repo.scratch();
    let (hex_a, cid_a) = repo.import("one", &tar_a(&s));
    let (hex_b, cid_b) = repo.import("images/two", &tar_b(&s));
    repo.import("images/three", &tar_a(&s));
    let text = String::from_utf8(repo.ok(&["refs"])).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("streams/refs/images/three\t{cid_a}\t{hex_a}"),
            format!("streams/refs/images/two\t{cid_b}\t{hex_b}"),
            format!("streams/refs/one\t{cid_a}\t{hex_a}"),
        ]
    );
}

/// A ref may be named `refs/x` (a valid name); `cat refs/x` must find it.
#[test]
fn ref_named_with_a_refs_prefix_can_be_read_back() {
    let repo = Repo::new();
    let tar = tar_a(&repo.scratch());
    repo.import("refs/x", &tar);
    assert_eq!(repo.ref_names(), vec!["refs/x".to_string()]);
    let out = repo.run(&["cat", "refs/x"], None);
    assert!(
        out.status.success(),
        "import-tar accepted the ref name \"refs/x\" but `cat refs/x` cannot find it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(&tar).unwrap());
}

// ---------------------------------------------------------------------------
// gc
// ---------------------------------------------------------------------------

fn gc_lines(out: &[u8]) -> Vec<String> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn gc_after_removing_the_only_ref_removes_everything() {
    let (repo, _, _, cid) = repo_with_a();
    let n = repo.object_count();
    assert_eq!(n, 4);
    // Nothing to collect while the ref exists.
    let lines = gc_lines(&repo.ok(&["gc"]));
    assert!(
        lines.last().unwrap().starts_with("removed 0 objects"),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().ends_with(&format!("kept {n}")),
        "{lines:?}"
    );
    assert_eq!(repo.object_count(), n);

    std::fs::remove_file(repo.path.join("streams/refs/a")).unwrap();
    let lines = gc_lines(&repo.ok(&["gc"]));
    assert!(
        lines.contains(&format!("removed stream {cid}")),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!("removed {n} objects (")),
        "{last}"
    );
    assert!(last.ends_with("kept 0"), "{last}");
    assert_eq!(
        repo.object_count(),
        0,
        "objects left after gc: {:?}",
        repo.objects()
    );
    assert!(
        repo.stream_entries().is_empty(),
        "stream entries left after gc: {:?}",
        repo.stream_entries()
    );
    assert!(repo.path.join("streams/refs").is_dir() && repo.path.join("objects").is_dir());
    repo.assert_fsck_ok();
    // The repository is still usable.
    let tar = tar_b(&repo.scratch());
    repo.import("b", &tar);
    assert_eq!(repo.cat("b"), std::fs::read(&tar).unwrap());
}

#[test]
fn gc_keeps_everything_reachable() {
    let repo = Repo::new();
    let s = repo.scratch();
    let (ta, tb) = (tar_a(&s), tar_b(&s));
    let (hex_a, cid_a) = repo.import("a", &ta);
    let (hex_b, cid_b) = repo.import("nested/b", &tb);
    let shared1 = digest_of(&s, &pseudo_random(1, 1000));
    let shared2 = digest_of(&s, &pseudo_random(2, 70_000));
    let only_a = digest_of(&s, &pseudo_random(3, 3000));
    let only_b = digest_of(&s, &pseudo_random(4, 7000));
    let all: BTreeSet<String> = [&hex_a, &hex_b, &shared1, &shared2, &only_a, &only_b]
        .into_iter()
        .cloned()
        .collect();
    let got: BTreeSet<String> = repo.objects().into_iter().map(|(h, _)| h).collect();
    assert_eq!(got, all, "shared files are not stored once");

    std::fs::remove_file(repo.path.join("streams/refs/a")).unwrap();
    let lines = gc_lines(&repo.ok(&["gc"]));
    assert!(
        lines.contains(&format!("removed stream {cid_a}")),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().starts_with("removed 2 objects"),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().ends_with("kept 4"), "{lines:?}");
    let got: BTreeSet<String> = repo.objects().into_iter().map(|(h, _)| h).collect();
    let want: BTreeSet<String> = [&hex_b, &shared1, &shared2, &only_b]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(got, want);
    assert_eq!(repo.stream_entries(), vec![cid_b]);
    assert_eq!(repo.cat("nested/b"), std::fs::read(&tb).unwrap());
    repo.assert_fsck_ok();
    // A second gc has nothing left to do.
    let lines = gc_lines(&repo.ok(&["gc"]));
    assert_eq!(lines, vec![format!("removed 0 objects (0 B), kept 4")]);
}

#[test]
fn gc_dry_run_deletes_nothing() {
    let repo = Repo::new();
    let s = repo.scratch();
    let (_, cid_a) = repo.import("a", &tar_a(&s));
    repo.import("b", &tar_b(&s));
    std::fs::remove_file(repo.path.join("streams/refs/a")).unwrap();
    let before = snapshot(&repo.path);
    let lines = gc_lines(&repo.ok(&["gc", "--dry-run"]));
    assert!(
        lines.contains(&format!("would remove stream {cid_a}")),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().starts_with("would remove 2 objects"),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().ends_with("kept 4"), "{lines:?}");
    assert_eq!(
        snapshot(&repo.path),
        before,
        "gc --dry-run changed the repository"
    );
    // The real run removes what the dry run announced.
    let real = gc_lines(&repo.ok(&["gc"]));
    let announced: Vec<String> = lines
        .iter()
        .map(|l| l.replacen("would remove", "removed", 1))
        .collect();
    assert_eq!(real, announced);
}

#[test]
fn gc_refuses_to_run_with_a_broken_ref() {
    let (repo, _, _, _) = repo_with_a();
    repo.import("b", &tar_b(&repo.scratch()));
    std::fs::remove_file(repo.path.join("streams/refs/b")).unwrap();
    std::os::unix::fs::symlink(
        "../oci-layer-sha256:0000",
        repo.path.join("streams/refs/broken"),
    )
    .unwrap();
    let before = snapshot(&repo.path);
    let err = repo.fail(&["gc"]);
    assert_mentions(&err, &["broken"], "gc with a broken ref");
    assert_mentions(&err, &["nothing was deleted"], "gc with a broken ref");
    assert_eq!(
        snapshot(&repo.path),
        before,
        "gc deleted something despite a broken ref"
    );
    // A root stream that cannot be read also stops gc before it deletes.
    std::fs::remove_file(repo.path.join("streams/refs/broken")).unwrap();
    let a_entry = std::fs::read_link(repo.path.join("streams/refs/a")).unwrap();
    let a_stream = repo.stream_object_path(a_entry.file_name().unwrap().to_str().unwrap());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&a_stream)
        .unwrap();
    f.set_len(40).unwrap();
    let before = snapshot(&repo.path);
    let err = repo.fail(&["gc"]);
    assert_mentions(
        &err,
        &["nothing was deleted"],
        "gc with an unreadable root stream",
    );
    assert_eq!(
        snapshot(&repo.path),
        before,
        "gc deleted something despite an unreadable root"
    );
}

#[test]
fn gc_refuses_with_a_broken_image_ref() {
    let (repo, _, _, _) = repo_with_a();
    std::fs::remove_file(repo.path.join("streams/refs/a")).unwrap();
    std::os::unix::fs::symlink("../0123", repo.path.join("images/refs/img")).unwrap();
    let before = snapshot(&repo.path);
    let err = repo.fail(&["gc"]);
    assert_mentions(&err, &["image"], "gc with an image ref");
    assert_eq!(
        snapshot(&repo.path),
        before,
        "gc deleted something although it refused"
    );
}

// ---------------------------------------------------------------------------
// fsck
// ---------------------------------------------------------------------------

#[test]
fn fsck_passes_on_a_good_repository() {
    let repo = Repo::new();
    let (ok, text) = repo.fsck();
    assert!(ok, "fsck of an empty repository failed:\n{text}");
    let s = repo.scratch();
    repo.import("a", &tar_a(&s));
    repo.import("b/c", &tar_b(&s));
    let (ok, text) = repo.fsck();
    assert!(ok, "{text}");
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("checked 6 objects ("), "{last}");
    assert!(
        last.ends_with("2 streams, 0 images, 2 refs: 0 problems"),
        "{last}"
    );
    assert!(!text.contains("problem:"));
}

fn assert_fsck_finds(repo: &Repo, needles: &[&str], what: &str) -> String {
    let (ok, text) = repo.fsck();
    assert!(!ok, "fsck passed despite {what}:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("problem: ")),
        "{what}: no problem lines:\n{text}"
    );
    for n in needles {
        assert!(
            text.contains(n),
            "{what}: fsck output does not mention {n}:\n{text}"
        );
    }
    assert!(
        !text.trim_end().ends_with(": 0 problems"),
        "{what}: summary claims no problems:\n{text}"
    );
    text
}

#[test]
fn fsck_detects_a_flipped_byte_in_an_object() {
    let (repo, tar, _, _) = repo_with_a();
    let s = repo.scratch();
    let victim = digest_of(&s, &pseudo_random(2, 70_000));
    let path = object_file(&repo, &victim);
    let mut data = std::fs::read(&path).unwrap();
    data[40_000] ^= 0x01;
    std::fs::write(&path, &data).unwrap();
    let rel = format!("objects/{}/{}", &victim[..2], &victim[2..]);
    assert_fsck_finds(&repo, &[&rel], "a flipped byte");
    // Without kernel fs-verity, cat re-digests each object and fails on the damaged one.
    let out = repo.run(&["cat", "a"], None);
    assert!(!out.status.success(), "cat of a corrupt object succeeded");
    assert_ne!(out.stdout, std::fs::read(&tar).unwrap());
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["corrupt", &victim],
        "cat of a corrupt object",
    );
}

#[test]
fn a_regular_file_among_refs_stops_gc_and_is_reported_by_fsck() {
    let (repo, _, _, _) = repo_with_a();
    let before = repo.object_count();
    std::fs::write(repo.path.join("streams/refs/junk"), b"not a symlink").unwrap();
    let err = repo.fail(&["gc"]);
    assert_mentions(
        &err,
        &["junk", "symlink"],
        "gc with a regular file among refs",
    );
    assert_eq!(
        repo.object_count(),
        before,
        "gc deleted objects despite a bad ref"
    );
    let (ok, out) = repo.fsck();
    assert!(!ok, "fsck passed with a regular file among refs");
    assert_mentions(&out, &["junk"], "fsck with a regular file among refs");
}

#[test]
fn fsck_detects_a_truncated_splitstream() {
    let (repo, _, hex, cid) = repo_with_a();
    let stream = repo.stream_object_path(&cid);
    assert!(stream.ends_with(&hex[2..]));
    let len = std::fs::metadata(&stream).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stream)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_fsck_finds(&repo, &[&hex[2..], &cid], "a truncated splitstream");
    let err = repo.fail(&["cat", "a"]);
    assert_mentions(
        &err,
        &["truncated", "corrupt"],
        "cat of a truncated splitstream",
    );
    // Every shorter length fails cleanly too.
    for cut in [0, 1, 31, 32, 33, 111, 112, 113, len / 3] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&stream)
            .unwrap()
            .set_len(cut)
            .unwrap();
        repo.fail(&["cat", "a"]);
        assert_fsck_finds(
            &repo,
            &[&hex[2..]],
            &format!("a splitstream cut to {cut} bytes"),
        );
    }
}

#[test]
fn fsck_detects_a_missing_object() {
    let (repo, _, _, cid) = repo_with_a();
    let victim = digest_of(&repo.scratch(), &pseudo_random(3, 3000));
    std::fs::remove_file(object_file(&repo, &victim)).unwrap();
    assert_fsck_finds(&repo, &[&victim, &cid], "a missing object");
    let err = repo.fail(&["cat", "a"]);
    assert_mentions(&err, &[&victim], "cat with a missing object");
}

#[test]
fn fsck_detects_broken_refs_and_entries() {
    let (repo, _, _, cid) = repo_with_a();
    // A ref to a stream that does not exist.
    std::os::unix::fs::symlink(
        "../oci-layer-sha256:nothere",
        repo.path.join("streams/refs/dangling"),
    )
    .unwrap();
    assert_fsck_finds(&repo, &["streams/refs/dangling"], "a dangling ref");
    std::fs::remove_file(repo.path.join("streams/refs/dangling")).unwrap();
    repo.assert_fsck_ok();
    // The stream entry of a ref removed: the ref is broken.
    let entry = repo.path.join("streams").join(&cid);
    let target = std::fs::read_link(&entry).unwrap();
    std::fs::remove_file(&entry).unwrap();
    assert_fsck_finds(&repo, &["streams/refs/a"], "a ref whose entry is gone");
    // An entry pointing outside objects/.
    std::os::unix::fs::symlink("../meta.json", &entry).unwrap();
    assert_fsck_finds(&repo, &[&cid], "an entry pointing outside objects/");
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&target, &entry).unwrap();
    repo.assert_fsck_ok();
}

#[test]
fn fsck_detects_stray_files_in_objects() {
    let (repo, _, _, _) = repo_with_a();
    std::fs::write(repo.path.join("objects/ab/not-an-object"), b"junk").unwrap();
    assert_fsck_finds(&repo, &["objects/ab/not-an-object"], "a stray file");
}

// ---------------------------------------------------------------------------
// Locking
// ---------------------------------------------------------------------------

/// A child process killed (by its pid) if the test ends early.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `flock MODE <repo> sh -c 'echo locked; read x'`: returns once the lock is
/// held (the child said so); writing a line to its stdin releases it.
fn hold_lock(repo: &Path, mode: &str) -> Reaped {
    require_tool("flock");
    let mut child = Reaped(
        Command::new("flock")
            .arg(mode)
            .arg(repo)
            .args(["sh", "-c", "echo locked; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n", "flock {mode} did not take the lock");
    child
}

/// Wait (by observing kernel state, not by time) until `pid` is queued on an
/// flock of the inode `ino` in `mode` (READ or WRITE). Fails if `proc` exits first.
fn wait_until_blocked_on_flock(proc: &mut Child, ino: u64, mode: &str) {
    let pid = proc.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        let blocked = locks.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 7
                && f[1] == "->"
                && f[2] == "FLOCK"
                && f[4] == mode
                && f[5] == pid
                && f[6].ends_with(&format!(":{ino}"))
        });
        if blocked {
            return;
        }
        if let Some(status) = proc.try_wait().unwrap() {
            panic!(
                "the process finished ({status}) instead of waiting for the lock held by another process"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the process never queued for the {mode} lock:\n{locks}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn gc_waits_for_shared_lock_holders() {
    let (repo, _, _, _) = repo_with_a();
    std::fs::remove_file(repo.path.join("streams/refs/a")).unwrap();
    let n = repo.object_count();
    let ino = std::fs::metadata(&repo.path).unwrap().ino();

    let mut holder = hold_lock(&repo.path, "--shared");
    let mut gc = Reaped(
        repo.command()
            .arg("gc")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until_blocked_on_flock(&mut gc.0, ino, "WRITE");
    // gc is queued behind the shared lock: still running, nothing deleted.
    assert!(
        gc.0.try_wait().unwrap().is_none(),
        "gc exited while a shared lock was held"
    );
    assert_eq!(
        repo.object_count(),
        n,
        "gc deleted objects while a shared lock was held"
    );

    // Release the lock: gc goes ahead.
    holder.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
    let out = std::mem::replace(&mut gc.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    assert_no_panic("gc", &out);
    assert!(
        out.status.success(),
        "gc failed after the lock was released: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(repo.object_count(), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("removed {n} objects")));
}

#[test]
fn import_waits_while_gc_holds_the_exclusive_lock() {
    let repo = Repo::new();
    let tar = tar_a(&repo.scratch());
    let ino = std::fs::metadata(&repo.path).unwrap().ino();

    let mut holder = hold_lock(&repo.path, "--exclusive");
    let mut import = Reaped(
        repo.command()
            .args(["import-tar", "a", tar.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until_blocked_on_flock(&mut import.0, ino, "READ");
    assert!(import.0.try_wait().unwrap().is_none());
    assert_eq!(
        repo.object_count(),
        0,
        "import wrote objects while gc held the lock"
    );
    assert!(repo.ref_names().is_empty());

    holder.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
    let out = std::mem::replace(&mut import.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    assert_no_panic("import-tar", &out);
    assert!(
        out.status.success(),
        "import failed after the lock was released: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(repo.cat("a"), std::fs::read(&tar).unwrap());
}

/// Several imports of overlapping content at once (shared lock): all succeed,
/// every object is stored once and the repository checks clean.
#[test]
fn parallel_imports_share_objects_safely() {
    let repo = Repo::new();
    let s = repo.scratch();
    let (ta, tb) = (tar_a(&s), tar_b(&s));
    let mut children = Vec::new();
    for i in 0..8 {
        let (name, tar) = if i % 2 == 0 {
            (format!("a{}", i % 4), &ta)
        } else {
            (format!("b/{i}"), &tb)
        };
        let child = repo
            .command()
            .args(["import-tar", &name, tar.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((name, Reaped(child)));
    }
    for (name, mut child) in children {
        let out = std::mem::replace(&mut child.0, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert_no_panic(&format!("parallel import {name}"), &out);
        assert!(
            out.status.success(),
            "parallel import {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        repo.object_count(),
        6,
        "3 files of A, 1 of B and 2 streams expected: {:?}",
        repo.objects()
    );
    assert_eq!(
        repo.ref_names(),
        vec!["a0", "a2", "b/1", "b/3", "b/5", "b/7"]
    );
    assert_eq!(repo.cat("a2"), std::fs::read(&ta).unwrap());
    assert_eq!(repo.cat("b/5"), std::fs::read(&tb).unwrap());
    repo.assert_fsck_ok();
    let mut stray = Vec::new();
    walk(&repo.path, &mut |p| {
        if p.file_name().unwrap().to_string_lossy().starts_with(".tmp") {
            stray.push(p.to_path_buf());
        }
    });
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

// ---------------------------------------------------------------------------
// measure
// ---------------------------------------------------------------------------

#[test]
fn measure_matches_the_fsverity_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, size) in [
        0usize,
        1,
        4095,
        4096,
        4097,
        64 * 4096,
        64 * 4096 + 1,
        (1 << 20) + 3,
        (16 << 20) + 1,
    ]
    .iter()
    .enumerate()
    {
        let p = tmp.path().join(format!("f{size}"));
        std::fs::write(&p, pseudo_random(900 + i as u64, *size)).unwrap();
        files.push(p);
    }
    for alg in ["sha256", "sha512"] {
        let mut args: Vec<&OsStr> =
            vec![OsStr::new("measure"), OsStr::new("--hash"), OsStr::new(alg)];
        args.extend(files.iter().map(|p| p.as_os_str()));
        let out = composefs(&args, None, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), files.len());
        for (line, file) in lines.iter().zip(&files) {
            assert_eq!(
                *line,
                format!("{}  {}", fsverity_digest(alg, file), file.display()),
                "measure --hash {alg}"
            );
        }
    }
    // Default is sha512; a missing file is an error naming it.
    let out = composefs(&[OsStr::new("measure"), files[2].as_os_str()], None, &[]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{}  {}\n",
            fsverity_digest("sha512", &files[2]),
            files[2].display()
        )
    );
    let missing = tmp.path().join("missing-file");
    let out = composefs(&[OsStr::new("measure"), missing.as_os_str()], None, &[]);
    assert!(!out.status.success());
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["missing-file"],
        "measure of a missing file",
    );
}

/// `init` options as cfsctl spells them: the EROFS version lands in
/// meta.json (`erofs_formats`, `v1_erofs` for 1 only), `--insecure` leaves
/// fs-verity off meta.json, a positional directory works, and bad values
/// are refused before anything is made.
#[test]
fn init_options_as_cfsctl_spells_them() {
    let tmp = tempfile::tempdir().unwrap();
    for v in ["0", "1", "2"] {
        let dir = tmp.path().join(format!("v{v}"));
        let words = ["init", "--insecure", "--erofs-version", v];
        let mut args: Vec<&OsStr> = words.iter().map(OsStr::new).collect();
        args.push(dir.as_os_str());
        let out = composefs(&args, None, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = std::fs::read_to_string(dir.join("meta.json")).unwrap();
        assert!(
            meta.contains(&format!("\"default\": {v}")),
            "erofs_formats of --erofs-version {v}: {meta}"
        );
        assert_eq!(meta.contains("v1_erofs"), v == "1", "v1_erofs flag: {meta}");
        assert!(!meta.contains("no-fsverity"), "legacy flag written: {meta}");
    }
    for bad in [
        &["init", "--erofs-version", "3"][..],
        &["init", "--algorithm", "fsverity-md5-12"][..],
    ] {
        let dir = tmp.path().join("bad");
        let mut args: Vec<&OsStr> = bad.iter().map(OsStr::new).collect();
        args.push(dir.as_os_str());
        let out = composefs(&args, None, &[]);
        assert!(!out.status.success(), "{bad:?} worked");
        assert!(!dir.join("meta.json").exists(), "{bad:?} made a repository");
    }
}

/// `refs --json`: one object per line of the text, with the same ref,
/// entry and object; a broken ref has a null object and says why; no
/// refs is `[]`.
#[test]
fn refs_json_matches_the_text() {
    let repo = Repo::new();
    let json = |repo: &Repo| -> Vec<serde_json::Value> {
        let out = repo.ok(&["refs", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("refs --json is JSON");
        v.as_array().expect("a JSON array").clone()
    };
    assert_eq!(String::from_utf8(repo.ok(&["refs"])).unwrap(), "");
    assert!(json(&repo).is_empty());

    let s = repo.scratch();
    repo.import("one", &tar_a(&s));
    repo.import("dir/two", &tar_b(&s));
    let tree = s.join("tree");
    write_file(&tree.join("usr/x"), &pseudo_random(9, 500));
    repo.ok(&["create-image", tree.to_str().unwrap(), "img"]);
    std::os::unix::fs::symlink("../gone", repo.path.join("streams/refs/dangling")).unwrap();

    let text = String::from_utf8(repo.ok(&["refs"])).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let entries = json(&repo);
    assert_eq!(entries.len(), 4, "{text}");
    assert_eq!(lines.len(), entries.len(), "{text}\n{entries:?}");
    for (line, e) in lines.iter().zip(&entries) {
        let t: Vec<&str> = line.split('\t').collect();
        let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["ref", "kind", "name", "entry", "object", "error"]),
            "{e}"
        );
        assert_eq!(e["ref"], t[0], "{line}");
        assert_eq!(e["entry"], t[1], "{line}");
        let kind = e["kind"].as_str().unwrap();
        let dir = match kind {
            "stream" => "streams",
            "image" => "images",
            _ => panic!("kind {kind:?}"),
        };
        assert_eq!(
            format!("{dir}/refs/{}", e["name"].as_str().unwrap()),
            t[0],
            "{e}"
        );
        if t[2] == "(broken)" {
            assert!(e["object"].is_null(), "{e}");
            assert!(!e["error"].as_str().unwrap().is_empty(), "{e}");
        } else {
            assert_eq!(e["object"], t[2], "{line}");
            assert!(e["error"].is_null(), "{e}");
        }
    }
    assert!(
        text.contains("streams/refs/dangling\tgone\t(broken)"),
        "{text}"
    );
    assert!(text.contains("images/refs/img\t"), "{text}");
}
