//! What a user meets around the commands: shell completions (loaded by
//! bash, parsed by zsh), manual pages (rendered by `man -l`, one per
//! command), and log lines (none by default, more with -v / -vv /
//! RUST_LOG, none with -q; a FUSE daemon's `--log` file gets its own).

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{composefs, require_tool, run_tool};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(|a| os(a)).collect();
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, os(v))).collect();
    composefs(&args, None, &env)
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "composefs {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ostree(args: &[&str]) {
    let args: Vec<&OsStr> = args.iter().map(|a| os(a)).collect();
    run_tool("ostree", &args, Path::new("/"));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The commands `composefs [GROUP] --help` lists (not `help`).
fn commands(group: &[&str]) -> Vec<String> {
    let mut args = group.to_vec();
    args.push("--help");
    let help = text(&ok(&args, &[]).stdout);
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            let Some(name) = line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            else {
                break;
            };
            if !line.starts_with("   ") && name != "help" {
                out.push(name.to_string());
            }
        }
    }
    assert!(!out.is_empty(), "no commands in:\n{help}");
    out
}

#[test]
fn completions_load_in_bash_and_parse_in_zsh() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ok(&["completions", shell], &[]);
        assert!(out.stdout.len() > 1000, "{shell} completions are too short");
        let text = text(&out.stdout);
        for c in ["ostree", "mount", "completions"] {
            assert!(text.contains(c), "{shell} completions do not know `{c}`");
        }
        std::fs::write(dir.path().join(shell), &out.stdout).unwrap();
    }
    require_tool("bash");
    let script = format!(
        "source {} && complete -p composefs",
        dir.path().join("bash").display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("composefs"),
        "bash did not register the completion: {}",
        text(&out.stdout)
    );
    require_tool("zsh");
    let out = Command::new("zsh")
        .arg("-n")
        .arg(dir.path().join("zsh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zsh does not parse the completions: {}",
        text(&out.stderr)
    );
}

#[test]
fn man_pages_render_and_name_every_command() {
    require_tool("man");
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["man", dir.path().to_str().unwrap()], &[]);
    let listed = text(&out.stdout);
    let mut pages = vec!["composefs".to_string()];
    for c in commands(&[]) {
        pages.push(format!("composefs-{c}"));
        if c == "ostree" || c == "oci" {
            for s in commands(&[&c]) {
                pages.push(format!("composefs-{c}-{s}"));
            }
        }
    }
    assert!(pages.iter().any(|p| p == "composefs-ostree-pull"));
    let render = |p: &Path| {
        let out = Command::new("man")
            .arg("-l")
            .arg(p)
            .env("MANWIDTH", "100")
            .env("PAGER", "cat")
            .env("MANPAGER", "cat")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "man -l {} failed: {}",
            p.display(),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    for p in &pages {
        let file = dir.path().join(format!("{p}.1"));
        assert!(file.is_file(), "no manual page {p}.1");
        assert!(listed.contains(&format!("{p}.1")), "{p}.1 not printed");
        let shown = render(&file);
        assert!(
            shown.contains("NAME") && shown.contains("SYNOPSIS"),
            "{p}: {shown}"
        );
    }
    // The main page points to every command's page.
    let main = render(&dir.path().join("composefs.1"));
    for c in commands(&[]) {
        assert!(
            main.contains(&format!("composefs-{c}(1)")),
            "composefs(1) does not name composefs-{c}(1)"
        );
    }
    let pull = render(&dir.path().join("composefs-ostree-pull.1"));
    assert!(pull.contains("--jobs") || pull.contains("jobs"), "{pull}");
}

/// A local archive-mode ostree repository with one small commit on `main`.
fn ostree_source(dir: &Path) -> String {
    let repo = dir.join("src");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hello"), b"hello\n").unwrap();
    std::fs::write(tree.join("big"), vec![7u8; 100_000]).unwrap();
    let r = repo.to_str().unwrap();
    ostree(&["init", "--repo", r, "--mode=archive"]);
    ostree(&[
        "commit",
        "--repo",
        r,
        "--branch=main",
        "--owner-uid=0",
        "--owner-gid=0",
        tree.to_str().unwrap(),
    ]);
    r.to_string()
}

#[test]
fn logs_are_quiet_by_default_and_say_more_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let src = ostree_source(dir.path());
    let repo = |n: &str| {
        let p = dir.path().join(n);
        ok(&["--repo", p.to_str().unwrap(), "init"], &[]);
        p.to_str().unwrap().to_string()
    };

    // Default: a pull that works prints its result, nothing on stderr.
    let r1 = repo("r1");
    let out = ok(&["--repo", &r1, "ostree", "pull", &src, "main"], &[]);
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
    assert!(!out.stdout.is_empty());

    // -v: where from, what it resolved to, what was fetched.
    let r2 = repo("r2");
    let out = ok(&["-v", "--repo", &r2, "ostree", "pull", &src, "main"], &[]);
    let err = text(&out.stderr);
    for want in ["composefs: info: ", "source ", "is commit ", "fetched"] {
        assert!(err.contains(want), "-v lacks {want:?}:\n{err}");
    }
    assert!(!err.contains("debug:"), "-v says debug lines:\n{err}");
    // The same pull again: it says what it reuses.
    let out = ok(&["-v", "--repo", &r2, "ostree", "pull", &src, "main"], &[]);
    assert!(
        text(&out.stderr).contains("stored already"),
        "{}",
        text(&out.stderr)
    );

    // -vv and RUST_LOG=debug: each object.
    let r3 = repo("r3");
    let out = ok(&["-vv", "--repo", &r3, "ostree", "pull", &src, "main"], &[]);
    assert!(
        text(&out.stderr).contains("composefs: debug: ")
            && text(&out.stderr).contains("fetching file "),
        "{}",
        text(&out.stderr)
    );
    let r4 = repo("r4");
    let out = ok(
        &["--repo", &r4, "ostree", "pull", &src, "main"],
        &[("RUST_LOG", "debug")],
    );
    assert!(
        text(&out.stderr).contains("fetching file "),
        "{}",
        text(&out.stderr)
    );
    // RUST_LOG decides over -v.
    let r5 = repo("r5");
    let out = ok(
        &["-v", "--repo", &r5, "ostree", "pull", &src, "main"],
        &[("RUST_LOG", "error")],
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // A RUST_LOG that does not parse is a warning, which -q silences.
    let out = ok(
        &["--repo", &r1, "refs"],
        &[("RUST_LOG", "composefs=[bogus")],
    );
    assert!(
        text(&out.stderr).starts_with("composefs: warning: RUST_LOG="),
        "{}",
        text(&out.stderr)
    );
    let out = ok(
        &["-q", "--repo", &r1, "refs"],
        &[("RUST_LOG", "composefs=[bogus")],
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // Errors stay errors, whatever the level.
    let out = run(
        &["-q", "--repo", &r1, "ostree", "pull", &src, "nosuchref"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("composefs: error: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_detached_daemon_logs_to_its_file() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the FUSE tests need root (CI runs them as root)"
    );
    require_tool("fusermount3");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = repo.to_str().unwrap();
    ok(&["--repo", r, "init"], &[]);
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), vec![1u8; 10_000]).unwrap();
    ok(
        &[
            "--repo",
            r,
            "create-image",
            "--name",
            "t",
            tree.to_str().unwrap(),
        ],
        &[],
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = dir.path().join("daemon.log");
    let out = ok(
        &[
            "-v",
            "--repo",
            r,
            "mount",
            "--log",
            log.to_str().unwrap(),
            "t",
            mnt.to_str().unwrap(),
        ],
        &[],
    );
    // The command's own line goes to its stderr; the daemon's to the file.
    assert!(
        text(&out.stderr).contains("composefs: info: mounting "),
        "{}",
        text(&out.stderr)
    );
    let content = std::fs::read(mnt.join("f"));
    let un = run(&["umount", mnt.to_str().unwrap()], &[]);
    assert_eq!(content.unwrap(), vec![1u8; 10_000]);
    assert!(un.status.success(), "{}", text(&un.stderr));
    let logged = std::fs::read_to_string(&log).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("composefs: info: serving "))
        .unwrap_or_else(|| panic!("no serving line in the log:\n{logged}"));
    // Lines in a log file carry their UTC time: 2026-12-07T00:00:00.000Z.
    let stamp = line.split(' ').next().unwrap();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "no timestamp on {line:?}"
    );
}

/// `mount --kernel`, `ls`, `dump`, `cat` and `show` take every name `mount`
/// takes: `images/NAME`, `ostree/NAME`, `commits/CHECKSUM`, a bare name.
#[test]
fn every_command_takes_every_name() {
    assert!(
        rustix::process::geteuid().is_root(),
        "kernel mounts need root (CI runs the tests as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let src = ostree_source(dir.path());
    let repo = dir.path().join("repo");
    let r = repo.to_str().unwrap();
    ok(&["--repo", r, "init"], &[]);
    ok(&["--repo", r, "ostree", "pull", &src, "main"], &[]);
    let tree = dir.path().join("tree");
    ok(
        &[
            "--repo",
            r,
            "create-image",
            "--name",
            "img",
            tree.to_str().unwrap(),
        ],
        &[],
    );
    let list = text(&ok(&["--repo", r, "ostree", "list"], &[]).stdout);
    let checksum = list.split_whitespace().nth(1).unwrap().to_string();
    let commits = format!("commits/{checksum}");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for (names, file) in [
        (vec!["img", "images/img"], "/etc/hello"),
        (vec!["main", "ostree/main", commits.as_str()], "/etc/hello"),
    ] {
        let dumps: Vec<String> = names
            .iter()
            .map(|n| text(&ok(&["--repo", r, "dump", n], &[]).stdout))
            .collect();
        for (n, d) in names.iter().zip(&dumps) {
            assert_eq!(d, &dumps[0], "dump {n} differs from dump {}", names[0]);
            assert!(d.contains("/etc/hello 6 100644"), "dump {n}:\n{d}");
            let ls = text(&ok(&["--repo", r, "ls", n, "/etc"], &[]).stdout);
            assert!(ls.contains("hello"), "ls {n}: {ls}");
            let cat = ok(&["--repo", r, "cat", &format!("{n}:{file}")], &[]);
            assert_eq!(cat.stdout, b"hello\n", "cat {n}:{file}");
            ok(&["--repo", r, "show", n], &[]);
            ok(
                &["--repo", r, "mount", "--kernel", n, mnt.to_str().unwrap()],
                &[],
            );
            let read = std::fs::read(mnt.join("etc/hello"));
            let big = std::fs::read(mnt.join("big"));
            let un = run(&["umount", mnt.to_str().unwrap()], &[]);
            assert!(un.status.success(), "{}", text(&un.stderr));
            assert_eq!(read.unwrap(), b"hello\n", "mount --kernel {n}");
            assert_eq!(big.unwrap(), vec![7u8; 100_000], "mount --kernel {n}");
        }
    }
    // A name that is nothing stays an error naming it.
    let out = run(&["--repo", r, "dump", "images/nope"], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}
