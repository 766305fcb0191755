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

mod changeset;
mod members;
mod merged_tree;
mod pax;
mod tar_stream;

use anyhow::{Context, Result};

use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::tree::{Inode, MemTree};
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

/// What one archive member makes at its path.
#[derive(Debug)]
enum EntryKind {
    /// A new inode.
    Inode(Inode),
    /// Another name for the inode at this path.
    Hardlink(Vec<u8>),
}
