//! The tree composefs-rs puts in an OCI image's composefs image: the
//! merged layers with its OCI transform applied (`transform_for_oci` in
//! composefs-rs 0.9.4, allowlist-only xattr mode):
//!
//! 1. The root directory takes `/usr`'s permissions, owner, group, mtime
//!    (seconds and nanoseconds) and xattrs: whatever the layers said about
//!    `/`, if anything, is dropped. Without a `/usr` directory there is no
//!    image (composefs-rs refuses it too).
//! 2. `/run`, if it is a directory, is emptied and takes `/usr`'s mtime
//!    (its other metadata stays). A `/run` that is not a directory is an
//!    error, as in composefs-rs.
//! 3. Every inode keeps only the xattrs of the allowlist
//!    ([`XATTR_ALLOWLIST`]: `security.capability`).
//! 4. Only inodes still reachable remain; hardlinks stay shared inodes
//!    (their link count drops when a name went with `/run`).
//!
//! The merge ([`super::merge`]) already gives mtimes as the tar headers
//! hold them (whole seconds, or PAX fractions) and hardlinks as shared
//! inodes, as composefs-rs reads layers.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::tree::{Ino, Inode, Kind, MemTree, MemTreeBuilder, Tree};

/// The xattrs an OCI image keeps.
pub const XATTR_ALLOWLIST: &[&[u8]] = &[b"security.capability"];

/// Why a tree has no OCI image: no `/usr` directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "the image has no /usr directory: composefs images of OCI images take the root's metadata from /usr (composefs-rs refuses such images too)"
)]
pub struct NoUsr;

/// Why a tree has no OCI image: `/run` is not a directory.
#[derive(Debug, thiserror::Error)]
#[error("/run is not a directory: composefs-rs's OCI transform cannot empty it")]
pub struct RunNotDir;

/// Whether `e` says the tree has no OCI image ([`NoUsr`], [`RunNotDir`]).
pub fn is_untransformable(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<NoUsr>().is_some() || c.downcast_ref::<RunNotDir>().is_some())
}

fn filtered(inode: &Inode) -> Inode {
    let mut out = inode.clone();
    out.xattrs
        .retain(|(name, _)| XATTR_ALLOWLIST.contains(&name.as_slice()));
    out
}

/// The transformed tree (see the module doc). Errors with [`NoUsr`] when
/// there is no `/usr` directory.
pub fn transform(tree: &dyn Tree) -> Result<MemTree> {
    let root = tree.root();
    let top = tree.readdir(root)?;
    let find = |name: &[u8]| top.iter().find(|e| e.name == name).map(|e| e.ino);
    let usr = match find(b"usr") {
        Some(ino) if tree.inode(ino)?.kind.is_dir() => tree.inode(ino)?,
        _ => return Err(NoUsr.into()),
    };
    let run = match find(b"run") {
        Some(ino) if tree.inode(ino)?.kind.is_dir() => Some(ino),
        Some(_) => return Err(RunNotDir.into()),
        None => None,
    };

    let mut b = MemTreeBuilder::new();
    let mut root_inode = filtered(tree.inode(root)?.as_ref());
    root_inode.stat = crate::tree::Stat {
        perms: usr.stat.perms,
        uid: usr.stat.uid,
        gid: usr.stat.gid,
        mtime: usr.stat.mtime,
    };
    root_inode.xattrs = filtered(&usr).xattrs;
    let new_root = b.add(root_inode);
    // Old inode → new one, for hardlinks.
    let mut placed: HashMap<Ino, Ino> = HashMap::new();
    let mut stack = vec![(root, new_root)];
    while let Some((dir, new_dir)) = stack.pop() {
        if Some(dir) == run {
            continue;
        }
        for e in tree.readdir(dir)?.iter() {
            let child = match placed.get(&e.ino) {
                Some(&n) => n,
                None => {
                    let inode: Arc<Inode> = tree.inode(e.ino)?;
                    let keep = inode
                        .xattrs
                        .iter()
                        .all(|(name, _)| XATTR_ALLOWLIST.contains(&name.as_slice()));
                    // Unchanged inodes are shared with the merged tree,
                    // not copied: the transform costs little memory.
                    let n = if keep && Some(e.ino) != run {
                        b.add_shared(inode.clone())
                    } else {
                        let mut new = filtered(&inode);
                        if Some(e.ino) == run {
                            new.stat.mtime = usr.stat.mtime;
                        }
                        b.add(new)
                    };
                    if matches!(inode.kind, Kind::Directory) {
                        stack.push((e.ino, n));
                    } else {
                        placed.insert(e.ino, n);
                    }
                    n
                }
            };
            b.link(new_dir, &e.name, child)
                .with_context(|| format!("entry {:?}", String::from_utf8_lossy(&e.name)))?;
        }
    }
    b.build(new_root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{FileData, Stat, Timespec};

    fn dir(perms: u32, sec: i64, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Inode {
        Inode {
            stat: Stat {
                perms,
                uid: 1,
                gid: 2,
                mtime: Timespec { sec, nsec: 5 },
            },
            kind: Kind::Directory,
            xattrs,
        }
    }

    #[test]
    fn root_from_usr_run_emptied_xattrs_filtered() {
        let mut b = MemTreeBuilder::new();
        let root = b.add(dir(0o700, 1, vec![]));
        let usr = b.add(dir(
            0o755,
            100,
            vec![
                (b"security.capability".to_vec(), b"c".to_vec()),
                (b"user.x".to_vec(), b"u".to_vec()),
            ],
        ));
        let run = b.add(dir(0o711, 7, vec![]));
        let f = b.add(Inode {
            stat: Stat::default(),
            kind: Kind::Regular(FileData::Inline(b"x".to_vec())),
            xattrs: vec![(b"security.selinux".to_vec(), b"l".to_vec())],
        });
        b.link(root, b"usr", usr).unwrap();
        b.link(root, b"run", run).unwrap();
        b.link(run, b"f", f).unwrap();
        b.link(usr, b"f", f).unwrap();
        let t = transform(&b.build(root).unwrap()).unwrap();
        let r = t.inode(t.root()).unwrap();
        assert_eq!(r.stat.perms, 0o755);
        assert_eq!(r.stat.mtime.sec, 100);
        assert_eq!(
            r.xattrs,
            vec![(b"security.capability".to_vec(), b"c".to_vec())]
        );
        let top = t.readdir(t.root()).unwrap();
        let run = top.iter().find(|e| e.name == b"run").unwrap().ino;
        assert!(t.readdir(run).unwrap().is_empty());
        assert_eq!(t.inode(run).unwrap().stat.mtime.sec, 100);
        assert_eq!(t.inode(run).unwrap().stat.perms, 0o711);
        let usr = top.iter().find(|e| e.name == b"usr").unwrap().ino;
        let f = t.readdir(usr).unwrap()[0].ino;
        assert!(t.inode(f).unwrap().xattrs.is_empty());
        assert_eq!(t.nlink(f).unwrap(), Some(1));
    }

    #[test]
    fn no_usr_is_refused() {
        let mut b = MemTreeBuilder::new();
        let root = b.add(dir(0o755, 1, vec![]));
        let e = transform(&b.build(root).unwrap()).unwrap_err();
        assert!(e.downcast_ref::<NoUsr>().is_some());
    }
}
