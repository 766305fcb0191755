//! Read-ahead of the files a walk is about to read: a directory's files
//! noted when it is listed, handed to one helper thread when the first of
//! them is read (or at once when the listing ends right after a content
//! read, the mark of a walk such as `tar` or `diff -r`), which pushes their
//! contents into the kernel's page cache (`FUSE_NOTIFY_STORE`) or, where it
//! cannot, asks the kernel to read their objects (`fadvise(WILLNEED)`).
//! The helper keeps [`WINDOW`] objects open and being read by the kernel
//! ahead of the one it stores, so the disk works on several at once.
//! For a remote tree ([`Tree::fetches_contents`]) the objects are fetched
//! first, by [`FETCHERS`] threads at once.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::INodeNo;

use super::lock;
use crate::fsverity::ObjectId;
use crate::tree::{Ino, Tree};

/// Read-ahead of file contents a walk is about to read: when a directory
/// is listed, its files' objects are noted; when one of them is first read
/// (a reader of contents, as `tar` or `diff -r`, not a metadata walk, as
/// `find`), the files listed after it (at most [`PREFETCH_FILES`] and
/// [`PREFETCH_BYTES`]) are handed to one helper thread; a directory whose
/// listing ends within [`WALK_GAP_MS`] of a content read is handed over
/// whole at once. It reads each
/// object and pushes its content into the kernel's page cache for that
/// file (`FUSE_NOTIFY_STORE`): the reader then finds it cached and sends no
/// request at all, which is what a FUSE read costs most (a round trip to
/// the daemon per file). Where the content must first be verified
/// (`--verify`), or the session cannot notify, it only asks the kernel to
/// read the object (`fadvise(WILLNEED)`). A local tree's helper opens the
/// next [`WINDOW`] queued objects and asks the kernel to read them before
/// it stores the first: one thread reading one file at a time lost the
/// race to the reader it works for (docs/performance.md). Bounded: the
/// notes hold at most
/// [`PREFETCH_NOTES`] files (all dropped past that), the queue
/// [`PREFETCH_QUEUED`] files (more are dropped), [`WINDOW`] descriptors are
/// open and one [`STORE_CHUNK`] buffer held at a time per thread; the threads
/// sleep when the mount is idle. For a remote tree, a file whose object is
/// not stored is fetched (verified, stored) through the tree first, by
/// [`FETCHERS`] threads at once; for a local tree one thread reads ahead.
pub(super) struct Prefetch {
    /// File inode → its directory's batch and its place in it.
    notes: Mutex<HashMap<Ino, (Arc<PrefetchBatch>, usize)>>,
    /// Directory inode → its batch, until the kernel has its whole listing.
    listings: Mutex<HashMap<Ino, Arc<PrefetchBatch>>>,
    queue: Mutex<Option<std::sync::mpsc::Sender<Queued>>>,
    /// Files queued and not yet read ahead (at most [`PREFETCH_QUEUED`]).
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// The repository's objects directory (a duplicate descriptor: the
    /// thread opens objects relative to it, whatever the daemon's cwd).
    objects: Option<Arc<File>>,
    /// Set once the session runs; `None` inside: fadvise only.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Push contents into the page cache (off with `--verify` and
    /// `--passthrough`).
    store: bool,
    /// When a file's content was last read, in milliseconds since `start`
    /// (0: never): a directory listed soon after is read ahead at once.
    last_read: AtomicU64,
    start: std::time::Instant,
    /// A remote tree, whose objects the read-ahead fetches.
    fetcher: Option<Arc<dyn Tree>>,
}

/// A file to read ahead: its FUSE and tree inodes, object (when the tree
/// names it before fetching) and size.
#[derive(Clone)]
pub(super) struct Ahead {
    pub(super) ino: INodeNo,
    pub(super) tree_ino: Ino,
    pub(super) id: Option<ObjectId>,
    pub(super) size: u64,
}

/// File `j` of a batch, queued for the helper threads.
type Queued = (Arc<PrefetchBatch>, usize);

struct PrefetchBatch {
    /// The directory's external files, in listing order.
    files: Vec<Ahead>,
    sent: std::sync::atomic::AtomicBool,
    /// One past the last of `files` the reader has started on.
    reader_at: std::sync::atomic::AtomicUsize,
}

const PREFETCH_FILES: usize = 256;
const PREFETCH_BYTES: u64 = 32 << 20;
const PREFETCH_NOTES: usize = 16384;
const PREFETCH_QUEUED: usize = 1024;
/// A directory listed within this long of a content read is read ahead
/// when listed, not at its first file's read.
const WALK_GAP_MS: u64 = 500;
/// Content is read and pushed to the kernel this much at a time.
const STORE_CHUNK: usize = 1 << 20;
/// Threads reading ahead for a remote tree (each waits on the network for
/// one file at a time).
const FETCHERS: usize = 4;
/// Files each helper thread has opened and asked the kernel to read
/// before it stores the first of them: the disk works on that many at once.
const WINDOW: usize = 32;

impl Prefetch {
    pub(super) fn new(objects: Option<File>, store: bool, fetcher: Option<Arc<dyn Tree>>) -> Self {
        Prefetch {
            notes: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            queue: Mutex::new(None),
            queued: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            objects: objects.map(Arc::new),
            notifier: Arc::new(std::sync::OnceLock::new()),
            store,
            last_read: AtomicU64::new(0),
            start: std::time::Instant::now(),
            fetcher,
        }
    }

    /// Where the session's notifier goes once it runs.
    pub(super) fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Note the external files of a listed directory (tree inode, and
    /// what to read ahead).
    pub(super) fn listed(&self, dir: Ino, files: Vec<(Ino, Ahead)>) {
        if files.is_empty() {
            return;
        }
        let (inos, files): (Vec<Ino>, Vec<Ahead>) = files.into_iter().unzip();
        let batch = Arc::new(PrefetchBatch {
            files,
            sent: std::sync::atomic::AtomicBool::new(false),
            reader_at: std::sync::atomic::AtomicUsize::new(0),
        });
        let mut notes = lock(&self.notes);
        if notes.len() + inos.len() > PREFETCH_NOTES {
            notes.clear();
            lock(&self.listings).clear();
        }
        for (i, ino) in inos.into_iter().enumerate() {
            notes.insert(ino, (batch.clone(), i));
        }
        lock(&self.listings).insert(dir, batch);
    }

    /// The kernel has read directory `dir`'s listing to its end (so it
    /// knows the inodes the helper will push contents for). When contents
    /// were read a moment ago, a walk that reads contents (tar, diff -r)
    /// is on its way into this directory: read its files ahead now, not
    /// at the first one's read.
    pub(super) fn listing_ended(&self, dir: Ino) {
        let Some(batch) = lock(&self.listings).remove(&dir) else {
            return;
        };
        let last = self.last_read.load(Ordering::Relaxed);
        if last != 0
            && self.now_ms().saturating_sub(last) < WALK_GAP_MS
            && !batch.sent.swap(true, Ordering::Relaxed)
        {
            let from = batch.reader_at.load(Ordering::Relaxed);
            self.send(batch, from);
        }
    }

    /// `ino` is being read: read ahead the files listed after it.
    pub(super) fn reading(&self, ino: Ino) {
        self.last_read.store(self.now_ms(), Ordering::Relaxed);
        let Some((batch, i)) = lock(&self.notes).get(&ino).cloned() else {
            return;
        };
        // The helper skips what the reader has passed.
        batch.reader_at.fetch_max(i + 1, Ordering::Relaxed);
        if !batch.sent.swap(true, Ordering::Relaxed) {
            self.send(batch, i + 1);
        }
    }

    /// Queue `batch`'s files from `from` on for the helper thread.
    fn send(&self, batch: Arc<PrefetchBatch>, from: usize) {
        let Some(objects) = &self.objects else { return };
        let mut bytes = 0u64;
        let n = batch.files[from..]
            .iter()
            .take(PREFETCH_FILES)
            .take_while(|a| {
                bytes += a.size;
                bytes <= PREFETCH_BYTES
            })
            .count();
        if n == 0 {
            return;
        }
        // Bounded in files queued, not batches: a walk lists many small
        // directories in a row.
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > PREFETCH_QUEUED {
            // The reader is ahead of the helper anyway.
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return;
        }
        let mut q = lock(&self.queue);
        if q.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Queued>();
            let rx = Arc::new(Mutex::new(rx));
            // A remote tree's threads each wait on one fetch at a time; a
            // local tree's one thread keeps a window of disk reads going.
            let (workers, window_len) = if self.fetcher.is_some() {
                (FETCHERS, 1)
            } else {
                (1, WINDOW)
            };
            let mut started = 0;
            for _ in 0..workers {
                let rx = rx.clone();
                let objects = objects.clone();
                let notifier = self.store.then(|| self.notifier.clone());
                let queued = self.queued.clone();
                let fetcher = self.fetcher.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("prefetch".into())
                        .spawn(move || {
                            let mut buf = Vec::new();
                            // Files taken off the queue, their stored
                            // objects opened and the kernel asked to read
                            // them (so up to WINDOW disk reads overlap).
                            let mut window: VecDeque<(Queued, Option<File>)> = VecDeque::new();
                            loop {
                                // The lock is held only while taking work.
                                {
                                    let rx = lock(&rx);
                                    if window.is_empty() {
                                        let Ok(q) = rx.recv() else { break };
                                        window.push_back((q, None));
                                    }
                                    while window.len() < window_len {
                                        let Ok(q) = rx.try_recv() else { break };
                                        window.push_back((q, None));
                                    }
                                }
                                for ((batch, j), file) in window.iter_mut() {
                                    if file.is_none()
                                        && *j >= batch.reader_at.load(Ordering::Relaxed)
                                    {
                                        *file = open_stored(&objects, &batch.files[*j]);
                                    }
                                }
                                let Some(((batch, j), file)) = window.pop_front() else {
                                    continue;
                                };
                                if j >= batch.reader_at.load(Ordering::Relaxed) {
                                    read_ahead(
                                        &objects,
                                        file,
                                        notifier.as_deref(),
                                        fetcher.as_deref(),
                                        &batch.files[j],
                                        &mut buf,
                                    );
                                }
                                queued.fetch_sub(1, Ordering::Relaxed);
                            }
                        });
                if spawned.is_ok() {
                    started += 1;
                }
            }
            if started == 0 {
                self.queued.fetch_sub(n, Ordering::Relaxed);
                return;
            }
            *q = Some(tx);
        }
        if let Some(tx) = q.as_ref() {
            for j in from..from + n {
                if tx.send((batch.clone(), j)).is_err() {
                    self.queued.fetch_sub(from + n - j, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Object `id` opened from the objects directory, if it is stored.
fn open_object(objects: &File, id: &ObjectId) -> Option<File> {
    rustix::fs::openat(
        objects,
        id.object_path(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
    )
    .ok()
    .map(File::from)
}

/// The stored object of `a`, opened, and the kernel asked to start reading
/// it (`fadvise(WILLNEED)`: the read is queued, not waited for). `None` when
/// the tree does not name it or it is not stored (a remote tree fetches it
/// when its turn comes).
fn open_stored(objects: &File, a: &Ahead) -> Option<File> {
    let f = open_object(objects, a.id.as_ref()?)?;
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
    Some(f)
}

/// Read one file ahead: its object fetched first when a remote tree's is
/// not stored, then its content pushed into the kernel's page cache
/// through `notifier` when there is one, else fadvised. Best effort: any
/// failure leaves the file to be read (and reported) on demand.
fn read_ahead(
    objects: &File,
    stored: Option<File>,
    notifier: Option<&std::sync::OnceLock<fuser::Notifier>>,
    fetcher: Option<&dyn Tree>,
    a: &Ahead,
    buf: &mut Vec<u8>,
) {
    let f = match (stored, fetcher) {
        (Some(f), _) => f,
        (None, Some(t)) => match t.content_object(a.tree_ino) {
            Ok(Some(id)) => match open_object(objects, &id) {
                Some(f) => f,
                None => return,
            },
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("read-ahead of inode {}: {e:#}", a.tree_ino);
                return;
            }
        },
        (None, None) => return,
    };
    let Some(notifier) = notifier.and_then(|n| n.get()) else {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
        return;
    };
    // A short object fails the read and is left for the read path to report.
    buf.resize(STORE_CHUNK.min(a.size as usize), 0);
    let mut offset = 0u64;
    while offset < a.size {
        let want = STORE_CHUNK.min((a.size - offset) as usize);
        if f.read_exact_at(&mut buf[..want], offset).is_err()
            || notifier.store(a.ino, offset, &buf[..want]).is_err()
        {
            return;
        }
        offset += want as u64;
    }
}
