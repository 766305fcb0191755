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
//!
//! By job: `inodes` maps inode numbers and serves cached inodes, listings
//! and attributes; `handles` opens files and directories and reads
//! contents (passthrough included); `requests` answers the kernel. The
//! read-ahead of contents is `fuse::prefetch`'s.

mod handles;
mod inodes;
mod requests;

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use fuser::BackingId;

use super::cache::{NodeCache, ObjectCache};
use super::prefetch::Prefetch;
use crate::repository::Repository;
use crate::tree::{DirEntry, Ino, Inode, Tree};

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
    /// Listings too large for `nodes`, most recent first (`inodes::BIG_LISTINGS`).
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
        // A remote tree's read-ahead fetches what it reads ahead.
        let fetcher = tree.fetches_contents().then(|| tree.clone());
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
            prefetch: Prefetch::new(objects_dir, !verify && !opts.passthrough, fetcher),
            backings: Mutex::new(HashMap::new()),
        })
    }

    /// Where the session's notifier goes once it runs: read-ahead pushes
    /// file contents into the kernel's page cache through it.
    pub fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.prefetch.notifier_slot()
    }
}
