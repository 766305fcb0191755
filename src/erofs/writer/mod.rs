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
//!
//! The modules, in the order the write goes:
//!
//! - `scan`: pass 1, reads the tree once depth first, checks names and
//!   finds hardlinks and whiteouts;
//! - `order`: pass 2 starts, the inodes in image order (step 2) with
//!   the root's whiteout stubs and the whiteout directories' markers;
//! - `rewrite`: one tree inode made an image `Node`, checked and
//!   rewritten for overlayfs (step 1);
//! - `node`: what a node is (the data the later steps share);
//! - `xattrs`: the distinct xattr sets nodes refer to by number;
//! - `shared_xattrs`: the shared xattr table (step 3);
//! - `layout`: the `Plan`, every inode's size and place (step 4);
//! - `write`: the bytes (step 5).

mod layout;
mod node;
mod order;
mod rewrite;
mod scan;
mod shared_xattrs;
mod write;
mod xattrs;

use std::io::Write;

use anyhow::Result;

use crate::tree::Tree;
use layout::Plan;
use scan::Scan;
use write::Out;

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
    let mut w = Out::new(out);
    plan.write(&mut w)?;
    let size = w.finish()?;
    Ok(ImageInfo {
        composefs_version: version,
        inodes: plan.nodes.len() as u64,
        size,
    })
}
