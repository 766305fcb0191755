//! The read-only [`fuser::Filesystem`] over a [`Tree`].
//!
//! FUSE inode numbers are the tree's shifted by two, except the tree's root,
//! which FUSE requires to be 1: `fuse = tree + 2`, so every number is
//! stable across mounts of the same tree and the mapping is a bijection.
//! Metadata comes from the tree through a bounded cache of decoded inodes
//! and listings ([`super::cache`]); regular files' bytes come from memory
//! (inline data) or from the repository object (through a bounded cache of
//! open objects, digested on first open with `--verify`). Inodes the tree
//! calls live (the whole-repository view's directories) get short
//! timeouts and no kept cache. Every request that would change something
//! is refused with `EROFS`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::cache::{NodeCache, ObjectCache};
use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::tree::{DirEntry, FileData, Ino, Inode, Kind, Timespec, Tree};

/// How long the kernel may cache entries and attributes: the trees are
/// immutable, so as long as it likes.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long the kernel may cache live entries and attributes (refs that a
/// pull or a gc may change): short, so changes show at once.
const LIVE_TTL: Duration = Duration::from_secs(1);

/// Listings larger than the whole cache budget kept while they are read
/// (a kernel reads a directory in chunks of a few dozen entries, each a
/// request that would otherwise read the whole listing again): at most
/// this many, each dropped once read to its end or pushed out by newer
/// ones. So a huge directory costs the daemon one copy of its listing
/// while it is being listed (none for a tree held in memory, whose
/// listings are shared), not one per request, and nothing after.
const BIG_LISTINGS: usize = 2;

/// How the filesystem serves.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Bytes of decoded inodes and listings kept.
    pub cache_bytes: usize,
    /// Object files kept open between reads.
    pub open_objects: usize,
    /// Digest each object on first open (for repositories without
    /// fs-verity, where the kernel does not check).
    pub verify: bool,
    /// Let the kernel skip open and release requests (reads then come by
    /// inode). Off when an open file must outlive its tree's objects, as
    /// in the live repository view, where a gc may remove them.
    pub no_open: bool,
    /// Hand object files to the kernel to read directly (FUSE
    /// passthrough; needs CAP_SYS_ADMIN and kernel 6.9+; falls back to
    /// reads through the daemon when refused). Implies opens.
    pub passthrough: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            cache_bytes: super::cache::DEFAULT_CACHE_BYTES,
            open_objects: super::cache::DEFAULT_OPEN_OBJECTS,
            verify: false,
            no_open: true,
            passthrough: false,
        }
    }
}

/// What an open file or directory handle refers to.
#[derive(Clone)]
enum Handle {
    Inline(Arc<Inode>),
    Object {
        file: Arc<File>,
        size: u64,
    },
    Dir(Arc<[DirEntry]>),
    /// Read by the kernel from the backing file of this inode.
    Passthrough(Ino),
}

/// The filesystem: a tree, the repository holding its objects, and the
/// open handles.
pub struct TreeFs {
    tree: Arc<dyn Tree>,
    repo: Repository,
    root: Ino,
    nlinks: HashMap<Ino, u64>,
    nodes: NodeCache,
    /// Listings too large for `nodes`, most recent first ([`BIG_LISTINGS`]).
    big: Mutex<std::collections::VecDeque<(Ino, Arc<[DirEntry]>)>>,
    /// Directories known to be too large for `nodes`: a name in them is
    /// looked up by the tree, not in a listing read for it.
    big_dirs: Mutex<std::collections::HashSet<Ino>>,
    objects: ObjectCache,
    verify: bool,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Answer the first open with ENOSYS (FUSE_NO_OPEN_SUPPORT): files are
    /// then opened without a request and read by inode.
    no_open: bool,
    /// Passthrough asked for and granted by the kernel.
    passthrough: bool,
    /// The kernel refused a backing file once: passthrough is off for good
    /// (an inode must not be open in both modes at once).
    passthrough_refused: std::sync::atomic::AtomicBool,
    /// Backing files handed to the kernel, by inode, with the number of
    /// open files using them: every open of an inode must name the same
    /// one, and it is closed with the last.
    backings: Mutex<HashMap<Ino, (Arc<BackingId>, u64)>>,
    /// Read-ahead of a directory's files once one of them is read.
    prefetch: Prefetch,
}

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
/// read the object (`fadvise(WILLNEED)`). Bounded: the notes hold at most
/// [`PREFETCH_NOTES`] files (all dropped past that), the queue
/// [`PREFETCH_QUEUED`] files (more are dropped), one descriptor is open
/// and one [`STORE_CHUNK`] buffer held at a time; the thread sleeps when the
/// mount is idle.
struct Prefetch {
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
}

/// A file to read ahead: its FUSE inode, object and size.
#[derive(Clone)]
struct Ahead {
    ino: INodeNo,
    id: ObjectId,
    size: u64,
}

/// Files `from..to` of a batch, queued for the helper thread.
type Queued = (Arc<PrefetchBatch>, usize, usize);

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

impl Prefetch {
    fn new(objects: Option<File>, store: bool) -> Self {
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
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Note the external files of a listed directory (tree inode, and
    /// what to read ahead).
    fn listed(&self, dir: Ino, files: Vec<(Ino, Ahead)>) {
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
    fn listing_ended(&self, dir: Ino) {
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
    fn reading(&self, ino: Ino) {
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
            let objects = objects.clone();
            let notifier = self.store.then(|| self.notifier.clone());
            let queued = self.queued.clone();
            let spawned = std::thread::Builder::new()
                .name("prefetch".into())
                .spawn(move || {
                    let mut buf = Vec::new();
                    for (batch, from, to) in rx {
                        for j in from..to {
                            if j >= batch.reader_at.load(Ordering::Relaxed) {
                                read_ahead(
                                    &objects,
                                    notifier.as_deref(),
                                    &batch.files[j],
                                    &mut buf,
                                );
                            }
                        }
                        queued.fetch_sub(to - from, Ordering::Relaxed);
                    }
                });
            if spawned.is_err() {
                self.queued.fetch_sub(n, Ordering::Relaxed);
                return;
            }
            *q = Some(tx);
        }
        if let Some(tx) = q.as_ref()
            && tx.send((batch, from, from + n)).is_err()
        {
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// Read one file ahead: push its content into the kernel's page cache
/// through `notifier` when there is one, else fadvise. Best effort: any
/// failure leaves the file to be read on demand.
fn read_ahead(
    objects: &File,
    notifier: Option<&std::sync::OnceLock<fuser::Notifier>>,
    a: &Ahead,
    buf: &mut Vec<u8>,
) {
    let Ok(fd) = rustix::fs::openat(
        objects,
        a.id.object_path(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    let f = File::from(fd);
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_system_time(t: Timespec) -> SystemTime {
    let nsec = t.nsec.min(999_999_999);
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, nsec)
    } else if nsec == 0 {
        UNIX_EPOCH - Duration::new(t.sec.unsigned_abs(), 0)
    } else {
        // sec + nsec/1e9 with sec < 0: (|sec| - 1) s and (1e9 - nsec) ns before the epoch.
        UNIX_EPOCH - Duration::new(t.sec.unsigned_abs() - 1, 1_000_000_000 - nsec)
    }
}

/// The kernel's 32-bit `new_encode_dev` of a glibc `dev_t`.
fn encode_dev(rdev: u64) -> u32 {
    let major = rustix::fs::major(rdev as _);
    let minor = rustix::fs::minor(rdev as _);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn file_type(kind: &Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::Regular(_) => FileType::RegularFile,
        Kind::Symlink(_) => FileType::Symlink,
        Kind::CharDevice { .. } => FileType::CharDevice,
        Kind::BlockDevice { .. } => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

/// Answer `getxattr`/`listxattr`: the size for a size-0 query, `ERANGE`
/// when the buffer is too small, else the bytes.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        match u32::try_from(data.len()) {
            Ok(n) => reply.size(n),
            Err(_) => reply.error(Errno::E2BIG),
        }
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(data)
    }
}

impl TreeFs {
    /// A filesystem over `tree`, reading objects from `repo`. A tree that
    /// cannot tell link counts ([`Tree::nlink`]) is walked once to count
    /// them.
    pub fn new(tree: Arc<dyn Tree>, repo: Repository, opts: &FsOptions) -> Result<TreeFs> {
        // Trees that know their link counts are not walked at mount time.
        let nlinks = if tree.nlink(tree.root())?.is_some() {
            HashMap::new()
        } else {
            crate::tree::link_counts(tree.as_ref())?
        };
        // With fs-verity the kernel checks every object on open.
        let verify = opts.verify && !repo.verity();
        // Read-ahead opens objects from its own thread, relative to this.
        let objects_dir = repo.objects_dir().try_clone().ok();
        Ok(TreeFs {
            root: tree.root(),
            tree,
            nlinks,
            nodes: NodeCache::new(opts.cache_bytes),
            big: Mutex::new(std::collections::VecDeque::new()),
            big_dirs: Mutex::new(std::collections::HashSet::new()),
            objects: ObjectCache::new(opts.open_objects),
            verify,
            repo,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            no_open: opts.no_open && !opts.passthrough,
            passthrough: opts.passthrough,
            passthrough_refused: std::sync::atomic::AtomicBool::new(false),
            // Contents unverified, or read by the kernel from the object
            // itself (passthrough), are not pushed into the page cache.
            prefetch: Prefetch::new(objects_dir, !verify && !opts.passthrough),
            backings: Mutex::new(HashMap::new()),
        })
    }

    fn to_tree(&self, ino: INodeNo) -> Result<Ino, Errno> {
        match ino.0 {
            0 => Err(Errno::ENOENT),
            1 => Ok(self.root),
            n => {
                let t = n - 2;
                if t == self.root {
                    Err(Errno::ENOENT)
                } else {
                    Ok(t)
                }
            }
        }
    }

    fn to_fuse(&self, ino: Ino) -> INodeNo {
        if ino == self.root {
            INodeNo(1)
        } else {
            INodeNo(ino.wrapping_add(2))
        }
    }

    /// The inode, or `EIO` (logged) when the tree cannot produce it.
    fn inode(&self, ino: Ino) -> Result<Arc<Inode>, Errno> {
        let live = self.tree.live(ino);
        if !live && let Some(i) = self.nodes.inode(ino) {
            return Ok(i);
        }
        let i = self.tree.inode(ino).map_err(|e| {
            eprintln!("composefs: cannot load inode {ino}: {e:#}");
            Errno::EIO
        })?;
        if !live {
            self.nodes.put_inode(ino, i.clone());
        }
        Ok(i)
    }

    fn dir_entries(&self, ino: Ino) -> Result<Arc<[DirEntry]>, Errno> {
        let live = self.tree.live(ino);
        if !live {
            if let Some(d) = self.nodes.dir(ino) {
                return Ok(d);
            }
            if let Some(d) = self.big_listing(ino) {
                return Ok(d);
            }
        }
        let inode = self.inode(ino)?;
        if !inode.kind.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let d = self.tree.readdir(ino).map_err(|e| {
            eprintln!("composefs: cannot list directory inode {ino}: {e:#}");
            Errno::EIO
        })?;
        if !live && !self.nodes.put_dir(ino, d.clone()) {
            lock(&self.big_dirs).insert(ino);
            let mut big = lock(&self.big);
            big.retain(|(i, _)| *i != ino);
            big.push_front((ino, d.clone()));
            big.truncate(BIG_LISTINGS);
        }
        Ok(d)
    }

    /// A listing kept in [`Self::big`], made the most recent.
    fn big_listing(&self, ino: Ino) -> Option<Arc<[DirEntry]>> {
        let mut big = lock(&self.big);
        let pos = big.iter().position(|(i, _)| *i == ino)?;
        let entry = big.remove(pos)?;
        let d = entry.1.clone();
        big.push_front(entry);
        Some(d)
    }

    /// A listing was read to its end: let go of it if it is a big one.
    fn listed(&self, ino: Ino) {
        lock(&self.big).retain(|(i, _)| *i != ino);
    }

    /// How long the kernel may keep what it learns about `ino`.
    fn ttl(&self, ino: Ino) -> &'static Duration {
        if self.tree.live(ino) { &LIVE_TTL } else { &TTL }
    }

    /// How long the kernel may keep an entry of directory `dir` (FUSE
    /// numbers): short when either is live.
    fn ttl_in(&self, dir: INodeNo, child: INodeNo) -> &'static Duration {
        let live = |i| self.to_tree(i).is_ok_and(|t| self.tree.live(t));
        if live(dir) || live(child) {
            &LIVE_TTL
        } else {
            &TTL
        }
    }

    fn attr(&self, ino: Ino, inode: &Inode) -> FileAttr {
        let size = match &inode.kind {
            Kind::Directory => 4096,
            _ => inode.size(),
        };
        let rdev = match inode.kind {
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => encode_dev(rdev),
            _ => 0,
        };
        let t = to_system_time(inode.stat.mtime);
        let nlink = match self.nlinks.get(&ino) {
            Some(n) => *n,
            None => self.tree.nlink(ino).ok().flatten().unwrap_or(1),
        };
        FileAttr {
            ino: self.to_fuse(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(&inode.kind),
            perm: (inode.stat.perms & crate::tree::mode::PERMS) as u16,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            uid: inode.stat.uid,
            gid: inode.stat.gid,
            rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The child's attributes and how long they (and the name) may be
    /// cached. In a live directory, the tree resolves the name itself (a
    /// ref may have just appeared); elsewhere, by binary search in the
    /// cached listing.
    fn lookup_child(&self, parent: INodeNo, name: &OsStr) -> Result<(FileAttr, Duration), Errno> {
        let dir = self.to_tree(parent)?;
        let child = if self.tree.live(dir) {
            if !self.inode(dir)?.kind.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            self.tree.lookup(dir, name.as_bytes()).map_err(|e| {
                eprintln!("composefs: cannot look up {name:?} in directory inode {dir}: {e:#}");
                Errno::EIO
            })?
        } else if lock(&self.big_dirs).contains(&dir) && self.big_listing(dir).is_none() {
            // Too large to keep: the tree finds the name without a
            // listing made for it (or, by default, with one let go at once).
            self.tree.lookup(dir, name.as_bytes()).map_err(|e| {
                eprintln!("composefs: cannot look up {name:?} in directory inode {dir}: {e:#}");
                Errno::EIO
            })?
        } else {
            let entries = self.dir_entries(dir)?;
            entries
                .binary_search_by(|e| e.name.as_slice().cmp(name.as_bytes()))
                .ok()
                .map(|i| entries[i].ino)
        };
        let child = child.ok_or(Errno::ENOENT)?;
        let inode = self.inode(child)?;
        let ttl = if self.tree.live(dir) || self.tree.live(child) {
            LIVE_TTL
        } else {
            TTL
        };
        Ok((self.attr(child, &inode), ttl))
    }

    /// A directory's listing: the one its handle holds, or by inode when
    /// it was opened without a request (`fh` 0).
    fn dir_handle(&self, ino: INodeNo, fh: FileHandle) -> Result<Arc<[DirEntry]>, Errno> {
        if fh.0 == 0 {
            return self.to_tree(ino).and_then(|t| self.dir_entries(t));
        }
        match self.handle(fh)? {
            Handle::Dir(e) => Ok(e),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn new_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> Result<Handle, Errno> {
        lock(&self.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// Note a listed directory's external files for [`Prefetch`] (not in
    /// a live tree, whose objects may go).
    fn note_listing(&self, dir: INodeNo, entries: &[DirEntry]) {
        let Ok(t) = self.to_tree(dir) else { return };
        if self.tree.live(t) {
            return;
        }
        let files: Vec<(Ino, Ahead)> = entries
            .iter()
            // Through the daemon's cache: the listing's reply loads the
            // same inodes right after.
            .filter_map(|e| match &self.inode(e.ino).ok()?.kind {
                Kind::Regular(FileData::External {
                    size,
                    digest: Some(id),
                    ..
                }) => Some((
                    e.ino,
                    Ahead {
                        ino: self.to_fuse(e.ino),
                        id: *id,
                        size: *size,
                    },
                )),
                _ => None,
            })
            .collect();
        self.prefetch.listed(t, files);
    }

    /// Where the session's notifier goes once it runs: read-ahead pushes
    /// file contents into the kernel's page cache through it.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.prefetch.notifier.clone()
    }

    /// An object's open file, from the cache or opened (and, with
    /// `--verify`, digested: a mismatch is an error naming the object).
    fn open_object(&self, id: &ObjectId) -> Result<Arc<File>> {
        if let Some(f) = self.objects.get(id) {
            return Ok(f);
        }
        let f = self.repo.open_object(id)?;
        if self.verify {
            let (got, _) = crate::fsverity::digest_reader(id.algorithm(), &f)
                .with_context(|| format!("cannot read object {id}"))?;
            if got != *id {
                anyhow::bail!("object {id} is corrupt: its content digests to {got}");
            }
        }
        let f = Arc::new(f);
        self.objects.insert(*id, f.clone());
        Ok(f)
    }

    fn open_file(&self, ino: Ino) -> Result<Handle, Errno> {
        let inode = self.inode(ino)?;
        match &inode.kind {
            Kind::Regular(FileData::Inline(_)) => Ok(Handle::Inline(inode.clone())),
            Kind::Regular(FileData::External { size, digest, .. }) => {
                self.prefetch.reading(ino);
                let Some(id) = digest else {
                    eprintln!("composefs: inode {ino} names no object for its content");
                    return Err(Errno::EIO);
                };
                match self.open_object(id) {
                    Ok(file) => Ok(Handle::Object { file, size: *size }),
                    Err(e) => {
                        eprintln!("composefs: cannot open object {id} (inode {ino}): {e:#}");
                        Err(Errno::EIO)
                    }
                }
            }
            Kind::Directory => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn read_handle(&self, h: &Handle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        match h {
            Handle::Inline(inode) => {
                let Kind::Regular(FileData::Inline(data)) = &inode.kind else {
                    return Err(Errno::EIO);
                };
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                Ok(data[start..end].to_vec())
            }
            Handle::Object { file, size: total } => {
                let want = (*total).saturating_sub(offset).min(u64::from(size)) as usize;
                let mut buf = vec![0u8; want];
                let mut done = 0;
                while done < want {
                    match file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => {
                            eprintln!(
                                "composefs: object is shorter than its recorded size {total} \
                                 (read at {})",
                                offset + done as u64
                            );
                            return Err(Errno::EIO);
                        }
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("composefs: cannot read object: {e}");
                            return Err(Errno::EIO);
                        }
                    }
                }
                Ok(buf)
            }
            Handle::Dir(_) => Err(Errno::EISDIR),
            Handle::Passthrough(_) => Err(Errno::EIO),
        }
    }

    /// The backing id for an inode's object: the one its open files use,
    /// else a new one. `None` when the kernel refuses (then passthrough is
    /// off for good, and files are read through the daemon).
    fn backing(&self, ino: Ino, file: &File, reply: &ReplyOpen) -> Option<Arc<BackingId>> {
        let mut b = lock(&self.backings);
        if let Some((id, n)) = b.get_mut(&ino) {
            *n += 1;
            return Some(id.clone());
        }
        match reply.open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                b.insert(ino, (id.clone(), 1));
                Some(id)
            }
            Err(e) => {
                self.passthrough_refused.store(true, Ordering::Relaxed);
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "composefs: FUSE passthrough refused ({e}); reading through the daemon"
                    )
                });
                None
            }
        }
    }

    fn statfs_files(&self) -> u64 {
        self.nlinks.len() as u64
    }
}

impl Filesystem for TreeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            // Unsupported by this kernel: do without.
            let _ = config.add_capabilities(flag);
        }
        // Answering ENOSYS to opens is only understood when the kernel
        // offered to do without them.
        if self.no_open {
            self.no_open = config
                .add_capabilities(
                    InitFlags::FUSE_NO_OPEN_SUPPORT | InitFlags::FUSE_NO_OPENDIR_SUPPORT,
                )
                .is_ok();
        }
        if self.passthrough {
            // The objects sit on an ordinary filesystem: one level below.
            self.passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !self.passthrough {
                eprintln!(
                    "composefs: this kernel offers no FUSE passthrough; reading through the daemon"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_child(parent, name) {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            // Absent from an immutable directory: absent for good. Node id
            // 0 makes the kernel cache the miss (a negative dentry), so
            // searches along paths (ld.so, $PATH) ask once.
            Err(Errno::ENOENT) if self.to_tree(parent).is_ok_and(|t| !self.tree.live(t)) => {
                let mut attr = self.attr(self.root, &Inode::default_dir());
                attr.ino = INodeNo(0);
                reply.entry(&TTL, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self
            .to_tree(ino)
            .and_then(|t| Ok((self.attr(t, &*self.inode(t)?), self.ttl(t))));
        match r {
            Ok((attr, ttl)) => reply.attr(ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.to_tree(ino).and_then(|t| self.inode(t));
        match r {
            Ok(inode) => match &inode.kind {
                Kind::Symlink(target) => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if self.no_open {
            // The kernel stops sending opens (and releases) for good and
            // keeps the page cache; reads then come with no handle and are
            // served by inode. One request saved on every open and close.
            return reply.error(Errno::ENOSYS);
        }
        let t = match self.to_tree(ino) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        match self.open_file(t) {
            Ok(Handle::Object { file, size })
                if self.passthrough && !self.passthrough_refused.load(Ordering::Relaxed) =>
            {
                match self.backing(t, &file, &reply) {
                    Some(b) => {
                        let fh = self.new_handle(Handle::Passthrough(t));
                        reply.opened_passthrough(fh, FopenFlags::empty(), &b)
                    }
                    None => reply.opened(
                        self.new_handle(Handle::Object { file, size }),
                        FopenFlags::FOPEN_KEEP_CACHE,
                    ),
                }
            }
            Ok(h) => reply.opened(self.new_handle(h), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = if fh.0 == 0 {
            self.to_tree(_ino).and_then(|t| self.open_file(t))
        } else {
            self.handle(fh)
        };
        match h.and_then(|h| self.read_handle(&h, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(Handle::Passthrough(t)) = lock(&self.handles).remove(&fh.0) {
            let mut b = lock(&self.backings);
            if let Some((_, n)) = b.get_mut(&t) {
                *n -= 1;
                if *n == 0 {
                    b.remove(&t);
                }
            }
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush in a read-only tree; ENOSYS makes the kernel
        // stop sending flushes (one request saved on every close).
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            // As for files: the kernel stops sending opendir and
            // releasedir, and readdir comes by inode (two requests saved
            // on every directory walked).
            return reply.error(Errno::ENOSYS);
        }
        let r = self
            .to_tree(ino)
            .and_then(|t| Ok((self.dir_entries(t)?, self.tree.live(t))));
        match r {
            // A live listing is read afresh at every opendir.
            Ok((entries, true)) => {
                reply.opened(self.new_handle(Handle::Dir(entries)), FopenFlags::empty())
            }
            Ok((entries, false)) => reply.opened(
                self.new_handle(Handle::Dir(entries)),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.dir_handle(ino, fh) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        if offset == 0 {
            self.note_listing(ino, &entries);
        }
        // Offsets: 1 after ".", 2 after "..", 3 + i after entries[i].
        let mut idx = offset;
        while let Some((name, fino, kind)) = match idx {
            0 => Some((OsStr::new("."), ino, FileType::Directory)),
            1 => Some((OsStr::new(".."), ino, FileType::Directory)),
            n => match entries.get((n - 2) as usize) {
                None => {
                    // Past the end: the kernel has all of it.
                    if idx == offset
                        && let Ok(t) = self.to_tree(ino)
                    {
                        self.listed(t);
                    }
                    None
                }
                Some(e) => match self.inode(e.ino) {
                    Ok(inode) => Some((
                        OsStr::from_bytes(&e.name),
                        self.to_fuse(e.ino),
                        file_type(&inode.kind),
                    )),
                    Err(err) => return reply.error(err),
                },
            },
        } {
            if reply.add(fino, idx + 1, kind, name) {
                break;
            }
            idx += 1;
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.dir_handle(ino, fh) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let dir_attr = match self
            .to_tree(ino)
            .and_then(|t| Ok(self.attr(t, &*self.inode(t)?)))
        {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        if offset == 0 {
            self.note_listing(ino, &entries);
        }
        let mut idx = offset;
        loop {
            let (name, attr) = match idx {
                0 => (OsStr::new("."), dir_attr),
                1 => (OsStr::new(".."), dir_attr),
                n => match entries.get((n - 2) as usize) {
                    None => {
                        // Past the end: the kernel has all of it.
                        if idx == offset
                            && let Ok(t) = self.to_tree(ino)
                        {
                            self.listed(t);
                            self.prefetch.listing_ended(t);
                        }
                        break;
                    }
                    Some(e) => match self.inode(e.ino) {
                        Ok(inode) => (OsStr::from_bytes(&e.name), self.attr(e.ino, &inode)),
                        Err(err) => return reply.error(err),
                    },
                },
            };
            let ttl = if idx < 2 {
                &TTL
            } else {
                self.ttl_in(ino, attr.ino)
            };
            if reply.add(attr.ino, idx + 1, name, ttl, &attr, Generation(0)) {
                break;
            }
            idx += 1;
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, self.statfs_files(), 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.to_tree(ino).and_then(|t| self.inode(t)) {
            Ok(inode) => match inode.xattr(name.as_bytes()) {
                Some(v) => reply_sized(reply, size, v),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.to_tree(ino).and_then(|t| self.inode(t)) {
            Ok(inode) => {
                let mut list = Vec::new();
                for (name, _) in &inode.xattrs {
                    list.extend_from_slice(name);
                    list.push(0);
                }
                reply_sized(reply, size, &list)
            }
            Err(e) => reply.error(e),
        }
    }

    // Everything below would change the tree: refused.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch() {
        let t = to_system_time(Timespec {
            sec: -5,
            nsec: 300_000_000,
        });
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::new(4, 700_000_000)
        );
        let t = to_system_time(Timespec { sec: -5, nsec: 0 });
        assert_eq!(UNIX_EPOCH.duration_since(t).unwrap(), Duration::new(5, 0));
        let t = to_system_time(Timespec { sec: 7, nsec: 9 });
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap(), Duration::new(7, 9));
    }

    #[test]
    fn device_numbers() {
        let d = rustix::fs::makedev(8, 1);
        assert_eq!(encode_dev(d), (8 << 8) | 1);
        let d = rustix::fs::makedev(259, 300);
        assert_eq!(
            encode_dev(d),
            (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12)
        );
    }
}
