//! Resource bounds for one directory with very many entries (issue 8):
//! each path that holds a whole tree in memory must stay within a
//! documented number of bytes per entry (`docs/resource-bounds.md`,
//! "Directory with 1,000,000 entries"), finish, and not overflow a stack.
//!
//! The tree: `d/` holding N empty regular files `f0000000`… (N = 200,000
//! by default; 1,000,000 with `COMPOSEFS_BOUNDS_FULL=1`; any number with
//! `COMPOSEFS_BOUNDS_N`), as an OCI layer (one uncompressed tar in an OCI
//! layout) and as a local directory. Each operation runs as a child
//! process whose peak resident size (`ru_maxrss` from `wait4`) must stay
//! under `BASE + N × bytes-per-entry`:
//!
//! | operation                                   | bytes per entry |
//! |---------------------------------------------|-----------------|
//! | `oci pull` (the merge that checks the layer) | [`PULL`]        |
//! | `oci create-image`                          | [`OCI_IMAGE`]   |
//! | `create-image DIR` (import and image)        | [`DIR_IMAGE`]   |
//! | FUSE daemon of `oci/NAME`, listing `d/`      | [`FUSE_OCI`]    |
//! | FUSE daemon of the live view, listing it     | [`FUSE_LIVE`]   |
//! | FUSE daemon of a stored image, listing `d/`  | [`FUSE_IMAGE`]  |
//!
//! Needs root and `/dev/fuse` for the FUSE steps, as `fuse-tests/` does.
//! About 512 bytes of disk per entry (the layer), briefly.

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What any run may take besides the entries: the binary's own pages,
/// the allocator's arenas, I/O buffers, FUSE's request buffers.
const BASE: u64 = 48 << 20;
/// Bytes per entry allowed for each operation (at 1,000,000 entries the
/// measured peaks are about 2/3 of these; see the docs).
const PULL: u64 = 120;
const OCI_IMAGE: u64 = 220;
const DIR_IMAGE: u64 = 220;
const FUSE_OCI: u64 = 220;
const FUSE_LIVE: u64 = 260;
const FUSE_IMAGE: u64 = 280;

fn entries() -> usize {
    if std::env::var("COMPOSEFS_BOUNDS_FULL").is_ok_and(|v| v == "1") {
        return 1_000_000;
    }
    common::env_number("COMPOSEFS_BOUNDS_N", Some(200_000)) as usize
}

/// One child process's run.
struct Run {
    secs: f64,
    /// Peak resident size in bytes.
    peak: u64,
    stdout: String,
}

/// Start `cmd` with its output in files under `dir`. The caller reaps
/// it with [`reap`] (`wait4`, for its resource usage).
#[allow(clippy::zombie_processes)]
fn spawn(mut cmd: Command, dir: &Path, what: &str) -> (u32, PathBuf, PathBuf) {
    let out = dir.join(format!("{what}.out"));
    let err = dir.join(format!("{what}.err"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    (child.id(), out, err)
}

/// Reap child `pid`: its exit status and peak resident size in bytes.
fn reap(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: plain system call with valid pointers to locals.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(
        r,
        pid as libc::pid_t,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    (status, ru.ru_maxrss as u64 * 1024)
}

/// Run `cmd` to its end; it must succeed.
fn run(cmd: Command, dir: &Path, what: &str) -> Run {
    let start = Instant::now();
    let (pid, out, err) = spawn(cmd, dir, what);
    let (status, peak) = reap(pid);
    let secs = start.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what} failed (status {status:#x}):\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    Run {
        secs,
        peak,
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
    }
}

/// Report a peak, and whether it is within `per_entry` bytes per entry.
fn within(what: &str, r: &Run, n: usize, per_entry: u64) -> Result<(), String> {
    let bound = BASE + n as u64 * per_entry;
    eprintln!(
        "bounds_wide: {what}: {n} entries, {:.1} s, peak {:.1} MiB ({:.0} B/entry; bound {:.1} MiB)",
        r.secs,
        r.peak as f64 / (1 << 20) as f64,
        r.peak as f64 / n as f64,
        bound as f64 / (1 << 20) as f64,
    );
    if r.peak > bound {
        return Err(format!(
            "{what}: peak resident size {} bytes for {n} entries exceeds {bound} \
             ({BASE} + {per_entry} per entry)",
            r.peak
        ));
    }
    Ok(())
}

/// A ustar header for `name` (type `typ`, mode `mode`, size 0).
fn header(name: &[u8], typ: u8, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(b"00000000000\0");
    h[136..148].copy_from_slice(b"14000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = typ;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn name(i: usize) -> String {
    format!("f{i:07}")
}

/// `d/` with `n` empty files, as a tar; returns its sha256 and size.
fn write_tar(path: &Path, n: usize) -> (String, u64) {
    let mut hash = Sha256::new();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut put = |b: &[u8]| {
        hash.update(b);
        out.write_all(b).unwrap();
    };
    put(&header(b"d/", b'5', 0o755));
    for i in 0..n {
        put(&header(format!("d/{}", name(i)).as_bytes(), b'0', 0o644));
    }
    put(&[0u8; 1024]);
    out.flush().unwrap();
    drop(out);
    let size = std::fs::metadata(path).unwrap().len();
    (hex(&hash.finalize()), size)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A blob in the layout: returns its descriptor.
fn blob(layout: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let d = hex(&Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&d), data).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{d}"), "size": data.len()})
}

/// A one-layer OCI layout (tag `t`) whose layer is the tar at `tar`.
fn write_layout(layout: &Path, tar: &Path, n: usize) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let (digest, size) = write_tar(tar, n);
    std::fs::rename(tar, layout.join("blobs/sha256").join(&digest)).unwrap();
    let layer = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": format!("sha256:{digest}"),
        "size": size,
    });
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    let config = blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({"schemaVersion": 2, "config": config, "layers": [layer]});
    let mut m = blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "t"});
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [m]}).to_string(),
    )
    .unwrap();
}

fn cfs(repo: &Path, args: &[&str]) -> Command {
    common::command_in(
        repo,
        &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
}

/// The scratch space: the repository, the local tree, the mount point.
struct Fixture {
    scratch: PathBuf,
    repo: PathBuf,
    n: usize,
}

/// Every operation in turn (one at a time, so that the timings printed
/// with `--nocapture` mean something on a busy machine), each checked
/// against its bound; all are measured before any failure is reported.
#[test]
fn a_wide_directory_stays_within_the_memory_bounds() {
    let n = entries();
    // Not under /tmp, which may be a small tmpfs: the layer alone is 512
    // bytes per entry.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let scratch = tmp.path().to_path_buf();
    let layout = scratch.join("layout");
    let t = Instant::now();
    write_layout(&layout, &scratch.join("layer.tar"), n);
    let dir = scratch.join("tree");
    std::fs::create_dir_all(dir.join("d")).unwrap();
    for i in 0..n {
        File::create(dir.join("d").join(name(i))).unwrap();
    }
    eprintln!(
        "bounds_wide: {n} entries as a layer and a directory made in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let repo = scratch.join("repo");
    let f = Fixture {
        scratch: scratch.clone(),
        repo: repo.clone(),
        n,
    };
    run(cfs(&repo, &["init"]), &scratch, "init");
    let mut failures = Vec::new();
    let mut check = |what: &str, r: &Run, per_entry: u64| {
        if let Err(e) = within(what, r, n, per_entry) {
            failures.push(e);
        }
    };

    let src = format!("oci:{}:t", layout.display());
    let r = run(
        cfs(&repo, &["oci", "pull", "--name", "w", &src]),
        &scratch,
        "pull",
    );
    check("oci pull", &r, PULL);
    std::fs::remove_dir_all(&layout).unwrap();

    let r = run(
        cfs(&repo, &["oci", "create-image", "w"]),
        &scratch,
        "oci-image",
    );
    assert!(!r.stdout.trim().is_empty(), "no image id printed");
    check("oci create-image", &r, OCI_IMAGE);

    let r = run(
        cfs(
            &repo,
            &["create-image", "--name", "wide", dir.to_str().unwrap()],
        ),
        &scratch,
        "dir-image",
    );
    check("create-image DIR", &r, DIR_IMAGE);
    std::fs::remove_dir_all(&dir).unwrap();

    let (r, listed) = fuse_listing(&f, &["oci/w"], "d");
    assert_eq!(listed, n, "d/ lists {listed} entries");
    check("FUSE daemon, oci/w, ls -f", &r, FUSE_OCI);

    let (r, listed) = fuse_listing(&f, &[], "oci/w/d");
    assert_eq!(listed, n, "oci/w/d lists {listed} entries");
    check("FUSE daemon, live view, ls -f", &r, FUSE_LIVE);

    let (r, listed) = fuse_listing(&f, &["images/wide"], "d");
    assert_eq!(listed, n, "the image's d/ lists {listed} entries");
    check("FUSE daemon, image, ls -f", &r, FUSE_IMAGE);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Unmounts (and, failing that, lazily) when dropped: a failed assertion
/// must not leave a mount or a daemon behind.
struct Mount<'a> {
    path: &'a Path,
    repo: &'a Path,
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        if !is_mountpoint(self.path) {
            return;
        }
        let ok = cfs(self.repo, &["umount", self.path.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.path).status();
        }
    }
}

fn is_mountpoint(p: &Path) -> bool {
    let (Ok(me), Ok(parent)) = (std::fs::metadata(p), std::fs::metadata(p.join(".."))) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Mount (`composefs mount --foreground ARGS MNT`), list `MNT/path` as
/// `ls -f` does (every name, twice: the second time from the kernel's
/// caches), unmount; the daemon's run and the number of names listed.
fn fuse_listing(f: &Fixture, args: &[&str], path: &str) -> (Run, usize) {
    assert!(
        std::fs::metadata("/dev/fuse").is_ok(),
        "/dev/fuse is missing: the FUSE bounds cannot be measured"
    );
    let mnt = f.scratch.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut all = vec!["mount", "--foreground"];
    all.extend_from_slice(args);
    all.push(mnt.to_str().unwrap());
    let start = Instant::now();
    let (pid, _, err) = spawn(cfs(&f.repo, &all), &f.scratch, "daemon");
    let guard = Mount {
        path: &mnt,
        repo: &f.repo,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !is_mountpoint(&mnt) {
        if Instant::now() > deadline {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            reap(pid);
            panic!(
                "the daemon did not mount within 120 s:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = || {
        std::fs::read_dir(mnt.join(path))
            .unwrap_or_else(|e| panic!("cannot list {path}: {e}"))
            .map(|e| e.map(|_| ()))
            .collect::<Result<Vec<()>, _>>()
            .unwrap_or_else(|e| panic!("listing {path}: {e}"))
            .len()
    };
    let t = Instant::now();
    let listed = count();
    eprintln!(
        "bounds_wide: listing {path} through FUSE: {listed} names in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(count(), listed, "a second listing differs");
    // A name looked up in it, and one that is not there.
    let some = mnt.join(path).join(name(f.n / 2));
    assert!(
        std::fs::symlink_metadata(&some).is_ok(),
        "{some:?} is missing"
    );
    assert!(std::fs::symlink_metadata(mnt.join(path).join("nope")).is_err());
    drop(guard);
    let (status, peak) = reap(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the daemon failed (status {status:#x}):\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    let run = Run {
        secs: start.elapsed().as_secs_f64(),
        peak,
        stdout: String::new(),
    };
    (run, listed)
}
