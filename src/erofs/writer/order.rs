//! Pass 2's first step: the image's inodes in order (step 2,
//! `lcfs_compute_tree`: breadth first from the root, each directory's
//! entries by name, `.`, `..` and the root's whiteout stubs included),
//! made into nodes with the overlayfs rewrite (`rewrite_tree_for_erofs`);
//! a hardlinked inode is placed at its first name.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::node::{Child, DOT, DOTDOT, FIRST_SPECIAL, Node, STUB, path_in, stub_name};
use super::rewrite::{make_node, mark_whiteout_dir, whiteout_stub};
use super::scan::Scan;
use super::xattrs::{XattrSets, set_xattr};
use crate::erofs::format::overlay;
use crate::show::short_path;
use crate::tree::{DirEntry, Ino, Kind, Tree};

/// The image's inodes in order, and their directories' entries.
pub(super) struct Ordered {
    /// Node 0 is the root.
    pub(super) nodes: Vec<Node>,
    /// Every directory's entries, `.` and `..` included, in name order.
    pub(super) children: Vec<Child>,
    /// The directories' listings, as [`Node::listing`] numbers them.
    pub(super) listings: Vec<Arc<[DirEntry]>>,
    /// The xattr sets the nodes' [`Node::xattrs`] number.
    pub(super) sets: XattrSets,
}

/// Breadth-first inode order with the overlayfs rewrite applied
/// (`rewrite_tree_for_erofs` + `lcfs_compute_tree`).
pub(super) fn order(scan: &Scan, tree: &dyn Tree, version: u32) -> Result<Ordered> {
    let mut sets = XattrSets::new();
    let root_inode = tree.inode(scan.root).context("reading the root inode")?;
    let mut root = make_node(root_inode, 0, 2, &mut sets).context("the root directory")?;
    root.xattrs = sets.modified(root.xattrs, |xs| set_xattr(xs, overlay::OPAQUE, b"y"))?;
    let mut nodes = vec![root];
    let mut children: Vec<Child> = Vec::new();
    let mut listings: Vec<Arc<[DirEntry]>> = Vec::new();
    let mut dir_inos: Vec<Ino> = Vec::new();
    // Nodes of inodes with several names, and names waiting for them.
    let mut link_nodes: HashMap<Ino, u32> = HashMap::new();
    let mut pending: Vec<(usize, Ino)> = Vec::new();
    let mut whiteout_dirs: Vec<usize> = Vec::new();

    listings.push(scan.dirs[&scan.root].clone());
    dir_inos.push(scan.root);
    let mut i = 0;
    while i < nodes.len() {
        if !nodes[i].is_dir() {
            i += 1;
            continue;
        }
        let li = nodes[i].listing as usize;
        let entries = listings[li].clone();
        let dir = dir_inos[li];
        // The names besides the entries, in order: `.`, `..`, then
        // (in the root) the stubs for the names `00`..`ff` it lacks.
        let mut specials: Vec<u32> = vec![DOT, DOTDOT];
        if i == 0 {
            for b in 0..=255u32 {
                let name = stub_name(b);
                if entries
                    .binary_search_by(|e| e.name.as_slice().cmp(&name[..]))
                    .is_err()
                {
                    specials.push(STUB - b);
                }
            }
        }
        let special_name = |s: u32| -> ([u8; 2], usize) {
            match s {
                DOT => (*b"..", 1),
                DOTDOT => (*b"..", 2),
                _ => (stub_name(STUB - s), 2),
            }
        };
        let first = children.len() as u64;
        let mut subdirs = 0u64;
        let (mut e, mut s) = (0usize, 0usize);
        while e < entries.len() || s < specials.len() {
            let take_special = s < specials.len()
                && (e == entries.len() || {
                    let (b, len) = special_name(specials[s]);
                    b[..len] < entries[e].name[..]
                });
            let (name, target) = if take_special {
                let sp = specials[s];
                s += 1;
                let target = match sp {
                    DOT => i,
                    DOTDOT => nodes[i].parent as usize,
                    _ => {
                        let stub = whiteout_stub(&nodes[0], &mut sets)?;
                        nodes.push(stub);
                        nodes.len() - 1
                    }
                };
                (sp, target)
            } else {
                let p = e;
                e += 1;
                if p >= FIRST_SPECIAL as usize {
                    bail!("a directory of more than {FIRST_SPECIAL} entries");
                }
                let child = entries[p].ino;
                let path = |nodes: &[Node], children: &[Child], listings: &[Arc<[DirEntry]>]| {
                    format!(
                        "{}/{}",
                        path_in(nodes, children, listings, i),
                        short_path(&entries[p].name)
                    )
                };
                let inode = tree
                    .inode(child)
                    .with_context(|| path(&nodes, &children, &listings))?;
                if inode.kind.is_dir() {
                    subdirs += 1;
                    let mut n = make_node(inode, i, 0, &mut sets)
                        .with_context(|| path(&nodes, &children, &listings))?;
                    n.listing = u32::try_from(listings.len()).context("too many directories")?;
                    listings.push(scan.dirs[&child].clone());
                    dir_inos.push(child);
                    nodes.push(n);
                    (p as u32, nodes.len() - 1)
                } else {
                    let (count, first_name) = match scan.links.get(&child) {
                        None => (1, true),
                        Some(l) => (l.count, l.count == 1 || (l.dir == dir && l.pos == p)),
                    };
                    if first_name {
                        let whiteout = matches!(inode.kind, Kind::CharDevice { rdev: 0 });
                        // A dumpfile's declared NLINK, written as is (C).
                        let nlink = tree
                            .link_hint(child)
                            .and_then(|h| h.nlink)
                            .map_or(count, u64::from);
                        let n = make_node(inode, i, nlink, &mut sets)
                            .with_context(|| path(&nodes, &children, &listings))?;
                        nodes.push(n);
                        let idx = nodes.len() - 1;
                        if count > 1 {
                            link_nodes.insert(child, idx as u32);
                        }
                        if whiteout && whiteout_dirs.last() != Some(&i) {
                            whiteout_dirs.push(i);
                        }
                        (p as u32, idx)
                    } else {
                        pending.push((children.len(), child));
                        (p as u32, 0)
                    }
                }
            };
            children.push(Child {
                name,
                target: u32::try_from(target).context("too many inodes")?,
            });
        }
        let n = &mut nodes[i];
        n.nlink = u32::try_from(2 + subdirs).context("too many subdirectories")?;
        n.first_child = first;
        n.n_children =
            u32::try_from(children.len() as u64 - first).context("too many directory entries")?;
        i += 1;
    }
    for d in whiteout_dirs {
        mark_whiteout_dir(&mut nodes[d], version, &mut sets)?;
    }

    // Hardlinks point at the node made for the inode's first name.
    for (c, ino) in pending {
        let idx = *link_nodes
            .get(&ino)
            .with_context(|| format!("hardlinked inode {ino} was never placed"))?;
        children[c].target = idx;
    }
    Ok(Ordered {
        nodes,
        children,
        listings,
        sets,
    })
}
