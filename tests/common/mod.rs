//! Helpers shared by the CLI integration tests: running the built binary,
//! scratch repositories, external tools, and looking at the repository on disk.
#![allow(dead_code)]

pub mod cfsctl;
pub mod containerd;
pub mod ctools;
pub mod faults;
pub mod nginx;
pub mod podman;
pub mod registry;
pub mod snapshot;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `composefs` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_composefs")
}

/// Panics with a clear message unless `tool` is on `$PATH` (CI installs them all).
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "required tool `{tool}` is not installed (the tests need GNU tar, gzip, zstd, fsverity, attr, coreutils, util-linux)"
    );
}

/// Asserts that a process did not panic (no Rust panic message, not killed by SIGABRT).
pub fn assert_no_panic(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "{what} panicked:\n{stderr}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.signal().is_none(),
        "{what} was killed by signal {:?}; stderr:\n{stderr}",
        out.status.signal()
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "{what} exited with 101 (panic); stderr:\n{stderr}"
    );
}

/// Run `composefs ARGS` (with `stdin` as standard input, or none) and return its output.
/// Never lets a panic go unnoticed.
pub fn composefs(args: &[&OsStr], stdin: Option<&[u8]>, env: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("COMPOSEFS_REPO")
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("cannot start composefs");
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            // The process may stop reading early on bad input: ignore EPIPE.
            let _ = pipe.write_all(&data);
        })
    });
    let out = child.wait_with_output().expect("cannot wait for composefs");
    if let Some(w) = writer {
        w.join().unwrap();
    }
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    assert_no_panic(&format!("composefs {shown}"), &out);
    out
}

/// A scratch repository in its own temporary directory.
pub struct Repo {
    pub tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl Repo {
    /// `composefs init` with the default algorithm.
    pub fn new() -> Repo {
        Repo::with_args(&[])
    }

    pub fn with_args(init_args: &[&str]) -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        let r = Repo { tmp, path };
        let mut args = vec!["init"];
        args.extend_from_slice(init_args);
        r.ok(&args);
        r
    }

    /// A directory next to the repository for test files.
    pub fn scratch(&self) -> PathBuf {
        let p = self.tmp.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Run `composefs --repo REPO ARGS`.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), self.path.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        composefs(&all, stdin, &[])
    }

    /// A `composefs --repo REPO` command to customise (stdio, environment).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("--repo")
            .arg(&self.path)
            .env_remove("COMPOSEFS_REPO")
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "composefs {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Run and require failure; returns stderr (as text).
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            !out.status.success(),
            "composefs {args:?} unexpectedly succeeded; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `import-tar NAME FILE`; returns (stream object hex, content id).
    pub fn import(&self, name: &str, file: &Path) -> (String, String) {
        let out = self.run(&["import-tar", name, file.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "import-tar {name} {} failed:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_import(&out.stdout)
    }

    /// `cat NAME`, required to succeed.
    pub fn cat(&self, name: &str) -> Vec<u8> {
        self.ok(&["cat", name])
    }

    /// Every object as (hex name, path), sorted.
    pub fn objects(&self) -> Vec<(String, PathBuf)> {
        list_objects(&self.path)
    }

    pub fn object_count(&self) -> usize {
        count_files(&self.path.join("objects"))
    }

    /// Names under `streams/` other than `refs`.
    pub fn stream_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path.join("streams"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "refs")
            .collect();
        v.sort();
        v
    }

    /// Every file or symlink below `streams/refs`, as paths relative to it.
    pub fn ref_names(&self) -> Vec<String> {
        let root = self.path.join("streams/refs");
        let mut out = Vec::new();
        walk(&root, &mut |p| {
            if !p.is_dir() || p.is_symlink() {
                out.push(
                    p.strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        });
        out.sort();
        out
    }

    /// The object `streams/<entry>` points to.
    pub fn stream_object_path(&self, entry: &str) -> PathBuf {
        let link = self.path.join("streams").join(entry);
        let target = std::fs::read_link(&link).unwrap();
        self.path.join("streams").join(target)
    }

    /// `fsck`: (success, stdout).
    pub fn fsck(&self) -> (bool, String) {
        let out = self.run(&["fsck"], None);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn assert_fsck_ok(&self) {
        let (ok, text) = self.fsck();
        assert!(
            ok,
            "fsck failed on a repository that should be good:\n{text}"
        );
        assert!(
            text.contains(": 0 problems"),
            "fsck summary unexpected:\n{text}"
        );
    }
}

/// Parse `<hex>  <content-id>` printed by `import-tar`.
pub fn parse_import(stdout: &[u8]) -> (String, String) {
    let text = String::from_utf8(stdout.to_vec()).expect("import-tar output is UTF-8");
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("import-tar printed nothing"));
    let (hex, cid) = line
        .split_once("  ")
        .unwrap_or_else(|| panic!("bad import-tar line {line:?}"));
    assert!(
        hex.chars().all(|c| c.is_ascii_hexdigit()),
        "bad object id {hex:?}"
    );
    (hex.to_string(), cid.to_string())
}

/// Recursively visit every entry below `dir` (not following symlinks).
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        f(&p);
        if p.is_dir() && !p.is_symlink() {
            walk(&p, f);
        }
    }
}

/// Number of non-directories below `dir`.
pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    walk(dir, &mut |p| {
        if std::fs::symlink_metadata(p)
            .map(|m| !m.is_dir())
            .unwrap_or(false)
        {
            n += 1;
        }
    });
    n
}

/// Every object under `repo/objects` as (hex, path), sorted by hex.
pub fn list_objects(repo: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let objects = repo.join("objects");
    walk(&objects, &mut |p| {
        let m = std::fs::symlink_metadata(p).unwrap();
        if m.is_dir() {
            return;
        }
        let rel = p.strip_prefix(&objects).unwrap();
        let hex: String = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        out.push((hex, p.to_path_buf()));
    });
    out.sort();
    out
}

/// Run a shell command (bash -c) in `dir`, require success, return stdout.
pub fn sh(dir: &Path, script: &str) -> Vec<u8> {
    require_tool("bash");
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("cannot run bash");
    assert!(
        out.status.success(),
        "shell command failed ({}): {script}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run a program with arguments, require success, return stdout.
pub fn run_tool(prog: &str, args: &[&OsStr], dir: &Path) -> Vec<u8> {
    require_tool(prog);
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// sha256 of a file as `sha256sum` prints it.
pub fn sha256sum(file: &Path) -> String {
    let out = run_tool("sha256sum", &[file.as_os_str()], Path::new("/"));
    String::from_utf8(out)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `fsverity digest --hash-alg=ALG FILE` as plain hex.
pub fn fsverity_digest(alg: &str, file: &Path) -> String {
    let arg = format!("--hash-alg={alg}");
    let out = run_tool(
        "fsverity",
        &[OsStr::new("digest"), OsStr::new(&arg), file.as_os_str()],
        Path::new("/"),
    );
    let text = String::from_utf8(out).unwrap();
    let first = text.split_whitespace().next().unwrap();
    first
        .strip_prefix(&format!("{alg}:"))
        .unwrap_or_else(|| panic!("unexpected fsverity output {text:?}"))
        .to_string()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Is `p` a fifo?
pub fn is_fifo(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false)
}

/// Assert that the text mentions at least one of `words` (case-insensitive).
pub fn assert_mentions(text: &str, words: &[&str], what: &str) {
    let lower = text.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(&w.to_lowercase())),
        "{what}: expected a message mentioning one of {words:?}, got:\n{text}"
    );
}

/// Write a file, creating its parent directories.
pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// `tar -c` the contents of `tree` into `out` (sorted by name) with extra
/// options; returns the archive.
pub fn make_tar(tree: &Path, out: &Path, opts: &[&str]) -> Vec<u8> {
    require_tool("tar");
    let mut args: Vec<&OsStr> = vec![OsStr::new("--sort=name")];
    args.extend(opts.iter().map(OsStr::new));
    args.extend([
        OsStr::new("-C"),
        tree.as_os_str(),
        OsStr::new("-cf"),
        out.as_os_str(),
        OsStr::new("."),
    ]);
    run_tool("tar", &args, Path::new("/"));
    std::fs::read(out).unwrap()
}

/// A reproducible GNU tar of `files` (name, content) written to `dir/NAME.tar`.
pub fn tar_of(dir: &Path, name: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    std::fs::create_dir_all(&tree).unwrap();
    for (f, data) in files {
        write_file(&tree.join(f), data);
    }
    let out = dir.join(format!("{name}.tar"));
    // Fixed metadata: the same files always make the same archive.
    make_tar(
        &tree,
        &out,
        &[
            "--format=gnu",
            "--mtime=@1600000000",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ],
    );
    out
}

/// Undo composefs-dump(5) escaping (`\\ \n \r \t \xHH`), independently of
/// the crate's own parser.
pub fn dump_unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] != b'\\' {
            out.push(field[i]);
            i += 1;
            continue;
        }
        let e = *field.get(i + 1).unwrap_or_else(|| {
            panic!("dangling backslash in {:?}", String::from_utf8_lossy(field))
        });
        match e {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'x' => {
                let h = std::str::from_utf8(&field[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 2;
            }
            other => panic!("unknown escape \\{} in dump field", other as char),
        }
        i += 2;
    }
    out
}

/// One line of a composefs-dump(5) text, fields unescaped (`None` for `-`
/// in PAYLOAD, CONTENT and DIGEST).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpLine {
    pub path: Vec<u8>,
    pub size: u64,
    /// MODE as printed: a leading `@` marks a hardlink line.
    pub mode: String,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub mtime: String,
    pub payload: Option<Vec<u8>>,
    pub content: Option<Vec<u8>>,
    pub digest: Option<String>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DumpLine {
    pub fn is_hardlink(&self) -> bool {
        self.mode.starts_with('@')
    }
    /// MODE as a number (without the `@`).
    pub fn st_mode(&self) -> u32 {
        u32::from_str_radix(self.mode.trim_start_matches('@'), 8).unwrap()
    }
}

/// Parse a whole composefs-dump(5) text; panics on anything malformed.
pub fn parse_dump(text: &[u8]) -> Vec<DumpLine> {
    let opt = |f: &[u8]| (f != b"-").then(|| dump_unescape(f));
    text.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
            let shown = String::from_utf8_lossy(line);
            assert!(f.len() >= 11, "short dump line {shown:?}");
            let s = |i: usize| std::str::from_utf8(f[i]).unwrap().to_string();
            let xattrs = f[11..]
                .iter()
                .map(|x| {
                    let eq = x
                        .iter()
                        .position(|&c| c == b'=')
                        .unwrap_or_else(|| panic!("xattr without '=' in {shown:?}"));
                    (dump_unescape(&x[..eq]), dump_unescape(&x[eq + 1..]))
                })
                .collect();
            DumpLine {
                path: dump_unescape(f[0]),
                size: s(1).parse().unwrap(),
                mode: s(2),
                nlink: s(3).parse().unwrap(),
                uid: s(4).parse().unwrap(),
                gid: s(5).parse().unwrap(),
                rdev: s(6).parse().unwrap(),
                mtime: s(7),
                payload: opt(f[8]),
                content: opt(f[9]),
                digest: (f[10] != b"-").then(|| s(10)),
                xattrs,
            }
        })
        .collect()
}

/// The dump line for `path` (as the dump writes it, e.g. `/a/b`).
pub fn dump_line<'a>(lines: &'a [DumpLine], path: &str) -> &'a DumpLine {
    lines
        .iter()
        .find(|l| l.path == path.as_bytes())
        .unwrap_or_else(|| panic!("no line for {path:?} in the dump"))
}

/// The golden composefs images in tests/fixtures/erofs (made by C mkcomposefs 1.0.8).
pub const GOLDEN_FIXTURES: &[&str] = &[
    "empty",
    "simple",
    "hardlinks",
    "names",
    "owners",
    "whiteouts",
    "xattrs",
    "deep",
    "bigdir",
];

// ---------------------------------------------------------------------------
// Kernel mounts made by tests
// ---------------------------------------------------------------------------

/// Is something mounted at `p` (its device differs from its parent's)?
pub fn is_mountpoint(p: &Path) -> bool {
    let me = std::fs::metadata(p).unwrap();
    let parent = std::fs::metadata(p.join("..")).unwrap();
    me.dev() != parent.dev() || me.ino() == parent.ino()
}

/// A mount that is undone when dropped, also when an assertion fails:
/// `composefs umount`, then `umount -l` if that did not work.
pub struct Mounted {
    pub path: PathBuf,
    active: bool,
}

impl Mounted {
    /// `composefs mount --kernel IMAGE PATH` (creates PATH), required to work.
    pub fn new(repo: &Repo, image: &str, path: &Path) -> Mounted {
        Self::mount(repo, &["--kernel", image], path)
    }

    /// `composefs mount NAME PATH` (FUSE; creates PATH), required to work.
    pub fn fuse(repo: &Repo, name: &str, path: &Path) -> Mounted {
        Self::mount(repo, &[name], path)
    }

    /// `composefs mount ARGS NAME PATH` (FUSE; creates PATH), required to work.
    pub fn fuse_with(repo: &Repo, args: &[&str], name: &str, path: &Path) -> Mounted {
        let mut all = args.to_vec();
        all.push(name);
        Self::mount(repo, &all, path)
    }

    fn mount(repo: &Repo, args: &[&str], path: &Path) -> Mounted {
        Self::fuse_env(repo, args, &[], path)
    }

    /// `composefs mount ARGS PATH` with `env` set (creates PATH), required
    /// to work.
    pub fn fuse_env(repo: &Repo, args: &[&str], env: &[(&str, &OsStr)], path: &Path) -> Mounted {
        std::fs::create_dir_all(path).unwrap();
        let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), repo.path.as_os_str()];
        all.push(OsStr::new("mount"));
        all.extend(args.iter().map(OsStr::new));
        all.push(path.as_os_str());
        let out = composefs(&all, None, env);
        assert!(
            out.status.success(),
            "mount {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = Mounted {
            path: path.to_path_buf(),
            active: true,
        };
        assert!(
            is_mountpoint(path),
            "mount {args:?} succeeded but nothing is mounted"
        );
        m
    }

    /// `composefs umount`, required to work and to leave nothing mounted.
    pub fn umount(mut self, repo: &Repo) {
        self.active = false;
        repo.ok(&["umount", self.path.to_str().unwrap()]);
        assert!(
            !is_mountpoint(&self.path),
            "still mounted after `composefs umount`"
        );
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let ok = Command::new(bin())
            .arg("umount")
            .arg(&self.path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

// ---------------------------------------------------------------------------
// Crash and concurrency tests (tests/crash.rs, tests/concurrency.rs,
// fuse-tests/concurrency.rs)
// ---------------------------------------------------------------------------

/// The size of file `i` of [`mixed_tree`]: mostly small (empty, inline,
/// one block, a few blocks), every 37th one large.
fn mixed_size(i: usize) -> usize {
    const SIZES: [usize; 8] = [0, 40, 700, 4096, 9_000, 30_000, 120_000, 65];
    if i % 37 == 36 {
        1_200_000 + i
    } else {
        SIZES[i % SIZES.len()] + if SIZES[i % SIZES.len()] > 64 { i } else { 0 }
    }
}

/// Write `n` regular files of mixed sizes under `root` (`dK/sJ/fI`, up
/// to 1.2 MiB, every 10th a copy of an earlier one so some content is
/// shared) and a few symlinks; contents depend on `seed`. Returns the
/// bytes written.
pub fn mixed_tree(root: &Path, seed: u64, n: usize) -> u64 {
    let mut total = 0u64;
    for i in 0..n {
        let data = if i % 10 == 9 {
            pseudo_random(seed * 100_000 + (i - 5) as u64, mixed_size(i - 5))
        } else {
            pseudo_random(seed * 100_000 + i as u64, mixed_size(i))
        };
        total += data.len() as u64;
        write_file(&root.join(format!("d{}/s{}/f{i:04}", i % 5, i % 3)), &data);
    }
    for k in 0..4 {
        std::os::unix::fs::symlink(format!("d0/s0/f{:04}", k * 15), root.join(format!("l{k}")))
            .unwrap();
    }
    total
}

/// Rewrite every `every`-th file (from `first`) of a [`mixed_tree`] with
/// new content: a second version sharing the rest.
pub fn mixed_tree_modify(root: &Path, seed: u64, n: usize, first: usize, every: usize) {
    for i in (first..n).step_by(every) {
        let p = root.join(format!("d{}/s{}/f{i:04}", i % 5, i % 3));
        write_file(
            &p,
            &pseudo_random(seed * 100_000 + 50_000 + i as u64, mixed_size(i) + 1),
        );
    }
}

/// `tar -cf OUT -C DIR MEMBERS…` (GNU tar, sorted, fixed owners and
/// mtimes: the same files always make the same archive).
pub fn tar_members(dir: &Path, members: &[&str], out: &Path) {
    require_tool("tar");
    let mut args: Vec<&OsStr> = [
        "--sort=name",
        "--format=gnu",
        "--mtime=@1600000000",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-C",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    args.push(dir.as_os_str());
    args.push(OsStr::new("-cf"));
    args.push(out.as_os_str());
    args.extend(members.iter().map(OsStr::new));
    run_tool("tar", &args, Path::new("/"));
}

/// Add image `tag` to the OCI layout `layout` (made if missing) with
/// umoci: an empty image plus each tar as one layer, in order.
pub fn umoci_image(layout: &Path, tag: &str, layers: &[&Path]) {
    let image = format!("{}:{tag}", layout.display());
    if !layout.join("index.json").exists() {
        run_tool(
            "umoci",
            &[
                OsStr::new("init"),
                OsStr::new("--layout"),
                layout.as_os_str(),
            ],
            Path::new("/"),
        );
    }
    run_tool(
        "umoci",
        &[OsStr::new("new"), OsStr::new("--image"), OsStr::new(&image)],
        Path::new("/"),
    );
    for l in layers {
        run_tool(
            "umoci",
            &[
                OsStr::new("raw"),
                OsStr::new("add-layer"),
                OsStr::new("--image"),
                OsStr::new(&image),
                l.as_os_str(),
            ],
            Path::new("/"),
        );
    }
}

/// The hex names of every object in the repository at `repo`, sorted.
pub fn object_names(repo: &Path) -> Vec<String> {
    list_objects(repo).into_iter().map(|(hex, _)| hex).collect()
}

/// Everything below `repo` whose name starts with `.tmp` (temporary
/// files and symlinks a crash may leave behind).
pub fn tmp_leftovers(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(repo, &mut |p| {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"))
        {
            out.push(p.to_path_buf());
        }
    });
    out.sort();
    out
}

/// Seeded randomness for the crash and concurrency harnesses
/// (xorshift64*): the seed is printed so that a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..=n`.
    pub fn upto(&mut self, n: u64) -> u64 {
        self.next() % (n + 1)
    }
}

/// `$VAR` as a number; `default` when unset (`None`: the clock's
/// nanoseconds, for seeds).
pub fn env_number(var: &str, default: Option<u64>) -> u64 {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?}: expected a number")),
        Err(_) => default.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        }),
    }
}

/// `composefs --repo REPO ARGS` (run from `/`, standard input empty).
pub fn command_in(repo: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--repo")
        .arg(repo)
        .args(args)
        .current_dir("/")
        .env_remove("COMPOSEFS_REPO")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    cmd
}

/// Run `cmd` to completion, output captured; a run longer than `limit`
/// is killed and fails the test (a hang must not hang the suite).
pub fn output_within(mut cmd: Command, limit: std::time::Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            assert_no_panic(what, &out);
            out
        }
        Err(_) => {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what} did not finish within {limit:?}: a hang");
        }
    }
}

/// `composefs --repo REPO ARGS` within two minutes.
pub fn run_in(repo: &Path, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    output_within(
        command_in(repo, &args),
        std::time::Duration::from_secs(120),
        &format!("composefs {}", args.join(" ")),
    )
}

/// [`run_in`], required to succeed; stdout.
pub fn ok_in(repo: &Path, args: &[&str]) -> Vec<u8> {
    let out = run_in(repo, args);
    assert!(
        out.status.success(),
        "composefs {} on {} failed ({}):\n{}",
        args.join(" "),
        repo.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `composefs refs`, one line per ref.
pub fn refs_in(repo: &Path) -> std::collections::BTreeSet<String> {
    String::from_utf8(ok_in(repo, &["refs"]))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `cp -a SRC DST`.
pub fn copy_dir(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", src.display(), dst.display());
}

/// Xattrs of `p` (not following symlinks), `security.selinux` left out.
pub fn xattrs(p: &Path) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut list = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(p, &mut list[..])
        .unwrap_or_else(|e| panic!("llistxattr {}: {e}", p.display()));
    let mut out = std::collections::BTreeMap::new();
    for name in list[..n].split(|&c| c == 0).filter(|s| !s.is_empty()) {
        if name == b"security.selinux" {
            continue;
        }
        let mut val = vec![0u8; 1 << 16];
        let m = rustix::fs::lgetxattr(p, std::ffi::OsStr::from_bytes(name), &mut val[..])
            .unwrap_or_else(|e| {
                panic!(
                    "lgetxattr {} {}: {e}",
                    p.display(),
                    String::from_utf8_lossy(name)
                )
            });
        val.truncate(m);
        out.insert(name.to_vec(), val);
    }
    out
}
