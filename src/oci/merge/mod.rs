//! Merging an image's layers: stored tar splitstreams → one filesystem tree.
//!
//! [`merge`] walks each layer's splitstream (as [`crate::tarsplit`] wrote
//! it: headers, PAX and GNU long-name records and padding inline, a large
//! regular file's content as one object) and applies the layers in order,
//! lowest first, with the OCI image-spec "Applying Changesets" semantics
//! that umoci and containers/storage implement. File content is never read:
//! a file stored as an object becomes [`crate::tree::FileData::object`], a
//! small one keeps its inline bytes.
//!
//! Tar: ustar (name with prefix), GNU (long names `L`, long links `K`,
//! base-256 numbers) and PAX (`path`, `linkpath`, `size`, `uid`, `gid`,
//! `mtime` with fractions, `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`,
//! `SCHILY.devmajor`/`devminor`; global headers ignored). Entry types:
//! regular (`0`, NUL, `7`), hardlink, symlink, character and block devices,
//! directory, fifo; anything else (sparse files included) is refused.
//!
//! Layers:
//! - Paths lose a leading `./` or `/`; `.` and `..` are resolved
//!   lexically, and a `..` that would leave the root is an error. The empty
//!   path (`./`) is the root: a directory entry there sets its metadata.
//!   Missing parents are created (mode 0755, owner 0:0, mtime 0); a parent
//!   that is not a directory (symlinks are never followed) is an error.
//!   Names must pass [`crate::tree::check_name`]; paths are at most
//!   [`MAX_ENTRY_PATH`].
//! - `.wh.NAME` removes `NAME`, and `.wh..wh..opq` everything in its
//!   directory, as lower layers left it: what the same layer puts there,
//!   before or after the marker, stays (whiteouts apply to lower layers
//!   only). Whiteouts never appear in the result; a whiteout of a name that
//!   does not exist is no error. Other `.wh..wh.*` names (aufs metadata)
//!   are skipped, with everything under them; any other `.wh.` name used
//!   as a directory is an error.
//! - A non-directory replaces whatever was at its path (a directory with
//!   its whole subtree); a directory over a directory replaces only its
//!   metadata and keeps the children; a directory over anything else
//!   replaces it.
//! - A hardlink names an existing non-directory of the merged tree so far
//!   (this layer or a lower one); both names then share one inode. A later
//!   entry replacing one of the names leaves the other with the old inode.
//!
//! The result is compacted: only inodes reachable from the root remain,
//! numbered from 0 (the root).
//!
//! The work is split by job: `tar_stream` reads a splitstream's tar
//! bytes, `pax` parses extended headers, `members` turns a layer's members
//! into entries, `merged_tree` holds the tree being built (with its memory
//! bounds) and builds the result, and `changeset` applies one entry to it
//! by the rules above (replacement, hardlinks, whiteouts).
//!
//! Layers described another way (a zstd:chunked or eStargz table of
//! contents, [`crate::oci::lazy`]) go through the same rules and bounds:
//! [`EntryMerge`] takes their entries one by one.

mod changeset;
mod members;
mod merged_tree;
mod pax;
mod tar_stream;

use anyhow::{Context, Result};

use anyhow::bail;

use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::show::display_bytes;
use crate::tree::{Inode, Kind, MAX_SYMLINK_TARGET, MAX_XATTR_NAME, MAX_XATTR_VALUE, MemTree};
use merged_tree::Merger;

/// PAX, global PAX and GNU long-name/long-link records are read into
/// memory; larger ones are refused (as [`crate::tarsplit`] does).
pub const MAX_META_RECORD: u64 = 16 << 20;
/// Longest path (after normalisation) an entry may have: 1 MiB (a path
/// 500,000 directories deep), far beyond `PATH_MAX`, which does not apply
/// to an image: the kernel and FUSE walk it one name at a time. Bounds the
/// work per entry (it is linear in the path's length).
pub const MAX_ENTRY_PATH: usize = 1 << 20;
/// Inodes the merge may create over all layers (replaced ones included):
/// bounds memory for a hostile stream (every entry can create thousands of
/// implicit parent directories).
pub const MAX_INODES: usize = 16 << 20;
/// Memory the merged tree may take, roughly (inodes, names, xattrs, small
/// contents; what a replaced entry took is not given back). A root
/// filesystem of 100,000 files needs about 30 MiB, a directory of
/// 1,000,000 alike empty files about 80 MiB; without this bound a
/// hostile stream of deep paths could ask for gigabytes within
/// [`MAX_INODES`].
pub const MAX_TREE_BYTES: usize = 1 << 30;

/// Merge the layers `layers` (object ids of stored tar splitstreams, lowest
/// layer first) into one tree. Reads only the streams, never file objects.
/// Errors name the layer (`layer I of N`, counting from 1) and the entry.
pub fn merge(repo: &Repository, layers: &[ObjectId]) -> Result<MemTree> {
    apply_layers(repo, layers)?.build()
}

fn apply_layers(repo: &Repository, layers: &[ObjectId]) -> Result<Merger> {
    let mut m = Merger::new();
    for (i, id) in layers.iter().enumerate() {
        let what = || format!("layer {} of {} ({id})", i + 1, layers.len());
        let stream = repo.open_stream_object(id).with_context(what)?;
        members::for_each_member(stream, |path, entry| m.apply(path, entry, i))
            .with_context(what)?;
    }
    Ok(m)
}

/// Layers merged from entries given one at a time, lowest layer first
/// (each layer's in its archive order), by the rules of [`merge`]: for
/// sources that list a layer's entries without a tar stream.
pub struct EntryMerge {
    m: Merger,
}

impl Default for EntryMerge {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryMerge {
    pub fn new() -> Self {
        EntryMerge { m: Merger::new() }
    }

    /// Layer `layer`'s (from 0) entry at `path` (as an archive names it:
    /// `./a/b`, `a/b/`): a new inode, checked as a tar member's would be
    /// (symlink target, xattrs sorted, unique and within the image's
    /// limits). Whiteouts are entries too (`.wh.NAME`, `.wh..wh..opq`).
    pub fn inode(&mut self, layer: usize, path: &[u8], inode: Inode) -> Result<()> {
        if let Kind::Symlink(t) = &inode.kind {
            check_symlink_target(t)?;
        }
        for (i, (name, value)) in inode.xattrs.iter().enumerate() {
            check_xattr(name, value)?;
            if i > 0 && inode.xattrs[i - 1].0 >= *name {
                bail!("xattrs not sorted by name, or one named twice");
            }
        }
        self.m.apply(path, EntryKind::Inode(inode), layer)
    }

    /// Layer `layer`'s hardlink at `path` to `target`, a non-directory
    /// of the tree merged so far.
    pub fn hardlink(&mut self, layer: usize, path: &[u8], target: &[u8]) -> Result<()> {
        if target.is_empty() {
            bail!("hardlink without a target");
        }
        self.m
            .apply(path, EntryKind::Hardlink(target.to_vec()), layer)
    }

    /// The merged tree (only what the root reaches).
    pub fn build(self) -> Result<MemTree> {
        self.m.build()
    }
}

/// A symlink target a tree may hold: 1 to [`MAX_SYMLINK_TARGET`] bytes,
/// no NUL.
pub(crate) fn check_symlink_target(link: &[u8]) -> Result<()> {
    if link.is_empty() || link.len() > MAX_SYMLINK_TARGET {
        bail!(
            "symlink target of {} bytes (must be 1 to {MAX_SYMLINK_TARGET})",
            link.len()
        );
    }
    if link.contains(&0) {
        bail!("symlink target contains NUL");
    }
    Ok(())
}

/// An xattr a composefs image can hold: a name of 1 to
/// [`MAX_XATTR_NAME`] bytes without NUL, a value of at most
/// [`MAX_XATTR_VALUE`].
pub(crate) fn check_xattr(name: &[u8], value: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
        bail!(
            "bad xattr name {:?} (empty, longer than {MAX_XATTR_NAME} bytes or with NUL)",
            display_bytes(name)
        );
    }
    if value.len() > MAX_XATTR_VALUE {
        bail!(
            "xattr {} has {} bytes, more than a composefs image can hold ({MAX_XATTR_VALUE})",
            display_bytes(name),
            value.len()
        );
    }
    Ok(())
}

/// What one archive member makes at its path.
#[derive(Debug)]
enum EntryKind {
    /// A new inode.
    Inode(Inode),
    /// Another name for the inode at this path.
    Hardlink(Vec<u8>),
}
