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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result, anyhow, bail};

use super::remote::Remote;
use super::walk::{self, Counters, Kind, Reach};
use super::{FetchOptions, Root, fetch_root};
use crate::fsverity::ObjectId;
use crate::repository::Repository;
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

/// One object being fetched: its outcome once known.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<std::result::Result<(), String>>>,
    cv: Condvar,
}

impl Flight {
    fn finish(&self, r: std::result::Result<(), String>) {
        let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            *d = Some(r);
        }
        self.cv.notify_all();
    }

    fn wait(&self) -> std::result::Result<(), String> {
        let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = &*d {
                return r.clone();
            }
            d = self.cv.wait(d).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Ends a flight whatever happens to the fetch (an early return, a
/// panic): waiters are woken, and the next reader tries afresh.
struct Landing<'a> {
    tree: &'a LazyTree,
    id: ObjectId,
    flight: Arc<Flight>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.flight
            .finish(Err(format!("object {}: the fetch was abandoned", self.id)));
        self.tree.flights().remove(&self.id);
    }
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
    flights: Mutex<HashMap<ObjectId, Arc<Flight>>>,
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
            flights: Mutex::new(HashMap::new()),
        })
    }

    /// Objects fetched so far, and their bytes.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.counters.fetched.load(Ordering::Relaxed),
            self.counters.bytes.load(Ordering::Relaxed),
        )
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, Arc<Flight>>> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
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
        if self.repo.has_object(id)? {
            return Ok(());
        }
        let (flight, leader) = {
            let mut f = self.flights();
            match f.get(id) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    f.insert(*id, flight.clone());
                    (flight, true)
                }
            }
        };
        if !leader {
            tracing::debug!("{}: waiting for object {id} being fetched", self.what);
            return flight.wait().map_err(|m| anyhow!("{m}"));
        }
        let landing = Landing {
            tree: self,
            id: *id,
            flight,
        };
        let r = walk::fetch_object(&self.repo, &self.remote, id, &self.counters).map(|new| {
            if new {
                tracing::info!("{}: fetched object {id}", self.what);
            }
        });
        landing
            .flight
            .finish(r.as_ref().map_err(|e| format!("{e:#}")).copied());
        drop(landing);
        r
    }
}

impl Tree for LazyTree {
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
