//! A stored commit as a filesystem tree: what `ostree checkout` of the
//! commit shows. Directories take owner, mode and xattrs from their
//! dirmeta, files from their header; every mtime is 0, as ostree checks
//! out. Entries naming the same file object are one inode (hardlinks, as
//! a checkout from a bare repository makes them and as composefs-rs
//! images them): its link count is the number of such entries.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::commitstream::{CommitStream, Content};
use super::objects::{Commit, DirMeta, DirTree, FileHeader};
use crate::tree::{FileData, Ino, Inode, Kind, MemTree, MemTreeBuilder, Stat, mode};

/// Limits on the expanded tree: a dirtree can be named by many
/// directories, so a small commit can describe an enormous tree.
pub const MAX_INODES: u64 = 4 << 20;
pub const MAX_DEPTH: usize = 2048;

/// Check that the tree under `root` expands to at most [`MAX_INODES`]
/// entries and [`MAX_DEPTH`] levels, in time linear in the number of
/// distinct dirtrees (sizes are memoised per dirtree).
pub fn check_expansion(
    root: &Checksum,
    dirtree: &mut dyn FnMut(&Checksum) -> Result<DirTree>,
) -> Result<u64> {
    let mut size: HashMap<Checksum, (u64, usize)> = HashMap::new();
    // Post-order over distinct dirtrees, with an explicit stack.
    let mut stack: Vec<(Checksum, bool)> = vec![(*root, false)];
    let mut trees: HashMap<Checksum, DirTree> = HashMap::new();
    while let Some((t, children_done)) = stack.pop() {
        if size.contains_key(&t) {
            continue;
        }
        if !children_done {
            if let std::collections::hash_map::Entry::Vacant(e) = trees.entry(t) {
                e.insert(dirtree(&t)?);
            }
            stack.push((t, true));
            for (_, c, _) in &trees[&t].dirs {
                if !size.contains_key(c) {
                    stack.push((*c, false));
                }
            }
            continue;
        }
        let tree = trees.remove(&t).expect("loaded above");
        let mut n = tree.files.len() as u64;
        let mut depth = 0usize;
        for (_, c, _) in &tree.dirs {
            let (cn, cd) = *size.get(c).context("dirtree order")?;
            n = n.saturating_add(1).saturating_add(cn);
            depth = depth.max(cd + 1);
        }
        if n > MAX_INODES {
            bail!("dirtree {t} expands to more than {MAX_INODES} entries (shared subtrees)");
        }
        if depth > MAX_DEPTH {
            bail!("dirtree {t}: directories nested deeper than {MAX_DEPTH} levels");
        }
        size.insert(t, (n, depth));
    }
    Ok(size[root].0)
}

/// A directory inode from its dirmeta (mtime 0, as ostree checks out).
pub fn dir_inode(m: &DirMeta) -> Inode {
    Inode {
        stat: Stat {
            perms: m.mode & mode::PERMS,
            uid: m.uid,
            gid: m.gid,
            mtime: Default::default(),
        },
        kind: Kind::Directory,
        xattrs: sorted(&m.xattrs),
    }
}

fn sorted(x: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v = x.to_vec();
    v.sort();
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

/// A file or symlink inode from its header and stored content.
pub fn file_inode(h: &FileHeader, content: Content) -> Inode {
    let kind = if h.is_symlink() {
        Kind::Symlink(h.symlink.as_bytes().to_vec())
    } else {
        Kind::Regular(match content {
            Content::Inline(b) => FileData::Inline(b),
            Content::External(id) => FileData::object(id, h.size),
        })
    };
    Inode {
        stat: Stat {
            perms: h.mode & mode::PERMS,
            uid: h.uid,
            gid: h.gid,
            mtime: Default::default(),
        },
        kind,
        xattrs: sorted(&h.xattrs),
    }
}

/// Build the tree of the commit stored in `s`.
pub fn commit_tree(s: &CommitStream) -> Result<MemTree> {
    build(s, false)
}

/// The tree of the commit's image, as composefs-rs writes it: like
/// [`commit_tree`], but xattr names keep the NUL that ends them in
/// ostree's encoding (composefs-rs puts ostree's names into the image as
/// they are; every stored name has it). Such a name cannot be shown
/// through FUSE or read back with `getxattr` by its plain name; the FUSE
/// view ([`super::committree`]) shows the plain names.
pub fn image_tree(s: &CommitStream) -> Result<MemTree> {
    build(s, true)
}

fn with_nul(mut i: Inode) -> Inode {
    for (n, _) in &mut i.xattrs {
        n.push(0);
    }
    i
}

fn build(s: &CommitStream, nul_names: bool) -> Result<MemTree> {
    let fix = |i: Inode| if nul_names { with_nul(i) } else { i };
    let c = s.commit;
    let cbytes = s
        .metadata(&c, ObjType::Commit)?
        .with_context(|| format!("stored commit {c} lacks its commit object"))?;
    let commit = Commit::parse(cbytes).with_context(|| format!("commit {c}"))?;
    check_expansion(&commit.root_tree, &mut |t| {
        let data = s
            .metadata(t, ObjType::DirTree)?
            .with_context(|| format!("commit {c}: dirtree {t} is missing"))?;
        DirTree::parse(data).with_context(|| format!("dirtree {t}"))
    })
    .with_context(|| format!("commit {c}"))?;
    let mut b = MemTreeBuilder::new();
    let root_meta = dirmeta(s, &commit.root_meta)?;
    let root = b.add(fix(dir_inode(&root_meta)));
    let mut count = 1u64;
    let mut files: HashMap<Checksum, Ino> = HashMap::new();
    // (dirtree, inode, depth)
    let mut work: Vec<(Checksum, Ino, usize)> = vec![(commit.root_tree, root, 0)];
    while let Some((t, ino, depth)) = work.pop() {
        if depth > MAX_DEPTH {
            bail!("commit {c}: directories nested deeper than {MAX_DEPTH} levels");
        }
        let data = s
            .metadata(&t, ObjType::DirTree)?
            .with_context(|| format!("commit {c}: dirtree {t} is missing"))?;
        let tree = DirTree::parse(data).with_context(|| format!("dirtree {t}"))?;
        count += (tree.files.len() + tree.dirs.len()) as u64;
        if count > MAX_INODES {
            bail!("commit {c}: tree expands to more than {MAX_INODES} entries");
        }
        for (name, f) in &tree.files {
            let child = match files.get(f) {
                Some(&ino) => ino,
                None => {
                    let (_, h, content) = s
                        .file(f)?
                        .with_context(|| format!("commit {c}: file {f} ({name}) is missing"))?;
                    let ino = b.add(fix(file_inode(&h, content)));
                    files.insert(*f, ino);
                    ino
                }
            };
            b.link(ino, name.as_bytes(), child)
                .with_context(|| format!("dirtree {t}: {name:?}"))?;
        }
        for (name, dt, dm) in &tree.dirs {
            let m = dirmeta(s, dm)?;
            let child = b.add(fix(dir_inode(&m)));
            b.link(ino, name.as_bytes(), child)
                .with_context(|| format!("dirtree {t}: {name:?}"))?;
            work.push((*dt, child, depth + 1));
        }
    }
    b.build(root)
}

fn dirmeta(s: &CommitStream, m: &Checksum) -> Result<DirMeta> {
    let data = s
        .metadata(m, ObjType::DirMeta)?
        .with_context(|| format!("commit {}: dirmeta {m} is missing", s.commit))?;
    DirMeta::parse_stored(data).with_context(|| format!("dirmeta {m}"))
}
