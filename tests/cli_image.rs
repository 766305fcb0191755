//! The image commands from the outside: `mkcomposefs` (as a subcommand and
//! through a symlink named `mkcomposefs`) against the C tool's golden
//! images, directories as sources and the options, `dump` and `ls`,
//! `create-image` into a repository with gc and fsck, and bad input of
//! every kind (errors, never a panic).

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{
    DumpLine, Repo, assert_mentions, assert_no_panic, dump_line, fsverity_digest, parse_dump,
    pseudo_random, write_file,
};

use common::GOLDEN_FIXTURES as FIXTURES;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/erofs")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    let p = fixture(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// How the tool is invoked: `composefs mkcomposefs ...` or, through a
/// symlink named `mkcomposefs`, `mkcomposefs ...`.
#[derive(Clone, Debug)]
enum Invoker {
    Subcommand,
    Symlink(PathBuf),
}

impl Invoker {
    fn both(dir: &Path) -> [Invoker; 2] {
        let link = dir.join("mkcomposefs");
        if !link.exists() {
            symlink(common::bin(), &link).unwrap();
        }
        [Invoker::Subcommand, Invoker::Symlink(link)]
    }

    /// Run with `args` in `cwd`, `stdin` as input; never lets a panic pass.
    fn run(&self, cwd: &Path, args: &[&OsStr], stdin: Option<&[u8]>) -> Output {
        let mut cmd = match self {
            Invoker::Subcommand => {
                let mut c = Command::new(common::bin());
                c.arg("mkcomposefs");
                c
            }
            Invoker::Symlink(p) => Command::new(p),
        };
        cmd.args(args)
            .current_dir(cwd)
            .env_remove("COMPOSEFS_REPO")
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("cannot start mkcomposefs");
        let writer = stdin.map(|data| {
            let mut pipe = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut pipe, &data);
            })
        });
        let out = child.wait_with_output().unwrap();
        if let Some(w) = writer {
            w.join().unwrap();
        }
        assert_no_panic(&format!("{self:?} mkcomposefs {args:?}"), &out);
        out
    }

    /// Run and require success; returns stdout.
    fn ok(&self, cwd: &Path, args: &[&OsStr], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(cwd, args, stdin);
        assert!(
            out.status.success(),
            "{self:?} mkcomposefs {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Run and require failure; returns stderr.
    fn fail(&self, cwd: &Path, args: &[&OsStr], stdin: Option<&[u8]>) -> String {
        let out = self.run(cwd, args, stdin);
        assert!(
            !out.status.success(),
            "{self:?} mkcomposefs {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `composefs ARGS` outside any repository.
fn composefs(args: &[&OsStr]) -> Output {
    common::composefs(args, None, &[])
}

fn composefs_ok(args: &[&OsStr]) -> Vec<u8> {
    let out = composefs(args);
    assert!(
        out.status.success(),
        "composefs {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn composefs_fail(args: &[&OsStr]) -> String {
    let out = composefs(args);
    assert!(
        !out.status.success(),
        "composefs {args:?} unexpectedly succeeded; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `composefs dump FILE` as parsed lines.
fn dump_file(img: &Path) -> Vec<DumpLine> {
    parse_dump(&composefs_ok(&[os("dump"), img.as_os_str()]))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    common::walk(dir, &mut |p| {
        if !p.is_dir() {
            v.push(p.to_path_buf())
        }
    });
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Golden images
// ---------------------------------------------------------------------------

/// Every golden dumpfile, both versions, both ways of invoking: the image
/// is byte-identical to the C tool's, `--print-digest` prints its digest,
/// `--print-digest-only` prints it and writes nothing, `-` as IMAGE writes
/// the image to a pipe, `-` as SOURCE reads the dumpfile from stdin.
#[test]
fn mkcomposefs_from_file_reproduces_every_golden_image() {
    let tmp = tempfile::tempdir().unwrap();
    let invokers = Invoker::both(tmp.path());
    for inv in &invokers {
        for name in FIXTURES {
            let dump = fixture(&format!("{name}.dump"));
            let dump_text = read_fixture(&format!("{name}.dump"));
            for (v, flags) in [(0, &[][..]), (1, &["--min-version=1"][..])] {
                let tag = format!("{inv:?} {name} v{v}");
                let golden = read_fixture(&format!("{name}.v{v}.img"));
                let digest = String::from_utf8(read_fixture(&format!("{name}.v{v}.digest")))
                    .unwrap()
                    .trim()
                    .to_string();
                assert_eq!(digest.len(), 64, "{name}.v{v}.digest");
                let cwd = tmp.path().join(format!("cwd-{name}-{v}"));
                std::fs::create_dir_all(&cwd).unwrap();
                let out_img = cwd.join("out.img");
                let fl: Vec<&OsStr> = flags.iter().map(|f| os(f)).collect();

                // DUMP IMAGE --print-digest
                let mut args = vec![os("--from-file"), os("--print-digest")];
                args.extend(&fl);
                args.extend([dump.as_os_str(), out_img.as_os_str()]);
                let stdout = inv.ok(&cwd, &args, None);
                let img = std::fs::read(&out_img).unwrap();
                assert!(
                    img == golden,
                    "{tag}: image differs from the golden one ({} vs {} bytes)",
                    img.len(),
                    golden.len()
                );
                assert_eq!(
                    String::from_utf8_lossy(&stdout),
                    format!("{digest}\n"),
                    "{tag}: --print-digest"
                );
                std::fs::remove_file(&out_img).unwrap();

                // --print-digest-only: the digest, and no file anywhere.
                let mut args = vec![os("--from-file"), os("--print-digest-only")];
                args.extend(&fl);
                args.push(dump.as_os_str());
                let stdout = inv.ok(&cwd, &args, None);
                assert_eq!(
                    String::from_utf8_lossy(&stdout),
                    format!("{digest}\n"),
                    "{tag}: --print-digest-only"
                );
                assert!(
                    files_in(&cwd).is_empty(),
                    "{tag}: --print-digest-only wrote {:?}",
                    files_in(&cwd)
                );

                // IMAGE `-`: the image on standard output (a pipe).
                let mut args = vec![os("--from-file")];
                args.extend(&fl);
                args.extend([dump.as_os_str(), os("-")]);
                let stdout = inv.ok(&cwd, &args, None);
                assert!(stdout == golden, "{tag}: image written to stdout differs");

                // SOURCE `-`: the dumpfile from standard input.
                let mut args = vec![os("--from-file")];
                args.extend(&fl);
                args.extend([os("-"), out_img.as_os_str()]);
                inv.ok(&cwd, &args, Some(&dump_text));
                assert!(
                    std::fs::read(&out_img).unwrap() == golden,
                    "{tag}: image from a dumpfile on stdin differs"
                );
                std::fs::remove_file(&out_img).unwrap();
            }
        }
    }
}

/// `--max-version=0` keeps version 0 even where the default upgrades (a
/// tree with whiteouts is written as version 1 by default, as the C tool
/// does: its golden v0 and v1 images are the same); `--min-version` above
/// what exists is refused.
#[test]
fn max_version_and_bad_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = Invoker::Subcommand;
    for name in FIXTURES {
        let dump = fixture(&format!("{name}.dump"));
        let img = inv.ok(
            tmp.path(),
            &[
                os("--from-file"),
                os("--max-version=0"),
                dump.as_os_str(),
                os("-"),
            ],
            None,
        );
        let v0 = read_fixture(&format!("{name}.v0.img"));
        let v1 = read_fixture(&format!("{name}.v1.img"));
        if *name == "whiteouts" {
            assert_eq!(v0, v1, "the C tool upgraded its whiteouts image to v1");
            assert!(img != v0, "--max-version=0 still upgraded {name} to v1");
            let f = tmp.path().join("w0.img");
            std::fs::write(&f, &img).unwrap();
            let paths: BTreeSet<Vec<u8>> = dump_file(&f).into_iter().map(|l| l.path).collect();
            let want: BTreeSet<Vec<u8>> = dump_file(&fixture("whiteouts.v0.img"))
                .into_iter()
                .map(|l| l.path)
                .collect();
            assert_eq!(paths, want, "{name} with --max-version=0");
        } else {
            assert!(
                img == v0,
                "{name}: --max-version=0 differs from the v0 image"
            );
        }
    }
    let dump = fixture("simple.dump");
    for bad in ["--min-version=2", "--max-version=7"] {
        let err = inv.fail(
            tmp.path(),
            &[os("--from-file"), os(bad), dump.as_os_str(), os("-")],
            None,
        );
        assert_mentions(&err, &["version"], bad);
    }
}

/// `composefs dump` of every golden image equals the dump of the image we
/// write from the same dumpfile, names the same paths as the dumpfile, and
/// writing an image from that dump gives the golden bytes again.
#[test]
fn dump_of_golden_images_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = Invoker::Subcommand;
    for name in FIXTURES {
        let dump_in = fixture(&format!("{name}.dump"));
        let want_paths: BTreeSet<Vec<u8>> = parse_dump(&read_fixture(&format!("{name}.dump")))
            .into_iter()
            .map(|l| l.path)
            .collect();
        for (v, flag) in [(0, "--min-version=0"), (1, "--min-version=1")] {
            let tag = format!("{name} v{v}");
            let golden_path = fixture(&format!("{name}.v{v}.img"));
            let golden_dump = composefs_ok(&[os("dump"), golden_path.as_os_str()]);
            let ours = tmp.path().join(format!("{name}.v{v}.img"));
            inv.ok(
                tmp.path(),
                &[
                    os("--from-file"),
                    os(flag),
                    dump_in.as_os_str(),
                    ours.as_os_str(),
                ],
                None,
            );
            let our_dump = composefs_ok(&[os("dump"), ours.as_os_str()]);
            assert!(
                golden_dump == our_dump,
                "{tag}: dumps differ:\n--- golden\n{}\n--- ours\n{}",
                String::from_utf8_lossy(&golden_dump),
                String::from_utf8_lossy(&our_dump)
            );
            let lines = parse_dump(&golden_dump);
            let paths: BTreeSet<Vec<u8>> = lines.iter().map(|l| l.path.clone()).collect();
            assert_eq!(paths, want_paths, "{tag}: paths in the dump");
            assert_eq!(paths.len(), lines.len(), "{tag}: a path printed twice");
            let again = inv.ok(
                tmp.path(),
                &[os("--from-file"), os(flag), os("-"), os("-")],
                Some(&golden_dump),
            );
            assert!(
                again == std::fs::read(&golden_path).unwrap(),
                "{tag}: the image written from the dump differs from the golden one"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Directories as sources
// ---------------------------------------------------------------------------

/// A directory with small and large files, duplicates, a symlink, a
/// device and a fifo, xattrs of several namespaces.
fn sample_dir(root: &Path) {
    write_file(&root.join("empty"), b"");
    write_file(&root.join("small"), b"hello\n");
    write_file(&root.join("sixty-four"), &[b'a'; 64]);
    write_file(&root.join("sixty-five"), &pseudo_random(1, 65));
    write_file(&root.join("page"), &pseudo_random(2, 4096));
    write_file(&root.join("large"), &pseudo_random(3, (1 << 20) + 5));
    write_file(&root.join("sub/dup"), &pseudo_random(3, (1 << 20) + 5));
    write_file(&root.join("sub/deeper/file"), &pseudo_random(4, 10_000));
    write_file(&root.join("sub/tiny"), b"-");
    symlink("sub/deeper/file", root.join("link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let setx = |p: &str, n: &str, v: &[u8]| {
        rustix::fs::lsetxattr(root.join(p), n, v, rustix::fs::XattrFlags::empty())
            .unwrap_or_else(|e| panic!("setxattr {n} on {p}: {e}"))
    };
    setx("small", "user.u", b"user value");
    setx("sub", "user.dir", b"\x00\x01");
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("chr"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(4, 64),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("sub/blk"),
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o660),
            rustix::fs::makedev(8, 1),
        )
        .unwrap();
        // mknod applies the umask.
        std::fs::set_permissions(root.join("sub/blk"), std::fs::Permissions::from_mode(0o660))
            .unwrap();
        setx("small", "trusted.t", b"trusted value");
        setx("large", "security.s", b"security value");
        setx("large", "trusted.overlay.custom", b"escaped");
        setx("link", "trusted.l", b"on a symlink");
    }
}

const LARGE: &[&str] = &["sixty-five", "page", "large", "sub/dup", "sub/deeper/file"];
const SMALL: &[(&str, &[u8])] = &[
    ("small", b"hello\n"),
    ("sixty-four", &[b'a'; 64]),
    ("sub/tiny", b"-"),
];

/// `mkcomposefs DIR IMAGE`: large files are redirects named by their sha256
/// fs-verity digest (`fsverity digest` is the oracle), small ones inline,
/// the empty one neither; `--print-digest` is the image file's digest;
/// the same directory gives the same image again, and the dump of the image
/// gives the same image again.
#[test]
fn mkcomposefs_of_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_dir(&src);
    for inv in &Invoker::both(tmp.path()) {
        let img = tmp.path().join("dir.img");
        let printed = inv.ok(
            tmp.path(),
            &[os("--print-digest"), src.as_os_str(), img.as_os_str()],
            None,
        );
        assert_eq!(
            String::from_utf8(printed).unwrap().trim(),
            fsverity_digest("sha256", &img),
            "{inv:?}: --print-digest is not the image's fs-verity digest"
        );
        let lines = dump_file(&img);
        for rel in LARGE {
            let l = dump_line(&lines, &format!("/{rel}"));
            let d = fsverity_digest("sha256", &src.join(rel));
            assert_eq!(
                l.payload.as_deref(),
                Some(format!("{}/{}", &d[..2], &d[2..]).as_bytes()),
                "/{rel}: payload"
            );
            assert_eq!(l.digest.as_deref(), Some(d.as_str()), "/{rel}: digest");
            assert_eq!(l.content, None, "/{rel}: inline content");
            assert_eq!(
                l.size,
                std::fs::metadata(src.join(rel)).unwrap().len(),
                "/{rel}: size"
            );
        }
        for (rel, data) in SMALL {
            let l = dump_line(&lines, &format!("/{rel}"));
            assert_eq!(l.content.as_deref(), Some(*data), "/{rel}: inline content");
            assert_eq!(
                (l.payload.as_ref(), l.digest.as_ref()),
                (None, None),
                "/{rel}"
            );
            assert_eq!(l.size, data.len() as u64, "/{rel}: size");
        }
        let l = dump_line(&lines, "/empty");
        assert_eq!(
            (l.size, &l.payload, &l.content, &l.digest),
            (0, &None, &None, &None),
            "/empty"
        );
        let l = dump_line(&lines, "/link");
        assert_eq!(l.payload.as_deref(), Some(&b"sub/deeper/file"[..]), "/link");
        assert_eq!(l.st_mode() & 0o170000, 0o120000, "/link");
        let l = dump_line(&lines, "/fifo");
        assert_eq!(l.st_mode(), 0o10644, "/fifo");
        let l = dump_line(&lines, "/small");
        assert!(
            l.xattrs
                .contains(&(b"user.u".to_vec(), b"user value".to_vec())),
            "/small: {:?}",
            l.xattrs
        );
        if is_root() {
            assert_eq!(dump_line(&lines, "/chr").rdev, rustix::fs::makedev(4, 64));
            assert!(
                dump_line(&lines, "/large")
                    .xattrs
                    .contains(&(b"trusted.overlay.custom".to_vec(), b"escaped".to_vec())),
                "/large: a user trusted.overlay.* xattr does not come back from the image"
            );
        }

        // Reproducible, and the same as writing from its own dump.
        let again = inv.ok(tmp.path(), &[src.as_os_str(), os("-")], None);
        assert!(
            again == std::fs::read(&img).unwrap(),
            "{inv:?}: a second run gives a different image"
        );
        let text = composefs_ok(&[os("dump"), img.as_os_str()]);
        let from_dump = inv.ok(
            tmp.path(),
            &[os("--from-file"), os("-"), os("-")],
            Some(&text),
        );
        assert!(
            from_dump == again,
            "{inv:?}: the image written from its dump differs"
        );
    }
}

/// `--digest-store DIR` fills DIR/XX/<rest> with copies of the large files
/// named by their sha256 fs-verity digest (one per distinct content), no
/// small files; the image is the one written without the option; a second
/// run into the same store changes nothing.
#[test]
fn digest_store_holds_copies_named_by_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_dir(&src);
    for inv in &Invoker::both(tmp.path()) {
        let store = tmp
            .path()
            .join(format!("store-{}", matches!(inv, Invoker::Subcommand)));
        let img = tmp.path().join("stored.img");
        inv.ok(
            tmp.path(),
            &[
                os("--digest-store"),
                store.as_os_str(),
                src.as_os_str(),
                img.as_os_str(),
            ],
            None,
        );
        let mut want = BTreeSet::new();
        for rel in LARGE {
            let d = fsverity_digest("sha256", &src.join(rel));
            let copy = store.join(&d[..2]).join(&d[2..]);
            assert_eq!(
                std::fs::read(&copy)
                    .unwrap_or_else(|e| panic!("/{rel}: no copy at {}: {e}", copy.display())),
                std::fs::read(src.join(rel)).unwrap(),
                "/{rel}: the stored copy's bytes"
            );
            want.insert(copy);
        }
        let got: BTreeSet<PathBuf> = files_in(&store).into_iter().collect();
        assert_eq!(got, want, "{inv:?}: files in the digest store");
        assert_eq!(
            want.len(),
            LARGE.len() - 1,
            "large and sub/dup share one copy"
        );
        for f in &got {
            assert_eq!(
                fsverity_digest("sha256", f),
                format!(
                    "{}{}",
                    f.parent().unwrap().file_name().unwrap().to_str().unwrap(),
                    f.file_name().unwrap().to_str().unwrap()
                ),
                "{} is not named by its digest",
                f.display()
            );
        }
        let plain = inv.ok(tmp.path(), &[src.as_os_str(), os("-")], None);
        assert!(
            plain == std::fs::read(&img).unwrap(),
            "{inv:?}: --digest-store changed the image"
        );
        // Again into the same store: nothing added or changed.
        inv.ok(
            tmp.path(),
            &[
                os("--digest-store"),
                store.as_os_str(),
                src.as_os_str(),
                img.as_os_str(),
            ],
            None,
        );
        assert_eq!(files_in(&store).into_iter().collect::<BTreeSet<_>>(), want);
    }
}

/// `--use-epoch`, `--skip-xattrs`, `--user-xattrs`, `--skip-devices`, each
/// against the plain image of the same directory.
#[test]
fn directory_options() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_dir(&src);
    let inv = Invoker::Subcommand;
    let image = |opts: &[&str]| -> Vec<DumpLine> {
        let img = tmp.path().join("opt.img");
        let mut args: Vec<&OsStr> = opts.iter().map(|o| os(o)).collect();
        args.extend([src.as_os_str(), img.as_os_str()]);
        inv.ok(tmp.path(), &args, None);
        dump_file(&img)
    };
    let xattr_names = |lines: &[DumpLine]| -> BTreeSet<Vec<u8>> {
        lines
            .iter()
            .flat_map(|l| l.xattrs.iter().map(|x| x.0.clone()))
            .collect()
    };
    let paths = |lines: &[DumpLine]| -> BTreeSet<Vec<u8>> {
        lines.iter().map(|l| l.path.clone()).collect()
    };

    let plain = image(&[]);
    assert!(
        plain.iter().any(|l| l.mtime != "0.0"),
        "the sample has real mtimes"
    );
    let all = xattr_names(&plain);
    assert!(all.contains(&b"user.u"[..]), "{all:?}");

    let epoch = image(&["--use-epoch"]);
    for l in &epoch {
        assert_eq!(
            l.mtime,
            "0.0",
            "--use-epoch: {:?}",
            String::from_utf8_lossy(&l.path)
        );
    }
    assert_eq!(paths(&epoch), paths(&plain));

    let none = image(&["--skip-xattrs"]);
    assert!(
        xattr_names(&none).is_empty(),
        "--skip-xattrs kept {:?}",
        xattr_names(&none)
    );
    assert_eq!(paths(&none), paths(&plain));

    let user = image(&["--user-xattrs"]);
    let kept = xattr_names(&user);
    assert!(
        kept.iter().all(|n| n.starts_with(b"user.")),
        "--user-xattrs kept {kept:?}"
    );
    assert_eq!(
        kept,
        all.iter()
            .filter(|n| n.starts_with(b"user."))
            .cloned()
            .collect(),
        "--user-xattrs dropped user xattrs"
    );
    if is_root() {
        assert!(all.contains(&b"trusted.t"[..]) && all.contains(&b"security.s"[..]));
    }

    let nodev = image(&["--skip-devices"]);
    let devs = |lines: &[DumpLine]| -> Vec<Vec<u8>> {
        lines
            .iter()
            .filter(|l| matches!(l.st_mode() & 0o170000, 0o020000 | 0o060000))
            .map(|l| l.path.clone())
            .collect()
    };
    assert!(
        devs(&nodev).is_empty(),
        "--skip-devices kept {:?}",
        devs(&nodev)
    );
    if is_root() {
        assert_eq!(devs(&plain).len(), 2, "devices in the plain image");
    }
    let mut want = paths(&plain);
    for d in devs(&plain) {
        want.remove(&d);
    }
    assert_eq!(
        paths(&nodev),
        want,
        "--skip-devices dropped more than devices"
    );
    assert!(paths(&nodev).contains(&b"/fifo"[..]), "the fifo stays");

    let err = inv.fail(
        tmp.path(),
        &[
            os("--skip-xattrs"),
            os("--user-xattrs"),
            src.as_os_str(),
            os("-"),
        ],
        None,
    );
    assert_mentions(&err, &["xattr"], "--skip-xattrs with --user-xattrs");
}

// ---------------------------------------------------------------------------
// ls
// ---------------------------------------------------------------------------

/// One `ls` line: (permissions, nlink, uid, gid, size, name and target).
fn ls_fields(line: &str) -> (String, u64, u32, u32, String, String) {
    let mut rest = line;
    let mut take = || {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        let (tok, r) = rest.split_at(end);
        rest = r;
        tok.to_string()
    };
    let perms = take();
    let nlink = take().parse().unwrap();
    let uid = take().parse().unwrap();
    let gid = take().parse().unwrap();
    let mut size = take();
    if perms.starts_with(['b', 'c']) {
        size = format!("{size} {}", take());
    }
    let date = take();
    let time = take();
    assert!(
        date.len() == 10 && time.len() == 5,
        "no date and time in ls line {line:?}"
    );
    let name = rest.strip_prefix(' ').unwrap_or(rest).to_string();
    (perms, nlink, uid, gid, size, name)
}

/// `ls` of an image file lists names, modes, owners, sizes, device
/// numbers and symlink targets, like `ls -l`; a subdirectory; a single file.
#[test]
fn ls_lists_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_dir(&src);
    write_file(&src.join("with space"), b"sp");
    std::fs::set_permissions(src.join("small"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::fs::hard_link(src.join("page"), src.join("sub/page-link")).unwrap();
    let t = rustix::fs::Timespec {
        tv_sec: 1_700_000_000,
        tv_nsec: 5,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        src.join("large"),
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let img = tmp.path().join("ls.img");
    Invoker::Subcommand.ok(tmp.path(), &[src.as_os_str(), img.as_os_str()], None);

    let text = String::from_utf8(composefs_ok(&[os("ls"), img.as_os_str()])).unwrap();
    let lines: Vec<_> = text.lines().map(ls_fields).collect();
    let names: BTreeSet<String> = lines.iter().map(|l| l.5.clone()).collect();
    let mut want: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    want.remove("link");
    want.insert("link -> sub/deeper/file".to_string());
    assert_eq!(names, want, "ls /:\n{text}");
    let find = |n: &str| {
        lines
            .iter()
            .find(|l| l.5 == n)
            .unwrap_or_else(|| panic!("{n} not in ls output:\n{text}"))
            .clone()
    };
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(find("small").0, "-rwsr-x---");
    assert_eq!(find("small").4, "6");
    assert_eq!(find("small").2, uid);
    assert_eq!(find("large").4, ((1u64 << 20) + 5).to_string());
    assert_eq!(find("large").0, "-rw-r--r--");
    let large_line = text.lines().find(|l| l.ends_with(" large")).unwrap();
    assert!(
        large_line.contains(" 2023-11-14 22:13 "),
        "mtime 1700000000 (UTC) not shown: {large_line:?}"
    );
    // As C mkcomposefs 1.0.8 builds from a directory: every path its own inode.
    assert_eq!(
        find("page").1,
        1,
        "nlink of a hardlinked file (C: not detected)"
    );
    assert_eq!(find("empty").4, "0");
    assert_eq!(find("with space").4, "2");
    assert!(find("sub").0.starts_with('d'));
    assert_eq!(find("fifo").0, "prw-r--r--");
    assert!(find("link -> sub/deeper/file").0.starts_with('l'));
    assert_eq!(find("link -> sub/deeper/file").4, "15", "symlink size");
    if is_root() {
        assert_eq!(find("chr").0, "crw-------");
        assert_eq!(find("chr").4, "4, 64");
    }

    let text = String::from_utf8(composefs_ok(&[os("ls"), img.as_os_str(), os("/sub")])).unwrap();
    let names: BTreeSet<String> = text.lines().map(|l| ls_fields(l).5).collect();
    let mut want: BTreeSet<String> = ["deeper", "dup", "tiny", "page-link"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if is_root() {
        want.insert("blk".to_string());
        let blk = text.lines().map(ls_fields).find(|l| l.5 == "blk").unwrap();
        assert_eq!((blk.0.as_str(), blk.4.as_str()), ("brw-rw----", "8, 1"));
    }
    assert_eq!(names, want, "ls /sub:\n{text}");

    let text = String::from_utf8(composefs_ok(&[
        os("ls"),
        img.as_os_str(),
        os("/sub/deeper/file"),
    ]))
    .unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let (perms, _, _, _, size, name) = ls_fields(text.lines().next().unwrap());
    assert_eq!(
        (perms.as_str(), size.as_str()),
        ("-rw-r--r--", "10000"),
        "{text}"
    );
    assert!(name.ends_with("file"), "{text}");

    for missing in ["/nope", "/sub/nope", "/small/child"] {
        let err = composefs_fail(&[os("ls"), img.as_os_str(), os(missing)]);
        assert_mentions(&err, &[missing], &format!("ls {missing}"));
    }
}

// ---------------------------------------------------------------------------
// create-image, gc and fsck in a repository
// ---------------------------------------------------------------------------

fn create(repo: &Repo, dir: &Path, name: Option<&str>) -> String {
    let mut args = vec!["create-image", dir.to_str().unwrap()];
    if let Some(n) = name {
        args.extend(["--name", n]);
    }
    let id = String::from_utf8(repo.ok(&args))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()),
        "create-image printed {id:?}"
    );
    id
}

/// Entries of `images/` other than `refs`.
fn image_entries(repo: &Repo) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.path.join("images"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != "refs")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn image_refs(repo: &Repo) -> Vec<String> {
    let mut v = Vec::new();
    let root = repo.path.join("images/refs");
    common::walk(&root, &mut |p| {
        if !p.is_dir() || p.is_symlink() {
            v.push(
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    });
    v.sort();
    v
}

/// A socket cannot go into a stored image: a clear error naming it, and no
/// image or ref is created. (`mkcomposefs` keeps sockets, as the C tool.)
#[test]
fn create_image_refuses_a_socket() {
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    write_file(&src.join("file"), b"x");
    std::fs::create_dir_all(src.join("run")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(src.join("run/the-socket")).unwrap();
    let err = repo.fail(&["create-image", src.to_str().unwrap(), "--name", "sock"]);
    assert_mentions(&err, &["the-socket"], "create-image with a socket");
    assert_mentions(&err, &["socket"], "create-image with a socket");
    assert!(
        image_refs(&repo).is_empty(),
        "refs: {:?}",
        image_refs(&repo)
    );
    assert!(
        image_entries(&repo).is_empty(),
        "images: {:?}",
        image_entries(&repo)
    );
    let refs = String::from_utf8(repo.ok(&["refs"])).unwrap();
    assert!(!refs.contains("sock"), "refs lists {refs}");

    let img = repo.scratch().join("sock.img");
    Invoker::Subcommand.ok(&repo.scratch(), &[src.as_os_str(), img.as_os_str()], None);
    let l = dump_line(&dump_file(&img), "/run/the-socket").clone();
    assert_eq!(
        l.st_mode() & 0o170000,
        0o140000,
        "mkcomposefs keeps the socket"
    );
}

/// Importing the same directory twice adds no objects and gives the same
/// image; gc keeps everything a ref reaches, and once the last ref to an
/// image is gone it removes the image and the objects only it used.
#[test]
fn gc_follows_image_refs_and_imports_deduplicate() {
    let repo = Repo::new();
    let a = repo.scratch().join("a");
    let b = repo.scratch().join("b");
    write_file(&a.join("shared"), &pseudo_random(1, 100_000));
    write_file(&a.join("only-a"), &pseudo_random(2, 100_000));
    write_file(&a.join("small"), b"inline");
    write_file(&b.join("shared"), &pseudo_random(1, 100_000));
    write_file(&b.join("only-b"), &pseudo_random(3, 100_000));

    let id_a = create(&repo, &a, Some("a"));
    let after_a = repo.objects();
    assert_eq!(
        after_a.len(),
        3,
        "two large files and the image: {after_a:?}"
    );
    assert!(
        after_a.iter().any(|(hex, _)| *hex == id_a),
        "the image is an object"
    );
    assert_eq!(
        create(&repo, &a, Some("a-again")),
        id_a,
        "same directory, same image"
    );
    assert_eq!(create(&repo, &a, None), id_a);
    assert_eq!(repo.objects(), after_a, "importing again added objects");

    let id_b = create(&repo, &b, Some("b"));
    assert_eq!(repo.object_count(), 5, "b adds its image and only-b");
    repo.assert_fsck_ok();

    // Every image is referenced: gc removes nothing.
    let before = repo.objects();
    repo.ok(&["gc"]);
    assert_eq!(repo.objects(), before);
    assert_eq!(image_entries(&repo).len(), 2);

    // Drop a's refs: its image and only-a go, shared stays (b uses it).
    std::fs::remove_file(repo.path.join("images/refs/a")).unwrap();
    repo.ok(&["gc"]);
    assert_eq!(repo.objects(), before, "a-again still refers to image a");
    std::fs::remove_file(repo.path.join("images/refs/a-again")).unwrap();
    let out = String::from_utf8(repo.ok(&["gc"])).unwrap();
    let left: Vec<String> = repo.objects().into_iter().map(|o| o.0).collect();
    assert_eq!(left.len(), 3, "after dropping a:\n{out}\nleft {left:?}");
    assert!(left.contains(&id_b) && !left.contains(&id_a), "{left:?}");
    assert_eq!(image_entries(&repo), vec![id_b.clone()]);
    repo.fail(&["dump", &id_a]);
    assert_eq!(
        parse_dump(&repo.ok(&["dump", "b"])).len(),
        3,
        "image b is intact"
    );
    repo.assert_fsck_ok();

    // And the last one.
    std::fs::remove_file(repo.path.join("images/refs/b")).unwrap();
    repo.ok(&["gc"]);
    assert_eq!(repo.object_count(), 0, "objects left: {:?}", repo.objects());
    assert!(image_entries(&repo).is_empty());
    repo.assert_fsck_ok();
}

/// fsck reports an object an image needs that is gone, and a damaged image
/// object; re-importing repairs the first.
#[test]
fn fsck_reports_missing_objects_and_damaged_images() {
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    write_file(&src.join("big"), &pseudo_random(1, 50_000));
    write_file(&src.join("sub/other"), &pseudo_random(2, 5_000));
    let id = create(&repo, &src, Some("img"));
    repo.assert_fsck_ok();

    let lines = parse_dump(&repo.ok(&["dump", "img"]));
    let l = dump_line(&lines, "/big");
    let obj_hex = l.digest.clone().expect("a digest for /big");
    let obj = repo
        .path
        .join("objects")
        .join(String::from_utf8(l.payload.clone().unwrap()).unwrap());
    let saved = std::fs::read(&obj).unwrap();
    std::fs::remove_file(&obj).unwrap();
    let (ok, text) = repo.fsck();
    assert!(!ok, "fsck passed with a missing object:\n{text}");
    assert!(
        text.contains(&obj_hex) && text.contains(&id[..16]),
        "fsck does not name the missing object {obj_hex} and image {id}:\n{text}"
    );
    // Importing the directory again puts the object back.
    create(&repo, &src, Some("img"));
    assert_eq!(std::fs::read(&obj).unwrap(), saved);
    repo.assert_fsck_ok();

    // Flip a byte in the image object.
    let img_obj = std::fs::canonicalize(repo.path.join("images/refs/img")).unwrap();
    let mut bytes = std::fs::read(&img_obj).unwrap();
    bytes[1200] ^= 0x40;
    let mut perms = std::fs::metadata(&img_obj).unwrap().permissions();
    perms.set_mode(0o644);
    std::fs::set_permissions(&img_obj, perms).unwrap();
    std::fs::write(&img_obj, &bytes).unwrap();
    let (ok, text) = repo.fsck();
    assert!(!ok, "fsck passed with a damaged image:\n{text}");
    assert!(
        text.contains(&id[..16]),
        "fsck does not name image {id}:\n{text}"
    );
    assert_mentions(&text, &["corrupt", "damaged"], "fsck of a damaged image");
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// Broken dumpfiles: an error naming the line (and no image written).
#[test]
fn bad_dumpfiles_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = "/ 0 40755 2 0 0 0 0.0 - - -\n";
    let file = "/a 0 100644 1 0 0 0 0.0 - - -\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "bad size",
            format!("{root}{file}/b zz 100644 1 0 0 0 0.0 - - -\n"),
            &["line 3"],
        ),
        (
            "bad mode",
            format!("{root}/b 0 1x0644 1 0 0 0 0.0 - - -\n"),
            &["line 2"],
        ),
        (
            "too few fields",
            format!("{root}{file}/c 0 100644\n"),
            &["line 3"],
        ),
        (
            "bad mtime",
            format!("{root}/b 0 100644 1 0 0 0 yesterday - - -\n"),
            &["line 2"],
        ),
        (
            "bad escape",
            format!("{root}/b\\q 0 100644 1 0 0 0 0.0 - - -\n"),
            &["line 2"],
        ),
        (
            "content length differs from size",
            format!("{root}/b 5 100644 1 0 0 0 0.0 - abc -\n"),
            &["line 2"],
        ),
        (
            "bad digest",
            format!("{root}/b 100 100644 1 0 0 0 0.0 ab/cd - nothex\n"),
            &["line 2"],
        ),
        (
            "dot-dot in a path",
            format!("{root}/../b 0 100644 1 0 0 0 0.0 - - -\n"),
            &["line 2"],
        ),
        (
            "hardlink to nothing",
            format!("{root}/b 0 @100644 1 0 0 0 0.0 /nothing - -\n"),
            &["nothing"],
        ),
        ("not a dumpfile", "hello world\n".to_string(), &["line 1"]),
        (
            "binary junk",
            "\x00\x01\x02\u{7f}\n".to_string(),
            &["line 1"],
        ),
    ];
    for (what, text, needles) in cases {
        let dump = tmp.path().join("bad.dump");
        std::fs::write(&dump, text).unwrap();
        let out = tmp.path().join("bad.img");
        let res = Invoker::Subcommand.run(
            tmp.path(),
            &[os("--from-file"), dump.as_os_str(), out.as_os_str()],
            None,
        );
        assert!(!res.status.success(), "{what}: accepted:\n{text}");
        let err = String::from_utf8_lossy(&res.stderr);
        assert_mentions(&err, needles, what);
        assert!(!out.exists(), "{what}: an image was written anyway");
        // The same from standard input.
        let err = Invoker::Subcommand.fail(
            tmp.path(),
            &[os("--from-file"), os("-"), os("-")],
            Some(text.as_bytes()),
        );
        assert_mentions(&err, needles, &format!("{what} (stdin)"));
    }
}

/// Sources and images that do not exist or are not what they should be.
#[test]
fn missing_and_wrong_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = Invoker::Subcommand;
    let t = tmp.path();
    let nowhere = t.join("does-not-exist");
    let err = inv.fail(t, &[nowhere.as_os_str(), os("-")], None);
    assert_mentions(
        &err,
        &["does-not-exist"],
        "mkcomposefs of a missing directory",
    );
    let err = inv.fail(t, &[os("--from-file"), nowhere.as_os_str(), os("-")], None);
    assert_mentions(
        &err,
        &["does-not-exist"],
        "mkcomposefs of a missing dumpfile",
    );
    // A file where a directory is expected.
    let dumpfile = fixture("simple.dump");
    let err = inv.fail(t, &[dumpfile.as_os_str(), os("-")], None);
    assert_mentions(
        &err,
        &["simple.dump"],
        "mkcomposefs of a file without --from-file",
    );
    // No destination, or a destination with --print-digest-only.
    let err = inv.fail(t, &[os("--from-file"), dumpfile.as_os_str()], None);
    assert_mentions(&err, &["image", "destination"], "no IMAGE");
    let err = inv.fail(
        t,
        &[
            os("--from-file"),
            os("--print-digest-only"),
            dumpfile.as_os_str(),
            os("x.img"),
        ],
        None,
    );
    assert_mentions(
        &err,
        &["print-digest-only"],
        "IMAGE with --print-digest-only",
    );
    assert!(!t.join("x.img").exists());
    // An unwritable destination.
    let err = inv.fail(
        t,
        &[
            os("--from-file"),
            dumpfile.as_os_str(),
            nowhere.join("sub/x.img").as_os_str(),
        ],
        None,
    );
    assert_mentions(&err, &["does-not-exist"], "unwritable destination");

    // Non-images for dump and ls.
    for (what, data) in [
        ("text", b"this is not an image\n".repeat(500)),
        ("empty", Vec::new()),
        ("zeros", vec![0u8; 65536]),
    ] {
        let f = t.join(format!("{what}.img"));
        std::fs::write(&f, &data).unwrap();
        for cmd in ["dump", "ls"] {
            let err = composefs_fail(&[os(cmd), f.as_os_str()]);
            assert_mentions(
                &err,
                &[
                    "not a composefs image",
                    "too small",
                    "truncated",
                    "short",
                    "magic",
                ],
                &format!("{cmd} of {what}"),
            );
        }
    }
    // A directory given as an image, and an image that is nowhere.
    let err = composefs_fail(&[os("dump"), t.as_os_str()]);
    assert_no_panic("dump DIR", &composefs(&[os("dump"), t.as_os_str()]));
    assert!(!err.is_empty());
    let repo = Repo::new();
    let err = repo.fail(&["dump", "no-such-image"]);
    assert_mentions(&err, &["no-such-image"], "dump of an unknown ref");
    let err = repo.fail(&["ls", "no-such-image"]);
    assert_mentions(&err, &["no-such-image"], "ls of an unknown ref");
    let err = repo.fail(&["create-image", nowhere.to_str().unwrap(), "--name", "x"]);
    assert_mentions(
        &err,
        &["does-not-exist"],
        "create-image of a missing directory",
    );
    assert!(image_refs(&repo).is_empty());
}

/// Truncated and damaged images: `dump` and `ls` end with an error or a
/// result, never a panic; cutting an image in half is always an error.
#[test]
fn truncated_and_corrupted_images_do_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("damaged.img");
    for name in ["simple", "xattrs", "hardlinks", "deep", "bigdir"] {
        for v in [0, 1] {
            let golden = read_fixture(&format!("{name}.v{v}.img"));
            let n = golden.len();
            for len in [
                0,
                1,
                31,
                32,
                1023,
                1024,
                1100,
                1151,
                1152,
                1200,
                4095,
                4096,
                4097,
                n / 2,
                n - 4096,
                n - 1,
            ] {
                std::fs::write(&f, &golden[..len]).unwrap();
                let out = composefs(&[os("dump"), f.as_os_str()]);
                if len <= n / 2 {
                    assert!(
                        !out.status.success(),
                        "{name} v{v} cut to {len} of {n} bytes: dump succeeded"
                    );
                    assert!(
                        !out.stderr.is_empty(),
                        "{name} v{v} cut to {len}: no message"
                    );
                }
                composefs(&[os("ls"), f.as_os_str(), os("/")]);
            }
            // Byte flips all over the metadata.
            let mut seed = 0x1234_5678u64 ^ (n as u64) ^ v;
            for _ in 0..25 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pos = (seed as usize) % n.min(32768);
                let mut img = golden.clone();
                img[pos] ^= 1 << ((seed >> 40) % 8);
                std::fs::write(&f, &img).unwrap();
                let out = composefs(&[os("dump"), f.as_os_str()]);
                if out.status.success() {
                    // Whatever it printed must be a well-formed dump.
                    parse_dump(&out.stdout);
                }
                composefs(&[os("ls"), f.as_os_str()]);
            }
        }
    }
}

/// `mount` without `--kernel`, and `mount --kernel` of an unknown image:
/// clear errors, nothing mounted.
#[test]
fn mount_errors() {
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    write_file(&src.join("f"), b"x");
    create(&repo, &src, Some("img"));
    let mnt = repo.scratch().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let err = repo.fail(&["mount", "no-such-ref", mnt.to_str().unwrap()]);
    assert_mentions(&err, &["no-such-ref"], "FUSE mount of an unknown ref");
    let err = repo.fail(&["mount", "--kernel", "no-such-ref", mnt.to_str().unwrap()]);
    assert_mentions(&err, &["no-such-ref"], "mount --kernel of an unknown ref");
    let err = repo.fail(&["mount", "--kernel", "refs/../x", mnt.to_str().unwrap()]);
    assert!(!err.is_empty());
    // Nothing is mounted there.
    let me = std::fs::metadata(&mnt).unwrap();
    let parent = std::fs::metadata(mnt.parent().unwrap()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(me.dev(), parent.dev(), "something got mounted");
}

/// An xattr field without `=` is an error, as in the C `mkcomposefs`
/// (`parse_xattr`: "Missing = in xattr") and composefs-rs; composefs-dump(5)
/// writes every xattr as KEY=VALUE, even an empty value (`user.x=`).
#[test]
fn dumpfile_xattr_without_equals_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "/ 0 40755 2 0 0 0 0.0 - - -\n/b 0 100644 1 0 0 0 0.0 - - - user.x\n";
    let res = Invoker::Subcommand.run(
        tmp.path(),
        &[os("--from-file"), os("-"), os("-")],
        Some(text.as_bytes()),
    );
    assert!(
        !res.status.success(),
        "a dumpfile xattr without '=' was accepted (as an empty value)"
    );
    assert_mentions(
        &String::from_utf8_lossy(&res.stderr),
        &["line 2"],
        "xattr without =",
    );
    // With the `=` it is fine.
    let text = text.replace("user.x", "user.x=");
    Invoker::Subcommand.ok(
        tmp.path(),
        &[os("--from-file"), os("-"), os("-")],
        Some(text.as_bytes()),
    );
}

/// The process umask, read without changing it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("Umask:"))
        .expect("Umask in /proc/self/status");
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

/// A new image file is created like the C tool's `fopen(IMAGE, "w")`
/// creates it: mode 0666 less the umask (it is read by `mount` and by
/// other users, as any filesystem image).
#[test]
fn new_image_file_gets_umask_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("new.img");
    Invoker::Subcommand.ok(
        tmp.path(),
        &[
            os("--from-file"),
            fixture("simple.dump").as_os_str(),
            img.as_os_str(),
        ],
        None,
    );
    let mode = std::fs::metadata(&img).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode,
        0o666 & !umask(),
        "a new image file has mode {mode:o}, not 0666 less the umask {:o}",
        umask()
    );
}

/// IMAGE naming a symlink (or a fifo, below): the C tool opens the path and
/// writes into it (through the symlink, into the pipe); the path is never
/// replaced by a regular file (as root, `mkcomposefs SRC /dev/stdout` or a
/// device path would otherwise be clobbered).
#[test]
fn image_destination_symlink_is_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dump = fixture("empty.dump");
    let golden = read_fixture("empty.v0.img");

    std::fs::create_dir(tmp.path().join("real")).unwrap();
    let link = tmp.path().join("link.img");
    symlink("real/target.img", &link).unwrap();
    Invoker::Subcommand.ok(
        tmp.path(),
        &[os("--from-file"), dump.as_os_str(), link.as_os_str()],
        None,
    );
    let still_link = std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink();
    let target = std::fs::read(tmp.path().join("real/target.img")).ok();
    assert!(
        still_link && target.as_deref() == Some(&golden[..]),
        "IMAGE is a symlink: still a symlink afterwards: {still_link}; \
         the image went to its target: {}",
        target.is_some()
    );
}

/// See [`image_destination_symlink_is_written_through`]: the same for a
/// fifo with a reader (the image is smaller than a pipe's buffer, so the
/// writer never waits, and the test cannot hang).
#[test]
fn image_destination_fifo_is_written_into() {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let tmp = tempfile::tempdir().unwrap();
    let dump = fixture("empty.dump");
    let golden = read_fixture("empty.v0.img");
    assert!(golden.len() < 65536);
    let fifo = tmp.path().join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    Invoker::Subcommand.ok(
        tmp.path(),
        &[os("--from-file"), dump.as_os_str(), fifo.as_os_str()],
        None,
    );
    let mut got = Vec::new();
    // The writer has exited: everything it wrote is in the pipe, then EOF.
    reader.read_to_end(&mut got).unwrap();
    let still_fifo = std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo();
    assert!(
        still_fifo && got == golden,
        "IMAGE is a fifo: still a fifo afterwards: {still_fifo}; \
         {} of {} image bytes came through the pipe",
        got.len(),
        golden.len()
    );
}

/// `ls` shows a directory's size as the image stores it (what `ls -l`
/// shows on the mounted image, and what `dump` prints), not 0.
#[test]
fn ls_shows_directory_sizes_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_dir(&src);
    let img = tmp.path().join("d.img");
    Invoker::Subcommand.ok(tmp.path(), &[src.as_os_str(), img.as_os_str()], None);
    let dumped = dump_line(&dump_file(&img), "/sub").size;
    assert!(dumped > 0, "dump shows /sub with size 0");
    let text = String::from_utf8(composefs_ok(&[os("ls"), img.as_os_str()])).unwrap();
    let sub = text
        .lines()
        .map(ls_fields)
        .find(|l| l.5 == "sub")
        .expect("sub in ls");
    assert_eq!(
        sub.4,
        dumped.to_string(),
        "ls shows directory /sub with size {}, the image (dump) says {dumped}",
        sub.4
    );
}

/// `ls IMAGE /file/` (a trailing slash on a non-directory) is an error, as
/// for ls(1) and the kernel ("Not a directory").
#[test]
fn ls_of_a_file_with_a_trailing_slash_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("s.img");
    Invoker::Subcommand.ok(
        tmp.path(),
        &[
            os("--from-file"),
            fixture("simple.dump").as_os_str(),
            img.as_os_str(),
        ],
        None,
    );
    composefs_ok(&[os("ls"), img.as_os_str(), os("/small.txt")]);
    let out = composefs(&[os("ls"), img.as_os_str(), os("/small.txt/")]);
    assert!(
        !out.status.success(),
        "ls /small.txt/ listed a regular file as a directory path:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A path longer than the kernel's PATH_MAX is stored: the kernel and FUSE
/// walk an image one name at a time, so PATH_MAX does not apply (the C
/// mkcomposefs has no such limit either). The deep cases are in
/// tests/bounds_deep.rs.
#[test]
fn paths_longer_than_path_max_are_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("/ 0 40755 2 0 0 0 0.0 - - -\n");
    let mut path = String::new();
    for i in 0..20 {
        path.push('/');
        path.push_str(&format!("d{i:02}").repeat(80));
        text.push_str(&format!("{path} 0 40755 2 0 0 0 0.0 - - -\n"));
    }
    let dump = tmp.path().join("deep.dump");
    std::fs::write(&dump, &text).unwrap();
    let img = tmp.path().join("deep.img");
    let out = common::composefs(
        &[
            os("mkcomposefs"),
            os("--from-file"),
            dump.as_os_str(),
            img.as_os_str(),
        ],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "a 4800-byte path was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = common::composefs(&[os("dump"), img.as_os_str()], None, &[]);
    assert!(out.status.success());
    let paths: Vec<&[u8]> = out
        .stdout
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.split(|&c| c == b' ').next().unwrap())
        .collect();
    assert_eq!(paths.len(), 21);
    assert_eq!(paths[20], path.as_bytes(), "the deepest path");
}
