//! OCI images pulled from an OCI layout, an oci-archive and a
//! docker-archive (made by umoci and skopeo) and from a real registry
//! (docker-registry on 127.0.0.1), mounted through FUSE and through
//! `create-image` + `mount --kernel`, compared with `umoci unpack`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{self, Repo, pseudo_random, require_tool};
use super::{Mounted, Snapshot, assert_same, chmod, chown, require_root, setx, snapshot, write};

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
    // The layers as they are (oci-raw/) are what umoci unpacks.
    let m = Mounted::fuse(&repo, "oci-raw/img", &s.join("m"));
    assert_same(
        &snapshot(&s.join("m"), true),
        &want,
        "FUSE oci-raw/img vs umoci unpack",
    );
    m.umount(&repo);

    // oci/img is the composefs image's tree (composefs-rs's OCI transform:
    // the root takes /usr's metadata, only security.capability xattrs
    // stay), the same as the image mounted by the kernel.
    let m = Mounted::fuse(&repo, "oci/img", &s.join("m"));
    let transformed = snapshot(&s.join("m"), true);
    m.umount(&repo);
    let note = |snap: &Snapshot| snap.entries[&b"etc/conf.d/a"[..]].xattrs.clone();
    assert!(note(&want).contains_key(&b"user.note"[..]));
    assert!(
        note(&transformed).is_empty(),
        "user.note survived the OCI transform"
    );
    repo.ok(&["oci", "create-image", "img", "--image-name", "img-erofs"]);
    let k = Mounted::kernel(&repo, "img-erofs", &s.join("k"));
    assert_same(
        &snapshot(&s.join("k"), true),
        &transformed,
        "kernel mount vs FUSE oci/img",
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
    let m = Mounted::fuse(&repo, "oci-raw/from-docker", &s.join("d"));
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
        &transformed,
        "--all oci/img",
    );
    all.umount(&repo);

    // rm + gc: the image goes, other images keep their layers.
    repo.ok(&["oci", "rm", "img", "from-archive"]);
    repo.ok(&["gc"]);
    let m = Mounted::fuse(&repo, "oci-raw/from-docker", &s.join("d"));
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

/// A layer: an uncompressed tar of `(path, content)` files.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Write `data` as a blob of layout `l`; its descriptor JSON.
fn blob(l: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let d = sha256(data);
    std::fs::write(l.join("blobs/sha256").join(&d[7..]), data).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": d, "size": data.len()})
}

/// A layout by hand: an index of two platforms (linux/amd64, linux/arm64),
/// each an image of a gzip layer and a zstd layer; `/arch` says which.
fn build_multiplatform(s: &Path) -> PathBuf {
    let l = s.join("multi");
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    std::fs::write(l.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let base = layer_tar(&[
            ("shared", &pseudo_random(7, 100_000)[..]),
            ("arch", arch.as_bytes()),
        ]);
        let top = layer_tar(&[("top", &pseudo_random(8, 70_000)[..])]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &base).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&top[..], 3).unwrap();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(&base), sha256(&top)]},
        });
        let config = blob(
            &l,
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [
                blob(&l, "application/vnd.oci.image.layer.v1.tar+gzip", &gz),
                blob(&l, "application/vnd.oci.image.layer.v1.tar+zstd", &zst),
            ],
        });
        let mut d = blob(
            &l,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        manifests.push(d);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let d = blob(
        &l,
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    let mut d = d;
    d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "multi"});
    std::fs::write(
        l.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [d]}).to_string(),
    )
    .unwrap();
    l
}

fn skopeo_push(src: &str, dest: &str, all: bool) {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ]);
    if all {
        cmd.arg("--all");
    }
    run(cmd.arg(src).arg(dest));
}

#[test]
fn registry_pull_shares_layers_and_verifies() {
    require_root();
    require_tool("umoci");
    require_tool("skopeo");
    require_tool("docker-registry");
    let reg = common::registry::start_registry(true);
    let repo = Repo::new();
    let s = repo.scratch();
    let layout = build_layout(&s);
    let want = snapshot(&unpacked(&s, &layout), true);
    let at = |name: &str| format!("docker://127.0.0.1:{}/{name}", reg.port);
    skopeo_push(
        &format!("oci:{}:t", layout.display()),
        &at("test/img:t"),
        false,
    );

    // Pulled from the registry: the tree umoci unpacks; 3 layers + config.
    let before = reg.blob_gets();
    let out =
        String::from_utf8(repo.ok(&["oci", "pull", &at("test/img:t"), "--name", "img"])).unwrap();
    assert!(out.contains("fetched 3 layers"), "{out}");
    assert_eq!(reg.blob_gets() - before, 4, "{}", reg.log());
    let m = Mounted::fuse(&repo, "oci-raw/img", &s.join("m"));
    assert_same(
        &snapshot(&s.join("m"), true),
        &want,
        "registry pull vs umoci unpack",
    );
    m.umount(&repo);

    // A second image sharing those layers, plus one: only the new layer
    // and the new config are downloaded.
    let extra = s.join("extra.tar");
    std::fs::write(&extra, layer_tar(&[("extra", b"one more layer\n")])).unwrap();
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &format!("{}:t", layout.display()),
        extra.to_str().unwrap(),
    ]);
    skopeo_push(
        &format!("oci:{}:t", layout.display()),
        &at("test/img:t2"),
        false,
    );
    let before = reg.blob_gets();
    let out =
        String::from_utf8(repo.ok(&["oci", "pull", &at("test/img:t2"), "--name", "img2"])).unwrap();
    assert!(
        out.contains("fetched 1 layers") && out.contains("reused 3"),
        "{out}"
    );
    assert_eq!(reg.blob_gets() - before, 2, "{}", reg.log());
    // Pulling it again fetches nothing.
    let before = reg.blob_gets();
    repo.ok(&["oci", "pull", &at("test/img:t2"), "--name", "img2"]);
    assert_eq!(reg.blob_gets() - before, 0);

    // A multi-platform index of gzip and zstd layers: the platform asked
    // for, by default this machine's.
    let multi = build_multiplatform(&s);
    skopeo_push(
        &format!("oci:{}:multi", multi.display()),
        &at("test/multi:1"),
        true,
    );
    repo.ok(&[
        "oci",
        "pull",
        &at("test/multi:1"),
        "--name",
        "arm",
        "--platform",
        "linux/arm64",
    ]);
    repo.ok(&[
        "oci",
        "pull",
        &at("test/multi:1"),
        "--name",
        "amd",
        "--platform",
        "linux/amd64",
    ]);
    let m = Mounted::fuse(&repo, "oci/arm", &s.join("arm"));
    assert_eq!(std::fs::read(s.join("arm/arch")).unwrap(), b"arm64");
    assert_eq!(
        std::fs::read(s.join("arm/top")).unwrap(),
        pseudo_random(8, 70_000)
    );
    m.umount(&repo);
    let err = repo.fail(&[
        "oci",
        "pull",
        &at("test/multi:1"),
        "--name",
        "x",
        "--platform",
        "linux/s390x",
    ]);
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );

    // A corrupted blob in the registry's storage: the pull fails naming
    // the layer, and leaves no ref.
    let extra2 = s.join("extra2.tar");
    std::fs::write(
        &extra2,
        layer_tar(&[("corrupt-me", &pseudo_random(9, 50_000)[..])]),
    )
    .unwrap();
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &format!("{}:t", layout.display()),
        extra2.to_str().unwrap(),
    ]);
    skopeo_push(
        &format!("oci:{}:t", layout.display()),
        &at("test/img:t3"),
        false,
    );
    let m: serde_json::Value = serde_json::from_slice(&run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &at("test/img:t3"),
    ])))
    .unwrap();
    let last = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = reg.blob_path(&last[7..]);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&data, &bytes).unwrap();
    let err = repo.fail(&["oci", "pull", &at("test/img:t3"), "--name", "img3"]);
    assert!(
        err.contains(&last[..20]) || err.contains("corrupt"),
        "{err}"
    );
    let images = String::from_utf8(repo.ok(&["oci", "images"])).unwrap();
    assert!(!images.contains("img3"), "{images}");
    repo.assert_fsck_ok();
}

/// A one-layer OCI layout (tag `t`) of a raw tar.
fn layout_of_tar(s: &Path, name: &str, tar: &[u8]) -> PathBuf {
    let l = s.join(name);
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    std::fs::write(l.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
    });
    let config = blob(
        &l,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": config,
        "layers": [blob(&l, "application/vnd.oci.image.layer.v1.tar", tar)],
    });
    let mut d = blob(
        &l,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "t"});
    std::fs::write(
        l.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [d]}).to_string(),
    )
    .unwrap();
    l
}

/// A tar of one regular file whose name is written as is (the tar crate
/// refuses `..`).
fn raw_tar(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[test]
fn hostile_layers_are_refused_at_pull() {
    let repo = Repo::new();
    let s = repo.scratch();
    let victim = s.join("outside");
    for (what, name) in [
        ("escape", &b"../../outside"[..]),
        ("deep-escape", &b"a/../../outside"[..]),
    ] {
        let l = layout_of_tar(&s, what, &raw_tar(name, b"pwned\n"));
        let err = repo.fail(&[
            "oci",
            "pull",
            &format!("oci:{}:t", l.display()),
            "--name",
            what,
        ]);
        assert!(
            err.contains("outside") && err.contains("merge"),
            "{what}: {err}"
        );
        let images = String::from_utf8(repo.ok(&["oci", "images"])).unwrap();
        assert!(!images.contains(what), "{what}: {images}");
    }
    assert!(
        !victim.exists(),
        "something was written outside the repository"
    );
    // An absolute path is inside the image.
    let l = layout_of_tar(&s, "abs", &raw_tar(b"/etc/abs", b"fine\n"));
    repo.ok(&[
        "oci",
        "pull",
        &format!("oci:{}:t", l.display()),
        "--name",
        "abs",
    ]);
    let out = String::from_utf8(repo.ok(&["cat", "oci/abs:/etc/abs"])).unwrap();
    assert_eq!(out, "fine\n");
}

/// A registry that wants a password: credentials come from the first of
/// the usual files that has an entry for it (an auth.json naming only
/// another registry is passed over), or from a docker credential helper
/// (`credHelpers`, `credsStore`); none, or wrong ones, fail clearly.
#[test]
fn registry_credentials_from_files_and_helpers() {
    require_tool("skopeo");
    require_tool("docker-registry");
    let repo = Repo::new();
    let s = repo.scratch();
    let reg = common::registry::start_registry_with_password("alice", "s3cret");
    let host = format!("127.0.0.1:{}", reg.port);
    let l = layout_of_tar(&s, "img", &raw_tar(b"hello.txt", b"hello\n"));
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds=alice:s3cret",
        &format!("oci:{}:t", l.display()),
        &format!("docker://{host}/test/img:t"),
    ]));

    let home = s.join("home");
    let runtime = s.join("run");
    let helpers = s.join("bin");
    for d in [
        home.join(".docker"),
        runtime.join("containers"),
        helpers.clone(),
    ] {
        std::fs::create_dir_all(&d).unwrap();
    }
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pull = |name: &str| {
        let mut cmd = repo.command();
        cmd.args([
            "oci",
            "pull",
            &format!("docker://{host}/test/img:t"),
            "--name",
            name,
        ])
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("PATH", &path)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("REGISTRY_AUTH_FILE");
        let out = cmd.output().unwrap();
        common::assert_no_panic(name, &out);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let auths = |entries: &[(&str, &str)]| {
        let auths: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::json!({ "auth": base64_encode(v.as_bytes()) }),
                )
            })
            .collect();
        serde_json::json!({ "auths": auths }).to_string()
    };
    let docker_config = home.join(".docker/config.json");
    let containers_auth = runtime.join("containers/auth.json");

    // No credentials anywhere.
    let (ok, err) = pull("none");
    assert!(
        !ok && err.contains(&host) && err.contains("requires a login"),
        "{err}"
    );

    // auth.json knows only another registry; ~/.docker/config.json has ours.
    std::fs::write(&containers_auth, auths(&[("other.example:5000", "bob:x")])).unwrap();
    std::fs::write(&docker_config, auths(&[(&host, "alice:s3cret")])).unwrap();
    let (ok, err) = pull("files");
    assert!(ok, "{err}");
    assert_eq!(repo.ok(&["cat", "oci/files:/hello.txt"]), b"hello\n");

    // A wrong password is an error naming the registry.
    std::fs::write(&docker_config, auths(&[(&host, "alice:wrong")])).unwrap();
    let (ok, err) = pull("wrong");
    assert!(!ok && err.contains(&host), "{err}");

    // A credential helper, by credHelpers and by credsStore; it is asked
    // for our registry on stdin.
    let asked = s.join("asked");
    let helper = helpers.join("docker-credential-cfstest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\ncat > {}\nprintf '{{\"ServerURL\":\"x\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}\\n'\n",
            asked.display()
        ),
    )
    .unwrap();
    chmod(&helper, 0o755);
    std::fs::remove_file(&containers_auth).unwrap();
    std::fs::write(
        &docker_config,
        serde_json::json!({ "auths": {}, "credHelpers": { &host: "cfstest" } }).to_string(),
    )
    .unwrap();
    let (ok, err) = pull("helper");
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), host);
    assert_eq!(repo.ok(&["cat", "oci/helper:/hello.txt"]), b"hello\n");
    std::fs::write(
        &docker_config,
        serde_json::json!({ "credsStore": "cfstest" }).to_string(),
    )
    .unwrap();
    let (ok, err) = pull("store");
    assert!(ok, "{err}");

    // A helper without credentials for us: as if there were none.
    std::fs::write(
        &helper,
        "#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n",
    )
    .unwrap();
    let (ok, err) = pull("notfound");
    assert!(!ok && err.contains("requires a login"), "{err}");
    // A helper that is not installed is named.
    std::fs::write(
        &docker_config,
        serde_json::json!({ "credsStore": "absent" }).to_string(),
    )
    .unwrap();
    let (ok, err) = pull("absent");
    assert!(!ok && err.contains("docker-credential-absent"), "{err}");
    repo.assert_fsck_ok();
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
