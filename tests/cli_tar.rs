//! `composefs import-tar` / `cat`: byte-exact round trips of real GNU tar
//! archives (plain, gzip, zstd, stdin), object naming and deduplication, and
//! refusal of bad input (sparse, truncated, corrupt, garbage, bad ref names).

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

// ---------------------------------------------------------------------------
// Building trees and archives
// ---------------------------------------------------------------------------

fn setfattr(path: &Path, name: &str, value: &str) {
    run_tool(
        "setfattr",
        &[
            OsStr::new("-n"),
            OsStr::new(name),
            OsStr::new("-v"),
            OsStr::new(value),
            path.as_os_str(),
        ],
        Path::new("/"),
    );
}

/// The deep nested directory used by [`make_tree`] (path > 255 bytes).
fn deep_dir() -> PathBuf {
    let mut p = PathBuf::from("deep");
    for i in 0..6 {
        p.push(format!("level{i}-{}", "x".repeat(54)));
    }
    p
}

/// Regular files of every interesting size, long names, links, devices, odd
/// names and user xattrs.
fn make_tree(root: &Path) {
    require_tool("mknod");
    require_tool("mkfifo");
    std::fs::create_dir_all(root).unwrap();
    let sizes: [(&str, usize); 6] = [
        ("empty", 0),
        ("one", 1),
        ("s64", 64),
        ("s65", 65),
        ("s4096", 4096),
        ("big", (1 << 20) + 3),
    ];
    for (i, (name, size)) in sizes.iter().enumerate() {
        write_file(&root.join(name), &pseudo_random(i as u64 + 1, *size));
    }
    // Same content under another name: one object.
    write_file(&root.join("s4096-copy"), &pseudo_random(5, 4096));

    // Long names: one 200-byte component, one 255-byte component, and a
    // deep path well over 255 bytes.
    write_file(&root.join("L".repeat(200)), &pseudo_random(20, 100));
    write_file(&root.join("n".repeat(255)), &pseudo_random(21, 70));
    let deep = deep_dir();
    assert!(deep.as_os_str().len() > 255);
    let leaf = deep.join(format!(
        "leaf-file-with-a-rather-long-name-{}.bin",
        "y".repeat(40)
    ));
    write_file(&root.join(&leaf), &pseudo_random(22, 5000));
    write_file(
        &root.join(deep.join("tiny")),
        b"tiny file in a deep directory",
    );

    // Hard links (one whose target name needs a GNU long-link record).
    std::fs::hard_link(root.join("s65"), root.join("hardlink-to-s65")).unwrap();
    std::fs::hard_link(root.join(&leaf), root.join("hl-to-deep-leaf")).unwrap();
    std::fs::hard_link(root.join("big"), root.join(deep.join("hl-to-big"))).unwrap();

    // Symbolic links, including long and dangling targets.
    symlink("s65", root.join("sym-short")).unwrap();
    symlink(
        format!("../{}target", "t/".repeat(150)),
        root.join("sym-long-target"),
    )
    .unwrap();
    symlink("L".repeat(200), root.join("sym-to-long-name")).unwrap();
    symlink(&leaf, root.join("sym-to-deep")).unwrap();

    // Devices and a fifo.
    sh(root, "mknod chr c 1 3 && mknod blk b 7 0 && mkfifo fifo");

    // An empty directory, and a directory holding only an empty directory.
    std::fs::create_dir_all(root.join("emptydir")).unwrap();
    std::fs::create_dir_all(root.join("nest/inner-empty")).unwrap();

    // Odd names.
    let odd: [(&str, usize); 8] = [
        ("with space.txt", 80),
        ("new\nline", 10),
        ("back\\slash", 100),
        ("-leading-dash", 65),
        ("tab\tname", 3),
        ("ünïcødé-日本語-🙂.bin", 3000),
        ("quote'\"*?[]{}$", 66),
        (" leading space", 5),
    ];
    for (i, (name, size)) in odd.iter().enumerate() {
        write_file(&root.join(name), &pseudo_random(100 + i as u64, *size));
    }

    // User xattrs (stored only by the PAX format with --xattrs).
    setfattr(&root.join("s65"), "user.greeting", "hello");
    setfattr(&root.join("big"), "user.binary", "0x00ff10");
    setfattr(&root.join("big"), "user.long", &"v".repeat(2000));
    setfattr(&root.join("emptydir"), "user.dirattr", "on a directory");
    setfattr(&root.join("-leading-dash"), "user.empty", "");
}

/// A small tree that every tar format (v7 and ustar too) can hold.
fn make_simple_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for (i, size) in [0usize, 1, 64, 65, 511, 512, 513, 4096, 70000]
        .iter()
        .enumerate()
    {
        write_file(
            &root.join(format!("sub/f{size}")),
            &pseudo_random(300 + i as u64, *size),
        );
    }
    symlink("sub/f65", root.join("link")).unwrap();
    std::fs::hard_link(root.join("sub/f4096"), root.join("hard")).unwrap();
}

fn gzip_file(input: &Path) -> PathBuf {
    let out = input.with_extension("tar.gz");
    let data = run_tool(
        "gzip",
        &[OsStr::new("-c"), input.as_os_str()],
        Path::new("/"),
    );
    std::fs::write(&out, data).unwrap();
    out
}

fn zstd_file(input: &Path) -> PathBuf {
    let out = input.with_extension("tar.zst");
    let data = run_tool(
        "zstd",
        &[OsStr::new("-q"), OsStr::new("-c"), input.as_os_str()],
        Path::new("/"),
    );
    std::fs::write(&out, data).unwrap();
    out
}

/// The typeflags of the headers in a tar (sizes in octal or base-256; PAX
/// size overrides are not needed for what GNU tar writes here).
fn tar_typeflags(tar: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = &h[124..136];
        let size = if field[0] & 0x80 != 0 {
            field[1..].iter().fold(0u64, |v, &b| v * 256 + b as u64)
        } else {
            let s: String = field
                .iter()
                .take_while(|&&b| b != 0 && b != b' ')
                .map(|&b| b as char)
                .collect();
            u64::from_str_radix(s.trim(), 8).unwrap_or(0)
        };
        out.push(h[156]);
        at += 512 + (size as usize).div_ceil(512) * 512;
    }
    out
}

fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: output differs from the original tar: {} bytes vs {} bytes, first difference at byte {first}",
            got.len(),
            want.len()
        );
    }
}

/// Import `input` (whose uncompressed form is `plain`) and check everything a
/// round trip promises: the printed content id, `cat` by ref, content id and
/// object id, the ref layout, and fsck. Returns (stream object hex, content id).
fn check_round_trip(repo: &Repo, name: &str, input: &Path, plain: &Path) -> (String, String) {
    let want = std::fs::read(plain).unwrap();
    let (hex, cid) = repo.import(name, input);
    assert_eq!(
        cid,
        format!("oci-layer-sha256:{}", sha256sum(plain)),
        "content id is not the sha256 of the uncompressed tar"
    );
    assert_same_bytes(&repo.cat(name), &want, &format!("cat {name}"));
    assert_same_bytes(&repo.cat(&cid), &want, &format!("cat {cid}"));
    assert_same_bytes(&repo.cat(&hex), &want, &format!("cat {hex}"));
    // Layout: streams/<cid> -> ../objects/XX/rest; streams/refs/NAME is a
    // relative symlink naming <cid> (where it resolves to is checked in cli_repo).
    let target = std::fs::read_link(repo.path.join("streams/refs").join(name)).unwrap();
    assert!(
        target.is_relative(),
        "ref {name} is not a relative symlink: {}",
        target.display()
    );
    assert_eq!(
        target.file_name().unwrap().to_str().unwrap(),
        cid,
        "ref {name} does not name its content id"
    );
    assert_eq!(
        std::fs::read_link(repo.path.join("streams").join(&cid)).unwrap(),
        PathBuf::from(format!("../objects/{}/{}", &hex[..2], &hex[2..]))
    );
    let refs = String::from_utf8(repo.ok(&["refs"])).unwrap();
    assert!(
        refs.lines()
            .any(|l| l == format!("streams/refs/{name}\t{cid}\t{hex}")),
        "refs output lacks {name}:\n{refs}"
    );
    repo.assert_fsck_ok();
    (hex, cid)
}

/// The objects a tar of `tree` must produce: the fs-verity digest of every
/// regular file larger than 64 bytes (computed by the `fsverity` tool).
fn expected_file_objects(tree: &Path, alg: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(tree, &mut |p| {
        let m = std::fs::symlink_metadata(p).unwrap();
        if m.is_file() && m.len() > 64 {
            out.insert(fsverity_digest(alg, p));
        }
    });
    out
}

/// Every object's name must be its fs-verity digest, and the objects must be
/// exactly the big files plus the given streams.
fn check_objects(repo: &Repo, tree: &Path, streams: &[&str]) {
    let mut want = expected_file_objects(tree, "sha512");
    want.extend(streams.iter().map(|s| s.to_string()));
    let got: BTreeSet<String> = repo.objects().into_iter().map(|(h, _)| h).collect();
    assert_eq!(
        got, want,
        "objects are not exactly the >64-byte files plus the stream"
    );
    for (hex, path) in repo.objects() {
        assert_eq!(
            fsverity_digest("sha512", &path),
            hex,
            "object {} is not named by its fs-verity digest",
            path.display()
        );
    }
}

fn assert_nothing_published(repo: &Repo, what: &str) {
    assert!(
        repo.ref_names().is_empty(),
        "{what}: a ref was created: {:?}",
        repo.ref_names()
    );
    assert!(
        repo.stream_entries().is_empty(),
        "{what}: a stream entry was created: {:?}",
        repo.stream_entries()
    );
    let mut stray = Vec::new();
    walk(&repo.path, &mut |p| {
        if p.file_name().unwrap().to_string_lossy().starts_with(".tmp") {
            stray.push(p.to_path_buf());
        }
    });
    assert!(
        stray.is_empty(),
        "{what}: temporary files left behind: {stray:?}"
    );
}

/// Import `input` expecting failure; returns stderr. Nothing may be published.
fn import_fails(repo: &Repo, name: &str, input: &Path, what: &str) -> String {
    let out = repo.run(&["import-tar", name, input.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what}: import succeeded; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: a failed import printed on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.starts_with("composefs: error:"),
        "{what}: unexpected stderr:\n{stderr}"
    );
    assert_nothing_published(repo, what);
    stderr
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn round_trip_gnu_format() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_tree(&s.join("tree"));
    let tar = s.join("gnu.tar");
    let bytes = make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    let flags = tar_typeflags(&bytes);
    for (f, what) in [
        (b'L', "long name"),
        (b'K', "long link"),
        (b'1', "hard link"),
        (b'2', "symlink"),
        (b'3', "char device"),
        (b'4', "block device"),
        (b'5', "directory"),
        (b'6', "fifo"),
        (b'0', "file"),
    ] {
        assert!(
            flags.contains(&f),
            "test tar has no {what} ({}) record: {flags:?}",
            f as char
        );
    }
    let (hex, _) = check_round_trip(&repo, "gnu", &tar, &tar);
    check_objects(&repo, &s.join("tree"), &[&hex]);
}

#[test]
fn round_trip_pax_format_with_xattrs() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_tree(&s.join("tree"));
    let tar = s.join("pax.tar");
    let bytes = make_tar(
        &s.join("tree"),
        &tar,
        &["--format=pax", "--xattrs", "--xattrs-include=*"],
    );
    let flags = tar_typeflags(&bytes);
    assert!(
        flags.contains(&b'x'),
        "no PAX extended header in the test tar"
    );
    for needle in [
        "SCHILY.xattr.user.greeting=hello",
        "SCHILY.xattr.user.dirattr",
        "SCHILY.xattr.user.long",
        "path=",
    ] {
        assert!(
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "test tar lacks {needle:?}"
        );
    }
    let (hex, _) = check_round_trip(&repo, "images/pax/with-xattrs", &tar, &tar);
    check_objects(&repo, &s.join("tree"), &[&hex]);
}

#[test]
fn round_trip_ustar_v7_and_oldgnu_formats() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let mut streams = Vec::new();
    for format in ["ustar", "v7", "oldgnu", "posix"] {
        let tar = s.join(format!("{format}.tar"));
        make_tar(&s.join("tree"), &tar, &[&format!("--format={format}")]);
        streams.push(check_round_trip(&repo, format, &tar, &tar).0);
    }
    let refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    check_objects(&repo, &s.join("tree"), &refs);
}

#[test]
fn round_trip_gzip_compressed() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_tree(&s.join("tree"));
    let tar = s.join("pax.tar");
    make_tar(
        &s.join("tree"),
        &tar,
        &["--format=pax", "--xattrs", "--xattrs-include=*"],
    );
    let gz = gzip_file(&tar);
    assert_eq!(&std::fs::read(&gz).unwrap()[..2], &[0x1f, 0x8b]);
    let (hex, _) = check_round_trip(&repo, "gz", &gz, &tar);
    check_objects(&repo, &s.join("tree"), &[&hex]);
    // The same tar uncompressed is the same stream.
    let (hex2, _) = repo.import("plain", &tar);
    assert_eq!(hex, hex2);
}

#[test]
fn round_trip_zstd_compressed() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_tree(&s.join("tree"));
    let tar = s.join("gnu.tar");
    make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    let zst = zstd_file(&tar);
    assert_eq!(
        &std::fs::read(&zst).unwrap()[..4],
        &[0x28, 0xb5, 0x2f, 0xfd]
    );
    let (hex, _) = check_round_trip(&repo, "zst", &zst, &tar);
    check_objects(&repo, &s.join("tree"), &[&hex]);
}

#[test]
fn import_from_stdin() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    let plain = make_tar(&s.join("tree"), &tar, &["--format=pax"]);
    let gz = std::fs::read(gzip_file(&tar)).unwrap();
    let zst = std::fs::read(zstd_file(&tar)).unwrap();
    let sha = sha256sum(&tar);
    let mut ids = BTreeSet::new();
    for (name, args, input) in [
        ("dash", vec!["import-tar", "dash", "-"], &plain),
        ("noarg", vec!["import-tar", "noarg"], &plain),
        ("gz", vec!["import-tar", "gz", "-"], &gz),
        ("zst", vec!["import-tar", "zst"], &zst),
    ] {
        let out = repo.run(&args, Some(input));
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (hex, cid) = parse_import(&out.stdout);
        assert_eq!(cid, format!("oci-layer-sha256:{sha}"));
        assert_same_bytes(&repo.cat(name), &plain, name);
        ids.insert(hex);
    }
    assert_eq!(
        ids.len(),
        1,
        "the same tar from stdin gave different streams: {ids:?}"
    );
    repo.assert_fsck_ok();
}

/// Feed `first` to the importer's stdin, wait until the importer has consumed
/// it (the pipe is empty again), then send `rest`. Returns the process output.
fn import_with_split_stdin(
    repo: &Repo,
    name: &str,
    first: &[u8],
    rest: &[u8],
) -> std::process::Output {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let probe = reader.try_clone().unwrap();
    let mut child = repo
        .command()
        .args(["import-tar", name, "-"])
        .stdin(Stdio::from(reader))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writer.write_all(first).unwrap();
    // Wait (by state, not by time) until the child has read those bytes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut pending: libc::c_int = 0;
        use std::os::fd::AsRawFd;
        let rc = unsafe { libc::ioctl(probe.as_raw_fd(), libc::FIONREAD, &mut pending) };
        assert_eq!(rc, 0, "FIONREAD failed");
        if pending == 0 {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("import exited ({st}) before reading its input");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "import never read its first bytes"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    drop(probe);
    let _ = writer.write_all(rest);
    drop(writer);
    let out = child.wait_with_output().unwrap();
    assert_no_panic("import-tar from a slow pipe", &out);
    out
}

/// A pipe may deliver the first bytes of a compressed stream one read at a
/// time (a slow network download, `curl | composefs import-tar`); the
/// compression must still be recognised.
#[test]
fn compressed_stdin_arriving_in_small_pieces() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    let plain = make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    // Uncompressed: one byte first.
    let out = import_with_split_stdin(&repo, "plain", &plain[..1], &plain[1..]);
    assert!(
        out.status.success(),
        "plain tar in pieces failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_bytes(&repo.cat("plain"), &plain, "plain");
    let gz = std::fs::read(gzip_file(&tar)).unwrap();
    let zst = std::fs::read(zstd_file(&tar)).unwrap();
    let mut failures = Vec::new();
    for (name, data, split) in [
        ("gz", &gz, 1),
        ("zst", &zst, 1),
        ("zst2", &zst, 2),
        ("zst3", &zst, 3),
    ] {
        let out = import_with_split_stdin(&repo, name, &data[..split], &data[split..]);
        if !out.status.success() {
            failures.push(format!(
                "{name} (first read {split} bytes): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        assert_same_bytes(&repo.cat(name), &plain, name);
    }
    assert!(
        failures.is_empty(),
        "compressed input split after its first bytes was not recognised:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Objects and deduplication
// ---------------------------------------------------------------------------

#[test]
fn reimport_adds_no_objects_and_gives_same_stream() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_tree(&s.join("tree"));
    let tar = s.join("gnu.tar");
    make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    let (hex1, cid1) = repo.import("first", &tar);
    let before = repo.objects();
    let (hex2, cid2) = repo.import("second", &tar);
    let (hex3, cid3) = repo.import("first", &tar);
    assert_eq!((&hex1, &cid1), (&hex2, &cid2));
    assert_eq!((&hex1, &cid1), (&hex3, &cid3));
    assert_eq!(
        repo.objects(),
        before,
        "re-importing the same tar changed objects/"
    );
    assert_eq!(repo.object_count(), before.len());
    assert_eq!(repo.stream_entries(), vec![cid1.clone()]);
    assert_eq!(
        repo.ref_names(),
        vec!["first".to_string(), "second".to_string()]
    );
    // The gzip form of the same tar is the same stream as well.
    let (hex4, _) = repo.import("third", &gzip_file(&tar));
    assert_eq!(hex4, hex1);
    assert_eq!(repo.objects(), before);
}

#[test]
fn importing_another_tar_under_an_existing_ref_moves_it() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let a = s.join("a.tar");
    let b = s.join("b.tar");
    let bytes_a = make_tar(&s.join("tree"), &a, &["--format=gnu"]);
    let bytes_b = make_tar(&s.join("tree"), &b, &["--format=pax"]);
    assert_ne!(bytes_a, bytes_b);
    let (_, cid_a) = repo.import("name", &a);
    let (_, cid_b) = repo.import("name", &b);
    assert_ne!(cid_a, cid_b);
    assert_same_bytes(&repo.cat("name"), &bytes_b, "moved ref");
    assert_same_bytes(&repo.cat(&cid_a), &bytes_a, "old stream by content id");
    assert_eq!(repo.ref_names(), vec!["name".to_string()]);
}

#[test]
fn large_files_become_objects_named_by_fsverity_digest() {
    let repo = Repo::new();
    let s = repo.scratch();
    let tree = s.join("tree");
    let files: [(&str, usize); 5] = [
        ("a65", 65),
        ("b4096", 4096),
        ("c4097", 4097),
        ("d", 1 << 20),
        ("e", (1 << 20) + 3),
    ];
    for (i, (name, size)) in files.iter().enumerate() {
        write_file(&tree.join(name), &pseudo_random(500 + i as u64, *size));
    }
    let tar = s.join("t.tar");
    make_tar(&tree, &tar, &["--format=gnu"]);
    let (hex, _) = repo.import("t", &tar);
    assert_eq!(repo.object_count(), files.len() + 1);
    for (name, _) in files {
        let digest = fsverity_digest("sha512", &tree.join(name));
        let obj = repo
            .path
            .join("objects")
            .join(&digest[..2])
            .join(&digest[2..]);
        assert!(
            obj.is_file(),
            "no object for {name} (fs-verity digest {digest})"
        );
        assert_eq!(
            std::fs::read(&obj).unwrap(),
            std::fs::read(tree.join(name)).unwrap(),
            "object content of {name}"
        );
        assert_eq!(fsverity_digest("sha512", &obj), digest);
    }
    let stream = repo.path.join("objects").join(&hex[..2]).join(&hex[2..]);
    assert_eq!(
        fsverity_digest("sha512", &stream),
        hex,
        "the printed stream id is not the stream object's digest"
    );
    assert!(
        std::fs::read(&stream).unwrap().starts_with(b"SplitStream"),
        "stream object lacks the splitstream magic"
    );
}

#[test]
fn small_files_create_no_objects() {
    let repo = Repo::new();
    let s = repo.scratch();
    let tree = s.join("tree");
    for (i, size) in [0usize, 1, 2, 63, 64].iter().enumerate() {
        write_file(
            &tree.join(format!("f{size}")),
            &pseudo_random(700 + i as u64, *size),
        );
    }
    symlink("x".repeat(200), tree.join("long-symlink")).unwrap();
    let tar = s.join("t.tar");
    let bytes = make_tar(&tree, &tar, &["--format=pax"]);
    let (hex, _) = repo.import("small", &tar);
    let objects = repo.objects();
    assert_eq!(
        objects.len(),
        1,
        "files of at most 64 bytes created objects: {objects:?}"
    );
    assert_eq!(objects[0].0, hex);
    assert_same_bytes(&repo.cat("small"), &bytes, "small");

    // One byte more: exactly one object more.
    write_file(&tree.join("f65"), &pseudo_random(799, 65));
    let tar2 = s.join("t2.tar");
    make_tar(&tree, &tar2, &["--format=pax"]);
    repo.import("small65", &tar2);
    assert_eq!(repo.object_count(), 3);
    let digest = fsverity_digest("sha512", &tree.join("f65"));
    assert!(repo.objects().iter().any(|(h, _)| *h == digest));
}

#[test]
fn data_after_the_end_of_archive_is_preserved() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    let mut bytes = make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    // A second archive concatenated, then junk that is not a block multiple.
    let second = bytes.clone();
    bytes.extend_from_slice(&second);
    bytes.extend_from_slice(b"trailing junk after the archive\n");
    bytes.extend_from_slice(&pseudo_random(9, 1000));
    let odd = s.join("odd.tar");
    std::fs::write(&odd, &bytes).unwrap();
    check_round_trip(&repo, "trailing", &odd, &odd);
}

// ---------------------------------------------------------------------------
// Hand-made headers
// ---------------------------------------------------------------------------

/// A ustar header with a correct checksum.
fn header(name: &str, typeflag: u8, size_field: [u8; 12]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(&size_field);
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    fix_checksum(&mut h);
    h
}

fn fix_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn octal_size(n: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[..11].copy_from_slice(format!("{n:011o}").as_bytes());
    f
}

fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

/// GNU tar extracts member `member` of `tar` with this content.
fn gnu_tar_extracts(tar: &Path, member: &str, want: &[u8]) {
    let got = run_tool(
        "tar",
        &[OsStr::new("-xOf"), tar.as_os_str(), OsStr::new(member)],
        Path::new("/"),
    );
    assert_eq!(
        got, want,
        "GNU tar reads the hand-made tar differently (test bug)"
    );
}

#[test]
fn pax_size_record_overrides_header_size() {
    let repo = Repo::new();
    let s = repo.scratch();
    let data = pseudo_random(42, 70);
    let records = b"11 size=70\n";
    let mut tar = Vec::new();
    tar.extend_from_slice(&header(
        "PaxHeaders/f",
        b'x',
        octal_size(records.len() as u64),
    ));
    tar.extend_from_slice(&padded(records));
    tar.extend_from_slice(&header("f", b'0', octal_size(0)));
    tar.extend_from_slice(&padded(&data));
    tar.extend_from_slice(&[0u8; 1024]);
    let path = s.join("pax-size.tar");
    std::fs::write(&path, &tar).unwrap();
    gnu_tar_extracts(&path, "f", &data);
    let (hex, _) = check_round_trip(&repo, "pax-size", &path, &path);
    let digest = hex_digest_of(&s, &data);
    let names: BTreeSet<String> = repo.objects().into_iter().map(|(h, _)| h).collect();
    assert_eq!(
        names,
        BTreeSet::from([hex, digest]),
        "the 70-byte file (size from PAX) is not an object"
    );
}

#[test]
fn base256_size_field() {
    let repo = Repo::new();
    let s = repo.scratch();
    let data = pseudo_random(43, 100);
    let mut size = [0u8; 12];
    size[0] = 0x80;
    size[11] = 100;
    let mut tar = Vec::new();
    tar.extend_from_slice(&header("b256", b'0', size));
    tar.extend_from_slice(&padded(&data));
    // Old-style regular file (typeflag NUL) and contiguous file ('7').
    tar.extend_from_slice(&header("nul-type", 0, octal_size(80)));
    tar.extend_from_slice(&padded(&data[..80]));
    tar.extend_from_slice(&header("contig", b'7', octal_size(90)));
    tar.extend_from_slice(&padded(&data[..90]));
    tar.extend_from_slice(&[0u8; 1024]);
    let path = s.join("b256.tar");
    std::fs::write(&path, &tar).unwrap();
    gnu_tar_extracts(&path, "b256", &data);
    let (hex, _) = check_round_trip(&repo, "b256", &path, &path);
    let names: BTreeSet<String> = repo.objects().into_iter().map(|(h, _)| h).collect();
    let want = BTreeSet::from([
        hex,
        hex_digest_of(&s, &data),
        hex_digest_of(&s, &data[..80]),
        hex_digest_of(&s, &data[..90]),
    ]);
    assert_eq!(names, want);
}

fn hex_digest_of(dir: &Path, data: &[u8]) -> String {
    let f = dir.join(format!("digest-input-{}", data.len()));
    std::fs::write(&f, data).unwrap();
    fsverity_digest("sha512", &f)
}

#[test]
fn bad_numeric_fields_are_refused() {
    let repo = Repo::new();
    let s = repo.scratch();
    for (what, field) in [
        ("non-octal size", *b"00000000009\0"),
        ("negative base-256 size", [0xff; 12]),
        (
            "base-256 size overflowing u64",
            [0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        ),
    ] {
        let mut tar = header("f", b'0', field).to_vec();
        tar.extend_from_slice(&[0u8; 1024]);
        let path = s.join("bad-size.tar");
        std::fs::write(&path, &tar).unwrap();
        let err = import_fails(&repo, "bad", &path, what);
        assert_mentions(&err, &["size"], what);
    }
    // A PAX size record that is not a number.
    let records = b"12 size=7x0\n";
    let mut tar = header("PaxHeaders/f", b'x', octal_size(records.len() as u64)).to_vec();
    tar.extend_from_slice(&padded(records));
    tar.extend_from_slice(&header("f", b'0', octal_size(0)));
    tar.extend_from_slice(&[0u8; 1024]);
    let path = s.join("bad-pax.tar");
    std::fs::write(&path, &tar).unwrap();
    let err = import_fails(&repo, "bad", &path, "bad PAX size");
    assert_mentions(&err, &["size"], "bad PAX size");
    // A PAX record whose length does not fit.
    let records = b"99 path=x\n";
    let mut tar = header("PaxHeaders/f", b'x', octal_size(records.len() as u64)).to_vec();
    tar.extend_from_slice(&padded(records));
    tar.extend_from_slice(&header("f", b'0', octal_size(0)));
    tar.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&path, &tar).unwrap();
    let err = import_fails(&repo, "bad", &path, "bad PAX record length");
    assert_mentions(&err, &["PAX"], "bad PAX record length");
}

// ---------------------------------------------------------------------------
// Refused input
// ---------------------------------------------------------------------------

#[test]
fn sparse_files_are_refused() {
    require_tool("truncate");
    require_tool("dd");
    let repo = Repo::new();
    let s = repo.scratch();
    let tree = s.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    write_file(&tree.join("before"), &pseudo_random(1, 1000));
    sh(
        &tree,
        "truncate -s 10M sparse.img && printf 'some data in the middle' | dd of=sparse.img bs=1 seek=5000000 conv=notrunc status=none",
    );
    assert!(
        std::fs::metadata(tree.join("sparse.img")).unwrap().blocks() * 512 < 1 << 20,
        "the test file is not sparse"
    );
    let cases: [(&str, &[&str]); 4] = [
        ("gnu", &["--format=gnu"]),
        ("pax-0.0", &["--format=pax", "--sparse-version=0.0"]),
        ("pax-0.1", &["--format=pax", "--sparse-version=0.1"]),
        ("pax-1.0", &["--format=pax", "--sparse-version=1.0"]),
    ];
    for (what, opts) in cases {
        let tar = s.join(format!("sparse-{what}.tar"));
        let mut args = vec!["--sparse"];
        args.extend_from_slice(opts);
        let bytes = make_tar(&tree, &tar, &args);
        if what == "gnu" {
            assert!(
                tar_typeflags(&bytes).contains(&b'S'),
                "GNU tar did not write a sparse ('S') member"
            );
        } else {
            assert!(
                bytes.windows(10).any(|w| w == b"GNU.sparse"),
                "{what}: no GNU.sparse records in the test tar"
            );
        }
        let err = import_fails(&repo, "sparse", &tar, what);
        assert_mentions(&err, &["sparse"], what);
        // Compressed, it is refused just the same.
        let err = import_fails(&repo, "sparse", &gzip_file(&tar), what);
        assert_mentions(&err, &["sparse"], what);
    }
}

/// ustar tar of big.bin (100000 bytes) then small.txt (30 bytes).
fn two_member_tar(dir: &Path) -> Vec<u8> {
    let tree = dir.join("two");
    write_file(&tree.join("big.bin"), &pseudo_random(11, 100_000));
    write_file(&tree.join("small.txt"), &pseudo_random(12, 30));
    let tar = dir.join("two.tar");
    run_tool(
        "tar",
        &[
            OsStr::new("--format=ustar"),
            OsStr::new("-C"),
            tree.as_os_str(),
            OsStr::new("-cf"),
            tar.as_os_str(),
            OsStr::new("big.bin"),
            OsStr::new("small.txt"),
        ],
        Path::new("/"),
    );
    let bytes = std::fs::read(&tar).unwrap();
    assert_eq!(&bytes[..7], b"big.bin");
    assert_eq!(
        &bytes[SMALL_HDR..SMALL_HDR + 9],
        b"small.txt",
        "unexpected tar layout (test bug)"
    );
    bytes
}
/// Offsets in [`two_member_tar`].
const BIG_DATA: usize = 512;
const SMALL_HDR: usize = 512 + 100_352;
const SMALL_DATA: usize = SMALL_HDR + 512;
const END_MARKER: usize = SMALL_DATA + 512;

#[test]
fn truncated_tars_are_refused() {
    let s = tempfile::tempdir().unwrap();
    let bytes = two_member_tar(s.path());
    let cuts = [
        (100, "inside the first header"),
        (511, "one byte short of the first header"),
        (BIG_DATA, "right after the first header"),
        (BIG_DATA + 50_000, "in the middle of big.bin's data"),
        (BIG_DATA + 99_999, "one byte short of big.bin's data"),
        (SMALL_HDR + 100, "inside small.txt's header"),
        (SMALL_DATA + 10, "in the middle of small.txt's data"),
        (SMALL_DATA + 29, "one byte short of small.txt's data"),
    ];
    for (cut, what) in cuts {
        let repo = Repo::new();
        let path = repo.scratch().join("cut.tar");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = import_fails(&repo, "cut", &path, what);
        assert_mentions(&err, &["truncated", "ends"], what);
        assert!(
            err.contains(&format!("byte {cut}")),
            "{what}: the error does not name byte {cut}: {err}"
        );
        if cut < BIG_DATA + 100_000 {
            assert_eq!(
                repo.object_count(),
                0,
                "{what}: a partial object was stored"
            );
        }
        // The same cut inside a gzip stream.
        let err = import_fails(&repo, "cut", &gzip_file(&path), &format!("{what} (gzip)"));
        assert_mentions(&err, &["truncated", "ends"], what);
    }
    // A tar that ends exactly at a member boundary is a complete archive
    // without the end-of-archive blocks (as umoci and Go producers write
    // layers; GNU tar, Go and composefs-rs read them): it imports, and
    // reads back byte for byte.
    // Cut: no input at all, at the block boundary before small.txt, and
    // right before the end-of-archive marker. So is one that ends after a
    // member's whole content, inside or before its padding (umoci 0.4's insert
    // writes layers without the last member's padding; Go's archive/tar
    // reads such a stream as a complete archive, and so do we).
    for cut in [
        0,
        SMALL_HDR,
        END_MARKER,
        BIG_DATA + 100_000,
        BIG_DATA + 100_100,
        SMALL_DATA + 30,
        SMALL_DATA + 100,
    ] {
        let repo = Repo::new();
        let path = repo.scratch().join(format!("boundary-{cut}.tar"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        check_round_trip(&repo, "cut", &path, &path);
    }
    // The uncut tar imports fine (the cuts are what fails).
    let repo = Repo::new();
    let path = repo.scratch().join("whole.tar");
    std::fs::write(&path, &bytes).unwrap();
    check_round_trip(&repo, "whole", &path, &path);
}

#[test]
fn truncated_large_file_is_refused_and_leaves_no_object() {
    let repo = Repo::new();
    let s = repo.scratch();
    let tree = s.join("tree");
    write_file(&tree.join("huge.bin"), &pseudo_random(13, 6 << 20));
    let tar = s.join("t.tar");
    let bytes = make_tar(&tree, &tar, &["--format=gnu"]);
    let pos = bytes.windows(8).position(|w| w == b"huge.bin").unwrap();
    let cut = s.join("cut.tar");
    std::fs::write(&cut, &bytes[..pos + 512 + (3 << 20)]).unwrap();
    let err = import_fails(&repo, "cut", &cut, "cut inside a 6 MiB file");
    assert_mentions(&err, &["truncated"], "cut inside a 6 MiB file");
    assert_eq!(repo.object_count(), 0, "a partial object was stored");
    let err = import_fails(
        &repo,
        "cut",
        &zstd_file(&cut),
        "cut inside a 6 MiB file (zstd)",
    );
    assert_mentions(
        &err,
        &["truncated", "ends"],
        "cut inside a 6 MiB file (zstd)",
    );
    assert_eq!(repo.object_count(), 0, "a partial object was stored");
}

#[test]
fn corrupted_header_checksum_is_refused() {
    let s = tempfile::tempdir().unwrap();
    let bytes = two_member_tar(s.path());
    for (at, what) in [
        (1, "name of the first header"),
        (SMALL_HDR + 2, "name of the second header"),
        (SMALL_HDR + 124 + 5, "size field of the second header"),
        (SMALL_HDR + 150, "checksum field itself"),
        (SMALL_HDR + 300, "unused area of the second header"),
    ] {
        let repo = Repo::new();
        let mut bad = bytes.clone();
        bad[at] ^= 0x04;
        let path = repo.scratch().join("bad.tar");
        std::fs::write(&path, &bad).unwrap();
        let err = import_fails(&repo, "bad", &path, what);
        assert_mentions(&err, &["checksum"], what);
    }
}

#[test]
fn garbage_input_is_refused() {
    let repo = Repo::new();
    let s = repo.scratch();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "text".into(),
            b"hello, this is not a tar archive\n".to_vec(),
        ),
        ("a lone non-zero block".into(), vec![b'A'; 512]),
    ];
    for seed in 0..8u64 {
        cases.push((
            format!("random 8 KiB #{seed}"),
            pseudo_random(1000 + seed, 8192),
        ));
        cases.push((
            format!("random 100 bytes #{seed}"),
            pseudo_random(2000 + seed, 100),
        ));
    }
    let mut gz_magic = vec![0x1f, 0x8b];
    gz_magic.extend(pseudo_random(3000, 4000));
    cases.push(("gzip magic then garbage".into(), gz_magic));
    let mut gz_hdr = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gz_hdr.extend(pseudo_random(3001, 4000));
    cases.push(("gzip header then garbage".into(), gz_hdr));
    let mut zst_magic = vec![0x28, 0xb5, 0x2f, 0xfd];
    zst_magic.extend(pseudo_random(3002, 4000));
    cases.push(("zstd magic then garbage".into(), zst_magic));
    for (what, data) in cases {
        let path = s.join("garbage");
        std::fs::write(&path, &data).unwrap();
        import_fails(&repo, "garbage", &path, &what);
        // From stdin as well.
        let out = repo.run(&["import-tar", "garbage", "-"], Some(&data));
        assert!(!out.status.success(), "{what} from stdin was accepted");
    }
    assert_nothing_published(&repo, "garbage");
}

#[test]
fn corrupted_compressed_streams_are_refused() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    let gz = std::fs::read(gzip_file(&tar)).unwrap();
    let zst = std::fs::read(zstd_file(&tar)).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for at in [gz.len() / 3, gz.len() / 2, 2 * gz.len() / 3] {
        let mut bad = gz.clone();
        bad[at] ^= 0x55;
        cases.push((format!("gzip with a flipped byte at {at}"), bad));
    }
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 6] ^= 0x01; // CRC32 in the trailer
    cases.push(("gzip with a bad CRC".into(), bad));
    let mut bad = gz.clone();
    bad[n - 2] ^= 0x01; // ISIZE in the trailer
    cases.push(("gzip with a bad length".into(), bad));
    cases.push(("gzip cut in half".into(), gz[..gz.len() / 2].to_vec()));
    cases.push((
        "gzip without its trailer".into(),
        gz[..gz.len() - 8].to_vec(),
    ));
    for at in [zst.len() / 3, zst.len() / 2] {
        let mut bad = zst.clone();
        bad[at] ^= 0x55;
        cases.push((format!("zstd with a flipped byte at {at}"), bad));
    }
    let mut bad = zst.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x01; // content checksum
    cases.push(("zstd with a bad checksum".into(), bad));
    cases.push(("zstd cut in half".into(), zst[..zst.len() / 2].to_vec()));
    cases.push((
        "zstd without its checksum".into(),
        zst[..zst.len() - 4].to_vec(),
    ));
    for (what, data) in cases {
        let path = s.join("bad");
        std::fs::write(&path, &data).unwrap();
        import_fails(&repo, "bad", &path, &what);
    }
}

#[test]
fn bad_ref_names_are_refused() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    for name in [
        "../x",
        "/abs",
        "a//b",
        "",
        "a/../b",
        ".",
        "..",
        "x/",
        "a/./b",
        ".tmp-x",
        "dir/.tmp-y",
        &"n".repeat(1025),
    ] {
        let out = repo.run(&["import-tar", name, tar.to_str().unwrap()], None);
        assert!(!out.status.success(), "ref name {name:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_mentions(&err, &["ref name"], &format!("ref name {name:?}"));
        assert_eq!(
            repo.object_count(),
            0,
            "ref name {name:?}: objects were written before the name was refused"
        );
    }
    assert_nothing_published(&repo, "bad ref names");
    assert!(
        !repo.path.join("streams/x").exists() && !repo.tmp.path().join("x").exists(),
        "a ref escaped streams/refs"
    );
    // A good nested name works and lands where it should.
    repo.import("a/b/c", &tar);
    assert_eq!(repo.ref_names(), vec!["a/b/c".to_string()]);
}

#[test]
fn cat_errors() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    let (hex, _) = repo.import("t", &tar);
    for name in [
        "nope",
        "../t",
        "/t",
        "",
        "refs",
        &"0".repeat(128),
        &hex[..64],
        "oci-layer-sha256:0000",
    ] {
        let err = repo.fail(&["cat", name]);
        assert!(err.starts_with("composefs: error:"), "cat {name:?}: {err}");
    }
    // `refs/NAME` is accepted as a spelling of NAME.
    assert_same_bytes(
        &repo.cat("refs/t"),
        &std::fs::read(&tar).unwrap(),
        "cat refs/t",
    );
    // Missing input file.
    let err = repo.fail(&[
        "import-tar",
        "x",
        s.join("does-not-exist").to_str().unwrap(),
    ]);
    assert_mentions(&err, &["does-not-exist"], "missing input file");
}

/// stdout that is a pipe whose reader is gone: writes fail with EPIPE.
fn closed_stdout() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn closed_stdout_does_not_panic() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    let mut failures = Vec::new();
    for args in [
        vec!["import-tar", "t", tar.to_str().unwrap()],
        vec!["cat", "t"],
        vec!["refs"],
        vec!["fsck"],
        vec!["gc", "--dry-run"],
    ] {
        let out = repo
            .command()
            .args(&args)
            .stdout(closed_stdout())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        if stderr.contains("panicked")
            || out.status.code() == Some(101)
            || out.status.signal().is_some()
        {
            failures.push(format!("{args:?}: {} {}", out.status, stderr.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "commands panicked writing to a closed stdout:\n{}",
        failures.join("\n")
    );
    assert_eq!(repo.ref_names(), vec!["t".to_string()]);
}

/// Size fields near u64::MAX (base-256 in the header, or a PAX `size`
/// record) claim far more data than the archive holds: the import must fail
/// as truncated, not wrap the size around and carry on.
#[test]
fn huge_size_fields_do_not_wrap_around() {
    let repo = Repo::new();
    let s = repo.scratch();
    let mut accepted = Vec::new();
    // A symlink header whose base-256 size is 2^64 - 1.
    let mut max = [0xffu8; 12];
    max[..4].copy_from_slice(&[0x80, 0, 0, 0]);
    let mut tar = header("link", b'2', max).to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    // A directory whose PAX size record is 2^64 - 1.
    let records = b"29 size=18446744073709551615\n";
    let mut pax = header("PaxHeaders/d", b'x', octal_size(records.len() as u64)).to_vec();
    pax.extend_from_slice(&padded(records));
    pax.extend_from_slice(&header("d/", b'5', octal_size(0)));
    pax.extend_from_slice(&[0u8; 1024]);
    for (what, data) in [("base-256 size 2^64-1", tar), ("PAX size 2^64-1", pax)] {
        let path = s.join("huge.tar");
        std::fs::write(&path, &data).unwrap();
        let out = repo.run(&["import-tar", "huge", path.to_str().unwrap()], None);
        if out.status.success() {
            accepted.push(what);
        } else {
            assert_mentions(
                &String::from_utf8_lossy(&out.stderr),
                &["truncated", "size"],
                what,
            );
        }
    }
    assert!(
        accepted.is_empty(),
        "tars whose members claim 2^64-1 bytes were imported (the size wrapped around): {accepted:?}"
    );
}

#[test]
fn conflicting_ref_names_fail_cleanly() {
    let repo = Repo::new();
    let s = repo.scratch();
    make_simple_tree(&s.join("tree"));
    let tar = s.join("t.tar");
    let bytes = make_tar(&s.join("tree"), &tar, &["--format=gnu"]);
    repo.import("a/b", &tar);
    // `a` is a directory of refs, `a/b` is a ref: neither can become the other.
    for name in ["a", "a/b/c"] {
        let out = repo.run(&["import-tar", name, tar.to_str().unwrap()], None);
        assert!(
            !out.status.success(),
            "import-tar {name} succeeded over an existing ref"
        );
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("composefs: error:"));
    }
    assert_eq!(repo.ref_names(), vec!["a/b".to_string()]);
    assert_same_bytes(&repo.cat("a/b"), &bytes, "a/b after conflicting imports");
}
