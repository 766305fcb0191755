//! The C composefs 1.0.8 test suite, run as upstream runs it, against its
//! own tools and against ours; and dumpfile edge cases judged by the C
//! `mkcomposefs` (the oracle, from `scripts/c-composefs.sh`).
//!
//! Upstream's `tests/test-checksums.sh BINDIR ASSETS LIST` builds every
//! asset with `BINDIR/mkcomposefs` (strict parsing, `--min/max-version`
//! from `.version` files), checks the image's sha256 against the asset's
//! `.sha256`, runs `fsck.erofs`, and rebuilds it from `composefs-dump` and
//! from `composefs-info dump`; `test-should-fail.sh` expects every
//! `should-fail-*` refused. BINDIR here is a folder of small wrappers
//! naming either tool set; the asset lists come from upstream's
//! `tests/meson.build`.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{bin, ctools};

/// The quoted names of the meson list that starts with `head` (`x = [`).
fn meson_list(meson: &str, head: &str) -> Vec<String> {
    let start = meson
        .find(head)
        .unwrap_or_else(|| panic!("no list {head} in tests/meson.build"));
    let body = &meson[start..];
    let body = &body[..body.find(']').expect("unterminated list")];
    body.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// (assets to check, assets that must fail), as upstream's meson.build
/// lists them.
fn asset_lists() -> (Vec<String>, Vec<String>) {
    let meson = std::fs::read_to_string(ctools::upstream_tests().join("meson.build")).unwrap();
    let mut checked = meson_list(&meson, "test_assets_small = [");
    let big = meson_list(&meson, "test_assets = test_assets_small + [");
    checked.extend(big);
    let fail = meson_list(&meson, "test_assets_should_fail = [");
    assert!(
        checked.len() >= 15 && fail.len() >= 14,
        "{checked:?} {fail:?}"
    );
    (checked, fail)
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A BINDIR for upstream's scripts: `mkcomposefs`, `composefs-info` and
/// `composefs-dump` (image → image through the dump text, in the image's
/// format version; upstream's is a test-only binary Debian does not ship).
fn bindir(dir: &Path, ours: bool) -> PathBuf {
    let d = dir.join(if ours { "ours" } else { "c" });
    std::fs::create_dir_all(&d).unwrap();
    let (mk, info) = if ours {
        (
            format!("{} mkcomposefs \"$@\"", bin()),
            format!("[ \"$1\" = dump ] && shift && exec {} dump \"$@\"", bin()),
        )
    } else {
        (
            format!("{} \"$@\"", ctools::mkcomposefs().display()),
            format!("{} \"$@\"", ctools::composefs_info().display()),
        )
    };
    write_script(&d.join("mkcomposefs"), &format!("exec {mk}"));
    write_script(&d.join("composefs-info"), &info);
    // Rewritten in the image's own format version (the u32 at byte 12 of
    // the composefs header), as upstream's composefs-dump keeps it.
    write_script(
        &d.join("composefs-dump"),
        &format!(
            "v=$(od -An -tu4 -j12 -N4 \"$1\" | tr -d ' ')\n\
             {} dump \"$1\" | {} --min-version=$v --max-version=$v --from-file - \"$2\"",
            d.join("composefs-info").display(),
            d.join("mkcomposefs").display()
        ),
    );
    d
}

fn run_upstream(script: &str, args: &[&OsStr]) -> Output {
    Command::new("bash")
        .arg(ctools::upstream_tests().join(script))
        .args(args)
        .env_remove("CFS_PARSE_STRICT")
        .env_remove("VALGRIND_PREFIX")
        .output()
        .unwrap()
}

fn checksums_pass(ours: bool) {
    common::require_tool("fsck.erofs");
    let tmp = tempfile::tempdir().unwrap();
    let bindir = bindir(tmp.path(), ours);
    let (checked, _) = asset_lists();
    let assets = ctools::upstream_tests().join("assets");
    let present: Vec<&String> = checked
        .iter()
        .filter(|a| assets.join(a).is_file())
        .collect();
    // Debian's source tarball leaves out three fuzzing assets; the rest
    // must all be there.
    assert!(present.len() >= 13, "assets missing: {present:?}");
    let list = present
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let out = run_upstream(
        "test-checksums.sh",
        &[bindir.as_os_str(), assets.as_os_str(), OsStr::new(&list)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "test-checksums.sh with {} tools failed:\n{text}\n{}",
        if ours { "our" } else { "the C" },
        String::from_utf8_lossy(&out.stderr)
    );
    for a in &present {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("ok {a} "))),
            "no `ok {a}` in:\n{text}"
        );
    }
    // The nonstrict assets really were parsed leniently, the others strictly.
    assert!(text.contains("ok honggfuzz-longlink-unterminated.dump (CFS_PARSE_STRICT=0)"));
    assert!(text.contains("ok special.dump (CFS_PARSE_STRICT=1)"));
}

#[test]
fn upstream_checksums_with_our_tools() {
    checksums_pass(true);
}

#[test]
fn upstream_checksums_with_the_c_tools() {
    checksums_pass(false);
}

fn should_fail_pass(ours: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let bindir = bindir(tmp.path(), ours);
    let (_, fail) = asset_lists();
    let assets = ctools::upstream_tests().join("assets");
    let mut args = vec![bindir.into_os_string()];
    args.extend(fail.iter().map(|f| assets.join(f).into_os_string()));
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = run_upstream("test-should-fail.sh", &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "test-should-fail.sh failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        fail.len(),
        "{text}"
    );
}

#[test]
fn upstream_should_fail_with_our_tools() {
    should_fail_pass(true);
}

#[test]
fn upstream_should_fail_with_the_c_tools() {
    should_fail_pass(false);
}

/// Our error for each should-fail asset names what is wrong.
#[test]
fn should_fail_errors_name_the_problem() {
    let assets = ctools::upstream_tests().join("assets");
    let want: &[(&str, &str)] = &[
        ("should-fail-big-inline.dump", "CONTENT of 5004 bytes"),
        (
            "should-fail-dir-hardlink.dump",
            "directories cannot be hardlinked",
        ),
        ("should-fail-dot-name.dump", "\".\" is reserved"),
        ("should-fail-dotdot-name.dump", "\"..\" is reserved"),
        (
            "should-fail-empty-link-name.dump",
            "symlink without a target",
        ),
        ("should-fail-empty-name.dump", "empty file name"),
        ("should-fail-empty-xattr-key.dump", "empty xattr name"),
        (
            "should-fail-honggfuzz-long-xattr.dump",
            "more than 32767 bytes",
        ),
        ("should-fail-long-link.dump", "longer than 4095"),
        ("should-fail-long-xattr-key.dump", "too many xattrs"),
        ("should-fail-long-xattr-value.dump", "unknown file type"),
        ("should-fail-no-ftype.dump", "unknown file type"),
        ("should-fail-self-hardlink.dump", "loop"),
        ("should-fail-too-big.dump", "chunks"),
    ];
    for (asset, words) in want {
        let out = Command::new(bin())
            .args(["mkcomposefs", "--print-digest-only", "--from-file"])
            .arg(assets.join(asset))
            .output()
            .unwrap();
        common::assert_no_panic(asset, &out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{asset} accepted");
        assert!(
            err.contains(words),
            "{asset}: {err:?} does not say {words:?}"
        );
        assert!(
            err.contains("line ") || *asset == "should-fail-too-big.dump",
            "{asset}: {err}"
        );
    }
}

/// Build `dump` with a tool; `Ok(image bytes)` or `Err(stderr)`.
fn build(ours: bool, dump: &[u8], strict: bool, args: &[&str]) -> Result<Vec<u8>, String> {
    let tmp = tempfile::tempdir().unwrap();
    let (input, img) = (tmp.path().join("in.dump"), tmp.path().join("out.img"));
    std::fs::write(&input, dump).unwrap();
    let mut cmd = if ours {
        let mut c = Command::new(bin());
        c.arg("mkcomposefs");
        c
    } else {
        ctools::mkcomposefs_cmd()
    };
    cmd.env_remove("CFS_PARSE_STRICT");
    if strict {
        cmd.env("CFS_PARSE_STRICT", "1");
    }
    let out = cmd
        .args(args)
        .arg("--from-file")
        .arg(&input)
        .arg(&img)
        .output()
        .unwrap();
    if ours {
        common::assert_no_panic("mkcomposefs", &out);
    }
    if out.status.success() {
        Ok(std::fs::read(&img).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const ROOT: &str = "/ 0 40755 2 0 0 0 0.0 - - -\n";

/// Dumpfiles at the edges of what the C parser takes: both tools agree on
/// accepting or refusing each, in both modes, and accepted ones give the
/// same bytes in both format versions.
#[test]
fn edge_cases_agree_with_c() {
    let body: &[&str] = &[
        // Fields missing at the end, numbers as strtoull reads them.
        "/a 0 100644 1 0 0 0 0.0",
        "/a 0 100644 1 0 0 0 0.0 - -",
        "/a 0 100644 1 0 0",
        "/a 0 +100644 1 0 -1 0 0.0 - - -",
        "/a 0 100644 1 4294967297 0 0 0.0 - - -",
        "/a 0 100644 1 0 0 0 99999999999999999999.5 - - -",
        "/a 0 100644 1 0 0 0 1.4294967297 - - -",
        "/a 0 100644 1 0 0 0 1.999999999 - - -",
        "/a 0 100644 1 0 0 0 -5.7 - - -",
        "/a 0 100644 1 0 0 0 5 - - -",
        "/a 0 100644 1 0 0 0 .5 - - -",
        "/a 0 100644 1 0 0 0 x.5 - - -",
        "/a 0 1100644 1 0 0 0 0.0 - - -",
        "/a 0 100648 1 0 0 0 0.0 - - -",
        "/a 0 0644 1 0 0 0 0.0 - - -",
        "/a x 100644 1 0 0 0 0.0 - - -",
        // Paths.
        "//a 0 100644 1 0 0 0 0.0 - - -",
        "a 0 100644 1 0 0 0 0.0 - - -",
        "/a/ 0 100644 1 0 0 0 0.0 - - -",
        "/a\\x00b 0 100644 1 0 0 0 0.0 - - -",
        "/a\\x2fb 0 100644 1 0 0 0 0.0 - - -",
        "/\\x2e 0 100644 1 0 0 0 0.0 - - -",
        // Fields C ignores for a kind, and ones it uses.
        "/d 4096 40755 2 0 0 7 0.0 payload content 00 user.x=1",
        "/c 0 20644 1 0 0 1025 0.0 p - 00",
        "/c 0 20644 1 0 0 0 0.0 - - -",
        "/f 3 100644 1 0 0 9 0.0 backing abc 00",
        "/f 3 100644 1 0 0 0 0.0 - ab -",
        "/f 0 100644 1 0 0 0 0.0 - - -",
        "/f 0 100644 1 0 0 0 0.0 - \\x2d -",
        "/f 5 100644 1 0 0 0 0.0 x\\x00y - -",
        "/f 5 100644 1 0 0 0 0.0 - - 0000000000000000000000000000000000000000000000000000000000000000",
        &format!("/f 5 100644 1 0 0 0 0.0 - - {}zz", "0f".repeat(32)),
        "/l 0 120777 1 0 0 0 0.0 target - -",
        "/l 6 120777 1 0 0 0 0.0 target - -",
        "/l 6 120777 1 0 0 0 0.0 target xx -",
        "/l 2 120777 1 0 0 0 0.0 ab\\x00cd - -",
        "/l 0 120777 1 0 0 0 0.0 - - -",
        "/p 0 10644 1 0 0 3 0.0 - - -",
        "/s 0 140644 1 0 0 0 0.0 - - -",
        // Xattrs.
        "/a 0 100644 1 0 0 0 0.0 - - - user.a=1 user.a=2",
        "/a 0 100644 1 0 0 0 0.0 - - - user.a=1 user\\x00b=2",
        "/a 0 100644 1 0 0 0 0.0 - - - =1",
        "/a 0 100644 1 0 0 0 0.0 - - - user.a",
        "/a 0 100644 1 0 0 0 0.0 - - - trusted.overlay.x=1 user.overlay.y=2",
        // Hardlinks: before their target, chains, declared NLINK.
        "/h 0 @100644 1 0 0 0 0.0 /z - -\n/z 3 100644 2 0 0 0 0.0 - abc -",
        "/h 0 @100644 1 0 0 0 0.0 z/ - -\n/z 3 100644 1 0 0 0 0.0 - abc -",
        "/h 0 @100644 1 0 0 0 0.0 //z - -\n/z 3 100644 9 0 0 0 0.0 - abc -",
        "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /c - -\n/c 1 100644 3 0 0 0 0.0 - x -",
        "/d 0 40755 2 0 0 0 0.0 - - -\n/d/h 0 @100644 1 0 0 0 0.0 /z - -\n/z 3 100644 2 0 0 0 0.0 - abc -",
        "/h 0 @100644 1 0 0 0 0.0 /nope - -",
        "/h 0 @100644 1 0 0 0 0.0 /h - -",
        "/h 0 @0 1 0 0 0 0.0 /z - -\n/z 3 100644 2 0 0 0 0.0 - abc -",
        "/h x @100644 x x x x x /z - -\n/z 3 100644 2 0 0 0 0.0 - abc -",
        "/h 0 @120777 1 0 0 0 0.0 /z - -\n/z 3 100644 2 0 0 0 0.0 - abc -",
    ];
    let mut checked = 0;
    for lines in body {
        let text = format!("{ROOT}{lines}\n");
        for strict in [false, true] {
            for version in [
                ["--min-version=0", "--max-version=0"],
                ["--min-version=1", "--max-version=1"],
            ] {
                let c = build(false, text.as_bytes(), strict, &version);
                let o = build(true, text.as_bytes(), strict, &version);
                match (&c, &o) {
                    (Ok(c), Ok(o)) => assert!(
                        c == o,
                        "{text:?} (strict {strict}, {version:?}): images differ"
                    ),
                    (Err(_), Err(_)) => {}
                    _ => panic!(
                        "{text:?} (strict {strict}, {version:?}): C {} but ours {}",
                        if c.is_ok() { "accepts" } else { "refuses" },
                        match &o {
                            Ok(_) => "accepts".to_string(),
                            Err(e) => format!("refuses: {e}"),
                        }
                    ),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, body.len() * 4);
}

/// What C writes an image for but we refuse, on purpose: each would be a
/// broken or nondeterministic image. If the C tool changes its mind, so
/// should this list.
#[test]
fn deliberate_refusals() {
    let cases: &[(&str, &str)] = &[
        ("/h 0 @100644 1 0 0 0 0.0 / - -", "root directory"),
        (
            "/d 0 40755 2 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /d - -",
            "is a directory",
        ),
        ("/f -1 100644 1 0 0 0 0.0 - - -", "too large"),
        ("/f 0 100644 1 0 0 0 0.4000000000 - - -", "nanoseconds"),
        ("/f 100 100644 1 0 0 0 0.0 - - abc", "DIGEST"),
    ];
    for (lines, words) in cases {
        let text = format!("{ROOT}{lines}\n");
        assert!(
            build(false, text.as_bytes(), false, &[]).is_ok(),
            "C now refuses {lines:?}"
        );
        let e = build(true, text.as_bytes(), false, &[]).expect_err(lines);
        assert!(e.contains(words), "{lines:?}: {e}");
    }
    // A DIGEST of exactly 128 hex digits is a sha512 digest here (what our
    // dumps and composefs-rs's of sha512 repositories print), written as a
    // sha512 metacopy; C reads its first 64 digits as a sha256 digest.
    let text = format!("{ROOT}/f 5 100644 1 0 0 0 0.0 - - {}\n", "ab".repeat(64));
    let c = build(false, text.as_bytes(), false, &[]).unwrap();
    let ours = build(true, text.as_bytes(), false, &[]).unwrap();
    assert!(c != ours, "C now writes a sha512 digest as we do");
}

/// `composefs dump` prints what `composefs-info dump` prints, for the C
/// image of every upstream asset.
#[test]
fn our_dump_of_c_images_matches_composefs_info() {
    let (checked, _) = asset_lists();
    let assets = ctools::upstream_tests().join("assets");
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for a in checked.iter().filter(|a| assets.join(a).is_file()) {
        let mut text = std::fs::read(assets.join(a)).unwrap();
        if a.ends_with(".gz") {
            text = common::sh(tmp.path(), &format!("zcat {}", assets.join(a).display()));
        }
        let version = std::fs::read_to_string(assets.join(format!("{a}.version"))).ok();
        let v: Vec<String> = version
            .iter()
            .flat_map(|v| {
                [
                    format!("--min-version={}", v.trim()),
                    format!("--max-version={}", v.trim()),
                ]
            })
            .collect();
        let v: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
        let img = tmp.path().join("c.img");
        std::fs::write(&img, build(false, &text, false, &v).unwrap()).unwrap();
        let c = Command::new(ctools::composefs_info())
            .arg("dump")
            .arg(&img)
            .output()
            .unwrap();
        assert!(c.status.success(), "composefs-info dump {a}");
        let ours = Command::new(bin()).arg("dump").arg(&img).output().unwrap();
        assert!(
            ours.status.success(),
            "composefs dump {a}: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert!(c.stdout == ours.stdout, "{a}: dumps differ");
        n += 1;
    }
    assert!(n >= 13);
}
