//! Mounted trees stay readable while `gc` runs (live.rs checks, one step
//! after another, that one open file survives its ref's collection; here
//! readers run in a loop *while* collections run, over every file):
//!
//! - a single tree (`composefs mount ostree/main MNT`) whose ref is kept is
//!   read whole, file after file, by two reader threads, while pulls of a
//!   commit sharing most of its files, garbage imports, ref deletions and
//!   `gc`s run again and again: no read may fail or differ;
//! - in the whole-repository view (`composefs mount MNT`), every file of a
//!   commit is held open by readers reading them in a loop, and the
//!   commit's ref is deleted and collected under them: the objects only
//!   that commit had are gone from the repository, and every open file
//!   still reads whole, during the collection and after.
//!
//! Readers drop each file's page cache before reading it
//! (`POSIX_FADV_DONTNEED`), so reads reach the daemon and its objects
//! rather than pages the kernel kept. `CONCURRENCY_ROUNDS` sets the rounds
//! (default 4).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::common::{self, Repo, mixed_tree, mixed_tree_modify, pseudo_random, require_tool};
use super::{Mounted, ostree, poll, require_root, run_with_deadline};

/// More files than the daemon keeps objects open (256): reads reopen objects.
const FILES: usize = 320;

fn rounds() -> usize {
    common::env_number("CONCURRENCY_ROUNDS", Some(4)) as usize
}

/// Regular files below `root` (relative path → content).
fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    common::walk(root, &mut |p| {
        if std::fs::symlink_metadata(p).unwrap().file_type().is_file() {
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(p).unwrap(),
            );
        }
    });
    out
}

/// Drop a file's cached pages, then read it whole from offset 0.
fn read_uncached(f: &std::fs::File) -> std::io::Result<Vec<u8>> {
    rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed)?;
    let len = f.metadata()?.len() as usize;
    let mut buf = vec![0u8; len + 1];
    let mut done = 0;
    loop {
        let n = f.read_at(&mut buf[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
        if done == buf.len() {
            buf.resize(done * 2, 0);
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Reader threads looping until stopped; the passes they completed and
/// the first error any met.
struct Readers {
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Readers {
    fn start(n: usize, pass: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(AtomicU64::new(0));
        let pass = Arc::new(pass);
        let threads = (0..n)
            .map(|_| {
                let (stop, passes, pass) = (stop.clone(), passes.clone(), pass.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        pass()?;
                        passes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        Readers {
            stop,
            passes,
            threads,
        }
    }

    fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Wait until `more` passes were completed after now (reads overlap
    /// what ran meanwhile); fails if a reader stopped on an error.
    fn wait_passes(&self, more: u64, what: &str) {
        let want = self.passes() + more;
        let ok = poll(std::time::Duration::from_secs(120), || {
            self.passes() >= want || self.threads.iter().any(|t| t.is_finished())
        });
        assert!(ok, "{what}: readers made no progress in two minutes");
    }

    fn finish(self, what: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            if let Err(e) = t.join().expect("reader panicked") {
                panic!("{what}: {e}");
            }
        }
        self.passes.load(Ordering::Relaxed)
    }
}

/// An ostree archive repository with `main` (tree) and `next` (a second
/// version sharing most files); returns (repo path, tree, tree2).
fn ostree_pair(s: &Path, seed: u64) -> (String, PathBuf, PathBuf) {
    require_tool("ostree");
    let (tree, tree2) = (s.join("tree"), s.join("tree2"));
    mixed_tree(&tree, seed, FILES);
    mixed_tree(&tree2, seed, FILES);
    mixed_tree_modify(&tree2, seed, FILES, 2, 6);
    let o = s.join("orepo").display().to_string();
    ostree(&["init", "--mode=archive", &format!("--repo={o}")]);
    for (b, t) in [("main", &tree), ("next", &tree2)] {
        ostree(&[
            &format!("--repo={o}"),
            "commit",
            "-b",
            b,
            "-s",
            b,
            &format!("--tree=dir={}", t.display()),
        ]);
    }
    (o, tree, tree2)
}

fn gc(repo: &Repo, what: &str) -> String {
    let out = run_with_deadline(repo.command().arg("gc"));
    assert!(
        out.status.success(),
        "{what}: gc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_mounted_tree_reads_while_gc_collects_around_it() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let (o, tree, _) = ostree_pair(&s, 3);
    let garbage = s.join("garbage");
    for i in 0..500u64 {
        common::write_file(
            &garbage.join(format!("g{i}")),
            &pseudo_random(8_000_000 + i, 200),
        );
    }
    let gtar = s.join("garbage.tar");
    common::tar_members(&garbage, &["."], &gtar);
    repo.ok(&["ostree", "pull", &o, "main"]);
    let mnt = s.join("mnt");
    let m = Mounted::fuse(&repo, "ostree/main", &mnt);
    let want = Arc::new(contents(&tree));
    let root = mnt.clone();
    let readers = Readers::start(2, move || {
        for (rel, data) in want.iter() {
            let p = root.join(rel);
            let got = std::fs::File::open(&p)
                .and_then(|f| read_uncached(&f))
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if &got != data {
                return Err(format!("{}: content differs", p.display()));
            }
        }
        Ok(())
    });
    let mut removed = 0;
    for round in 0..rounds() {
        let what = format!("round {round}");
        // Content sharing most objects with the mounted tree, and garbage,
        // then unreferenced and collected while the readers read.
        repo.ok(&["ostree", "pull", &o, "next"]);
        repo.ok(&["import-tar", "g", gtar.to_str().unwrap()]);
        readers.wait_passes(1, &what);
        repo.ok(&["refs", "--delete", "ostree/next", "g"]);
        let out = gc(&repo, &what);
        removed += out
            .lines()
            .filter(|l| l.starts_with("removed stream"))
            .count();
        readers.wait_passes(1, &what);
    }
    let passes = readers.finish("a read through the mount failed while gc ran");
    assert!(removed >= 2 * rounds(), "gc removed too little: {removed}");
    eprintln!(
        "single-tree mount: {passes} full reads of {FILES} files, {} gc rounds",
        rounds()
    );
    repo.assert_fsck_ok();
    m.umount(&repo);
}

#[test]
fn open_files_keep_reading_while_their_ref_is_collected() {
    require_root();
    let repo = Repo::new();
    let s = repo.scratch();
    let (o, tree, tree2) = ostree_pair(&s, 4);
    repo.ok(&["ostree", "pull", &o, "main"]);
    let mnt = s.join("mnt");
    let m = Mounted::new(&repo, &[], "", &mnt);
    let main_want = contents(&tree);
    let next_want = contents(&tree2);
    // Objects only `next` has: gone after its collection.
    let changed: Vec<String> = next_want
        .iter()
        .filter(|(rel, d)| d.len() > 64 && main_want.get(*rel) != Some(d))
        .map(|(rel, _)| tree2.join(rel).display().to_string())
        .collect();
    assert!(changed.len() > 10, "too few changed files");
    let mut args = vec!["measure"];
    args.extend(changed.iter().map(String::as_str));
    let only_next: Vec<PathBuf> = String::from_utf8(repo.ok(&args))
        .unwrap()
        .lines()
        .map(|l| {
            let hex = l.split_whitespace().next().unwrap();
            repo.path.join("objects").join(&hex[..2]).join(&hex[2..])
        })
        .collect();
    assert_eq!(only_next.len(), changed.len());
    for round in 0..rounds() {
        let what = format!("round {round}");
        repo.ok(&["ostree", "pull", &o, "next", "--name", "cur"]);
        let commit = String::from_utf8(repo.ok(&["ostree", "list"])).unwrap();
        let commit = commit
            .lines()
            .find(|l| l.starts_with("cur "))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string();
        let dir = mnt.join("ostree/cur");
        let open: Arc<Vec<(PathBuf, std::fs::File, Vec<u8>)>> = Arc::new(
            next_want
                .iter()
                .map(|(rel, d)| {
                    let f = std::fs::File::open(dir.join(rel))
                        .unwrap_or_else(|e| panic!("{what}: open {}: {e}", rel.display()));
                    (rel.clone(), f, d.clone())
                })
                .collect(),
        );
        let held = open.clone();
        let main_root = mnt.join("ostree/main");
        let main_files: Vec<(PathBuf, Vec<u8>)> = main_want
            .iter()
            .step_by(7)
            .map(|(r, d)| (r.clone(), d.clone()))
            .collect();
        let readers = Readers::start(2, move || {
            for (rel, f, data) in held.iter() {
                let got = read_uncached(f).map_err(|e| format!("open {}: {e}", rel.display()))?;
                if &got != data {
                    return Err(format!("open {}: content differs", rel.display()));
                }
            }
            // A tree whose ref stays, read by path meanwhile.
            for (rel, data) in &main_files {
                let mut got = Vec::new();
                std::fs::File::open(main_root.join(rel))
                    .and_then(|mut f| f.read_to_end(&mut got))
                    .map_err(|e| format!("ostree/main/{}: {e}", rel.display()))?;
                if &got != data {
                    return Err(format!("ostree/main/{}: content differs", rel.display()));
                }
            }
            Ok(())
        });
        readers.wait_passes(1, &what);
        for obj in &only_next {
            assert!(obj.exists(), "{what}: {} is not stored", obj.display());
        }
        repo.ok(&["refs", "--delete", "ostree/cur"]);
        let out = gc(&repo, &what);
        assert!(
            out.contains(&commit),
            "{what}: gc did not collect the commit:\n{out}"
        );
        // The objects behind the open files are gone from the repository.
        for obj in &only_next {
            assert!(!obj.exists(), "{what}: {} survived gc", obj.display());
        }
        // Read on after the collection, then close.
        readers.wait_passes(2, &what);
        let passes = readers.finish(&format!("{what}: an open file stopped reading"));
        assert!(passes >= 3);
        drop(open);
    }
    repo.assert_fsck_ok();
    m.umount(&repo);
}
