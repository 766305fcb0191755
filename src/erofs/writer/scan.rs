//! Pass 1 of the writer: read the tree once (depth first), check it
//! (a directory tree, valid unique names), find the inodes with several
//! names and whether there are whiteouts. Owns [`Scan`].

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::show::short_path;
use crate::tree::{DirEntry, Ino, Kind, Tree, check_name};

/// A non-directory that may have more than one name.
pub(super) struct LinkInfo {
    /// Number of names.
    pub(super) count: u64,
    /// The first name in depth-first sorted order (or the one
    /// [`crate::tree::LinkHint::primary`] names): directory and index.
    pub(super) dir: Ino,
    pub(super) pos: usize,
}

/// What the first pass learns. Memory: the directories' listings (shared
/// with the tree when it keeps them, as a [`crate::tree::MemTree`] does)
/// and one [`LinkInfo`] per inode that may have several names; inodes the
/// tree says have one name ([`Tree::nlink`]) are not recorded at all.
pub(super) struct Scan {
    pub(super) root: Ino,
    pub(super) dirs: HashMap<Ino, Arc<[DirEntry]>>,
    pub(super) links: HashMap<Ino, LinkInfo>,
    pub(super) has_whiteout: bool,
}

struct Frame {
    ino: Ino,
    entries: Arc<[DirEntry]>,
    pos: usize,
}

impl Scan {
    pub(super) fn run(tree: &dyn Tree) -> Result<Scan> {
        let root = tree.root();
        let root_inode = tree.inode(root).context("reading the root inode")?;
        if !root_inode.kind.is_dir() {
            bail!("the root of the tree is not a directory");
        }
        let mut scan = Scan {
            root,
            dirs: HashMap::new(),
            links: HashMap::new(),
            has_whiteout: false,
        };
        let entries = read_dir(tree, root, &|| "/".to_string())?;
        scan.dirs.insert(root, entries.clone());
        let mut stack = vec![Frame {
            ino: root,
            entries,
            pos: 0,
        }];
        while let Some(top) = stack.last_mut() {
            if top.pos == top.entries.len() {
                stack.pop();
                continue;
            }
            let pos = top.pos;
            top.pos += 1;
            let dir = top.ino;
            let child = top.entries[pos].ino;
            let name = || top_name(&stack);
            let inode = tree
                .inode(child)
                .with_context(|| path_of_stack(&stack, &name()))?;
            if inode.kind.is_dir() {
                // Built only for a message: building it for every
                // directory would cost O(depth) each, O(depth²) in all.
                let path = || path_of_stack(&stack, &name());
                if child == root || scan.dirs.contains_key(&child) {
                    bail!(
                        "{}: directory inode {child} is reachable twice (a directory hardlink or a loop)",
                        path()
                    );
                }
                let entries = read_dir(tree, child, &path)?;
                scan.dirs.insert(child, entries.clone());
                stack.push(Frame {
                    ino: child,
                    entries,
                    pos: 0,
                });
                continue;
            }
            if matches!(inode.kind, Kind::CharDevice { rdev: 0 }) {
                scan.has_whiteout = true;
            }
            let single = tree
                .nlink(child)
                .with_context(|| path_of_stack(&stack, &name()))?
                == Some(1);
            if !single {
                // The inode sits at its first name, unless the tree names
                // another (a dumpfile's non-`@` line, as C places it).
                let here = &stack.last().expect("in a directory").entries[pos].name;
                let primary_here = tree
                    .link_hint(child)
                    .and_then(|h| h.primary)
                    .is_some_and(|(d, n)| d == dir && &n == here);
                scan.links
                    .entry(child)
                    .and_modify(|l| {
                        l.count += 1;
                        if primary_here {
                            (l.dir, l.pos) = (dir, pos);
                        }
                    })
                    .or_insert(LinkInfo { count: 1, dir, pos });
            }
        }
        Ok(scan)
    }
}

/// The name of the entry last taken from the directory at the top.
fn top_name(stack: &[Frame]) -> Vec<u8> {
    stack
        .last()
        .and_then(|f| f.entries.get(f.pos.wrapping_sub(1)))
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

/// The path of `name` inside the directory at the top of `stack`, for a
/// message (a deep one shortened).
fn path_of_stack(stack: &[Frame], name: &[u8]) -> String {
    let mut p = Vec::new();
    for w in stack.windows(2) {
        // The child frame was entered from entry `pos - 1` of its parent.
        let parent = &w[0];
        if let Some(e) = parent.entries.get(parent.pos.wrapping_sub(1)) {
            p.push(b'/');
            p.extend_from_slice(&e.name);
        }
    }
    p.push(b'/');
    p.extend_from_slice(name);
    crate::show::short_path(&p)
}

/// A directory's entries, checked: valid names, sorted, unique. `path`
/// names the directory in a message.
fn read_dir(tree: &dyn Tree, dir: Ino, path: &dyn Fn() -> String) -> Result<Arc<[DirEntry]>> {
    let entries = tree
        .readdir(dir)
        .with_context(|| format!("reading directory {}", path()))?;
    for e in entries.iter() {
        check_name(&e.name).with_context(|| format!("in directory {}", path()))?;
    }
    if entries.windows(2).all(|w| w[0].name < w[1].name) {
        return Ok(entries);
    }
    let mut v = entries.to_vec();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = v.windows(2).find(|w| w[0].name == w[1].name) {
        bail!(
            "{}: the name {:?} appears twice",
            path(),
            short_path(&w[0].name)
        );
    }
    Ok(v.into())
}
