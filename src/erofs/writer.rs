//! The composefs EROFS image writer, byte-identical with `mkcomposefs` 1.0.8.
//!
//! The C writer (`libcomposefs/lcfs-writer-erofs.c`, `lcfs_write_erofs_to`)
//! works in these steps, and so does this one:
//!
//! 1. **Rewrite the tree for overlayfs** (`rewrite_tree_for_erofs`): every
//!    user xattr `trusted.overlay.X` becomes `trusted.overlay.overlay.X`;
//!    a regular file with external content gets `trusted.overlay.metacopy`
//!    (the fs-verity digest, or empty) and `trusted.overlay.redirect`
//!    (`/` + its backing path); a whiteout (character device 0:0) becomes an
//!    empty regular file with `trusted.overlay.overlay.whiteout` and
//!    `user.overlay.whiteout`, and its directory gets
//!    `trusted.overlay.overlay.whiteouts` and `user.overlay.whiteouts` (plus,
//!    from format version 1 on, `trusted.overlay.overlay.opaque=x` and
//!    `user.overlay.opaque=x`); the root gets `trusted.overlay.opaque=y`;
//!    the root gets the 256 whiteout stubs `00`..`ff` (character devices
//!    0:0 with the root's owner, mtime and `security.selinux`) for every
//!    such name it does not have.
//! 2. **Order the inodes** (`lcfs_compute_tree`): breadth-first from the
//!    root, children sorted by name bytes (`.` and `..` included); the inode
//!    number is the position in that order; a hardlinked inode is placed at
//!    its *first* name, which for a dumpfile is the first line naming it,
//!    i.e. the first in depth-first sorted order (what this writer uses).
//!    A directory's link count is 2 + its subdirectories; the build time is
//!    the smallest mtime.
//! 3. **Share xattrs** used by more than one inode (`compute_erofs_shared_xattrs`),
//!    sorted by name, value length and value, *descending*; an inode refers
//!    to at most 128 shared xattrs.
//! 4. **Lay out the inodes** (`compute_erofs_inodes`): 32-byte slots; compact
//!    inodes when mtime equals the build time and uid, gid, nlink fit 16 bits
//!    and size 32 bits; directory tails of at most half a block inline;
//!    inline file content tails of at most half a block inline; padding so a
//!    tail never crosses a block (for symlinks the whole inode stays in one
//!    block, and a symlink whose inode would fill a block moves to a data
//!    block); external files are chunk-based with one chunk of the smallest
//!    power of two covering the file, all chunks holes.
//! 5. **Write**: header, superblock, inodes, shared xattrs, data blocks.
//!
//! The format version (0 or 1) changes only the header's
//! `composefs_version` and, when the tree has whiteouts, the `opaque=x`
//! markers; a version-0 write is upgraded to 1 when the tree has whiteouts
//! and the maximum version allows it (`lcfs_write_update_version` in
//! `lcfs-writer.c`), which `mkcomposefs` does by default.
//!
//! Everything except inline file content is planned in memory first (as in
//! C); the image itself is streamed to the output, inline content read from
//! the tree's inodes as it is written.
//!
//! Beyond C: sha512 digests are written as a 68-byte metacopy with
//! algorithm 2, inline files of any size are written correctly (C 1.0.8
//! supports at most 5000 bytes), and inputs the format cannot hold are
//! refused with an error where C would truncate or assert.

use crate::show::short_path;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::format::{
    self, BLOCK_SIZE, COMPOSEFS_FLAGS_HAS_ACL, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC,
    CompactInode, ComposefsHeader, Dirent, EROFS_MAGIC, ExtendedInode, FEATURE_COMPAT_MTIME,
    FEATURE_COMPAT_XATTR_FILTER, INODES_START, SLOT_SIZE, Superblock, XattrEntryHeader,
    XattrIbodyHeader, overlay,
};
use crate::fsverity::ObjectId;
use crate::tree::{DirEntry, FileData, Ino, Inode, Kind, Timespec, Tree, check_name, mode};

/// A composefs format version, as `mkcomposefs --min-version/--max-version`
/// take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum FormatVersion {
    /// The original format (`mkcomposefs` default minimum).
    #[default]
    V0,
    /// Whiteout directories also marked with `overlay.opaque=x` (1.0.3+).
    V1,
}

impl FormatVersion {
    /// The number written to the header's `composefs_version`.
    pub fn number(self) -> u32 {
        match self {
            FormatVersion::V0 => 0,
            FormatVersion::V1 => 1,
        }
    }

    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            0 => Some(FormatVersion::V0),
            1 => Some(FormatVersion::V1),
            _ => None,
        }
    }
}

/// Options of [`write_image_with`]: the `mkcomposefs` version range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// `--min-version` (default 0).
    pub min_version: FormatVersion,
    /// `--max-version` (default 1): a tree with whiteouts is written with
    /// version 1 if this allows it.
    pub max_version: FormatVersion,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            min_version: FormatVersion::V0,
            max_version: FormatVersion::V1,
        }
    }
}

impl WriteOptions {
    /// `mkcomposefs --min-version=N` with the default maximum (1).
    pub fn version(v: FormatVersion) -> Self {
        WriteOptions {
            min_version: v,
            max_version: FormatVersion::V1.max(v),
        }
    }
}

/// What [`write_image_with`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The header's `composefs_version` (after any whiteout upgrade).
    pub composefs_version: u32,
    /// Number of inodes (including the 256 whiteout stubs, minus those
    /// the tree already had names for).
    pub inodes: u64,
    /// Image size in bytes.
    pub size: u64,
}

/// Write `tree` as a composefs image, as `mkcomposefs --min-version=V`
/// (maximum version 1) would.
pub fn write_image(tree: &dyn Tree, version: FormatVersion, out: &mut impl Write) -> Result<()> {
    write_image_with(tree, &WriteOptions::version(version), out).map(|_| ())
}

/// [`write_image`] into memory.
pub fn image_to_vec(tree: &dyn Tree, version: FormatVersion) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    write_image(tree, version, &mut v)?;
    Ok(v)
}

/// Write `tree` as a composefs image with explicit options.
pub fn write_image_with(
    tree: &dyn Tree,
    opts: &WriteOptions,
    out: &mut impl Write,
) -> Result<ImageInfo> {
    write_image_impl(tree, opts, false, out)
}

/// [`write_image_with`] as composefs-rs writes its versions 0 and 1: the
/// same, except that the build time (the smallest mtime, which decides
/// which inodes are compact) is the smallest with the seconds read as
/// unsigned, so an mtime before 1970 counts as the latest, not the
/// earliest (C compares them signed).
pub(crate) fn write_image_composefs_rs(
    tree: &dyn Tree,
    opts: &WriteOptions,
    out: &mut impl Write,
) -> Result<ImageInfo> {
    write_image_impl(tree, opts, true, out)
}

fn write_image_impl(
    tree: &dyn Tree,
    opts: &WriteOptions,
    unsigned_mtime: bool,
    out: &mut impl Write,
) -> Result<ImageInfo> {
    let scan = Scan::run(tree)?;
    let mut version = opts.min_version.number();
    let max_version = opts.max_version.number().max(version);
    if version < 1 && max_version >= 1 && scan.has_whiteout {
        version = 1;
    }
    let plan = Plan::build(&scan, tree, version, unsigned_mtime)?;
    let mut w = Out {
        inner: BufWriter::with_capacity(1 << 16, out),
        pos: 0,
    };
    plan.write(&mut w)?;
    w.inner.flush()?;
    Ok(ImageInfo {
        composefs_version: version,
        inodes: plan.nodes.len() as u64,
        size: w.pos,
    })
}

// ---------------------------------------------------------------------------
// Pass 1: read the tree once (depth first), check it, find hardlinks.
// ---------------------------------------------------------------------------

/// A non-directory that may have more than one name.
struct LinkInfo {
    /// Number of names.
    count: u64,
    /// The first name in depth-first sorted order (or the one
    /// [`crate::tree::LinkHint::primary`] names): directory and index.
    dir: Ino,
    pos: usize,
}

/// What the first pass learns. Memory: the directories' listings (shared
/// with the tree when it keeps them, as a [`crate::tree::MemTree`] does)
/// and one [`LinkInfo`] per inode that may have several names; inodes the
/// tree says have one name ([`Tree::nlink`]) are not recorded at all.
struct Scan {
    root: Ino,
    dirs: HashMap<Ino, Arc<[DirEntry]>>,
    links: HashMap<Ino, LinkInfo>,
    has_whiteout: bool,
}

struct Frame {
    ino: Ino,
    entries: Arc<[DirEntry]>,
    pos: usize,
}

impl Scan {
    fn run(tree: &dyn Tree) -> Result<Scan> {
        let root = tree.root();
        let root_inode = tree.inode(root).context("reading the root inode")?;
        if !root_inode.kind.is_dir() {
            bail!("the root of the tree is not a directory");
        }
        let mut scan = Scan {
            root,
            dirs: HashMap::new(),
            links: HashMap::new(),
            has_whiteout: false,
        };
        let entries = read_dir(tree, root, &|| "/".to_string())?;
        scan.dirs.insert(root, entries.clone());
        let mut stack = vec![Frame {
            ino: root,
            entries,
            pos: 0,
        }];
        while let Some(top) = stack.last_mut() {
            if top.pos == top.entries.len() {
                stack.pop();
                continue;
            }
            let pos = top.pos;
            top.pos += 1;
            let dir = top.ino;
            let child = top.entries[pos].ino;
            let name = || top_name(&stack);
            let inode = tree
                .inode(child)
                .with_context(|| path_of_stack(&stack, &name()))?;
            if inode.kind.is_dir() {
                // Built only for a message: building it for every
                // directory would cost O(depth) each, O(depth²) in all.
                let path = || path_of_stack(&stack, &name());
                if child == root || scan.dirs.contains_key(&child) {
                    bail!(
                        "{}: directory inode {child} is reachable twice (a directory hardlink or a loop)",
                        path()
                    );
                }
                let entries = read_dir(tree, child, &path)?;
                scan.dirs.insert(child, entries.clone());
                stack.push(Frame {
                    ino: child,
                    entries,
                    pos: 0,
                });
                continue;
            }
            if matches!(inode.kind, Kind::CharDevice { rdev: 0 }) {
                scan.has_whiteout = true;
            }
            let single = tree
                .nlink(child)
                .with_context(|| path_of_stack(&stack, &name()))?
                == Some(1);
            if !single {
                // The inode sits at its first name, unless the tree names
                // another (a dumpfile's non-`@` line, as C places it).
                let here = &stack.last().expect("in a directory").entries[pos].name;
                let primary_here = tree
                    .link_hint(child)
                    .and_then(|h| h.primary)
                    .is_some_and(|(d, n)| d == dir && &n == here);
                scan.links
                    .entry(child)
                    .and_modify(|l| {
                        l.count += 1;
                        if primary_here {
                            (l.dir, l.pos) = (dir, pos);
                        }
                    })
                    .or_insert(LinkInfo { count: 1, dir, pos });
            }
        }
        Ok(scan)
    }
}

/// The name of the entry last taken from the directory at the top.
fn top_name(stack: &[Frame]) -> Vec<u8> {
    stack
        .last()
        .and_then(|f| f.entries.get(f.pos.wrapping_sub(1)))
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

/// The path of `name` inside the directory at the top of `stack`, for a
/// message (a deep one shortened).
fn path_of_stack(stack: &[Frame], name: &[u8]) -> String {
    let mut p = Vec::new();
    for w in stack.windows(2) {
        // The child frame was entered from entry `pos - 1` of its parent.
        let parent = &w[0];
        if let Some(e) = parent.entries.get(parent.pos.wrapping_sub(1)) {
            p.push(b'/');
            p.extend_from_slice(&e.name);
        }
    }
    p.push(b'/');
    p.extend_from_slice(name);
    crate::show::short_path(&p)
}

/// A directory's entries, checked: valid names, sorted, unique. `path`
/// names the directory in a message.
fn read_dir(tree: &dyn Tree, dir: Ino, path: &dyn Fn() -> String) -> Result<Arc<[DirEntry]>> {
    let entries = tree
        .readdir(dir)
        .with_context(|| format!("reading directory {}", path()))?;
    for e in entries.iter() {
        check_name(&e.name).with_context(|| format!("in directory {}", path()))?;
    }
    if entries.windows(2).all(|w| w[0].name < w[1].name) {
        return Ok(entries);
    }
    let mut v = entries.to_vec();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = v.windows(2).find(|w| w[0].name == w[1].name) {
        bail!(
            "{}: the name {:?} appears twice",
            path(),
            short_path(&w[0].name)
        );
    }
    Ok(v.into())
}

// ---------------------------------------------------------------------------
// Pass 2: the inodes in image order, rewritten for overlayfs, and laid out.
// ---------------------------------------------------------------------------

type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;
/// An xattr's name and value, borrowed or made.
type CowXattr<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Set (add or replace) an xattr, as `lcfs_node_set_xattr`.
fn set_xattr(xs: &mut Xattrs, key: &[u8], value: &[u8]) {
    match xs.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value.to_vec(),
        None => xs.push((key.to_vec(), value.to_vec())),
    }
}

/// The distinct xattr sets of the image's inodes, each sorted by name:
/// most inodes share a few sets (often the empty one, number 0), so a
/// node names its set by number.
struct XattrSets {
    sets: Vec<Arc<Xattrs>>,
    index: HashMap<Arc<Xattrs>, u32>,
}

impl XattrSets {
    fn new() -> Self {
        let empty: Arc<Xattrs> = Arc::new(Vec::new());
        XattrSets {
            sets: vec![empty.clone()],
            index: HashMap::from([(empty, 0)]),
        }
    }

    /// The number of `xs` (sorted here).
    fn intern(&mut self, mut xs: Xattrs) -> Result<u32> {
        if xs.is_empty() {
            return Ok(0);
        }
        xs.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(&i) = self.index.get(&xs) {
            return Ok(i);
        }
        let i = u32::try_from(self.sets.len()).context("too many distinct xattr sets")?;
        let xs = Arc::new(xs);
        self.sets.push(xs.clone());
        self.index.insert(xs, i);
        Ok(i)
    }

    /// Set number `set` with `f` applied: the number of the result.
    fn modified(&mut self, set: u32, f: impl FnOnce(&mut Xattrs)) -> Result<u32> {
        let mut xs = (*self.sets[set as usize]).clone();
        f(&mut xs);
        self.intern(xs)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    /// No data (devices, fifos, sockets, empty files).
    None,
    Dir,
    /// Inline content, read from the source inode when written.
    Inline,
    /// External content: chunk-based, all chunks holes.
    Chunked {
        bits: u8,
        count: u16,
    },
    Symlink,
}

/// What a node is beyond its source inode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The source inode as it is.
    Plain,
    /// A whiteout (character device 0:0), written as an empty regular file.
    Whiteout,
    /// One of the root's 256 whiteout stubs; `src` is the root's inode
    /// (whose owner, mtime and SELinux label it takes).
    Stub,
}

/// A directory entry of the image. `name` is an index into the
/// directory's listing, or one of [`DOT`], [`DOTDOT`], [`STUB`]` - b`.
#[derive(Clone, Copy)]
struct Child {
    name: u32,
    /// Node number; for a hardlink whose node is made later, an index
    /// into [`Collect::pending`] until resolved.
    target: u32,
}

const DOT: u32 = u32::MAX;
const DOTDOT: u32 = u32::MAX - 1;
const STUB: u32 = u32::MAX - 2;
/// Listing indexes below this are entries; above are the names above.
const FIRST_SPECIAL: u32 = STUB - 255;

/// One inode of the image: about 72 bytes. Everything the tree's inode
/// already says (mode, owner, mtime, size, content) is read from `src`
/// when needed rather than copied, and xattrs are a shared set number.
struct Node {
    src: Arc<Inode>,
    nid: u64,
    n_blocks: u64,
    /// Directories: where their entries start in [`Plan::children`].
    first_child: u64,
    parent: u32,
    nlink: u32,
    /// The set of stored xattrs (besides the overlay metacopy and
    /// redirect of an external file, derived from `src` when needed).
    xattrs: u32,
    xattr_size: u32,
    /// Directories: their number of entries (`.` and `..` included) and
    /// their listing in [`Plan::listings`].
    n_children: u32,
    listing: u32,
    blkaddr: u32,
    tail: u16,
    ipad: u16,
    role: Role,
    data: Data,
    compact: bool,
}

impl Node {
    fn mode(&self) -> u32 {
        let perms = self.src.stat.perms & mode::PERMS;
        match self.role {
            Role::Plain => self.src.kind.format() | perms,
            Role::Whiteout => mode::S_IFREG | perms,
            Role::Stub => mode::S_IFCHR | 0o644,
        }
    }

    fn is_dir(&self) -> bool {
        self.data == Data::Dir
    }

    /// `st_size`: content length, symlink target length, 0 otherwise.
    fn size(&self) -> u64 {
        match (self.role, &self.src.kind) {
            (Role::Plain, Kind::Regular(d)) => d.size(),
            (Role::Plain, Kind::Symlink(t)) => t.len() as u64,
            _ => 0,
        }
    }

    fn rdev(&self) -> u32 {
        match (self.role, &self.src.kind) {
            // Checked to fit when the node was made.
            (Role::Plain, Kind::CharDevice { rdev } | Kind::BlockDevice { rdev }) => *rdev as u32,
            _ => 0,
        }
    }

    fn file_type(&self) -> u8 {
        match self.mode() & mode::S_IFMT {
            mode::S_IFREG => format::FT_REG_FILE,
            mode::S_IFDIR => format::FT_DIR,
            mode::S_IFCHR => format::FT_CHRDEV,
            mode::S_IFBLK => format::FT_BLKDEV,
            mode::S_IFIFO => format::FT_FIFO,
            mode::S_IFSOCK => format::FT_SOCK,
            mode::S_IFLNK => format::FT_SYMLINK,
            _ => format::FT_UNKNOWN,
        }
    }

    fn inline_content(&self) -> &[u8] {
        match &self.src.kind {
            Kind::Regular(FileData::Inline(d)) if self.role == Role::Plain => d,
            _ => &[],
        }
    }

    fn symlink_target(&self) -> &[u8] {
        match &self.src.kind {
            Kind::Symlink(t) if self.role == Role::Plain => t,
            _ => &[],
        }
    }

    /// The overlay metacopy and redirect values of an external file.
    fn derived_xattrs(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        if !matches!(self.data, Data::Chunked { .. }) {
            return (None, None);
        }
        let Kind::Regular(FileData::External {
            redirect, digest, ..
        }) = &self.src.kind
        else {
            return (None, None);
        };
        let metacopy = match digest {
            Some(id) => format::metacopy_value(id.algorithm().kernel_id(), id.as_bytes()),
            None => Vec::new(),
        };
        let redirect = redirect
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| [b"/", r].concat());
        (Some(metacopy), redirect)
    }
}

/// Chunk size bits for an external file (`erofs_compute_chunk_bitsize`):
/// the smallest power of two not below the size, at least one block, at
/// most 2^(12+31).
fn chunk_bits(size: u64) -> u32 {
    let bits = if size > 1 {
        64 - (size - 1).leading_zeros()
    } else {
        0
    };
    bits.clamp(
        u32::from(format::BLOCK_BITS),
        u32::from(format::BLOCK_BITS) + u32::from(format::CHUNK_FORMAT_BLKBITS_MASK),
    )
}

/// Make the node for a tree inode: checks what the format can hold and
/// applies the per-inode overlayfs rewrite (`add_overlayfs_xattrs`).
fn make_node(inode: Arc<Inode>, parent: usize, nlink: u64, sets: &mut XattrSets) -> Result<Node> {
    let mut xattrs: Xattrs = Vec::with_capacity(inode.xattrs.len());
    for (k, v) in &inode.xattrs {
        // A trailing NUL is allowed: composefs-rs images ostree commits
        // with ostree's NUL-terminated names as they are (src/ostree/tree.rs).
        let body = k.strip_suffix(&[0]).unwrap_or(k);
        if body.is_empty() || body.contains(&0) {
            bail!("invalid xattr name {:?}", short_path(k));
        }
        if v.len() > usize::from(u16::MAX) {
            bail!(
                "xattr {:?} has a {}-byte value; EROFS holds at most 65535",
                short_path(k),
                v.len()
            );
        }
        // Escape the user's trusted.overlay.* (all of them, so renames
        // cannot collide).
        let key = match k.strip_prefix(overlay::PREFIX) {
            Some(rest) => [overlay::ESCAPED_PREFIX, rest].concat(),
            None => k.clone(),
        };
        // The stored suffix (after the escape) has a one-byte length.
        if format::xattr_split(&key).1.len() > 255 {
            bail!("xattr name {:?} is too long for EROFS", short_path(k));
        }
        set_xattr(&mut xattrs, &key, v);
    }

    let mut role = Role::Plain;
    let data = match &inode.kind {
        Kind::Directory => Data::Dir,
        Kind::Regular(FileData::Inline(d)) => {
            if d.is_empty() {
                Data::None
            } else {
                Data::Inline
            }
        }
        Kind::Regular(FileData::External { size, redirect, .. }) => {
            if *size == 0 {
                // C treats an empty file as plain: no chunks, no metacopy.
                Data::None
            } else {
                let bits = chunk_bits(*size);
                let count = size.div_ceil(1u64 << bits);
                if count > format::MAX_CHUNKS {
                    bail!("a {size}-byte file needs more than 1024 chunks");
                }
                // The metacopy and redirect xattrs are derived when
                // needed ([`Node::derived_xattrs`]); check them here.
                if let Some(r) = redirect.as_deref().filter(|r| !r.is_empty()) {
                    if r.contains(&0) {
                        bail!("backing path {:?} contains NUL", short_path(r));
                    }
                    if r.len() + 1 > usize::from(u16::MAX) {
                        bail!("backing path of {} bytes is too long", r.len());
                    }
                }
                Data::Chunked {
                    bits: bits as u8,
                    count: count as u16,
                }
            }
        }
        Kind::Symlink(t) => {
            if t.is_empty() {
                bail!("empty symlink target");
            }
            if t.contains(&0) {
                bail!("symlink target {:?} contains NUL", short_path(t));
            }
            if t.len() > 4095 {
                bail!(
                    "symlink target of {} bytes is longer than PATH_MAX",
                    t.len()
                );
            }
            Data::Symlink
        }
        Kind::CharDevice { rdev: 0 } => {
            // A whiteout: escaped to an empty regular file (the directory
            // is marked by the caller).
            role = Role::Whiteout;
            set_xattr(&mut xattrs, overlay::ESCAPED_WHITEOUT, b"");
            set_xattr(&mut xattrs, overlay::USERXATTR_WHITEOUT, b"");
            Data::None
        }
        Kind::CharDevice { rdev: r } | Kind::BlockDevice { rdev: r } => {
            u32::try_from(*r)
                .map_err(|_| anyhow::anyhow!("device number {r:#x} does not fit 32 bits"))?;
            Data::None
        }
        Kind::Fifo | Kind::Socket => Data::None,
    };
    if nlink > u64::from(u32::MAX) {
        bail!("{nlink} links");
    }
    Ok(Node {
        xattrs: sets.intern(xattrs)?,
        nlink: nlink as u32,
        data,
        role,
        parent: u32::try_from(parent).context("too many inodes")?,
        src: inode,
        nid: 0,
        n_blocks: 0,
        first_child: 0,
        xattr_size: 0,
        n_children: 0,
        listing: 0,
        blkaddr: 0,
        tail: 0,
        ipad: 0,
        compact: false,
    })
}

fn whiteout_stub(root: &Node, sets: &mut XattrSets) -> Result<Node> {
    let mut xattrs = Vec::new();
    if let Some((_, v)) = sets.sets[root.xattrs as usize]
        .iter()
        .find(|(k, _)| k == b"security.selinux")
    {
        xattrs.push((b"security.selinux".to_vec(), v.clone()));
    }
    Ok(Node {
        src: root.src.clone(),
        parent: 0,
        nlink: 1,
        data: Data::None,
        role: Role::Stub,
        xattrs: sets.intern(xattrs)?,
        nid: 0,
        n_blocks: 0,
        first_child: 0,
        xattr_size: 0,
        n_children: 0,
        listing: 0,
        blkaddr: 0,
        tail: 0,
        ipad: 0,
        compact: false,
    })
}

/// Mark a directory as containing whiteouts.
fn mark_whiteout_dir(dir: &mut Node, version: u32, sets: &mut XattrSets) -> Result<()> {
    dir.xattrs = sets.modified(dir.xattrs, |xs| {
        set_xattr(xs, overlay::ESCAPED_WHITEOUTS, b"");
        set_xattr(xs, overlay::USERXATTR_WHITEOUTS, b"");
        if version >= 1 {
            set_xattr(xs, overlay::ESCAPED_OPAQUE, b"x");
            set_xattr(xs, overlay::USERXATTR_OPAQUE, b"x");
        }
    })?;
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The two-letter name of whiteout stub `b`.
fn stub_name(b: u32) -> [u8; 2] {
    [HEX[(b >> 4) as usize & 15], HEX[b as usize & 15]]
}

/// An xattr of a node as stored: name, value, and its offset in the
/// shared table if the inode refers to it there.
struct StoredXattr<'a> {
    key: &'a [u8],
    value: Cow<'a, [u8]>,
    shared: Option<u64>,
}

/// The shared xattr table and how to find an entry in it.
#[derive(Default)]
struct Shared {
    table: Xattrs,
    /// Per set: the table offset of each of its xattrs, if shared.
    sets: Vec<Vec<Option<u64>>>,
    /// Offsets of shared metacopy values, by digest.
    metacopy: HashMap<Option<ObjectId>, u64>,
    /// Offsets of shared redirects, by backing path.
    redirect: HashMap<Vec<u8>, u64>,
}

struct Plan {
    nodes: Vec<Node>,
    /// Every directory's entries, `.` and `..` included, in name order.
    children: Vec<Child>,
    listings: Vec<Arc<[DirEntry]>>,
    sets: XattrSets,
    shared: Shared,
    version: u32,
    has_acl: bool,
    min_mtime: Timespec,
    inodes_end: u64,
    data_start: u64,
    n_data_blocks: u64,
}

impl Plan {
    fn build(scan: &Scan, tree: &dyn Tree, version: u32, unsigned_mtime: bool) -> Result<Plan> {
        let mut plan = Self::collect(scan, tree, version)?;
        if plan.nodes.len() as u64 > u64::from(u32::MAX) + 1 {
            bail!(
                "{} inodes do not fit 32-bit inode numbers",
                plan.nodes.len()
            );
        }
        let mut set_used = vec![false; plan.sets.sets.len()];
        for n in &plan.nodes {
            set_used[n.xattrs as usize] = true;
        }
        plan.has_acl = plan.sets.sets.iter().zip(&set_used).any(|(s, used)| {
            *used
                && s.iter().any(|(k, _)| {
                    k == b"system.posix_acl_access" || k == b"system.posix_acl_default"
                })
        });
        plan.min_mtime = if unsigned_mtime {
            plan.nodes
                .iter()
                .map(|n| n.src.stat.mtime)
                .min_by_key(|t| (t.sec as u64, t.nsec))
                .unwrap_or_default()
        } else {
            plan.nodes
                .iter()
                .map(|n| n.src.stat.mtime)
                .min()
                .unwrap_or_default()
        };

        plan.shared = plan.share_xattrs();
        let shared_size: u64 = plan
            .shared
            .table
            .iter()
            .map(|(k, v)| entry_size(k, v))
            .sum();

        // Inode layout (`compute_erofs_inodes`).
        let mut pos = INODES_START;
        let mut n_data_blocks = 0u64;
        for i in 0..plan.nodes.len() {
            plan.compute_sizes(i);
            let xattr_size = {
                let stored = plan.stored_xattrs(&plan.nodes[i]);
                let n_shared = stored.iter().filter(|x| x.shared.is_some()).count() as u64;
                let inline: u64 = stored
                    .iter()
                    .filter(|x| x.shared.is_none())
                    .map(|x| entry_size(x.key, &x.value))
                    .sum();
                if stored.is_empty() {
                    0
                } else {
                    (XattrIbodyHeader::SIZE as u64 + 4 * n_shared + inline + 3) & !3
                }
            };
            if xattr_size > 0 && (xattr_size - XattrIbodyHeader::SIZE as u64) / 4 + 1 > 0xffff {
                bail!(
                    "{}: {} bytes of xattrs do not fit an EROFS inode",
                    plan.path_of(i),
                    xattr_size
                );
            }
            let min_mtime = plan.min_mtime;
            let n = &mut plan.nodes[i];
            n.xattr_size = xattr_size as u32;
            let size = if n.is_dir() {
                n.n_blocks * BLOCK_SIZE + u64::from(n.tail)
            } else {
                n.size()
            };
            n.compact = n.src.stat.mtime == min_mtime
                && n.nlink <= u32::from(u16::MAX)
                && n.src.stat.uid <= u32::from(u16::MAX)
                && n.src.stat.gid <= u32::from(u16::MAX)
                && size <= u64::from(u32::MAX);
            let inode_size = if n.compact {
                CompactInode::SIZE
            } else {
                ExtendedInode::SIZE
            } as u64;
            let ppos = pos;
            pos = pos.next_multiple_of(SLOT_SIZE);
            let mut ipad = pos - ppos;
            let extra = padding_for_tail(n, pos, inode_size);
            ipad += extra;
            n.ipad = ipad as u16;
            pos += extra;
            n.nid = pos / SLOT_SIZE;
            n_data_blocks += n.n_blocks;
            pos += inode_size + u64::from(n.xattr_size) + u64::from(n.tail);
        }
        let inodes_end = pos.next_multiple_of(SLOT_SIZE);
        let data_start = (inodes_end + shared_size).next_multiple_of(BLOCK_SIZE);
        let total_blocks = data_start / BLOCK_SIZE + n_data_blocks;
        if total_blocks > u64::from(u32::MAX) {
            bail!("the image would need {total_blocks} blocks; EROFS addresses 2^32");
        }
        let mut current = data_start;
        for n in plan.nodes.iter_mut().filter(|n| n.n_blocks > 0) {
            n.blkaddr = (current / BLOCK_SIZE) as u32;
            current += n.n_blocks * BLOCK_SIZE;
        }
        if plan.nodes[0].nid > u64::from(u16::MAX) {
            bail!("root inode number does not fit 16 bits");
        }
        plan.inodes_end = inodes_end;
        plan.data_start = data_start;
        plan.n_data_blocks = n_data_blocks;
        Ok(plan)
    }

    /// Breadth-first inode order with the overlayfs rewrite applied
    /// (`rewrite_tree_for_erofs` + `lcfs_compute_tree`).
    fn collect(scan: &Scan, tree: &dyn Tree, version: u32) -> Result<Plan> {
        let mut sets = XattrSets::new();
        let root_inode = tree.inode(scan.root).context("reading the root inode")?;
        let mut root = make_node(root_inode, 0, 2, &mut sets).context("the root directory")?;
        root.xattrs = sets.modified(root.xattrs, |xs| set_xattr(xs, overlay::OPAQUE, b"y"))?;
        let mut nodes = vec![root];
        let mut children: Vec<Child> = Vec::new();
        let mut listings: Vec<Arc<[DirEntry]>> = Vec::new();
        let mut dir_inos: Vec<Ino> = Vec::new();
        // Nodes of inodes with several names, and names waiting for them.
        let mut link_nodes: HashMap<Ino, u32> = HashMap::new();
        let mut pending: Vec<(usize, Ino)> = Vec::new();
        let mut whiteout_dirs: Vec<usize> = Vec::new();

        listings.push(scan.dirs[&scan.root].clone());
        dir_inos.push(scan.root);
        let mut i = 0;
        while i < nodes.len() {
            if !nodes[i].is_dir() {
                i += 1;
                continue;
            }
            let li = nodes[i].listing as usize;
            let entries = listings[li].clone();
            let dir = dir_inos[li];
            // The names besides the entries, in order: `.`, `..`, then
            // (in the root) the stubs for the names `00`..`ff` it lacks.
            let mut specials: Vec<u32> = vec![DOT, DOTDOT];
            if i == 0 {
                for b in 0..=255u32 {
                    let name = stub_name(b);
                    if entries
                        .binary_search_by(|e| e.name.as_slice().cmp(&name[..]))
                        .is_err()
                    {
                        specials.push(STUB - b);
                    }
                }
            }
            let special_name = |s: u32| -> ([u8; 2], usize) {
                match s {
                    DOT => (*b"..", 1),
                    DOTDOT => (*b"..", 2),
                    _ => (stub_name(STUB - s), 2),
                }
            };
            let first = children.len() as u64;
            let mut subdirs = 0u64;
            let (mut e, mut s) = (0usize, 0usize);
            while e < entries.len() || s < specials.len() {
                let take_special = s < specials.len()
                    && (e == entries.len() || {
                        let (b, len) = special_name(specials[s]);
                        b[..len] < entries[e].name[..]
                    });
                let (name, target) = if take_special {
                    let sp = specials[s];
                    s += 1;
                    let target = match sp {
                        DOT => i,
                        DOTDOT => nodes[i].parent as usize,
                        _ => {
                            let stub = whiteout_stub(&nodes[0], &mut sets)?;
                            nodes.push(stub);
                            nodes.len() - 1
                        }
                    };
                    (sp, target)
                } else {
                    let p = e;
                    e += 1;
                    if p >= FIRST_SPECIAL as usize {
                        bail!("a directory of more than {FIRST_SPECIAL} entries");
                    }
                    let child = entries[p].ino;
                    let path =
                        |nodes: &[Node], children: &[Child], listings: &[Arc<[DirEntry]>]| {
                            format!(
                                "{}/{}",
                                path_in(nodes, children, listings, i),
                                short_path(&entries[p].name)
                            )
                        };
                    let inode = tree
                        .inode(child)
                        .with_context(|| path(&nodes, &children, &listings))?;
                    if inode.kind.is_dir() {
                        subdirs += 1;
                        let mut n = make_node(inode, i, 0, &mut sets)
                            .with_context(|| path(&nodes, &children, &listings))?;
                        n.listing =
                            u32::try_from(listings.len()).context("too many directories")?;
                        listings.push(scan.dirs[&child].clone());
                        dir_inos.push(child);
                        nodes.push(n);
                        (p as u32, nodes.len() - 1)
                    } else {
                        let (count, first_name) = match scan.links.get(&child) {
                            None => (1, true),
                            Some(l) => (l.count, l.count == 1 || (l.dir == dir && l.pos == p)),
                        };
                        if first_name {
                            let whiteout = matches!(inode.kind, Kind::CharDevice { rdev: 0 });
                            // A dumpfile's declared NLINK, written as is (C).
                            let nlink = tree
                                .link_hint(child)
                                .and_then(|h| h.nlink)
                                .map_or(count, u64::from);
                            let n = make_node(inode, i, nlink, &mut sets)
                                .with_context(|| path(&nodes, &children, &listings))?;
                            nodes.push(n);
                            let idx = nodes.len() - 1;
                            if count > 1 {
                                link_nodes.insert(child, idx as u32);
                            }
                            if whiteout && whiteout_dirs.last() != Some(&i) {
                                whiteout_dirs.push(i);
                            }
                            (p as u32, idx)
                        } else {
                            pending.push((children.len(), child));
                            (p as u32, 0)
                        }
                    }
                };
                children.push(Child {
                    name,
                    target: u32::try_from(target).context("too many inodes")?,
                });
            }
            let n = &mut nodes[i];
            n.nlink = u32::try_from(2 + subdirs).context("too many subdirectories")?;
            n.first_child = first;
            n.n_children = u32::try_from(children.len() as u64 - first)
                .context("too many directory entries")?;
            i += 1;
        }
        for d in whiteout_dirs {
            mark_whiteout_dir(&mut nodes[d], version, &mut sets)?;
        }

        // Hardlinks point at the node made for the inode's first name.
        for (c, ino) in pending {
            let idx = *link_nodes
                .get(&ino)
                .with_context(|| format!("hardlinked inode {ino} was never placed"))?;
            children[c].target = idx;
        }
        Ok(Plan {
            nodes,
            children,
            listings,
            sets,
            shared: Shared::default(),
            version,
            has_acl: false,
            min_mtime: Timespec::default(),
            inodes_end: 0,
            data_start: 0,
            n_data_blocks: 0,
        })
    }

    /// The entries of directory node `n`.
    fn children_of(&self, n: &Node) -> &[Child] {
        let start = n.first_child as usize;
        &self.children[start..start + n.n_children as usize]
    }

    /// The name of entry `c` of directory node `n`.
    fn child_name<'a>(&'a self, n: &Node, c: &Child) -> Cow<'a, [u8]> {
        match c.name {
            DOT => Cow::Borrowed(b"."),
            DOTDOT => Cow::Borrowed(b".."),
            s if s >= FIRST_SPECIAL => Cow::Owned(stub_name(STUB - s).to_vec()),
            p => Cow::Borrowed(&self.listings[n.listing as usize][p as usize].name),
        }
    }

    fn name_len(&self, n: &Node, c: &Child) -> u64 {
        match c.name {
            DOT => 1,
            DOTDOT | FIRST_SPECIAL..=STUB => 2,
            p => self.listings[n.listing as usize][p as usize].name.len() as u64,
        }
    }

    /// Split directory entries into blocks as `write_erofs_dentries` does:
    /// returns the ranges of the full blocks and the last range with its
    /// size.
    fn split_dir(&self, n: &Node) -> (Vec<(usize, usize)>, (usize, usize), u64) {
        let children = self.children_of(n);
        let mut blocks = Vec::new();
        let mut first = 0;
        let mut size = 0u64;
        for (i, c) in children.iter().enumerate() {
            let len = Dirent::SIZE as u64 + self.name_len(n, c);
            if size + len > BLOCK_SIZE {
                blocks.push((first, i));
                first = i;
                size = 0;
            }
            size += len;
        }
        (blocks, (first, children.len()), size)
    }

    /// Block count and inline tail of a node (`compute_erofs_inode_size`).
    fn compute_sizes(&mut self, i: usize) {
        let n = &self.nodes[i];
        let (blocks, tail) = match n.data {
            Data::Dir => {
                let (full, _, last) = self.split_dir(n);
                if last > BLOCK_SIZE / 2 {
                    (full.len() as u64 + 1, 0)
                } else {
                    (full.len() as u64, last)
                }
            }
            Data::Symlink => (0, n.size()),
            Data::Inline => {
                let size = n.size();
                let (b, t) = (size / BLOCK_SIZE, size % BLOCK_SIZE);
                if t > BLOCK_SIZE / 2 {
                    (b + 1, 0)
                } else {
                    (b, t)
                }
            }
            Data::Chunked { count, .. } => (0, u64::from(count) * 4),
            Data::None => (0, 0),
        };
        let n = &mut self.nodes[i];
        n.n_blocks = blocks;
        n.tail = tail as u16;
    }

    /// A node's xattrs as stored, sorted by name: its set and, for an
    /// external file, the overlay metacopy and redirect; each with its
    /// shared table offset when the inode refers to it there (at most
    /// 128 do).
    fn stored_xattrs<'a>(&'a self, n: &Node) -> Vec<StoredXattr<'a>> {
        let set = &self.sets.sets[n.xattrs as usize];
        let offsets = self.shared.sets.get(n.xattrs as usize);
        let mut out: Vec<StoredXattr<'a>> = set
            .iter()
            .enumerate()
            .map(|(j, (k, v))| StoredXattr {
                key: k,
                value: Cow::Borrowed(v.as_slice()),
                shared: offsets.and_then(|o| o[j]),
            })
            .collect();
        let (metacopy, redirect) = n.derived_xattrs();
        let mut derived = false;
        if let Some(v) = metacopy {
            let digest = match &n.src.kind {
                Kind::Regular(FileData::External { digest, .. }) => *digest,
                _ => None,
            };
            out.push(StoredXattr {
                key: overlay::METACOPY,
                shared: self.shared.metacopy.get(&digest).copied(),
                value: Cow::Owned(v),
            });
            derived = true;
        }
        if let Some(v) = redirect {
            out.push(StoredXattr {
                key: overlay::REDIRECT,
                shared: self.shared.redirect.get(&v[1..]).copied(),
                value: Cow::Owned(v),
            });
        }
        if derived {
            out.sort_by(|a, b| a.key.cmp(b.key));
        }
        let mut used = 0;
        for x in out.iter_mut() {
            if x.shared.is_some() {
                if used < format::XATTR_LONG_PREFIX {
                    used += 1;
                } else {
                    x.shared = None;
                }
            }
        }
        out
    }

    /// Pick the shared xattrs: those that more than one inode has
    /// (`compute_erofs_shared_xattrs`), counted by set and, for the
    /// derived metacopy and redirect, by digest and backing path, without
    /// listing every inode's xattrs.
    fn share_xattrs(&self) -> Shared {
        let mut uses = vec![0u64; self.sets.sets.len()];
        let mut metacopy: HashMap<Option<&ObjectId>, u64> = HashMap::new();
        let mut redirect: HashMap<&[u8], u64> = HashMap::new();
        for n in &self.nodes {
            uses[n.xattrs as usize] += 1;
            if let (
                Data::Chunked { .. },
                Kind::Regular(FileData::External {
                    redirect: r,
                    digest,
                    ..
                }),
            ) = (n.data, &n.src.kind)
            {
                *metacopy.entry(digest.as_ref()).or_default() += 1;
                if let Some(r) = r.as_deref().filter(|r| !r.is_empty()) {
                    *redirect.entry(r).or_default() += 1;
                }
            }
        }
        let mut counts: HashMap<(&[u8], &[u8]), u64> = HashMap::new();
        for (s, &u) in self.sets.sets.iter().zip(&uses) {
            if u == 0 {
                continue;
            }
            for (k, v) in s.iter() {
                *counts.entry((k, v)).or_default() += u;
            }
        }
        // The derived xattrs' names differ from every set's (user
        // `trusted.overlay.*` names are escaped), so the counts add up
        // separately.
        let mut shared: Vec<CowXattr> = counts
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|((k, v), _)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
            .collect();
        for (d, c) in &metacopy {
            if *c > 1 {
                let v = match d {
                    Some(id) => format::metacopy_value(id.algorithm().kernel_id(), id.as_bytes()),
                    None => Vec::new(),
                };
                shared.push((Cow::Borrowed(overlay::METACOPY), Cow::Owned(v)));
            }
        }
        for (r, c) in &redirect {
            if *c > 1 {
                shared.push((
                    Cow::Borrowed(overlay::REDIRECT),
                    Cow::Owned([b"/", *r].concat()),
                ));
            }
        }
        // `xattrs_ht_sort`: name, then value length, then value, all descending.
        shared.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.len().cmp(&a.1.len()))
                .then(b.1.cmp(&a.1))
        });
        let mut offsets: HashMap<(&[u8], &[u8]), u64> = HashMap::with_capacity(shared.len());
        let mut off = 0;
        for (k, v) in &shared {
            offsets.insert((k, v), off);
            off += entry_size(k, v);
        }
        let sets = self
            .sets
            .sets
            .iter()
            .map(|s| {
                s.iter()
                    .map(|(k, v)| offsets.get(&(k.as_slice(), v.as_slice())).copied())
                    .collect()
            })
            .collect();
        let metacopy = metacopy
            .into_keys()
            .filter_map(|d| {
                let v = match &d {
                    Some(id) => format::metacopy_value(id.algorithm().kernel_id(), id.as_bytes()),
                    None => Vec::new(),
                };
                offsets
                    .get(&(overlay::METACOPY, &v[..]))
                    .map(|&o| (d.copied(), o))
            })
            .collect();
        let redirect = redirect
            .into_keys()
            .filter_map(|r| {
                let v = [b"/", r].concat();
                offsets
                    .get(&(overlay::REDIRECT, &v[..]))
                    .map(|&o| (r.to_vec(), o))
            })
            .collect();
        let table = shared
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        Shared {
            table,
            sets,
            metacopy,
            redirect,
        }
    }

    fn write<W: Write>(&self, w: &mut Out<W>) -> Result<()> {
        let header = ComposefsHeader {
            magic: COMPOSEFS_MAGIC,
            version: COMPOSEFS_HEADER_VERSION,
            flags: if self.has_acl {
                COMPOSEFS_FLAGS_HAS_ACL
            } else {
                0
            },
            composefs_version: self.version,
            unused: [0; 4],
        };
        w.write(&header.encode())?;
        w.zeros(format::SUPER_OFFSET - ComposefsHeader::SIZE as u64)?;
        let sb = Superblock {
            magic: EROFS_MAGIC,
            feature_compat: FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER,
            blkszbits: format::BLOCK_BITS,
            root_nid: self.nodes[0].nid as u16,
            inos: self.nodes.len() as u64,
            build_time: self.min_mtime.sec as u64,
            build_time_nsec: self.min_mtime.nsec,
            blocks: (self.data_start / BLOCK_SIZE + self.n_data_blocks) as u32,
            meta_blkaddr: (INODES_START / BLOCK_SIZE) as u32,
            xattr_blkaddr: (self.inodes_end / BLOCK_SIZE) as u32,
            ..Default::default()
        };
        w.write(&sb.encode())?;

        for (i, n) in self.nodes.iter().enumerate() {
            self.write_inode(w, i, n)?;
        }
        w.align(SLOT_SIZE)?;
        debug_assert_eq!(w.pos, self.inodes_end);

        for (k, v) in &self.shared.table {
            write_xattr(w, k, v)?;
        }
        w.align(BLOCK_SIZE)?;
        debug_assert_eq!(w.pos, self.data_start);

        for n in &self.nodes {
            if n.n_blocks == 0 {
                continue;
            }
            debug_assert_eq!(w.pos, u64::from(n.blkaddr) * BLOCK_SIZE);
            match n.data {
                Data::Dir => {
                    let (blocks, last, _) = self.split_dir(n);
                    let children = self.children_of(n);
                    for &(a, b) in &blocks {
                        self.write_dirents(w, n, &children[a..b])?;
                        w.align(BLOCK_SIZE)?;
                    }
                    if n.n_blocks > blocks.len() as u64 {
                        self.write_dirents(w, n, &children[last.0..last.1])?;
                        w.align(BLOCK_SIZE)?;
                    }
                }
                Data::Inline => {
                    let c = n.inline_content();
                    let end = c.len().min((n.n_blocks * BLOCK_SIZE) as usize);
                    w.write(&c[..end])?;
                    w.align(BLOCK_SIZE)?;
                }
                Data::Chunked { .. } => {
                    for _ in 0..format::MAX_CHUNKS {
                        w.write(&format::NULL_ADDR.to_le_bytes())?;
                    }
                }
                Data::Symlink => {
                    let t = n.symlink_target();
                    w.write(&t[..t.len().min(BLOCK_SIZE as usize)])?;
                    w.align(BLOCK_SIZE)?;
                }
                Data::None => {}
            }
        }
        debug_assert_eq!(w.pos, self.data_start + self.n_data_blocks * BLOCK_SIZE);
        Ok(())
    }

    fn write_inode<W: Write>(&self, w: &mut Out<W>, i: usize, n: &Node) -> Result<()> {
        w.zeros(u64::from(n.ipad))?;
        debug_assert_eq!(w.pos, n.nid * SLOT_SIZE);
        let icount = if n.xattr_size == 0 {
            0
        } else {
            ((u64::from(n.xattr_size) - XattrIbodyHeader::SIZE as u64) / 4 + 1) as u16
        };
        let mut layout = if n.tail > 0 {
            format::LAYOUT_FLAT_INLINE
        } else {
            format::LAYOUT_FLAT_PLAIN
        };
        let blkaddr = if n.n_blocks > 0 { n.blkaddr } else { 0 };
        let st_mode = n.mode();
        let (size, u) = match n.data {
            Data::Dir => (n.n_blocks * BLOCK_SIZE + u64::from(n.tail), blkaddr),
            Data::Chunked { bits, .. } => {
                layout = format::LAYOUT_CHUNK_BASED;
                let chunk_format = u32::from(bits) - u32::from(format::BLOCK_BITS);
                (n.size(), (blkaddr & 0xffff_0000) | chunk_format)
            }
            Data::Symlink if n.n_blocks == 0 => (u64::from(n.tail), 0),
            Data::Inline | Data::Symlink => (n.size(), blkaddr),
            Data::None => match st_mode & mode::S_IFMT {
                mode::S_IFCHR | mode::S_IFBLK => (0, n.rdev()),
                _ => (0, 0),
            },
        };
        let mode16 = st_mode as u16;
        let stat = &n.src.stat;
        if n.compact {
            let inode = CompactInode {
                format: format::inode_format(false, layout),
                xattr_icount: icount,
                mode: mode16,
                nlink: n.nlink as u16,
                size: size as u32,
                u,
                ino: i as u32,
                uid: stat.uid as u16,
                gid: stat.gid as u16,
                ..Default::default()
            };
            w.write(&inode.encode())?;
        } else {
            let inode = ExtendedInode {
                format: format::inode_format(true, layout),
                xattr_icount: icount,
                mode: mode16,
                size,
                u,
                ino: i as u32,
                uid: stat.uid,
                gid: stat.gid,
                mtime: stat.mtime.sec as u64,
                mtime_nsec: stat.mtime.nsec,
                nlink: n.nlink,
                ..Default::default()
            };
            w.write(&inode.encode())?;
        }

        if n.xattr_size > 0 {
            let start = w.pos;
            let stored = self.stored_xattrs(n);
            let mut filter = 0u32;
            for x in &stored {
                let (index, suffix) = format::xattr_split(x.key);
                filter |= format::xattr_filter_bit(index, suffix);
            }
            let shared: Vec<u64> = stored.iter().filter_map(|x| x.shared).collect();
            let header = XattrIbodyHeader {
                name_filter: !filter,
                shared_count: shared.len() as u8,
                reserved: [0; 7],
            };
            w.write(&header.encode())?;
            for off in shared {
                let r = (self.inodes_end % BLOCK_SIZE + off) / 4;
                w.write(&(r as u32).to_le_bytes())?;
            }
            for x in &stored {
                if x.shared.is_none() {
                    write_xattr(w, x.key, &x.value)?;
                }
            }
            debug_assert_eq!(w.pos - start, u64::from(n.xattr_size));
        }

        if n.tail > 0 {
            match n.data {
                Data::Dir => {
                    let (_, last, _) = self.split_dir(n);
                    self.write_dirents(w, n, &self.children_of(n)[last.0..last.1])?;
                }
                Data::Symlink => w.write(n.symlink_target())?,
                Data::Inline => {
                    let c = n.inline_content();
                    w.write(&c[c.len() - usize::from(n.tail)..])?;
                }
                Data::Chunked { count, .. } => {
                    for _ in 0..count {
                        w.write(&format::NULL_ADDR.to_le_bytes())?;
                    }
                }
                Data::None => {}
            }
        }
        Ok(())
    }

    fn write_dirents<W: Write>(
        &self,
        w: &mut Out<W>,
        dir: &Node,
        children: &[Child],
    ) -> Result<()> {
        let mut nameoff = (children.len() * Dirent::SIZE) as u64;
        for c in children {
            let target = &self.nodes[c.target as usize];
            let d = Dirent {
                nid: target.nid,
                nameoff: nameoff as u16,
                file_type: target.file_type(),
                reserved: 0,
            };
            w.write(&d.encode())?;
            nameoff += self.name_len(dir, c);
        }
        for c in children {
            w.write(&self.child_name(dir, c))?;
        }
        Ok(())
    }

    fn path_of(&self, i: usize) -> String {
        path_in(&self.nodes, &self.children, &self.listings, i)
    }
}

/// A readable path for error messages (walks the parent links).
fn path_in(
    nodes: &[Node],
    children: &[Child],
    listings: &[Arc<[DirEntry]>],
    mut i: usize,
) -> String {
    let mut parts = Vec::new();
    let mut guard = 0;
    while i != 0 && i < nodes.len() && guard < 4096 {
        let p = nodes[i].parent as usize;
        let name = nodes
            .get(p)
            .and_then(|pn| {
                let start = pn.first_child as usize;
                let end = (start + pn.n_children as usize).min(children.len());
                children
                    .get(start..end)?
                    .iter()
                    .find(|c| c.target as usize == i && c.name != DOT && c.name != DOTDOT)
                    .map(|c| match c.name {
                        s if s >= FIRST_SPECIAL => short_path(&stub_name(STUB - s)),
                        e => listings
                            .get(pn.listing as usize)
                            .and_then(|l| l.get(e as usize))
                            .map(|d| short_path(&d.name))
                            .unwrap_or_default(),
                    })
            })
            .unwrap_or_else(|| format!("<inode {i}>"));
        parts.push(name);
        i = p;
        guard += 1;
    }
    if parts.is_empty() {
        return "/".into();
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}

fn entry_size(key: &[u8], value: &[u8]) -> u64 {
    let (_, suffix) = format::xattr_split(key);
    (XattrEntryHeader::SIZE as u64 + suffix.len() as u64 + value.len() as u64 + 3) & !3
}

fn write_xattr<W: Write>(w: &mut Out<W>, key: &[u8], value: &[u8]) -> Result<()> {
    let (index, suffix) = format::xattr_split(key);
    let h = XattrEntryHeader {
        name_len: suffix.len() as u8,
        name_index: index,
        value_size: value.len() as u16,
    };
    w.write(&h.encode())?;
    w.write(suffix)?;
    w.write(value)?;
    w.align(4)
}

/// Padding before an inode so its tail does not cross a block
/// (`compute_erofs_inode_padding_for_tail`); may move the tail to a block.
fn padding_for_tail(n: &mut Node, pos: u64, inode_size: u64) -> u64 {
    let non_tail = inode_size + u64::from(n.xattr_size);
    let tail = u64::from(n.tail);
    let total = non_tail + tail;
    if matches!(n.data, Data::Symlink) {
        // The kernel wants the inode and the symlink target in one block;
        // if they cannot share one, the target goes to a data block.
        if total >= BLOCK_SIZE {
            n.n_blocks += 1;
            n.tail = 0;
        }
        if pos / BLOCK_SIZE != (pos + total - 1) / BLOCK_SIZE {
            return pos.next_multiple_of(BLOCK_SIZE) - pos;
        }
        return 0;
    }
    let remainder = BLOCK_SIZE - (pos + non_tail) % BLOCK_SIZE;
    if remainder < tail {
        let extra = remainder.next_multiple_of(SLOT_SIZE);
        let remainder = BLOCK_SIZE - (pos + non_tail + extra) % BLOCK_SIZE;
        if tail <= remainder {
            return extra;
        }
        n.n_blocks += 1;
        n.tail = 0;
        return pos.next_multiple_of(BLOCK_SIZE) - pos;
    }
    0
}

/// The output, counting bytes.
struct Out<W: Write> {
    inner: BufWriter<W>,
    pos: u64,
}

impl<W: Write> Out<W> {
    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.inner.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<()> {
        const Z: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(Z.len() as u64);
            self.write(&Z[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn align(&mut self, a: u64) -> Result<()> {
        self.zeros(self.pos.next_multiple_of(a) - self.pos)
    }
}
