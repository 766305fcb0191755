//! `composefs fetch URL NAME`: copy one stored tree (an image, a pulled
//! OCI image, a stored ostree commit, or any stream) from a composefs
//! repository served as plain files — by any static HTTP(S) server, or a
//! local directory (`file://`) — into this one.
//!
//! The server resolves the name: asked for `streams/refs/…` (or
//! `images/refs/…`), a static server follows the symlinks and returns the
//! root object's bytes, so the root's id is the digest of what it
//! returned. From there everything is named by digest: objects are asked
//! for at `objects/XX/REST` and each must digest to its name before it is
//! placed ([`walk`]). Nothing stored already is asked for. The entries
//! the pulls make (`streams/<content-id>`, `images/<hex>`) are linked,
//! everything synced to disk, and the ref published last.
//!
//! [`lazy`] reads such a tree in place instead: its metadata fetched the
//! same way, file contents when first read, nothing linked.

pub mod lazy;
pub mod remote;
pub mod walk;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::fsverity::ObjectId;
use crate::net::retry;
use crate::ostree::checksum::Checksum;
use crate::ostree::shared;
use crate::repository::{RefKind, Repository, encode_ref_component, validate_ref_name};
use crate::splitstream::content_type;
use remote::Remote;
pub use walk::Counters;
use walk::Kind;

/// How to fetch.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Objects fetched at once.
    pub jobs: usize,
    /// Bounds connecting and every read (default 30 s / 60 s).
    pub timeout: Option<Duration>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            jobs: 8,
            timeout: None,
        }
    }
}

/// What a fetch did.
#[derive(Clone, Debug)]
pub struct FetchReport {
    /// The name as given.
    pub name: String,
    /// What the local ref now points at: a content id under `streams/`
    /// (`oci-manifest-sha256:…`, `ostree-commit-…`) or an image's hex id.
    pub entry: String,
    /// The root object.
    pub id: ObjectId,
    /// Objects fetched (the root included when it was new) and their bytes.
    pub fetched: u64,
    pub bytes: u64,
    /// Objects needed but stored already.
    pub reused: u64,
}

/// What a NAME asks for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The root's path on the server.
    path: String,
    kind: RefKind,
    /// The local ref (below `streams/refs/` or `images/refs/`), if any.
    ref_name: Option<String>,
    /// The local entry, when the name gives it (a content id).
    entry: Option<String>,
    /// The content type the root stream must have.
    want: Option<u64>,
}

/// Parse NAME as `mount` spells stored trees, and `streams/NAME` as
/// cfsctl names streams.
fn target(name: &str) -> Result<Target> {
    if let Some(n) = name.strip_prefix("images/") {
        validate_ref_name(n)?;
        return Ok(Target {
            path: format!("images/refs/{n}"),
            kind: RefKind::Image,
            ref_name: Some(n.to_string()),
            entry: None,
            want: None,
        });
    }
    let stream = |ref_name: String, want| -> Result<Target> {
        validate_ref_name(&ref_name)?;
        Ok(Target {
            path: format!("streams/refs/{ref_name}"),
            kind: RefKind::Stream,
            ref_name: Some(ref_name),
            entry: None,
            want,
        })
    };
    if let Some(n) = name.strip_prefix("oci/") {
        if n.is_empty() || n.starts_with('@') {
            bail!("{name:?}: not an OCI image name");
        }
        return stream(
            format!("oci/{}", encode_ref_component(n)),
            Some(content_type::OCI_MANIFEST),
        );
    }
    if let Some(n) = name.strip_prefix("ostree/") {
        if n.is_empty() {
            bail!("{name:?}: no ostree ref name");
        }
        return stream(shared::ref_name(n), Some(shared::CONTENT_TYPE));
    }
    if let Some(s) = name.strip_prefix("streams/") {
        if let Some(r) = s.strip_prefix("refs/") {
            return stream(r.to_string(), None);
        }
        if s.is_empty() || s.contains('/') || s.starts_with('.') {
            bail!("{name:?}: expected streams/refs/NAME or streams/CONTENT-ID");
        }
        return Ok(Target {
            path: format!("streams/{s}"),
            kind: RefKind::Stream,
            ref_name: None,
            entry: Some(s.to_string()),
            want: None,
        });
    }
    bail!(
        "{name:?}: say what to fetch as images/NAME, oci/NAME, ostree/NAME, \
         streams/refs/NAME or streams/CONTENT-ID"
    )
}

/// Fetch `name` from the repository at `url` into `repo`.
pub fn fetch(repo: &Repository, url: &str, name: &str, opts: &FetchOptions) -> Result<FetchReport> {
    fetch_with(repo, url, name, opts, &Counters::default())
}

/// [`fetch`], counting into `counters` as it goes (for progress bars).
pub fn fetch_with(
    repo: &Repository,
    url: &str,
    name: &str,
    opts: &FetchOptions,
    counters: &Counters,
) -> Result<FetchReport> {
    repo.ensure_writable()?;
    let remote = Remote::new(url, opts.timeout)?;
    let Root {
        target: t,
        id,
        url: root_url,
        ..
    } = fetch_root(repo, &remote, name, counters)?;

    let links = walk::walk(repo, &remote, id, opts.jobs, walk::Reach::All, counters)?;

    // Name the root as the pulls do, checking what its content says.
    let (entry, commit) = match t.kind {
        RefKind::Image => (id.to_hex(), None),
        RefKind::Stream => root_entry(repo, &id, t.entry.as_deref(), &root_url)?,
    };

    repo.sync()?;
    for (kind, e, target) in &links {
        tracing::debug!("linking {}/{e} → {target}", kind.dir());
        repo.link_entry(*kind, e, target)?;
    }
    repo.link_entry(t.kind, &entry, &id)?;
    if let Some(c) = commit {
        let s = crate::ostree::cache::open(repo, &c)?;
        crate::ostree::index::add(
            repo,
            c,
            s.keys()?.into_iter().filter_map(|(o, t)| Some((o, t?))),
        )
        .context("cannot update the ostree index")?;
    }
    repo.sync()?;
    if let Some(r) = &t.ref_name {
        repo.set_ref(t.kind, r, &entry)?;
        tracing::info!("{}/refs/{r} → {entry}", t.kind.dir());
    } else {
        tracing::info!(
            "{}/{entry} linked (no ref: `gc` may collect it)",
            t.kind.dir()
        );
    }
    Ok(FetchReport {
        name: name.to_string(),
        entry,
        id,
        fetched: counters.fetched.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        reused: counters.reused.load(Ordering::Relaxed),
    })
}

/// A name's root on the server, fetched and stored as an object (under
/// no entry yet), checked against what the name asks for.
struct Root {
    target: Target,
    id: ObjectId,
    kind: Kind,
    /// Where the root was asked for, for messages.
    url: String,
}

/// Fetch `name`'s root: the server resolves the name (a static server
/// follows the ref's symlinks) and the root is what it returns. An image
/// name must give an image, a stream name a stream, of the content type
/// the name asks for.
fn fetch_root(repo: &Repository, remote: &Remote, name: &str, counters: &Counters) -> Result<Root> {
    let t = target(name)?;
    let root_url = remote.url(&t.path);
    tracing::info!("fetching {name} from {root_url}");
    let (id, new, n) = retry(|| {
        let mut body = remote
            .open(&t.path)?
            .with_context(|| format!("{root_url} not found"))?;
        let mut w = repo.object_writer()?;
        let n =
            std::io::copy(&mut body, &mut w).with_context(|| format!("cannot fetch {root_url}"))?;
        let (id, new) = w.finish()?;
        Ok((id, new, n))
    })?;
    tracing::info!(
        "{name} is object {id} ({})",
        if new { "new" } else { "stored already" }
    );
    if new {
        counters.fetched.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(n, Ordering::Relaxed);
    } else {
        counters.reused.fetch_add(1, Ordering::Relaxed);
    }

    let kind = walk::kind(repo, &id)?;
    match (t.kind, kind) {
        (RefKind::Image, Kind::Stream) => {
            bail!("{root_url} is not a composefs image (object {id})")
        }
        (RefKind::Stream, Kind::Image) => {
            bail!("{root_url} is a composefs image, not a stream (object {id})")
        }
        _ => {}
    }
    if let Some(want) = t.want {
        let r = repo.open_stream_object(&id)?;
        if r.content_type != want {
            bail!(
                "{root_url} is a stream of content type {}, not {}",
                crate::splitstream::content_type_name(r.content_type),
                crate::splitstream::content_type_name(want)
            );
        }
    }
    Ok(Root {
        target: t,
        id,
        kind,
        url: root_url,
    })
}

/// The content id of root stream `id` (and, for an ostree commit, its
/// checksum), from its content: an OCI document's or layer's sha256, an
/// ostree commit's checksum (the commit checked against it). A content
/// id given by the name must agree where it can be checked.
fn root_entry(
    repo: &Repository,
    id: &ObjectId,
    given: Option<&str>,
    url: &str,
) -> Result<(String, Option<Checksum>)> {
    let mut r = repo.open_stream_object(id)?;
    let ctype = r.content_type;
    let derived = if ctype == shared::CONTENT_TYPE {
        // Every object checked, the commit against the checksum it names.
        let (c, _) = shared::read_named(r).with_context(|| format!("stream {id}"))?;
        Some((crate::ostree::commitstream::content_id(&c), Some(c)))
    } else {
        let prefix = match ctype {
            content_type::OCI_MANIFEST => Some("oci-manifest-"),
            content_type::OCI_CONFIG => Some("oci-config-"),
            content_type::OCI_LAYER => Some("oci-layer-"),
            _ => None,
        };
        match prefix {
            Some(p) => {
                use sha2::Digest as _;
                let mut h = Sha256Sink(sha2::Sha256::new());
                r.cat(repo, &mut h)?;
                Some((format!("{p}sha256:{}", hex::encode(h.0.finalize())), None))
            }
            None => None,
        }
    };
    match (given, derived) {
        (Some(g), Some((d, c))) if g == d => Ok((d, c)),
        (Some(g), Some((d, _))) => bail!("{url}: its content is {d}, not {g}"),
        (Some(g), None) => Ok((g.to_string(), None)),
        (None, Some(d)) => Ok(d),
        (None, None) => bail!(
            "{url}: cannot tell the content id of a stream of content type {} \
             (fetch it as streams/CONTENT-ID)",
            crate::splitstream::content_type_name(ctype)
        ),
    }
}

/// A sha256 of what is written (sha2 0.11 hashers are no `io::Write`).
struct Sha256Sink(sha2::Sha256);

impl Write for Sha256Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_server_paths_and_local_refs() {
        let t = target("oci/localhost/app:1").unwrap();
        assert_eq!(t.path, "streams/refs/oci/localhost%2Fapp:1");
        assert_eq!(t.ref_name.as_deref(), Some("oci/localhost%2Fapp:1"));
        let t = target("ostree/fedora/x86_64").unwrap();
        assert_eq!(t.path, "streams/refs/ostree/fedora%2Fx86_64");
        let t = target("images/base").unwrap();
        assert_eq!(
            (t.path.as_str(), t.kind),
            ("images/refs/base", RefKind::Image)
        );
        let t = target("streams/refs/mytar").unwrap();
        assert_eq!(t.ref_name.as_deref(), Some("mytar"));
        let t = target("streams/oci-config-sha256:ab").unwrap();
        assert_eq!(
            (t.ref_name, t.entry.as_deref()),
            (None, Some("oci-config-sha256:ab"))
        );
        assert!(target("base").is_err());
        assert!(target("images/../x").is_err());
        assert!(target("streams/a/b").is_err());
    }
}
