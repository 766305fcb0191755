//! cfsctl's "container root" view of a directory (`cfsctl create-image` and
//! `compute-id` without `--no-propagate-usr-to-root`): the root takes
//! `/usr`'s mode, owner, mtime and xattrs; `/run`, if a directory, is
//! emptied and takes `/usr`'s mtime; then every inode keeps only the
//! allowed xattrs (`security.capability`, and `user.*` when asked).

use anyhow::{Context, Result};

use super::{Ino, Kind, MemTree, Tree};

/// Which xattrs survive (cfsctl's `--xattrs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XattrFilter {
    /// Only `security.capability`.
    #[default]
    AllowlistOnly,
    /// `security.capability` and every `user.*` xattr.
    KeepUserXattrs,
}

impl XattrFilter {
    fn keeps(self, name: &[u8]) -> bool {
        name == b"security.capability"
            || (self == XattrFilter::KeepUserXattrs && name.starts_with(b"user."))
    }
}

/// The directory `name` in the root, if there is one.
fn root_dir(tree: &MemTree, name: &[u8]) -> Result<Option<Ino>> {
    let root = tree.root();
    for e in tree.readdir(root)?.iter() {
        if e.name == name {
            return Ok(tree.inode(e.ino)?.kind.is_dir().then_some(e.ino));
        }
    }
    Ok(None)
}

/// Apply the transform. Returns `false`, changing nothing, when the root
/// has no `usr` directory (cfsctl refuses such a tree; callers then read
/// it as it is, as `--no-propagate-usr-to-root` would).
pub fn transform(tree: &mut MemTree, xattrs: XattrFilter) -> Result<bool> {
    let Some(usr) = root_dir(tree, b"usr")? else {
        return Ok(false);
    };
    let usr_inode = tree.inode(usr).context("/usr")?;
    let root = tree.root();
    if let Some(run) = root_dir(tree, b"run")? {
        tree.clear_dir(run)?;
        let mut r = (*tree.inode(run)?).clone();
        r.stat.mtime = usr_inode.stat.mtime;
        tree.map_inodes(|i, _| (i == run).then(|| r.clone()))?;
    }
    let mut new_root = (*tree.inode(root)?).clone();
    new_root.stat = usr_inode.stat;
    new_root.xattrs = usr_inode.xattrs.clone();
    debug_assert!(matches!(new_root.kind, Kind::Directory));
    tree.map_inodes(|i, inode| {
        let mut inode = if i == root {
            new_root.clone()
        } else {
            inode.clone()
        };
        let before = inode.xattrs.len();
        inode.xattrs.retain(|(n, _)| xattrs.keeps(n));
        (i == root || inode.xattrs.len() != before).then_some(inode)
    })?;
    Ok(true)
}
