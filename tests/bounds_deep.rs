//! Resource bounds (issue 8): a path 10,000 directories deep through every
//! operation, a huge mostly-zero file, and a stream of very many chunks.
//! What each costs is documented in docs/resource-bounds.md; the bounds
//! asserted here are the ones documented there.
//!
//! Every command runs as a child whose peak RSS is read with `wait4`
//! (rusage `ru_maxrss`) and checked against a bound. The sizes here are
//! what CI affords (2 cores); `COMPOSEFS_BOUNDS_FULL=1` runs the full sizes
//! of the issue (a 10 GiB file, 2,000,000 files: minutes, and about 10 GB
//! of disk for the many-files repository). Run with `--nocapture` to see
//! the time and peak RSS of every step.
//!
//! Needs root, EROFS, overlayfs and `/dev/fuse` for the mounts, and GNU
//! tar, umoci, ostree, fsverity and util-linux `script` (as the other
//! suites do): the tests fail with a clear message otherwise.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use common::{Repo, require_tool};

/// Depth of the deep tree: 10,000 directories named `d` (a 20,000-byte path).
const DEPTH: usize = 10_000;
const MIB: u64 = 1 << 20;

/// `COMPOSEFS_BOUNDS_FULL=1`: the sizes of the issue.
fn full() -> bool {
    std::env::var("COMPOSEFS_BOUNDS_FULL").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------
// Running a command and measuring it
// ---------------------------------------------------------------------------

/// What a measured run gave.
struct Measured {
    what: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    /// Peak resident set size of the child, KiB.
    rss_kib: u64,
    secs: f64,
}

impl Measured {
    fn ok(self) -> Measured {
        assert!(
            self.status.success(),
            "{} failed ({}):\n{}",
            self.what,
            self.status,
            self.stderr
        );
        self
    }

    fn failed(self) -> Measured {
        assert!(
            !self.status.success(),
            "{} unexpectedly succeeded",
            self.what
        );
        assert!(
            self.status.code() == Some(1) && !self.stderr.contains("panicked"),
            "{} crashed ({}):\n{}",
            self.what,
            self.status,
            self.stderr
        );
        self
    }

    /// Peak RSS at most `mib` MiB.
    fn rss_below(self, mib: u64) -> Measured {
        assert!(
            self.rss_kib * 1024 <= mib * MIB,
            "{}: peak RSS {:.1} MiB, over the bound of {mib} MiB",
            self.what,
            self.rss_kib as f64 / 1024.0
        );
        self
    }
}

type Feed = Box<dyn FnOnce(ChildStdin) + Send>;
type Sink = Box<dyn FnOnce(ChildStdout) + Send>;

/// GNU time (Debian package `time`, installed by scripts/deps.sh).
const TIME: &str = "/usr/bin/time";

/// Run `composefs --repo REPO ARGS…` to completion: `feed` writes its
/// standard input (else it is empty), `sink` consumes its standard output
/// (else it is captured). The peak RSS is what GNU time reports for it:
/// `wait4` of our own child would not do, as `ru_maxrss` keeps the high
/// water mark of the (large, multi-threaded) test process it was forked
/// from. A run longer than the deadline is killed and fails the test.
fn measure(
    what: &str,
    repo: &Repo,
    args: &[&OsStr],
    feed: Option<Feed>,
    sink: Option<Sink>,
) -> Measured {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    assert!(
        Path::new(TIME).is_file(),
        "{TIME} (GNU time, Debian package `time`) is missing: scripts/deps.sh installs it"
    );
    let rss_file = repo
        .scratch()
        .join(format!("rss-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    let mut cmd = Command::new(TIME);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(common::bin())
        .arg("--repo")
        .arg(&repo.path)
        .args(args)
        .current_dir("/")
        .env_remove("COMPOSEFS_REPO")
        .env_remove("RUST_BACKTRACE")
        .process_group(0)
        .stdin(if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id() as i32;
    let feeder = feed.map(|f| {
        let stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || f(stdin))
    });
    let stdout = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || match sink {
        Some(s) => {
            s(stdout);
            Vec::new()
        }
        None => {
            let mut v = Vec::new();
            let mut stdout = stdout;
            stdout.read_to_end(&mut v).unwrap();
            v
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    // A watchdog: a hang must not hang the suite.
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let limit = Duration::from_secs(if full() { 3600 } else { 300 });
    {
        let (done, killed) = (done.clone(), killed.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !done.load(Ordering::SeqCst) {
                killed.store(true, Ordering::SeqCst);
                // SAFETY: kill(2) of the process group our own child leads
                // (not reaped yet: `done` is set only after the wait).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        });
    }
    let status = child.wait().unwrap();
    done.store(true, Ordering::SeqCst);
    let secs = start.elapsed().as_secs_f64();
    assert!(
        !killed.load(Ordering::SeqCst),
        "{what} did not finish within {limit:?}"
    );
    if let Some(f) = feeder {
        f.join().expect("the input writer panicked");
    }
    let stdout = out_thread.join().expect("the output check failed");
    let stderr = String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned();
    // GNU time writes "Command exited with non-zero status N" (or
    // "Command terminated by signal N") before the figure.
    let report = std::fs::read_to_string(&rss_file).unwrap_or_default();
    let _ = std::fs::remove_file(&rss_file);
    assert!(
        !report.contains("terminated by signal"),
        "{what} was killed: {report}\n{stderr}"
    );
    let rss_kib: u64 = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: no peak RSS from GNU time: {report:?}"));
    eprintln!(
        "BOUNDS {what}: {secs:.2} s, peak RSS {:.1} MiB",
        rss_kib as f64 / 1024.0
    );
    Measured {
        what: what.to_string(),
        status,
        stdout,
        stderr,
        rss_kib,
        secs,
    }
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// A sink that requires standard output to equal what `expected` reads.
fn equals(what: &'static str, mut expected: impl Read + Send + 'static) -> Sink {
    Box::new(move |mut got: ChildStdout| {
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            let n = read_full(&mut got, &mut a);
            let m = read_full(&mut expected, &mut b[..n.max(1)]);
            if n == 0 {
                assert_eq!(m, 0, "{what}: output ends early, at byte {at}");
                return;
            }
            assert_eq!(n, m, "{what}: output is longer than expected, at byte {at}");
            if a[..n] != b[..n] {
                let i = (0..n).find(|&i| a[i] != b[i]).unwrap();
                panic!("{what}: output differs at byte {}", at + i as u64);
            }
            at += n as u64;
        }
    })
}

/// Read until `buf` is full or the end; the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    done
}

/// A sink that writes standard output to `path`.
fn to_file(path: &Path) -> Sink {
    let mut f = File::create(path).unwrap();
    Box::new(move |mut out: ChildStdout| {
        std::io::copy(&mut out, &mut f).unwrap();
    })
}

/// A feed that copies `r` to standard input (stops quietly if the child
/// stops reading).
fn feed_from(mut r: impl Read + Send + 'static) -> Feed {
    Box::new(move |mut stdin: ChildStdin| {
        let _ = std::io::copy(&mut r, &mut stdin);
    })
}

/// An error message about a deep path must stay short: the path shortened.
fn assert_short_message(text: &str, what: &str) {
    assert!(
        text.len() < 2000,
        "{what}: a {}-byte error message (a whole deep path?):\n{}…",
        text.len(),
        &text[..text.len().min(600)]
    );
}

// ---------------------------------------------------------------------------
// The deep tree
// ---------------------------------------------------------------------------

/// Content of `deepest.txt` at the bottom (over 64 bytes: an object).
fn deepest_content() -> Vec<u8> {
    let mut v = b"the bottom of a deep tree\n".to_vec();
    v.extend_from_slice(&[b'x'; 100]);
    v.push(b'\n');
    v
}

/// `depth` nested directories `d` under `root`, with `deepest.txt` and
/// `small` (inline) at the bottom. Made descriptor-relative: the whole
/// path is far beyond PATH_MAX.
fn make_deep(root: &Path, depth: usize, content: &[u8]) {
    std::fs::create_dir_all(root).unwrap();
    let mut fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(
            &fd,
            "d",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
    }
    for (name, data) in [("deepest.txt", content), ("small", &b"small\n"[..])] {
        let f = rustix::fs::openat(
            &fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        File::from(f).write_all(data).unwrap();
    }
}

/// The bottom directory of [`make_deep`] open, from `root`.
fn open_bottom(root: &Path, depth: usize) -> rustix::fd::OwnedFd {
    let mut fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..depth {
        fd = rustix::fs::openat(
            &fd,
            "d",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
    }
    fd
}

/// `/d/d/…/d` (`depth` times).
fn deep_path(depth: usize) -> String {
    "/d".repeat(depth)
}

/// Walk a mounted deep tree from `mnt` one name at a time, as the kernel
/// does: exactly `depth` directories, then read `deepest.txt`.
fn walk_mounted(mnt: &Path, depth: usize) -> Vec<u8> {
    let fd = open_bottom(mnt, depth);
    assert!(
        rustix::fs::statat(&fd, "d", rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_err(),
        "the mounted tree is deeper than {depth}"
    );
    let f = rustix::fs::openat(&fd, "deepest.txt", OFlags::RDONLY, Mode::empty()).unwrap();
    let mut v = Vec::new();
    File::from(f).read_to_end(&mut v).unwrap();
    v
}

/// Lines of a dumpfile, and its deepest path's line.
fn check_deep_dump(dump: &Path, depth: usize) {
    let text = std::fs::read(dump).unwrap();
    let lines: Vec<&[u8]> = text
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // The root, `depth` directories, two files.
    assert_eq!(lines.len(), depth + 3, "lines in the dump");
    let want = format!("{}/deepest.txt ", deep_path(depth));
    assert!(
        lines.iter().any(|l| l.starts_with(want.as_bytes())),
        "the dump has no line for the deepest file"
    );
}

#[test]
fn deep_directory_images_dump_ls_cat_fsck_diff_gc() {
    let repo = Repo::new();
    let s = repo.scratch();
    let dir = s.join("deep");
    make_deep(&dir, DEPTH, &deepest_content());
    let bottom = deep_path(DEPTH);

    // create-image: descriptor-relative walk, no PATH_MAX.
    measure(
        "create-image, 10k deep",
        &repo,
        &[os("create-image"), os("--name"), os("deep"), os(&dir)],
        None,
        None,
    )
    .ok()
    .rss_below(48);

    // mkcomposefs of the directory, its dump, and the dump back.
    let img = s.join("deep.img");
    measure(
        "mkcomposefs DIR, 10k deep",
        &repo,
        &[os("mkcomposefs"), os(&dir), os(&img)],
        None,
        None,
    )
    .ok()
    .rss_below(48);
    let dump = s.join("deep.dump");
    measure(
        "dump, 10k deep",
        &repo,
        &[os("dump"), os(&img)],
        None,
        Some(to_file(&dump)),
    )
    .ok()
    .rss_below(32);
    check_deep_dump(&dump, DEPTH);
    let img2 = s.join("deep2.img");
    // The dumpfile is read line by line: memory for the tree, not for the
    // 100 MB of text (it took 213 MB when read whole).
    measure(
        "mkcomposefs --from-file, 10k deep",
        &repo,
        &[os("mkcomposefs"), os("--from-file"), os(&dump), os(&img2)],
        None,
        None,
    )
    .ok()
    .rss_below(48);
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&img2).unwrap(),
        "mkcomposefs --from-file of the dump differs from mkcomposefs of the directory"
    );
    std::fs::remove_file(&dump).unwrap();

    // The stored image: dump, ls, cat, fsck.
    let stored_dump = s.join("stored.dump");
    measure(
        "dump stored image, 10k deep",
        &repo,
        &[os("dump"), os("deep")],
        None,
        Some(to_file(&stored_dump)),
    )
    .ok()
    .rss_below(32);
    check_deep_dump(&stored_dump, DEPTH);
    std::fs::remove_file(&stored_dump).unwrap();
    let ls = measure(
        "ls at the bottom, 10k deep",
        &repo,
        &[os("ls"), os("deep"), os(&bottom)],
        None,
        None,
    )
    .ok()
    .rss_below(32);
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.contains("deepest.txt") && listing.contains("small"),
        "{listing}"
    );
    let cat = measure(
        "cat REF:PATH, 10k deep",
        &repo,
        &[os("cat"), os(&format!("deep:{bottom}/deepest.txt"))],
        None,
        None,
    )
    .ok()
    .rss_below(32);
    assert_eq!(cat.stdout, deepest_content());
    measure("fsck, 10k deep", &repo, &[os("fsck")], None, None)
        .ok()
        .rss_below(32);

    // diff of two deep images: one changed file at the bottom.
    let dir_b = s.join("deep-b");
    let mut changed = deepest_content();
    changed[30] = b'y';
    make_deep(&dir_b, DEPTH, &changed);
    repo.ok(&["create-image", "--name", "deep-b", dir_b.to_str().unwrap()]);
    let diff = measure(
        "diff of two images, 10k deep",
        &repo,
        &[os("diff"), os("images/deep"), os("images/deep-b")],
        None,
        None,
    )
    .rss_below(48);
    assert_eq!(diff.status.code(), Some(1), "{}", diff.stderr);
    assert_eq!(
        String::from_utf8_lossy(&diff.stdout),
        format!("M\t{bottom}/deepest.txt\n")
    );

    // An image against a deep directory, and two directories: the local
    // file at the bottom is read (same size, other bytes), its path past
    // PATH_MAX.
    for (what, a) in [
        (
            "diff of an image and a directory, 10k deep",
            os("images/deep"),
        ),
        ("diff of two directories, 10k deep", os(&dir)),
    ] {
        let d = measure(what, &repo, &[os("diff"), a, os(&dir_b)], None, None).rss_below(64);
        assert_eq!(d.status.code(), Some(1), "{what}: {}", d.stderr);
        assert_eq!(
            String::from_utf8_lossy(&d.stdout),
            format!("M\t{bottom}/deepest.txt\n"),
            "{what}"
        );
    }

    // gc: dropping one image frees its own object only.
    repo.ok(&["refs", "--delete", "deep-b"]);
    let gc = measure("gc, 10k deep", &repo, &[os("gc")], None, None)
        .ok()
        .rss_below(32);
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("removed 2 objects"),
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
    repo.assert_fsck_ok();

    // An error at the bottom names the path shortened, not in 20 KB.
    let bottom_fd = open_bottom(&dir_b, DEPTH);
    rustix::fs::mknodat(
        &bottom_fd,
        "sock",
        rustix::fs::FileType::Socket,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let out = measure(
        "create-image refusing a socket, 10k deep",
        &repo,
        &[os("create-image"), os(&dir_b)],
        None,
        None,
    )
    .failed();
    assert_short_message(&out.stderr, "create-image of a deep socket");
    assert!(
        out.stderr.contains("/d/sock") && out.stderr.contains("components"),
        "{}",
        out.stderr
    );
}

/// A sink that only counts lines.
fn count_lines(into: Arc<AtomicU64>) -> Sink {
    Box::new(move |mut out: ChildStdout| {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = read_full(&mut out, &mut buf);
            if n == 0 {
                return;
            }
            let lines = buf[..n].iter().filter(|&&c| c == b'\n').count();
            into.fetch_add(lines as u64, Ordering::Relaxed);
        }
    })
}

/// Deep and a little wide: three files beside every directory. A walk
/// that keeps a path per pending entry holds O(depth²) bytes here (the
/// dumpfile writer did: about 75 MB at 5,000 levels, 300 MB at 10,000).
#[test]
fn deep_and_wide_tree_dump_stays_small() {
    const D: usize = 5000;
    let repo = Repo::new();
    let s = repo.scratch();
    let dir = s.join("wide");
    std::fs::create_dir_all(&dir).unwrap();
    let mut fd = rustix::fs::open(
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..D {
        for name in ["e1", "e2", "e3"] {
            let f = rustix::fs::openat(
                &fd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
            File::from(f).write_all(b"x").unwrap();
        }
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(
            &fd,
            "d",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
    }
    let img = s.join("wide.img");
    measure(
        "mkcomposefs DIR, 5000 deep, 3 files per level",
        &repo,
        &[os("mkcomposefs"), os(&dir), os(&img)],
        None,
        None,
    )
    .ok()
    .rss_below(48);
    let lines = Arc::new(AtomicU64::new(0));
    measure(
        "dump, 5000 deep, 3 files per level",
        &repo,
        &[os("dump"), os(&img)],
        None,
        Some(count_lines(lines.clone())),
    )
    .ok()
    .rss_below(32);
    assert_eq!(lines.load(Ordering::Relaxed), 1 + 4 * D as u64);
}

/// Undo a mount when dropped (also when an assertion failed).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if common::is_mountpoint(&self.0) {
            let ok = Command::new(common::bin())
                .arg("umount")
                .arg(&self.0)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }
}

fn require_root_and_mounts() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the mount tests need root"
    );
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for want in ["erofs", "overlay", "fuse"] {
        assert!(
            fs.lines().any(|l| l.trim_end().ends_with(want)),
            "the kernel has no {want} (see /proc/filesystems)"
        );
    }
}

/// `composefs mount --foreground REF MNT` serving in a child we can
/// measure; the walk runs while it serves. Returns the daemon's
/// measurement and what the walk read.
fn fuse_walk(repo: &Repo, what: &str, name: &str, mnt: &Path, depth: usize) -> (Measured, Vec<u8>) {
    std::fs::create_dir_all(mnt).unwrap();
    let _guard = Unmount(mnt.to_path_buf());
    let mnt_owned = mnt.to_path_buf();
    let repo_path = repo.path.clone();
    // The walk runs on a thread while `measure` waits for the daemon.
    let (tx, rx) = std::sync::mpsc::channel();
    let walker = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while !common::is_mountpoint(&mnt_owned) {
            assert!(Instant::now() < end, "the FUSE mount never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = std::panic::catch_unwind(|| walk_mounted(&mnt_owned, depth));
        let _ = Command::new(common::bin())
            .arg("--repo")
            .arg(&repo_path)
            .arg("umount")
            .arg(&mnt_owned)
            .output();
        tx.send(got).unwrap();
    });
    let m = measure(
        what,
        repo,
        &[os("mount"), os("--foreground"), os(name), os(mnt)],
        None,
        None,
    );
    walker.join().expect("the FUSE walk thread failed");
    let got = rx
        .recv()
        .unwrap()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    (m, got)
}

#[test]
fn deep_image_kernel_and_fuse_mounts() {
    require_root_and_mounts();
    let repo = Repo::new();
    let s = repo.scratch();
    let dir = s.join("deep");
    make_deep(&dir, DEPTH, &deepest_content());
    repo.ok(&["create-image", "--name", "deep", dir.to_str().unwrap()]);

    // The kernel walks one name at a time: no PATH_MAX.
    let mnt = s.join("mnt");
    let m = common::Mounted::new(&repo, "deep", &mnt);
    let t = Instant::now();
    assert_eq!(walk_mounted(&mnt, DEPTH), deepest_content());
    eprintln!(
        "BOUNDS kernel mount, walk to the bottom: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    m.umount(&repo);

    // FUSE: lookups one name at a time; the daemon's memory stays small.
    let (daemon, got) = fuse_walk(
        &repo,
        "FUSE daemon, walk to the bottom",
        "deep",
        &mnt,
        DEPTH,
    );
    assert_eq!(got, deepest_content());
    daemon.ok().rss_below(64);
}

#[test]
fn deep_tar_import_and_oci_layer() {
    require_tool("tar");
    require_tool("umoci");
    let repo = Repo::new();
    let s = repo.scratch();
    let dir = s.join("deep");
    make_deep(&dir, DEPTH, &deepest_content());
    let bottom = deep_path(DEPTH);

    for format in ["gnu", "pax"] {
        // GNU tar writes the deep names as GNU long-name or PAX records.
        let tar = s.join(format!("deep-{format}.tar"));
        common::make_tar(&dir, &tar, &[&format!("--format={format}")]);
        let name = format!("deep-{format}");
        measure(
            &format!("import-tar ({format}), 10k deep"),
            &repo,
            &[os("import-tar"), os(&name), os(&tar)],
            None,
            None,
        )
        .ok()
        .rss_below(48);
        measure(
            &format!("cat the tar ({format}), 10k deep"),
            &repo,
            &[os("cat"), os(&name)],
            None,
            Some(equals("cat of the deep tar", File::open(&tar).unwrap())),
        )
        .ok()
        .rss_below(32);
        if format == "gnu" {
            std::fs::remove_file(&tar).unwrap();
        }
    }

    // The PAX tar as an OCI layer: pull (merge), image, ls.
    let layout = s.join("layout");
    common::umoci_image(&layout, "t", &[&s.join("deep-pax.tar")]);
    let image = format!("oci:{}:t", layout.display());
    measure(
        "oci pull (one 10k-deep layer)",
        &repo,
        &[os("oci"), os("pull"), os("--name"), os("deep"), os(&image)],
        None,
        None,
    )
    .ok()
    .rss_below(64);
    measure(
        "oci create-image, 10k deep",
        &repo,
        &[
            os("oci"),
            os("create-image"),
            os("--image-name"),
            os("deep-oci"),
            os("deep"),
        ],
        None,
        None,
    )
    .ok()
    .rss_below(64);
    let ls = measure(
        "ls oci image at the bottom, 10k deep",
        &repo,
        &[os("ls"), os("oci/deep"), os(&bottom)],
        None,
        None,
    )
    .ok()
    .rss_below(64);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("deepest.txt"));
    let cat = repo.ok(&["cat", &format!("deep-oci:{bottom}/deepest.txt")]);
    assert_eq!(cat, deepest_content());
    repo.assert_fsck_ok();
}

#[test]
fn deep_ostree_commits() {
    require_tool("ostree");
    let repo = Repo::new();
    let s = repo.scratch();
    let ostree_repo = s.join("ostree");
    common::run_tool(
        "ostree",
        &[
            os("init"),
            os("--mode=archive"),
            os(&format!("--repo={}", ostree_repo.display())),
        ],
        Path::new("/"),
    );
    let commit = |depth: usize| {
        let dir = s.join(format!("deep{depth}"));
        make_deep(&dir, depth, &deepest_content());
        common::run_tool(
            "ostree",
            &[
                os("commit"),
                os(&format!("--repo={}", ostree_repo.display())),
                os(&format!("--branch=d{depth}")),
                os(&format!("--tree=dir={}", dir.display())),
            ],
            Path::new("/"),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    };

    // 2,000 levels: within composefs's ostree bound (2,048), through pull,
    // image, ls and cat.
    commit(2000);
    measure(
        "ostree pull, 2000 deep",
        &repo,
        &[os("ostree"), os("pull"), os(&ostree_repo), os("d2000")],
        None,
        None,
    )
    .ok()
    .rss_below(64);
    measure(
        "ostree create-image, 2000 deep",
        &repo,
        &[
            os("ostree"),
            os("create-image"),
            os("--image-name"),
            os("d2000"),
            os("d2000"),
        ],
        None,
        None,
    )
    .ok()
    .rss_below(64);
    let bottom = deep_path(2000);
    let ls = repo.ok(&["ls", "ostree/d2000", &bottom]);
    assert!(String::from_utf8_lossy(&ls).contains("deepest.txt"));
    let cat = repo.ok(&["cat", &format!("ostree/d2000:{bottom}/deepest.txt")]);
    assert_eq!(cat, deepest_content());
    let cat = repo.ok(&["cat", &format!("images/d2000:{bottom}/deepest.txt")]);
    assert_eq!(cat, deepest_content());

    // 10,000 levels: `ostree commit` takes it (its `checkout` overflows
    // its stack beyond ~8,500 levels); composefs refuses the pull with a
    // short, clear error and stores no ref.
    commit(DEPTH);
    let out = measure(
        "ostree pull refused, 10k deep",
        &repo,
        &[os("ostree"), os("pull"), os(&ostree_repo), os("d10000")],
        None,
        None,
    )
    .failed()
    .rss_below(64);
    assert_short_message(&out.stderr, "ostree pull of a 10k-deep commit");
    assert!(out.stderr.contains("deeper than 2048"), "{}", out.stderr);
    assert!(!String::from_utf8_lossy(&repo.ok(&["refs"])).contains("d10000"));
}

// ---------------------------------------------------------------------------
// A huge mostly-zero file
// ---------------------------------------------------------------------------

/// Size of the huge file: 1 GiB in CI, 10 GiB in full runs.
fn huge_size() -> u64 {
    if full() { 10 << 30 } else { 1 << 30 }
}

/// The huge file's content, as a reader: zeros, except 1 MiB of
/// pseudo-random data at 7 MiB into every 1 GiB (and into the first 64
/// MiB of a smaller file) and the last 4 bytes `tail`.
struct HugeContent {
    size: u64,
    pos: u64,
}

/// Where the data chunks of a [`HugeContent`] of `size` bytes are.
fn data_chunks(size: u64) -> Vec<u64> {
    let step = if size >= 1 << 30 { 1 << 30 } else { 64 * MIB };
    (0..size / step)
        .map(|i| i * step + 7 * MIB)
        .filter(|&at| at + MIB <= size - 4)
        .collect()
}

fn chunk_data(at: u64) -> Vec<u8> {
    common::pseudo_random(at, MIB as usize)
}

impl Read for HugeContent {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.size - self.pos;
        let n = (buf.len() as u64).min(left).min(MIB - self.pos % MIB) as usize;
        if n == 0 {
            return Ok(0);
        }
        let mib_start = self.pos / MIB * MIB;
        let off = (self.pos - mib_start) as usize;
        if data_chunks(self.size).contains(&mib_start) {
            buf[..n].copy_from_slice(&chunk_data(mib_start)[off..off + n]);
        } else {
            buf[..n].fill(0);
        }
        // The last 4 bytes.
        let tail = self.size - 4;
        if self.pos + n as u64 > tail {
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let p = self.pos + i as u64;
                if p >= tail {
                    *b = b"tail"[(p - tail) as usize];
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Copy `r` into a new file at `path`, leaving holes for zero blocks.
fn write_sparse(path: &Path, mut r: impl Read) {
    let f = File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0u64;
    loop {
        let n = read_full(&mut r, &mut buf);
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            f.write_all_at(&buf[..n], at).unwrap();
        }
        at += n as u64;
    }
    f.set_len(at).unwrap();
}

/// Write the huge file sparsely (only its data chunks are allocated).
fn make_huge(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for at in data_chunks(size) {
        f.write_all_at(&chunk_data(at), at).unwrap();
    }
    f.write_all_at(b"tail", size - 4).unwrap();
}

/// A 512-byte GNU tar header (base-256 size when it needs more than 11
/// octal digits).
fn tar_header(name: &str, size: u64, typeflag: u8, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, mode as u64);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    if size < 1 << 33 {
        octal(&mut h, 124, 12, size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h, 136, 12, 1_600_000_000);
    h[156] = typeflag;
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// A tar stream: `big` (the [`HugeContent`]) and a small file.
fn huge_tar(size: u64) -> impl Read + Send {
    let head = tar_header("big", size, b'0', 0o644).to_vec();
    let pad = vec![0u8; ((512 - size % 512) % 512) as usize];
    let mut small = tar_header("small", 5, b'0', 0o644).to_vec();
    small.extend_from_slice(b"hello");
    small.resize(1024, 0);
    small.extend_from_slice(&[0u8; 1024]);
    std::io::Cursor::new(head)
        .chain(HugeContent { size, pos: 0 })
        .chain(std::io::Cursor::new(pad))
        .chain(std::io::Cursor::new(small))
}

/// Bytes allocated on disk for a file.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The repository path of the object named `hex`.
fn object_file(repo: &Repo, hex: &str) -> PathBuf {
    repo.path.join("objects").join(&hex[..2]).join(&hex[2..])
}

#[test]
fn huge_mostly_zero_file() {
    require_tool("fsverity");
    require_tool("tar");
    let size = huge_size();
    let repo = Repo::new();
    let s = repo.scratch();
    let dir = s.join("huge");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    make_huge(&big, size);
    // Check the generator against the file it wrote.
    let data = data_chunks(size).len() as u64 * MIB;
    assert!(
        allocated(&big) <= data + 4 * MIB,
        "the test file is not sparse"
    );

    // measure: holes are fed as zeros without being read.
    let mut digest = String::new();
    for alg in ["sha256", "sha512"] {
        let m = measure(
            &format!("measure --hash {alg}, {} GiB", size >> 30),
            &repo,
            &[os("measure"), os("--hash"), os(alg), os(&big)],
            None,
            None,
        )
        .ok()
        .rss_below(16);
        let ours = String::from_utf8_lossy(&m.stdout);
        let theirs = common::fsverity_digest(alg, &big);
        assert_eq!(ours.split_whitespace().next().unwrap(), theirs, "{alg}");
        digest = theirs;
    }

    // create-image: the object is stored with holes.
    let m = measure(
        &format!("create-image, one {} GiB file", size >> 30),
        &repo,
        &[os("create-image"), os("--name"), os("huge"), os(&dir)],
        None,
        None,
    )
    .ok()
    .rss_below(32);
    let obj = object_file(&repo, &digest);
    assert_eq!(std::fs::metadata(&obj).unwrap().len(), size);
    assert!(
        allocated(&obj) <= data + 8 * MIB,
        "the object takes {} bytes on disk for {data} bytes of data",
        allocated(&obj)
    );
    eprintln!(
        "BOUNDS object of the {} GiB file: {} KiB on disk ({:.2} s to store)",
        size >> 30,
        allocated(&obj) / 1024,
        m.secs
    );
    measure(
        &format!("cat REF:/big, {} GiB", size >> 30),
        &repo,
        &[os("cat"), os("huge:/big")],
        None,
        Some(equals("cat huge:/big", HugeContent { size, pos: 0 })),
    )
    .ok()
    .rss_below(32);
    measure(
        &format!("fsck, {} GiB object", size >> 30),
        &repo,
        &[os("fsck")],
        None,
        None,
    )
    .ok()
    .rss_below(32);

    // A file that is dense on disk but mostly zeros is stored with holes
    // too (zero blocks are not written).
    let dense_dir = s.join("dense");
    std::fs::create_dir_all(&dense_dir).unwrap();
    let dense = dense_dir.join("zeros");
    let dense_size = 64 * MIB;
    std::io::copy(
        &mut HugeContent {
            size: dense_size,
            pos: 0,
        },
        &mut File::create(&dense).unwrap(),
    )
    .unwrap();
    assert!(allocated(&dense) >= dense_size);
    repo.ok(&[
        "create-image",
        "--name",
        "dense",
        dense_dir.to_str().unwrap(),
    ]);
    let obj = object_file(&repo, &common::fsverity_digest("sha512", &dense));
    assert!(
        allocated(&obj) <= 2 * MIB,
        "a dense zero file's object takes {} bytes on disk",
        allocated(&obj)
    );

    // import-tar of a tar stream holding it: bounded memory, holes on disk,
    // byte-identical back. (A repository of its own: in the first one the
    // object exists already.)
    let repo = Repo::new();
    let m = measure(
        &format!("import-tar, one {} GiB file", size >> 30),
        &repo,
        &[os("import-tar"), os("hugetar"), os("-")],
        Some(feed_from(huge_tar(size))),
        None,
    )
    .ok()
    .rss_below(48);
    let _ = m;
    let obj = object_file(&repo, &digest);
    assert!(
        allocated(&obj) <= data + 8 * MIB,
        "after import-tar the object takes {} bytes on disk",
        allocated(&obj)
    );
    measure(
        &format!("cat the tar, {} GiB", size >> 30),
        &repo,
        &[os("cat"), os("hugetar")],
        None,
        Some(equals("cat hugetar", huge_tar(size))),
    )
    .ok()
    .rss_below(32);
    repo.assert_fsck_ok();

    // A GNU sparse tar is refused with a clear error, whatever the format.
    for format in [
        "gnu",
        "posix --sparse-version=0.0",
        "posix --sparse-version=1.0",
    ] {
        let tar = s.join("sparse.tar");
        let mut args: Vec<&str> = vec!["--sparse"];
        let fmt = format!("--format={format}");
        args.extend(fmt.split(' '));
        // A smaller sparse file keeps this quick.
        let sdir = s.join("sparse-src");
        std::fs::create_dir_all(&sdir).unwrap();
        make_huge(&sdir.join("big"), 256 * MIB);
        common::make_tar(&sdir, &tar, &args);
        let err = repo.fail(&["import-tar", "sparse", tar.to_str().unwrap()]);
        assert!(
            err.contains("sparse") && err.contains("without --sparse"),
            "{format}: {err}"
        );
        assert_short_message(&err, "a sparse tar");
        std::fs::remove_file(&tar).unwrap();
    }
}

/// On a terminal, `import-tar` and `create-image` keep drawing their
/// progress while they work (under `script`, which gives them a pty).
#[test]
fn progress_keeps_going_on_a_terminal() {
    require_tool("script");
    let repo = Repo::new();
    let s = repo.scratch();
    let tar = s.join("big.tar");
    write_sparse(&tar, huge_tar(1 << 30));
    let log = s.join("pty.log");
    let cmd = format!(
        "{} --repo {} import-tar big {}",
        common::bin(),
        repo.path.display(),
        tar.display()
    );
    let st = Command::new("script")
        .args(["-qfec", &cmd])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read(&log).unwrap();
    // Each redraw starts with a carriage return; the byte count grows.
    let frames: Vec<String> = text
        .split(|&c| c == b'\r' || c == b'\n')
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .filter(|f| f.contains("importing") && f.contains("iB"))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = frames.iter().collect();
    assert!(
        distinct.len() >= 3,
        "progress was drawn {} times: {frames:?}",
        distinct.len()
    );
}

// ---------------------------------------------------------------------------
// A stream with very many chunks
// ---------------------------------------------------------------------------

/// Files in the many-chunks tar: 50,000 in CI, 2,000,000 in full runs.
fn many_count() -> u64 {
    if full() { 2_000_000 } else { 50_000 }
}

/// A tar of `n` distinct 100-byte files (each an object), 1,000 per
/// directory, generated member by member.
struct ManyTar {
    n: u64,
    next: u64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

fn many_tar(n: u64) -> ManyTar {
    ManyTar {
        n,
        next: 0,
        buf: Vec::new(),
        pos: 0,
        done: false,
    }
}

impl Read for ManyTar {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            if self.next == self.n {
                self.buf.resize(10240, 0);
                self.done = true;
                break;
            }
            let i = self.next;
            if i.is_multiple_of(1000) {
                let d = format!("d{:05}/", i / 1000);
                self.buf.extend_from_slice(&tar_header(&d, 0, b'5', 0o755));
            }
            let name = format!("d{:05}/f{i:09}", i / 1000);
            self.buf
                .extend_from_slice(&tar_header(&name, 100, b'0', 0o644));
            let mut data = format!("file {i:09} ").repeat(7).into_bytes();
            data.truncate(100);
            data.resize(512, 0);
            self.buf.extend_from_slice(&data);
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn stream_with_many_chunks() {
    let n = many_count();
    let repo = Repo::new();
    let per = |base: u64, bytes_per: u64| base + (bytes_per * n).div_ceil(MIB);
    measure(
        &format!("import-tar, {n} objects"),
        &repo,
        &[os("import-tar"), os("many"), os("-")],
        Some(feed_from(many_tar(n))),
        None,
    )
    .ok()
    .rss_below(per(48, 64));
    measure(
        &format!("cat, {n} objects"),
        &repo,
        &[os("cat"), os("many")],
        None,
        Some(equals("cat of the many-files tar", many_tar(n))),
    )
    .ok()
    .rss_below(per(32, 192));
    let fsck = measure(
        &format!("fsck, {n} objects"),
        &repo,
        &[os("fsck")],
        None,
        None,
    )
    .ok()
    .rss_below(per(32, 320));
    assert!(
        String::from_utf8_lossy(&fsck.stdout).contains(&format!("checked {} objects", n + 1)),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let gc = measure(
        &format!("gc keeping {n} objects"),
        &repo,
        &[os("gc")],
        None,
        None,
    )
    .ok()
    .rss_below(per(32, 320));
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains(&format!("kept {}", n + 1)),
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
    repo.ok(&["refs", "--delete", "many"]);
    let gc = measure(
        &format!("gc removing {n} objects"),
        &repo,
        &[os("gc")],
        None,
        None,
    )
    .ok()
    .rss_below(per(32, 320));
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains(&format!("removed {} objects", n + 1)),
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
}
