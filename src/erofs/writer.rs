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

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::format::{
    self, BLOCK_SIZE, COMPOSEFS_FLAGS_HAS_ACL, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC,
    CompactInode, ComposefsHeader, Dirent, EROFS_MAGIC, ExtendedInode, FEATURE_COMPAT_MTIME,
    FEATURE_COMPAT_XATTR_FILTER, INODES_START, SLOT_SIZE, Superblock, XattrEntryHeader,
    XattrIbodyHeader, overlay,
};
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
    crate::tree::check_path_lengths(tree)?;
    let scan = Scan::run(tree)?;
    let mut version = opts.min_version.number();
    let max_version = opts.max_version.number().max(version);
    if version < 1 && max_version >= 1 && scan.has_whiteout {
        version = 1;
    }
    let plan = Plan::build(&scan, version)?;
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
// Pass 1: read the tree once (depth first), check it, count links.
// ---------------------------------------------------------------------------

struct LinkInfo {
    /// Number of names.
    count: u64,
    /// The first name in depth-first sorted order: directory and index.
    dir: Ino,
    pos: usize,
}

struct Scan {
    root: Ino,
    inodes: HashMap<Ino, Arc<Inode>>,
    dirs: HashMap<Ino, Arc<[DirEntry]>>,
    links: HashMap<Ino, LinkInfo>,
    has_whiteout: bool,
}

struct Frame {
    ino: Ino,
    entries: Arc<[DirEntry]>,
    pos: usize,
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
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
            inodes: HashMap::new(),
            dirs: HashMap::new(),
            links: HashMap::new(),
            has_whiteout: false,
        };
        scan.inodes.insert(root, root_inode);
        let mut visited: HashSet<Ino> = HashSet::from([root]);
        let entries = read_dir(tree, root, "/")?;
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
            let entry = &top.entries[pos];
            let (child, name) = (entry.ino, entry.name.clone());
            let inode = match scan.inodes.get(&child) {
                Some(i) => i.clone(),
                None => {
                    let i = tree
                        .inode(child)
                        .with_context(|| path_of_stack(&stack, &name))?;
                    scan.inodes.insert(child, i.clone());
                    i
                }
            };
            if inode.kind.is_dir() {
                if !visited.insert(child) {
                    bail!(
                        "{}: directory inode {child} is reachable twice (a directory hardlink or a loop)",
                        path_of_stack(&stack, &name)
                    );
                }
                let entries = read_dir(tree, child, &path_of_stack(&stack, &name))?;
                scan.dirs.insert(child, entries.clone());
                stack.push(Frame {
                    ino: child,
                    entries,
                    pos: 0,
                });
            } else {
                if matches!(inode.kind, Kind::CharDevice { rdev: 0 }) {
                    scan.has_whiteout = true;
                }
                scan.links
                    .entry(child)
                    .and_modify(|l| l.count += 1)
                    .or_insert(LinkInfo { count: 1, dir, pos });
            }
        }
        Ok(scan)
    }
}

/// The path of `name` inside the directory at the top of `stack`.
fn path_of_stack(stack: &[Frame], name: &[u8]) -> String {
    let mut p = String::new();
    for w in stack.windows(2) {
        // The child frame was entered from entry `pos - 1` of its parent.
        let parent = &w[0];
        if let Some(e) = parent.entries.get(parent.pos.wrapping_sub(1)) {
            p.push('/');
            p.push_str(&show(&e.name));
        }
    }
    p.push('/');
    p.push_str(&show(name));
    p
}

/// A directory's entries, checked: valid names, sorted, unique.
fn read_dir(tree: &dyn Tree, dir: Ino, path: &str) -> Result<Arc<[DirEntry]>> {
    let entries = tree
        .readdir(dir)
        .with_context(|| format!("reading directory {path}"))?;
    for e in entries.iter() {
        check_name(&e.name).with_context(|| format!("in directory {path}"))?;
    }
    if entries.windows(2).all(|w| w[0].name < w[1].name) {
        return Ok(entries);
    }
    let mut v = entries.to_vec();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = v.windows(2).find(|w| w[0].name == w[1].name) {
        bail!("{path}: the name {:?} appears twice", show(&w[0].name));
    }
    Ok(v.into())
}

// ---------------------------------------------------------------------------
// Pass 2: the inodes in image order, rewritten for overlayfs, and laid out.
// ---------------------------------------------------------------------------

type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Set (add or replace) an xattr, as `lcfs_node_set_xattr`.
fn set_xattr(xs: &mut Xattrs, key: &[u8], value: &[u8]) {
    match xs.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value.to_vec(),
        None => xs.push((key.to_vec(), value.to_vec())),
    }
}

enum Data {
    /// No data (devices, fifos, sockets, empty files).
    None,
    Dir,
    /// Inline content, read from the source inode when written.
    Inline,
    /// External content: chunk-based, all chunks holes.
    Chunked {
        bits: u32,
        count: u64,
    },
    Symlink,
}

#[derive(Clone, Copy)]
enum Target {
    Node(usize),
    /// A hardlink to a tree inode whose node is made elsewhere.
    Link(Ino),
}

struct Child {
    name: Vec<u8>,
    target: Target,
}

/// One inode of the image.
struct Node {
    /// The tree inode (`None` for a whiteout stub).
    src: Option<Arc<Inode>>,
    parent: usize,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    nlink: u64,
    rdev: u32,
    /// `st_size`: content length, symlink target length, 0 otherwise.
    size: u64,
    data: Data,
    /// Final xattrs, sorted by name.
    xattrs: Xattrs,
    /// For each xattr: its offset in the shared table if shared.
    shared: Vec<Option<u64>>,
    /// Directory entries including `.` and `..`, sorted.
    children: Vec<Child>,
    // Layout.
    n_blocks: u64,
    tail: u64,
    compact: bool,
    xattr_size: u64,
    ipad: u64,
    nid: u64,
    blkaddr: u64,
}

impl Node {
    fn is_dir(&self) -> bool {
        self.mode & mode::S_IFMT == mode::S_IFDIR
    }

    fn file_type(&self) -> u8 {
        match self.mode & mode::S_IFMT {
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
        match self.src.as_deref().map(|i| &i.kind) {
            Some(Kind::Regular(FileData::Inline(d))) => d,
            _ => &[],
        }
    }

    fn symlink_target(&self) -> &[u8] {
        match self.src.as_deref().map(|i| &i.kind) {
            Some(Kind::Symlink(t)) => t,
            _ => &[],
        }
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
fn make_node(inode: Arc<Inode>, parent: usize, nlink: u64) -> Result<Node> {
    let mut xattrs: Xattrs = Vec::with_capacity(inode.xattrs.len() + 2);
    for (k, v) in &inode.xattrs {
        if k.is_empty() || k.contains(&0) {
            bail!("invalid xattr name {:?}", show(k));
        }
        if v.len() > usize::from(u16::MAX) {
            bail!(
                "xattr {:?} has a {}-byte value; EROFS holds at most 65535",
                show(k),
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
            bail!("xattr name {:?} is too long for EROFS", show(k));
        }
        set_xattr(&mut xattrs, &key, v);
    }

    let perms = inode.stat.perms & mode::PERMS;
    let mut st_mode = inode.kind.format() | perms;
    let mut size = 0;
    let mut rdev = 0;
    let data = match &inode.kind {
        Kind::Directory => Data::Dir,
        Kind::Regular(FileData::Inline(d)) => {
            size = d.len() as u64;
            if d.is_empty() {
                Data::None
            } else {
                Data::Inline
            }
        }
        Kind::Regular(FileData::External {
            size: sz,
            redirect,
            digest,
        }) => {
            size = *sz;
            if size == 0 {
                // C treats an empty file as plain: no chunks, no metacopy.
                Data::None
            } else {
                let bits = chunk_bits(size);
                let count = size.div_ceil(1u64 << bits);
                if count > format::MAX_CHUNKS {
                    bail!("a {size}-byte file needs more than 1024 chunks");
                }
                let metacopy = match digest {
                    Some(id) => format::metacopy_value(id.algorithm().kernel_id(), id.as_bytes()),
                    None => Vec::new(),
                };
                set_xattr(&mut xattrs, overlay::METACOPY, &metacopy);
                if let Some(r) = redirect.as_deref().filter(|r| !r.is_empty()) {
                    if r.contains(&0) {
                        bail!("backing path {:?} contains NUL", show(r));
                    }
                    let v = [b"/", r].concat();
                    if v.len() > usize::from(u16::MAX) {
                        bail!("backing path of {} bytes is too long", r.len());
                    }
                    set_xattr(&mut xattrs, overlay::REDIRECT, &v);
                }
                Data::Chunked { bits, count }
            }
        }
        Kind::Symlink(t) => {
            if t.is_empty() {
                bail!("empty symlink target");
            }
            if t.contains(&0) {
                bail!("symlink target {:?} contains NUL", show(t));
            }
            if t.len() > 4095 {
                bail!(
                    "symlink target of {} bytes is longer than PATH_MAX",
                    t.len()
                );
            }
            size = t.len() as u64;
            Data::Symlink
        }
        Kind::CharDevice { rdev: 0 } => {
            // A whiteout: escaped to an empty regular file (the directory
            // is marked by the caller).
            st_mode = mode::S_IFREG | perms;
            set_xattr(&mut xattrs, overlay::ESCAPED_WHITEOUT, b"");
            set_xattr(&mut xattrs, overlay::USERXATTR_WHITEOUT, b"");
            Data::None
        }
        Kind::CharDevice { rdev: r } | Kind::BlockDevice { rdev: r } => {
            rdev = u32::try_from(*r)
                .map_err(|_| anyhow::anyhow!("device number {r:#x} does not fit 32 bits"))?;
            Data::None
        }
        Kind::Fifo | Kind::Socket => Data::None,
    };

    Ok(Node {
        mode: st_mode,
        uid: inode.stat.uid,
        gid: inode.stat.gid,
        mtime: inode.stat.mtime,
        nlink,
        rdev,
        size,
        data,
        xattrs,
        shared: Vec::new(),
        children: Vec::new(),
        parent,
        src: Some(inode),
        n_blocks: 0,
        tail: 0,
        compact: false,
        xattr_size: 0,
        ipad: 0,
        nid: 0,
        blkaddr: 0,
    })
}

fn whiteout_stub(root: &Node) -> Node {
    let mut xattrs = Vec::new();
    if let Some((_, v)) = root.xattrs.iter().find(|(k, _)| k == b"security.selinux") {
        xattrs.push((b"security.selinux".to_vec(), v.clone()));
    }
    Node {
        src: None,
        parent: 0,
        mode: mode::S_IFCHR | 0o644,
        uid: root.uid,
        gid: root.gid,
        mtime: root.mtime,
        nlink: 1,
        rdev: 0,
        size: 0,
        data: Data::None,
        xattrs,
        shared: Vec::new(),
        children: Vec::new(),
        n_blocks: 0,
        tail: 0,
        compact: false,
        xattr_size: 0,
        ipad: 0,
        nid: 0,
        blkaddr: 0,
    }
}

/// Mark a directory as containing whiteouts.
fn mark_whiteout_dir(dir: &mut Node, version: u32) {
    set_xattr(&mut dir.xattrs, overlay::ESCAPED_WHITEOUTS, b"");
    set_xattr(&mut dir.xattrs, overlay::USERXATTR_WHITEOUTS, b"");
    if version >= 1 {
        set_xattr(&mut dir.xattrs, overlay::ESCAPED_OPAQUE, b"x");
        set_xattr(&mut dir.xattrs, overlay::USERXATTR_OPAQUE, b"x");
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

enum Src {
    Dot,
    DotDot,
    Stub,
    Entry(usize),
}

/// Split directory entries into blocks as `write_erofs_dentries` does:
/// returns the ranges of the full blocks and the last range with its size.
fn split_dir(children: &[Child]) -> (Vec<(usize, usize)>, (usize, usize), u64) {
    let mut blocks = Vec::new();
    let mut first = 0;
    let mut size = 0u64;
    for (i, c) in children.iter().enumerate() {
        let len = Dirent::SIZE as u64 + c.name.len() as u64;
        if size + len > BLOCK_SIZE {
            blocks.push((first, i));
            first = i;
            size = 0;
        }
        size += len;
    }
    (blocks, (first, children.len()), size)
}

struct Plan {
    nodes: Vec<Node>,
    version: u32,
    has_acl: bool,
    min_mtime: Timespec,
    shared: Xattrs,
    inodes_end: u64,
    data_start: u64,
    n_data_blocks: u64,
}

impl Plan {
    fn build(scan: &Scan, version: u32) -> Result<Plan> {
        let mut nodes = Self::collect(scan, version)?;
        if nodes.len() as u64 > u64::from(u32::MAX) + 1 {
            bail!("{} inodes do not fit 32-bit inode numbers", nodes.len());
        }

        // Canonical xattr order (`cmp_xattr`: strcmp of the names).
        for n in nodes.iter_mut() {
            n.xattrs.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let has_acl = nodes.iter().any(|n| {
            n.xattrs
                .iter()
                .any(|(k, _)| k == b"system.posix_acl_access" || k == b"system.posix_acl_default")
        });
        let min_mtime = nodes.iter().map(|n| n.mtime).min().unwrap_or_default();

        let shared = share_xattrs(&mut nodes);
        let shared_size: u64 = shared.iter().map(|(k, v)| entry_size(k, v)).sum();

        // Inode layout (`compute_erofs_inodes`).
        let mut pos = INODES_START;
        let mut n_data_blocks = 0u64;
        for i in 0..nodes.len() {
            let n = &mut nodes[i];
            compute_sizes(n);
            let size = if n.is_dir() {
                n.n_blocks * BLOCK_SIZE + n.tail
            } else {
                n.size
            };
            n.compact = n.mtime == min_mtime
                && n.nlink <= u64::from(u16::MAX)
                && n.uid <= u32::from(u16::MAX)
                && n.gid <= u32::from(u16::MAX)
                && size <= u64::from(u32::MAX);
            if n.nlink > u64::from(u32::MAX) {
                bail!("inode {i} has {} links", n.nlink);
            }
            let inode_size = if n.compact {
                CompactInode::SIZE
            } else {
                ExtendedInode::SIZE
            } as u64;
            let n_shared = n.shared.iter().filter(|s| s.is_some()).count() as u64;
            let inline: u64 = n
                .xattrs
                .iter()
                .zip(&n.shared)
                .filter(|(_, s)| s.is_none())
                .map(|((k, v), _)| entry_size(k, v))
                .sum();
            n.xattr_size = if n.xattrs.is_empty() {
                0
            } else {
                (XattrIbodyHeader::SIZE as u64 + 4 * n_shared + inline + 3) & !3
            };
            if n.xattr_size > 0 && (n.xattr_size - XattrIbodyHeader::SIZE as u64) / 4 + 1 > 0xffff {
                let size = n.xattr_size;
                bail!(
                    "{}: {} bytes of xattrs do not fit an EROFS inode",
                    path_of(&nodes, i),
                    size
                );
            }
            let ppos = pos;
            pos = pos.next_multiple_of(SLOT_SIZE);
            n.ipad = pos - ppos;
            let extra = padding_for_tail(n, pos, inode_size);
            n.ipad += extra;
            pos += extra;
            n.nid = pos / SLOT_SIZE;
            n_data_blocks += n.n_blocks;
            pos += inode_size + n.xattr_size + n.tail;
        }
        let inodes_end = pos.next_multiple_of(SLOT_SIZE);
        let data_start = (inodes_end + shared_size).next_multiple_of(BLOCK_SIZE);
        let total_blocks = data_start / BLOCK_SIZE + n_data_blocks;
        if total_blocks > u64::from(u32::MAX) {
            bail!("the image would need {total_blocks} blocks; EROFS addresses 2^32");
        }
        let mut current = data_start;
        for n in nodes.iter_mut().filter(|n| n.n_blocks > 0) {
            n.blkaddr = current / BLOCK_SIZE;
            current += n.n_blocks * BLOCK_SIZE;
        }
        if nodes[0].nid > u64::from(u16::MAX) {
            bail!("root inode number does not fit 16 bits");
        }

        Ok(Plan {
            nodes,
            version,
            has_acl,
            min_mtime,
            shared,
            inodes_end,
            data_start,
            n_data_blocks,
        })
    }

    /// Breadth-first inode order with the overlayfs rewrite applied
    /// (`rewrite_tree_for_erofs` + `lcfs_compute_tree`).
    fn collect(scan: &Scan, version: u32) -> Result<Vec<Node>> {
        let root_inode = scan.inodes[&scan.root].clone();
        let mut root = make_node(root_inode, 0, 2).context("the root directory")?;
        set_xattr(&mut root.xattrs, overlay::OPAQUE, b"y");
        let mut nodes = vec![root];
        let mut tree_ino = vec![scan.root];
        let mut link_nodes: HashMap<Ino, usize> = HashMap::new();

        let mut i = 0;
        while i < nodes.len() {
            if !nodes[i].is_dir() {
                i += 1;
                continue;
            }
            let dir = tree_ino[i];
            let entries = scan.dirs[&dir].clone();
            let mut srcs: Vec<(&[u8], Src)> = Vec::with_capacity(entries.len() + 2);
            srcs.push((b".", Src::Dot));
            srcs.push((b"..", Src::DotDot));
            srcs.extend(
                entries
                    .iter()
                    .enumerate()
                    .map(|(p, e)| (e.name.as_slice(), Src::Entry(p))),
            );
            let mut stub_names = Vec::new();
            if i == 0 {
                for b in 0..=255usize {
                    let name = [HEX[b >> 4], HEX[b & 15]];
                    if entries
                        .binary_search_by(|e| e.name.as_slice().cmp(&name))
                        .is_err()
                    {
                        stub_names.push(name);
                    }
                }
            }
            srcs.extend(stub_names.iter().map(|n| (&n[..], Src::Stub)));
            srcs.sort_by(|a, b| a.0.cmp(b.0));

            let mut children = Vec::with_capacity(srcs.len());
            let mut subdirs = 0u64;
            for (name, src) in srcs {
                let target = match src {
                    Src::Dot => Target::Node(i),
                    Src::DotDot => Target::Node(nodes[i].parent),
                    Src::Stub => {
                        let stub = whiteout_stub(&nodes[0]);
                        nodes.push(stub);
                        tree_ino.push(Ino::MAX);
                        Target::Node(nodes.len() - 1)
                    }
                    Src::Entry(p) => {
                        let child = entries[p].ino;
                        let inode = scan.inodes[&child].clone();
                        let path = || format!("{}/{}", path_of(&nodes, i), show(name));
                        if inode.kind.is_dir() {
                            subdirs += 1;
                            let n = make_node(inode, i, 0).with_context(path)?;
                            nodes.push(n);
                            tree_ino.push(child);
                            Target::Node(nodes.len() - 1)
                        } else {
                            let link = &scan.links[&child];
                            if link.count == 1 || (link.dir == dir && link.pos == p) {
                                let whiteout = matches!(inode.kind, Kind::CharDevice { rdev: 0 });
                                let n = make_node(inode, i, link.count).with_context(path)?;
                                nodes.push(n);
                                tree_ino.push(child);
                                let idx = nodes.len() - 1;
                                if link.count > 1 {
                                    link_nodes.insert(child, idx);
                                }
                                if whiteout {
                                    mark_whiteout_dir(&mut nodes[i], version);
                                }
                                Target::Node(idx)
                            } else {
                                Target::Link(child)
                            }
                        }
                    }
                };
                children.push(Child {
                    name: name.to_vec(),
                    target,
                });
            }
            nodes[i].nlink = 2 + subdirs;
            nodes[i].children = children;
            i += 1;
        }

        // Hardlinks point at the node made for the inode's first name.
        for n in nodes.iter_mut() {
            for c in n.children.iter_mut() {
                if let Target::Link(ino) = c.target {
                    let idx = *link_nodes
                        .get(&ino)
                        .with_context(|| format!("hardlinked inode {ino} was never placed"))?;
                    c.target = Target::Node(idx);
                }
            }
        }
        Ok(nodes)
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

        for (k, v) in &self.shared {
            write_xattr(w, k, v)?;
        }
        w.align(BLOCK_SIZE)?;
        debug_assert_eq!(w.pos, self.data_start);

        for n in &self.nodes {
            if n.n_blocks == 0 {
                continue;
            }
            debug_assert_eq!(w.pos, n.blkaddr * BLOCK_SIZE);
            match n.data {
                Data::Dir => {
                    let (blocks, last, _) = split_dir(&n.children);
                    for &(a, b) in &blocks {
                        self.write_dirents(w, &n.children[a..b])?;
                        w.align(BLOCK_SIZE)?;
                    }
                    if n.n_blocks > blocks.len() as u64 {
                        self.write_dirents(w, &n.children[last.0..last.1])?;
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
        w.zeros(n.ipad)?;
        debug_assert_eq!(w.pos, n.nid * SLOT_SIZE);
        let icount = if n.xattr_size == 0 {
            0
        } else {
            ((n.xattr_size - XattrIbodyHeader::SIZE as u64) / 4 + 1) as u16
        };
        let mut layout = if n.tail > 0 {
            format::LAYOUT_FLAT_INLINE
        } else {
            format::LAYOUT_FLAT_PLAIN
        };
        let blkaddr = if n.n_blocks > 0 { n.blkaddr as u32 } else { 0 };
        let (size, u) = match n.data {
            Data::Dir => (n.n_blocks * BLOCK_SIZE + n.tail, blkaddr),
            Data::Chunked { bits, .. } => {
                layout = format::LAYOUT_CHUNK_BASED;
                let chunk_format = bits - u32::from(format::BLOCK_BITS);
                (n.size, (blkaddr & 0xffff_0000) | chunk_format)
            }
            Data::Symlink if n.n_blocks == 0 => (n.tail, 0),
            Data::Inline | Data::Symlink => (n.size, blkaddr),
            Data::None => match n.mode & mode::S_IFMT {
                mode::S_IFCHR | mode::S_IFBLK => (0, n.rdev),
                _ => (0, 0),
            },
        };
        let mode16 = n.mode as u16;
        if n.compact {
            let inode = CompactInode {
                format: format::inode_format(false, layout),
                xattr_icount: icount,
                mode: mode16,
                nlink: n.nlink as u16,
                size: size as u32,
                u,
                ino: i as u32,
                uid: n.uid as u16,
                gid: n.gid as u16,
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
                uid: n.uid,
                gid: n.gid,
                mtime: n.mtime.sec as u64,
                mtime_nsec: n.mtime.nsec,
                nlink: n.nlink as u32,
                ..Default::default()
            };
            w.write(&inode.encode())?;
        }

        if n.xattr_size > 0 {
            let start = w.pos;
            let mut filter = 0u32;
            for (k, _) in &n.xattrs {
                let (index, suffix) = format::xattr_split(k);
                filter |= format::xattr_filter_bit(index, suffix);
            }
            let shared: Vec<u64> = n.shared.iter().flatten().copied().collect();
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
            for ((k, v), s) in n.xattrs.iter().zip(&n.shared) {
                if s.is_none() {
                    write_xattr(w, k, v)?;
                }
            }
            debug_assert_eq!(w.pos - start, n.xattr_size);
        }

        if n.tail > 0 {
            match n.data {
                Data::Dir => {
                    let (_, last, _) = split_dir(&n.children);
                    self.write_dirents(w, &n.children[last.0..last.1])?;
                }
                Data::Symlink => w.write(n.symlink_target())?,
                Data::Inline => {
                    let c = n.inline_content();
                    w.write(&c[c.len() - n.tail as usize..])?;
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

    fn write_dirents<W: Write>(&self, w: &mut Out<W>, children: &[Child]) -> Result<()> {
        let mut nameoff = (children.len() * Dirent::SIZE) as u64;
        for c in children {
            let Target::Node(t) = c.target else {
                unreachable!("hardlinks are resolved before writing")
            };
            let target = &self.nodes[t];
            let d = Dirent {
                nid: target.nid,
                nameoff: nameoff as u16,
                file_type: target.file_type(),
                reserved: 0,
            };
            w.write(&d.encode())?;
            nameoff += c.name.len() as u64;
        }
        for c in children {
            w.write(&c.name)?;
        }
        Ok(())
    }
}

/// A readable path for error messages (walks the parent links).
fn path_of(nodes: &[Node], mut i: usize) -> String {
    let mut parts = Vec::new();
    let mut guard = 0;
    while i != 0 && i < nodes.len() && guard < 4096 {
        let p = nodes[i].parent;
        let name = nodes
            .get(p)
            .and_then(|pn| {
                pn.children.iter().find(|c| {
                    matches!(c.target, Target::Node(t) if t == i)
                        && c.name != b"."
                        && c.name != b".."
                })
            })
            .map(|c| show(&c.name))
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

/// Pick the shared xattrs (used by more than one inode) and mark, per
/// inode, which of its xattrs refer to the shared table (at most 128).
fn share_xattrs(nodes: &mut [Node]) -> Xattrs {
    let mut counts: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
    for n in nodes.iter() {
        for (k, v) in &n.xattrs {
            *counts.entry((k, v)).or_default() += 1;
        }
    }
    let mut shared: Vec<(&[u8], &[u8])> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(kv, _)| *kv)
        .collect();
    // `xattrs_ht_sort`: name, then value length, then value, all descending.
    shared.sort_by(|a, b| {
        b.0.cmp(a.0)
            .then(b.1.len().cmp(&a.1.len()))
            .then(b.1.cmp(a.1))
    });
    let mut offsets: HashMap<(&[u8], &[u8]), u64> = HashMap::with_capacity(shared.len());
    let mut off = 0;
    for kv in &shared {
        offsets.insert(*kv, off);
        off += entry_size(kv.0, kv.1);
    }
    let plans: Vec<Vec<Option<u64>>> = nodes
        .iter()
        .map(|n| {
            let mut used = 0;
            n.xattrs
                .iter()
                .map(|(k, v)| match offsets.get(&(k.as_slice(), v.as_slice())) {
                    Some(o) if used < format::XATTR_LONG_PREFIX => {
                        used += 1;
                        Some(*o)
                    }
                    _ => None,
                })
                .collect()
        })
        .collect();
    let table: Xattrs = shared
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    drop(offsets);
    drop(counts);
    for (n, p) in nodes.iter_mut().zip(plans) {
        n.shared = p;
    }
    table
}

/// Block count and inline tail of a node (`compute_erofs_inode_size`).
fn compute_sizes(n: &mut Node) {
    let (blocks, tail) = match n.data {
        Data::Dir => {
            let (full, _, last) = split_dir(&n.children);
            if last > BLOCK_SIZE / 2 {
                (full.len() as u64 + 1, 0)
            } else {
                (full.len() as u64, last)
            }
        }
        Data::Symlink => (0, n.size),
        Data::Inline => {
            let (b, t) = (n.size / BLOCK_SIZE, n.size % BLOCK_SIZE);
            if t > BLOCK_SIZE / 2 {
                (b + 1, 0)
            } else {
                (b, t)
            }
        }
        Data::Chunked { count, .. } => (0, count * 4),
        Data::None => (0, 0),
    };
    n.n_blocks = blocks;
    n.tail = tail;
}

/// Padding before an inode so its tail does not cross a block
/// (`compute_erofs_inode_padding_for_tail`); may move the tail to a block.
fn padding_for_tail(n: &mut Node, pos: u64, inode_size: u64) -> u64 {
    let non_tail = inode_size + n.xattr_size;
    let total = non_tail + n.tail;
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
    if remainder < n.tail {
        let extra = remainder.next_multiple_of(SLOT_SIZE);
        let remainder = BLOCK_SIZE - (pos + non_tail + extra) % BLOCK_SIZE;
        if n.tail <= remainder {
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
