//! Using a tree the way the views do: walked through [`Tree`], names
//! looked up, written as a dumpfile and an EROFS image.

use std::io;

use anyhow::{Result, bail};

use crate::dumpfile;
use crate::erofs::writer::{FormatVersion, image_to_vec};
use crate::tree::{Kind, Tree};

/// Use a tree the way the views do: walk it through [`Tree`] (at most
/// `limit` names), look names up, and write it as a dumpfile and an EROFS
/// image.
pub(super) fn consume_tree(tree: &dyn Tree, limit: u64) {
    let _ = walk_tree(tree, limit);
    let _ = dumpfile::write(tree, &mut io::sink());
    let _ = image_to_vec(tree, FormatVersion::V1);
}

/// Walk every directory reachable from the root, as a careless consumer
/// would (no visited set: the tree must prevent loops), loading every
/// inode and looking a few names up; stop after `limit` names. Returns the
/// number of names seen.
pub(super) fn walk_tree(tree: &dyn Tree, limit: u64) -> Result<u64> {
    let mut seen = 0u64;
    let root = tree.root();
    tree.inode(root)?;
    let _ = tree.nlink(root)?;
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let entries = tree.readdir(d)?;
        for (i, e) in entries.iter().enumerate() {
            seen += 1;
            if seen > limit {
                bail!("more than {limit} names");
            }
            let inode = tree.inode(e.ino)?;
            let _ = tree.nlink(e.ino)?;
            if let Kind::Regular(data) = &inode.kind {
                let _ = data.size();
            }
            if i < 4 {
                let found = tree.lookup(d, &e.name)?;
                assert_eq!(found, Some(e.ino), "lookup of a listed name");
            }
            if inode.kind.is_dir() {
                stack.push(e.ino);
            }
        }
        let _ = tree.lookup(d, b"\xffno such name")?;
    }
    let _ = tree.resolve_path(b"/a/../b/./c/");
    Ok(seen)
}
