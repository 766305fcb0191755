//! The order of a line's xattrs: by name, or as `composefs-info dump`
//! prints an image the C `mkcomposefs` wrote (inline xattrs first, then
//! the shared ones), which needs the use counts of the whole tree.

use std::collections::HashMap;
use std::sync::Arc;

use crate::tree::Inode;

/// Order of the xattrs on a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrOrder {
    /// The order `composefs-info dump` prints for an image the C
    /// `mkcomposefs` built from this tree: the xattrs stored in the inode
    /// first, then the shared ones (used by more than one inode), each group
    /// sorted by stored name (`trusted.overlay.*` is stored escaped as
    /// `trusted.overlay.overlay.*`).
    Erofs,
    /// Sorted by name.
    ByName,
}

const TRUSTED_OVERLAY: &[u8] = b"trusted.overlay.";
const TRUSTED_OVERLAY_ESCAPED: &[u8] = b"trusted.overlay.overlay.";
/// `EROFS_XATTR_LONG_PREFIX`: at most this many shared xattrs per inode.
const MAX_SHARED_PER_INODE: usize = 0x80;

/// The name an xattr is stored under in a composefs image.
fn stored_xattr_name(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match name.strip_prefix(TRUSTED_OVERLAY) {
        Some(rest) => {
            let mut v = TRUSTED_OVERLAY_ESCAPED.to_vec();
            v.extend_from_slice(rest);
            v.into()
        }
        None => name.into(),
    }
}

pub(super) fn count_xattrs(uses: &mut HashMap<(Vec<u8>, Vec<u8>), u64>, inode: &Arc<Inode>) {
    for (k, v) in &inode.xattrs {
        *uses
            .entry((stored_xattr_name(k).into_owned(), v.clone()))
            .or_insert(0) += 1;
    }
}

/// What the C writer adds (stored names, empty values) to each whiteout
/// (a character device 0:0, written as a regular file) and to each
/// directory holding one: they are not in the tree (the reader hides them),
/// yet they make an equal xattr of the tree's shared.
pub(super) const WHITEOUT_MARKERS: [&[u8]; 2] = [
    b"trusted.overlay.overlay.whiteout",
    b"user.overlay.whiteout",
];
pub(super) const WHITEOUTS_DIR_MARKERS: [&[u8]; 2] = [
    b"trusted.overlay.overlay.whiteouts",
    b"user.overlay.whiteouts",
];

pub(super) fn count_whiteout_markers(uses: &mut HashMap<(Vec<u8>, Vec<u8>), u64>, names: &[&[u8]]) {
    for n in names {
        *uses.entry((n.to_vec(), Vec::new())).or_insert(0) += 1;
    }
}

pub(super) fn ordered_xattrs<'i>(
    inode: &'i Inode,
    order: XattrOrder,
    uses: &HashMap<(Vec<u8>, Vec<u8>), u64>,
) -> Vec<(&'i [u8], &'i [u8])> {
    // (stored name, name, value)
    type Entry<'i> = (std::borrow::Cow<'i, [u8]>, &'i [u8], &'i [u8]);
    let mut xs: Vec<Entry<'i>> = inode
        .xattrs
        .iter()
        .map(|(k, v)| (stored_xattr_name(k), k.as_slice(), v.as_slice()))
        .collect();
    match order {
        XattrOrder::ByName => {
            xs.sort_by(|a, b| a.1.cmp(b.1));
            xs.into_iter().map(|(_, k, v)| (k, v)).collect()
        }
        XattrOrder::Erofs => {
            xs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut inline = Vec::new();
            let mut shared = Vec::new();
            for (stored, k, v) in xs {
                let n = uses
                    .get(&(stored.into_owned(), v.to_vec()))
                    .copied()
                    .unwrap_or(1);
                if n > 1 && shared.len() < MAX_SHARED_PER_INODE {
                    shared.push((k, v));
                } else {
                    inline.push((k, v));
                }
            }
            inline.extend(shared);
            inline
        }
    }
}
