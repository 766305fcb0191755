//! Concurrency: two pulls of overlapping content into one repository and a
//! `gc`, all real `composefs` processes started together, round after
//! round.
//!
//! Round kinds, in turn:
//! - two ostree commits sharing most files (`main` over HTTP, `next` from
//!   the local path, or the other way round);
//! - the same commit twice under two names (one over HTTP, one local);
//! - two OCI images sharing two of their three layers (an OCI layout
//!   made by umoci);
//!
//! each into a repository holding only garbage (an imported tar whose ref
//! was deleted, so `gc` has work), or into one where the very content the
//! pulls need is present but unreferenced (pulled before, refs deleted):
//! then whether `gc` takes its exclusive lock before or after a pull
//! decides whether the pull finds that content or must fetch it again.
//! The three processes start in a random order with random gaps (seeded:
//! `CONCURRENCY_SEED`; the gaps vary the schedule, they synchronise
//! nothing). Afterwards:
//!
//! - every process ended within two minutes (no deadlock: a hang kills
//!   them all and fails the round with a message) and succeeded;
//! - `fsck` is clean (no half-written or lost object);
//! - the refs are exactly those of the two pulls run one after the other
//!   in an empty repository (same entries, same object ids), and open:
//!   `cat`, `ls`;
//! - after one more `gc`, the objects are exactly theirs: nothing needed
//!   was collected, no garbage is left, and no temporary file.
//!
//! `CONCURRENCY_ROUNDS=N` (default 12; `scripts/crash-loop.sh` runs 50+).
//! The mounted tree read while `gc` runs is in `fuse-tests/concurrency.rs`.

mod common;
#[path = "common/ostree.rs"]
#[allow(unused_imports)]
mod ostree_fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    Rng, command_in, copy_dir, env_number, mixed_tree, mixed_tree_modify, object_names, ok_in,
    pseudo_random, refs_in, require_tool, run_in, tar_members, tmp_leftovers, umoci_image,
    write_file,
};
use ostree_fixtures::{HttpServer, ostree};

/// Every process of a round must have ended by then.
const LIMIT: Duration = Duration::from_secs(120);

const FILES: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `main` and `next`, sharing most files.
    OstreeTwo,
    /// `main` twice, as `a` and `b`.
    OstreeSame,
    /// OCI images 1 and 2, sharing two layers.
    Oci,
}

const KINDS: [Kind; 3] = [Kind::OstreeTwo, Kind::OstreeSame, Kind::Oci];

struct Fixture {
    dir: tempfile::TempDir,
    orepo: PathBuf,
    layout: PathBuf,
    server: HttpServer,
    /// Starting repositories: garbage only; and per kind, the content
    /// its pulls need present but unreferenced.
    garbage: PathBuf,
    overlap: BTreeMap<Kind, PathBuf>,
    /// Per kind: refs and objects (after gc) of the two pulls run one
    /// after the other.
    expected: BTreeMap<Kind, (BTreeSet<String>, Vec<String>)>,
}

impl Fixture {
    fn new() -> Fixture {
        for t in ["ostree", "umoci", "python3", "tar", "cp"] {
            require_tool(t);
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tree = d.join("tree");
        mixed_tree(&tree, 2, FILES);
        let tree2 = d.join("tree2");
        mixed_tree(&tree2, 2, FILES);
        mixed_tree_modify(&tree2, 2, FILES, 4, 8);
        let orepo = d.join("orepo");
        let o = format!("--repo={}", orepo.display());
        ostree(&[&o, "init", "--mode=archive"]);
        for (branch, t) in [("main", &tree), ("next", &tree2)] {
            ostree(&[
                &o,
                "commit",
                "-b",
                branch,
                "-s",
                branch,
                &format!("--tree=dir={}", t.display()),
            ]);
        }
        let server = HttpServer::serve(&orepo);
        // Images 1 and 2: the first two layers shared, the third not.
        let layout = d.join("layout");
        let layer = |t: &Path, members: &[&str], name: &str| {
            let l = d.join(name);
            tar_members(t, members, &l);
            l
        };
        let l0 = layer(&tree, &["./d0", "./d1"], "l0.tar");
        let l1 = layer(&tree, &["./d2", "./d3"], "l1.tar");
        let l2 = layer(&tree, &["./d4", "./l0"], "l2.tar");
        let l2b = layer(&tree2, &["./d4", "./l1"], "l2b.tar");
        umoci_image(&layout, "1", &[&l0, &l1, &l2]);
        umoci_image(&layout, "2", &[&l0, &l1, &l2b]);
        // Garbage: many small objects.
        let g = d.join("garbage-tree");
        for i in 0..1000u64 {
            write_file(
                &g.join(format!("g{}/{i}", i % 8)),
                &pseudo_random(9_000_000 + i, 100 + (i as usize % 300)),
            );
        }
        let gtar = d.join("garbage.tar");
        tar_members(&g, &["."], &gtar);
        let garbage = d.join("tpl-garbage");
        ok_in(&garbage, &["init"]);
        ok_in(&garbage, &["import-tar", "garbage", gtar.to_str().unwrap()]);
        ok_in(&garbage, &["refs", "--delete", "garbage"]);
        let mut fx = Fixture {
            dir,
            orepo,
            layout,
            server,
            garbage,
            overlap: BTreeMap::new(),
            expected: BTreeMap::new(),
        };
        for kind in KINDS {
            let (a, b) = fx.pulls(kind, 0);
            // Expected: one after the other, in an empty repository.
            let clean = fx.dir.path().join("clean");
            ok_in(&clean, &["init"]);
            ok_in(&clean, &a.iter().map(String::as_str).collect::<Vec<_>>());
            ok_in(&clean, &b.iter().map(String::as_str).collect::<Vec<_>>());
            let refs = refs_in(&clean);
            assert_eq!(refs.len(), 2, "{kind:?}: {refs:?}");
            ok_in(&clean, &["gc"]);
            fx.expected.insert(kind, (refs, object_names(&clean)));
            std::fs::remove_dir_all(&clean).unwrap();
            // The same content, present but unreferenced, plus garbage.
            let overlap = fx.dir.path().join(format!("tpl-overlap-{kind:?}"));
            copy_dir(&fx.garbage, &overlap);
            ok_in(&overlap, &a.iter().map(String::as_str).collect::<Vec<_>>());
            ok_in(&overlap, &b.iter().map(String::as_str).collect::<Vec<_>>());
            let names: Vec<String> = refs_in(&overlap)
                .iter()
                .map(|l| l.split('\t').next().unwrap().to_string())
                .collect();
            let mut del = vec!["refs", "--delete"];
            del.extend(names.iter().map(String::as_str));
            ok_in(&overlap, &del);
            fx.overlap.insert(kind, overlap);
        }
        fx
    }

    /// The two pulls of a round of `kind`; `flip` swaps the sources.
    fn pulls(&self, kind: Kind, flip: u64) -> (Vec<String>, Vec<String>) {
        let http = format!("http://127.0.0.1:{}", self.server.port);
        let local = self.orepo.display().to_string();
        let (s1, s2) = if flip.is_multiple_of(2) {
            (http, local)
        } else {
            (local, http)
        };
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match kind {
            Kind::OstreeTwo => (
                v(&["ostree", "pull", &s1, "main"]),
                v(&["ostree", "pull", &s2, "next"]),
            ),
            Kind::OstreeSame => (
                v(&["ostree", "pull", &s1, "main", "--name", "a"]),
                v(&["ostree", "pull", &s2, "main", "--name", "b"]),
            ),
            Kind::Oci => {
                let l = self.layout.display();
                (
                    v(&["oci", "pull", &format!("oci:{l}:1"), "--name", "img1"]),
                    v(&["oci", "pull", &format!("oci:{l}:2"), "--name", "img2"]),
                )
            }
        }
    }
}

/// Children killed when dropped (a failed round leaves no process).
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait for every process, at most [`LIMIT`] in all; a hang fails the
/// round, naming what still runs.
fn wait_all(procs: &mut Procs, what: &str) -> Vec<(String, std::process::ExitStatus, String)> {
    let start = Instant::now();
    let mut done: Vec<Option<std::process::ExitStatus>> = vec![None; procs.0.len()];
    while done.iter().any(Option::is_none) {
        for (i, (_, c)) in procs.0.iter_mut().enumerate() {
            if done[i].is_none() {
                done[i] = c.try_wait().unwrap();
            }
        }
        if done.iter().any(Option::is_none) && start.elapsed() > LIMIT {
            let stuck: Vec<&str> = procs
                .0
                .iter()
                .zip(&done)
                .filter(|(_, d)| d.is_none())
                .map(|((n, _), _)| n.as_str())
                .collect();
            panic!("{what}: still running after {LIMIT:?} (deadlock?): {stuck:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    procs
        .0
        .iter_mut()
        .zip(done)
        .map(|((n, c), st)| {
            let mut err = String::new();
            if let Some(mut e) = c.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            (n.clone(), st.unwrap(), err)
        })
        .collect()
}

#[test]
fn two_pulls_and_gc_at_once() {
    let seed = env_number("CONCURRENCY_SEED", None);
    let rounds = env_number("CONCURRENCY_ROUNDS", Some(12)) as usize;
    eprintln!("concurrency: CONCURRENCY_SEED={seed} CONCURRENCY_ROUNDS={rounds}");
    let started = Instant::now();
    let fx = Fixture::new();
    let mut rng = Rng::new(seed);
    let mut gc_first = 0;
    let mut gc_last = 0;
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let kind = KINDS[round % KINDS.len()];
        let overlapping = (round / KINDS.len()) % 2 == 1;
        let what = format!(
            "round {round} ({kind:?}, {}; CONCURRENCY_SEED={seed})",
            if overlapping {
                "content present unreferenced"
            } else {
                "garbage only"
            }
        );
        let repo = fx.dir.path().join("round");
        let _ = std::fs::remove_dir_all(&repo);
        let template = if overlapping {
            &fx.overlap[&kind]
        } else {
            &fx.garbage
        };
        copy_dir(template, &repo);
        let (a, b) = fx.pulls(kind, rng.next());
        let mut todo = vec![("pull A", a), ("pull B", b), ("gc", vec!["gc".to_string()])];
        // A random order (Fisher–Yates) and random gaps of up to 30 ms.
        for i in (1..todo.len()).rev() {
            todo.swap(i, rng.upto(i as u64) as usize);
        }
        match todo.iter().position(|(n, _)| *n == "gc") {
            Some(0) => gc_first += 1,
            Some(2) => gc_last += 1,
            _ => {}
        }
        let order: Vec<&str> = todo.iter().map(|(n, _)| *n).collect();
        let mut procs = Procs(Vec::new());
        let t = Instant::now();
        for (name, args) in &todo {
            let child = command_in(&repo, args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            procs.0.push((format!("{name}: {}", args.join(" ")), child));
            std::thread::sleep(Duration::from_micros(rng.upto(30_000)));
        }
        // (stderr is read after exit: these processes print little.)
        for (name, status, err) in wait_all(&mut procs, &what) {
            assert!(
                status.success(),
                "{what}, order {order:?}: {name} failed ({status}):\n{err}"
            );
        }
        slowest = slowest.max(t.elapsed());
        let out = run_in(&repo, &["fsck"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(": 0 problems"),
            "{what}, order {order:?}: fsck found problems:\n{text}"
        );
        let (want_refs, want_objects) = &fx.expected[&kind];
        assert_eq!(&refs_in(&repo), want_refs, "{what}, order {order:?}: refs");
        for line in want_refs {
            let name = line
                .split('\t')
                .next()
                .unwrap()
                .strip_prefix("streams/refs/")
                .unwrap();
            ok_in(&repo, &["cat", name]);
            ok_in(&repo, &["ls", name]);
        }
        ok_in(&repo, &["gc"]);
        let objects = object_names(&repo);
        if &objects != want_objects {
            let a: BTreeSet<_> = objects.iter().collect();
            let b: BTreeSet<_> = want_objects.iter().collect();
            panic!(
                "{what}, order {order:?}: objects after gc: {} extra, {} missing",
                a.difference(&b).count(),
                b.difference(&a).count()
            );
        }
        let tmp = tmp_leftovers(&repo);
        assert!(tmp.is_empty(), "{what}: temporary files left: {tmp:?}");
    }
    eprintln!(
        "concurrency: {rounds} rounds clean in {:.1} s (gc started first in {gc_first}, last in {gc_last}; slowest round {} ms)",
        started.elapsed().as_secs_f64(),
        slowest.as_millis()
    );
}
