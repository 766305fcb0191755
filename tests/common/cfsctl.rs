//! The oracle for the shared repository format: `cfsctl` from composefs-rs
//! 0.9.4 (crate `composefs-ctl`), installed by `scripts/deps.sh`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The version every compatibility test is checked against.
pub const VERSION: &str = "0.9.4";

/// Path of the `cfsctl` binary: `$CFSCTL`, else `$CARGO_HOME/bin/cfsctl`
/// (`~/.cargo/bin`), else `cfsctl` on `$PATH`. Panics when it is missing or
/// not 0.9.4: the compatibility tests are worthless against anything else.
pub fn path() -> PathBuf {
    let candidates = std::env::var_os("CFSCTL")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
                .map(|h| h.join("bin/cfsctl")),
        );
    let found = candidates
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("cfsctl"))
                    .find(|p| p.is_file())
            })
        })
        .expect("cfsctl is not installed: run scripts/deps.sh (cargo install --locked composefs-ctl@0.9.4)");
    let out = Command::new(&found)
        .arg("--version")
        .output()
        .expect("cannot run cfsctl --version");
    let v = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        v.trim(),
        format!("cfsctl {VERSION}"),
        "{} is not cfsctl {VERSION}",
        found.display()
    );
    found
}

/// Run `cfsctl ARGS`; returns the output whatever the exit status.
pub fn run(args: &[&OsStr]) -> Output {
    Command::new(path())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cannot run cfsctl")
}

/// Run `cfsctl --repo REPO ARGS` and return stdout; panics (with stderr) on failure.
pub fn ok(repo: &Path, args: &[&str]) -> String {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--repo"), repo.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let out = run(&all);
    assert!(
        out.status.success(),
        "cfsctl --repo {} {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        repo.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cfsctl printed non-UTF-8")
}
