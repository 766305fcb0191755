//! [`MemTree`]: a whole tree in memory.
//!
//! Memory per entry: 8 bytes for the inode's slot, 32 for its
//! [`DirEntry`] plus the name's own allocation (32 bytes for names up to
//! 24 bytes), 4 for its link count once asked for, and the [`Inode`]
//! itself (about 190 bytes with its `Arc`) unless an equal one is already
//! in the tree: [`MemTreeBuilder`] keeps one copy of equal inodes, so a
//! directory of a million alike files holds one.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hashbrown::HashSet;

use super::{DirEntry, Ino, Inode, Kind, LinkHint, Tree, check_name};

/// A tree held entirely in memory. Built with [`MemTreeBuilder`].
#[derive(Debug, Clone)]
pub struct MemTree {
    root: Ino,
    inodes: Vec<Arc<Inode>>,
    dirs: HashMap<Ino, Arc<[DirEntry]>>,
    /// Link counts by inode number (0: not reachable from the root),
    /// counted on first use.
    nlinks: std::sync::OnceLock<Vec<u32>>,
    /// Link hints of the few inodes a dumpfile says more about.
    hints: Arc<HashMap<Ino, LinkHint>>,
}

impl MemTree {
    /// Every inode's link count, in one walk from the root.
    fn count_links(&self) -> Result<Vec<u32>> {
        let mut counts = vec![0u32; self.inodes.len()];
        let root = self.root as usize;
        counts[root] = 2;
        let mut stack = vec![self.root];
        while let Some(dir) = stack.pop() {
            for e in self.readdir(dir)?.iter() {
                let i = e.ino as usize;
                if self.inodes[i].kind.is_dir() {
                    if counts[i] != 0 {
                        bail!(
                            "directory inode {} is reachable twice (a loop or a directory hardlink)",
                            e.ino
                        );
                    }
                    counts[i] = 2;
                    counts[dir as usize] = counts[dir as usize].saturating_add(1);
                    stack.push(e.ino);
                } else {
                    counts[i] = counts[i].saturating_add(1);
                }
            }
        }
        Ok(counts)
    }
}

impl MemTree {
    /// Replace inodes: `f` returns a new inode for those it changes (a
    /// directory stays a directory, a non-directory a non-directory).
    pub fn map_inodes(&mut self, mut f: impl FnMut(Ino, &Inode) -> Option<Inode>) -> Result<()> {
        for (i, slot) in self.inodes.iter_mut().enumerate() {
            if let Some(new) = f(i as Ino, slot) {
                if new.kind.is_dir() != slot.kind.is_dir() {
                    bail!("cannot change inode {i} between directory and non-directory");
                }
                *slot = Arc::new(new);
            }
        }
        Ok(())
    }

    /// Empty directory `dir` (what only it reached becomes unreachable).
    pub fn clear_dir(&mut self, dir: Ino) -> Result<()> {
        let entries = self
            .dirs
            .get_mut(&dir)
            .with_context(|| format!("inode {dir} is not a directory"))?;
        *entries = Arc::from(Vec::new());
        self.nlinks = std::sync::OnceLock::new();
        Ok(())
    }
}

impl Tree for MemTree {
    /// Counted once over the whole tree, on first use.
    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        if self.nlinks.get().is_none() {
            let counts = self.count_links()?;
            let _ = self.nlinks.set(counts);
        }
        Ok(self
            .nlinks
            .get()
            .and_then(|m| m.get(ino as usize).copied())
            .filter(|&n| n > 0)
            .map(u64::from))
    }

    fn root(&self) -> Ino {
        self.root
    }

    fn link_hint(&self, ino: Ino) -> Option<LinkHint> {
        self.hints.get(&ino).cloned()
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        self.inodes
            .get(ino as usize)
            .cloned()
            .with_context(|| format!("no inode {ino} in the tree"))
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        self.dirs
            .get(&dir)
            .cloned()
            .with_context(|| format!("inode {dir} is not a directory"))
    }
}

/// Builds a [`MemTree`]: add inodes, then link them into directories.
#[derive(Debug, Default)]
pub struct MemTreeBuilder {
    inodes: Vec<Arc<Inode>>,
    /// The distinct inodes added so far (dropped by [`Self::build`]).
    distinct: HashSet<Arc<Inode>>,
    dirs: HashMap<Ino, Vec<DirEntry>>,
    /// Directories already linked somewhere (a directory has one name).
    linked_dirs: HashMap<Ino, ()>,
    hints: HashMap<Ino, LinkHint>,
}

impl MemTreeBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an inode; returns its number (dense, from 0). An inode equal
    /// to one added before shares its memory.
    pub fn add(&mut self, inode: Inode) -> Ino {
        let inode = self.intern(inode);
        self.add_shared(inode)
    }

    /// Add an inode already shared (as [`Self::add`], without looking for
    /// an equal one).
    pub fn add_shared(&mut self, inode: Arc<Inode>) -> Ino {
        let ino = self.inodes.len() as Ino;
        if inode.kind.is_dir() {
            self.dirs.insert(ino, Vec::new());
        }
        self.inodes.push(inode);
        ino
    }

    fn intern(&mut self, inode: Inode) -> Arc<Inode> {
        if let Some(i) = self.distinct.get(&inode) {
            return i.clone();
        }
        let i = Arc::new(inode);
        self.distinct.insert(i.clone());
        i
    }

    /// Replace an inode's contents (keeps its number and links).
    pub fn replace(&mut self, ino: Ino, inode: Inode) -> Result<()> {
        let slot = self
            .inodes
            .get(ino as usize)
            .with_context(|| format!("no inode {ino}"))?;
        if slot.kind.is_dir() != inode.kind.is_dir() {
            bail!("cannot change inode {ino} between directory and non-directory");
        }
        let inode = self.intern(inode);
        self.inodes[ino as usize] = inode;
        Ok(())
    }

    /// The [`LinkHint`] of `ino`, to fill in.
    pub fn link_hint(&mut self, ino: Ino) -> &mut LinkHint {
        self.hints.entry(ino).or_default()
    }

    pub fn get(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(ino as usize).map(|a| a.as_ref())
    }

    /// Name `child` as `name` in directory `dir`. A name already present is
    /// an error, as is a second name for a directory.
    pub fn link(&mut self, dir: Ino, name: &[u8], child: Ino) -> Result<()> {
        check_name(name)?;
        if child as usize >= self.inodes.len() {
            bail!("no inode {child}");
        }
        if self.inodes[child as usize].kind.is_dir() && self.linked_dirs.insert(child, ()).is_some()
        {
            bail!(
                "directory {:?} would have a second name (directory hardlink)",
                String::from_utf8_lossy(name)
            );
        }
        let entries = self
            .dirs
            .get_mut(&dir)
            .with_context(|| format!("inode {dir} is not a directory"))?;
        // Names usually come in order: append without a search.
        if entries.last().is_none_or(|e| e.name.as_slice() < name) {
            entries.push(DirEntry {
                name: name.to_vec(),
                ino: child,
            });
            return Ok(());
        }
        match entries.binary_search_by(|e| e.name.as_slice().cmp(name)) {
            Ok(_) => bail!(
                "{:?} appears twice in one directory",
                String::from_utf8_lossy(name)
            ),
            Err(pos) => entries.insert(
                pos,
                DirEntry {
                    name: name.to_vec(),
                    ino: child,
                },
            ),
        }
        Ok(())
    }

    /// Remove `name` from `dir`; returns the inode it named.
    pub fn unlink(&mut self, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
        let entries = self
            .dirs
            .get_mut(&dir)
            .with_context(|| format!("inode {dir} is not a directory"))?;
        match entries.binary_search_by(|e| e.name.as_slice().cmp(name)) {
            Ok(pos) => {
                let e = entries.remove(pos);
                self.linked_dirs.remove(&e.ino);
                Ok(Some(e.ino))
            }
            Err(_) => Ok(None),
        }
    }

    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        let entries = self.dirs.get(&dir)?;
        entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| entries[i].ino)
    }

    /// Finish with `root` as the root directory.
    pub fn build(self, root: Ino) -> Result<MemTree> {
        match self.inodes.get(root as usize) {
            Some(i) if matches!(i.kind, Kind::Directory) => {}
            Some(_) => bail!("the root is not a directory"),
            None => bail!("no root inode {root}"),
        }
        if self.linked_dirs.contains_key(&root) {
            bail!("the root directory also has a name inside the tree");
        }
        Ok(MemTree {
            root,
            inodes: self.inodes,
            dirs: self
                .dirs
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
            nlinks: std::sync::OnceLock::new(),
            hints: Arc::new(self.hints),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{FileData, Stat};

    fn dir() -> Inode {
        Inode {
            stat: Stat {
                perms: 0o755,
                ..Default::default()
            },
            kind: Kind::Directory,
            xattrs: vec![],
        }
    }

    fn file(data: &[u8]) -> Inode {
        Inode {
            stat: Stat {
                perms: 0o644,
                ..Default::default()
            },
            kind: Kind::Regular(FileData::Inline(data.to_vec())),
            xattrs: vec![],
        }
    }

    #[test]
    fn build_and_navigate() {
        let mut b = MemTreeBuilder::new();
        let root = b.add(dir());
        let sub = b.add(dir());
        let f = b.add(file(b"hi"));
        b.link(root, b"sub", sub).unwrap();
        b.link(sub, b"b", f).unwrap();
        b.link(sub, b"a", f).unwrap(); // hardlink
        let t = b.build(root).unwrap();
        let names: Vec<_> = t
            .readdir(sub)
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(t.resolve_path(b"/sub/a").unwrap(), Some(f));
        assert_eq!(t.resolve_path(b"sub/b").unwrap(), Some(f));
        assert_eq!(t.resolve_path(b"/sub/a/x").unwrap(), None);
        assert_eq!(t.resolve_path(b"/").unwrap(), Some(root));
        assert!(t.readdir(f).is_err());
        assert!(t.inode(99).is_err());
    }

    #[test]
    fn refuses_bad_links() {
        let mut b = MemTreeBuilder::new();
        let root = b.add(dir());
        let sub = b.add(dir());
        let f = b.add(file(b""));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; 256][..]] {
            assert!(b.link(root, bad, f).is_err());
        }
        b.link(root, b"sub", sub).unwrap();
        assert!(
            b.link(root, b"sub2", sub).is_err(),
            "directory hardlink accepted"
        );
        assert!(b.link(root, b"sub", f).is_err(), "duplicate name accepted");
        assert!(b.link(f, b"x", f).is_err(), "link into a file accepted");
        assert!(b.build(f).is_err());
    }
}
