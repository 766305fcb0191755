//! The merged tree under construction: nodes, each directory's entries
//! (names in one arena, each marked with the layer that last touched it),
//! shared copies of equal inodes, the bounds on inodes and memory
//! ([`MAX_INODES`], [`MAX_TREE_BYTES`]), and the final [`MemTree`] built
//! from what the root reaches.

use std::hash::BuildHasher;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hashbrown::{DefaultHashBuilder, HashSet};

use super::{MAX_INODES, MAX_TREE_BYTES};
use crate::show::display_bytes;
use crate::tree::{FileData, Ino, Inode, Kind, MemTree, MemTreeBuilder, Stat};

/// What one directory entry costs beyond its name: a [`Child`] in a hash
/// table at least 7/16 full, with its control byte.
const ENTRY_OVERHEAD: usize = 40;

/// Path components joined with `/`, for a message.
pub(super) fn join(comps: &[&[u8]]) -> String {
    display_bytes(&comps.join(&b'/'))
}

/// A directory entry under construction: its name (kept in
/// [`Merger::names`]), the node it names and the layer that last created,
/// replaced or added something beneath it. 16 bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Child {
    /// Where the name starts in [`Merger::names`].
    name: u32,
    /// The name's length ([`crate::tree::check_name`] allows at most 255 bytes).
    len: u8,
    pub(super) node: u32,
    pub(super) layer: u32,
}

/// A directory's entries, found by name: a hash table of 16-byte
/// [`Child`]ren whose names live in the arena (no allocation per name).
type Children = hashbrown::HashTable<Child>;

/// One inode of the merge: 16 bytes, plus the children table of a
/// non-empty directory.
#[derive(Debug)]
pub(super) struct Node {
    /// Shared by every node with equal metadata ([`Merger::intern`]): in
    /// a typical layer most directories, and many small files, are alike.
    pub(super) inode: Arc<Inode>,
    /// `None` unless a directory with entries.
    children: Option<Box<Children>>,
}

/// The merged tree so far. Node 0 is the root.
///
/// Memory per entry (see also `docs/resource-bounds.md`): a 16-byte
/// [`Node`], a 16-byte [`Child`] in its directory's table (about 20 to 40
/// bytes with the table's slack), the name once in the arena, and the
/// inode itself unless an equal one exists. Nothing is freed before the
/// end: a replaced or whited-out entry keeps its node and its name (and
/// its charge against [`MAX_TREE_BYTES`]).
#[derive(Debug)]
pub(super) struct Merger {
    pub(super) nodes: Vec<Node>,
    /// Every name put in a directory, back to back; [`Child::name`]
    /// indexes it.
    names: Vec<u8>,
    hasher: DefaultHashBuilder,
    /// The distinct inodes so far.
    inodes: HashSet<Arc<Inode>>,
    /// Memory taken so far, roughly, and the most allowed
    /// ([`MAX_TREE_BYTES`]).
    pub(super) bytes: usize,
    pub(super) budget: usize,
}

pub(super) const ROOT: usize = 0;

/// What one distinct inode costs beyond its heap data: the `Arc` and its
/// place in [`Merger::inodes`].
const INODE_OVERHEAD: usize = std::mem::size_of::<Inode>() + 16 + 24;
/// What a node costs: its slot in [`Merger::nodes`], with the vector's
/// growth slack.
const NODE_OVERHEAD: usize = 2 * std::mem::size_of::<Node>();
/// What a directory's first entry costs beyond [`ENTRY_OVERHEAD`]: the
/// boxed table and its smallest allocation.
const TABLE_OVERHEAD: usize = 160;

fn implicit_dir() -> Inode {
    Inode {
        stat: Stat {
            perms: 0o755,
            ..Stat::default()
        },
        kind: Kind::Directory,
        xattrs: vec![],
    }
}

fn name_of<'a>(names: &'a [u8], c: &Child) -> &'a [u8] {
    &names[c.name as usize..c.name as usize + usize::from(c.len)]
}

impl Merger {
    pub(super) fn new() -> Self {
        let mut m = Merger {
            nodes: Vec::new(),
            names: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            inodes: HashSet::new(),
            bytes: 0,
            budget: MAX_TREE_BYTES,
        };
        let root = m.intern(implicit_dir());
        m.nodes.push(Node {
            inode: root,
            children: None,
        });
        m
    }

    /// Count `n` more bytes against [`MAX_TREE_BYTES`].
    fn charge(&mut self, n: usize) -> Result<()> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.budget {
            bail!(
                "the merged tree would take more than {} MiB of memory",
                self.budget >> 20
            );
        }
        Ok(())
    }

    /// The shared copy of `inode` (uncharged: [`Self::add`] charges).
    fn intern(&mut self, inode: Inode) -> Arc<Inode> {
        if let Some(i) = self.inodes.get(&inode) {
            return i.clone();
        }
        let i = Arc::new(inode);
        self.inodes.insert(i.clone());
        i
    }

    /// New metadata for `node` (the root, or a directory over a
    /// directory), its entries kept.
    pub(super) fn set_inode(&mut self, node: usize, inode: Inode) -> Result<()> {
        self.charge(INODE_OVERHEAD)?;
        self.nodes[node].inode = self.intern(inode);
        Ok(())
    }

    pub(super) fn add(&mut self, inode: Inode) -> Result<usize> {
        if self.nodes.len() >= MAX_INODES {
            bail!("the layers create more than {MAX_INODES} inodes");
        }
        let mut cost = NODE_OVERHEAD;
        if !self.inodes.contains(&inode) {
            cost += INODE_OVERHEAD
                + match &inode.kind {
                    Kind::Regular(FileData::Inline(v)) => v.len(),
                    Kind::Regular(FileData::External { redirect, .. }) => {
                        redirect.as_ref().map_or(0, Vec::len)
                    }
                    Kind::Symlink(t) => t.len(),
                    _ => 0,
                }
                + inode
                    .xattrs
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 48)
                    .sum::<usize>();
        }
        self.charge(cost)?;
        let inode = self.intern(inode);
        self.nodes.push(Node {
            inode,
            children: None,
        });
        Ok(self.nodes.len() - 1)
    }

    pub(super) fn is_dir(&self, node: usize) -> bool {
        self.nodes[node].inode.kind.is_dir()
    }

    /// The entry `name` of directory `dir`.
    pub(super) fn child(&self, dir: usize, name: &[u8]) -> Option<Child> {
        let t = self.nodes[dir].children.as_deref()?;
        t.find(self.hasher.hash_one(name), |c| {
            name_of(&self.names, c) == name
        })
        .copied()
    }

    /// Remove the entry `name` of directory `dir`.
    pub(super) fn remove_child(&mut self, dir: usize, name: &[u8]) -> Option<Child> {
        let hash = self.hasher.hash_one(name);
        let names = &self.names;
        let t = self.nodes[dir].children.as_deref_mut()?;
        t.find_entry(hash, |c| name_of(names, c) == name)
            .ok()
            .map(|e| e.remove().0)
    }

    /// Name `node` as `name` in `dir` (touched by `layer`); returns what
    /// the name named before. A new name is charged and stored.
    pub(super) fn set_child(
        &mut self,
        dir: usize,
        name: &[u8],
        node: usize,
        layer: usize,
    ) -> Result<Option<Child>> {
        let hash = self.hasher.hash_one(name);
        let (node, layer) = (node as u32, layer as u32);
        {
            let names = &self.names;
            if let Some(c) = self.nodes[dir]
                .children
                .as_deref_mut()
                .and_then(|t| t.find_mut(hash, |c| name_of(names, c) == name))
            {
                let old = *c;
                c.node = node;
                c.layer = layer;
                return Ok(Some(old));
            }
        }
        let len = u8::try_from(name.len()).context("a name longer than 255 bytes")?;
        let mut cost = name.len() + ENTRY_OVERHEAD;
        if self.nodes[dir].children.is_none() {
            cost += TABLE_OVERHEAD;
        }
        self.charge(cost)?;
        let start = u32::try_from(self.names.len())
            .ok()
            .filter(|s| s.checked_add(u32::from(len)).is_some())
            .context("the merged tree's names take more than 4 GiB")?;
        self.names.extend_from_slice(name);
        let c = Child {
            name: start,
            len,
            node,
            layer,
        };
        let (names, hasher) = (&self.names, &self.hasher);
        self.nodes[dir]
            .children
            .get_or_insert_with(Default::default)
            .insert_unique(hash, c, |c| hasher.hash_one(name_of(names, c)));
        Ok(None)
    }

    /// The directory at `comps`, creating missing ones, each marked as
    /// touched by `layer`.
    pub(super) fn make_dirs(&mut self, comps: &[&[u8]], layer: usize) -> Result<usize> {
        let mut cur = ROOT;
        for (i, &c) in comps.iter().enumerate() {
            let next = match self.child(cur, c) {
                Some(child) => {
                    self.set_child(cur, c, child.node as usize, layer)?;
                    child.node as usize
                }
                None => {
                    let n = self.add(implicit_dir())?;
                    self.set_child(cur, c, n, layer)?;
                    n
                }
            };
            if !self.is_dir(next) {
                bail!(
                    "\"{}\" is not a directory (symlinks inside the image are not followed)",
                    join(&comps[..=i])
                );
            }
            cur = next;
        }
        Ok(cur)
    }

    /// The node at `comps`, if there is one; a non-directory on the way is
    /// an error.
    pub(super) fn find(&self, comps: &[&[u8]]) -> Result<Option<usize>> {
        let mut cur = ROOT;
        for (i, &c) in comps.iter().enumerate() {
            if !self.is_dir(cur) {
                bail!(
                    "\"{}\" is not a directory (symlinks inside the image are not followed)",
                    join(&comps[..i])
                );
            }
            match self.child(cur, c) {
                Some(child) => cur = child.node as usize,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Forget the children of an unlinked directory, recursively (a
    /// directory has one name, so nothing else reaches them through it).
    pub(super) fn drop_subtree(&mut self, node: usize) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if let Some(children) = self.nodes[n].children.take() {
                stack.extend(children.iter().map(|c| c.node as usize));
            }
        }
    }

    /// Name `node` as `name` in `dir`, dropping what was there.
    pub(super) fn put(&mut self, dir: usize, name: &[u8], node: usize, layer: usize) -> Result<()> {
        if let Some(old) = self.set_child(dir, name, node, layer)?
            && old.node as usize != node
        {
            self.drop_subtree(old.node as usize);
        }
        Ok(())
    }

    /// Remove from `dir`, recursively, everything not touched by `layer`.
    pub(super) fn clear_lower(&mut self, dir: usize, layer: usize) {
        let layer = layer as u32;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Some(mut children) = self.nodes[d].children.take() else {
                continue;
            };
            let mut dropped = Vec::new();
            children.retain(|c| {
                if c.layer != layer {
                    dropped.push(c.node as usize);
                    false
                } else {
                    if self.nodes[c.node as usize].inode.kind.is_dir() {
                        stack.push(c.node as usize);
                    }
                    true
                }
            });
            self.nodes[d].children = Some(children);
            for n in dropped {
                self.drop_subtree(n);
            }
        }
    }
    /// The tree reachable from the root, inodes renumbered densely (depth
    /// first, each directory's entries in name order). The merge's tables
    /// are freed directory by directory as the tree is built.
    pub(super) fn build(mut self) -> Result<MemTree> {
        let mut b = MemTreeBuilder::new();
        let root = b.add_shared(self.nodes[ROOT].inode.clone());
        self.inodes = HashSet::new();
        // The tree's number of each node placed so far (hardlinks).
        let mut placed: Vec<u32> = vec![u32::MAX; self.nodes.len()];
        let mut stack = vec![(ROOT, root)];
        let mut entries: Vec<Child> = Vec::new();
        while let Some((node, ino)) = stack.pop() {
            let Some(children) = self.nodes[node].children.take() else {
                continue;
            };
            entries.clear();
            entries.extend(children.iter().copied());
            drop(children);
            let names = &self.names;
            entries.sort_unstable_by(|a, b| name_of(names, a).cmp(name_of(names, b)));
            let mut subdirs = Vec::new();
            for c in &entries {
                let n = c.node as usize;
                let child = match placed[n] {
                    u32::MAX => {
                        let inode = self.nodes[n].inode.clone();
                        let is_dir = inode.kind.is_dir();
                        let i = b.add_shared(inode);
                        placed[n] = u32::try_from(i).context("too many inodes")?;
                        if is_dir {
                            subdirs.push((n, i));
                        }
                        i
                    }
                    i => Ino::from(i),
                };
                b.link(ino, name_of(names, c), child)?;
            }
            stack.extend(subdirs.into_iter().rev());
        }
        b.build(root)
    }
}
