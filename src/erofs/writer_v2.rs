//! composefs-rs's legacy EROFS format, version 2 (`cfsctl --erofs-version 2`),
//! byte for byte as composefs-rs 0.9.4 writes it.
//!
//! How it differs from the C-compatible versions 0 and 1 ([`super::writer`]):
//!
//! - header `composefs_version` 2, flags 0; superblock `build_time` 0 and
//!   `xattr_blkaddr` 0 (shared xattrs are addressed from the image start);
//! - every inode is extended (64 bytes), `i_ino` is its nid, `mtime_nsec` 0;
//! - inodes in depth-first order (a directory, then each entry's subtree in
//!   name order); a hardlinked file sits at its first name in that order;
//! - no whiteout stubs, no `opaque` on the root, whiteouts (0:0 character
//!   devices) stored as they are; `trusted.overlay.*` xattrs are escaped
//!   to `trusted.overlay.overlay.*` as in C;
//! - an external file's xattrs are the metacopy, then the redirect, then
//!   its own (in name order), not sorted; those used by more than one inode
//!   are shared, the table ordered by (prefix index, suffix, value), with
//!   `lustre.` a prefix of its own;
//! - an external file is chunk-based with chunk format 31 and one null
//!   chunk index inline (none for a file without digest); inline files and
//!   symlinks are wholly inline; a directory keeps at most 2048 bytes of
//!   entries inline, the rest in blocks;
//! - an inline tail that would end in another block than the inode's
//!   metadata is preceded by `4096 - (end of metadata % 4096)` zero bytes
//!   (then slot alignment): composefs-rs's rule, reproduced as it is.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::format::{
    self, BLOCK_SIZE, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC, ComposefsHeader, Dirent,
    EROFS_MAGIC, ExtendedInode, FEATURE_COMPAT_MTIME, FEATURE_COMPAT_XATTR_FILTER, INODES_START,
    LAYOUT_CHUNK_BASED, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, SLOT_SIZE, Superblock,
    XattrEntryHeader, XattrIbodyHeader, overlay,
};
use crate::tree::{FileData, Ino, Inode, Kind, Tree, check_name};

/// The header's `composefs_version` for this format.
pub const COMPOSEFS_VERSION_V2: u32 = 2;

/// Inline directory entries beyond this many bytes go to a block.
const DIR_INLINE_MAX: u64 = 2048;

/// The prefixes in composefs-rs's table (index = position), `lustre.` included.
const PREFIXES: [&[u8]; 7] = [
    b"",
    b"user.",
    b"system.posix_acl_access",
    b"system.posix_acl_default",
    b"trusted.",
    b"lustre.",
    b"security.",
];

/// One stored xattr; ordered as composefs-rs orders the shared table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Xattr {
    prefix: u8,
    suffix: Vec<u8>,
    value: Vec<u8>,
}

impl Xattr {
    fn new(name: &[u8], value: &[u8]) -> Self {
        let (prefix, suffix) = PREFIXES
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, p)| name.strip_prefix(*p).map(|s| (i as u8, s)))
            .unwrap_or((0, name));
        Xattr {
            prefix,
            suffix: suffix.to_vec(),
            value: value.to_vec(),
        }
    }

    fn entry_size(&self) -> u64 {
        format::round_up(
            (XattrEntryHeader::SIZE + self.suffix.len() + self.value.len()) as u64,
            4,
        )
        .unwrap_or(u64::MAX)
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let name_len = u8::try_from(self.suffix.len()).context("xattr name too long")?;
        let value_size = u16::try_from(self.value.len()).context("xattr value too long")?;
        out.extend_from_slice(
            &XattrEntryHeader {
                name_len,
                name_index: self.prefix,
                value_size,
            }
            .encode(),
        );
        out.extend_from_slice(&self.suffix);
        out.extend_from_slice(&self.value);
        let len = XattrEntryHeader::SIZE + self.suffix.len() + self.value.len();
        out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
        Ok(())
    }
}

/// An inode's xattrs: shared-table indices and local entries, in order.
#[derive(Default)]
struct Xattrs {
    filter: u32,
    shared: Vec<usize>,
    local: Vec<Xattr>,
}

impl Xattrs {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        let x = Xattr::new(name, value);
        self.filter |= format::xattr_filter_bit(x.prefix, &x.suffix);
        self.local.push(x);
    }

    /// Bytes in the inode: 0 without xattrs.
    fn size(&self) -> u64 {
        if self.filter == 0 {
            return 0;
        }
        XattrIbodyHeader::SIZE as u64
            + 4 * self.shared.len() as u64
            + self.local.iter().map(Xattr::entry_size).sum::<u64>()
    }
}

/// A directory entry as stored: name, inode index, file type.
struct Entry {
    name: Vec<u8>,
    node: usize,
    file_type: u8,
}

enum Body {
    /// Entries split as composefs-rs splits them: full blocks, then the inline rest.
    Dir {
        blocks: Vec<Vec<Entry>>,
        inline: Vec<Entry>,
        size: u64,
        nlink: u32,
    },
    Leaf,
}

struct Node {
    inode: Arc<Inode>,
    body: Body,
    /// Names of a non-directory.
    names: u32,
    xattrs: Xattrs,
}

impl Node {
    fn file_type(&self) -> u8 {
        match &self.inode.kind {
            Kind::Directory => format::FT_DIR,
            Kind::Regular(_) => format::FT_REG_FILE,
            Kind::Symlink(_) => format::FT_SYMLINK,
            Kind::CharDevice { .. } => format::FT_CHRDEV,
            Kind::BlockDevice { .. } => format::FT_BLKDEV,
            Kind::Fifo => format::FT_FIFO,
            Kind::Socket => format::FT_SOCK,
        }
    }

    /// (layout, bytes stored inline after the xattrs, `i_size`).
    fn shape(&self) -> (u16, u64, u64) {
        match (&self.body, &self.inode.kind) {
            (Body::Dir { inline, size, .. }, _) => {
                let layout = if inline.is_empty() {
                    LAYOUT_FLAT_PLAIN
                } else {
                    LAYOUT_FLAT_INLINE
                };
                (layout, dirents_size(inline), *size)
            }
            (_, Kind::Regular(FileData::Inline(d))) if d.is_empty() => (LAYOUT_FLAT_PLAIN, 0, 0),
            (_, Kind::Regular(FileData::Inline(d))) => {
                (LAYOUT_FLAT_INLINE, d.len() as u64, d.len() as u64)
            }
            (_, Kind::Regular(FileData::External { size, digest, .. })) => (
                LAYOUT_CHUNK_BASED,
                if digest.is_some() { 4 } else { 0 },
                *size,
            ),
            (_, Kind::Symlink(t)) => (LAYOUT_FLAT_INLINE, t.len() as u64, t.len() as u64),
            _ => (LAYOUT_FLAT_PLAIN, 0, 0),
        }
    }
}

fn dirents_size(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| (Dirent::SIZE + e.name.len()) as u64)
        .sum()
}

/// Split a directory's sorted entries into blocks and an inline tail.
fn split_entries(entries: Vec<Entry>) -> Body {
    let mut blocks = Vec::new();
    let mut rest = Vec::new();
    let mut bytes = 0u64;
    let mut nlink = 0u32;
    for e in entries {
        let n = (Dirent::SIZE + e.name.len()) as u64;
        if e.file_type == format::FT_DIR {
            nlink += 1;
        }
        bytes += n;
        if bytes <= BLOCK_SIZE {
            rest.push(e);
        } else {
            blocks.push(std::mem::take(&mut rest));
            rest.push(e);
            bytes = n;
        }
    }
    if bytes > DIR_INLINE_MAX {
        blocks.push(std::mem::take(&mut rest));
        bytes = 0;
    }
    let size = BLOCK_SIZE * blocks.len() as u64 + bytes;
    Body::Dir {
        blocks,
        inline: rest,
        size,
        nlink,
    }
}

/// The inodes in depth-first order, with their directory entries.
fn collect(tree: &dyn Tree) -> Result<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut seen: HashMap<Ino, usize> = HashMap::new();
    let new_node = |inode: Arc<Inode>| Node {
        inode,
        body: Body::Leaf,
        names: 1,
        xattrs: Xattrs::default(),
    };
    struct Frame {
        me: usize,
        parent: usize,
        listing: Arc<[crate::tree::DirEntry]>,
        pos: usize,
        entries: Vec<Entry>,
    }
    let root = tree.root();
    let root_inode = tree.inode(root)?;
    if !root_inode.kind.is_dir() {
        bail!("the root is not a directory");
    }
    nodes.push(new_node(root_inode));
    let mut stack = vec![Frame {
        me: 0,
        parent: 0,
        listing: tree.readdir(root)?,
        pos: 0,
        entries: Vec::new(),
    }];
    while let Some(top) = stack.last_mut() {
        if top.pos == top.listing.len() {
            let f = stack.pop().expect("a frame");
            let mut entries = f.entries;
            entries.push(Entry {
                name: b".".to_vec(),
                node: f.me,
                file_type: format::FT_DIR,
            });
            entries.push(Entry {
                name: b"..".to_vec(),
                node: f.parent,
                file_type: format::FT_DIR,
            });
            entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            nodes[f.me].body = split_entries(entries);
            continue;
        }
        let e = &top.listing[top.pos];
        top.pos += 1;
        check_name(&e.name)?;
        let me = top.me;
        let inode = tree.inode(e.ino)?;
        let (node, descend) = if inode.kind.is_dir() {
            nodes.push(new_node(inode));
            (nodes.len() - 1, true)
        } else if let Some(&n) = seen.get(&e.ino) {
            nodes[n].names += 1;
            (n, false)
        } else {
            nodes.push(new_node(inode));
            seen.insert(e.ino, nodes.len() - 1);
            (nodes.len() - 1, false)
        };
        let file_type = nodes[node].file_type();
        let name = e.name.clone();
        let child_ino = e.ino;
        let top = stack.last_mut().expect("a frame");
        top.entries.push(Entry {
            name,
            node,
            file_type,
        });
        if descend {
            stack.push(Frame {
                me: node,
                parent: me,
                listing: tree.readdir(child_ino)?,
                pos: 0,
                entries: Vec::new(),
            });
        }
    }
    Ok(nodes)
}

/// Every inode's xattrs (derived ones first), then the shared table.
fn xattrs(nodes: &mut [Node]) -> Vec<Xattr> {
    for n in nodes.iter_mut() {
        let mut x = Xattrs::default();
        if let Kind::Regular(FileData::External {
            redirect, digest, ..
        }) = &n.inode.kind
        {
            match digest {
                Some(id) => x.add(
                    overlay::METACOPY,
                    &format::metacopy_value(id.algorithm().kernel_id(), id.as_bytes()),
                ),
                None => x.add(overlay::METACOPY, b""),
            }
            let path = match (redirect.as_deref().filter(|r| !r.is_empty()), digest) {
                (Some(r), _) => Some(r.to_vec()),
                (None, Some(id)) => Some(id.object_path().into_bytes()),
                (None, None) => None,
            };
            if let Some(p) = path {
                x.add(overlay::REDIRECT, &[b"/", p.as_slice()].concat());
            }
        }
        for (name, value) in &n.inode.xattrs {
            match name.strip_prefix(overlay::PREFIX) {
                Some(rest) => x.add(&[overlay::ESCAPED_PREFIX, rest].concat(), value),
                None => x.add(name, value),
            }
        }
        n.xattrs = x;
    }
    let mut counts: BTreeMap<&Xattr, usize> = BTreeMap::new();
    for n in nodes.iter() {
        for x in &n.xattrs.local {
            *counts.entry(x).or_default() += 1;
        }
    }
    let table: Vec<Xattr> = counts
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(x, _)| x.clone())
        .collect();
    for n in nodes.iter_mut() {
        let local = std::mem::take(&mut n.xattrs.local);
        for x in local {
            match table.binary_search(&x) {
                Ok(i) => n.xattrs.shared.push(i),
                Err(_) => n.xattrs.local.push(x),
            }
        }
    }
    table
}

/// Where everything goes.
struct Layout {
    /// Byte offset of each inode.
    inode_at: Vec<u64>,
    /// Byte offset of each shared xattr.
    xattr_at: Vec<u64>,
    /// Byte offset of each inode's blocks.
    block_at: Vec<u64>,
    end: u64,
}

fn up(x: u64, a: u64) -> u64 {
    x.next_multiple_of(a)
}

/// Padding before an inline tail: composefs-rs's rule (see the module doc).
fn inline_pad(pos: u64, meta: u64, size: u64) -> u64 {
    let inline_start = pos + meta;
    let end_of_meta = inline_start - 1;
    let inline_end = inline_start + size % BLOCK_SIZE;
    if end_of_meta / BLOCK_SIZE != inline_end / BLOCK_SIZE {
        up(pos + (BLOCK_SIZE - end_of_meta % BLOCK_SIZE), SLOT_SIZE)
    } else {
        pos
    }
}

fn layout(nodes: &[Node], table: &[Xattr]) -> Layout {
    let mut pos = INODES_START;
    let mut inode_at = Vec::with_capacity(nodes.len());
    for n in nodes {
        pos = up(pos, SLOT_SIZE);
        let (lay, inline, size) = n.shape();
        let meta = ExtendedInode::SIZE as u64 + n.xattrs.size();
        if lay == LAYOUT_FLAT_INLINE {
            pos = inline_pad(pos, meta, size);
        }
        inode_at.push(pos);
        pos = up(pos + meta + inline, SLOT_SIZE);
    }
    pos = up(pos, SLOT_SIZE);
    let mut xattr_at = Vec::with_capacity(table.len());
    for x in table {
        xattr_at.push(pos);
        pos += x.entry_size();
    }
    pos = up(pos, BLOCK_SIZE);
    let mut block_at = Vec::with_capacity(nodes.len());
    for n in nodes {
        block_at.push(pos);
        if let Body::Dir { blocks, .. } = &n.body {
            pos += BLOCK_SIZE * blocks.len() as u64;
        }
    }
    Layout {
        inode_at,
        xattr_at,
        block_at,
        end: pos,
    }
}

/// Directory entries as a block's bytes (headers, then names).
fn encode_dirents(entries: &[Entry], l: &Layout, out: &mut Vec<u8>) -> Result<()> {
    let mut nameoff = (Dirent::SIZE * entries.len()) as u64;
    for e in entries {
        out.extend_from_slice(
            &Dirent {
                nid: l.inode_at[e.node] / SLOT_SIZE,
                nameoff: u16::try_from(nameoff).context("directory block too large")?,
                file_type: e.file_type,
                reserved: 0,
            }
            .encode(),
        );
        nameoff += e.name.len() as u64;
    }
    for e in entries {
        out.extend_from_slice(&e.name);
    }
    Ok(())
}

/// Counts the bytes written.
struct Out<W: Write> {
    w: BufWriter<W>,
    pos: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).context("cannot write the image")?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn zeros_to(&mut self, at: u64) -> Result<()> {
        if at < self.pos {
            bail!(
                "internal error: image layout went backwards ({} > {at})",
                self.pos
            );
        }
        const Z: [u8; 4096] = [0; 4096];
        while self.pos < at {
            let n = (at - self.pos).min(Z.len() as u64) as usize;
            self.put(&Z[..n])?;
        }
        Ok(())
    }
}

fn write_inode(
    n: &Node,
    idx: usize,
    l: &Layout,
    table_at: &[u64],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let (lay, _, size) = n.shape();
    let at = l.inode_at[idx];
    let blkaddr = u32::try_from(l.block_at[idx] / BLOCK_SIZE).context("image too large")?;
    let u = match (&n.body, &n.inode.kind) {
        // A directory wholly inline has no block address.
        (Body::Dir { inline, blocks, .. }, _) if !inline.is_empty() && blocks.is_empty() => 0,
        (Body::Dir { .. }, _) => blkaddr,
        (_, Kind::Regular(FileData::External { .. })) => 31,
        (_, Kind::CharDevice { rdev } | Kind::BlockDevice { rdev }) => {
            u32::try_from(*rdev).context("device number too large for EROFS")?
        }
        _ => 0,
    };
    let nlink = match &n.body {
        Body::Dir { nlink, .. } => *nlink,
        Body::Leaf => n.names,
    };
    let xsize = n.xattrs.size();
    let icount = if xsize == 0 {
        0
    } else {
        u16::try_from(1 + (xsize - XattrIbodyHeader::SIZE as u64) / 4).context("too many xattrs")?
    };
    let st = &n.inode.stat;
    buf.extend_from_slice(
        &ExtendedInode {
            format: format::inode_format(true, lay),
            xattr_icount: icount,
            mode: (n.inode.st_mode() & 0xffff) as u16,
            size,
            u,
            ino: u32::try_from(at / SLOT_SIZE).context("image too large")?,
            uid: st.uid,
            gid: st.gid,
            mtime: st.mtime.sec as u64,
            mtime_nsec: 0,
            nlink,
            ..Default::default()
        }
        .encode(),
    );
    if xsize > 0 {
        buf.extend_from_slice(
            &XattrIbodyHeader {
                name_filter: !n.xattrs.filter,
                shared_count: u8::try_from(n.xattrs.shared.len())
                    .context("more than 255 shared xattrs on one inode")?,
                reserved: [0; 7],
            }
            .encode(),
        );
        for &i in &n.xattrs.shared {
            let r = u32::try_from(table_at[i] / 4).context("image too large")?;
            buf.extend_from_slice(&r.to_le_bytes());
        }
        for x in &n.xattrs.local {
            x.encode(buf)?;
        }
    }
    match (&n.body, &n.inode.kind) {
        (Body::Dir { inline, .. }, _) => encode_dirents(inline, l, buf)?,
        (_, Kind::Regular(FileData::Inline(d))) => buf.extend_from_slice(d),
        (
            _,
            Kind::Regular(FileData::External {
                digest: Some(_), ..
            }),
        ) => buf.extend_from_slice(&format::NULL_ADDR.to_le_bytes()),
        (_, Kind::Symlink(t)) => buf.extend_from_slice(t),
        _ => {}
    }
    Ok(())
}

/// Write `tree` as a version-2 image; returns its size.
pub fn write_image(tree: &dyn Tree, out: &mut impl Write) -> Result<u64> {
    let mut nodes = collect(tree)?;
    let table = xattrs(&mut nodes);
    let l = layout(&nodes, &table);
    let root_nid = u16::try_from(l.inode_at[0] / SLOT_SIZE).context("root inode too far")?;
    let mut o = Out {
        w: BufWriter::with_capacity(1 << 16, out),
        pos: 0,
    };
    o.put(
        &ComposefsHeader {
            magic: COMPOSEFS_MAGIC,
            version: COMPOSEFS_HEADER_VERSION,
            flags: 0,
            composefs_version: COMPOSEFS_VERSION_V2,
            unused: [0; 4],
        }
        .encode(),
    )?;
    o.zeros_to(format::SUPER_OFFSET)?;
    o.put(
        &Superblock {
            magic: EROFS_MAGIC,
            feature_compat: FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER,
            blkszbits: format::BLOCK_BITS,
            root_nid,
            inos: nodes.len() as u64,
            blocks: u32::try_from(l.end / BLOCK_SIZE).context("image too large")?,
            ..Default::default()
        }
        .encode(),
    )?;
    let mut buf = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        o.zeros_to(l.inode_at[i])?;
        buf.clear();
        write_inode(n, i, &l, &l.xattr_at, &mut buf)?;
        o.put(&buf)?;
    }
    for (x, &at) in table.iter().zip(&l.xattr_at) {
        o.zeros_to(at)?;
        buf.clear();
        x.encode(&mut buf)?;
        o.put(&buf)?;
    }
    for (i, n) in nodes.iter().enumerate() {
        if let Body::Dir { blocks, .. } = &n.body {
            let mut at = l.block_at[i];
            for b in blocks {
                o.zeros_to(at)?;
                buf.clear();
                encode_dirents(b, &l, &mut buf)?;
                o.put(&buf)?;
                at += BLOCK_SIZE;
            }
        }
    }
    o.zeros_to(l.end)?;
    o.w.flush().context("cannot write the image")?;
    Ok(o.pos)
}
