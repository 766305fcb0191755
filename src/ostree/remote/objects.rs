//! The objects a remote tree reads, each fetched at most once and verified
//! before it is used: metadata by the SHA-256 of its bytes and its strict
//! parser (the pull's [`fetch_meta`]), files by ostree's checksum of header
//! and content (the pull's [`store_file`], which also stores the content
//! as a pull does). Everything fetched is appended to the commit's resume
//! log ([`SharedLog`]), which is also where it is read back from, by
//! position, once it has left the in-memory cache (bounded in bytes) or
//! when the next tree of the same commit asks for it.
//!
//! A file's attributes come from its header. The first [`PREFIX`] bytes of
//! its `.filez` are asked for (an HTTP `Range` request): when they are the
//! whole object (most files), it is verified and stored at once; else the
//! header is kept, in memory only and unverified, until the content is
//! asked for ([`Fetcher::content`]), which fetches the whole object,
//! verifies it and refuses it if its header is not the one handed out.
//!
//! Two callers wanting the same object: the second waits for the first
//! and takes what it got (per-object de-duplication); others go on.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result, bail};
use lru::LruCache;

use crate::net::retry;
use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::commitstream::{Content, Stored};
use crate::ostree::http::HttpSource;
use crate::ostree::objects::{FileHeader, MAX_METADATA_SIZE, split_filez_header};
use crate::ostree::partial::{Position, SharedLog};
use crate::ostree::pull::fetch::{fetch_file, fetch_meta, store_file};
use crate::ostree::source::filez_object;
use crate::repository::Repository;
use crate::single_flight::SingleFlight;

/// How much of a `.filez` is asked for to read a file's header: the whole
/// object for most files.
pub const PREFIX: u64 = 64 << 10;

/// Bound on the metadata and file headers kept decoded in memory (beyond
/// it they are read back from the log).
const CACHE_BYTES: usize = 16 << 20;

/// What is known of a file object.
#[derive(Clone, Debug)]
pub struct FileInfo {
    pub header: FileHeader,
    /// The content, verified and stored (inline or as an object); `None`
    /// when only the header is known (unverified).
    pub content: Option<Content>,
}

#[derive(Clone)]
enum Cached {
    Meta(Arc<[u8]>),
    File(Arc<FileInfo>),
}

fn weight(c: &Cached) -> usize {
    const OVERHEAD: usize = 96;
    OVERHEAD
        + match c {
            Cached::Meta(b) => b.len(),
            Cached::File(f) => {
                let xattrs: usize = f
                    .header
                    .xattrs
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 48)
                    .sum();
                let inline = match &f.content {
                    Some(Content::Inline(b)) => b.len(),
                    _ => 0,
                };
                xattrs + f.header.symlink.len() + inline
            }
        }
}

struct Cache {
    lru: LruCache<(Checksum, ObjType), Cached>,
    bytes: usize,
}

impl Cache {
    fn get(&mut self, key: &(Checksum, ObjType)) -> Option<Cached> {
        self.lru.get(key).cloned()
    }

    fn put(&mut self, key: (Checksum, ObjType), v: Cached) {
        self.bytes += weight(&v);
        if let Some(old) = self.lru.put(key, v) {
            self.bytes -= weight(&old);
        }
        while self.bytes > CACHE_BYTES
            && let Some((_, old)) = self.lru.pop_lru()
        {
            self.bytes -= weight(&old);
        }
    }
}

type Key = (Checksum, ObjType);

/// A remote commit's objects: fetched, verified, logged, cached.
pub struct Fetcher {
    src: HttpSource,
    repo: Repository,
    log: Option<SharedLog>,
    logged: Mutex<HashMap<Key, Position>>,
    cache: Mutex<Cache>,
    inflight: SingleFlight<Key>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fetcher {
    /// The objects of `commit` at `src`, stored into `repo`, with what the
    /// commit's log already holds. A log that cannot be opened is done
    /// without (logged as a warning): the tree works, nothing is kept.
    pub fn open(src: HttpSource, repo: Repository, commit: &Checksum) -> Fetcher {
        let (log, logged) = match SharedLog::open(&repo, commit) {
            Ok((log, positions)) => (Some(log), positions.into_iter().collect()),
            Err(e) => {
                tracing::warn!("commit {commit}: fetched objects will not be logged: {e:#}");
                (None, HashMap::new())
            }
        };
        Fetcher {
            src,
            repo,
            log,
            logged: Mutex::new(logged),
            cache: Mutex::new(Cache {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            inflight: SingleFlight::new(),
        }
    }

    pub fn source(&self) -> &HttpSource {
        &self.src
    }

    /// Record a verified object in the log; a failure to write is logged,
    /// not an error (the object is used all the same).
    fn record(&self, c: &Checksum, t: ObjType, s: &Stored) {
        let Some(log) = &self.log else { return };
        match log.append(c, t, s) {
            Ok(pos) => {
                lock(&self.logged).insert((*c, t), pos);
            }
            Err(e) => tracing::warn!("{} {c} is not logged: {e:#}", t.name()),
        }
    }

    /// A logged object: `None` if not logged, or unusable (then fetched
    /// again: the log is a cache).
    fn read_log(&self, c: &Checksum, t: ObjType) -> Option<Stored> {
        let pos = *lock(&self.logged).get(&(*c, t))?;
        let log = self.log.as_ref()?;
        match log.read(pos) {
            Ok(Some(((lc, lt), s))) if lc == *c && lt == t => Some(s),
            Ok(_) => {
                tracing::warn!("{} {c}: the log holds something else", t.name());
                None
            }
            Err(e) => {
                tracing::warn!("{} {c}: {e:#}", t.name());
                None
            }
        }
    }

    /// Whether (c, t) is logged (then reading it costs no request).
    pub fn is_logged(&self, c: &Checksum, t: ObjType) -> bool {
        lock(&self.logged).contains_key(&(*c, t))
    }

    /// Metadata object (c, t), verified.
    pub fn meta(&self, c: &Checksum, t: ObjType) -> Result<Arc<[u8]>> {
        let key = (*c, t);
        let check = || {
            Ok(match lock(&self.cache).get(&key) {
                Some(Cached::Meta(b)) => Some(b),
                _ => None,
            })
        };
        self.inflight.run(key, check, || {
            let logged = match self.read_log(c, t) {
                // Checked again: cheap, and the log is only a cache.
                Some(Stored::Meta(b)) if Checksum::of(&b) == *c => Some(b),
                _ => None,
            };
            let bytes: Arc<[u8]> = match logged {
                Some(b) => b.into(),
                None => {
                    let b = fetch_meta(&self.src, c, t)
                        .with_context(|| format!("fetching {}", self.src.object_url(c, t)))?;
                    self.record(c, t, &Stored::Meta(b.clone()));
                    b.into()
                }
            };
            lock(&self.cache).put(key, Cached::Meta(bytes.clone()));
            Ok(bytes)
        })
    }

    /// Metadata object (c, t) if logged (no request), else `None`. Named
    /// by its checksum unless detached metadata (named by its commit's).
    pub fn logged_meta(&self, c: &Checksum, t: ObjType) -> Option<Vec<u8>> {
        match self.read_log(c, t)? {
            Stored::Meta(b) if t == ObjType::CommitMeta || Checksum::of(&b) == *c => Some(b),
            _ => None,
        }
    }

    /// Log a metadata object verified by the caller (the commit).
    pub fn record_meta(&self, c: &Checksum, t: ObjType, bytes: &[u8]) {
        if !self.is_logged(c, t) {
            self.record(c, t, &Stored::Meta(bytes.to_vec()));
        }
    }

    fn cached_file(&self, c: &Checksum) -> Option<Arc<FileInfo>> {
        match lock(&self.cache).get(&(*c, ObjType::File)) {
            Some(Cached::File(f)) => Some(f),
            _ => None,
        }
    }

    /// Whether file `c`'s content is at hand (verified and stored, as far
    /// as is known without looking at the object store).
    pub fn has_content(&self, c: &Checksum) -> bool {
        self.cached_file(c).is_some_and(|f| f.content.is_some()) || self.is_logged(c, ObjType::File)
    }

    /// Whether file `c`'s header is at hand (no request needed).
    pub fn has_header(&self, c: &Checksum) -> bool {
        self.cached_file(c).is_some() || self.is_logged(c, ObjType::File)
    }

    /// A logged file, its header parsed (and an inline content checked
    /// again); `None` if not logged or unusable.
    fn logged_file(&self, c: &Checksum) -> Option<FileInfo> {
        let Stored::File {
            header, content, ..
        } = self.read_log(c, ObjType::File)?
        else {
            return None;
        };
        let h = FileHeader::parse_archive_stored(&header).ok()?;
        if let Content::Inline(b) = &content
            && (h.size != b.len() as u64 || h.checksum(b) != *c)
        {
            return None;
        }
        Some(FileInfo {
            header: h,
            content: Some(content),
        })
    }

    /// A verified file: logged, cached, returned.
    fn keep(&self, c: &Checksum, stored: Stored) -> Result<Arc<FileInfo>> {
        let Stored::File {
            header, content, ..
        } = &stored
        else {
            bail!("file object {c} was stored as metadata");
        };
        let h =
            FileHeader::parse_archive_stored(header).with_context(|| format!("file object {c}"))?;
        self.record(c, ObjType::File, &stored);
        let info = Arc::new(FileInfo {
            header: h,
            content: Some(content.clone()),
        });
        lock(&self.cache).put((*c, ObjType::File), Cached::File(info.clone()));
        Ok(info)
    }

    fn url(&self, c: &Checksum) -> String {
        self.src.object_url(c, ObjType::File)
    }

    /// File `c`'s header (and content, when it came whole): from the
    /// cache, the log, or the first [`PREFIX`] bytes of its object.
    pub fn file(&self, c: &Checksum) -> Result<Arc<FileInfo>> {
        let key = (*c, ObjType::File);
        let check = || Ok(self.cached_file(c));
        let info = self.inflight.run(key, check, || {
            if let Some(info) = self.logged_file(c) {
                let info = Arc::new(info);
                lock(&self.cache).put(key, Cached::File(info.clone()));
                return Ok(info);
            }
            self.file_from_prefix(c)
                .with_context(|| format!("fetching {}", self.url(c)))
        })?;
        // Content this small is inline: a tree hands it out with the inode.
        let inline_max = crate::ostree::shared::inline_max(self.repo.algorithm());
        if info.content.is_none() && !info.header.is_symlink() && info.header.size <= inline_max {
            return self.content(c);
        }
        Ok(info)
    }

    fn file_from_prefix(&self, c: &Checksum) -> Result<Arc<FileInfo>> {
        tracing::debug!("fetching the header of file {c}");
        let (bytes, whole) = retry(|| self.src.file_prefix(c, PREFIX))?;
        if whole {
            return self.store_whole(c, bytes);
        }
        // The header's length first: a header longer than the prefix
        // (large xattrs) means the whole object after all.
        let len = bytes
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .with_context(|| format!("file object {c}: truncated .filez"))?;
        if len > MAX_METADATA_SIZE {
            bail!("file object {c}: .filez header length {len} is absurd");
        }
        if 8 + len > bytes.len() {
            drop(bytes);
            return self.fetch_whole(c);
        }
        let (header, _) = split_filez_header(&bytes).with_context(|| format!("file object {c}"))?;
        let info = Arc::new(FileInfo {
            header,
            content: None,
        });
        lock(&self.cache).put((*c, ObjType::File), Cached::File(info.clone()));
        Ok(info)
    }

    /// A whole `.filez` in memory: verified, stored, logged.
    fn store_whole(&self, c: &Checksum, bytes: Vec<u8>) -> Result<Arc<FileInfo>> {
        let what = format!("file object {c}");
        let obj = filez_object(Box::new(Cursor::new(bytes)), &what)?;
        let (stored, _) = store_file(&self.repo, c, obj)?;
        self.keep(c, stored)
    }

    /// Whether a logged or cached content is still there (a `gc` may have
    /// removed an object nothing named yet).
    fn present(&self, info: &FileInfo) -> Result<bool> {
        Ok(match &info.content {
            None => false,
            Some(Content::Inline(_)) => true,
            Some(Content::External(id)) => self.repo.has_object(id)?,
        })
    }

    /// File `c` with its content verified and stored: fetched whole now
    /// unless it was already. Its header must be the one handed out before
    /// (a server answering two ways is refused).
    pub fn content(&self, c: &Checksum) -> Result<Arc<FileInfo>> {
        let key = (*c, ObjType::File);
        let check = || -> Result<Option<Arc<FileInfo>>> {
            Ok(match self.cached_file(c) {
                Some(f) if self.present(&f)? => Some(f),
                _ => None,
            })
        };
        self.inflight.run(key, check, || {
            if let Some(info) = self.logged_file(c)
                && self.present(&info)?
            {
                let info = Arc::new(info);
                lock(&self.cache).put(key, Cached::File(info.clone()));
                return Ok(info);
            }
            self.fetch_whole(c)
        })
    }

    /// Fetch file `c` whole, verify and store it. Its header must be the
    /// one handed out before, if one was (a server answering two ways is
    /// refused).
    fn fetch_whole(&self, c: &Checksum) -> Result<Arc<FileInfo>> {
        let before = self.cached_file(c);
        tracing::debug!("fetching file {c}");
        let (stored, _) = fetch_file(&self.src, &self.repo, c)
            .with_context(|| format!("fetching {}", self.url(c)))?;
        if let (Some(b), Stored::File { header, .. }) = (&before, &stored)
            && b.header.serialize_archive() != *header
        {
            bail!(
                "file object {c}: {} sent a header other than the one it sent before",
                self.url(c)
            );
        }
        self.keep(c, stored)
    }

    /// Let go of the decoded objects (they are read back from the log).
    pub fn shrink(&self) {
        let mut c = lock(&self.cache);
        c.lru.clear();
        c.bytes = 0;
    }
}
