//! OCI images pulled from an OCI layout, an oci-archive and a
//! docker-archive (made by umoci and skopeo) and from a real registry
//! (docker-registry on 127.0.0.1), mounted through FUSE and through
//! `create-image` + `mount --kernel`, compared with `umoci unpack`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{self, Repo, pseudo_random, require_tool};
use super::{Mounted, assert_same, chmod, chown, require_root, setx, snapshot, write};

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn umoci(args: &[&str]) {
    run(Command::new("umoci").args(args));
}

/// Build `dir` (an OCI layout) tagged `t`: three layers made by umoci from
/// changes to a bundle (files, hardlinks, symlinks, xattrs, setuid, a
/// fifo, a device; then deletions, which umoci writes as whiteouts, and
/// replacements), plus a hand-made layer with an opaque directory.
fn build_layout(s: &Path) -> PathBuf {
    let l = s.join("layout");
    let lp = l.to_str().unwrap();
    let bundle = s.join("bundle");
    let bp = bundle.to_str().unwrap();
    umoci(&["init", "--layout", lp]);
    umoci(&["new", "--image", &format!("{lp}:t")]);
    umoci(&["unpack", "--image", &format!("{lp}:t"), bp]);
    let root = bundle.join("rootfs");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(root.join("opaque/sub")).unwrap();
    std::fs::create_dir_all(root.join("gone-dir/deep")).unwrap();
    write(&root.join("usr/bin/tool"), &pseudo_random(1, 200_000));
    chmod(&root.join("usr/bin/tool"), 0o4755);
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-link")).unwrap();
    write(&root.join("etc/small"), b"small\n");
    write(&root.join("etc/conf.d/a"), b"a=1\n");
    chown(&root.join("etc/conf.d/a"), 1000, 1001);
    setx(&root.join("etc/conf.d/a"), "user.note", b"\x00bin\xff");
    std::os::unix::fs::symlink("../usr/bin/tool", root.join("etc/tool")).unwrap();
    write(&root.join("opaque/lower"), b"lower\n");
    write(&root.join("opaque/sub/x"), b"x\n");
    write(&root.join("gone"), b"to be deleted\n");
    write(&root.join("gone-dir/deep/f"), &pseudo_random(2, 5000));
    write(&root.join("becomes-dir"), b"a file first\n");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    umoci(&[
        "repack",
        "--refresh-bundle",
        "--image",
        &format!("{lp}:t"),
        bp,
    ]);

    // Second layer: deletions (whiteouts), a change, a file made a dir.
    std::fs::remove_file(root.join("gone")).unwrap();
    std::fs::remove_dir_all(root.join("gone-dir")).unwrap();
    write(&root.join("etc/small"), b"changed\n");
    std::fs::remove_file(root.join("becomes-dir")).unwrap();
    std::fs::create_dir(root.join("becomes-dir")).unwrap();
    write(&root.join("becomes-dir/inside"), &pseudo_random(3, 3000));
    umoci(&[
        "repack",
        "--refresh-bundle",
        "--image",
        &format!("{lp}:t"),
        bp,
    ]);

    // Third layer, by hand: `opaque` made opaque, with one new file.
    let tar = s.join("opaque.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar).unwrap());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "opaque/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(0);
    b.append_data(&mut h, "opaque/.wh..wh..opq", std::io::empty())
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(4);
    b.append_data(&mut h, "opaque/upper", &b"up!\n"[..])
        .unwrap();
    b.finish().unwrap();
    drop(b);
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &format!("{lp}:t"),
        tar.to_str().unwrap(),
    ]);
    l
}

/// `umoci unpack` of the image: the oracle.
fn unpacked(s: &Path, layout: &Path) -> PathBuf {
    let out = s.join("unpacked");
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:t", layout.display()),
        out.to_str().unwrap(),
    ]);
    out.join("rootfs")
}

fn manifest_of(repo: &Repo, name: &str) -> String {
    let out = String::from_utf8(repo.ok(&["oci", "images"])).unwrap();
    out.lines()
        .find(|l| l.starts_with(&format!("{name}\t")))
        .unwrap_or_else(|| panic!("{name} not in oci images:\n{out}"))
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn oci_layout_and_archives_equal_umoci_unpack() {
    require_root();
    require_tool("umoci");
    require_tool("skopeo");
    let repo = Repo::new();
    let s = repo.scratch();
    let layout = build_layout(&s);
    let want = snapshot(&unpacked(&s, &layout), true);
    // The oracle saw what we built.
    assert!(want.entries.contains_key(&b"opaque/upper"[..]));
    assert!(!want.entries.contains_key(&b"opaque/lower"[..]));
    assert!(!want.entries.contains_key(&b"gone"[..]));

    // From the layout, mounted through FUSE.
    let out = String::from_utf8(repo.ok(&[
        "oci",
        "pull",
        &format!("oci:{}:t", layout.display()),
        "--name",
        "img",
    ]))
    .unwrap();
    assert!(out.contains("fetched 3 layers"), "{out}");
    let m = Mounted::fuse(&repo, "oci/img", &s.join("m"));
    assert_same(
        &snapshot(&s.join("m"), true),
        &want,
        "FUSE oci/img vs umoci unpack",
    );
    m.umount(&repo);

    // The same as a composefs image, mounted by the kernel.
    repo.ok(&["oci", "create-image", "img", "--image-name", "img-erofs"]);
    let k = Mounted::kernel(&repo, "img-erofs", &s.join("k"));
    assert_same(
        &snapshot(&s.join("k"), true),
        &want,
        "kernel mount vs umoci unpack",
    );
    k.umount(&repo);

    // oci-archive and docker-archive of the same image (skopeo writes
    // them): the same tree; the docker archive's layers are the same
    // diff_ids, so nothing is imported again.
    let oa = s.join("img.oci.tar");
    let da = s.join("img.docker.tar");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:t", layout.display()),
        &format!("oci-archive:{}:t", oa.display()),
    ]));
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:t", layout.display()),
        &format!("docker-archive:{}:img:t", da.display()),
    ]));
    let out = String::from_utf8(repo.ok(&[
        "oci",
        "pull",
        &format!("oci-archive:{}:t", oa.display()),
        "--name",
        "from-archive",
    ]))
    .unwrap();
    assert!(out.contains("reused 3"), "{out}");
    assert_eq!(
        manifest_of(&repo, "from-archive"),
        manifest_of(&repo, "img")
    );
    let out = String::from_utf8(repo.ok(&[
        "oci",
        "pull",
        &format!("docker-archive:{}", da.display()),
        "--name",
        "from-docker",
    ]))
    .unwrap();
    assert!(out.contains("reused 3") || out.contains("fetched"), "{out}");
    let m = Mounted::fuse(&repo, "oci/from-docker", &s.join("d"));
    assert_same(
        &snapshot(&s.join("d"), true),
        &want,
        "docker-archive vs umoci unpack",
    );
    m.umount(&repo);

    // In the whole-repository view.
    let all = Mounted::new(&repo, &[], "", &s.join("all"));
    let mut names: Vec<String> = std::fs::read_dir(s.join("all/oci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["from-archive", "from-docker", "img"]);
    assert_same(
        &snapshot(&s.join("all/oci/img"), true),
        &want,
        "--all oci/img",
    );
    all.umount(&repo);

    // rm + gc: the image goes, other images keep their layers.
    repo.ok(&["oci", "rm", "img", "from-archive"]);
    repo.ok(&["gc"]);
    let m = Mounted::fuse(&repo, "oci/from-docker", &s.join("d"));
    assert_same(&snapshot(&s.join("d"), true), &want, "after rm + gc");
    m.umount(&repo);
    repo.assert_fsck_ok();
}

#[test]
fn oci_pull_refuses_corrupt_blobs() {
    require_root();
    require_tool("umoci");
    let repo = Repo::new();
    let s = repo.scratch();
    let layout = build_layout(&s);
    // Flip a byte in the largest layer blob.
    let blobs = layout.join("blobs/sha256");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let big = all.last().unwrap().clone();
    let mut bytes = std::fs::read(&big).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    chmod(&big, 0o644);
    std::fs::write(&big, &bytes).unwrap();
    let err = repo.fail(&[
        "oci",
        "pull",
        &format!("oci:{}:t", layout.display()),
        "--name",
        "bad",
    ]);
    let hex = big.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(hex) || err.contains("corrupt"), "{err}");
    assert!(
        !String::from_utf8(repo.ok(&["oci", "images"]))
            .unwrap()
            .contains("bad")
    );
    let _ = common::count_files;
}
