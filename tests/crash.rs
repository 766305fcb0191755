//! Crash consistency, against the real binary and real inputs.
//!
//! **kill -9 harness** ([`kill9_at_random_points_leaves_a_sound_repository`]):
//! six operations — `ostree pull` over HTTP (python's http.server) into an
//! empty repository, `ostree pull` of a second commit from a local path
//! into a repository holding the first, `oci pull` of a three-layer OCI
//! layout made by umoci, `create-image` of a directory, `import-tar`, and
//! `gc` of a repository where refs were deleted — each run once unkilled
//! first (its duration, the refs it leaves, and the objects left after a
//! `gc`: the reference). Then, round after round, an operation starts on a
//! fresh copy of its starting repository and gets SIGKILL after a delay
//! drawn from a seeded PRNG, uniform over its measured duration (the delay
//! picks the kill point; it synchronises nothing). After each kill:
//!
//! - `composefs fsck` exits 0 with 0 problems;
//! - every ref `composefs refs` lists is one the repository had before or
//!   gets from a complete run (a ref is old or new, never half-made), none
//!   is broken, and each opens: streams are `cat` whole, ostree commits
//!   and OCI images are loaded (`ls`), images are `dump`ed; `ostree list`
//!   and `oci images` work;
//! - every file below `streams/refs/` and `images/refs/` is a symlink that
//!   reaches an object file (a `.tmp-` name is a half-made ref: allowed
//!   until the next `gc`, never listed as a ref);
//!
//! then the operation runs again, unkilled, and must succeed and give what
//! an unkilled run gives: the same refs (names, entries and object ids, so
//! the same bytes), `cat` of the imported tar byte-identical to the input,
//! no ostree partial-pull log left; after a `gc`, exactly the objects of
//! the reference (nothing the killed run wrote survives, nothing needed is
//! gone) and no temporary files.
//!
//! The seed is printed; `CRASH_SEED=N` replays a run, `CRASH_ROUNDS=N`
//! sets the number of kills (default 42, spread evenly over the
//! operations; `scripts/crash-loop.sh` runs 200+).
//!
//! **Power-loss ordering** ([`refs_are_published_only_after_syncfs`]):
//! each operation runs under `strace -f -y`, and the log is checked for
//! the rule of `docs/crash-consistency.md`: every ref publication comes
//! after a `syncfs` of the repository's filesystem that started after the
//! last write into the repository. See [`check_ordering`] for exactly what
//! counts.
//!
//! Needs root (the other tests' fixtures), ostree, umoci, python3, strace,
//! GNU tar.

mod common;
#[path = "common/ostree.rs"]
#[allow(unused_imports)]
mod ostree_fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    Rng, copy_dir, env_number, mixed_tree, mixed_tree_modify, object_names, pseudo_random,
    require_tool, tar_members, tmp_leftovers, umoci_image, write_file,
};
use ostree_fixtures::{HttpServer, ostree};

/// No single command may take longer than this (a hang is a failure, not a
/// stuck suite).
const LIMIT: Duration = Duration::from_secs(120);

/// Files in the source tree.
const FILES: usize = 300;

/// `composefs --repo REPO ARGS`.
fn command(repo: &Path, args: &[String]) -> Command {
    common::command_in(repo, args)
}

/// Run `cmd` to completion within [`LIMIT`], its output captured.
fn run_limited(cmd: Command, what: &str) -> Output {
    common::output_within(cmd, LIMIT, what)
}

fn run(repo: &Path, args: &[&str]) -> Output {
    common::run_in(repo, args)
}

fn ok(repo: &Path, args: &[&str]) -> Vec<u8> {
    common::ok_in(repo, args)
}

fn refs(repo: &Path) -> BTreeSet<String> {
    common::refs_in(repo)
}

// ---------------------------------------------------------------------------
// The inputs and the operations
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    OstreeHttp,
    OstreeLocal,
    Oci,
    CreateImage,
    ImportTar,
    Gc,
}

const OPS: [Op; 6] = [
    Op::OstreeHttp,
    Op::OstreeLocal,
    Op::Oci,
    Op::CreateImage,
    Op::ImportTar,
    Op::Gc,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::OstreeHttp => "ostree pull (http)",
            Op::OstreeLocal => "ostree pull (delta)",
            Op::Oci => "oci pull",
            Op::CreateImage => "create-image",
            Op::ImportTar => "import-tar",
            Op::Gc => "gc",
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    tree: PathBuf,
    tar: PathBuf,
    orepo: PathBuf,
    layout: PathBuf,
    server: HttpServer,
    /// Starting repositories (copied for each run): empty, holding ostree
    /// `main`, and full with refs deleted (for gc).
    empty: PathBuf,
    with_main: PathBuf,
    for_gc: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        for t in ["ostree", "umoci", "python3", "tar", "cp"] {
            require_tool(t);
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The tree, a second version sharing most files, a tar of it.
        let tree = d.join("tree");
        let bytes = mixed_tree(&tree, 1, FILES);
        let tree2 = d.join("tree2");
        mixed_tree(&tree2, 1, FILES);
        mixed_tree_modify(&tree2, 1, FILES, 3, 10);
        let tar = d.join("tree.tar");
        tar_members(&tree, &["."], &tar);
        // ostree: `main` and `next`.
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
        // A static delta main → next (the local pull of `next` onto `main`
        // applies it), listed in the summary.
        ostree(&[&o, "static-delta", "generate", "--from=main", "--to=next"]);
        ostree(&[&o, "summary", "-u"]);
        let server = HttpServer::serve(&orepo);
        // OCI: three layers.
        let layout = d.join("layout");
        let mut layers = Vec::new();
        for (i, members) in [&["./d0", "./d1"][..], &["./d2", "./d3"], &["./d4", "./l0"]]
            .iter()
            .enumerate()
        {
            let l = d.join(format!("layer{i}.tar"));
            tar_members(&tree, members, &l);
            layers.push(l);
        }
        umoci_image(
            &layout,
            "1",
            &layers.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        );
        // Garbage for gc: many small objects.
        let garbage = d.join("garbage");
        for i in 0..2000u64 {
            write_file(
                &garbage.join(format!("g{}/{i}", i % 16)),
                &pseudo_random(7_000_000 + i, 100 + (i as usize % 200)),
            );
        }
        let garbage_tar = d.join("garbage.tar");
        tar_members(&garbage, &["."], &garbage_tar);

        let empty = d.join("tpl-empty");
        ok(&empty, &["init"]);
        let with_main = d.join("tpl-main");
        copy_dir(&empty, &with_main);
        ok(
            &with_main,
            &["ostree", "pull", orepo.to_str().unwrap(), "main"],
        );
        let for_gc = d.join("tpl-gc");
        copy_dir(&empty, &for_gc);
        let http = format!("http://127.0.0.1:{}", server.port);
        let layout_ref = format!("oci:{}:1", layout.display());
        for args in [
            &["ostree", "pull", &http, "main"][..],
            &["ostree", "pull", orepo.to_str().unwrap(), "next"],
            &["oci", "pull", &layout_ref, "--name", "img"],
            &["create-image", tree.to_str().unwrap(), "--name", "img"],
            &["import-tar", "t", tar.to_str().unwrap()],
            &["import-tar", "garbage", garbage_tar.to_str().unwrap()],
        ] {
            ok(&for_gc, args);
        }
        ok(
            &for_gc,
            &["refs", "--delete", "ostree/next", "oci/img", "garbage"],
        );
        eprintln!(
            "crash fixture: {FILES} files, {:.1} MiB; {} objects in the gc repository",
            bytes as f64 / 1048576.0,
            object_names(&for_gc).len()
        );
        Fixture {
            dir,
            tree,
            tar,
            orepo,
            layout,
            server,
            empty,
            with_main,
            for_gc,
        }
    }

    fn args(&self, op: Op) -> Vec<String> {
        let v: Vec<String> = match op {
            Op::OstreeHttp => vec![
                "ostree".into(),
                "pull".into(),
                format!("http://127.0.0.1:{}", self.server.port),
                "main".into(),
            ],
            Op::OstreeLocal => vec![
                "ostree".into(),
                "pull".into(),
                self.orepo.display().to_string(),
                "next".into(),
            ],
            Op::Oci => vec![
                "oci".into(),
                "pull".into(),
                format!("oci:{}:1", self.layout.display()),
                "--name".into(),
                "img".into(),
            ],
            Op::CreateImage => vec![
                "create-image".into(),
                self.tree.display().to_string(),
                "--name".into(),
                "img".into(),
            ],
            Op::ImportTar => vec![
                "import-tar".into(),
                "t".into(),
                self.tar.display().to_string(),
            ],
            Op::Gc => vec!["gc".into()],
        };
        v
    }

    fn template(&self, op: Op) -> &Path {
        match op {
            Op::OstreeLocal => &self.with_main,
            Op::Gc => &self.for_gc,
            _ => &self.empty,
        }
    }

    /// A fresh copy of `op`'s starting repository.
    fn start(&self, op: Op, tag: &str) -> PathBuf {
        let p = self.dir.path().join(format!("run-{tag}"));
        let _ = std::fs::remove_dir_all(&p);
        copy_dir(self.template(op), &p);
        p
    }
}

/// What an unkilled run gives.
struct Reference {
    duration: Duration,
    /// Refs before and after.
    before: BTreeSet<String>,
    after: BTreeSet<String>,
    /// Objects after the operation and a `gc`.
    objects: Vec<String>,
}

fn reference(fx: &Fixture, op: Op) -> Reference {
    // Timed three times (the median is the duration); the last run is
    // the reference.
    let mut times = Vec::new();
    loop {
        let repo = fx.start(op, "reference");
        let before = refs(&repo);
        let args = fx.args(op);
        let t = Instant::now();
        let out = run_limited(command(&repo, &args), op.name());
        times.push(t.elapsed());
        assert!(
            out.status.success(),
            "{} failed: {}",
            op.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        if op == Op::OstreeLocal {
            let line = String::from_utf8_lossy(&out.stdout);
            assert!(line.contains("delta: from"), "no static delta used: {line}");
        }
        if times.len() < 3 {
            continue;
        }
        let after = refs(&repo);
        if op != Op::Gc {
            assert_ne!(before, after, "{} published no ref", op.name());
        }
        ok(&repo, &["gc"]);
        let objects = object_names(&repo);
        std::fs::remove_dir_all(&repo).unwrap();
        times.sort();
        return Reference {
            duration: times[1],
            before,
            after,
            objects,
        };
    }
}

// ---------------------------------------------------------------------------
// The checks after a kill
// ---------------------------------------------------------------------------

/// The repository is sound: fsck is clean, every ref is an old or a new
/// one and opens, every file among the refs is a ref or a half-made one.
fn check_sound(repo: &Path, allowed: &BTreeSet<String>, what: &str) {
    let out = run(repo, &["fsck"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(": 0 problems"),
        "{what}: fsck found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = refs(repo);
    for line in &listed {
        assert!(!line.contains("(broken)"), "{what}: broken ref: {line}");
        assert!(
            allowed.contains(line),
            "{what}: ref {line:?} is neither one the repository had nor one a complete run makes ({allowed:?})"
        );
        let path = line.split('\t').next().unwrap();
        if let Some(name) = path.strip_prefix("streams/refs/") {
            ok(repo, &["cat", name]);
            if name.starts_with("ostree/") || name.starts_with("oci/") {
                ok(repo, &["ls", name]);
            }
        } else if let Some(name) = path.strip_prefix("images/refs/") {
            ok(repo, &["dump", name]);
        } else {
            panic!("{what}: unexpected refs line {line:?}");
        }
    }
    ok(repo, &["ostree", "list"]);
    ok(repo, &["oci", "images"]);
    // Independently of the tool: every file among the refs is a symlink
    // reaching an object file, or a half-made ref (`.tmp-`), not listed.
    let mut files = 0;
    for kind in ["streams", "images"] {
        let root = repo.join(kind).join("refs");
        common::walk(&root, &mut |p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            if m.is_dir() {
                return;
            }
            assert!(
                m.file_type().is_symlink(),
                "{what}: {} is not a symlink",
                p.display()
            );
            let name = p.file_name().unwrap().to_string_lossy();
            if name.starts_with(".tmp-") {
                return;
            }
            files += 1;
            let entry = p.parent().unwrap().join(std::fs::read_link(p).unwrap());
            let object =
                entry
                    .parent()
                    .unwrap()
                    .join(std::fs::read_link(&entry).unwrap_or_else(|e| {
                        panic!("{what}: {} → {}: {e}", p.display(), entry.display())
                    }));
            assert!(
                std::fs::metadata(&object).is_ok_and(|m| m.is_file()),
                "{what}: {} reaches no object ({})",
                p.display(),
                object.display()
            );
        });
    }
    assert_eq!(files, listed.len(), "{what}: refs on disk vs `refs`");
}

/// After the rerun: the refs of an unkilled run, the tar byte for byte,
/// no partial-pull log; after a gc, the reference's objects and no
/// temporary files.
fn check_result(fx: &Fixture, op: Op, repo: &Path, r: &Reference, what: &str) {
    assert_eq!(refs(repo), r.after, "{what}: refs after the rerun");
    if op == Op::ImportTar {
        let cat = ok(repo, &["cat", "t"]);
        assert!(
            cat == std::fs::read(&fx.tar).unwrap(),
            "{what}: `cat t` differs from the imported tar"
        );
    }
    let partial = repo.join("ostree/partial");
    let left: Vec<_> = std::fs::read_dir(&partial)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what}: partial-pull logs left: {left:?}");
    ok(repo, &["gc"]);
    let objects = object_names(repo);
    if objects != r.objects {
        let a: BTreeSet<_> = objects.iter().collect();
        let b: BTreeSet<_> = r.objects.iter().collect();
        panic!(
            "{what}: objects after rerun + gc differ from an unkilled run + gc: {} extra, {} missing",
            a.difference(&b).count(),
            b.difference(&a).count()
        );
    }
    let tmp = tmp_leftovers(repo);
    assert!(
        tmp.is_empty(),
        "{what}: temporary files survive gc: {tmp:?}"
    );
}

#[derive(Default)]
struct Tally {
    kills: usize,
    finished: usize,
    delays_us: Vec<u64>,
}

#[test]
fn kill9_at_random_points_leaves_a_sound_repository() {
    let seed = env_number("CRASH_SEED", None);
    let total = env_number("CRASH_ROUNDS", Some(42)) as usize;
    eprintln!("crash harness: CRASH_SEED={seed} CRASH_ROUNDS={total}");
    let started = Instant::now();
    let fx = Fixture::new();
    let refs_by_op: BTreeMap<Op, Reference> =
        OPS.iter().map(|&op| (op, reference(&fx, op))).collect();
    for (op, r) in &refs_by_op {
        eprintln!(
            "  {:<20} unkilled: {:>4} ms, {} objects after gc",
            op.name(),
            r.duration.as_millis(),
            r.objects.len()
        );
    }
    let per_op = total.div_ceil(OPS.len());
    let mut rng = Rng::new(seed);
    let mut tally: BTreeMap<Op, Tally> = BTreeMap::new();
    let mut round = 0usize;
    // Round robin until every operation was killed `per_op` times (a run
    // that finishes before its kill counts as a round, not a kill).
    loop {
        let todo: Vec<Op> = OPS
            .iter()
            .copied()
            .filter(|op| tally.get(op).map_or(0, |t| t.kills) < per_op)
            .collect();
        if todo.is_empty() {
            break;
        }
        for op in todo {
            round += 1;
            let t = tally.entry(op).or_default();
            assert!(
                t.kills + t.finished < per_op * 4 + 8,
                "{}: too many runs finished before their kill ({} of {})",
                op.name(),
                t.finished,
                t.kills + t.finished
            );
            let r = &refs_by_op[&op];
            let delay = rng.upto(r.duration.as_micros() as u64);
            let what = format!(
                "round {round} ({}, killed after {delay} µs; CRASH_SEED={seed})",
                op.name()
            );
            let repo = fx.start(op, "round");
            let mut child = command(&repo, &fx.args(op))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_micros(delay));
            let _ = child.kill();
            let status = child.wait().unwrap();
            if status.signal() == Some(libc::SIGKILL) {
                t.kills += 1;
                t.delays_us.push(delay);
            } else {
                assert!(status.success(), "{what}: failed before its kill: {status}");
                t.finished += 1;
            }
            let allowed: BTreeSet<String> = r.before.union(&r.after).cloned().collect();
            check_sound(&repo, &allowed, &what);
            let args = fx.args(op);
            let out = run_limited(command(&repo, &args), &what);
            assert!(
                out.status.success(),
                "{what}: the rerun failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            check_result(&fx, op, &repo, r, &what);
            std::fs::remove_dir_all(&repo).unwrap();
        }
    }
    let kills: usize = tally.values().map(|t| t.kills).sum();
    eprintln!(
        "crash harness: {kills} kills in {round} rounds, {:.1} s (CRASH_SEED={seed})",
        started.elapsed().as_secs_f64()
    );
    for (op, t) in &tally {
        let (lo, hi) = (
            t.delays_us.iter().min().copied().unwrap_or(0),
            t.delays_us.iter().max().copied().unwrap_or(0),
        );
        eprintln!(
            "  {:<20} {:>4} kills (at {lo}–{hi} µs), {:>3} finished before the kill: 0 fsck problems, 0 broken refs",
            op.name(),
            t.kills,
            t.finished
        );
    }
    assert!(kills >= total, "only {kills} kills of {total}");
}

/// What a kill leaves in windows too narrow to hit by timing: a ref or an
/// entry between its `symlinkat` and its `renameat` (`.tmp-NAME.PID`,
/// see `fsutil::replace_symlink`), a named temporary object (filesystems
/// without `O_TMPFILE`), the ostree index's temporary copy. None is a ref
/// or an entry, fsck is clean with them, and `gc` removes them all.
#[test]
fn gc_removes_what_a_kill_leaves_half_made() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    ok(&repo, &["init"]);
    let tar = common::tar_of(dir.path(), "t", &[("a", pseudo_random(1, 5000))]);
    let out = String::from_utf8(ok(&repo, &["import-tar", "t", tar.to_str().unwrap()])).unwrap();
    let entry = out.split_whitespace().nth(1).unwrap().to_string();
    let before = refs(&repo);
    let planted = [
        (
            repo.join("streams/refs/x/.tmp-y.4242"),
            Some(format!("../../{entry}")),
        ),
        (
            repo.join("streams/refs/.tmp-t.4242"),
            Some(format!("../{entry}")),
        ),
        (
            repo.join(format!("streams/.tmp-{entry}.4242")),
            Some("../objects/00/11".into()),
        ),
        (
            repo.join("images/refs/.tmp-img.4242"),
            Some("../00ff".into()),
        ),
        (repo.join("objects/.tmp-4242-0"), None),
        (repo.join("ostree/.tmpAbC123"), None),
    ];
    for (p, target) in &planted {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        match target {
            Some(t) => std::os::unix::fs::symlink(t, p).unwrap(),
            None => std::fs::write(p, b"half").unwrap(),
        }
    }
    check_sound(&repo, &before, "with half-made files");
    assert_eq!(refs(&repo), before);
    ok(&repo, &["gc"]);
    let left = tmp_leftovers(&repo);
    assert!(left.is_empty(), "gc left {left:?}");
    assert_eq!(refs(&repo), before);
    assert_eq!(ok(&repo, &["cat", "t"]), std::fs::read(&tar).unwrap());
}

// ---------------------------------------------------------------------------
// Power-loss ordering, from strace
// ---------------------------------------------------------------------------

/// One system call from an `strace -f -y` log: when it started and ended
/// (line numbers: strace prints an entry, or an unfinished entry and its
/// resumption, in the order they happen), its name, arguments and result.
#[derive(Debug, Clone)]
struct Call {
    start: usize,
    end: usize,
    name: String,
    args: Vec<String>,
    ret: i64,
    text: String,
}

/// Split `a, "b, c", [x, y], d` at top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut depth) = (false, false, 0i32);
    for c in s.chars() {
        if quoted {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Parse a log written with `strace -f -y -qq -s 0 -o LOG`.
fn parse_strace(log: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: BTreeMap<u32, (usize, String)> = BTreeMap::new();
    for (n, line) in log.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let (start, text) = if let Some(r) = rest.strip_prefix("<... ") {
            // `<... NAME resumed>REST`
            let Some((_, tail)) = r.split_once(" resumed>") else {
                continue;
            };
            let Some((start, head)) = pending.remove(&pid) else {
                continue;
            };
            (start, format!("{head}{tail}"))
        } else if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, (n, head.to_string()));
            continue;
        } else if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        } else {
            (n, rest.to_string())
        };
        let Some(open) = text.find('(') else { continue };
        let name = text[..open].to_string();
        let Some(eq) = text.rfind(") = ") else {
            // exit_group and friends: no result.
            continue;
        };
        let ret = text[eq + 4..]
            .split_whitespace()
            .next()
            .and_then(|v| v.split('<').next())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1);
        calls.push(Call {
            start,
            end: n,
            args: split_args(&text[open + 1..eq]),
            name,
            ret,
            text,
        });
    }
    calls.sort_by_key(|c| c.start);
    calls
}

/// The path of an fd argument as `strace -y` shows it (`3</a/b>`,
/// `AT_FDCWD</a>`, `5</a/#12>(deleted)`).
fn fd_path(arg: &str) -> Option<String> {
    let open = arg.find('<')?;
    let close = arg.rfind('>')?;
    let head = &arg[..open];
    (head == "AT_FDCWD" || head.chars().all(|c| c.is_ascii_digit()))
        .then(|| arg[open + 1..close].to_string())
}

/// A string argument, unquoted (`"a\"b"` → `a"b`).
fn str_arg(arg: &str) -> Option<String> {
    let s = arg.strip_prefix('"')?;
    let s = s.strip_suffix("\"...").or_else(|| s.strip_suffix('"'))?;
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `dirfd` + `path` (an absolute path stands alone; relative paths of the
/// calls without a dirfd are relative to `/`, where the tests run).
fn join(dir: Option<String>, path: Option<String>) -> Option<String> {
    let p = path?;
    if p.starts_with('/') {
        return Some(p);
    }
    Some(format!(
        "{}/{p}",
        dir.unwrap_or_default().trim_end_matches('/')
    ))
}

/// What a call does to the filesystem, for the ordering check.
enum Effect {
    /// syncfs of the repository's filesystem, or sync().
    Sync,
    /// Creates or modifies `path` (a name, or the file behind an fd).
    Writes(String),
    Other,
}

fn effect(c: &Call, repo: &str) -> Effect {
    let a = |i: usize| c.args.get(i).map(String::as_str).unwrap_or("");
    if c.ret < 0 {
        return Effect::Other;
    }
    let path = match c.name.as_str() {
        "sync" => return Effect::Sync,
        "syncfs" => {
            return match fd_path(a(0)) {
                Some(p) if under(&p, repo) => Effect::Sync,
                _ => Effect::Other,
            };
        }
        "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "ftruncate" | "fallocate"
        | "sendfile" => fd_path(a(0)),
        "copy_file_range" | "splice" => fd_path(a(2)),
        "renameat" | "renameat2" | "linkat" => join(fd_path(a(2)), str_arg(a(3))),
        "rename" | "link" | "symlink" => join(None, str_arg(a(1))),
        "symlinkat" => join(fd_path(a(1)), str_arg(a(2))),
        "mkdirat" | "unlinkat" => join(fd_path(a(0)), str_arg(a(1))),
        "mkdir" | "unlink" => join(None, str_arg(a(0))),
        _ => None,
    };
    match path {
        Some(p) => Effect::Writes(p),
        None => Effect::Other,
    }
}

fn under(p: &str, dir: &str) -> bool {
    p == dir || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Is `p` inside the ref directories?
fn in_refs(p: &str, repo: &str) -> bool {
    under(p, &format!("{repo}/streams/refs")) || under(p, &format!("{repo}/images/refs"))
}

/// What [`check_ordering`] found.
#[derive(Debug, Default)]
struct Ordering {
    publications: usize,
    syncs: usize,
    writes: usize,
    violations: Vec<String>,
}

/// The power-loss rule, checked on a log.
///
/// Refs are written by `Repository::set_ref` (src/repository/refs.rs,
/// through `fsutil::replace_symlink`): `symlinkat` to
/// `streams/refs/…/.tmp-NAME.PID`, then `renameat` over the ref's name.
/// The rename is the publication: before it the ref is old or absent,
/// after it new. So a **publication** is a successful rename (or link or
/// symlink) whose destination is below `streams/refs/` or `images/refs/`
/// and does not start with `.tmp-`.
///
/// What a ref needs is its entry (`streams/<content-id>` or
/// `images/<hex>`), the object that names, and every object and stream
/// that reaches. We do not try to tell which writes those were: every
/// **write into the repository** counts — `write`/`pwrite64`/`writev`/
/// `copy_file_range`/… on a descriptor whose file is below the repository
/// (named or unnamed `O_TMPFILE` objects show as `objects/XX/#INO`), and
/// every `linkat`/`symlinkat`/`renameat`/`mkdirat`/`unlinkat` of a name
/// below it — except the ones inside the ref directories, which make the
/// ref itself (its temporary symlink, its parent directories) and need no
/// sync before the rename: a journalled rename reaching the disk brings
/// the symlink it moves with it.
///
/// The rule: for each publication P, take the last **sync** that ended
/// before P started — a successful `syncfs` on a descriptor in the
/// repository, or `sync` — and require that every repository write that
/// started before P had ended before that sync started. (A write still
/// running while the sync starts may miss it.) With `-f`, calls of every
/// thread are in the log, including the background flusher's `syncfs`;
/// those count too when they fall in the right place.
fn check_ordering(log: &str, repo: &str) -> Ordering {
    let calls = parse_strace(log);
    let mut o = Ordering::default();
    let effects: Vec<Effect> = calls.iter().map(|c| effect(c, repo)).collect();
    for (i, p) in calls.iter().enumerate() {
        let Effect::Writes(dest) = &effects[i] else {
            continue;
        };
        let is_publication = matches!(
            p.name.as_str(),
            "renameat" | "renameat2" | "rename" | "linkat" | "link" | "symlinkat" | "symlink"
        ) && in_refs(dest, repo)
            && !dest.rsplit('/').next().unwrap_or("").starts_with(".tmp-");
        if !is_publication {
            continue;
        }
        o.publications += 1;
        let sync = calls
            .iter()
            .zip(&effects)
            .filter(|(c, e)| matches!(e, Effect::Sync) && c.end < p.start)
            .map(|(c, _)| c)
            .max_by_key(|c| c.start);
        let Some(sync) = sync else {
            o.violations.push(format!(
                "ref {dest} published (line {}) with no syncfs before it",
                p.start + 1
            ));
            continue;
        };
        let late: Vec<&Call> = calls
            .iter()
            .zip(&effects)
            .filter(|(c, e)| {
                c.start < p.start
                    && c.end >= sync.start
                    && matches!(e, Effect::Writes(w) if under(w, repo) && !in_refs(w, repo))
            })
            .map(|(c, _)| c)
            .collect();
        if let Some(w) = late.first() {
            o.violations.push(format!(
                "ref {dest} published (line {}) after the syncfs of line {}, but {} write(s) into the repository had not ended before that syncfs started, e.g. line {}: {}",
                p.start + 1,
                sync.start + 1,
                late.len(),
                w.end + 1,
                w.text
            ));
        }
    }
    for e in &effects {
        match e {
            Effect::Sync => o.syncs += 1,
            Effect::Writes(w) if under(w, repo) && !in_refs(w, repo) => o.writes += 1,
            _ => {}
        }
    }
    o
}

/// Run `args` on `repo` under strace; the log.
fn strace_run(repo: &Path, args: &[String], log: &Path, what: &str) -> String {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-qq", "-s", "0", "-o"])
        .arg(log)
        .args([
            "-e",
            "trace=syncfs,sync,fsync,fdatasync,write,pwrite64,writev,pwritev,pwritev2,\
             copy_file_range,sendfile,splice,ftruncate,fallocate,rename,renameat,renameat2,\
             link,linkat,symlink,symlinkat,mkdir,mkdirat,unlink,unlinkat",
        ])
        .arg(common::bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .current_dir("/")
        .env_remove("COMPOSEFS_REPO")
        .stdin(Stdio::null());
    let out = run_limited(cmd, what);
    assert!(
        out.status.success(),
        "{what} under strace failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn refs_are_published_only_after_syncfs() {
    require_tool("strace");
    let fx = Fixture::new();
    let logs = fx.dir.path().join("strace");
    std::fs::create_dir_all(&logs).unwrap();
    // Each operation from its starting repository, then the ostree and
    // OCI pulls again (their "already stored" path only names the stream).
    let mut cases: Vec<(Op, &str)> = OPS.iter().map(|&op| (op, "")).collect();
    cases.push((Op::OstreeHttp, "again"));
    cases.push((Op::Oci, "again"));
    let mut repos: BTreeMap<Op, PathBuf> = BTreeMap::new();
    for (i, (op, again)) in cases.into_iter().enumerate() {
        let repo = repos
            .entry(op)
            .or_insert_with(|| fx.start(op, &format!("strace{i}")))
            .clone();
        let canon = std::fs::canonicalize(&repo).unwrap();
        let canon = canon.to_str().unwrap();
        let what = format!("{} {again}", op.name());
        let log = strace_run(&repo, &fx.args(op), &logs.join(format!("{i}.log")), &what);
        let o = check_ordering(&log, canon);
        eprintln!(
            "  {what:<26} {} publications, {} syncs, {} writes into the repository",
            o.publications, o.syncs, o.writes
        );
        assert!(
            o.violations.is_empty(),
            "{what}: a ref is published before a syncfs of what it needs:\n{}",
            o.violations.join("\n")
        );
        if op == Op::Gc {
            assert_eq!(o.publications, 0, "gc published a ref");
            continue;
        }
        assert_eq!(o.publications, 1, "{what}: expected one ref publication");
        if !again.is_empty() {
            continue;
        }
        assert!(o.writes > 0, "{what}: no writes seen: is the log parsed?");
        // The check has teeth: the same log without its syncfs calls fails.
        let unsynced: String = log
            .lines()
            .filter(|l| !l.contains("syncfs("))
            .map(|l| format!("{l}\n"))
            .collect();
        let bad = check_ordering(&unsynced, canon);
        assert_eq!(
            bad.violations.len(),
            1,
            "{what}: the log without syncfs should break the rule once: {bad:?}"
        );
    }
}
