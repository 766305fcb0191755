//! Pulling a commit: resolve the ref, fetch and verify the commit and its
//! signatures, use a static delta when one fits, then walk the tree
//! breadth-first with a pool of workers fetching what is not stored yet,
//! and finally store everything as one commit splitstream under
//! `streams/refs/ostree/NAME`.
//!
//! Everything fetched is verified before it is used or stored: metadata
//! by the SHA-256 of its bytes, files by ostree's checksum of header and
//! content (computed while the content streams into the object store).
//! A failure leaves no stream and no ref; objects stored before it are
//! unreferenced and go at the next `composefs gc`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use anyhow::{Context, Result, anyhow, bail};
use sha2::Digest;

use super::checksum::{Checksum, ObjType, delta_name};
use super::commitstream::{self, CommitStream, Content, Entry, Objects, Stored};
use super::delta::{self, DeltaSink, PartMeta};
use super::index::{self, Index};
use super::objects::{Commit, DirMeta, DirTree, FileHeader, MAX_METADATA_SIZE, check_dict};
use super::partial::PartialLog;
use super::resolve::{self, Resolved};
use super::source::{self, Source};
use super::summary::{self, MAX_SUMMARY_SIZE, Summary};
use super::trust::{self, Trust};
use crate::net::retry;
use crate::repository::Repository;

/// Content up to this size is read into memory, verified, then stored;
/// larger content streams to the object store while it is verified.
const BUFFERED: u64 = source::WHOLE_CONTENT_MAX;

pub struct PullOptions {
    /// Name under `streams/refs/ostree/` (default: the ref as given).
    pub name: Option<String>,
    /// A stored commit (name or checksum) to prefer as delta base.
    pub base: Option<String>,
    pub no_deltas: bool,
    /// Parallel fetches.
    pub jobs: usize,
    pub trust: Trust,
    /// HTTP connect and read timeout (default: 30 s to connect, 60 s
    /// for any read).
    pub timeout: Option<std::time::Duration>,
}

/// Live counters for progress display.
#[derive(Default)]
pub struct Stats {
    /// Objects the walk knows it needs, and those done (fetched or reused).
    pub objects_total: AtomicU64,
    pub objects_done: AtomicU64,
    pub fetched: AtomicU64,
    pub reused: AtomicU64,
    /// Bytes of content fetched and stored.
    pub bytes: AtomicU64,
    pub delta: Mutex<Option<String>>,
    pub phase: Mutex<&'static str>,
}

#[derive(Debug)]
pub struct PullReport {
    pub commit: Checksum,
    pub name: String,
    pub fetched: u64,
    pub reused: u64,
    pub bytes: u64,
    /// "scratch" or "from <hex>" when a static delta was used.
    pub delta: Option<String>,
    pub signers: Vec<String>,
    pub already_stored: bool,
}

/// Fetch metadata object (c, t), check its SHA-256 and its type.
fn fetch_meta(src: &dyn Source, c: &Checksum, t: ObjType) -> Result<Vec<u8>> {
    let what = || format!("{} {c}", t.name());
    let data = retry(|| src.metadata(c, t))
        .with_context(what)?
        .ok_or_else(|| anyhow!("{} not found in {}", what(), src.describe()))?;
    verify_meta(c, t, &data)?;
    Ok(data)
}

fn verify_meta(c: &Checksum, t: ObjType, data: &[u8]) -> Result<()> {
    let what = || format!("{} {c}", t.name());
    let got = Checksum::of(data);
    if got != *c {
        bail!("{}: checksum mismatch (content hashes to {got})", what());
    }
    match t {
        ObjType::DirTree => DirTree::parse(data).map(drop),
        ObjType::DirMeta => DirMeta::parse(data).map(drop),
        ObjType::Commit => Commit::parse(data).map(drop),
        _ => Ok(()),
    }
    .with_context(what)
}

/// Fetch file object `c`, verify it, store its content. Returns the stored
/// form and the content size.
fn fetch_file(src: &dyn Source, repo: &Repository, c: &Checksum) -> Result<(Stored, u64)> {
    retry(|| fetch_file_once(src, repo, c))
}

fn fetch_file_once(src: &dyn Source, repo: &Repository, c: &Checksum) -> Result<(Stored, u64)> {
    let obj = src.file(c)?;
    let header = obj.header;
    let mut hasher = header.checksum_hasher();
    let size = header.size;
    let content = if size <= BUFFERED {
        let buf = match obj.content {
            source::FileContent::Bytes(b) => b,
            source::FileContent::Reader(mut r) => {
                let mut buf = Vec::with_capacity(size as usize);
                r.read_to_end(&mut buf)
                    .with_context(|| format!("file object {c}"))?;
                buf
            }
        };
        if buf.len() as u64 != size {
            bail!("file object {c}: content is not the header's size");
        }
        hasher.update(&buf);
        check_file_sum(c, hasher)?;
        if size <= super::shared::inline_max(repo.algorithm()) {
            Content::Inline(buf)
        } else {
            Content::External(repo.store_bytes(&buf)?)
        }
    } else {
        let mut w = repo.object_writer()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut content = obj.content.into_reader();
        loop {
            let n = content
                .read(&mut buf)
                .with_context(|| format!("file object {c}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            w.write_all(&buf[..n])?;
        }
        check_file_sum(c, hasher)?;
        Content::External(w.finish()?.0)
    };
    Ok((
        Stored::File {
            header: header.serialize_archive(),
            size,
            content,
        },
        size,
    ))
}

fn check_file_sum(c: &Checksum, h: sha2::Sha256) -> Result<()> {
    let got = super::objects::finish_checksum(h);
    if got != *c {
        bail!("file object {c}: checksum mismatch (header and content hash to {got})");
    }
    Ok(())
}

/// Store a file that arrived whole (from a delta), after verifying it.
fn store_whole_file(
    repo: &Repository,
    c: &Checksum,
    header: &FileHeader,
    content: &[u8],
) -> Result<Stored> {
    header
        .validate()
        .with_context(|| format!("file object {c}"))?;
    if header.size != content.len() as u64 {
        bail!("file object {c}: header size does not match content");
    }
    let got = header.checksum(content);
    if got != *c {
        bail!("file object {c}: checksum mismatch (header and content hash to {got})");
    }
    let content = if content.len() as u64 <= super::shared::inline_max(repo.algorithm()) {
        Content::Inline(content.to_vec())
    } else {
        Content::External(repo.store_bytes(content)?)
    };
    Ok(Stored::File {
        header: header.serialize_archive(),
        size: header.size,
        content,
    })
}

/// Stored commits, looked up through the index.
struct Reuse<'r> {
    repo: &'r Repository,
    index: Index,
    streams: HashMap<Checksum, Option<CommitStream>>,
}

impl<'r> Reuse<'r> {
    fn new(repo: &'r Repository) -> Result<Reuse<'r>> {
        let index = match Index::load(repo) {
            Ok(Some(i)) => i,
            _ => {
                if index::stored_commits(repo)?.is_empty() {
                    Index::empty()
                } else {
                    index::rebuild(repo)?;
                    Index::load(repo)?.unwrap_or_else(Index::empty)
                }
            }
        };
        Ok(Reuse {
            repo,
            index,
            streams: HashMap::new(),
        })
    }

    fn stream(&mut self, commit: &Checksum) -> Option<&CommitStream> {
        let repo = self.repo;
        self.streams
            .entry(*commit)
            .or_insert_with(|| CommitStream::open(repo, commit).ok())
            .as_ref()
    }

    fn get(&mut self, c: &Checksum, t: ObjType) -> Option<Stored> {
        let commit = self.index.lookup(c, t)?;
        let s = self.stream(&commit)?;
        s.stored(c, t).ok().flatten()
    }
}

#[derive(Clone, Copy)]
enum Task {
    Meta(Checksum, ObjType),
    File(Checksum),
}

enum Done {
    Meta(Checksum, ObjType, Vec<u8>),
    File(Checksum, Stored, u64),
}

/// Work queue: metadata before files, so the walk stays ahead.
struct Queue {
    state: Mutex<(VecDeque<Task>, VecDeque<Task>, bool)>,
    cond: Condvar,
}

impl Queue {
    fn push(&self, t: Task) {
        let mut s = self.state.lock().expect("queue");
        match t {
            Task::Meta(..) => s.0.push_back(t),
            Task::File(..) => s.1.push_back(t),
        }
        self.cond.notify_one();
    }

    fn pop(&self) -> Option<Task> {
        let mut s = self.state.lock().expect("queue");
        loop {
            if s.2 {
                return None;
            }
            if let Some(t) = s.0.pop_front().or_else(|| s.1.pop_front()) {
                return Some(t);
            }
            s = self.cond.wait(s).expect("queue");
        }
    }

    fn close(&self) {
        self.state.lock().expect("queue").2 = true;
        self.cond.notify_all();
    }
}

/// The walk's state, on the main thread.
struct Walk<'a, 'r> {
    objects: Objects,
    queued: HashSet<(Checksum, ObjType)>,
    expanded: HashSet<Checksum>,
    reuse: &'a mut Reuse<'r>,
    queue: &'a Queue,
    stats: &'a Stats,
    outstanding: usize,
    /// Objects fetched so far, for resuming (see [`super::partial`]).
    log: Option<PartialLog>,
    src: &'a dyn Source,
}

impl Walk<'_, '_> {
    fn want(&mut self, c: Checksum, t: ObjType, work: &mut Vec<Checksum>) {
        if t == ObjType::DirTree && self.expanded.contains(&c) {
            return;
        }
        if self.objects.contains_key(&(c, t)) {
            if t == ObjType::DirTree {
                work.push(c);
            }
            return;
        }
        if !self.queued.insert((c, t)) {
            return;
        }
        self.stats.objects_total.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.reuse.get(&c, t) {
            self.queued.remove(&(c, t));
            self.objects.insert((c, t), s);
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
            self.stats.objects_done.fetch_add(1, Ordering::Relaxed);
            if t == ObjType::DirTree {
                work.push(c);
            }
            return;
        }
        self.outstanding += 1;
        self.src.prefetch(&c, t);
        self.queue.push(match t {
            ObjType::File => Task::File(c),
            _ => Task::Meta(c, t),
        });
    }

    /// Want the children of dirtrees in `work` (and theirs, as found).
    fn expand(&mut self, mut work: Vec<Checksum>) -> Result<()> {
        while let Some(c) = work.pop() {
            if !self.expanded.insert(c) {
                continue;
            }
            let Some(Stored::Meta(data)) = self.objects.get(&(c, ObjType::DirTree)) else {
                bail!("dirtree {c} vanished");
            };
            let tree = DirTree::parse(data).with_context(|| format!("dirtree {c}"))?;
            for (_, f) in &tree.files {
                self.want(*f, ObjType::File, &mut work);
            }
            for (_, t, m) in &tree.dirs {
                self.want(*m, ObjType::DirMeta, &mut work);
                self.want(*t, ObjType::DirTree, &mut work);
            }
        }
        Ok(())
    }

    fn done(&mut self, d: Done) -> Result<()> {
        self.outstanding -= 1;
        self.stats.objects_done.fetch_add(1, Ordering::Relaxed);
        self.stats.fetched.fetch_add(1, Ordering::Relaxed);
        match d {
            Done::Meta(c, t, data) => {
                self.stats
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                self.objects.insert((c, t), Stored::Meta(data));
                if t == ObjType::DirTree {
                    self.expand(vec![c])?;
                }
            }
            Done::File(c, s, n) => {
                self.stats.bytes.fetch_add(n, Ordering::Relaxed);
                if let Some(l) = &mut self.log {
                    l.record(&c, ObjType::File, &s)?;
                }
                self.objects.insert((c, ObjType::File), s);
            }
        }
        Ok(())
    }
}

/// Pull `rref` from `source_spec` into `repo`.
pub fn pull(
    repo: &Repository,
    source_spec: &str,
    rref: &str,
    opts: &PullOptions,
    stats: &Stats,
) -> Result<PullReport> {
    repo.ensure_writable()?;
    *stats.phase.lock().expect("stats") = "resolving";
    let src = super::open_source_with(source_spec, opts.timeout)?;
    let src: &dyn Source = &*src;
    let summary_bytes = retry(|| src.read("summary", MAX_SUMMARY_SIZE)).context("summary")?;
    let summary = match &summary_bytes {
        Some(b) => {
            Some(Summary::parse(b).with_context(|| format!("summary of {}", src.describe()))?)
        }
        None => None,
    };
    let mut signers = Vec::new();
    if let Some(b) = &summary_bytes {
        signers.extend(trust::check_summary(src, b, &opts.trust)?);
    }
    let Resolved {
        commit,
        name: refname,
    } = resolve::resolve(src, summary.as_ref(), rref)?;
    let name = opts.name.clone().unwrap_or(refname);
    let ref_name = super::shared::ref_name(&name);
    crate::repository::validate_ref_name(&ref_name)?;

    // Already stored: check signatures on what we hold, then just name it.
    // Stored but unreadable is an error, not a reason to pull it over.
    let stored = super::cache::try_open(repo, &commit).with_context(|| {
        format!(
            "commit {commit} is stored but cannot be read (`composefs fsck` tells what is \
             damaged; delete what names it and gc before pulling it again)"
        )
    })?;
    if let Some(stored) = stored {
        let cbytes = stored
            .metadata(&commit, ObjType::Commit)?
            .context("stored commit lacks its commit object")?
            .to_vec();
        let mut meta = stored
            .metadata(&commit, ObjType::CommitMeta)?
            .map(<[u8]>::to_vec);
        // The shared stream holds no detached metadata: ask the source.
        if meta.is_none() && opts.trust.wants_signatures() {
            meta = retry(|| src.metadata(&commit, ObjType::CommitMeta))
                .with_context(|| format!("detached metadata of commit {commit}"))?;
        }
        signers.extend(trust::check_commit(
            &commit,
            &cbytes,
            meta.as_deref(),
            &opts.trust,
        )?);
        if stored.is_legacy() {
            // Stored by an earlier version: rewritten as cfsctl stores it.
            let mut objects = stored.objects()?;
            super::image::store_pulled(repo, &commit, &mut objects, Some(&ref_name))?;
        } else {
            repo.sync()?;
            repo.set_ref(
                crate::repository::RefKind::Stream,
                &ref_name,
                &commitstream::content_id(&commit),
            )?;
        }
        // Best effort: the ref is published whatever happens here.
        let _ = PartialLog::discard(repo, &commit);
        return Ok(PullReport {
            commit,
            name,
            fetched: 0,
            reused: stored.len() as u64,
            bytes: 0,
            delta: None,
            signers,
            already_stored: true,
        });
    }

    *stats.phase.lock().expect("stats") = "commit";
    // A static delta, when one fits: its superblock carries the commit (and
    // its detached metadata), so a delta pull makes no object requests.
    let mut delta = None;
    let mut fetched_commit = None;
    if !opts.no_deltas {
        let base = match &opts.base {
            Some(b) => Some(resolve::stored_commit(repo, b)?),
            None => None,
        };
        let listed = delta_listing(src, summary.as_ref(), &commit)?;
        // Without a listing, deltas are probed for: from the parent.
        let parent = if listed.is_none() {
            let b = fetch_meta(src, &commit, ObjType::Commit)?;
            let p = Commit::parse(&b)
                .with_context(|| format!("commit {commit}"))?
                .parent;
            fetched_commit = Some(b);
            p
        } else {
            None
        };
        delta = find_delta(src, listed.as_ref(), repo, &commit, parent, base)?;
    }
    let (cbytes, mut commitmeta) = match (&delta, fetched_commit) {
        (Some((_, sb)), _) => (sb.commit.clone(), sb.detached_metadata.clone()),
        (None, Some(b)) => (b, None),
        (None, None) => (fetch_meta(src, &commit, ObjType::Commit)?, None),
    };
    if commitmeta.is_none() && (delta.is_none() || opts.trust.wants_signatures()) {
        commitmeta = retry(|| src.metadata(&commit, ObjType::CommitMeta))
            .with_context(|| format!("detached metadata of commit {commit}"))?;
    }
    verify_meta(&commit, ObjType::Commit, &cbytes)?;
    let parsed = Commit::parse(&cbytes).with_context(|| format!("commit {commit}"))?;
    if let Some(m) = &commitmeta {
        check_dict("detached commit metadata", m)
            .with_context(|| format!("detached metadata of commit {commit}"))?;
    }
    signers.extend(trust::check_commit(
        &commit,
        &cbytes,
        commitmeta.as_deref(),
        &opts.trust,
    )?);
    stats
        .fetched
        .fetch_add(1 + commitmeta.is_some() as u64, Ordering::Relaxed);

    let mut reuse = Reuse::new(repo)?;
    let queue = Queue {
        state: Mutex::new((VecDeque::new(), VecDeque::new(), false)),
        cond: Condvar::new(),
    };
    let mut walk = Walk {
        objects: Objects::new(),
        queued: HashSet::new(),
        expanded: HashSet::new(),
        reuse: &mut reuse,
        queue: &queue,
        stats,
        outstanding: 0,
        log: None,
        src,
    };
    // What an interrupted pull of this commit already fetched.
    if let Some((log, entries)) = PartialLog::open(repo, &commit)? {
        let mut resumed = 0u64;
        for (k, s) in entries {
            if let Stored::File {
                content: Content::External(id),
                ..
            } = &s
                && !repo.has_object(id)?
            {
                continue;
            }
            walk.objects.insert(k, s);
            resumed += 1;
        }
        stats.reused.fetch_add(resumed, Ordering::Relaxed);
        walk.log = Some(log);
    }

    let mut delta_used = None;
    if let Some((from, sb)) = &delta {
        *stats.phase.lock().expect("stats") = "delta";
        let label = match from {
            None => "scratch".to_string(),
            Some(f) => format!("from {f}"),
        };
        *stats.delta.lock().expect("stats") = Some(label.clone());
        apply_delta(src, repo, from.as_ref(), &commit, sb, &mut walk, opts.jobs)?;
        delta_used = Some(label);
    }

    *stats.phase.lock().expect("stats") = "objects";
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Result<Done>>();
    // Disk writes overlap the walk (see `Repository::with_flusher`).
    repo.with_flusher(|| {
        std::thread::scope(|scope| -> Result<()> {
            for _ in 0..opts.jobs.max(1) {
                let tx = tx.clone();
                let queue = &queue;
                let failed = &failed;
                scope.spawn(move || {
                    while let Some(task) = queue.pop() {
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        let r = match task {
                            Task::Meta(c, t) => fetch_meta(src, &c, t).map(|d| Done::Meta(c, t, d)),
                            Task::File(c) => {
                                fetch_file(src, repo, &c).map(|(s, n)| Done::File(c, s, n))
                            }
                        };
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let result = (|| -> Result<()> {
                let mut work = Vec::new();
                walk.want(parsed.root_meta, ObjType::DirMeta, &mut work);
                walk.want(parsed.root_tree, ObjType::DirTree, &mut work);
                walk.expand(work)?;
                while walk.outstanding > 0 {
                    let d = rx.recv().context("fetch workers stopped")??;
                    walk.done(d)?;
                }
                Ok(())
            })();
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            queue.close();
            result
        })
    })?;

    *stats.phase.lock().expect("stats") = "storing";
    let mut objects = std::mem::take(&mut walk.objects);
    // Refuse trees that expand beyond what can be checked out or imaged.
    super::tree::check_expansion(&parsed.root_tree, &mut |t| match objects
        .get(&(*t, ObjType::DirTree))
    {
        Some(Stored::Meta(d)) => DirTree::parse(d).with_context(|| format!("dirtree {t}")),
        _ => bail!("dirtree {t} is missing"),
    })
    .with_context(|| format!("commit {commit}"))?;
    let log = walk.log.take();
    objects.insert((commit, ObjType::Commit), Stored::Meta(cbytes));
    if let Some(m) = commitmeta {
        objects.insert((commit, ObjType::CommitMeta), Stored::Meta(m));
    }
    super::image::store_pulled(repo, &commit, &mut objects, Some(&ref_name))?;
    // The index learns the commit's objects from what was just written.
    index::add(repo, commit, objects.keys().copied()).context("cannot update the ostree index")?;
    if let Some(l) = log {
        l.remove()?;
    }
    Ok(PullReport {
        commit,
        name,
        fetched: stats.fetched.load(Ordering::Relaxed),
        reused: stats.reused.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        delta: delta_used,
        signers,
        already_stored: false,
    })
}

type DeltaList = std::collections::BTreeMap<String, Checksum>;

/// The deltas the source lists for `to`: from the summary, or its
/// `delta-indexes/` file; `None` without a summary (deltas are probed).
fn delta_listing(
    src: &dyn Source,
    summary: Option<&Summary>,
    to: &Checksum,
) -> Result<Option<DeltaList>> {
    Ok(match summary {
        Some(s) if s.indexed_deltas => Some(
            retry(|| src.read(&summary::delta_index_path(to), MAX_METADATA_SIZE as u64))?
                .map(|d| summary::parse_delta_index(&d))
                .unwrap_or_default(),
        ),
        Some(s) => Some(s.deltas.clone()),
        None => None,
    })
}

/// Find a static delta to `to`: from the base or the parent if stored (or
/// any stored commit the listing has a delta from), else from scratch when
/// no base is stored. Returns (from, superblock).
fn find_delta(
    src: &dyn Source,
    listed: Option<&DeltaList>,
    repo: &Repository,
    to: &Checksum,
    parent: Option<Checksum>,
    base: Option<Checksum>,
) -> Result<Option<(Option<Checksum>, delta::Superblock)>> {
    let stored: HashSet<Checksum> = index::stored_commits(repo)?.into_iter().collect();
    let mut froms: Vec<Checksum> = base
        .into_iter()
        .chain(parent)
        .filter(|c| stored.contains(c))
        .collect();
    froms.dedup();
    if let Some(l) = listed {
        // Any stored commit with a delta to `to` is a basis too.
        for name in l.keys() {
            if let Some((f, t)) = name.split_once('-')
                && t == to.to_hex()
                && let Ok(f) = Checksum::from_hex(f)
                && stored.contains(&f)
                && !froms.contains(&f)
            {
                froms.push(f);
            }
        }
    }
    let have_basis = !froms.is_empty();
    let mut candidates: Vec<Option<Checksum>> = froms.into_iter().map(Some).collect();
    if !have_basis {
        candidates.push(None);
    }
    for from in candidates {
        let expected = match listed {
            Some(l) => match l.get(&delta_name(from.as_ref(), to)) {
                Some(c) => Some(*c),
                None => continue,
            },
            None => None,
        };
        let path = delta::superblock_path(from.as_ref(), to);
        let Some(data) = retry(|| src.read(&path, 1 << 30))? else {
            if expected.is_some() {
                bail!("delta superblock {path} is listed but missing");
            }
            continue;
        };
        if let Some(e) = expected {
            let got = Checksum::of(&data);
            if got != e {
                bail!("delta superblock {path}: checksum mismatch (expected {e}, got {got})");
            }
        }
        let sb =
            delta::parse_superblock(&data).with_context(|| format!("delta superblock {path}"))?;
        if sb.to != *to || sb.from != from {
            bail!("delta superblock {path} is for another commit pair");
        }
        if Checksum::of(&sb.commit) != *to {
            bail!("delta superblock {path}: its commit does not match {to}");
        }
        return Ok(Some((from, sb)));
    }
    Ok(None)
}

/// Sink for one delta part: verifies and stores what the part produces.
struct PartSink<'a> {
    repo: &'a Repository,
    from: Option<&'a CommitStream>,
    out: Vec<Entry>,
    bytes: u64,
}

impl DeltaSink for PartSink<'_> {
    fn metadata(&mut self, objtype: ObjType, checksum: Checksum, data: Vec<u8>) -> Result<()> {
        verify_meta(&checksum, objtype, &data)?;
        self.bytes += data.len() as u64;
        self.out.push(((checksum, objtype), Stored::Meta(data)));
        Ok(())
    }

    fn file(&mut self, checksum: Checksum, header: FileHeader, content: &[u8]) -> Result<()> {
        let s = store_whole_file(self.repo, &checksum, &header, content)?;
        self.bytes += content.len() as u64;
        self.out.push(((checksum, ObjType::File), s));
        Ok(())
    }

    fn read_source(&mut self, checksum: Checksum) -> Result<Vec<u8>> {
        let from = self
            .from
            .context("delta reads a source object but has no base commit")?;
        let (_, _, content) = from
            .file(&checksum)?
            .with_context(|| format!("delta source object {checksum} is not in the base commit"))?;
        match content {
            Content::Inline(b) => Ok(b),
            Content::External(id) => {
                let mut f = self.repo.open_object(&id)?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok(buf)
            }
        }
    }
}

fn apply_delta(
    src: &dyn Source,
    repo: &Repository,
    from: Option<&Checksum>,
    to: &Checksum,
    sb: &delta::Superblock,
    walk: &mut Walk<'_, '_>,
    jobs: usize,
) -> Result<()> {
    let from_stream = match from {
        Some(f) => Some(CommitStream::open(repo, f)?),
        None => None,
    };
    // Parts whose objects we all hold already are skipped.
    let needed: Vec<&PartMeta> = sb
        .parts
        .iter()
        .filter(|p| {
            p.objects.iter().any(|(t, c)| {
                !walk.objects.contains_key(&(*c, *t)) && walk.reuse.index.lookup(c, *t).is_none()
            })
        })
        .collect();
    walk.stats.objects_total.fetch_add(
        needed.iter().map(|p| p.objects.len() as u64).sum(),
        Ordering::Relaxed,
    );
    let stats = walk.stats;
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Result<Vec<Entry>>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, needed.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(part) = needed.get(i) else { break };
                    let r = (|| -> Result<_> {
                        let path = delta::part_path(from, to, part.index);
                        let raw = match &part.inline {
                            Some(b) => b.clone(),
                            None => retry(|| src.read(&path, part.size.max(1) + (1 << 20)))?
                                .with_context(|| format!("delta part {path} not found"))?,
                        };
                        let mut sink = PartSink {
                            repo,
                            from: from_stream.as_ref(),
                            out: Vec::new(),
                            bytes: 0,
                        };
                        delta::apply_part(part, &raw, &mut sink)
                            .with_context(|| format!("delta part {path}"))?;
                        stats.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
                        stats
                            .objects_done
                            .fetch_add(sink.out.len() as u64, Ordering::Relaxed);
                        stats
                            .fetched
                            .fetch_add(sink.out.len() as u64, Ordering::Relaxed);
                        Ok(sink.out)
                    })();
                    let bad = r.is_err();
                    results.lock().expect("results").push(r);
                    if bad {
                        next.store(u64::MAX / 2, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    for r in results.into_inner().expect("results") {
        for (k, s) in r? {
            walk.objects.insert(k, s);
        }
    }
    Ok(())
}
