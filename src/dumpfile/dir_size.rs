//! The size C `mkcomposefs` gives a directory in a composefs EROFS image,
//! which `composefs-info dump` prints as its SIZE.

use crate::tree::{DirEntry, Ino};

/// The EROFS directory size the C writer computes (`compute_erofs_dir_size`
/// in `libcomposefs/lcfs-writer-erofs.c`): the entries `.`, `..` and the
/// children (for the root also the 256 whiteouts `00`..`ff` that format
/// versions 0 and 1 add, unless a child has that name), sorted by name, each
/// taking 12 bytes plus its name, packed into 4096-byte blocks; a last block
/// of more than 2048 bytes is stored as a full block, a smaller one inline.
/// (The C writer can also push an inline tail out into a block when the
/// inode's own metadata is larger than a block, i.e. with kilobytes of
/// inline xattrs; that layout-dependent case is not modelled.)
pub fn erofs_dir_size(entries: &[DirEntry], is_root: bool) -> u64 {
    const BLK: usize = 4096;
    const DIRENT: usize = 12;
    let mut names: Vec<&[u8]> = Vec::with_capacity(entries.len() + 2);
    names.push(b".");
    names.push(b"..");
    names.extend(entries.iter().map(|e| e.name.as_slice()));
    let mut hex = Vec::new();
    if is_root {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for i in 0..256usize {
            let n = [HEX[i >> 4], HEX[i & 15]];
            if tree_lookup(entries, &n).is_none() {
                hex.push(n);
            }
        }
    }
    names.extend(hex.iter().map(|n| &n[..]));
    names.sort_unstable();
    let (mut blocks, mut used) = (0u64, 0usize);
    for n in names {
        let len = DIRENT + n.len();
        if used + len > BLK {
            blocks += 1;
            used = 0;
        }
        used += len;
    }
    if used > BLK / 2 {
        blocks += 1;
        used = 0;
    }
    blocks * BLK as u64 + used as u64
}

pub(super) fn tree_lookup(entries: &[DirEntry], name: &[u8]) -> Option<Ino> {
    entries
        .binary_search_by(|e| e.name.as_slice().cmp(name))
        .ok()
        .map(|i| entries[i].ino)
}
