//! The image's inodes as the writer plans them: [`Node`] (what each
//! is, where it goes), [`Child`] (a directory entry) and the special
//! entry names (`.`, `..`, the root's whiteout stubs), plus the path of
//! a node for messages.

use std::sync::Arc;

use crate::erofs::format;
use crate::show::short_path;
use crate::tree::{DirEntry, FileData, Inode, Kind, mode};

/// How a node's data is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Data {
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
pub(super) enum Role {
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
pub(super) struct Child {
    pub(super) name: u32,
    /// Node number; for a hardlink whose node is made later, 0 until
    /// [`super::order`] resolves it.
    pub(super) target: u32,
}

pub(super) const DOT: u32 = u32::MAX;
pub(super) const DOTDOT: u32 = u32::MAX - 1;
pub(super) const STUB: u32 = u32::MAX - 2;
/// Listing indexes below this are entries; above are the names above.
pub(super) const FIRST_SPECIAL: u32 = STUB - 255;

/// One inode of the image: about 72 bytes. Everything the tree's inode
/// already says (mode, owner, mtime, size, content) is read from `src`
/// when needed rather than copied, and xattrs are a shared set number.
pub(super) struct Node {
    pub(super) src: Arc<Inode>,
    pub(super) nid: u64,
    pub(super) n_blocks: u64,
    /// Directories: where their entries start in [`super::layout::Plan::children`].
    pub(super) first_child: u64,
    pub(super) parent: u32,
    pub(super) nlink: u32,
    /// The set of stored xattrs (besides the overlay metacopy and
    /// redirect of an external file, derived from `src` when needed).
    pub(super) xattrs: u32,
    pub(super) xattr_size: u32,
    /// Directories: their number of entries (`.` and `..` included) and
    /// their listing in [`super::layout::Plan::listings`].
    pub(super) n_children: u32,
    pub(super) listing: u32,
    pub(super) blkaddr: u32,
    pub(super) tail: u16,
    pub(super) ipad: u16,
    pub(super) role: Role,
    pub(super) data: Data,
    pub(super) compact: bool,
}

impl Node {
    /// A node not laid out yet: its place in the image (nid, blocks,
    /// listing, tail packing) is filled in by the layout.
    pub(super) fn unplaced(
        src: Arc<Inode>,
        parent: u32,
        nlink: u32,
        xattrs: u32,
        role: Role,
        data: Data,
    ) -> Node {
        Node {
            src,
            parent,
            nlink,
            xattrs,
            role,
            data,
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
        }
    }

    pub(super) fn mode(&self) -> u32 {
        let perms = self.src.stat.perms & mode::PERMS;
        match self.role {
            Role::Plain => self.src.kind.format() | perms,
            Role::Whiteout => mode::S_IFREG | perms,
            Role::Stub => mode::S_IFCHR | 0o644,
        }
    }

    pub(super) fn is_dir(&self) -> bool {
        self.data == Data::Dir
    }

    /// `st_size`: content length, symlink target length, 0 otherwise.
    pub(super) fn size(&self) -> u64 {
        match (self.role, &self.src.kind) {
            (Role::Plain, Kind::Regular(d)) => d.size(),
            (Role::Plain, Kind::Symlink(t)) => t.len() as u64,
            _ => 0,
        }
    }

    pub(super) fn rdev(&self) -> u32 {
        match (self.role, &self.src.kind) {
            // Checked to fit when the node was made.
            (Role::Plain, Kind::CharDevice { rdev } | Kind::BlockDevice { rdev }) => *rdev as u32,
            _ => 0,
        }
    }

    pub(super) fn file_type(&self) -> u8 {
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

    pub(super) fn inline_content(&self) -> &[u8] {
        match &self.src.kind {
            Kind::Regular(FileData::Inline(d)) if self.role == Role::Plain => d,
            _ => &[],
        }
    }

    pub(super) fn symlink_target(&self) -> &[u8] {
        match &self.src.kind {
            Kind::Symlink(t) if self.role == Role::Plain => t,
            _ => &[],
        }
    }

    /// The overlay metacopy and redirect values of an external file.
    pub(super) fn derived_xattrs(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The two-letter name of whiteout stub `b`.
pub(super) fn stub_name(b: u32) -> [u8; 2] {
    [HEX[(b >> 4) as usize & 15], HEX[b as usize & 15]]
}

/// A readable path for error messages (walks the parent links).
pub(super) fn path_in(
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
