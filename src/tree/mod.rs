//! The filesystem model every source produces and every view consumes.
//!
//! A tree is a set of inodes, numbered by [`Ino`], navigated from a root:
//! directories list `(name, ino)` entries sorted by name bytes; a hardlinked
//! file is one inode under several names. Every source (a directory on disk,
//! a dumpfile, an EROFS image, a stored ostree commit, an OCI image's merged
//! layers) implements [`Tree`], lazily where it can; every consumer (the
//! EROFS writer, dumpfiles, `ls` and `cat`, the FUSE view, `diff`) reads
//! only through it and knows nothing about where the tree came from. [`MemTree`] is the
//! in-memory implementation, built with [`MemTreeBuilder`].

pub mod container;
pub mod dirsource;
mod mem;

use std::sync::Arc;

use anyhow::{Result, bail};

use crate::fsverity::ObjectId;

pub use mem::{MemTree, MemTreeBuilder};

/// Inode number within one tree. Stable for the tree's lifetime; not
/// necessarily dense or related to any on-disk number.
pub type Ino = u64;

/// `S_IFMT` and friends, as in `<sys/stat.h>`.
pub mod mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFIFO: u32 = 0o010000;
    /// Permission bits including setuid, setgid and sticky.
    pub const PERMS: u32 = 0o7777;

    /// Is `fmt` (a mode's `S_IFMT` bits) one of the seven file types?
    pub fn is_known_type(fmt: u32) -> bool {
        matches!(
            fmt,
            S_IFREG | S_IFDIR | S_IFLNK | S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK
        )
    }
}

/// A modification time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    pub sec: i64,
    /// 0..1_000_000_000
    pub nsec: u32,
}

/// Ownership, permissions and time: what every inode has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stat {
    /// Permission bits only (`mode::PERMS`); the type comes from [`Kind`].
    pub perms: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timespec,
}

/// Where a regular file's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileData {
    /// The content itself (small files; also any file from a source that
    /// carries content inline).
    Inline(Vec<u8>),
    /// Content kept elsewhere: `size` bytes, found at `redirect` (a path
    /// relative to an objects directory, e.g. `ab/cdef…`) and verified by
    /// `digest`. Either may be absent in a dumpfile; a repository-backed
    /// tree has both (`redirect == digest.object_path()`).
    External {
        size: u64,
        redirect: Option<Vec<u8>>,
        digest: Option<ObjectId>,
    },
}

impl FileData {
    /// An object in a repository.
    pub fn object(id: ObjectId, size: u64) -> Self {
        FileData::External {
            size,
            redirect: Some(id.object_path().into_bytes()),
            digest: Some(id),
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            FileData::Inline(v) => v.len() as u64,
            FileData::External { size, .. } => *size,
        }
    }
}

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Directory,
    Regular(FileData),
    Symlink(Vec<u8>),
    CharDevice { rdev: u64 },
    BlockDevice { rdev: u64 },
    Fifo,
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits.
    pub fn format(&self) -> u32 {
        match self {
            Kind::Directory => mode::S_IFDIR,
            Kind::Regular(_) => mode::S_IFREG,
            Kind::Symlink(_) => mode::S_IFLNK,
            Kind::CharDevice { .. } => mode::S_IFCHR,
            Kind::BlockDevice { .. } => mode::S_IFBLK,
            Kind::Fifo => mode::S_IFIFO,
            Kind::Socket => mode::S_IFSOCK,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Kind::Directory)
    }
}

/// One extended attribute; names are bytes like `user.foo`.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// An inode: metadata, kind, extended attributes (sorted by name, unique).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Inode {
    pub stat: Stat,
    pub kind: Kind,
    pub xattrs: Vec<Xattr>,
}

impl Inode {
    /// An empty directory owned by root, mode 0555.
    pub fn default_dir() -> Inode {
        Inode {
            stat: Stat {
                perms: 0o555,
                ..Stat::default()
            },
            kind: Kind::Directory,
            xattrs: vec![],
        }
    }

    /// Full `st_mode`: type bits and permissions.
    pub fn st_mode(&self) -> u32 {
        self.kind.format() | (self.stat.perms & mode::PERMS)
    }

    /// Size as `stat` reports it for files and symlinks; 0 otherwise
    /// (a directory's size depends on the format that stores it).
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::Regular(d) => d.size(),
            Kind::Symlink(t) => t.len() as u64,
            _ => 0,
        }
    }

    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| self.xattrs[i].1.as_slice())
    }
}

/// What [`Tree::subtree_id`] returns: a content identity of a whole
/// subtree. The variants are separate namespaces; ids of different
/// variants are never equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubtreeId {
    /// A directory of an ostree commit: its dirtree checksum (names and
    /// checksums of everything below) and dirmeta checksum (its own mode,
    /// owner, xattrs). A tree whose root has such an id is an ostree
    /// commit: one inode per name (no hardlinks), every mtime 0.
    OstreeDir { tree: [u8; 32], meta: [u8; 32] },
    /// A file or symlink of an ostree commit: its file checksum (content
    /// or target, mode, owner, xattrs).
    OstreeFile([u8; 32]),
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
}

/// A directory's entries with their subtree ids ([`Tree::readdir_ids`]),
/// sorted by name; the names share one buffer (no allocation per entry).
#[derive(Clone, Debug, Default)]
pub struct Listing {
    names: Vec<u8>,
    entries: Vec<ListingEntry>,
}

#[derive(Clone, Debug)]
struct ListingEntry {
    /// Where the name ends in `names` (it starts where the previous ends).
    end: usize,
    ino: Ino,
    id: Option<SubtreeId>,
}

impl Listing {
    /// Empty it for a new listing of `entries` entries and `name_bytes`
    /// bytes of names, keeping its memory (a walk reuses one listing).
    pub fn reset(&mut self, entries: usize, name_bytes: usize) {
        self.names.clear();
        self.names.reserve(name_bytes);
        self.entries.clear();
        self.entries.reserve(entries);
    }

    /// Append an entry (the caller keeps names sorted).
    pub fn push(&mut self, name: &[u8], ino: Ino, id: Option<SubtreeId>) {
        self.names.extend_from_slice(name);
        self.entries.push(ListingEntry {
            end: self.names.len(),
            ino,
            id,
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn name(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.entries[i - 1].end,
        };
        &self.names[start..self.entries[i].end]
    }

    pub fn ino(&self, i: usize) -> Ino {
        self.entries[i].ino
    }

    pub fn id(&self, i: usize) -> Option<&SubtreeId> {
        self.entries[i].id.as_ref()
    }
}

/// What a dumpfile says of a non-directory's links that its names do not,
/// and C `mkcomposefs` writes: the name whose line is the inode's own (the
/// others are `@` lines; the image places the inode there, not at its
/// first name in order) and the declared NLINK (written as is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkHint {
    /// The directory and name the inode is placed at.
    pub primary: Option<(Ino, Vec<u8>)>,
    /// The link count to write instead of the number of names.
    pub nlink: Option<u32>,
}

/// A navigable filesystem tree. Implementations may load lazily; all
/// methods may fail (a damaged source), and must fail rather than panic.
pub trait Tree: Send + Sync {
    fn root(&self) -> Ino;

    /// The inode `ino`. Errors for an unknown number.
    fn inode(&self, ino: Ino) -> Result<Arc<Inode>>;

    /// The entries of directory `dir`, sorted by name bytes, without `.`
    /// and `..`. Errors if `dir` is not a directory.
    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>>;

    /// The link count of `ino` when the tree knows it without a walk
    /// (stored in an image, or cheap to derive); `None` means "count the
    /// links by walking the tree" (see [`link_counts`]).
    fn nlink(&self, _ino: Ino) -> Result<Option<u64>> {
        Ok(None)
    }

    /// What the source says of `ino`'s links beyond its names (see
    /// [`LinkHint`]); `None` for most trees.
    fn link_hint(&self, _ino: Ino) -> Option<LinkHint> {
        None
    }

    /// Whether `ino`'s attributes or (for a directory) entries may change
    /// while the tree is in use, as in the live view of a whole
    /// repository. Views must not cache such inodes for long.
    fn live(&self, _ino: Ino) -> bool {
        false
    }

    /// Let go of memory that can be loaded again on demand.
    fn shrink(&self) {}

    /// An identity of the whole subtree at `ino` (the inode itself and,
    /// for a directory, everything below it, mtimes excepted) when the
    /// source names its content that way: two inodes, of this tree or
    /// another, with equal ids are equal all the way down, so a consumer
    /// comparing trees (`diff`) may skip them unread. Different ids say
    /// nothing. `None` (the default): no such identity, compare by walking.
    fn subtree_id(&self, _ino: Ino) -> Option<SubtreeId> {
        None
    }

    /// The entries of `dir` as [`Self::readdir`] lists them, each with its
    /// [`Self::subtree_id`], into `out` (emptied first): what comparing two
    /// directories needs, in one call. Trees that name subtrees read both
    /// from one parse (an ostree dirtree holds the names and checksums);
    /// the default asks `subtree_id` of each entry.
    fn readdir_ids(&self, dir: Ino, out: &mut Listing) -> Result<()> {
        let entries = self.readdir(dir)?;
        let bytes = entries.iter().map(|e| e.name.len()).sum();
        out.reset(entries.len(), bytes);
        for e in entries.iter() {
            out.push(&e.name, e.ino, self.subtree_id(e.ino));
        }
        Ok(())
    }

    /// The repository object holding regular file `ino`'s content, made
    /// present first when the tree's contents live elsewhere: a remote
    /// tree fetches the object, verifies it and stores it in the
    /// repository before answering, and a second caller asking for the
    /// same file meanwhile waits for the first. `Ok(None)`: the content is
    /// inline, or the tree does not say where it is. The default: the
    /// object the file's [`FileData`] names (stored already).
    fn content_object(&self, ino: Ino) -> Result<Option<ObjectId>> {
        Ok(match &self.inode(ino)?.kind {
            Kind::Regular(FileData::External { digest, .. }) => *digest,
            Kind::Regular(FileData::Inline(_)) => None,
            _ => bail!("inode {ino} is not a regular file"),
        })
    }

    /// Whether [`Self::inode`] of `ino`, a non-directory, costs a request
    /// to a remote server (a remote tree's file whose header is not at
    /// hand) and would not locate its content anyway. A consumer that can
    /// decide from [`Self::subtree_id`]s alone should then not ask:
    /// `composefs diff` reports such a file as changed by its checksum,
    /// without fetching it. Never true of a directory.
    fn costly_inode(&self, _ino: Ino) -> bool {
        false
    }

    /// Whether [`Self::content_object`] may fetch over the network (a
    /// remote tree): a view reading ahead then fetches the next files of a
    /// walk in parallel, not one at a time.
    fn fetches_contents(&self) -> bool {
        false
    }

    /// The inode named `name` in directory `dir`, if any.
    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
        let entries = self.readdir(dir)?;
        Ok(entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| entries[i].ino))
    }

    /// Resolve a `/`-separated path from the root (no symlinks followed;
    /// `.` and `..` as usual, `..` at the root stays there). A trailing `/`
    /// requires a directory.
    fn resolve_path(&self, path: &[u8]) -> Result<Option<Ino>> {
        let mut stack = vec![self.root()];
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let ino = *stack.last().expect("never empty");
            match comp {
                b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            if !self.inode(ino)?.kind.is_dir() {
                return Ok(None);
            }
            match self.lookup(ino, comp)? {
                Some(child) => stack.push(child),
                None => return Ok(None),
            }
        }
        let ino = *stack.last().expect("never empty");
        if path.ends_with(b"/") && !self.inode(ino)?.kind.is_dir() {
            return Ok(None);
        }
        Ok(Some(ino))
    }
}

/// Names a directory entry may not have: empty, `.`, `..`, containing `/`
/// or NUL, or longer than 255 bytes (the Linux `NAME_MAX`).
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        bail!("empty file name");
    }
    if name == b"." || name == b".." {
        bail!("file name {:?} is reserved", String::from_utf8_lossy(name));
    }
    if name.contains(&b'/') || name.contains(&0) {
        bail!(
            "file name {:?} contains '/' or NUL",
            String::from_utf8_lossy(name)
        );
    }
    if name.len() > 255 {
        bail!("file name of {} bytes is longer than 255", name.len());
    }
    Ok(())
}

/// The link count of every inode reachable from the root: a directory has
/// 2 + its subdirectories, anything else one per name. Fails on a
/// directory reachable twice (a loop or a directory hardlink).
pub fn link_counts(tree: &dyn Tree) -> Result<std::collections::HashMap<Ino, u64>> {
    let mut counts = std::collections::HashMap::new();
    let root = tree.root();
    counts.insert(root, 2u64);
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in tree.readdir(dir)?.iter() {
            if tree.inode(e.ino)?.kind.is_dir() {
                if counts.insert(e.ino, 2).is_some() {
                    bail!(
                        "directory inode {} is reachable twice (a loop or a directory hardlink)",
                        e.ino
                    );
                }
                *counts.get_mut(&dir).expect("parent counted") += 1;
                stack.push(e.ino);
            } else {
                *counts.entry(e.ino).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

/// Longest path (from the root, without the leading `/`) the kernel can name
/// in one system call: `PATH_MAX` less the NUL and the leading `/`.
pub const MAX_PATH: usize = 4094;

/// Regular files up to this size keep their content inline (in images, tar
/// splitstreams and our own commit streams), as mkcomposefs does; larger
/// content becomes an object. (composefs-rs's ostree streams use twice the
/// digest length instead: `ostree::shared::inline_max`.)
pub const INLINE_MAX: u64 = 64;

/// Longest symlink target a tree holds (the kernel's `PATH_MAX` less the
/// NUL); every source refuses a longer one.
pub const MAX_SYMLINK_TARGET: usize = 4095;
/// Longest xattr name (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value (`XATTR_SIZE_MAX`, also the C library's `UINT16_MAX`).
pub const MAX_XATTR_VALUE: usize = 65535;

/// Refuse a tree with a path longer than [`MAX_PATH`]: the kernel could not
/// open such a file by its path from the mount point.
pub fn check_path_lengths(tree: &dyn Tree) -> Result<()> {
    let mut stack = vec![(tree.root(), 0usize)];
    let mut seen = std::collections::HashSet::new();
    while let Some((dir, len)) = stack.pop() {
        if !seen.insert(dir) {
            bail!("directory inode {dir} is reachable twice (a loop or a directory hardlink)");
        }
        for e in tree.readdir(dir)?.iter() {
            let l = len + usize::from(len > 0) + e.name.len();
            if l > MAX_PATH {
                bail!(
                    "the path ending in {:?} is {l} bytes long: more than the kernel's PATH_MAX allows",
                    String::from_utf8_lossy(&e.name)
                );
            }
            if tree.inode(e.ino)?.kind.is_dir() {
                stack.push((e.ino, l));
            }
        }
    }
    Ok(())
}
