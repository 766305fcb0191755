//! `composefs mkcomposefs DIR` of a real root filesystem against the C
//! `mkcomposefs` 1.0.8 (from `scripts/c-composefs.sh`): byte-identical
//! images with every option, and the same `--digest-store`.
//!
//! The tree is Debian bookworm from `debootstrap --variant=minbase`, built
//! once by `benches/rootfs.sh` (which `.ci/run` runs) into
//! `target/bench-data/bookworm-minbase`, or `$COMPOSEFS_ROOTFS`: nobody
//! here wrote it. It has what real systems have and synthetic trees
//! forget: hardlinks (perl, gzip's tools), device nodes in /dev, setuid
//! binaries, capability-free xattr-free files next to thousands of small
//! ones, and absolute and relative symlinks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, ctools};

fn rootfs() -> PathBuf {
    let dir = std::env::var_os("COMPOSEFS_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/bookworm-minbase")
        });
    assert!(
        dir.join(".bench-complete").is_file() || std::env::var_os("COMPOSEFS_ROOTFS").is_some(),
        "no root filesystem at {}: run benches/rootfs.sh as root (debootstrap minbase bookworm, about 4 minutes), or set COMPOSEFS_ROOTFS",
        dir.display()
    );
    dir
}

/// Build the image of `src` with both tools and the same `args`; returns
/// (C image, our image).
fn both(src: &Path, tmp: &Path, args: &[String]) -> (Vec<u8>, Vec<u8>) {
    let c_img = tmp.join("c.img");
    let o_img = tmp.join("ours.img");
    let out = ctools::mkcomposefs_cmd()
        .args(args)
        .arg(src)
        .arg(&c_img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "C mkcomposefs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .arg("mkcomposefs")
        .args(args)
        .arg(src)
        .arg(&o_img)
        .output()
        .unwrap();
    common::assert_no_panic("mkcomposefs", &out);
    assert!(
        out.status.success(),
        "composefs mkcomposefs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (std::fs::read(c_img).unwrap(), std::fs::read(o_img).unwrap())
}

fn dumps(tmp: &Path) -> (Vec<u8>, Vec<u8>) {
    let c = Command::new(ctools::composefs_info())
        .arg("dump")
        .arg(tmp.join("c.img"))
        .output()
        .unwrap();
    let o = Command::new(bin())
        .arg("dump")
        .arg(tmp.join("ours.img"))
        .output()
        .unwrap();
    (c.stdout, o.stdout)
}

/// The first line where two dumps differ, for the message.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    a.lines()
        .zip(b.lines())
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("C:    {x}\nours: {y}"))
        .unwrap_or_else(|| "dumps equal (the difference is in layout)".to_string())
}

#[test]
fn rootfs_images_are_byte_identical() {
    common::require_tool("fsck.erofs");
    let src = rootfs();
    // The tree really has what the comparison is about.
    let links = common::sh(
        &src,
        "find . -xdev -type f -links +1 | wc -l; find . -xdev \\( -type c -o -type b \\) | wc -l",
    );
    let counts: Vec<u64> = String::from_utf8_lossy(&links)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(counts[0] >= 2, "no hardlinked files in {}", src.display());
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[&[&str]] = &[
        &[],
        &["--min-version=0", "--max-version=0"],
        &["--min-version=1", "--max-version=1"],
        &["--use-epoch"],
        &["--skip-xattrs"],
        &["--user-xattrs"],
        &["--skip-devices"],
        &["--use-epoch", "--skip-devices", "--min-version=1"],
    ];
    for args in cases {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (c, o) = both(&src, tmp.path(), &args);
        if c != o {
            let (dc, d_o) = dumps(tmp.path());
            panic!(
                "mkcomposefs {args:?} of {}: images differ ({} vs {} bytes)\n{}",
                src.display(),
                c.len(),
                o.len(),
                first_difference(&dc, &d_o)
            );
        }
        let fsck = Command::new("fsck.erofs")
            .arg(tmp.path().join("ours.img"))
            .output()
            .unwrap();
        assert!(fsck.status.success(), "fsck.erofs {args:?}");
        let (dc, d_o) = dumps(tmp.path());
        assert!(dc == d_o, "dumps differ:\n{}", first_difference(&dc, &d_o));
    }
}

/// Every file listed with its size and mode, relative to `dir`.
fn listing(dir: &Path) -> Vec<u8> {
    common::sh(dir, "find . -printf '%p %y %s %m\\n' | LC_ALL=C sort")
}

#[test]
fn rootfs_digest_store_is_the_same() {
    let src = rootfs();
    let tmp = tempfile::tempdir().unwrap();
    let c_store = tmp.path().join("c-store");
    let o_store = tmp.path().join("o-store");
    let out = ctools::mkcomposefs_cmd()
        .arg(format!("--digest-store={}", c_store.display()))
        .arg(&src)
        .arg(tmp.path().join("c.img"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .arg("mkcomposefs")
        .arg(format!("--digest-store={}", o_store.display()))
        .arg(&src)
        .arg(tmp.path().join("ours.img"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(tmp.path().join("c.img")).unwrap()
            == std::fs::read(tmp.path().join("ours.img")).unwrap(),
        "images with --digest-store differ"
    );
    let (lc, lo) = (listing(&c_store), listing(&o_store));
    assert!(lc == lo, "stores differ:\n{}", first_difference(&lc, &lo));
    assert!(lc.len() > 100_000, "a store of a few files only");
    // Every stored object is named by its content's fs-verity digest.
    let objects = common::sh(&o_store, "find . -type f -name '[0-3]*' -path './0*'");
    for rel in String::from_utf8_lossy(&objects).lines() {
        let p = o_store.join(rel);
        let name = rel.trim_start_matches("./").replace('/', "");
        assert_eq!(common::fsverity_digest("sha256", &p), name, "{rel}");
    }
}
