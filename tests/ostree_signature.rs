//! Commit and summary signature checks against real GnuPG keys and
//! signatures made by `ostree gpg-sign` / `ostree summary --gpg-sign`, and
//! ed25519 signatures in ostree's detached-metadata layout.
//!
//! Each test has its own GNUPGHOME (a temporary directory); the gpg-agent
//! started for it is stopped when the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::prelude::{BASE64_STANDARD, Engine as _};
use composefs::ostree::objects::meta_bytes_list;
use composefs::ostree::signature::{
    Ed25519Keys, GPG_KEY, Keyring, SigKind, Signer, Verdict, verify_ed25519, verify_gpg,
    verify_gpg_at,
};
use composefs::ostree::variant::{bytes_list, dict};
use ed25519_dalek::Signer as _;

const GPG: &str = "/usr/bin/gpg";

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A throw-away GnuPG home.
struct GpgHome {
    dir: tempfile::TempDir,
}

impl GpgHome {
    fn new() -> GpgHome {
        let dir = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        GpgHome { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(GPG);
        c.env("GNUPGHOME", self.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        run(self.cmd().args(args))
    }

    /// (primary fingerprint, [(subkey fingerprint, capabilities)]) of the
    /// key whose user id is `uid`.
    fn fingerprints(&self, uid: &str) -> (String, Vec<(String, String)>) {
        let out = self.gpg(&["--with-colons", "--list-keys", &format!("={uid}")]);
        let text = String::from_utf8(out).unwrap();
        let mut primary = None;
        let mut subs = Vec::new();
        let mut last = "";
        let mut caps = String::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            match f[0] {
                "pub" | "sub" => {
                    last = if f[0] == "pub" { "pub" } else { "sub" };
                    caps = f[11].to_string();
                }
                "fpr" if last == "pub" => {
                    primary.get_or_insert(f[9].to_string());
                }
                "fpr" if last == "sub" => subs.push((f[9].to_string(), caps.clone())),
                _ => {}
            }
        }
        (primary.expect("key listed"), subs)
    }

    /// Make a key without passphrase; its primary fingerprint.
    fn gen_key(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
        self.gpg(&["--quick-gen-key", uid, algo, usage, expire]);
        self.fingerprints(uid).0
    }

    fn export(&self, fpr: &str, armor: bool) -> Vec<u8> {
        let out = if armor {
            self.gpg(&["--armor", "--export", fpr])
        } else {
            self.gpg(&["--export", fpr])
        };
        assert!(!out.is_empty(), "nothing exported for {fpr}");
        out
    }

    fn keyring(&self, fpr: &str) -> Keyring {
        Keyring::from_bytes(&self.export(fpr, false)).unwrap()
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        // Stop the agent started for this home (by gpg or by ostree's gpgme).
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// A throw-away archive-mode ostree repository.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let r = Repo { dir };
        run(Command::new("ostree")
            .arg(format!("--repo={}", r.repo().display()))
            .args(["init", "--mode=archive"]));
        r
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn ostree(&self, args: &[&str]) -> Vec<u8> {
        run(Command::new("ostree")
            .arg(args[0])
            .arg(format!("--repo={}", self.repo().display()))
            .args(&args[1..]))
    }

    /// Commit a small tree on `branch`; the commit checksum.
    fn commit(&self, branch: &str, content: &str) -> String {
        let tree = self.dir.path().join(format!("tree-{branch}"));
        std::fs::create_dir_all(tree.join("usr/share")).unwrap();
        std::fs::write(tree.join("usr/share/file"), content).unwrap();
        let out = self.ostree(&[
            "commit",
            "-b",
            branch,
            &format!("--tree=dir={}", tree.display()),
            "-s",
            "test commit",
        ]);
        let c = String::from_utf8(out).unwrap().trim().to_string();
        assert_eq!(c.len(), 64, "commit checksum {c:?}");
        c
    }

    fn gpg_sign(&self, commit: &str, home: &GpgHome, key: &str) {
        self.ostree(&[
            "gpg-sign",
            &format!("--gpg-homedir={}", home.path().display()),
            commit,
            key,
        ]);
    }

    fn object(&self, commit: &str, ext: &str) -> PathBuf {
        self.repo()
            .join("objects")
            .join(&commit[..2])
            .join(format!("{}.{ext}", &commit[2..]))
    }

    fn commit_bytes(&self, commit: &str) -> Vec<u8> {
        std::fs::read(self.object(commit, "commit")).unwrap()
    }

    fn commitmeta(&self, commit: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object(commit, "commitmeta")).ok()
    }
}

fn gpg_signer(fpr: &str, uid: &str, subkey: Option<&str>) -> Signer {
    Signer {
        kind: SigKind::Gpg,
        key: fpr.to_string(),
        user_id: Some(uid.to_string()),
        subkey: subkey.map(str::to_string),
    }
}

fn assert_only_good(v: &Verdict, expected: &[Signer]) {
    assert_eq!(v.good, expected, "{v:#?}");
    assert!(v.bad.is_empty(), "{v:#?}");
}

fn assert_only_bad(v: &Verdict, needles: &[&str]) {
    assert!(v.good.is_empty(), "{v:#?}");
    assert_eq!(v.bad.len(), 1, "{v:#?}");
    for n in needles {
        assert!(
            v.bad[0].contains(n),
            "{:?} does not mention {n:?}",
            v.bad[0]
        );
    }
}

fn gpgsigs(sigs: &[Vec<u8>]) -> Vec<u8> {
    dict(vec![(GPG_KEY, bytes_list(sigs), "aay")]).to_bytes()
}

/// Sign with a primary key, check with binary, armored and file keyrings;
/// a changed byte makes the signature bad.
fn primary_key_signs_commit(algo: &str) {
    let home = GpgHome::new();
    let uid = format!("Alice {algo} <alice@example.com>");
    let fpr = home.gen_key(&uid, algo, "sign", "never");
    // An encryption subkey must not get in the way.
    home.gpg(&[
        "--quick-add-key",
        &fpr,
        if algo == "ed25519" {
            "cv25519"
        } else {
            "rsa2048"
        },
        "encr",
    ]);

    let repo = Repo::new();
    let c = repo.commit("main", "hello");
    repo.gpg_sign(&c, &home, &fpr);
    let data = repo.commit_bytes(&c);
    let meta = repo.commitmeta(&c).expect("gpg-sign wrote .commitmeta");
    assert_eq!(meta_bytes_list(&meta, GPG_KEY).unwrap().len(), 1);

    let want = [gpg_signer(&fpr, &uid, None)];
    let binary = Keyring::from_bytes(&home.export(&fpr, false)).unwrap();
    let armored = Keyring::from_bytes(&home.export(&fpr, true)).unwrap();
    let file = home.path().join("key.asc");
    std::fs::write(&file, home.export(&fpr, true)).unwrap();
    let loaded = Keyring::load(&file).unwrap();
    for k in [&binary, &armored, &loaded] {
        assert_eq!(k.fingerprints(), std::slice::from_ref(&fpr));
        let v = verify_gpg(&data, Some(&meta), k);
        assert_only_good(&v, &want);
        assert_eq!(v.require_good("commit").unwrap(), &want[0]);
    }

    let mut changed = data.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 1;
    let v = verify_gpg(&changed, Some(&meta), &binary);
    assert_only_bad(&v, &["bad signature", &fpr, "data does not match"]);
    assert!(!v.bad[0].contains('\n'), "{v:#?}");
    assert!(v.require_good("commit").is_err());
}

#[test]
fn gpg_ed25519_primary_key_signs_commit() {
    primary_key_signs_commit("ed25519");
}

#[test]
fn gpg_rsa_primary_key_signs_commit() {
    primary_key_signs_commit("rsa2048");
}

#[test]
fn gpg_primary_user_id() {
    let home = GpgHome::new();
    let first = "First <first@example.com>";
    let second = "Second <second@example.com>";
    let fpr = home.gen_key(first, "ed25519", "sign", "never");
    let repo = Repo::new();
    let c = repo.commit("main", "uids");
    repo.gpg_sign(&c, &home, &fpr);
    let data = repo.commit_bytes(&c);
    let meta = repo.commitmeta(&c).unwrap();
    let uid_now = || {
        verify_gpg(&data, Some(&meta), &home.keyring(&fpr)).good[0]
            .user_id
            .clone()
    };
    assert_eq!(uid_now().as_deref(), Some(first));
    // Self-signatures have a resolution of a second.
    std::thread::sleep(Duration::from_millis(1100));
    home.gpg(&["--quick-add-uid", &fpr, second]);
    // No primary flag: the newest user id, as gpg lists it.
    assert_eq!(uid_now().as_deref(), Some(second));
    home.gpg(&["--quick-set-primary-uid", &fpr, first]);
    assert_eq!(uid_now().as_deref(), Some(first));
    // A revoked user id is never the one shown.
    home.gpg(&["--quick-revoke-uid", &fpr, first]);
    assert_eq!(uid_now().as_deref(), Some(second));
}

#[test]
fn gpg_unknown_key_is_bad() {
    let alice = GpgHome::new();
    let a = alice.gen_key("Alice <alice@example.com>", "ed25519", "sign", "never");
    let bob = GpgHome::new();
    let b = bob.gen_key("Bob <bob@example.com>", "ed25519", "sign", "never");

    let repo = Repo::new();
    let c = repo.commit("main", "x");
    repo.gpg_sign(&c, &alice, &a);
    let data = repo.commit_bytes(&c);
    let meta = repo.commitmeta(&c).unwrap();

    let v = verify_gpg(&data, Some(&meta), &bob.keyring(&b));
    // The issuer is named (at least by its key id, the low 64 bits).
    assert_only_bad(&v, &["unknown key", &a[24..]]);
    // An empty keyring trusts nobody.
    assert_only_bad(
        &verify_gpg(&data, Some(&meta), &Keyring::new()),
        &["unknown key"],
    );
}

#[test]
fn gpg_unsigned_commit() {
    let home = GpgHome::new();
    let fpr = home.gen_key("Carol <carol@example.com>", "ed25519", "sign", "never");
    let repo = Repo::new();
    let c = repo.commit("main", "unsigned");
    assert!(repo.commitmeta(&c).is_none());
    let v = verify_gpg(&repo.commit_bytes(&c), None, &home.keyring(&fpr));
    assert!(v.is_unsigned(), "{v:#?}");
    let e = v.require_good("commit").unwrap_err().to_string();
    assert!(e.contains("no signatures"), "{e}");

    // Detached metadata with only ed25519 signatures: no OpenPGP ones.
    let other = dict(vec![(
        "ostree.sign.ed25519",
        bytes_list(&[vec![0u8; 64]]),
        "aay",
    )])
    .to_bytes();
    let v = verify_gpg(&repo.commit_bytes(&c), Some(&other), &home.keyring(&fpr));
    assert!(v.is_unsigned(), "{v:#?}");
}

#[test]
fn gpg_garbage_signatures_are_bad_with_reason() {
    let home = GpgHome::new();
    let uid = "Dave <dave@example.com>";
    let fpr = home.gen_key(uid, "ed25519", "sign", "never");
    let repo = Repo::new();
    let c = repo.commit("main", "x");
    repo.gpg_sign(&c, &home, &fpr);
    let data = repo.commit_bytes(&c);
    let good = meta_bytes_list(&repo.commitmeta(&c).unwrap(), GPG_KEY).unwrap()[0].clone();

    let garbage = vec![
        b"this is not an OpenPGP packet".to_vec(),
        good[..good.len() / 2].to_vec(), // truncated
        vec![],
    ];
    let mut all = vec![good.clone()];
    all.extend(garbage.iter().cloned());
    let v = verify_gpg(&data, Some(&gpgsigs(&all)), &home.keyring(&fpr));
    assert_eq!(v.good, [gpg_signer(&fpr, uid, None)], "{v:#?}");
    assert_eq!(v.bad.len(), garbage.len(), "{v:#?}");
    for (i, b) in v.bad.iter().enumerate() {
        assert!(b.starts_with(&format!("signature #{}", i + 2)), "{b}");
        assert!(b.contains("malformed"), "{b}");
    }
    // Good overall: ostree needs one good signature.
    assert!(v.require_good("commit").is_ok());

    // Only garbage: bad, and the error lists the reasons.
    let v = verify_gpg(&data, Some(&gpgsigs(&garbage)), &home.keyring(&fpr));
    assert!(v.good.is_empty());
    let e = v.require_good("commit").unwrap_err().to_string();
    assert!(e.contains("malformed"), "{e}");

    // The signature value itself tampered with (the digest prefix in the
    // packet still matches): a bad signature, not a malformed one.
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let v = verify_gpg(&data, Some(&gpgsigs(&[tampered])), &home.keyring(&fpr));
    assert_only_bad(&v, &["bad signature", &fpr]);

    // Every single-byte change of the signature or of the key: never a
    // panic, and never good for anyone else.
    let keyring = home.keyring(&fpr);
    for i in 0..good.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut g = good.clone();
            g[i] ^= x;
            let v = verify_gpg(&data, Some(&gpgsigs(&[g])), &keyring);
            assert!(!v.is_unsigned(), "{v:#?}");
            for s in &v.good {
                assert_eq!(s, &gpg_signer(&fpr, uid, None));
            }
        }
    }
    let key = home.export(&fpr, false);
    let sigs = gpgsigs(std::slice::from_ref(&good));
    for i in 0..key.len() {
        let mut k = key.clone();
        k[i] ^= 0x20;
        if let Ok(k) = Keyring::from_bytes(&k) {
            for s in &verify_gpg(&data, Some(&sigs), &k).good {
                assert_eq!(s, &gpg_signer(&fpr, uid, None), "key byte {i} changed");
            }
        }
    }

    // Key material instead of a signature.
    let v = verify_gpg(
        &data,
        Some(&gpgsigs(&[home.export(&fpr, false)])),
        &home.keyring(&fpr),
    );
    assert!(v.good.is_empty() && !v.bad.is_empty(), "{v:#?}");
}

#[test]
fn gpg_two_signatures_both_reported() {
    let alice = GpgHome::new();
    let (ua, ub) = ("Alice <alice@example.com>", "Bob <bob@example.com>");
    let a = alice.gen_key(ua, "ed25519", "sign", "never");
    let bob = GpgHome::new();
    let b = bob.gen_key(ub, "rsa2048", "sign", "never");

    let repo = Repo::new();
    let c = repo.commit("main", "two");
    repo.gpg_sign(&c, &alice, &a);
    repo.gpg_sign(&c, &bob, &b);
    let data = repo.commit_bytes(&c);
    let meta = repo.commitmeta(&c).unwrap();
    assert_eq!(meta_bytes_list(&meta, GPG_KEY).unwrap().len(), 2);

    // Only Alice trusted: one good, one bad (unknown key).
    let v = verify_gpg(&data, Some(&meta), &alice.keyring(&a));
    assert_eq!(v.good, [gpg_signer(&a, ua, None)], "{v:#?}");
    assert_eq!(v.bad.len(), 1, "{v:#?}");
    assert!(v.bad[0].starts_with("signature #2") && v.bad[0].contains("unknown key"));

    // Both trusted, through merge, through concatenated armored files, and
    // through concatenated binary exports.
    let mut merged = alice.keyring(&a);
    merged.merge(bob.keyring(&b));
    let mut armored = alice.export(&a, true);
    armored.extend(bob.export(&b, true));
    let mut binary = alice.export(&a, false);
    binary.extend(bob.export(&b, false));
    for k in [
        merged,
        Keyring::from_bytes(&armored).unwrap(),
        Keyring::from_bytes(&binary).unwrap(),
    ] {
        assert_eq!(k.fingerprints(), [a.clone(), b.clone()]);
        let v = verify_gpg(&data, Some(&meta), &k);
        assert_only_good(&v, &[gpg_signer(&a, ua, None), gpg_signer(&b, ub, None)]);
    }

    // One good and one bad signature (data signed by Bob replaced by a
    // signature over other data).
    let other = repo.commit("other", "other");
    repo.gpg_sign(&other, &bob, &b);
    let bob_other = meta_bytes_list(&repo.commitmeta(&other).unwrap(), GPG_KEY).unwrap()[0].clone();
    let alice_sig = meta_bytes_list(&meta, GPG_KEY).unwrap()[0].clone();
    let mut both = alice.keyring(&a);
    both.merge(bob.keyring(&b));
    let v = verify_gpg(&data, Some(&gpgsigs(&[alice_sig, bob_other])), &both);
    assert_eq!(v.good, [gpg_signer(&a, ua, None)], "{v:#?}");
    assert_eq!(v.bad.len(), 1, "{v:#?}");
    assert!(
        v.bad[0].contains("bad signature") && v.bad[0].contains(&b),
        "{v:#?}"
    );
}

/// `key` with a (gpg 1.x style) trust packet after each signature packet.
fn insert_trust_packets(home: &GpgHome, key: &[u8]) -> Vec<u8> {
    let file = home.path().join("key-for-listing.gpg");
    std::fs::write(&file, key).unwrap();
    let listing = String::from_utf8(home.gpg(&["--list-packets", file.to_str().unwrap()])).unwrap();
    // "# off=0 ctb=98 tag=6 hlen=2 plen=51"
    let mut out = Vec::new();
    let mut inserted = 0;
    for line in listing.lines().filter(|l| l.starts_with("# off=")) {
        let field = |name: &str| -> usize {
            let f = line
                .split_whitespace()
                .find(|f| f.starts_with(name))
                .unwrap();
            f[name.len()..].parse().unwrap()
        };
        let (off, hlen, plen, tag) = (field("off="), field("hlen="), field("plen="), field("tag="));
        out.extend_from_slice(&key[off..off + hlen + plen]);
        if tag == 2 {
            out.extend_from_slice(&[0xb0, 0x02, 0x00, 0x00]);
            inserted += 1;
        }
    }
    assert!(inserted >= 2);
    out
}

#[test]
fn gpg_subkey_signature_attributed_to_primary() {
    let home = GpgHome::new();
    let uid = "Erin <erin@example.com>";
    let fpr = home.gen_key(uid, "ed25519", "sign", "never");
    home.gpg(&["--quick-add-key", &fpr, "ed25519", "sign"]);
    let (_, subs) = home.fingerprints(uid);
    assert_eq!(subs.len(), 1);
    let sub = subs[0].0.clone();

    let repo = Repo::new();
    let c = repo.commit("main", "sub");
    // Asked for the primary key, gpg signs with the signing subkey.
    repo.gpg_sign(&c, &home, &fpr);
    let data = repo.commit_bytes(&c);
    let meta = repo.commitmeta(&c).unwrap();
    let v = verify_gpg(&data, Some(&meta), &home.keyring(&fpr));
    assert_only_good(&v, &[gpg_signer(&fpr, uid, Some(&sub))]);

    // A keyring in the legacy pubring.gpg layout, with a trust packet after
    // every signature packet, works the same.
    let key = home.export(&fpr, false);
    let with_trust = insert_trust_packets(&home, &key);
    let v = verify_gpg(
        &data,
        Some(&meta),
        &Keyring::from_bytes(&with_trust).unwrap(),
    );
    assert_only_good(&v, &[gpg_signer(&fpr, uid, Some(&sub))]);

    // The same signature, once the subkey is revoked, is bad.
    let edit = home
        .cmd()
        .args(["--command-fd", "0", "--edit-key", &fpr])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut edit = edit;
        edit.stdin
            .take()
            .unwrap()
            .write_all(b"key 1\nrevkey\ny\n0\n\ny\nsave\n")
            .unwrap();
        assert!(edit.wait().unwrap().success());
    }
    let v = verify_gpg(&data, Some(&meta), &home.keyring(&fpr));
    assert_only_bad(&v, &["revoked", &sub, &fpr]);
}

#[test]
fn gpg_summary_signature() {
    let home = GpgHome::new();
    let uid = "Summary Signer <summary@example.com>";
    let fpr = home.gen_key(uid, "rsa2048", "sign", "never");
    let repo = Repo::new();
    repo.commit("main", "s");
    repo.ostree(&[
        "summary",
        "-u",
        &format!("--gpg-sign={fpr}"),
        &format!("--gpg-homedir={}", home.path().display()),
    ]);
    let summary = std::fs::read(repo.repo().join("summary")).unwrap();
    let sig = std::fs::read(repo.repo().join("summary.sig")).unwrap();
    let v = verify_gpg(&summary, Some(&sig), &home.keyring(&fpr));
    assert_only_good(&v, &[gpg_signer(&fpr, uid, None)]);

    let mut changed = summary.clone();
    changed.push(0);
    assert_only_bad(
        &verify_gpg(&changed, Some(&sig), &home.keyring(&fpr)),
        &["bad signature"],
    );
}

#[test]
fn gpg_expired_key_is_bad() {
    // A key valid for a day: good now, bad once it has expired.
    let home = GpgHome::new();
    let uid = "Frank <frank@example.com>";
    let fpr = home.gen_key(uid, "ed25519", "sign", "1d");
    let repo = Repo::new();
    let c = repo.commit("main", "e");
    repo.gpg_sign(&c, &home, &fpr);
    let data = repo.commit_bytes(&c);
    let meta = repo.commitmeta(&c).unwrap();
    let k = home.keyring(&fpr);
    assert_only_good(
        &verify_gpg(&data, Some(&meta), &k),
        &[gpg_signer(&fpr, uid, None)],
    );
    let later = SystemTime::now() + Duration::from_secs(2 * 86400);
    assert_only_bad(
        &verify_gpg_at(&data, Some(&meta), &k, later),
        &["expired key", &fpr],
    );

    // A key made (and used) in 2020 that expired the next day.
    let old = GpgHome::new();
    let ouid = "Old <old@example.com>";
    let ofpr = {
        old.gpg(&[
            "--faked-system-time",
            "20200101T000000!",
            "--quick-gen-key",
            ouid,
            "rsa2048",
            "sign",
            "1d",
        ]);
        old.fingerprints(ouid).0
    };
    let file = repo.object(&c, "commit");
    let sig = old.gpg(&[
        "--faked-system-time",
        "20200101T010000!",
        "--local-user",
        &ofpr,
        "--detach-sign",
        "--output",
        "-",
        file.to_str().unwrap(),
    ]);
    let meta = gpgsigs(&[sig]);
    let k = old.keyring(&ofpr);
    assert_only_bad(
        &verify_gpg(&data, Some(&meta), &k),
        &["expired key", "2020-01-02"],
    );
    // At the time it was made, it was good.
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_840_400 + 60);
    assert_only_good(
        &verify_gpg_at(&data, Some(&meta), &k, then),
        &[gpg_signer(&ofpr, ouid, None)],
    );
}

#[test]
fn gpg_revoked_key_is_bad() {
    let home = GpgHome::new();
    let uid = "Grace <grace@example.com>";
    let fpr = home.gen_key(uid, "ed25519", "sign", "never");
    let repo = Repo::new();
    let c = repo.commit("main", "r");
    repo.gpg_sign(&c, &home, &fpr);
    let data = repo.commit_bytes(&c);
    let meta = repo.commitmeta(&c).unwrap();
    let before = home.keyring(&fpr);
    assert_only_good(
        &verify_gpg(&data, Some(&meta), &before),
        &[gpg_signer(&fpr, uid, None)],
    );

    // Import the revocation certificate gpg made with the key.
    let rev = home.path().join(format!("openpgp-revocs.d/{fpr}.rev"));
    let text = std::fs::read_to_string(&rev)
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    let armed = home.path().join("revoke.asc");
    std::fs::write(&armed, text).unwrap();
    home.gpg(&["--import", armed.to_str().unwrap()]);
    let after = home.keyring(&fpr);
    assert_only_bad(&verify_gpg(&data, Some(&meta), &after), &["revoked", &fpr]);
}

#[test]
fn gpg_signature_modes_and_digests() {
    let home = GpgHome::new();
    let uid = "Heidi <heidi@example.com>";
    let fpr = home.gen_key(uid, "rsa2048", "sign", "never");
    let repo = Repo::new();
    let c = repo.commit("main", "modes");
    let data = repo.commit_bytes(&c);
    let file = repo.object(&c, "commit");
    let sign = |extra: &[&str]| {
        let mut args = vec!["--local-user", &fpr, "--detach-sign", "--output", "-"];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        gpgsigs(&[home.gpg(&args)])
    };
    let k = home.keyring(&fpr);
    let good = [gpg_signer(&fpr, uid, None)];
    for digest in ["SHA1", "SHA256", "SHA512"] {
        let v = verify_gpg(&data, Some(&sign(&["--digest-algo", digest])), &k);
        assert_only_good(&v, &good);
    }
    let v = verify_gpg(&data, Some(&sign(&["--digest-algo", "MD5"])), &k);
    assert_only_bad(&v, &["MD5"]);
    let v = verify_gpg(&data, Some(&sign(&["--textmode"])), &k);
    assert_only_bad(&v, &["text-mode"]);
    // A signature over other bytes (a clearsigned or inline-signed message
    // is not a detached signature either).
    let inline = home.gpg(&[
        "--local-user",
        &fpr,
        "--sign",
        "--output",
        "-",
        file.to_str().unwrap(),
    ]);
    let v = verify_gpg(&data, Some(&gpgsigs(&[inline])), &k);
    assert!(v.good.is_empty() && !v.bad.is_empty(), "{v:#?}");
}

/// Does ostree itself (`pull-local --gpg-verify` into a fresh repository
/// whose remote trusts `keyring`) accept `branch` of `src` as signed?
fn ostree_accepts(src: &Repo, branch: &str, keyring: &[u8]) -> bool {
    let dst = Repo::new();
    let keys = dst.dir.path().join("keys.gpg");
    std::fs::write(&keys, keyring).unwrap();
    dst.ostree(&[
        "remote",
        "add",
        &format!("--gpg-import={}", keys.display()),
        "origin",
        &format!("file://{}", src.repo().display()),
    ]);
    Command::new("ostree")
        .arg("pull-local")
        .arg(format!("--repo={}", dst.repo().display()))
        .args(["--remote=origin", "--gpg-verify"])
        .arg(src.repo())
        .arg(branch)
        .output()
        .unwrap()
        .status
        .success()
}

/// Our verdicts (at least one good signature or not) match ostree's own,
/// case by case.
#[test]
fn gpg_verdicts_agree_with_ostree() {
    let home = GpgHome::new();
    let a = home.gen_key("Good <good@example.com>", "ed25519", "sign", "never");
    home.gpg(&[
        "--faked-system-time",
        "20200101T000000!",
        "--quick-gen-key",
        "Expired <expired@example.com>",
        "rsa2048",
        "sign",
        "1d",
    ]);
    let b = home.fingerprints("Expired <expired@example.com>").0;
    let c = home.gen_key("Revoked <revoked@example.com>", "ed25519", "sign", "never");
    let d = home.gen_key("Subkey <subkey@example.com>", "rsa2048", "sign", "never");
    home.gpg(&["--quick-add-key", &d, "ed25519", "sign"]);
    let d_sub = home.fingerprints("Subkey <subkey@example.com>").1[0]
        .0
        .clone();

    let repo = Repo::new();
    let commit = repo.commit("main", "oracle");
    let data = repo.commit_bytes(&commit);
    let file = repo.object(&commit, "commit");
    let sign = |key: &str, faked: Option<&str>| {
        let mut args = vec![];
        if let Some(t) = faked {
            args.extend(["--faked-system-time", t]);
        }
        args.extend(["--local-user", key, "--detach-sign", "--output", "-"]);
        args.push(file.to_str().unwrap());
        home.gpg(&args)
    };
    repo.gpg_sign(&commit, &home, &a);
    let sig_a = meta_bytes_list(&repo.commitmeta(&commit).unwrap(), GPG_KEY).unwrap()[0].clone();
    let sig_b = sign(&b, Some("20200101T010000!"));
    let sig_c = sign(&c, None);
    let sig_d = sign(&d, None); // made by the subkey
    let other = home.path().join("other");
    std::fs::write(&other, b"other data").unwrap();
    let sig_other = home.gpg(&[
        "--local-user",
        &a,
        "--detach-sign",
        "--output",
        "-",
        other.to_str().unwrap(),
    ]);
    let key = |f: &str| home.export(f, false);
    let keys = |fs: &[&str]| fs.iter().flat_map(|f| key(f)).collect::<Vec<u8>>();
    let (key_c_before, key_d_before) = (key(&c), key(&d));

    // Revoke C, and D's subkey.
    let rev = home.path().join(format!("openpgp-revocs.d/{c}.rev"));
    let text = std::fs::read_to_string(&rev)
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    let armed = home.path().join("revoke.asc");
    std::fs::write(&armed, text).unwrap();
    home.gpg(&["--import", armed.to_str().unwrap()]);
    let mut edit = home
        .cmd()
        .args(["--command-fd", "0", "--edit-key", &d])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        edit.stdin
            .take()
            .unwrap()
            .write_all(b"key 1\nrevkey\ny\n0\n\ny\nsave\n")
            .unwrap();
    }
    assert!(edit.wait().unwrap().success());

    // (what, signatures, trusted keys, good?)
    type Case<'a> = (&'a str, Vec<Vec<u8>>, Vec<u8>, bool);
    let cases: Vec<Case> = vec![
        ("good", vec![sig_a.clone()], key(&a), true),
        ("unknown key", vec![sig_a.clone()], key(&c), false),
        ("expired key", vec![sig_b.clone()], key(&b), false),
        (
            "expired and good",
            vec![sig_b.clone(), sig_a.clone()],
            keys(&[&a, &b]),
            true,
        ),
        (
            "unknown and good",
            vec![sig_c.clone(), sig_a.clone()],
            key(&a),
            true,
        ),
        ("before revocation", vec![sig_c.clone()], key_c_before, true),
        ("revoked key", vec![sig_c.clone()], key(&c), false),
        ("subkey", vec![sig_d.clone()], key_d_before, true),
        ("revoked subkey", vec![sig_d.clone()], key(&d), false),
        ("signature of other data", vec![sig_other], key(&a), false),
    ];
    for (what, sigs, keyring, expected) in cases {
        let meta = gpgsigs(&sigs);
        std::fs::write(repo.object(&commit, "commitmeta"), &meta).unwrap();
        let v = verify_gpg(&data, Some(&meta), &Keyring::from_bytes(&keyring).unwrap());
        assert_eq!(v.is_good(), expected, "{what}: {v:#?}");
        assert_eq!(
            ostree_accepts(&repo, "main", &keyring),
            expected,
            "{what}: ostree"
        );
        if what == "subkey" {
            assert_eq!(v.good[0].key, d);
            assert_eq!(v.good[0].subkey.as_deref(), Some(d_sub.as_str()));
        }
    }

    // A deliberate difference: ostree hands all the signatures to gpgme in
    // one buffer, so one malformed blob makes it reject the lot ("GPGME: No
    // data"); here each blob is judged alone, the good one counts and the
    // malformed one is reported.
    let meta = gpgsigs(&[b"garbage".to_vec(), sig_a.clone()]);
    std::fs::write(repo.object(&commit, "commitmeta"), &meta).unwrap();
    let v = verify_gpg(&data, Some(&meta), &Keyring::from_bytes(&key(&a)).unwrap());
    assert_eq!((v.good.len(), v.bad.len()), (1, 1), "{v:#?}");
    assert!(!ostree_accepts(&repo, "main", &key(&a)));
}

#[test]
fn gpg_keyring_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gpg");
    let e = format!("{:#}", Keyring::load(&missing).unwrap_err());
    assert!(e.contains("nope.gpg"), "{e}");
    for bad in [&b""[..], b"\n\n", b"not a key", &[0x99, 1, 2, 3]] {
        assert!(Keyring::from_bytes(bad).is_err(), "{bad:?}");
    }
    // A secret key export is not a public keyring.
    let home = GpgHome::new();
    let fpr = home.gen_key("Secret <secret@example.com>", "ed25519", "sign", "never");
    // Nor is GnuPG's own key store.
    let e = format!(
        "{:#}",
        Keyring::load(&home.path().join("pubring.kbx")).unwrap_err()
    );
    assert!(e.contains("keybox") && e.contains("gpg --export"), "{e}");
    let secret = home.gpg(&["--export-secret-keys", &fpr]);
    assert!(Keyring::from_bytes(&secret).is_err());
    let secret = home.gpg(&["--armor", "--export-secret-keys", &fpr]);
    let e = format!("{:#}", Keyring::from_bytes(&secret).unwrap_err());
    assert!(e.contains("not an OpenPGP public key"), "{e}");

    let e = format!(
        "{:#}",
        Keyring::from_bytes(
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
        )
        .unwrap_err()
    );
    assert!(!e.is_empty());
}

// ---------------------------------------------------------------------------
// ed25519

fn signing_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn public_b64(k: &ed25519_dalek::SigningKey) -> String {
    BASE64_STANDARD.encode(k.verifying_key().as_bytes())
}

fn ed25519_meta(sigs: &[Vec<u8>]) -> Vec<u8> {
    dict(vec![("ostree.sign.ed25519", bytes_list(sigs), "aay")]).to_bytes()
}

fn ed_signer(k: &ed25519_dalek::SigningKey) -> Signer {
    Signer {
        kind: SigKind::Ed25519,
        key: public_b64(k),
        user_id: None,
        subkey: None,
    }
}

#[test]
fn ed25519_signed_commit() {
    let repo = Repo::new();
    let c = repo.commit("main", "ed");
    let data = repo.commit_bytes(&c);
    let sk = signing_key(0x42);
    let sig = sk.sign(&data).to_bytes().to_vec();
    let meta = ed25519_meta(std::slice::from_ref(&sig));
    // Write it where ostree keeps it, and read it back from there.
    std::fs::write(repo.object(&c, "commitmeta"), &meta).unwrap();
    let meta = repo.commitmeta(&c).unwrap();

    let keys = Ed25519Keys::from_base64(&public_b64(&sk)).unwrap();
    let v = verify_ed25519(&data, Some(&meta), &keys);
    assert_only_good(&v, &[ed_signer(&sk)]);

    // Changed data.
    let mut changed = data.clone();
    changed[0] ^= 0x80;
    assert_only_bad(
        &verify_ed25519(&changed, Some(&meta), &keys),
        &["ed25519 signature #1"],
    );
    // Another key.
    let other = Ed25519Keys::from_base64(&public_b64(&signing_key(0x43))).unwrap();
    assert_only_bad(
        &verify_ed25519(&data, Some(&meta), &other),
        &["not made by any"],
    );
    // No detached metadata / no ed25519 entry.
    assert!(verify_ed25519(&data, None, &keys).is_unsigned());
    let gpg_only = gpgsigs(&[vec![1, 2, 3]]);
    assert!(verify_ed25519(&data, Some(&gpg_only), &keys).is_unsigned());

    // Mixed: trusted, untrusted, malformed.
    let untrusted = signing_key(0x44).sign(&data).to_bytes().to_vec();
    let meta = ed25519_meta(&[untrusted, sig, vec![0xaa; 10]]);
    let v = verify_ed25519(&data, Some(&meta), &keys);
    assert_eq!(v.good, [ed_signer(&sk)]);
    assert_eq!(v.bad.len(), 2, "{v:#?}");
    assert!(v.bad[0].starts_with("ed25519 signature #1"), "{v:#?}");
    assert!(
        v.bad[1].contains("malformed") && v.bad[1].contains("10 bytes"),
        "{v:#?}"
    );
}

#[test]
fn ed25519_keys_file() {
    let (k1, k2) = (signing_key(1), signing_key(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trusted.ed25519");
    std::fs::write(
        &path,
        format!(
            "# trusted keys\n\n   {}  \n# second one\n{}\n\n",
            public_b64(&k1),
            public_b64(&k2)
        ),
    )
    .unwrap();
    let keys = Ed25519Keys::load_file(&path).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.to_base64(), [public_b64(&k1), public_b64(&k2)]);
    let data = b"some commit bytes";
    let meta = ed25519_meta(&[k2.sign(data).to_bytes().to_vec()]);
    assert_only_good(&verify_ed25519(data, Some(&meta), &keys), &[ed_signer(&k2)]);

    // merge() drops duplicates.
    let mut m = Ed25519Keys::from_base64(&public_b64(&k1)).unwrap();
    m.merge(keys.clone());
    assert_eq!(m.len(), 2);

    // A bad line is an error naming the file and the line.
    std::fs::write(&path, format!("# c\n{}\n\nnot*base64\n", public_b64(&k1))).unwrap();
    let e = format!("{:#}", Ed25519Keys::load_file(&path).unwrap_err());
    assert!(
        e.contains("trusted.ed25519") && e.contains("line 4") && e.contains("base64"),
        "{e}"
    );
    // Only comments: no keys is an error for a keys file.
    std::fs::write(&path, "# nothing\n\n").unwrap();
    assert!(Ed25519Keys::load_file(&path).is_err());
}

#[test]
fn ed25519_malformed_keys() {
    let e = Ed25519Keys::from_base64("%%%not base64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not valid base64"), "{e}");
    let e = Ed25519Keys::from_base64(&BASE64_STANDARD.encode([5u8; 31]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("31 bytes") && e.contains("expected 32"), "{e}");
    // ostree's secret key format (seed ‖ public) given as a public key.
    let sk = signing_key(9);
    let secret = BASE64_STANDARD.encode(sk.to_keypair_bytes());
    let e = Ed25519Keys::from_base64(&secret).unwrap_err().to_string();
    assert!(e.contains("secret key"), "{e}");
    // A small-order point.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let e = Ed25519Keys::from_base64(&BASE64_STANDARD.encode(weak))
        .unwrap_err()
        .to_string();
    assert!(e.contains("weak"), "{e}");
}
