//! `composefs show` and `composefs ostree log` against what the real tools
//! say: a chain of four commits made by the `ostree` CLI (pulled whole, or
//! only in part), `ostree log`, `ostree checkout` counted with `find`,
//! commits signed by `ostree gpg-sign` and with ed25519 detached metadata,
//! images made by `create-image` and read by `dump.erofs`, and OCI images
//! built with umoci and read back with `skopeo inspect` and the layout's
//! own JSON files. Also the errors: unknown names, the wrong kind, damaged
//! commit streams.
//!
//! Needs ostree, gpg, umoci, skopeo, dump.erofs and GNU find on $PATH.

mod common;
#[path = "common/ostree.rs"]
#[allow(unused_imports)]
mod ostree_fixtures;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{Repo, pseudo_random, require_tool, sh, write_file};
use ostree_fixtures::{GpgHome, object_file, ostree, read_commit};

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// One commit of the chain, as made.
struct Made {
    checksum: String,
    subject: &'static str,
    body: &'static str,
    version: Option<&'static str>,
    /// `--timestamp`, and the same in seconds since the epoch.
    timestamp: &'static str,
    epoch: u64,
    /// More `ostree commit` arguments.
    extra: &'static [&'static str],
}

/// An archive repository with a chain of four commits on `main`.
struct Chain {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    /// Oldest first.
    commits: Vec<Made>,
}

impl Chain {
    fn src(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    fn tip(&self) -> &str {
        &self.commits[3].checksum
    }

    fn c(&self, i: usize) -> &str {
        &self.commits[i].checksum
    }

    /// `ostree checkout -U --force-copy` of commit `i` into a fresh
    /// directory.
    fn checkout(&self, i: usize) -> PathBuf {
        let dest = self.tmp.path().join(format!("checkout-{i}"));
        ostree(&[
            &format!("--repo={}", self.src()),
            "checkout",
            "-U",
            // Copies: ostree would hardlink files of equal content.
            "--force-copy",
            self.c(i),
            dest.to_str().unwrap(),
        ]);
        dest
    }

    /// `ostree log REF` in the source repository.
    fn ostree_log(&self, r: &str) -> String {
        ostree(&[&format!("--repo={}", self.src()), "log", r])
    }
}

/// Build the chain: files, directories, symlinks, contents above and below
/// the 64-byte inline limit (some shared), changes, deletions.
fn chain() -> Chain {
    require_tool("ostree");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("src");
    let tree = tmp.path().join("tree");
    ostree(&[
        &format!("--repo={}", repo.display()),
        "init",
        "--mode=archive",
    ]);
    let big = pseudo_random(1, 100_000);
    write_file(&tree.join("etc/os-release"), b"NAME=test\n");
    write_file(&tree.join("usr/bin/tool"), &big);
    write_file(&tree.join("usr/lib/copy-of-tool"), &big);
    write_file(&tree.join("usr/share/doc/readme"), &pseudo_random(2, 300));
    std::os::unix::fs::symlink("tool", tree.join("usr/bin/alias")).unwrap();
    std::fs::create_dir_all(tree.join("var/empty")).unwrap();

    let spec = |subject, body, version, timestamp, epoch, extra| Made {
        checksum: String::new(),
        subject,
        body,
        version,
        timestamp,
        epoch,
        extra,
    };
    let specs = [
        spec(
            "Initial import",
            "The first commit.\n\nIts body has a blank line and\nthree more lines.",
            Some("1.0"),
            "2021-01-01T10:00:00Z",
            1_609_495_200,
            &[],
        ),
        spec(
            "Second: new tool",
            "",
            Some("2.0"),
            "2021-02-02T11:30:00Z",
            1_612_265_400,
            &[],
        ),
        spec(
            "Third: drop the docs",
            "One line of body.",
            None,
            "2021-03-03T12:45:30Z",
            1_614_775_530,
            &["--add-metadata-string=custom.key=hello world"],
        ),
        spec(
            "Fourth",
            "",
            Some("4.0"),
            "2022-12-31T23:59:59Z",
            1_672_531_199,
            &[],
        ),
    ];
    let mut commits = Vec::new();
    for (i, mut m) in specs.into_iter().enumerate() {
        match i {
            1 => {
                write_file(&tree.join("usr/bin/tool"), &pseudo_random(3, 120_000));
                write_file(&tree.join("etc/new.conf"), b"key=value\n");
            }
            2 => {
                std::fs::remove_dir_all(tree.join("usr/share")).unwrap();
                write_file(&tree.join("opt/app/data"), &pseudo_random(4, 5000));
            }
            3 => {
                std::os::unix::fs::symlink("../opt/app/data", tree.join("etc/data")).unwrap();
                write_file(&tree.join("opt/app/small"), b"tiny");
            }
            _ => {}
        }
        let mut args = vec![
            format!("--repo={}", repo.display()),
            "commit".into(),
            "--branch=main".into(),
            format!("--tree=dir={}", tree.display()),
            "-s".into(),
            m.subject.into(),
            format!("--timestamp={}", m.timestamp),
        ];
        if !m.body.is_empty() {
            args.push("-m".into());
            args.push(m.body.into());
        }
        if let Some(v) = m.version {
            args.push(format!("--add-metadata-string=version={v}"));
        }
        args.extend(m.extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        m.checksum = ostree(&a).trim().to_string();
        assert_eq!(
            m.checksum.len(),
            64,
            "ostree commit printed {:?}",
            m.checksum
        );
        commits.push(m);
    }
    Chain { tmp, repo, commits }
}

fn pull(repo: &Repo, src: &str, r: &str) {
    repo.ok(&["ostree", "pull", src, r]);
}

/// A repository holding the whole chain: the tip as `main`, the others by
/// checksum.
fn pull_all(ch: &Chain) -> Repo {
    let repo = Repo::new();
    pull(&repo, ch.src(), "main");
    for i in 0..3 {
        pull(&repo, ch.src(), ch.c(i));
    }
    repo
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap()
}

fn json(repo: &Repo, args: &[&str]) -> Value {
    let out = repo.ok(args);
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "composefs {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// `ostree log` split into its per-commit blocks (each from `commit `).
fn blocks(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in log.split_inclusive('\n') {
        if l.starts_with("commit ") || out.is_empty() {
            out.push(String::new());
        }
        out.last_mut().unwrap().push_str(l);
    }
    out
}

/// Run a shell snippet and parse its output as one number.
fn number(dir: &Path, script: &str) -> u64 {
    let out = text(sh(dir, script));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{script}: not a number: {out:?}"))
}

/// What `find` says about a directory tree: (regular files as inodes,
/// directories, symlinks, other, bytes of regular files counting each
/// inode once, regular files of at most 64 bytes, distinct contents of
/// larger ones, extra names of hardlinked files).
fn find_counts(dir: &Path) -> [u64; 8] {
    require_tool("find");
    [
        number(dir, "find . -type f -printf '%i\\n' | sort -u | wc -l"),
        number(dir, "find . -type d | wc -l"),
        number(dir, "find . -type l | wc -l"),
        number(dir, "find . ! -type f ! -type d ! -type l | wc -l"),
        number(
            dir,
            "find . -type f -printf '%i %s\\n' | sort -u | awk '{s+=$2} END {print s+0}'",
        ),
        number(
            dir,
            "find . -type f -size -65c -printf '%i\\n' | sort -u | wc -l",
        ),
        number(
            dir,
            "find . -type f -size +64c -print0 | xargs -0r sha256sum | awk '{print $1}' | sort -u | wc -l",
        ),
        number(
            dir,
            "echo $(( $(find . -type f | wc -l) - $(find . -type f -printf '%i\\n' | sort -u | wc -l) ))",
        ),
    ]
}

/// The counts `show` gives commit `i`: as its image holds it — the names
/// of one file object (`ostree ls -C` checksum) are one inode, the rest
/// extra links; contents up to 128 bytes inline (the SHA-512 repository's
/// threshold, as composefs-rs stores them); objects by content, read from
/// the checkout `dir`.
fn commit_counts(ch: &Chain, i: usize, dir: &Path) -> [u64; 8] {
    use std::collections::{BTreeMap, BTreeSet};
    let out = ostree(&[&format!("--repo={}", ch.src()), "ls", "-R", "-C", ch.c(i)]);
    let (mut dirs, mut nondirs, mut other) = (0u64, 0u64, 0u64);
    let mut files: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut links: BTreeSet<String> = BTreeSet::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match line.as_bytes()[0] {
            b'd' => dirs += 1,
            b'-' => {
                nondirs += 1;
                let path = line[line.find(f[4]).unwrap() + f[4].len() + 1..].to_string();
                files
                    .entry(f[4].to_string())
                    .or_insert((f[3].parse().unwrap(), path));
            }
            b'l' => {
                nondirs += 1;
                links.insert(f[4].to_string());
            }
            _ => {
                nondirs += 1;
                other += 1;
            }
        }
    }
    let size = files.values().map(|(s, _)| s).sum();
    let inline = files.values().filter(|(s, _)| *s <= 128).count() as u64;
    let objects: BTreeSet<Vec<u8>> = files
        .values()
        .filter(|(s, _)| *s > 128)
        .map(|(_, p)| {
            use sha2::Digest;
            sha2::Sha256::digest(std::fs::read(dir.join(p.trim_start_matches('/'))).unwrap())
                .to_vec()
        })
        .collect();
    let distinct = (files.len() + links.len()) as u64 + other;
    [
        files.len() as u64,
        dirs,
        links.len() as u64,
        other,
        size,
        inline,
        objects.len() as u64,
        nondirs - distinct,
    ]
}

fn tree_counts(v: &Value) -> [u64; 8] {
    let t = &v["tree"];
    let n = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("tree.{k} missing in {t}"))
    };
    [
        n("files"),
        n("directories"),
        n("symlinks"),
        n("other"),
        n("size"),
        n("inline_files"),
        n("objects"),
        n("extra_links"),
    ]
}

// ---------------------------------------------------------------------------
// ostree log
// ---------------------------------------------------------------------------

/// With the whole chain stored, `composefs ostree log` prints exactly what
/// `ostree log` prints, from a name, a checksum or a prefix.
#[test]
fn log_matches_ostree_log() {
    let ch = chain();
    let repo = pull_all(&ch);
    let expected = ch.ostree_log("main");
    assert_eq!(blocks(&expected).len(), 4, "{expected}");
    assert_eq!(text(repo.ok(&["ostree", "log", "main"])), expected);
    assert_eq!(text(repo.ok(&["ostree", "log", "ostree/main"])), expected);
    assert_eq!(text(repo.ok(&["ostree", "log", ch.tip()])), expected);
    // From the middle, by a unique prefix.
    let from2 = ch.ostree_log(ch.c(2));
    assert_eq!(text(repo.ok(&["ostree", "log", &ch.c(2)[..12]])), from2);

    // JSON: the same commits, newest first, with their fields.
    let v = json(&repo, &["ostree", "log", "main", "--json"]);
    let commits = v["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 4);
    for (k, e) in commits.iter().enumerate() {
        let m = &ch.commits[3 - k];
        assert_eq!(e["commit"], m.checksum.as_str());
        assert_eq!(e["subject"], m.subject);
        assert_eq!(e["body"], m.body);
        assert_eq!(e["timestamp"], m.epoch);
        assert_eq!(e["date"], m.timestamp);
        match m.version {
            Some(ver) => assert_eq!(e["version"], ver),
            None => assert!(e["version"].is_null(), "{e}"),
        }
        if k < 3 {
            assert_eq!(e["parent"], ch.c(2 - k));
            assert_eq!(e["parent_stored"], true);
        } else {
            assert!(e["parent"].is_null());
        }
        // ostree's ContentChecksum line for this commit.
        let line = format!(
            "ContentChecksum:  {}",
            e["content_checksum"].as_str().unwrap()
        );
        assert!(
            blocks(&expected)[k].contains(&line),
            "{line} not in ostree log"
        );
        assert!(e.get("stat").is_none(), "no --stat, no stat: {e}");
    }
    assert_eq!(v["end"]["reason"], "root");
}

/// `-n N` shows the newest N commits (and says nothing of the rest).
#[test]
fn log_limit() {
    let ch = chain();
    let repo = pull_all(&ch);
    let b = blocks(&ch.ostree_log("main"));
    for n in 1..=4 {
        let got = text(repo.ok(&["ostree", "log", "main", "-n", &n.to_string()]));
        assert_eq!(got, b[..n].concat(), "-n {n}");
    }
    let got = text(repo.ok(&["ostree", "log", "main", "--max-count", "2"]));
    assert_eq!(got, b[..2].concat());
    let v = json(&repo, &["ostree", "log", "main", "-n", "2", "--json"]);
    assert_eq!(v["commits"].as_array().unwrap().len(), 2);
    assert_eq!(v["end"]["reason"], "limit");
    assert_eq!(v["end"]["next"], ch.c(1));
}

/// A pull stores only the commit it names: the log stops at the first
/// parent that is not stored, and says which.
#[test]
fn log_stops_where_history_is_not_stored() {
    let ch = chain();
    let b = blocks(&ch.ostree_log("main"));
    let repo = Repo::new();
    pull(&repo, ch.src(), "main");
    let missing = |c: &str| format!("(parent {c} not stored)\n");
    assert_eq!(
        text(repo.ok(&["ostree", "log", "main"])),
        format!("{}{}", b[0], missing(ch.c(2)))
    );
    // The grandparent alone does not bridge the gap.
    pull(&repo, ch.src(), ch.c(1));
    assert_eq!(
        text(repo.ok(&["ostree", "log", "main"])),
        format!("{}{}", b[0], missing(ch.c(2)))
    );
    // The parent does; then the root is missing.
    pull(&repo, ch.src(), ch.c(2));
    assert_eq!(
        text(repo.ok(&["ostree", "log", "main"])),
        format!("{}{}", b[..3].concat(), missing(ch.c(0)))
    );
    let v = json(&repo, &["ostree", "log", "main", "--json"]);
    let commits = v["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 3);
    assert_eq!(commits[2]["parent"], ch.c(0));
    assert_eq!(commits[2]["parent_stored"], false);
    assert_eq!(v["end"]["reason"], "parent-not-stored");
    assert_eq!(v["end"]["parent"], ch.c(0));
    // `show` says the same of the parent.
    let s = json(&repo, &["show", ch.c(1), "--json"]);
    assert_eq!(s["commit"]["parent"], ch.c(0));
    assert_eq!(s["commit"]["parent_stored"], false);
    let t = text(repo.ok(&["show", ch.c(1)]));
    assert!(
        t.contains(&format!("parent: {} (not stored)", ch.c(0))),
        "{t}"
    );
}

/// `--stat`: per-commit changes from the parent, per top-level directory.
#[test]
fn log_stat() {
    let ch = chain();
    let repo = pull_all(&ch);
    let v = json(&repo, &["ostree", "log", "main", "--stat", "--json"]);
    let commits = v["commits"].as_array().unwrap();
    let group = |k: usize, g: &str| -> Value {
        commits[k]["stat"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == g)
            .cloned()
            .unwrap_or_else(|| panic!("no group {g} in {}", commits[k]["stat"]))
    };
    // Second commit (index 2 from the newest): tool replaced, new.conf added.
    let s = &commits[2]["stat"];
    assert_eq!(s["total"]["added"], 1, "{s}");
    assert_eq!(s["total"]["deleted"], 0, "{s}");
    assert_eq!(s["total"]["modified"], 1, "{s}");
    let usr = group(2, "/usr");
    assert_eq!(usr["modified"], 1);
    assert_eq!(usr["bytes_added"], 120_000);
    assert_eq!(usr["bytes_removed"], 100_000);
    let etc = group(2, "/etc");
    assert_eq!(etc["added"], 1);
    assert_eq!(etc["bytes_added"], 10);
    // Third: usr/share (a directory, a directory and a file) deleted,
    // opt, opt/app, opt/app/data added.
    let usr = group(1, "/usr");
    assert_eq!(
        (usr["deleted"].as_u64(), usr["bytes_removed"].as_u64()),
        (Some(3), Some(300))
    );
    let opt = group(1, "/opt");
    assert_eq!(
        (opt["added"].as_u64(), opt["bytes_added"].as_u64()),
        (Some(3), Some(5000))
    );
    // Fourth: a symlink in /etc, a small file in /opt.
    assert_eq!(group(0, "/etc")["added"], 1);
    assert_eq!(group(0, "/opt")["added"], 1);
    assert_eq!(commits[0]["stat"]["total"]["added"], 2);
    // The root commit has no parent: no stat.
    assert!(commits[3].get("stat").is_none(), "{}", commits[3]);

    // Text: each stat table follows its commit's message.
    let t = text(repo.ok(&["ostree", "log", "main", "--stat"]));
    let b = blocks(&t);
    assert_eq!(b.len(), 4);
    for blk in &b[..3] {
        assert!(blk.contains("    path "), "{blk}");
        assert!(blk.contains("    total "), "{blk}");
    }
    assert!(!b[3].contains("    total "), "{}", b[3]);
    // Without the parent stored, no stat either.
    let tip_only = Repo::new();
    pull(&tip_only, ch.src(), "main");
    let v = json(&tip_only, &["ostree", "log", "main", "--stat", "--json"]);
    assert!(v["commits"][0].get("stat").is_none());
}

// ---------------------------------------------------------------------------
// show: ostree commits
// ---------------------------------------------------------------------------

/// `show` of a commit: its fields as ostree made them, its counts as its
/// image holds the tree (`commit_counts`).
#[test]
fn show_commit() {
    let ch = chain();
    let repo = pull_all(&ch);
    for i in 0..4 {
        let r = if i == 3 { "main" } else { ch.c(i) };
        let v = json(&repo, &["show", r, "--json"]);
        let m = &ch.commits[i];
        assert_eq!(v["kind"], "ostree-commit");
        let c = &v["commit"];
        assert_eq!(c["checksum"], m.checksum.as_str());
        assert_eq!(c["subject"], m.subject);
        assert_eq!(c["body"], m.body);
        assert_eq!(c["timestamp"], m.epoch);
        assert_eq!(c["date"], m.timestamp);
        match m.version {
            Some(ver) => assert_eq!(c["version"], ver),
            None => assert!(c["version"].is_null()),
        }
        let raw = read_commit(&ch.repo, &m.checksum);
        assert_eq!(c["root_dirtree"], raw.root_tree.to_hex().as_str());
        assert_eq!(c["root_dirmeta"], raw.root_meta.to_hex().as_str());
        match i {
            0 => assert!(c["parent"].is_null()),
            _ => {
                assert_eq!(c["parent"], ch.c(i - 1));
                assert_eq!(c["parent_stored"], true);
            }
        }
        let log = ch.ostree_log(&m.checksum);
        let line = format!(
            "ContentChecksum:  {}",
            c["content_checksum"].as_str().unwrap()
        );
        assert!(blocks(&log)[0].contains(&line), "{line}\n{log}");
        let refs: Vec<&str> = v["refs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        if i == 3 {
            assert_eq!(refs, ["ostree/main"]);
        } else {
            assert_eq!(refs, [format!("ostree/{}", m.checksum)]);
        }
        // Counts against the checkout.
        let dir = ch.checkout(i);
        assert_eq!(tree_counts(&v), commit_counts(&ch, i, &dir), "commit {i}");
        // Metadata other than version.
        let meta = c["metadata"].as_array().unwrap();
        assert!(
            meta.iter().all(|e| e["key"] != "version"),
            "version is shown on its own: {meta:?}"
        );
        let custom = meta.iter().find(|e| e["key"] == "custom.key");
        if i == 2 {
            let e = custom.expect("custom.key is shown");
            assert_eq!(e["value"], "hello world");
            assert_eq!(e["type"], "s");
        } else {
            assert!(custom.is_none());
        }
        assert_eq!(c["signatures"]["found"].as_array().unwrap().len(), 0);
    }
    // The numbers that make it a real test.
    let v = json(&repo, &["show", "main", "--json"]);
    assert_eq!(v["tree"]["objects"], 3, "{}", v["tree"]);

    // The text form.
    let t = text(repo.ok(&["show", "main"]));
    for want in [
        "kind: ostree commit\n".to_string(),
        "refs: ostree/main\n".to_string(),
        format!("checksum: {}\n", ch.tip()),
        "subject: Fourth\n".to_string(),
        "version: 4.0\n".to_string(),
        "timestamp: 2022-12-31T23:59:59Z\n".to_string(),
        format!("parent: {} (stored)\n", ch.c(2)),
        "signatures: none".to_string(),
    ] {
        assert!(t.contains(&want), "{want:?} not in:\n{t}");
    }
    let t = text(repo.ok(&["show", &format!("commits/{}", ch.c(0))]));
    assert!(t.contains("body: The first commit.\n"), "{t}");
    assert!(t.contains("version: 1.0\n"), "{t}");
    assert!(t.contains("parent: (none)\n"), "{t}");
    let t = text(repo.ok(&["show", ch.c(2)]));
    assert!(t.contains("metadata custom.key: hello world\n"), "{t}");
}

/// Signatures in the stored detached metadata: listed without keys
/// ("not verified"), verified with the right keys, rejected with others.
#[test]
fn show_signed_commits() {
    use base64::Engine as _;
    use composefs::ostree::variant::{bytes_list, dict};
    use ed25519_dalek::Signer as _;

    let ch = chain();
    let signer = GpgHome::new("Show Signer <show@example.com>");
    let stranger = GpgHome::new("Stranger <stranger@example.com>");
    signer.sign_commit(&ch.repo, ch.tip());
    // ed25519: ostree's detached metadata layout, made by hand.
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let b64 = |k: &ed25519_dalek::SigningKey| {
        base64::engine::general_purpose::STANDARD.encode(k.verifying_key().to_bytes())
    };
    let bytes = std::fs::read(object_file(&ch.repo, ch.c(2), "commit")).unwrap();
    let sigs = vec![key.sign(&bytes).to_bytes().to_vec()];
    let meta = dict(vec![("ostree.sign.ed25519", bytes_list(&sigs), "aay")]).to_bytes();
    std::fs::write(object_file(&ch.repo, ch.c(2), "commitmeta"), meta).unwrap();
    let repo = pull_all(&ch);

    // OpenPGP, no keys: the signature is listed with its key.
    let v = json(&repo, &["show", "main", "--json"]);
    let s = &v["commit"]["signatures"];
    assert_eq!(s["detached_metadata"], true);
    let found = s["found"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{s}");
    assert_eq!(found[0]["kind"], "gpg");
    assert_eq!(found[0]["key"], signer.fingerprint.to_uppercase().as_str());
    assert!(found[0]["problem"].is_null());
    assert_eq!(s["verification"]["status"], "not-verified");
    let t = text(repo.ok(&["show", "main"]));
    assert!(
        t.contains(&format!(
            "signature: OpenPGP, key {}",
            signer.fingerprint.to_uppercase()
        )),
        "{t}"
    );
    assert!(t.contains("verification: not verified (no keys)\n"), "{t}");

    // With the signer's key: good, naming the signer.
    let good = signer.keyring.to_str().unwrap();
    let v = json(&repo, &["show", "main", "--json", "--gpg-keyring", good]);
    let ver = &v["commit"]["signatures"]["verification"];
    assert_eq!(ver["status"], "good", "{ver}");
    assert!(
        ver["good"][0]
            .as_str()
            .unwrap()
            .contains(&signer.fingerprint.to_uppercase()),
        "{ver}"
    );
    let t = text(repo.ok(&["show", "main", "--gpg-keyring", good]));
    assert!(t.contains("verification: good\n"), "{t}");
    assert!(t.contains("Show Signer"), "{t}");
    // With someone else's: bad.
    let wrong = stranger.keyring.to_str().unwrap();
    let v = json(&repo, &["show", "main", "--json", "--gpg-keyring", wrong]);
    let ver = &v["commit"]["signatures"]["verification"];
    assert_eq!(ver["status"], "bad", "{ver}");
    assert_eq!(ver["bad"].as_array().unwrap().len(), 1);

    // ed25519.
    let v = json(&repo, &["show", ch.c(2), "--json"]);
    let s = &v["commit"]["signatures"];
    let found = s["found"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{s}");
    assert_eq!(found[0]["kind"], "ed25519");
    assert!(found[0]["problem"].is_null());
    assert_eq!(s["verification"]["status"], "not-verified");
    let v = json(
        &repo,
        &["show", ch.c(2), "--json", "--ed25519-key", &b64(&key)],
    );
    assert_eq!(v["commit"]["signatures"]["verification"]["status"], "good");
    let keyfile = ch.tmp.path().join("keys");
    std::fs::write(&keyfile, format!("{}\n{}\n", b64(&other), b64(&key))).unwrap();
    let v = json(
        &repo,
        &[
            "show",
            ch.c(2),
            "--json",
            "--ed25519-keyfile",
            keyfile.to_str().unwrap(),
        ],
    );
    assert_eq!(v["commit"]["signatures"]["verification"]["status"], "good");
    let v = json(
        &repo,
        &["show", ch.c(2), "--json", "--ed25519-key", &b64(&other)],
    );
    assert_eq!(v["commit"]["signatures"]["verification"]["status"], "bad");
    // Keys given, but the commit is unsigned.
    let v = json(
        &repo,
        &["show", ch.c(1), "--json", "--ed25519-key", &b64(&key)],
    );
    assert_eq!(
        v["commit"]["signatures"]["verification"]["status"],
        "unsigned"
    );
    // A bad key argument is an error, not a verdict.
    let e = repo.fail(&["show", "main", "--ed25519-key", "not-a-key"]);
    assert!(e.contains("ed25519 key"), "{e}");
}

// ---------------------------------------------------------------------------
// show: composefs images and OCI images
// ---------------------------------------------------------------------------

/// A directory with a bit of everything `create-image` takes.
fn image_dir(at: &Path) -> PathBuf {
    let d = at.join("imgdir");
    write_file(&d.join("big"), &pseudo_random(5, 200_000));
    write_file(&d.join("sub/big-copy"), &pseudo_random(5, 200_000));
    write_file(&d.join("sub/other"), &pseudo_random(6, 1000));
    write_file(&d.join("small"), b"small\n");
    std::fs::hard_link(d.join("big"), d.join("big-link")).unwrap();
    std::fs::hard_link(d.join("small"), d.join("sub/small-link")).unwrap();
    std::os::unix::fs::symlink("big", d.join("sym")).unwrap();
    std::fs::create_dir_all(d.join("empty/deeper")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    d
}

/// `dump.erofs -s`'s inode count of an image file.
fn erofs_inodes(image: &Path) -> u64 {
    require_tool("dump.erofs");
    let out = text(sh(
        Path::new("/"),
        &format!("dump.erofs -s '{}'", image.display()),
    ));
    out.lines()
        .find_map(|l| l.strip_prefix("Filesystem inode count:"))
        .unwrap_or_else(|| panic!("no inode count in:\n{out}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn show_composefs_image() {
    let repo = Repo::new();
    let dir = image_dir(&repo.scratch());
    let d = dir.to_str().unwrap();
    let digest = text(repo.ok(&["create-image", d, "--name", "n"]))
        .trim()
        .to_string();
    let v = json(&repo, &["show", "n", "--json"]);
    assert_eq!(v["kind"], "composefs-image");
    assert_eq!(v["refs"], serde_json::json!(["images/n"]));
    assert_eq!(v["image"]["digest"], digest.as_str());
    // The repository's format (composefs-rs's default, 1).
    assert_eq!(v["image"]["format_version"], 1);
    let file = repo.path.join("images").join(&digest);
    assert_eq!(v["image"]["inodes"], erofs_inodes(&file));
    assert_eq!(
        v["image"]["image_size"],
        std::fs::metadata(&file).unwrap().len()
    );
    assert_eq!(tree_counts(&v), find_counts(&dir));
    assert_eq!(v["tree"]["extra_links"], 2);
    assert_eq!(v["tree"]["other"], 1);
    // The same by digest and as images/NAME; a second name shows up.
    repo.ok(&["create-image", d, "--name", "again"]);
    let by_digest = json(&repo, &["show", &digest, "--json"]);
    assert_eq!(
        by_digest["refs"],
        serde_json::json!(["images/again", "images/n"])
    );
    assert_eq!(by_digest["tree"], v["tree"]);
    let t = text(repo.ok(&["show", "images/n"]));
    for want in [
        "kind: composefs image\n".to_string(),
        format!("digest: {digest}\n"),
        "format version: 1\n".to_string(),
        "extra hardlinks: 2\n".to_string(),
    ] {
        assert!(t.contains(&want), "{want:?} not in:\n{t}");
    }
    // Format version 2 (composefs-rs's legacy format).
    let d1 = text(repo.ok(&["create-image", d, "--name", "v2", "--erofs-version", "2"]))
        .trim()
        .to_string();
    assert_ne!(d1, digest);
    let v = json(&repo, &["show", "v2", "--json"]);
    assert_eq!(v["image"]["format_version"], 2);
    assert_eq!(v["image"]["digest"], d1.as_str());
}

fn run_ok(prog: &str, args: &[&str]) -> Vec<u8> {
    require_tool(prog);
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

#[test]
fn show_oci_image() {
    let repo = Repo::new();
    let s = repo.scratch();
    let layout = s.join("layout");
    let lp = layout.to_str().unwrap();
    let bundle = s.join("bundle");
    let bp = bundle.to_str().unwrap();
    let image = format!("{lp}:t");
    run_ok("umoci", &["init", "--layout", lp]);
    run_ok("umoci", &["new", "--image", &image]);
    run_ok("umoci", &["unpack", "--image", &image, bp]);
    let root = bundle.join("rootfs");
    write_file(&root.join("usr/bin/tool"), &pseudo_random(7, 150_000));
    write_file(&root.join("etc/conf"), b"a=1\n");
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    run_ok(
        "umoci",
        &["repack", "--refresh-bundle", "--image", &image, bp],
    );
    std::fs::remove_file(root.join("etc/conf")).unwrap();
    write_file(&root.join("opt/data"), &pseudo_random(8, 70_000));
    std::os::unix::fs::symlink("/opt/data", root.join("data")).unwrap();
    run_ok(
        "umoci",
        &["repack", "--refresh-bundle", "--image", &image, bp],
    );
    run_ok(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/usr/bin/tool",
            "--config.entrypoint",
            "--flag",
            "--config.cmd",
            "arg one",
            "--config.env",
            "GREETING=hello",
            "--config.label",
            "org.example.k=v",
            "--config.workingdir",
            "/opt",
            "--config.user",
            "1000:1000",
            "--author",
            "Test Author",
        ],
    );
    repo.ok(&["oci", "pull", &format!("oci:{lp}:t"), "--name", "x"]);

    // The layout's own documents.
    let index = read_json(&layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "t")
        .unwrap()
        .clone();
    let mdigest = desc["digest"].as_str().unwrap();
    let manifest = read_json(&blob(&layout, mdigest));
    let config = read_json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));

    let v = json(&repo, &["show", "x", "--json"]);
    assert_eq!(v["kind"], "oci-image");
    assert_eq!(v["refs"], serde_json::json!(["oci/x"]));
    let o = &v["oci"];
    assert_eq!(o["manifest_digest"], mdigest);
    assert_eq!(o["media_type"], desc["mediaType"]);
    assert_eq!(o["config_digest"], manifest["config"]["digest"]);
    assert_eq!(o["config_media_type"], manifest["config"]["mediaType"]);
    assert_eq!(o["created"], config["created"]);
    assert_eq!(o["author"], "Test Author");
    assert_eq!(o["architecture"], config["architecture"]);
    assert_eq!(o["os"], config["os"]);
    assert_eq!(
        o["entrypoint"],
        serde_json::json!(["/usr/bin/tool", "--flag"])
    );
    assert_eq!(o["entrypoint"], config["config"]["Entrypoint"]);
    assert_eq!(o["cmd"], serde_json::json!(["arg one"]));
    assert_eq!(o["env"], config["config"]["Env"]);
    assert!(
        o["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hello"),
        "{o}"
    );
    assert_eq!(o["labels"], serde_json::json!({"org.example.k": "v"}));
    assert_eq!(o["working_dir"], "/opt");
    assert_eq!(o["user"], "1000:1000");
    let layers = o["layers"].as_array().unwrap();
    let mlayers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(mlayers.len(), 2);
    let mut total = 0;
    for ((l, m), d) in layers.iter().zip(mlayers).zip(diff_ids) {
        assert_eq!(l["digest"], m["digest"]);
        assert_eq!(l["size"], m["size"]);
        assert_eq!(l["media_type"], m["mediaType"]);
        assert_eq!(&l["diff_id"], d);
        total += m["size"].as_u64().unwrap();
    }
    assert_eq!(o["compressed_size"], total);

    // skopeo's reading of the same image agrees.
    let sk: Value =
        serde_json::from_slice(&run_ok("skopeo", &["inspect", &format!("oci:{lp}:t")])).unwrap();
    assert_eq!(o["manifest_digest"], sk["Digest"]);
    assert_eq!(o["architecture"], sk["Architecture"]);
    let sk_layers: Vec<&Value> = sk["Layers"].as_array().unwrap().iter().collect();
    let our_layers: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
    assert_eq!(our_layers, sk_layers);
    let skc: Value = serde_json::from_slice(&run_ok(
        "skopeo",
        &["inspect", "--config", &format!("oci:{lp}:t")],
    ))
    .unwrap();
    assert_eq!(o["cmd"], skc["config"]["Cmd"]);

    // Counts against the merged tree umoci unpacks.
    let unpacked = s.join("unpacked");
    run_ok(
        "umoci",
        &["unpack", "--image", &image, unpacked.to_str().unwrap()],
    );
    assert_eq!(tree_counts(&v), find_counts(&unpacked.join("rootfs")));
    assert_eq!(v["tree"]["extra_links"], 1);

    let t = text(repo.ok(&["show", "oci/x"]));
    for want in [
        "kind: OCI image\n".to_string(),
        format!("manifest digest: {mdigest}\n"),
        "entrypoint: [\"/usr/bin/tool\",\"--flag\"]\n".to_string(),
        "env: GREETING=hello\n".to_string(),
        "label: org.example.k=v\n".to_string(),
        format!("layer 2: {}", mlayers[1]["digest"].as_str().unwrap()),
    ] {
        assert!(t.contains(&want), "{want:?} not in:\n{t}");
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn unknown_names_and_wrong_kinds() {
    let ch = chain();
    let repo = Repo::new();
    pull(&repo, ch.src(), "main");
    let e = repo.fail(&["show", "no-such-thing"]);
    assert!(e.contains("no-such-thing"), "{e}");
    let e = repo.fail(&["show", "no-such-thing", "--json"]);
    assert!(e.contains("no-such-thing"), "{e}");
    let e = repo.fail(&["ostree", "log", "no-such-thing"]);
    assert!(e.contains("no-such-thing"), "{e}");
    let e = repo.fail(&["show", &"0".repeat(64)]);
    assert!(e.contains(&"0".repeat(64)), "{e}");
    // An image is not an ostree commit.
    let dir = repo.scratch().join("d");
    write_file(&dir.join("f"), b"x");
    repo.ok(&["create-image", dir.to_str().unwrap(), "--name", "img"]);
    let e = repo.fail(&["ostree", "log", "img"]);
    assert!(e.contains("not an ostree commit"), "{e}");
}

/// A damaged commit stream: an error naming the commit, never a panic
/// (the test helpers check every run for panics).
#[test]
fn damaged_commit_stream() {
    use std::os::unix::fs::PermissionsExt;
    let ch = chain();
    let repo = pull_all(&ch);
    let victim = ch.c(2);
    let obj = repo.stream_object_path(&format!("ostree-commit-{victim}"));
    let good = std::fs::read(&obj).unwrap();
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    let damages: Vec<Vec<u8>> = vec![
        b"garbage, not a splitstream".to_vec(),
        good[..good.len() / 2].to_vec(),
        {
            let mut b = good.clone();
            let n = b.len();
            b[n - 10] ^= 0xff;
            b
        },
        Vec::new(),
        // A sound stream, of another commit.
        std::fs::read(repo.stream_object_path(&format!("ostree-commit-{}", ch.c(1)))).unwrap(),
    ];
    for (k, bad) in damages.iter().enumerate() {
        std::fs::write(&obj, bad).unwrap();
        // The lookup caches are copies (named after the stream object,
        // whose name a damage in place does not change; `fsck` finds such
        // damage): without them, the damaged stream is read.
        let _ = std::fs::remove_dir_all(repo.path.join("ostree/cache"));
        let e = repo.fail(&["show", victim]);
        assert!(e.contains(victim), "damage {k}: {e}");
        // The log prints the tip, then fails on the damaged parent.
        let out = repo.run(&["ostree", "log", "main"], None);
        assert!(!out.status.success(), "damage {k}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.starts_with(&format!("commit {}", ch.tip())),
            "{stdout}"
        );
        assert!(stderr.contains(victim), "damage {k}: {stderr}");
        assert!(
            repo.run(&["ostree", "log", "main", "--json"], None)
                .status
                .code()
                == Some(1)
        );
    }
    // Repaired, all is well again.
    std::fs::write(&obj, &good).unwrap();
    repo.ok(&["show", victim]);
    repo.ok(&["ostree", "log", "main"]);
}
