//! The walk of a commit's tree on the main thread: which objects are
//! wanted (metadata first, so the walk stays ahead of the file fetches),
//! which are reused from stored commits through the index, and what the
//! workers have fetched; plus the worker pool that runs the queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use anyhow::{Context, Result, bail};

use super::Stats;
use super::fetch::{fetch_file, fetch_meta};
use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::commitstream::{CommitStream, Content, Objects, Stored};
use crate::ostree::index::{self, Index};
use crate::ostree::objects::{Commit, DirTree};
use crate::ostree::partial::PartialLog;
use crate::ostree::source::Source;
use crate::repository::Repository;

/// Stored commits, looked up through the index.
pub(super) struct Reuse<'r> {
    repo: &'r Repository,
    pub(super) index: Index,
    streams: HashMap<Checksum, Option<CommitStream>>,
}

impl<'r> Reuse<'r> {
    pub(super) fn new(repo: &'r Repository) -> Result<Reuse<'r>> {
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
pub(super) enum Task {
    Meta(Checksum, ObjType),
    File(Checksum),
}

pub(super) enum Done {
    Meta(Checksum, ObjType, Vec<u8>),
    File(Checksum, Stored, u64),
}

/// Files a worker hands to the walk at once (see [`run`]).
const FILE_BATCH: usize = 32;

/// Work queue: metadata before files, so the walk stays ahead.
pub(super) struct Queue {
    state: Mutex<(VecDeque<Task>, VecDeque<Task>, bool)>,
    cond: Condvar,
}

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            state: Mutex::new((VecDeque::new(), VecDeque::new(), false)),
            cond: Condvar::new(),
        }
    }

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

    /// A task if one is waiting, without blocking.
    fn pop_now(&self) -> Option<Task> {
        let mut s = self.state.lock().expect("queue");
        if s.2 {
            return None;
        }
        s.0.pop_front().or_else(|| s.1.pop_front())
    }

    fn close(&self) {
        self.state.lock().expect("queue").2 = true;
        self.cond.notify_all();
    }
}

/// The walk's state, on the main thread.
pub(super) struct Walk<'a, 'r> {
    pub(super) objects: Objects,
    queued: HashSet<(Checksum, ObjType)>,
    expanded: HashSet<Checksum>,
    pub(super) reuse: &'a mut Reuse<'r>,
    queue: &'a Queue,
    pub(super) stats: &'a Stats,
    outstanding: usize,
    /// Objects fetched so far, for resuming (see [`crate::ostree::partial`]).
    pub(super) log: Option<PartialLog>,
    src: &'a dyn Source,
}

impl<'a, 'r> Walk<'a, 'r> {
    pub(super) fn new(
        reuse: &'a mut Reuse<'r>,
        queue: &'a Queue,
        stats: &'a Stats,
        src: &'a dyn Source,
    ) -> Self {
        Walk {
            objects: Objects::new(),
            queued: HashSet::new(),
            expanded: HashSet::new(),
            reuse,
            queue,
            stats,
            outstanding: 0,
            log: None,
            src,
        }
    }

    /// Take up what an interrupted pull of `commit` already fetched, and
    /// keep logging to the same log.
    pub(super) fn resume(&mut self, repo: &Repository, commit: &Checksum) -> Result<()> {
        let Some((log, entries)) = PartialLog::open(repo, commit)? else {
            return Ok(());
        };
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
            self.objects.insert(k, s);
            resumed += 1;
        }
        self.stats.reused.fetch_add(resumed, Ordering::Relaxed);
        self.log = Some(log);
        Ok(())
    }

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

/// Walk the tree from the commit's root on this thread while `jobs`
/// workers fetch what it wants; disk writes overlap the walk (see
/// `Repository::with_flusher`). The first error stops the workers.
pub(super) fn run(
    repo: &Repository,
    src: &dyn Source,
    walk: &mut Walk<'_, '_>,
    root: &Commit,
    jobs: usize,
) -> Result<()> {
    let queue = walk.queue;
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Result<Vec<Done>>>();
    repo.with_flusher(|| {
        std::thread::scope(|scope| -> Result<()> {
            for _ in 0..jobs.max(1) {
                let tx = tx.clone();
                let failed = &failed;
                scope.spawn(move || {
                    // Files done are handed to the walk a batch at a time
                    // (one wake-up of the main thread per batch, not per
                    // file); metadata at once, as the walk needs it to go
                    // on. A worker never waits for work holding a batch.
                    let mut files = Vec::new();
                    // False once the walk has gone.
                    let flush = |files: &mut Vec<Done>| {
                        files.is_empty() || tx.send(Ok(std::mem::take(files))).is_ok()
                    };
                    loop {
                        let task = match queue.pop_now() {
                            Some(t) => t,
                            None => {
                                if !flush(&mut files) {
                                    break;
                                }
                                match queue.pop() {
                                    Some(t) => t,
                                    None => break,
                                }
                            }
                        };
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        let sent = match task {
                            Task::Meta(c, t) => {
                                tx.send(fetch_meta(src, &c, t).map(|d| vec![Done::Meta(c, t, d)]))
                            }
                            Task::File(c) => match fetch_file(src, repo, &c) {
                                Ok((s, n)) => {
                                    files.push(Done::File(c, s, n));
                                    if files.len() < FILE_BATCH {
                                        continue;
                                    }
                                    tx.send(Ok(std::mem::take(&mut files)))
                                }
                                Err(e) => {
                                    // What is done first: the resume log
                                    // keeps it.
                                    if !flush(&mut files) {
                                        break;
                                    }
                                    tx.send(Err(e))
                                }
                            },
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let result = (|| -> Result<()> {
                let mut work = Vec::new();
                walk.want(root.root_meta, ObjType::DirMeta, &mut work);
                walk.want(root.root_tree, ObjType::DirTree, &mut work);
                walk.expand(work)?;
                while walk.outstanding > 0 {
                    for d in rx.recv().context("fetch workers stopped")?? {
                        walk.done(d)?;
                    }
                }
                Ok(())
            })();
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            queue.close();
            result
        })
    })
}
