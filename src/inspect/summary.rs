//! The summary of one stored tree (`composefs show`): what kind it is,
//! which names point to it, how big it is (bytes of regular files, counts
//! of each kind of inode, distinct content objects), and what its kind
//! records:
//! - an ostree commit: checksum, subject, body, version, timestamp,
//!   parent, root dirtree/dirmeta, content checksum, other metadata, and
//!   the signatures in its stored detached metadata (verified only
//!   against keys the caller gives: the repository keeps no keys);
//! - an OCI image: manifest, config (platform, entrypoint, cmd, env,
//!   labels …), layers;
//! - a composefs image: digest, format version, inode count, size. What it
//!   was made from is not recorded anywhere, so it is not shown.
//!
//! The counts come from one walk through the [`Tree`] interface, keeping
//! only the set of inode numbers and object ids seen (no copy of the tree).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Cursor;

use anyhow::{Context, Result, bail};
use gvariant::{Marker, Structure, gv};
use pgp::composed::{Deserializable, DetachedSignature};
use serde::Serialize;

use super::{commit_of, content_checksum, iso_utc, load_commit, names_of};
use crate::erofs::reader::ErofsImage;
use crate::fsverity::ObjectId;
use crate::oci::store::StoredImage;
use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::commitstream::content_id;
use crate::ostree::committree::CommitTree;
use crate::ostree::signature::{
    ED25519_KEY, Ed25519Keys, GPG_KEY, Keyring, verify_ed25519, verify_gpg,
};
use crate::repository::{RefKind, Repository};
use crate::show::human_bytes;
use crate::tree::{FileData, Kind, Tree};
use crate::view::Source;
use crate::view::remote::{Opened, RemoteKind, Served};

/// Counts over a whole tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeStats {
    /// Bytes of regular files (a hardlinked file counts once).
    pub size: u64,
    /// Regular files (inodes).
    pub files: u64,
    /// Directories, the root included (as `find -type d` counts them).
    pub directories: u64,
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub other: u64,
    /// Names of an inode beyond its first (hardlinks).
    pub extra_links: u64,
    /// Distinct content objects the regular files are stored in.
    pub objects: u64,
    /// Regular files whose content is kept inline (no object).
    pub inline_files: u64,
    /// Files and symlinks of a remote tree not fetched (neither their
    /// kind nor their size is known without a request each): not in the
    /// counts above.
    #[serde(skip_serializing_if = "is_zero")]
    pub not_fetched: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Walk `tree` from its root and count. Fails on a damaged tree, or a
/// directory reachable twice (a loop).
pub fn tree_stats(tree: &dyn Tree) -> Result<TreeStats> {
    let mut st = TreeStats {
        directories: 1,
        ..TreeStats::default()
    };
    let root = tree.root();
    let mut dirs_seen: HashSet<u64> = HashSet::from([root]);
    let mut others_seen: HashSet<u64> = HashSet::new();
    let mut objects: HashSet<ObjectId> = HashSet::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in tree.readdir(dir)?.iter() {
            if tree.costly_inode(e.ino) {
                // A remote file not fetched: counted, not fetched to be
                // told apart (a file or a symlink, and its size).
                st.not_fetched += 1;
                continue;
            }
            let inode = tree.inode(e.ino)?;
            if inode.kind.is_dir() {
                if !dirs_seen.insert(e.ino) {
                    bail!(
                        "directory {:?} (inode {}) is reachable twice",
                        String::from_utf8_lossy(&e.name),
                        e.ino
                    );
                }
                st.directories += 1;
                stack.push(e.ino);
                continue;
            }
            if !others_seen.insert(e.ino) {
                st.extra_links += 1;
                continue;
            }
            match &inode.kind {
                Kind::Regular(data) => {
                    st.files += 1;
                    st.size = st.size.saturating_add(data.size());
                    match data {
                        FileData::Inline(_) => st.inline_files += 1,
                        FileData::External {
                            digest: Some(id), ..
                        } => {
                            objects.insert(*id);
                        }
                        FileData::External { .. } => {}
                    }
                }
                Kind::Symlink(_) => st.symlinks += 1,
                _ => st.other += 1,
            }
        }
    }
    st.objects = objects.len() as u64;
    Ok(st)
}

/// What kind of tree a summary is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TreeKind {
    OstreeCommit,
    OciImage,
    ComposefsImage,
}

impl TreeKind {
    pub fn describe(self) -> &'static str {
        match self {
            TreeKind::OstreeCommit => "ostree commit",
            TreeKind::OciImage => "OCI image",
            TreeKind::ComposefsImage => "composefs image",
        }
    }
}

/// The summary of a stored tree.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub kind: TreeKind,
    /// The names (refs) pointing to it: `ostree/NAME`, `oci/NAME`,
    /// `images/NAME`.
    pub refs: Vec<String>,
    pub tree: TreeStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSummary>,
}

/// An ostree commit, as its commit object and detached metadata say.
#[derive(Clone, Debug, Serialize)]
pub struct CommitSummary {
    pub checksum: String,
    pub subject: String,
    pub body: String,
    /// The metadata's `version`.
    pub version: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// The timestamp, ISO 8601 UTC.
    pub date: String,
    pub parent: Option<String>,
    /// Whether the parent commit is stored here too.
    pub parent_stored: bool,
    pub content_checksum: String,
    pub root_dirtree: String,
    pub root_dirmeta: String,
    /// The other metadata entries, in stored order.
    pub metadata: Vec<MetaEntry>,
    pub signatures: Signatures,
}

/// One commit metadata entry: its GVariant type and a short rendering.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MetaEntry {
    pub key: String,
    #[serde(rename = "type")]
    pub type_string: String,
    /// The value as text, or `<N bytes>` when it is long or binary.
    pub value: String,
}

/// The signatures stored for a commit, and what checking them said.
#[derive(Clone, Debug, Serialize)]
pub struct Signatures {
    /// Whether the commit's detached metadata (`.commitmeta`) is stored.
    pub detached_metadata: bool,
    pub found: Vec<SignatureInfo>,
    pub verification: Verification,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureKind {
    Gpg,
    Ed25519,
}

/// One signature, as far as it can be read without keys.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureInfo {
    pub kind: SignatureKind,
    /// OpenPGP: the issuer the signature names (fingerprint, else key id,
    /// upper-case hex). ed25519 signatures name no key.
    pub key: Option<String>,
    /// OpenPGP: when it was made (ISO 8601 UTC).
    pub created: Option<String>,
    /// OpenPGP: public key and hash algorithms.
    pub algorithm: Option<String>,
    /// Why it cannot be read, if it cannot.
    pub problem: Option<String>,
}

/// The outcome of checking the signatures with the keys given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyStatus {
    /// No keys given (the repository keeps none): nothing checked.
    NotVerified,
    /// Keys given, but no signature: nothing to check.
    Unsigned,
    /// At least one signature verified with a given key.
    Good,
    /// Signatures checked, none good.
    Bad,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub status: VerifyStatus,
    /// Who made each good signature.
    pub good: Vec<String>,
    /// Why each other checked signature was rejected.
    pub bad: Vec<String>,
}

/// Keys to check commit signatures with.
#[derive(Default)]
pub struct Keys {
    pub gpg: Option<Keyring>,
    pub ed25519: Option<Ed25519Keys>,
}

impl Keys {
    fn any(&self) -> bool {
        self.gpg.is_some() || self.ed25519.is_some()
    }
}

/// A pulled OCI image.
#[derive(Clone, Debug, Serialize)]
pub struct OciSummary {
    pub manifest_digest: String,
    pub media_type: Option<String>,
    pub config_digest: String,
    pub config_media_type: String,
    pub created: Option<String>,
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub layers: Vec<LayerSummary>,
    /// Sum of the layers' (compressed) sizes, as the manifest gives them.
    pub compressed_size: u64,
    /// Composefs images linked from the config: `(named ref, image id)`.
    pub composefs_images: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerSummary {
    pub digest: String,
    pub diff_id: String,
    /// Compressed size, as the manifest gives it.
    pub size: u64,
    pub media_type: String,
}

/// A composefs image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageSummary {
    /// Its fs-verity digest (its name under `images/`).
    pub digest: String,
    /// The composefs format version in its header (0 or 1).
    pub format_version: u32,
    /// The inode count in its superblock.
    pub inodes: u64,
    /// Bytes of the image file.
    pub image_size: u64,
}

/// Summarise what `name` names (resolved as [`crate::view::resolve`] does).
pub fn summarize(repo: &Repository, name: &str, keys: &Keys) -> Result<Summary> {
    let source = crate::view::resolve(repo, name)?;
    summarize_source(repo, &source, keys).with_context(|| format!("{name:?}"))
}

/// Summarise a resolved stored tree.
pub fn summarize_source(repo: &Repository, source: &Source, keys: &Keys) -> Result<Summary> {
    match source {
        Source::Commit(c) => summarize_commit(repo, c, keys),
        Source::Oci(id) => summarize_oci(repo, id, false),
        Source::OciRaw(id) => summarize_oci(repo, id, true),
        Source::Image(id) => summarize_image(repo, id),
    }
}

/// Summarise a remote tree: one of a composefs repository (its metadata
/// fetched) as a stored one; others by their kind and counts (the walk
/// lists every directory, and reads no file content).
pub fn summarize_remote(repo: &Repository, opened: &Opened, keys: &Keys) -> Result<Summary> {
    let kind = match opened.kind {
        RemoteKind::Composefs(Served::Image(id)) => return summarize_image(repo, &id),
        RemoteKind::Composefs(Served::Oci(id)) => return summarize_oci(repo, &id, false),
        RemoteKind::Composefs(Served::Commit { commit, stream }) => {
            let s = crate::ostree::cache::open_id(repo, &commit, &stream)?;
            let c = commit_of(&s, &commit)?;
            return summarize_loaded_commit(repo, &commit, s, c, keys);
        }
        RemoteKind::OstreeCommit(c) => {
            // The commit as opening it verified it; the tree from its
            // dirtrees, files not fetched for the count.
            let commit = match crate::ostree::remote::verified_head(repo, &c)? {
                Some((bytes, meta)) => {
                    let parsed = crate::ostree::objects::Commit::parse(&bytes)
                        .with_context(|| format!("ostree commit {c}"))?;
                    Some(commit_summary(
                        repo,
                        &c,
                        &parsed,
                        &bytes,
                        meta.as_deref(),
                        keys,
                    ))
                }
                None => None,
            };
            return Ok(Summary {
                kind: TreeKind::OstreeCommit,
                refs: Vec::new(),
                tree: tree_stats(opened.tree.as_ref())?,
                commit,
                oci: None,
                image: None,
            });
        }
        RemoteKind::RegistryImage => TreeKind::OciImage,
    };
    Ok(Summary {
        kind,
        refs: Vec::new(),
        tree: tree_stats(opened.tree.as_ref())?,
        commit: None,
        oci: None,
        image: None,
    })
}

fn summarize_commit(repo: &Repository, c: &Checksum, keys: &Keys) -> Result<Summary> {
    let (stream, commit) = load_commit(repo, c)?;
    summarize_loaded_commit(repo, c, stream, commit, keys)
}

/// [`summarize_commit`] of a commit's stream, its commit object checked.
fn summarize_loaded_commit(
    repo: &Repository,
    c: &Checksum,
    stream: crate::ostree::commitstream::CommitStream,
    commit: crate::ostree::objects::Commit,
    keys: &Keys,
) -> Result<Summary> {
    let commit_bytes = stream
        .metadata(c, ObjType::Commit)?
        .with_context(|| format!("stored ostree commit {c} lacks its commit object"))?
        .to_vec();
    let detached = stream
        .metadata(c, ObjType::CommitMeta)
        .with_context(|| format!("detached metadata of stored ostree commit {c}"))?
        .map(<[u8]>::to_vec);
    let summary = commit_summary(repo, c, &commit, &commit_bytes, detached.as_deref(), keys);
    let tree = CommitTree::new(stream).with_context(|| format!("stored ostree commit {c}"))?;
    let stats = tree_stats(&tree).with_context(|| format!("stored ostree commit {c}"))?;
    Ok(Summary {
        kind: TreeKind::OstreeCommit,
        refs: names_of(repo, RefKind::Stream, &content_id(c))?,
        tree: stats,
        commit: Some(summary),
        oci: None,
        image: None,
    })
}

/// What a commit object (and its detached metadata) says, signatures
/// checked against `keys`.
fn commit_summary(
    repo: &Repository,
    c: &Checksum,
    commit: &crate::ostree::objects::Commit,
    commit_bytes: &[u8],
    detached: Option<&[u8]>,
    keys: &Keys,
) -> CommitSummary {
    let parent_stored = commit
        .parent
        .is_some_and(|p| super::commit_stored(repo, &p));
    CommitSummary {
        checksum: c.to_hex(),
        subject: commit.subject.clone(),
        body: commit.body.clone(),
        version: commit.meta_string("version"),
        timestamp: commit.timestamp,
        date: iso_utc(commit.timestamp),
        parent: commit.parent.map(|p| p.to_hex()),
        parent_stored,
        content_checksum: content_checksum(commit).to_hex(),
        root_dirtree: commit.root_tree.to_hex(),
        root_dirmeta: commit.root_meta.to_hex(),
        metadata: metadata_entries(&commit.metadata)
            .into_iter()
            .filter(|e| !(e.key == "version" && e.type_string == "s"))
            .collect(),
        signatures: signatures(commit_bytes, detached, keys),
    }
}

/// An OCI image; its tree as `oci/NAME` shows it (the composefs image's),
/// or with `raw` as `oci-raw/NAME` does.
fn summarize_oci(repo: &Repository, id: &ObjectId, raw: bool) -> Result<Summary> {
    let img = StoredImage::from_stream(repo, id).with_context(|| format!("OCI image {id}"))?;
    let what = || format!("OCI image {}", img.manifest_digest);
    let config: serde_json::Value =
        serde_json::from_slice(&img.config_bytes).with_context(|| format!("{}: config", what()))?;
    let exec = config.get("config");
    let strings = |key: &str| -> Option<Vec<String>> {
        exec?.get(key)?.as_array().map(|a| {
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect()
        })
    };
    let string = |v: Option<&serde_json::Value>| -> Option<String> {
        v?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    };
    let labels = exec
        .and_then(|e| e.get("Labels"))
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let layers = img
        .manifest
        .layers
        .iter()
        .zip(&img.config.rootfs.diff_ids)
        .map(|(d, diff_id)| LayerSummary {
            digest: d.digest.to_string(),
            diff_id: diff_id.to_string(),
            size: d.size,
            media_type: d.media_type.clone(),
        })
        .collect();
    let oci = OciSummary {
        manifest_digest: img.manifest_digest.to_string(),
        media_type: img
            .manifest
            .media_type
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| crate::oci::spec::document_media_type(&img.manifest_bytes)),
        config_digest: img.manifest.config.digest.to_string(),
        config_media_type: img.manifest.config.media_type.clone(),
        created: img.config.created.clone(),
        author: string(config.get("author")),
        architecture: img.config.architecture.clone(),
        os: img.config.os.clone(),
        variant: img.config.variant.clone(),
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        env: strings("Env").unwrap_or_default(),
        working_dir: string(exec.and_then(|e| e.get("WorkingDir"))),
        user: string(exec.and_then(|e| e.get("User"))),
        labels,
        layers,
        compressed_size: img.size(),
        composefs_images: img
            .images
            .iter()
            .map(|(k, id)| (k.clone(), id.to_hex()))
            .collect(),
    };
    let view = if raw {
        Source::OciRaw(*id)
    } else {
        Source::Oci(*id)
    };
    let tree = view.load(repo).with_context(what)?;
    let stats = tree_stats(tree.as_ref()).with_context(what)?;
    let entry = crate::oci::pull::manifest_id(&img.manifest_digest);
    Ok(Summary {
        kind: TreeKind::OciImage,
        refs: names_of(repo, RefKind::Stream, &entry)?,
        tree: stats,
        commit: None,
        oci: Some(oci),
        image: None,
    })
}

fn summarize_image(repo: &Repository, id: &ObjectId) -> Result<Summary> {
    let what = || format!("image {id}");
    let f = repo.open_object(id).with_context(what)?;
    let img = ErofsImage::from_file(f).with_context(what)?;
    let image = ImageSummary {
        digest: id.to_hex(),
        format_version: img.header().composefs_version,
        inodes: img.superblock().inos,
        image_size: img.data().len() as u64,
    };
    let stats = tree_stats(&img).with_context(what)?;
    Ok(Summary {
        kind: TreeKind::ComposefsImage,
        refs: names_of(repo, RefKind::Image, &id.to_hex())?,
        tree: stats,
        commit: None,
        oci: None,
        image: Some(image),
    })
}

/// Longest rendering shown for a metadata value.
const MAX_VALUE: usize = 200;

/// The entries of a serialised `a{sv}`, rendered.
pub fn metadata_entries(dict: &[u8]) -> Vec<MetaEntry> {
    let mut out = Vec::new();
    for e in &*gv!("a{sv}").from_bytes(dict) {
        let (k, v) = e.to_tuple();
        let (ty, data) = v.split();
        let type_string = String::from_utf8_lossy(ty).into_owned();
        let value = render_value(v, ty)
            .filter(|s| s.chars().count() <= MAX_VALUE)
            .unwrap_or_else(|| format!("<{} bytes>", data.len()));
        out.push(MetaEntry {
            key: k.to_str().to_string(),
            type_string,
            value,
        });
    }
    out
}

/// Printable text (no control characters but tab), or `None`.
fn printable(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?;
    (!s.chars().any(|c| c.is_control() && c != '\t')).then(|| s.to_string())
}

fn render_value(v: &gvariant::Variant, ty: &[u8]) -> Option<String> {
    Some(match ty {
        b"s" => v.get(gv!("s"))?.to_str().to_string(),
        b"b" => v.get(gv!("b"))?.to_bool().to_string(),
        b"y" => v.get(gv!("y"))?.to_string(),
        b"n" => v.get(gv!("n"))?.to_string(),
        b"q" => v.get(gv!("q"))?.to_string(),
        b"i" => v.get(gv!("i"))?.to_string(),
        b"u" => v.get(gv!("u"))?.to_string(),
        b"x" => v.get(gv!("x"))?.to_string(),
        b"t" => v.get(gv!("t"))?.to_string(),
        b"d" => v.get(gv!("d"))?.to_string(),
        b"as" => {
            let items: Vec<String> = v
                .get(gv!("as"))?
                .into_iter()
                .map(|s| s.to_str().to_string())
                .collect();
            format!("[{}]", items.join(", "))
        }
        b"ay" => {
            let b: &[u8] = v.get(gv!("ay"))?;
            // A bytestring: text with its NUL terminator.
            let text = b.strip_suffix(&[0]).unwrap_or(b);
            match printable(text) {
                Some(s) if !text.is_empty() => s,
                _ if b.len() <= 64 => hex::encode(b),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// The signatures in `detached` (a commit's `.commitmeta`), read and,
/// with keys, verified over `commit_bytes`.
pub fn signatures(commit_bytes: &[u8], detached: Option<&[u8]>, keys: &Keys) -> Signatures {
    let mut found = Vec::new();
    if let Some(d) = detached {
        for e in &*gv!("a{sv}").from_bytes(d) {
            let (k, v) = e.to_tuple();
            let kind = match k.to_str() {
                GPG_KEY => SignatureKind::Gpg,
                ED25519_KEY => SignatureKind::Ed25519,
                _ => continue,
            };
            let Some(list) = v.get(gv!("aay")) else {
                found.push(SignatureInfo {
                    kind,
                    key: None,
                    created: None,
                    algorithm: None,
                    problem: Some(format!(
                        "the entry {} is of type {}, not aay",
                        k.to_str(),
                        String::from_utf8_lossy(v.split().0)
                    )),
                });
                continue;
            };
            for blob in list {
                let blob: &[u8] = blob;
                match kind {
                    SignatureKind::Gpg => found.extend(gpg_infos(blob)),
                    SignatureKind::Ed25519 => found.push(SignatureInfo {
                        kind,
                        key: None,
                        created: None,
                        algorithm: Some("ed25519".into()),
                        problem: (blob.len() != 64)
                            .then(|| format!("{} bytes, expected 64", blob.len())),
                    }),
                }
            }
        }
    }
    let mut verification = Verification {
        status: VerifyStatus::NotVerified,
        good: Vec::new(),
        bad: Vec::new(),
    };
    if keys.any() {
        if let Some(k) = &keys.gpg {
            let v = verify_gpg(commit_bytes, detached, k);
            verification
                .good
                .extend(v.good.iter().map(|s| s.to_string()));
            verification.bad.extend(v.bad);
        }
        if let Some(k) = &keys.ed25519 {
            let v = verify_ed25519(commit_bytes, detached, k);
            verification
                .good
                .extend(v.good.iter().map(|s| s.to_string()));
            verification.bad.extend(v.bad);
        }
        verification.status = if !verification.good.is_empty() {
            VerifyStatus::Good
        } else if !verification.bad.is_empty() {
            VerifyStatus::Bad
        } else if found.is_empty() {
            VerifyStatus::Unsigned
        } else {
            // Signatures only of a kind no key was given for.
            VerifyStatus::NotVerified
        };
    }
    Signatures {
        detached_metadata: detached.is_some(),
        found,
        verification,
    }
}

/// What the OpenPGP signature packets in one blob say about themselves.
fn gpg_infos(blob: &[u8]) -> Vec<SignatureInfo> {
    let malformed = |why: String| SignatureInfo {
        kind: SignatureKind::Gpg,
        key: None,
        created: None,
        algorithm: None,
        problem: Some(why),
    };
    let parsed: Vec<_> = match DetachedSignature::from_bytes_many(Cursor::new(blob)) {
        Ok(it) => it.collect(),
        Err(e) => return vec![malformed(format!("malformed OpenPGP signature: {e}"))],
    };
    if parsed.is_empty() {
        return vec![malformed("no OpenPGP signature packet".into())];
    }
    parsed
        .into_iter()
        .map(|p| match p {
            Err(e) => malformed(format!("malformed OpenPGP signature packet: {e}")),
            Ok(s) => {
                let sig = &s.signature;
                let key = if let Some(fp) = sig.issuer_fingerprint().first() {
                    Some(hex::encode_upper(fp.as_bytes()))
                } else {
                    sig.issuer_key_id()
                        .first()
                        .map(|id| hex::encode_upper(id.as_ref()))
                };
                SignatureInfo {
                    kind: SignatureKind::Gpg,
                    key,
                    created: sig.created().map(|t| iso_utc(u64::from(t.as_secs()))),
                    algorithm: sig
                        .config()
                        .map(|c| format!("{:?}/{:?}", c.pub_alg, c.hash_alg)),
                    problem: None,
                }
            }
        })
        .collect()
}

impl Summary {
    /// `key: value` lines for people (`--json` is for scripts).
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(o, "{k}: {v}");
        };
        line("kind", self.kind.describe());
        line(
            "refs",
            &if self.refs.is_empty() {
                "(none)".to_string()
            } else {
                self.refs.join(", ")
            },
        );
        if let Some(c) = &self.commit {
            commit_lines(c, &mut line);
        }
        if let Some(i) = &self.oci {
            oci_lines(i, &mut line);
        }
        if let Some(i) = &self.image {
            line("digest", &i.digest);
            line("format version", &i.format_version.to_string());
            line("inodes", &i.inodes.to_string());
            line(
                "image size",
                &format!("{} ({})", i.image_size, human_bytes(i.image_size)),
            );
        }
        let t = &self.tree;
        line("size", &format!("{} ({})", t.size, human_bytes(t.size)));
        line("files", &t.files.to_string());
        line("directories", &t.directories.to_string());
        line("symlinks", &t.symlinks.to_string());
        line("other", &t.other.to_string());
        if t.extra_links > 0 {
            line("extra hardlinks", &t.extra_links.to_string());
        }
        line("content objects", &t.objects.to_string());
        line("inline files", &t.inline_files.to_string());
        if t.not_fetched > 0 {
            line(
                "not fetched",
                &format!("{} files and symlinks (sizes unknown)", t.not_fetched),
            );
        }
        o
    }
}

/// Body lines shown in the text form.
const BODY_LINES: usize = 5;

fn commit_lines(c: &CommitSummary, line: &mut dyn FnMut(&str, &str)) {
    line("checksum", &c.checksum);
    line("subject", &c.subject);
    let body: Vec<&str> = c.body.lines().collect();
    for (i, l) in body.iter().take(BODY_LINES).enumerate() {
        line(if i == 0 { "body" } else { "     " }, l);
    }
    if body.len() > BODY_LINES {
        line(
            "     ",
            &format!("({} more lines)", body.len() - BODY_LINES),
        );
    }
    line("version", c.version.as_deref().unwrap_or("(none)"));
    line("timestamp", &c.date);
    match &c.parent {
        Some(p) if c.parent_stored => line("parent", &format!("{p} (stored)")),
        Some(p) => line("parent", &format!("{p} (not stored)")),
        None => line("parent", "(none)"),
    }
    line("content checksum", &c.content_checksum);
    line("root dirtree", &c.root_dirtree);
    line("root dirmeta", &c.root_dirmeta);
    for m in &c.metadata {
        line(&format!("metadata {}", m.key), &m.value);
    }
    let s = &c.signatures;
    if s.found.is_empty() {
        line(
            "signatures",
            if s.detached_metadata {
                "none"
            } else {
                "none (no detached metadata stored)"
            },
        );
    }
    for sig in &s.found {
        let mut d = match sig.kind {
            SignatureKind::Gpg => format!(
                "OpenPGP, key {}",
                sig.key.as_deref().unwrap_or("(no issuer given)")
            ),
            SignatureKind::Ed25519 => "ed25519 (names no key)".to_string(),
        };
        if let Some(t) = &sig.created {
            let _ = write!(d, ", made {t}");
        }
        if let Some(a) = sig
            .algorithm
            .as_deref()
            .filter(|_| sig.kind == SignatureKind::Gpg)
        {
            let _ = write!(d, ", {a}");
        }
        if let Some(p) = &sig.problem {
            let _ = write!(d, ", unreadable: {p}");
        }
        line("signature", &d);
    }
    let v = &s.verification;
    match v.status {
        VerifyStatus::NotVerified if s.found.is_empty() => {}
        VerifyStatus::NotVerified => line("verification", "not verified (no keys)"),
        VerifyStatus::Unsigned => line("verification", "unsigned"),
        VerifyStatus::Good => line("verification", "good"),
        VerifyStatus::Bad => line("verification", "bad"),
    }
    for g in &v.good {
        line("good signature", g);
    }
    for b in &v.bad {
        line("bad signature", b);
    }
}

fn oci_lines(i: &OciSummary, line: &mut dyn FnMut(&str, &str)) {
    let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"));
    line("manifest digest", &i.manifest_digest);
    line("media type", i.media_type.as_deref().unwrap_or("(none)"));
    line("config digest", &i.config_digest);
    line("created", i.created.as_deref().unwrap_or("(unknown)"));
    if let Some(a) = &i.author {
        line("author", a);
    }
    let platform = match &i.variant {
        Some(v) => format!("{}/{}/{v}", i.os, i.architecture),
        None => format!("{}/{}", i.os, i.architecture),
    };
    line("platform", &platform);
    if let Some(e) = &i.entrypoint {
        line("entrypoint", &list(e));
    }
    if let Some(c) = &i.cmd {
        line("cmd", &list(c));
    }
    for e in &i.env {
        line("env", e);
    }
    if let Some(w) = &i.working_dir {
        line("working dir", w);
    }
    if let Some(u) = &i.user {
        line("user", u);
    }
    for (k, v) in &i.labels {
        line("label", &format!("{k}={v}"));
    }
    for (n, l) in i.layers.iter().enumerate() {
        line(
            &format!("layer {}", n + 1),
            &format!(
                "{} diff_id {} size {} {}",
                l.digest, l.diff_id, l.size, l.media_type
            ),
        );
    }
    line(
        "compressed size",
        &format!("{} ({})", i.compressed_size, human_bytes(i.compressed_size)),
    );
    for (key, id) in &i.composefs_images {
        line(key, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::variant::{V, bytes_list, dict};
    use crate::tree::{Inode, MemTreeBuilder};

    #[test]
    fn metadata_rendering() {
        let d = dict(vec![
            ("version", V::Str(b"1.0"), "s"),
            ("ostree.ref-binding", V::Str(b"x"), "s"),
            ("blob", V::Bytes(&[0u8; 500]), "ay"),
            ("short", V::Bytes(&[1, 2, 0xff]), "ay"),
            ("text", V::Bytes(b"hello\0"), "ay"),
        ])
        .to_bytes();
        let m = metadata_entries(&d);
        let get = |k: &str| m.iter().find(|e| e.key == k).unwrap().value.clone();
        assert_eq!(get("version"), "1.0");
        assert_eq!(get("ostree.ref-binding"), "x");
        assert_eq!(get("blob"), "<500 bytes>");
        assert_eq!(get("short"), "0102ff");
        assert_eq!(get("text"), "hello");
        // Junk never panics.
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = metadata_entries(&junk);
            let _ = signatures(b"x", Some(&junk), &Keys::default());
        }
    }

    #[test]
    fn signature_listing() {
        use ed25519_dalek::Signer as _;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let sig = sk.sign(b"commit").to_bytes().to_vec();
        let meta = dict(vec![
            (ED25519_KEY, bytes_list(&[sig, vec![1, 2]]), "aay"),
            (GPG_KEY, bytes_list(&[b"junk".to_vec()]), "aay"),
        ])
        .to_bytes();
        let s = signatures(b"commit", Some(&meta), &Keys::default());
        assert_eq!(s.found.len(), 3, "{s:?}");
        assert_eq!(s.verification.status, VerifyStatus::NotVerified);
        assert!(s.found[1].problem.is_some());
        assert!(s.found[2].problem.is_some());
        let pk = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(sk.verifying_key().as_bytes())
        };
        let keys = Keys {
            gpg: None,
            ed25519: Some(Ed25519Keys::from_base64(&pk).unwrap()),
        };
        let s = signatures(b"commit", Some(&meta), &keys);
        assert_eq!(s.verification.status, VerifyStatus::Good, "{s:?}");
        assert_eq!(s.verification.good.len(), 1);
        let s = signatures(b"commiT", Some(&meta), &keys);
        assert_eq!(s.verification.status, VerifyStatus::Bad, "{s:?}");
        let s = signatures(b"commit", None, &keys);
        assert_eq!(s.verification.status, VerifyStatus::Unsigned);
        assert!(!s.detached_metadata);
    }

    #[test]
    fn counting() {
        let inode = |kind: Kind| Inode {
            stat: Default::default(),
            kind,
            xattrs: vec![],
        };
        let id = ObjectId::from_hex(crate::fsverity::Algorithm::Sha256, &"ab".repeat(32)).unwrap();
        let mut b = MemTreeBuilder::new();
        let root = b.add(Inode::default_dir());
        let a = b.add(Inode::default_dir());
        let d = b.add(Inode::default_dir());
        b.link(root, b"a", a).unwrap();
        b.link(root, b"b", d).unwrap();
        let x = b.add(inode(Kind::Regular(FileData::Inline(b"hello".to_vec()))));
        let y = b.add(inode(Kind::Regular(FileData::object(id, 1000))));
        let z = b.add(inode(Kind::Regular(FileData::object(id, 1000))));
        let l = b.add(inode(Kind::Symlink(b"x".to_vec())));
        let f = b.add(inode(Kind::Fifo));
        b.link(a, b"x", x).unwrap();
        b.link(a, b"y", y).unwrap();
        b.link(d, b"z", z).unwrap();
        b.link(d, b"l", l).unwrap();
        b.link(root, b"f", f).unwrap();
        b.link(root, b"h", y).unwrap();
        let t = b.build(root).unwrap();
        let s = tree_stats(&t).unwrap();
        assert_eq!(
            s,
            TreeStats {
                size: 2005,
                files: 3,
                directories: 3,
                symlinks: 1,
                other: 1,
                extra_links: 1,
                objects: 1,
                inline_files: 1,
                not_fetched: 0,
            }
        );
    }
}
