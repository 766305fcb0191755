//! The recursive walk: from a stored root object, level by level, every
//! stream and image it reaches (fetched where missing, then read locally
//! for what they reference), then every plain object they reference,
//! fetched on a pool of workers. Objects already stored are never asked
//! for; each fetched one must digest to its name before it is placed.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result};

use super::remote::Remote;
use crate::fsverity::ObjectId;
use crate::net::retry;
use crate::oci::spec::Digest;
use crate::oci::store::CONFIG_KEY_PREFIX;
use crate::repository::{RefKind, Repository};
use crate::splitstream::content_type;

/// What the walk did, counted by all workers.
#[derive(Default)]
pub struct Counters {
    /// Objects the walk has asked for so far (stored already or not).
    pub wanted: AtomicU64,
    /// Objects fetched and stored.
    pub fetched: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Objects needed but stored already.
    pub reused: AtomicU64,
}

/// What an object the walk reaches is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stream,
    /// A composefs EROFS image (the composefs magic first).
    Image,
}

/// Tell an image from a splitstream by its first four bytes, as `gc` does.
pub fn kind(repo: &Repository, id: &ObjectId) -> Result<Kind> {
    let mut f = repo.open_object(id)?;
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read object {id}")),
        }
    }
    Ok(
        if got == 4 && u32::from_le_bytes(head) == crate::erofs::format::COMPOSEFS_MAGIC {
            Kind::Image
        } else {
            Kind::Stream
        },
    )
}

/// Fetch object `id` unless it is stored: `Ok(true)` when fetched.
/// The whole download is tried again on transient failures; a missing
/// object or one whose content does not digest to its name is an error
/// naming it and its URL, and leaves nothing behind.
pub fn fetch_object(
    repo: &Repository,
    remote: &Remote,
    id: &ObjectId,
    counters: &Counters,
) -> Result<bool> {
    if repo.has_object(id)? {
        tracing::trace!("object {id} is stored");
        counters.reused.fetch_add(1, Ordering::Relaxed);
        return Ok(false);
    }
    let path = format!("objects/{}", id.object_path());
    let url = remote.url(&path);
    let (new, n) = retry(|| {
        let mut body = remote
            .open(&path)
            .with_context(|| format!("object {id}"))?
            .with_context(|| format!("object {id}: {url} not found"))?;
        let mut w = repo.object_writer()?;
        let n = std::io::copy(&mut body, &mut w)
            .with_context(|| format!("object {id}: cannot fetch {url}"))?;
        let new = w
            .finish_expecting(id)
            .with_context(|| format!("object {id} from {url}"))?;
        Ok((new, n))
    })?;
    tracing::debug!("fetched object {id} ({n} bytes)");
    counters.fetched.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(n, Ordering::Relaxed);
    Ok(new)
}

/// Fetch every object of `ids` that is not stored, `jobs` at a time. The
/// first failure stops the workers and is returned.
pub fn fetch_all(
    repo: &Repository,
    remote: &Remote,
    ids: Vec<ObjectId>,
    jobs: usize,
    counters: &Counters,
) -> Result<()> {
    counters
        .wanted
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    let workers = jobs.clamp(1, ids.len().max(1));
    let queue = Mutex::new(ids.into_iter());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some(id) = queue.lock().expect("queue").next() else {
                        break;
                    };
                    if let Err(e) = fetch_object(repo, remote, &id, counters) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().expect("error").get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_error.into_inner().expect("error") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How far a walk goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Everything the root reaches: streams, images and every object
    /// they name (file contents).
    All,
    /// What reading the tree needs, no file content: streams and images,
    /// and the objects of OCI manifest and config streams (their JSON
    /// documents). What a tree read in place fetches up front.
    Metadata,
}

/// Whether a stream of content type `ctype` keeps what reading it needs
/// in objects (an OCI manifest's or config's JSON), not only file
/// contents.
fn needs_its_objects(ctype: u64) -> bool {
    ctype == content_type::OCI_MANIFEST || ctype == content_type::OCI_CONFIG
}

/// A name the repository gives an object the walk reached: an entry
/// (`streams/<content-id>`, `images/<hex>`) as the pulls link them.
pub type Link = (RefKind, String, ObjectId);

/// Walk from `root` (stored already, and counted by the caller) and
/// fetch all it reaches (with [`Reach::Metadata`], all but file
/// contents). Returns
/// the entries to link for the named refs found on the way: images
/// (`images/<hex>`, e.g. `composefs.image` of an ostree commit or an OCI
/// config), and an OCI manifest's config and layer streams, and a
/// config's layer streams, by content id (`oci-config-<digest>`,
/// `oci-layer-<diff_id>`), as `composefs oci pull` links them.
pub fn walk(
    repo: &Repository,
    remote: &Remote,
    root: ObjectId,
    jobs: usize,
    reach: Reach,
    counters: &Counters,
) -> Result<Vec<Link>> {
    let mut seen: HashSet<ObjectId> = HashSet::from([root]);
    let mut level = vec![root];
    let mut leaves: BTreeSet<ObjectId> = BTreeSet::new();
    // (content type of the stream naming it, name, target)
    let mut named: Vec<(u64, String, ObjectId)> = Vec::new();
    let mut kinds: std::collections::HashMap<ObjectId, Kind> = Default::default();
    let mut depth = 0;
    while !level.is_empty() {
        tracing::info!("level {depth}: {} streams or images to read", level.len());
        if depth > 0 {
            fetch_all(repo, remote, level.clone(), jobs, counters)?;
        }
        let mut next = Vec::new();
        for id in level {
            let k = kind(repo, &id)?;
            kinds.insert(id, k);
            match k {
                Kind::Image => {
                    let image = crate::erofs::reader::ErofsImage::from_file(repo.open_object(&id)?)
                        .with_context(|| format!("image {id}"))?;
                    let objects = match reach {
                        Reach::All => image
                            .referenced_objects()
                            .with_context(|| format!("image {id}"))?,
                        Reach::Metadata => Vec::new(),
                    };
                    leaves.extend(
                        objects
                            .into_iter()
                            .filter(|o| o.algorithm() == repo.algorithm()),
                    );
                }
                Kind::Stream => {
                    let r = repo.open_stream_object(&id)?;
                    if reach == Reach::All || needs_its_objects(r.content_type) {
                        leaves.extend(r.object_refs().iter().copied());
                    }
                    for (name, target) in r.named_refs() {
                        named.push((r.content_type, name.clone(), *target));
                    }
                    for s in r.stream_refs() {
                        if seen.insert(*s) {
                            next.push(*s);
                        }
                    }
                }
            }
        }
        level = next;
        depth += 1;
    }
    let leaves: Vec<ObjectId> = leaves.into_iter().filter(|o| !seen.contains(o)).collect();
    tracing::info!(
        "{} streams and images read; {} objects they reference",
        seen.len(),
        leaves.len()
    );
    fetch_all(repo, remote, leaves, jobs, counters)?;

    let mut links = Vec::new();
    for (ctype, name, target) in named {
        match entry_for(kinds.get(&target).copied(), ctype, &name, &target) {
            Some(link) => links.push(link),
            None => tracing::debug!("named ref {name:?} → {target}: no entry to link"),
        }
    }
    links.sort_by(|a, b| (a.0.dir(), &a.1).cmp(&(b.0.dir(), &b.1)));
    links.dedup();
    Ok(links)
}

/// The entry a named ref `name` (on a stream of content type `ctype`) to
/// `target` of kind `kind` gets locally, if any.
fn entry_for(kind: Option<Kind>, ctype: u64, name: &str, target: &ObjectId) -> Option<Link> {
    if kind == Some(Kind::Image) {
        return Some((RefKind::Image, target.to_hex(), *target));
    }
    let oci = ctype == content_type::OCI_MANIFEST || ctype == content_type::OCI_CONFIG;
    if !oci {
        return None;
    }
    if ctype == content_type::OCI_MANIFEST
        && let Some(d) = name.strip_prefix(CONFIG_KEY_PREFIX)
        && let Ok(d) = Digest::parse(d)
    {
        return Some((RefKind::Stream, crate::oci::store::config_id(&d), *target));
    }
    Digest::parse(name)
        .ok()
        .map(|d| (RefKind::Stream, crate::oci::store::layer_id(&d), *target))
}
