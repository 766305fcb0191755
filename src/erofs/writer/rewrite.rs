//! One tree inode made an image [`Node`]: what the format cannot hold is
//! refused, and the per-inode part of the overlayfs rewrite is applied
//! (escaped `trusted.overlay.*` xattrs, whiteouts as empty files); also
//! the root's whiteout stubs and the markers of a directory holding
//! whiteouts.

use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::node::{Data, Node, Role};
use super::xattrs::{XattrSets, Xattrs, set_xattr};
use crate::erofs::format::{self, overlay};
use crate::show::short_path;
use crate::tree::{FileData, Inode, Kind};

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
pub(super) fn make_node(
    inode: Arc<Inode>,
    parent: usize,
    nlink: u64,
    sets: &mut XattrSets,
) -> Result<Node> {
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
    let parent = u32::try_from(parent).context("too many inodes")?;
    Ok(Node::unplaced(
        inode,
        parent,
        nlink as u32,
        sets.intern(xattrs)?,
        role,
        data,
    ))
}

pub(super) fn whiteout_stub(root: &Node, sets: &mut XattrSets) -> Result<Node> {
    let mut xattrs = Vec::new();
    if let Some((_, v)) = sets.sets[root.xattrs as usize]
        .iter()
        .find(|(k, _)| k == b"security.selinux")
    {
        xattrs.push((b"security.selinux".to_vec(), v.clone()));
    }
    Ok(Node::unplaced(
        root.src.clone(),
        0,
        1,
        sets.intern(xattrs)?,
        Role::Stub,
        Data::None,
    ))
}

/// Mark a directory as containing whiteouts.
pub(super) fn mark_whiteout_dir(dir: &mut Node, version: u32, sets: &mut XattrSets) -> Result<()> {
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
