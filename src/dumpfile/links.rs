//! Hardlink lines, resolved once the whole dumpfile is read (a target may
//! come later, or be a hardlink itself): each one's name is linked to its
//! target's inode, and the inodes get the [`LinkHint`](crate::tree::LinkHint)s
//! that keep what the lines declared.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};

use crate::show::short_path;
use crate::tree::{Ino, MemTree, MemTreeBuilder};

/// What a `(directory, name)` read so far is.
pub(super) enum PathEntry {
    Inode(Ino),
    /// Index into the pending hardlinks.
    Link(usize),
}

/// A hardlink line, kept until the whole file is read.
pub(super) struct PendingLink {
    pub(super) line: usize,
    pub(super) parent: Ino,
    pub(super) name: Vec<u8>,
    /// Normalised target: components joined by `/`, no leading slash.
    pub(super) target: Vec<u8>,
    /// The hardlink's own path, shortened, for messages.
    pub(super) shown: String,
}

/// The names read so far, by `(directory, name)`.
pub(super) type Names = HashMap<(Ino, Vec<u8>), PathEntry>;

/// What the normalised path `target` (components joined by `/`) names,
/// and the directory holding that name: its parents must be
/// directories.
fn lookup<'n>(names: &'n Names, root: Ino, target: &[u8]) -> Option<(Ino, &'n PathEntry)> {
    let mut comps = target.split(|&c| c == b'/');
    let last = comps.next_back()?;
    let mut dir = root;
    for c in comps {
        match names.get(&(dir, c.to_vec()))? {
            PathEntry::Inode(ino) => dir = *ino,
            PathEntry::Link(_) => return None,
        }
    }
    names.get(&(dir, last.to_vec())).map(|e| (dir, e))
}

/// Link the name of every hardlink in `links` to its target's inode in
/// `b`, note where each hardlinked inode's own line put it and the NLINK
/// each non-directory declared (`declared_nlink`) where it differs from
/// its number of names, and build the tree.
pub(super) fn resolve(
    mut b: MemTreeBuilder,
    root: Ino,
    names: &Names,
    links: &[PendingLink],
    declared_nlink: HashMap<Ino, u32>,
) -> Result<MemTree> {
    // Inode → (its own line's directory and name, number of names).
    let mut linked: HashMap<Ino, (Ino, Vec<u8>, u32)> = HashMap::new();
    for l in links {
        let ctx = || format!("dumpfile line {}: hardlink {:?}", l.line, l.shown);
        let mut target = &l.target;
        let mut steps = 0;
        let (dir, ino) = loop {
            match lookup(names, root, target) {
                None => {
                    return Err(anyhow!("target {:?} does not exist", short_path(target)))
                        .with_context(ctx);
                }
                Some((dir, PathEntry::Inode(ino))) => break (dir, *ino),
                Some((_, PathEntry::Link(j))) => {
                    steps += 1;
                    if steps > links.len() {
                        return Err(anyhow!("hardlinks form a loop")).with_context(ctx);
                    }
                    target = &links[*j].target;
                }
            }
        };
        if b.get(ino).is_some_and(|i| i.kind.is_dir()) {
            return Err(anyhow!("target {:?} is a directory", short_path(target)))
                .with_context(ctx);
        }
        let own_name = target.rsplit(|&c| c == b'/').next().unwrap_or_default();
        linked
            .entry(ino)
            .or_insert_with(|| (dir, own_name.to_vec(), 1))
            .2 += 1;
        let (parent, name) = (l.parent, l.name.clone());
        b.link(parent, &name, ino).with_context(ctx)?;
    }
    // What the C tool writes differently from the names alone: a
    // hardlinked inode sits at its own line's name (not the first in
    // order), and every non-directory has the NLINK its line declares.
    for (ino, declared) in declared_nlink {
        let count = linked.get(&ino).map_or(1, |l| l.2);
        if declared != count {
            b.link_hint(ino).nlink = Some(declared);
        }
    }
    for (ino, (dir, name, _)) in linked {
        b.link_hint(ino).primary = Some((dir, name));
    }
    b.build(root)
}
