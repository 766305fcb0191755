//! The walk behind [`super::diff_trees`]: both trees in parallel, by sorted
//! name, depth first with an explicit stack (no recursion to bound), a
//! directory before its entries. Subtrees with equal
//! [`crate::tree::Tree::subtree_id`]s are skipped unread; a path on one
//! side only is listed with everything below it.
//!
//! Hardlinks (when compared, see [`super`]): a path present on both sides
//! whose inode has more than one link on either side has its set of names
//! compared; the names of every multiply-linked inode are collected by one
//! walk of that tree, done the first time one is met (trees without
//! hardlinks never pay for it).

use crate::show::short_path;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::content::{self, Digests, Loc};
use super::{Aspects, Change, DiffOptions, Side, Status, normalize_path};
use crate::repository::Repository;
use crate::tree::{Ino, Inode, Kind, Listing, SubtreeId, Tree};

/// A path to compare, with its inode on each side.
struct Item {
    path: Vec<u8>,
    a: Option<Ino>,
    b: Option<Ino>,
    /// Their subtree ids were compared already (and differ, or are absent).
    compared: bool,
}

/// The names of each multiply-linked inode of one tree, built on demand.
#[derive(Default)]
struct Links {
    groups: Option<HashMap<Ino, Vec<Vec<u8>>>>,
}

impl Links {
    /// Every path naming `ino` (sorted), `path` being one of them.
    fn names(&mut self, tree: &dyn Tree, ino: Ino, path: &[u8]) -> Result<Vec<Vec<u8>>> {
        if tree.nlink(ino)? == Some(1) {
            return Ok(vec![path.to_vec()]);
        }
        if self.groups.is_none() {
            self.groups = Some(collect_links(tree)?);
        }
        Ok(self
            .groups
            .as_ref()
            .and_then(|g| g.get(&ino).cloned())
            .unwrap_or_else(|| vec![path.to_vec()]))
    }
}

/// Paths of every non-directory inode with more than one name.
fn collect_links(tree: &dyn Tree) -> Result<HashMap<Ino, Vec<Vec<u8>>>> {
    let mut all: HashMap<Ino, Vec<Vec<u8>>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(tree.root(), Vec::new())];
    while let Some((dir, path)) = stack.pop() {
        if !seen.insert(dir) {
            bail!("directory inode {dir} is reachable twice (a loop or a directory hardlink)");
        }
        for e in tree.readdir(dir)?.iter() {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            if tree.inode(e.ino)?.kind.is_dir() {
                stack.push((e.ino, p));
            } else {
                all.entry(e.ino).or_default().push(p);
            }
        }
    }
    all.retain(|_, v| v.len() > 1);
    for v in all.values_mut() {
        v.sort();
    }
    Ok(all)
}

pub(super) struct Walker<'a> {
    repo: Option<&'a Repository>,
    a: Side<'a>,
    b: Side<'a>,
    opts: &'a DiffOptions,
    hardlinks: bool,
    links_a: Links,
    links_b: Links,
    digests: Digests,
    /// Listings reused directory after directory.
    lists: (Listing, Listing),
}

fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if parent != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl<'a> Walker<'a> {
    pub(super) fn new(
        repo: Option<&'a Repository>,
        a: Side<'a>,
        b: Side<'a>,
        opts: &'a DiffOptions,
    ) -> Walker<'a> {
        let hardlinks = !opts.ignore_hardlinks && !a.is_ostree_commit() && !b.is_ostree_commit();
        Walker {
            repo,
            a,
            b,
            opts,
            hardlinks,
            links_a: Links::default(),
            links_b: Links::default(),
            digests: Digests::default(),
            lists: Default::default(),
        }
    }

    /// Where the walk starts: the roots, or each limiting path (sorted,
    /// without the ones inside another).
    fn starts(&self) -> Result<Vec<Item>> {
        if self.opts.paths.is_empty() {
            return Ok(vec![Item {
                path: b"/".to_vec(),
                a: Some(self.a.tree.root()),
                b: Some(self.b.tree.root()),
                compared: false,
            }]);
        }
        let mut paths: Vec<Vec<u8>> = self.opts.paths.iter().map(|p| normalize_path(p)).collect();
        paths.sort();
        paths.dedup();
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for p in paths {
            let inside = kept
                .iter()
                .any(|k| k == b"/" || (p.starts_with(k) && p.get(k.len()) == Some(&b'/')));
            if !inside {
                kept.push(p);
            }
        }
        let mut out = Vec::new();
        for p in kept {
            let a = self
                .a
                .tree
                .resolve_path(&p)
                .with_context(|| format!("looking up {} in the first tree", short_path(&p)))?;
            let b = self
                .b
                .tree
                .resolve_path(&p)
                .with_context(|| format!("looking up {} in the second tree", short_path(&p)))?;
            if a.is_none() && b.is_none() {
                bail!("{}: no such path in either tree", short_path(&p));
            }
            out.push(Item {
                path: p,
                a,
                b,
                compared: false,
            });
        }
        Ok(out)
    }

    pub(super) fn run(mut self, out: &mut dyn FnMut(Change) -> Result<()>) -> Result<()> {
        for start in self.starts()? {
            let mut stack = vec![start];
            while let Some(item) = stack.pop() {
                self.visit(item, &mut stack, out)?;
            }
        }
        Ok(())
    }

    fn inode(side: &Side<'_>, ino: Ino, path: &[u8], which: &str) -> Result<Arc<Inode>> {
        side.tree
            .inode(ino)
            .with_context(|| format!("reading {} in the {which} tree", short_path(path)))
    }

    /// Push the entries of `dir` (on one side only) as items of that side.
    fn push_one_side(
        side: &Side<'_>,
        dir: Ino,
        path: &[u8],
        first: bool,
        which: &str,
        stack: &mut Vec<Item>,
    ) -> Result<()> {
        let entries = side
            .tree
            .readdir(dir)
            .with_context(|| format!("listing {} in the {which} tree", short_path(path)))?;
        for e in entries.iter().rev() {
            let p = child_path(path, &e.name);
            stack.push(if first {
                Item {
                    path: p,
                    a: Some(e.ino),
                    b: None,
                    compared: true,
                }
            } else {
                Item {
                    path: p,
                    a: None,
                    b: Some(e.ino),
                    compared: true,
                }
            });
        }
        Ok(())
    }

    fn visit(
        &mut self,
        item: Item,
        stack: &mut Vec<Item>,
        out: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        let Item {
            path,
            a,
            b,
            compared,
        } = item;
        match (a, b) {
            (None, None) => Ok(()),
            (Some(ia), None) if self.a.tree.costly_inode(ia) => {
                // A non-directory (see `Tree::costly_inode`): its inode unread.
                out(unread(path, Status::Deleted, Some(ia), None))
            }
            (None, Some(ib)) if self.b.tree.costly_inode(ib) => {
                out(unread(path, Status::Added, None, Some(ib)))
            }
            (Some(ia), None) => {
                let old = Self::inode(&self.a, ia, &path, "first")?;
                if old.kind.is_dir() {
                    Self::push_one_side(&self.a, ia, &path, true, "first", stack)?;
                }
                out(change(path, Status::Deleted, Some((ia, old)), None))
            }
            (None, Some(ib)) => {
                let new = Self::inode(&self.b, ib, &path, "second")?;
                if new.kind.is_dir() {
                    Self::push_one_side(&self.b, ib, &path, false, "second", stack)?;
                }
                out(change(path, Status::Added, None, Some((ib, new))))
            }
            (Some(ia), Some(ib)) => {
                if !compared
                    && let (Some(x), Some(y)) =
                        (self.a.tree.subtree_id(ia), self.b.tree.subtree_id(ib))
                    && x == y
                {
                    return Ok(());
                }
                let (ca, cb) = (self.a.tree.costly_inode(ia), self.b.tree.costly_inode(ib));
                if (ca || cb)
                    && let Some(c) = self.without_costly(&path, (ia, ca), (ib, cb), stack)?
                {
                    return out(c);
                }
                let old = Self::inode(&self.a, ia, &path, "first")?;
                let new = Self::inode(&self.b, ib, &path, "second")?;
                if old.kind.format() != new.kind.format() {
                    // Entries below the directory side go after the `T`.
                    if old.kind.is_dir() {
                        Self::push_one_side(&self.a, ia, &path, true, "first", stack)?;
                    }
                    if new.kind.is_dir() {
                        Self::push_one_side(&self.b, ib, &path, false, "second", stack)?;
                    }
                    return out(change(
                        path,
                        Status::TypeChanged,
                        Some((ia, old)),
                        Some((ib, new)),
                    ));
                }
                let (aspects, links) = self
                    .aspects(&path, ia, &old, ib, &new)
                    .with_context(|| format!("comparing {}", short_path(&path)))?;
                if old.kind.is_dir() {
                    self.push_both(&path, ia, ib, stack)?;
                }
                if aspects.is_empty() {
                    return Ok(());
                }
                let mut c = change(path, Status::Modified, Some((ia, old)), Some((ib, new)));
                c.aspects = aspects;
                if let Some((la, lb)) = links {
                    c.old_links = la;
                    c.new_links = lb;
                }
                out(c)
            }
        }
    }

    /// A path on both sides, one of whose inodes is costly (a remote file
    /// not fetched: see `Tree::costly_inode`), decided without reading
    /// that inode when what is known suffices: a directory against it is a
    /// type change; two files named by different ostree checksums are `M`
    /// with the aspect `checksum` (which of content, mode, owner, xattrs,
    /// target or file/symlink type differs is not read). `None`: it does
    /// not suffice (no checksums to compare), the inodes must be read.
    fn without_costly(
        &mut self,
        path: &[u8],
        (ia, ca): (Ino, bool),
        (ib, cb): (Ino, bool),
        stack: &mut Vec<Item>,
    ) -> Result<Option<Change>> {
        let old = match ca {
            true => None,
            false => Some(Self::inode(&self.a, ia, path, "first")?),
        };
        let new = match cb {
            true => None,
            false => Some(Self::inode(&self.b, ib, path, "second")?),
        };
        let is_dir = |i: &Option<Arc<Inode>>| i.as_ref().is_some_and(|i| i.kind.is_dir());
        let (da, db) = (is_dir(&old), is_dir(&new));
        let status = if da || db {
            if da {
                Self::push_one_side(&self.a, ia, path, true, "first", stack)?;
            }
            if db {
                Self::push_one_side(&self.b, ib, path, false, "second", stack)?;
            }
            Status::TypeChanged
        } else {
            match (self.a.tree.subtree_id(ia), self.b.tree.subtree_id(ib)) {
                (Some(x @ SubtreeId::OstreeFile(_)), Some(y @ SubtreeId::OstreeFile(_)))
                    if x != y =>
                {
                    Status::Modified
                }
                _ => return Ok(None),
            }
        };
        let mut c = unread(path.to_vec(), status, Some(ia), Some(ib));
        c.old = old;
        c.new = new;
        if status == Status::Modified {
            c.aspects = Aspects::CHECKSUM;
        }
        Ok(Some(c))
    }

    /// Merge two sorted listings into items, pushed so that the smallest
    /// name is popped first. Entries with equal subtree ids are dropped
    /// here, before any path is built: the cost of a listing is its
    /// changed entries.
    fn push_both(&mut self, path: &[u8], ia: Ino, ib: Ino, stack: &mut Vec<Item>) -> Result<()> {
        let (ea, eb) = &mut self.lists;
        self.a
            .tree
            .readdir_ids(ia, ea)
            .with_context(|| format!("listing {} in the first tree", short_path(path)))?;
        self.b
            .tree
            .readdir_ids(ib, eb)
            .with_context(|| format!("listing {} in the second tree", short_path(path)))?;
        let mut items = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < ea.len() || j < eb.len() {
            let ord = match (i < ea.len(), j < eb.len()) {
                (true, true) => ea.name(i).cmp(eb.name(j)),
                (true, false) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let item = match ord {
                std::cmp::Ordering::Less => {
                    i += 1;
                    Item {
                        path: child_path(path, ea.name(i - 1)),
                        a: Some(ea.ino(i - 1)),
                        b: None,
                        compared: true,
                    }
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    Item {
                        path: child_path(path, eb.name(j - 1)),
                        a: None,
                        b: Some(eb.ino(j - 1)),
                        compared: true,
                    }
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    if let (Some(p), Some(q)) = (ea.id(i - 1), eb.id(j - 1))
                        && p == q
                    {
                        continue;
                    }
                    Item {
                        path: child_path(path, ea.name(i - 1)),
                        a: Some(ea.ino(i - 1)),
                        b: Some(eb.ino(j - 1)),
                        compared: true,
                    }
                }
            };
            items.push(item);
        }
        stack.extend(items.into_iter().rev());
        Ok(())
    }

    /// What differs between two inodes of the same type; with the hardlink
    /// aspect, the names of each.
    #[allow(clippy::type_complexity)]
    fn aspects(
        &mut self,
        path: &[u8],
        ia: Ino,
        old: &Inode,
        ib: Ino,
        new: &Inode,
    ) -> Result<(Aspects, Option<(Vec<Vec<u8>>, Vec<Vec<u8>>)>)> {
        let mut s = Aspects::default();
        if old.stat.perms != new.stat.perms {
            s.insert(Aspects::MODE);
        }
        if (old.stat.uid, old.stat.gid) != (new.stat.uid, new.stat.gid) {
            s.insert(Aspects::OWNER);
        }
        if old.xattrs != new.xattrs {
            s.insert(Aspects::XATTRS);
        }
        if self.opts.mtime && old.stat.mtime != new.stat.mtime {
            s.insert(Aspects::MTIME);
        }
        match (&old.kind, &new.kind) {
            (Kind::Regular(x), Kind::Regular(y)) => {
                let la = content::locate(&self.a, ia, x);
                let mut lb = content::locate(&self.b, ib, y);
                // Ids of two algorithms: the second object is read.
                if let (Loc::Object(p, m), Loc::Object(q, n)) = (la, lb)
                    && p.algorithm() != q.algorithm()
                    && m == n
                {
                    lb = content::present(&self.b, ib, lb)?;
                }
                if !content::equal(self.repo, &mut self.digests, la, lb)? {
                    s.insert(Aspects::CONTENT);
                }
            }
            (Kind::Symlink(x), Kind::Symlink(y)) if x != y => s.insert(Aspects::TARGET),
            (Kind::CharDevice { rdev: x }, Kind::CharDevice { rdev: y })
            | (Kind::BlockDevice { rdev: x }, Kind::BlockDevice { rdev: y })
                if x != y =>
            {
                s.insert(Aspects::RDEV)
            }
            _ => {}
        }
        let mut links = None;
        if self.hardlinks && !old.kind.is_dir() {
            let na = self
                .links_a
                .names(self.a.tree, ia, path)
                .context("collecting hardlinks of the first tree")?;
            let nb = self
                .links_b
                .names(self.b.tree, ib, path)
                .context("collecting hardlinks of the second tree")?;
            if na != nb {
                s.insert(Aspects::HARDLINK);
                links = Some((na, nb));
            }
        }
        Ok((s, links))
    }
}

/// A change whose costly inodes were not read: their numbers, no inodes.
fn unread(path: Vec<u8>, status: Status, old: Option<Ino>, new: Option<Ino>) -> Change {
    let mut c = change(path, status, None, None);
    c.old_ino = old;
    c.new_ino = new;
    c
}

fn change(
    path: Vec<u8>,
    status: Status,
    old: Option<(Ino, Arc<Inode>)>,
    new: Option<(Ino, Arc<Inode>)>,
) -> Change {
    let (old_ino, old) = old.map_or((None, None), |(i, n)| (Some(i), Some(n)));
    let (new_ino, new) = new.map_or((None, None), |(i, n)| (Some(i), Some(n)));
    Change {
        path,
        status,
        aspects: Aspects::default(),
        old,
        new,
        old_ino,
        new_ino,
        old_links: Vec::new(),
        new_links: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsverity::{Algorithm, digest_bytes};
    use crate::tree::{FileData, MemTree, MemTreeBuilder, Stat};
    use anyhow::bail;

    fn file(data: FileData) -> Inode {
        Inode {
            stat: Stat {
                perms: 0o644,
                ..Stat::default()
            },
            kind: Kind::Regular(data),
            xattrs: vec![],
        }
    }

    /// `files`: (name, data, link group); names of one group share an inode.
    fn tree(files: &[(&str, FileData, u32)]) -> MemTree {
        let mut b = MemTreeBuilder::new();
        let root = b.add(Inode::default_dir());
        let mut groups: HashMap<u32, Ino> = HashMap::new();
        for (name, data, g) in files {
            let ino = *groups
                .entry(*g)
                .or_insert_with(|| b.add(file(data.clone())));
            b.link(root, name.as_bytes(), ino).unwrap();
        }
        b.build(root).unwrap()
    }

    fn diff(a: &MemTree, b: &MemTree, opts: &DiffOptions) -> Vec<(String, Vec<&'static str>)> {
        let mut out = Vec::new();
        super::super::diff_trees(None, a, b, opts, &mut |c| {
            out.push((
                format!(
                    "{}\t{}",
                    c.status.letter(),
                    String::from_utf8_lossy(&c.path)
                ),
                c.aspects.names(),
            ));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn inline_against_objects_and_hardlinks() {
        let bytes = b"the same bytes, inline on one side\n".repeat(3);
        let id = digest_bytes(Algorithm::Sha512, &bytes);
        let other = digest_bytes(
            Algorithm::Sha512,
            b"something else entirely, same size??\n"
                .repeat(3)
                .as_slice(),
        );
        let n = bytes.len() as u64;
        let a = tree(&[
            ("f", FileData::Inline(bytes.clone()), 1),
            ("g", FileData::object(other, n), 2),
            ("h1", FileData::Inline(b"h".to_vec()), 3),
            ("h2", FileData::Inline(b"h".to_vec()), 3),
            ("k", FileData::Inline(b"k".to_vec()), 4),
        ]);
        let b = tree(&[
            ("f", FileData::object(id, n), 1),
            ("g", FileData::Inline(bytes.clone()), 2),
            ("h1", FileData::Inline(b"h".to_vec()), 3),
            ("h2", FileData::Inline(b"h".to_vec()), 4),
            ("k", FileData::Inline(b"k".to_vec()), 5),
        ]);
        assert_eq!(
            diff(&a, &b, &DiffOptions::default()),
            [
                ("M\t/g".to_string(), vec!["content"]),
                ("M\t/h1".to_string(), vec!["hardlink"]),
                ("M\t/h2".to_string(), vec!["hardlink"]),
            ]
        );
        let no_links = DiffOptions {
            ignore_hardlinks: true,
            ..DiffOptions::default()
        };
        assert_eq!(
            diff(&a, &b, &no_links),
            [("M\t/g".to_string(), vec!["content"])]
        );
        assert!(diff(&a, &a, &DiffOptions::default()).is_empty());
    }

    /// A tree standing for a remote commit: ostree ids everywhere, and
    /// the inode of any non-directory refused (it would cost a fetch).
    struct Remote(MemTree, u8);

    impl Tree for Remote {
        fn root(&self) -> Ino {
            self.0.root()
        }
        fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
            let i = self.0.inode(ino)?;
            if !i.kind.is_dir() {
                bail!("inode {ino} of a remote file was read");
            }
            Ok(i)
        }
        fn readdir(&self, dir: Ino) -> Result<Arc<[crate::tree::DirEntry]>> {
            self.0.readdir(dir)
        }
        fn subtree_id(&self, ino: Ino) -> Option<SubtreeId> {
            let i = self.0.inode(ino).ok()?;
            Some(match &i.kind {
                // Every directory differs between the two trees.
                Kind::Directory => SubtreeId::OstreeDir {
                    tree: [self.1; 32],
                    meta: [ino as u8; 32],
                },
                Kind::Regular(FileData::Inline(b)) => {
                    let mut id = [0u8; 32];
                    id[..b.len()].copy_from_slice(b);
                    SubtreeId::OstreeFile(id)
                }
                _ => return None,
            })
        }
        fn costly_inode(&self, ino: Ino) -> bool {
            self.0.inode(ino).is_ok_and(|i| !i.kind.is_dir())
        }
    }

    fn remote(files: &[&str], tag: u8) -> Remote {
        let mut b = MemTreeBuilder::new();
        let root = b.add(Inode::default_dir());
        let mut dirs: HashMap<String, Ino> = HashMap::new();
        for spec in files {
            let (path, data) = spec.split_once('=').unwrap_or((spec, ""));
            let (parent, name) = match path.rsplit_once('/') {
                Some((d, n)) => (dirs[d], n),
                None => (root, path),
            };
            let ino = if spec.contains('=') {
                b.add(file(FileData::Inline(data.as_bytes().to_vec())))
            } else {
                let d = b.add(Inode::default_dir());
                dirs.insert(path.to_string(), d);
                d
            };
            b.link(parent, name.as_bytes(), ino).unwrap();
        }
        Remote(b.build(root).unwrap(), tag)
    }

    #[test]
    fn costly_files_are_compared_by_checksum_unread() {
        let a = remote(&["d", "d/x=1", "d/y=2", "gone=g", "same=s", "t=f"], 1);
        let b = remote(
            &["d", "d/x=1", "d/y=3", "new=n", "same=s", "t", "t/in=i"],
            2,
        );
        let mut out = Vec::new();
        super::super::diff_trees(None, &a, &b, &DiffOptions::default(), &mut |c| {
            out.push((
                format!(
                    "{}\t{}",
                    c.status.letter(),
                    String::from_utf8_lossy(&c.path)
                ),
                c.aspects.names(),
                (c.old.is_some(), c.new.is_some()),
                (c.old_ino.is_some(), c.new_ino.is_some()),
            ));
            Ok(())
        })
        .unwrap();
        // Path, aspects, inodes read (old, new), inode numbers given.
        type Seen = (String, Vec<&'static str>, (bool, bool), (bool, bool));
        let want: Vec<Seen> = vec![
            (
                "M\t/d/y".into(),
                vec!["checksum"],
                (false, false),
                (true, true),
            ),
            ("D\t/gone".into(), vec![], (false, false), (true, false)),
            ("A\t/new".into(), vec![], (false, false), (false, true)),
            ("T\t/t".into(), vec![], (false, true), (true, true)),
            ("A\t/t/in".into(), vec![], (false, false), (false, true)),
        ];
        assert_eq!(out, want);
    }
}
