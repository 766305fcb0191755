//! Comparing two trees: what `composefs diff` and `composefs ostree log
//! --stat` print. Owns the walk ([`diff_trees`]: two [`Tree`]s in parallel,
//! by sorted name, one [`Change`] per changed path), the content identity
//! rules ([`content`]: object ids before bytes), the per-directory summary
//! ([`DiffStat`]), the output formats ([`format`]: name-status, JSON, path
//! quoting) and the line diff behind `--content` ([`text`]).
//!
//! What counts as a change (see `docs/diff.md`):
//! - a path on one side only: `A` or `D`; below an added or deleted
//!   directory every path is listed too (depth first, names sorted);
//! - a path whose file type differs: `T` (and the paths below the side
//!   that is a directory, as `D` or `A`);
//! - otherwise `M` when an [`Aspects`] differs: content, mode bits, owner,
//!   xattrs, symlink target, device number, mtime (only with
//!   [`DiffOptions::mtime`]), hardlink (the set of names of the inode).
//!
//! Directory sizes and link counts are never compared (they depend on the
//! format). Hardlinks are compared only when both trees can express them:
//! not when either is an ostree commit (a tree whose root has an
//! [`SubtreeId::OstreeDir`] id), which gives each name its own inode.
//!
//! Remote trees: a file whose inode would cost a request
//! ([`Tree::costly_inode`]) is not read. Added or deleted, it is listed
//! with no inode (`old`/`new` `None`); against a directory it is a type
//! change; against another file it is `M` with the one aspect
//! [`Aspects::CHECKSUM`] when both have ostree checksums and these differ
//! (a file↔symlink change is among what that covers). So a diff of two
//! remote commits fetches dirtrees and dirmetas only, never a file object.
//!
//! Speed: contents are never read to decide equality when both sides name
//! them by object id (equal ids: equal; different: modified); inline bytes
//! against an object id are digested, not the object read; a local file is
//! digested only when its size matches. Subtrees with equal
//! [`Tree::subtree_id`]s (ostree dirtree + dirmeta checksums) are skipped
//! unread, so two commits sharing most of their tree diff in time
//! proportional to the change.

pub mod content;
pub mod format;
mod stat;
pub mod text;
mod walk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::repository::Repository;
use crate::tree::dirsource::{DirOptions, scan_dir};
use crate::tree::{DirEntry, FileData, Ino, Inode, MemTree, SubtreeId, Tree};

pub use stat::{DiffStat, StatCounts};

/// What to compare. `Default`: mtimes ignored, hardlinks compared (where
/// both trees can express them), whole trees.
#[derive(Clone, Debug, Default)]
pub struct DiffOptions {
    /// Compare modification times too (off by default: ostree commits
    /// store 0, OCI layers real times).
    pub mtime: bool,
    /// Never compare hardlink structure (it is not compared anyway when
    /// either tree is an ostree commit).
    pub ignore_hardlinks: bool,
    /// Only these subtrees: `/`-separated paths from the root (a leading
    /// `/` is optional; `.` and `..` are resolved, symlinks are not
    /// followed). Each must exist on at least one side. Empty: everything.
    pub paths: Vec<Vec<u8>>,
}

/// How a path differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Only in the second tree.
    Added,
    /// Only in the first tree.
    Deleted,
    /// On both sides, same file type, something in [`Aspects`] differs.
    Modified,
    /// On both sides with different file types (file ↔ directory,
    /// file ↔ symlink, …).
    TypeChanged,
}

impl Status {
    /// `A`, `D`, `M` or `T`, as `git diff --name-status` prints it.
    pub fn letter(self) -> char {
        match self {
            Status::Added => 'A',
            Status::Deleted => 'D',
            Status::Modified => 'M',
            Status::TypeChanged => 'T',
        }
    }
}

/// Which parts of a path present on both sides with the same type differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Aspects(u16);

impl Aspects {
    /// Regular file bytes.
    pub const CONTENT: Aspects = Aspects(1);
    /// Permission bits (with setuid, setgid, sticky).
    pub const MODE: Aspects = Aspects(2);
    /// uid or gid.
    pub const OWNER: Aspects = Aspects(4);
    /// Extended attributes (names or values).
    pub const XATTRS: Aspects = Aspects(8);
    /// Symlink target.
    pub const TARGET: Aspects = Aspects(16);
    /// Device number of a character or block device.
    pub const RDEV: Aspects = Aspects(32);
    /// Modification time (only with [`DiffOptions::mtime`]).
    pub const MTIME: Aspects = Aspects(64);
    /// The set of names of the inode (hardlinks).
    pub const HARDLINK: Aspects = Aspects(128);
    /// The file's ostree checksum: something of content, mode, owner,
    /// xattrs, target or file/symlink type differs, not read which (a
    /// remote file not fetched: see [`Tree::costly_inode`]).
    pub const CHECKSUM: Aspects = Aspects(256);

    const NAMES: [(Aspects, &'static str); 9] = [
        (Aspects::CONTENT, "content"),
        (Aspects::MODE, "mode"),
        (Aspects::OWNER, "owner"),
        (Aspects::XATTRS, "xattrs"),
        (Aspects::TARGET, "target"),
        (Aspects::RDEV, "rdev"),
        (Aspects::MTIME, "mtime"),
        (Aspects::HARDLINK, "hardlink"),
        (Aspects::CHECKSUM, "checksum"),
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Aspects) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Aspects) {
        self.0 |= other.0;
    }

    /// The names of the aspects set, in a fixed order: `content`, `mode`,
    /// `owner`, `xattrs`, `target`, `rdev`, `mtime`, `hardlink`, `checksum`.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(a, _)| self.contains(*a))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// One changed path.
#[derive(Clone, Debug)]
pub struct Change {
    /// Absolute path bytes (`/usr/bin/foo`; the root is `/`).
    pub path: Vec<u8>,
    pub status: Status,
    /// Empty unless [`Status::Modified`].
    pub aspects: Aspects,
    /// The inode in the first tree (`None` when added, or not read: see
    /// [`Tree::costly_inode`]).
    pub old: Option<Arc<Inode>>,
    /// The inode in the second tree (`None` when deleted, or not read).
    pub new: Option<Arc<Inode>>,
    /// Its number in the first tree (to read a local file's content).
    pub old_ino: Option<Ino>,
    /// Its number in the second tree.
    pub new_ino: Option<Ino>,
    /// With [`Aspects::HARDLINK`]: every path naming the inode in the
    /// first tree (sorted); empty otherwise.
    pub old_links: Vec<Vec<u8>>,
    /// Same for the second tree.
    pub new_links: Vec<Vec<u8>>,
}

/// One side of a comparison: a tree, and when it was read from a local
/// directory, where its files are (their contents are digested or read
/// only when needed).
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub tree: &'a dyn Tree,
    pub local: Option<&'a LocalDir>,
}

impl<'a> Side<'a> {
    /// A stored tree: contents inline or by object id.
    pub fn tree(tree: &'a dyn Tree) -> Side<'a> {
        Side { tree, local: None }
    }

    /// Whether this tree is an ostree commit (see [`SubtreeId::OstreeDir`]).
    fn is_ostree_commit(&self) -> bool {
        matches!(
            self.tree.subtree_id(self.tree.root()),
            Some(SubtreeId::OstreeDir { .. })
        )
    }
}

/// A directory on disk read as a tree for comparison: metadata only;
/// regular files are `FileData::External` without digest, and their paths
/// are kept so that [`content`] can digest or read them on demand.
pub struct LocalDir {
    root: PathBuf,
    tree: MemTree,
    files: HashMap<Ino, PathBuf>,
}

impl LocalDir {
    /// Read the metadata of everything below `path` (no symlink followed,
    /// hardlinks detected, xattrs of every namespace, no contents).
    pub fn read(path: &Path) -> Result<LocalDir> {
        // The content function is called once per file, in `scan.files` order.
        let mut paths = Vec::new();
        let scan = scan_dir(path, &DirOptions::default(), &mut |p, _, size| {
            paths.push(p.to_path_buf());
            Ok(FileData::External {
                size,
                redirect: None,
                digest: None,
            })
        })
        .with_context(|| format!("cannot read directory {}", path.display()))?;
        let files = scan.files.iter().copied().zip(paths).collect();
        let tree = scan
            .build()
            .with_context(|| format!("cannot read directory {}", path.display()))?;
        Ok(LocalDir {
            root: path.to_path_buf(),
            tree,
            files,
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn tree(&self) -> &MemTree {
        &self.tree
    }

    /// Where regular file `ino`'s content is on disk.
    pub fn file_path(&self, ino: Ino) -> Option<&Path> {
        self.files.get(&ino).map(PathBuf::as_path)
    }

    pub fn side(&self) -> Side<'_> {
        Side {
            tree: &self.tree,
            local: Some(self),
        }
    }
}

impl Tree for LocalDir {
    fn root(&self) -> Ino {
        self.tree.root()
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        self.tree.inode(ino)
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        self.tree.readdir(dir)
    }

    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        self.tree.nlink(ino)
    }
}

/// Compare two stored trees; `out` gets every change in walk order
/// (depth first, names sorted by bytes, a directory before its entries).
/// `repo` is needed only to compare objects named with different
/// algorithms (never for trees of one repository). Stops at the first
/// error (of `out` too).
pub fn diff_trees(
    repo: Option<&Repository>,
    a: &dyn Tree,
    b: &dyn Tree,
    opts: &DiffOptions,
    out: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    diff_sides(repo, Side::tree(a), Side::tree(b), opts, out)
}

/// [`diff_trees`] where either side may be a [`LocalDir`].
pub fn diff_sides(
    repo: Option<&Repository>,
    a: Side<'_>,
    b: Side<'_>,
    opts: &DiffOptions,
    out: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    walk::Walker::new(repo, a, b, opts).run(out)
}

/// Normalise a limiting path: components without empty ones and `.`,
/// `..` resolved (never above the root). `/` for the root.
pub fn normalize_path(p: &[u8]) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    let mut out = Vec::with_capacity(p.len() + 1);
    for c in &comps {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_path(b""), b"/");
        assert_eq!(normalize_path(b"/"), b"/");
        assert_eq!(normalize_path(b"usr//bin/"), b"/usr/bin");
        assert_eq!(normalize_path(b"/usr/./lib/../bin"), b"/usr/bin");
        assert_eq!(normalize_path(b"/../../etc"), b"/etc");
    }

    #[test]
    fn aspect_names() {
        let mut a = Aspects::default();
        assert!(a.is_empty());
        a.insert(Aspects::HARDLINK);
        a.insert(Aspects::CONTENT);
        assert_eq!(a.names(), ["content", "hardlink"]);
        assert!(a.contains(Aspects::CONTENT));
        assert!(!a.contains(Aspects::MODE));
    }
}
