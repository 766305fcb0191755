//! Network faults, injected between a real server and the pulls: an ostree
//! archive repository served by `python3 -m http.server`, an OCI image in
//! Debian's `docker-registry`, each behind the fault proxy of
//! `common/faults.rs` (error statuses, resets, bodies cut short, stalls,
//! flipped bytes). Transient faults are retried and the pull gives the same
//! tree as a clean one (compared by the digest of the composefs image made
//! of it); the rest fail with an error naming what failed, publish no ref,
//! leave a sound repository, and a rerun fetches only what was not verified
//! before. Every command runs under a time limit: none may hang.

mod common;
#[path = "common/ostree.rs"]
#[allow(unused_imports)]
mod ostree_fixtures;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::faults::{Fault, FaultProxy};
use common::{Repo, assert_no_panic, pseudo_random, require_tool, write_file};
use ostree_fixtures::{HttpServer, ostree, run_with_timeout};

/// No pull here may take longer (the longest runs through retries with
/// pauses of a few seconds in all).
const LIMIT: Duration = Duration::from_secs(120);

fn run_limited(repo: &Repo, args: &[&str]) -> Output {
    let out = run_with_timeout(repo, args, LIMIT)
        .unwrap_or_else(|| panic!("composefs {args:?} hung past {LIMIT:?}"));
    assert_no_panic(&format!("{args:?}"), &out);
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The digest of the composefs image made of a stored tree.
fn image_digest(repo: &Repo, args: &[&str]) -> String {
    let out = String::from_utf8(repo.ok(args)).unwrap();
    out.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("{args:?} printed nothing"))
        .to_string()
}

fn refs(repo: &Repo) -> String {
    String::from_utf8(repo.ok(&["refs"])).unwrap()
}

/// A tree with files of many sizes (inline, one block, many blocks), a
/// symlink and nested directories.
fn populate(root: &Path) {
    for i in 0..24u64 {
        let size = [10, 100, 5000, 70_000, 300_000][i as usize % 5] + i as usize;
        write_file(
            &root.join(format!("d{}/f{i}", i % 3)),
            &pseudo_random(i, size),
        );
    }
    std::os::unix::fs::symlink("d0/f0", root.join("link")).unwrap();
}

// ---------------------------------------------------------------------------
// ostree over HTTP
// ---------------------------------------------------------------------------

struct OstreeSetup {
    _dir: tempfile::TempDir,
    server: HttpServer,
    /// `composefs ostree create-image` of a clean pull.
    clean_image: String,
    commit: String,
    repo_dir: std::path::PathBuf,
}

fn ostree_setup() -> OstreeSetup {
    require_tool("ostree");
    require_tool("python3");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    populate(&tree);
    let r = dir.path().join("repo");
    let rs = r.to_str().unwrap();
    ostree(&[&format!("--repo={rs}"), "init", "--mode=archive"]);
    let commit = ostree(&[
        &format!("--repo={rs}"),
        "commit",
        "-b",
        "main",
        "-s",
        "faults",
        &format!("--tree=dir={}", tree.display()),
    ])
    .trim()
    .to_string();
    let server = HttpServer::serve(&r);
    let clean = Repo::new();
    let out = run_limited(
        &clean,
        &[
            "ostree",
            "pull",
            &format!("http://127.0.0.1:{}", server.port),
            "main",
        ],
    );
    assert!(out.status.success(), "clean pull: {}", stderr(&out));
    let clean_image = image_digest(&clean, &["ostree", "create-image", "main"]);
    OstreeSetup {
        _dir: dir,
        server,
        clean_image,
        commit,
        repo_dir: r,
    }
}

/// Files under `dir` whose names end with `suffix`.
fn walk_count(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    common::walk(dir, &mut |p| {
        if p.to_string_lossy().ends_with(suffix) {
            n += 1;
        }
    });
    n
}

fn is_object(path: &str) -> bool {
    path.starts_with("/objects/")
}

fn filez_paths(seen: &[common::faults::Seen], pass_only: bool) -> BTreeSet<String> {
    seen.iter()
        .filter(|s| s.path.ends_with(".filez") && (!pass_only || s.fault == Fault::Pass))
        .map(|s| s.path.clone())
        .collect()
}

#[test]
fn ostree_http_pull_retries_transient_faults() {
    let s = ostree_setup();
    type Plan = fn(&str, &str, usize) -> Fault;
    let cases: [(&str, Plan, &[&str]); 4] = [
        (
            "503 once for every file",
            |_, _, n| {
                if n == 1 {
                    Fault::Status(503)
                } else {
                    Fault::Pass
                }
            },
            &[],
        ),
        (
            "reset inside every object once",
            |_, p, n| {
                if n == 1 && is_object(p) {
                    Fault::Reset(40)
                } else {
                    Fault::Pass
                }
            },
            &[],
        ),
        (
            "every object cut short once",
            |_, p, n| {
                if n == 1 && is_object(p) {
                    Fault::Truncate(30)
                } else {
                    Fault::Pass
                }
            },
            &[],
        ),
        (
            "a stalled file object",
            |_, p, n| {
                if n == 1 && p.ends_with(".filez") {
                    Fault::Stall(10)
                } else {
                    Fault::Pass
                }
            },
            &["--timeout", "1"],
        ),
    ];
    for (what, plan, extra) in cases {
        let proxy = FaultProxy::start(s.server.port, plan);
        let repo = Repo::new();
        let url = format!("http://{}", proxy.host());
        let mut args = vec!["ostree", "pull", url.as_str(), "main"];
        args.extend_from_slice(extra);
        let out = run_limited(&repo, &args);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let faults = proxy
            .seen()
            .iter()
            .filter(|x| x.fault != Fault::Pass)
            .count();
        assert!(faults > 0, "{what}: no fault was injected");
        assert_eq!(
            image_digest(&repo, &["ostree", "create-image", "main"]),
            s.clean_image,
            "{what}: the pulled tree differs from a clean pull"
        );
        repo.assert_fsck_ok();
    }
}

#[test]
fn ostree_http_pull_fails_cleanly_and_resumes() {
    let s = ostree_setup();
    // Persistent faults on one file object (the first asked for): a 404, a
    // flipped byte, a 500; then everything (500).
    // The victim is the sixth distinct file object asked for, so that the
    // failed pull has verified and stored others first.
    type Victim = (Vec<String>, Option<String>);
    let victim = std::sync::Arc::new(std::sync::Mutex::new(Victim::default()));
    let total = walk_count(&s.repo_dir.join("objects"), ".filez");
    for (what, fault, all) in [
        ("missing object", Fault::Status(404), false),
        ("wrong bytes", Fault::Flip(60), false),
        ("server error", Fault::Status(500), false),
        ("server down", Fault::Status(500), true),
    ] {
        let v = std::sync::Arc::clone(&victim);
        let proxy = FaultProxy::start(s.server.port, move |_, p, _| {
            if all && is_object(p) {
                return fault;
            }
            if !p.ends_with(".filez") {
                return Fault::Pass;
            }
            let mut v = v.lock().unwrap();
            if v.1.as_deref() == Some(p) {
                return fault;
            }
            if v.1.is_none() && !v.0.iter().any(|x| x == p) {
                v.0.push(p.to_string());
                if v.0.len() == 6 {
                    v.1 = Some(p.to_string());
                    return fault;
                }
            }
            Fault::Pass
        });
        let repo = Repo::new();
        let url = format!("http://{}", proxy.host());
        let out = run_limited(&repo, &["ostree", "pull", &url, "main", "--jobs", "2"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: the pull succeeded");
        if !all {
            let victim = victim.lock().unwrap().1.clone().unwrap();
            // objects/ab/cdef….filez: the error names the object.
            let hex: String = victim
                .trim_start_matches("/objects/")
                .trim_end_matches(".filez")
                .replace('/', "");
            assert!(
                err.contains(&hex),
                "{what}: the error does not name {hex}: {err}"
            );
        }
        let expect = match fault {
            Fault::Status(404) => "not found",
            Fault::Status(500) => "500",
            _ => "checksum",
        };
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            !refs(&repo).contains("ostree/main"),
            "{what}: a ref was published"
        );
        repo.assert_fsck_ok();

        // A rerun through a healthy connection fetches only what the
        // failed pull did not verify.
        let first = filez_paths(&proxy.seen(), true);
        let healthy = FaultProxy::start(s.server.port, |_, _, _| Fault::Pass);
        let url = format!("http://{}", healthy.host());
        let out = run_limited(&repo, &["ostree", "pull", &url, "main"]);
        assert!(out.status.success(), "{what}: rerun: {}", stderr(&out));
        let again = filez_paths(&healthy.seen(), false);
        if !all {
            // Objects in flight when the pull failed may be fetched again;
            // those it had verified and stored are not.
            assert!(
                again.len() < total && first.difference(&again).count() > 0,
                "{what}: the rerun fetched {} of {total} file objects, again all of those \
                 fetched before ({})",
                again.len(),
                first.len()
            );
        }
        assert_eq!(
            image_digest(&repo, &["ostree", "create-image", "main"]),
            s.clean_image,
            "{what}"
        );
        let listed = String::from_utf8(repo.ok(&["ostree", "list"])).unwrap();
        assert!(listed.contains(&s.commit), "{what}: {listed}");
        repo.assert_fsck_ok();
        *victim.lock().unwrap() = Victim::default();
    }
}

// ---------------------------------------------------------------------------
// OCI registry
// ---------------------------------------------------------------------------

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct OciSetup {
    _dir: tempfile::TempDir,
    registry: common::registry::RegistryProcess,
    clean_image: String,
    /// The two layers' blob paths (`/v2/test/img/blobs/sha256:…`).
    layers: Vec<String>,
}

fn oci_setup() -> OciSetup {
    require_tool("skopeo");
    require_tool("umoci");
    require_tool("docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a"), d.join("b"));
    populate(&a);
    write_file(&b.join("d0/f0"), b"replaced in the upper layer\n");
    write_file(&b.join("new"), &pseudo_random(99, 200_000));
    for (src, tar) in [(&a, "a.tar"), (&b, "b.tar")] {
        run(Command::new("tar")
            .arg("-C")
            .arg(src)
            .arg("-cf")
            .arg(d.join(tar))
            .arg("."));
    }
    let layout = d.join("layout");
    let l = |tag: &str| format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &l("1")]));
    for tar in ["a.tar", "b.tar"] {
        run(Command::new("umoci")
            .args(["raw", "add-layer", "--image", &l("1")])
            .arg(d.join(tar)));
    }
    let registry = common::registry::start_registry(false);
    let host = format!("127.0.0.1:{}", registry.port);
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}", l("1")),
        &format!("docker://{host}/test/img:1"),
    ]));
    let clean = Repo::new();
    let out = run_limited(
        &clean,
        &[
            "oci",
            "pull",
            &format!("docker://{host}/test/img:1"),
            "--name",
            "img",
        ],
    );
    assert!(out.status.success(), "clean pull: {}", stderr(&out));
    let clean_image = image_digest(&clean, &["oci", "create-image", "img"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&clean.ok(&["oci", "inspect", "img", "--manifest"])).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("/v2/test/img/blobs/{}", l["digest"].as_str().unwrap()))
        .collect();
    OciSetup {
        _dir: dir,
        registry,
        clean_image,
        layers,
    }
}

fn oci_pull(repo: &Repo, proxy: &FaultProxy, extra: &[&str]) -> Output {
    let image = format!("docker://{}/test/img:1", proxy.host());
    let mut args = vec!["oci", "pull", image.as_str(), "--name", "img"];
    args.extend_from_slice(extra);
    run_limited(repo, &args)
}

#[test]
fn registry_pull_retries_transient_faults() {
    let s = oci_setup();
    let layers: Vec<String> = s.layers.clone();
    type Case = (&'static str, Fault, bool, &'static [&'static str]);
    // (what, fault on the first request, only on layer blobs, options)
    let cases: [Case; 5] = [
        ("503 once for every request", Fault::Status(503), false, &[]),
        ("a reset inside each layer", Fault::Reset(1000), true, &[]),
        ("each layer cut short", Fault::Truncate(1000), true, &[]),
        ("a reset before any body byte", Fault::Reset(0), false, &[]),
        (
            "stalled layers",
            Fault::Stall(1000),
            true,
            &["--timeout", "1"],
        ),
    ];
    for (what, fault, only_layers, extra) in cases {
        let layers = layers.clone();
        let proxy = FaultProxy::start(s.registry.port, move |m, p, n| {
            let target = !only_layers || layers.iter().any(|l| l == p);
            if n == 1 && m == "GET" && target && p != "/v2/" {
                fault
            } else {
                Fault::Pass
            }
        });
        let repo = Repo::new();
        let out = oci_pull(&repo, &proxy, extra);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert!(
            proxy.seen().iter().any(|x| x.fault != Fault::Pass),
            "{what}: no fault was injected"
        );
        assert_eq!(
            image_digest(&repo, &["oci", "create-image", "img"]),
            s.clean_image,
            "{what}: the pulled image differs from a clean pull"
        );
        repo.assert_fsck_ok();
    }
}

#[test]
fn registry_pull_fails_cleanly_and_resumes() {
    let s = oci_setup();
    let bad = s.layers[1].clone();
    for (what, fault, expect) in [
        ("wrong bytes in a layer", Fault::Flip(500), "corrupt"),
        ("a layer gone", Fault::Status(404), "no blob"),
        ("a layer's server error", Fault::Status(500), "500"),
        (
            "a layer always cut short",
            Fault::Truncate(2000),
            "disconnected",
        ),
    ] {
        let b = bad.clone();
        let proxy = FaultProxy::start(s.registry.port, move |m, p, _| {
            if m == "GET" && p == b {
                fault
            } else {
                Fault::Pass
            }
        });
        let repo = Repo::new();
        let out = oci_pull(&repo, &proxy, &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: the pull succeeded");
        let digest = bad.rsplit('/').next().unwrap();
        assert!(
            err.contains(digest),
            "{what}: the error does not name {digest}: {err}"
        );
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            !String::from_utf8(repo.ok(&["oci", "images"]))
                .unwrap()
                .contains("img"),
            "{what}: the image was named"
        );
        repo.assert_fsck_ok();

        // The rerun downloads only the layer that failed.
        let healthy = FaultProxy::start(s.registry.port, |_, _, _| Fault::Pass);
        let out = oci_pull(&repo, &healthy, &[]);
        assert!(out.status.success(), "{what}: rerun: {}", stderr(&out));
        let fetched: BTreeSet<String> = healthy
            .seen()
            .into_iter()
            .filter(|x| x.method == "GET" && s.layers.contains(&x.path))
            .map(|x| x.path)
            .collect();
        assert_eq!(
            fetched,
            BTreeSet::from([bad.clone()]),
            "{what}: the rerun fetched verified layers again"
        );
        assert_eq!(
            image_digest(&repo, &["oci", "create-image", "img"]),
            s.clean_image,
            "{what}"
        );
        repo.assert_fsck_ok();
    }
    // A manifest that is not there, a registry that only fails.
    for (what, plan, expect) in [
        (
            "no such manifest",
            (|_: &str, p: &str, _: usize| {
                if p.contains("/manifests/") {
                    Fault::Status(404)
                } else {
                    Fault::Pass
                }
            }) as fn(&str, &str, usize) -> Fault,
            "no manifest",
        ),
        ("registry down", |_, _, _| Fault::Status(503), "503"),
    ] {
        let proxy = FaultProxy::start(s.registry.port, plan);
        let repo = Repo::new();
        let out = oci_pull(&repo, &proxy, &[]);
        assert!(!out.status.success(), "{what}: the pull succeeded");
        assert!(stderr(&out).contains(expect), "{what}: {}", stderr(&out));
        repo.assert_fsck_ok();
    }
}
