//! A stored tree of a composefs repository served as plain files, read in
//! place instead of fetched whole (`composefs mount URL#NAME`, `ls`, `cat`,
//! `diff`, `show`).
//!
//! [`fetch_metadata`] fetches what building the tree needs, as
//! `composefs fetch` would but no file content: the name's root resolved
//! as `fetch` resolves it, then the streams and images the root reaches
//! (and the JSON documents of OCI manifests and configs), each verified
//! against its name and stored as an object. No entry and no ref is
//! linked: an entry must never name a stream whose contents are missing,
//! and what is fetched here is unreferenced (`gc` may collect it; a later
//! `fetch` of the same name finds it stored and asks for the rest only).
//!
//! [`LazyTree`] wraps the tree built from those objects (by the caller:
//! this module knows no tree format) and fetches a file's content object
//! when [`Tree::content_object`] asks for it: verified against its name
//! before it is placed, with the fetch's retries and timeouts; one fetch
//! per object at a time, a second reader of the same object waiting for
//! the first while readers of other objects proceed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};

use super::remote::Remote;
use super::walk::{self, Counters, Kind, Reach};
use super::{FetchOptions, Root, fetch_root};
use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::single_flight::SingleFlight;
use crate::tree::{DirEntry, Ino, Inode, LinkHint, Listing, SubtreeId, Tree};

/// What [`fetch_metadata`] stored: the name's root and what it is.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// The root object (an image, or a stream).
    pub id: ObjectId,
    pub kind: Kind,
    /// A stream root's content type.
    pub content_type: Option<u64>,
    /// Where the root was asked for.
    pub url: String,
    /// Objects fetched (the root included when new) and reused.
    pub fetched: u64,
    pub reused: u64,
}

/// Fetch `name`'s root and the metadata it reaches from `remote` into
/// `repo`, linking nothing (see the module comment).
pub fn fetch_metadata(
    repo: &Repository,
    remote: &Remote,
    name: &str,
    opts: &FetchOptions,
) -> Result<Metadata> {
    repo.ensure_writable()?;
    let counters = Counters::default();
    let Root { id, kind, url, .. } = fetch_root(repo, remote, name, &counters)?;
    walk::walk(repo, remote, id, opts.jobs, Reach::Metadata, &counters)
        .with_context(|| format!("cannot fetch the metadata of {url}"))?;
    let content_type = match kind {
        Kind::Stream => Some(repo.open_stream_object(&id)?.content_type),
        Kind::Image => None,
    };
    let m = Metadata {
        id,
        kind,
        content_type,
        url,
        fetched: counters.fetched.load(Ordering::Relaxed),
        reused: counters.reused.load(Ordering::Relaxed),
    };
    tracing::info!(
        "{name}: metadata fetched ({} objects, {} stored already)",
        m.fetched,
        m.reused
    );
    Ok(m)
}

/// A tree whose file contents are fetched on first use (see the module
/// comment). Every other [`Tree`] method is the inner tree's.
pub struct LazyTree {
    inner: Arc<dyn Tree>,
    repo: Repository,
    remote: Remote,
    /// `URL#NAME`, for messages.
    what: String,
    counters: Counters,
    flights: SingleFlight<ObjectId>,
}

impl LazyTree {
    /// `inner` (built from objects [`fetch_metadata`] stored), its
    /// contents fetched from `remote` into `repo`; `what` names it in
    /// messages.
    pub fn new(
        inner: Arc<dyn Tree>,
        repo: &Repository,
        remote: Remote,
        what: String,
    ) -> Result<Self> {
        Ok(LazyTree {
            inner,
            repo: repo.try_clone()?,
            remote,
            what,
            counters: Counters::default(),
            flights: SingleFlight::new(),
        })
    }

    /// Objects fetched so far, and their bytes.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.counters.fetched.load(Ordering::Relaxed),
            self.counters.bytes.load(Ordering::Relaxed),
        )
    }

    /// Make object `id` present: stored already, or fetched now (or by
    /// the reader already fetching it, waited for).
    fn present(&self, id: &ObjectId) -> Result<()> {
        if id.algorithm() != self.repo.algorithm() {
            bail!(
                "object {id} is named with {}, this repository's objects with {}: it cannot be fetched into it",
                id.algorithm(),
                self.repo.algorithm()
            );
        }
        let stored = || Ok(self.repo.has_object(id)?.then_some(()));
        self.flights.run(*id, stored, || {
            let new = walk::fetch_object(&self.repo, &self.remote, id, &self.counters)?;
            if new {
                tracing::info!("{}: fetched object {id}", self.what);
            }
            Ok(())
        })
    }
}

impl Tree for LazyTree {
    fn fetches_contents(&self) -> bool {
        true
    }

    fn root(&self) -> Ino {
        self.inner.root()
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        self.inner.inode(ino)
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        self.inner.readdir(dir)
    }

    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        self.inner.nlink(ino)
    }

    fn link_hint(&self, ino: Ino) -> Option<LinkHint> {
        self.inner.link_hint(ino)
    }

    fn live(&self, ino: Ino) -> bool {
        self.inner.live(ino)
    }

    fn shrink(&self) {
        self.inner.shrink()
    }

    fn subtree_id(&self, ino: Ino) -> Option<SubtreeId> {
        self.inner.subtree_id(ino)
    }

    fn readdir_ids(&self, dir: Ino, out: &mut Listing) -> Result<()> {
        self.inner.readdir_ids(dir, out)
    }

    fn content_object(&self, ino: Ino) -> Result<Option<ObjectId>> {
        let Some(id) = self.inner.content_object(ino)? else {
            return Ok(None);
        };
        self.present(&id)
            .with_context(|| format!("{}: the content of inode {ino}", self.what))?;
        Ok(Some(id))
    }

    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
        self.inner.lookup(dir, name)
    }

    fn resolve_path(&self, path: &[u8]) -> Result<Option<Ino>> {
        self.inner.resolve_path(path)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::fsverity::{Algorithm, digest_bytes};
    use crate::tree::{FileData, Kind, MemTreeBuilder, Stat};

    fn inode(kind: Kind) -> Inode {
        Inode {
            stat: Stat {
                perms: 0o644,
                ..Stat::default()
            },
            kind,
            xattrs: vec![],
        }
    }

    /// Wait (for another thread) until `cond` holds; fails after 20 s.
    fn until(mut cond: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < end, "never happened");
            std::thread::yield_now();
        }
    }

    /// Two files of one object read at once: the object is fetched once,
    /// the second reader waiting for the first. The served object is a
    /// FIFO, so the first fetch stays in flight until the test writes
    /// it (and a second open of it would take part of the bytes).
    #[test]
    fn one_fetch_per_object_the_other_readers_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(&tmp.path().join("repo"), Algorithm::Sha256).unwrap();
        let data = digest_bytes(Algorithm::Sha256, b"seed")
            .to_hex()
            .repeat(2000)
            .into_bytes();
        let id = digest_bytes(Algorithm::Sha256, &data);
        let served = tmp.path().join("served");
        let fifo = served.join("objects").join(id.object_path());
        std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut b = MemTreeBuilder::new();
        let root = b.add(inode(Kind::Directory));
        let file = || inode(Kind::Regular(FileData::object(id, data.len() as u64)));
        let (f1, f2) = (b.add(file()), b.add(file()));
        b.link(root, b"a", f1).unwrap();
        b.link(root, b"b", f2).unwrap();
        let remote = Remote::new(&format!("file://{}", served.display()), None).unwrap();
        let tree = LazyTree::new(
            Arc::new(b.build(root).unwrap()),
            &repo,
            remote,
            "test".into(),
        )
        .unwrap();
        let in_flight = |n: usize| tree.flights.callers(&id) == n;
        std::thread::scope(|s| {
            let first = s.spawn(|| tree.content_object(f1));
            // The fetching reader.
            until(|| in_flight(1));
            let second = s.spawn(|| tree.content_object(f2));
            // And the waiting one.
            until(|| in_flight(2));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .unwrap()
                .write_all(&data)
                .unwrap();
            assert_eq!(first.join().unwrap().unwrap(), Some(id));
            assert_eq!(second.join().unwrap().unwrap(), Some(id));
        });
        assert!(repo.has_object(&id).unwrap());
        assert!(tree.flights.is_idle());
        assert_eq!(tree.fetched(), (1, data.len() as u64));
        // Stored: asked again, nothing is opened (the FIFO has no writer).
        assert_eq!(tree.content_object(f2).unwrap(), Some(id));
    }
}
