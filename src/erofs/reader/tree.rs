//! The tree view of an image ([`Tree`] over [`ErofsImage`]): inodes as
//! the rest of the tool sees them, and directory listings that cannot loop.
//!
//! It undoes what the writer does for overlayfs, as the C reader does
//! (`lcfs_build_node_from_image` / `lcfs_build_node_erofs_xattr` in
//! `libcomposefs/lcfs-writer-erofs.c`):
//! - `trusted.overlay.metacopy` gives the file's fs-verity digest (a
//!   36-byte value is sha256; a 68-byte one with algorithm 2 is sha512,
//!   which the C reader ignores) and `trusted.overlay.redirect` its backing
//!   path (leading `/` removed); neither is shown as an xattr;
//! - a regular file with `trusted.overlay.overlay.whiteout` is a whiteout
//!   again (character device 0:0);
//! - `trusted.overlay.overlay.X` is shown as `trusted.overlay.X`; every other
//!   `trusted.overlay.*` (the root's `opaque=y` marker among them) and
//!   `trusted.overlay.overlay.whiteouts`, `user.overlay.whiteout(s)` are
//!   hidden;
//! - character devices 0:0 (the whiteout stubs `00`..`ff`) are left out of
//!   directory listings.
//!
//! As in C, the `opaque=x` markers of directories holding whiteouts (format
//! version 1) come back as `trusted.overlay.opaque=x` and
//! `user.overlay.opaque=x`.
//!
//! A directory may be listed only once reached from the root through a
//! single parent, so no walk through this interface can loop. Errors are
//! the reader's [`Error`]s, inside an `anyhow::Error` whose context says
//! which directory entry led there.

use std::sync::Arc;

use anyhow::{Context, bail};

use super::error::{Error, Result};
use super::{ErofsImage, format, metacopy_digest, overlay};
use crate::show::short_path;
use crate::tree::{DirEntry, FileData, Ino, Inode, Kind, Stat, Tree, check_name, mode};

impl ErofsImage {
    /// Build the tree inode for `nid` (overlay xattrs interpreted).
    pub fn load_inode(&self, nid: u64) -> Result<Inode> {
        let raw = self.raw_inode(nid)?;
        let is_reg = raw.file_format() == mode::S_IFREG;
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut redirect = None;
        let mut digest = None;
        let mut whiteout = false;
        for x in self.raw_xattrs(&raw)? {
            let name = x.name.as_slice();
            if name == overlay::REDIRECT {
                if is_reg {
                    let v = match x.value.strip_prefix(b"/") {
                        Some(rest) if x.value.len() > 1 => rest.to_vec(),
                        _ => x.value.clone(),
                    };
                    redirect = Some(v);
                }
                continue;
            }
            if name == overlay::METACOPY {
                if is_reg {
                    digest = metacopy_digest(&x.value);
                }
                continue;
            }
            if name == overlay::ESCAPED_WHITEOUT && is_reg {
                whiteout = true;
                continue;
            }
            if name == overlay::ESCAPED_WHITEOUTS
                || name == overlay::USERXATTR_WHITEOUT
                || name == overlay::USERXATTR_WHITEOUTS
            {
                continue;
            }
            let key = if let Some(rest) = name.strip_prefix(overlay::ESCAPED_PREFIX) {
                [overlay::PREFIX, rest].concat()
            } else if name.starts_with(overlay::PREFIX) {
                continue;
            } else {
                x.name.clone()
            };
            match xattrs.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => *v = x.value,
                None => xattrs.push((key, x.value)),
            }
        }
        xattrs.sort_by(|a, b| a.0.cmp(&b.0));

        let kind = match raw.file_format() {
            mode::S_IFDIR => Kind::Directory,
            mode::S_IFREG if whiteout => Kind::CharDevice { rdev: 0 },
            mode::S_IFREG if raw.layout == format::LAYOUT_CHUNK_BASED => {
                Kind::Regular(FileData::External {
                    size: raw.size,
                    redirect,
                    digest,
                })
            }
            mode::S_IFREG => Kind::Regular(FileData::Inline(self.flat_data(&raw)?)),
            mode::S_IFLNK => {
                if raw.size == 0 || raw.size > 4095 {
                    return Err(Error::corrupt(
                        Some(nid),
                        Some(raw.offset),
                        format!("symlink target of {} bytes", raw.size),
                    ));
                }
                Kind::Symlink(self.flat_data(&raw)?)
            }
            mode::S_IFCHR => Kind::CharDevice {
                rdev: u64::from(raw.u),
            },
            mode::S_IFBLK => Kind::BlockDevice {
                rdev: u64::from(raw.u),
            },
            mode::S_IFIFO => Kind::Fifo,
            _ => Kind::Socket,
        };
        Ok(Inode {
            stat: Stat {
                perms: u32::from(raw.mode) & mode::PERMS,
                uid: raw.uid,
                gid: raw.gid,
                mtime: raw.mtime,
            },
            kind,
            xattrs,
        })
    }

    /// Read the whole tree through the [`Tree`] interface (every inode,
    /// every directory), as a consistency check; returns the number of
    /// names visited.
    pub fn check(&self) -> anyhow::Result<u64> {
        let mut names = 0u64;
        let mut dirs = vec![self.root()];
        self.inode(self.root())?;
        while let Some(d) = dirs.pop() {
            for e in self.readdir(d)?.iter() {
                names += 1;
                if self.inode(e.ino)?.kind.is_dir() {
                    dirs.push(e.ino);
                }
            }
        }
        Ok(names)
    }
}

impl Tree for ErofsImage {
    fn root(&self) -> Ino {
        self.root_nid()
    }

    fn inode(&self, ino: Ino) -> anyhow::Result<Arc<Inode>> {
        Ok(Arc::new(self.load_inode(ino)?))
    }

    /// As stored: mkcomposefs records 2 + subdirectories for directories
    /// and the hardlink count for everything else.
    fn nlink(&self, ino: Ino) -> anyhow::Result<Option<u64>> {
        Ok(Some(u64::from(self.raw_inode(ino)?.nlink)))
    }

    /// Lists a directory. The root may always be listed; any other
    /// directory only once it was seen in its parent's listing, and a
    /// directory seen under two parents (or under itself, or the root under
    /// anything) is an error: walks through this interface cannot loop.
    fn readdir(&self, dir: Ino) -> anyhow::Result<Arc<[DirEntry]>> {
        let corrupt = |what: String| Error::corrupt(Some(dir), None, what);
        let raw = self.raw_inode(dir)?;
        if !raw.is_dir() {
            return Err(Error::corrupt(Some(dir), Some(raw.offset), "not a directory").into());
        }
        let root = self.root_nid();
        if dir != root {
            let parents = self.parents.lock().unwrap_or_else(|e| e.into_inner());
            if !parents.contains_key(&dir) {
                // The caller's doing, not the image's.
                bail!("directory inode {dir} was not reached from the root");
            }
        }
        let mut out = Vec::new();
        let mut subdirs = Vec::new();
        for e in self.raw_dirents(&raw)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            check_name(&e.name).map_err(|e| corrupt(format!("bad directory entry: {e:#}")))?;
            let child = self.raw_inode(e.nid).with_context(|| {
                format!("directory inode {dir}: entry {:?}", short_path(&e.name))
            })?;
            if child.is_whiteout() {
                continue;
            }
            if child.is_dir() {
                if e.nid == root || e.nid == dir {
                    let what = format!(
                        "directory entry {:?} loops back to inode {}",
                        short_path(&e.name),
                        e.nid
                    );
                    return Err(corrupt(what).into());
                }
                subdirs.push(e.nid);
            }
            out.push(DirEntry {
                name: e.name,
                ino: e.nid,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
            let what = format!(
                "the name {:?} appears twice in the directory",
                short_path(&w[0].name)
            );
            return Err(corrupt(what).into());
        }
        subdirs.sort_unstable();
        if subdirs.windows(2).any(|w| w[0] == w[1]) {
            let what = "a subdirectory appears under two names".to_string();
            return Err(corrupt(what).into());
        }
        let mut parents = self.parents.lock().unwrap_or_else(|e| e.into_inner());
        for c in &subdirs {
            if let Some(p) = parents.get(c)
                && *p != dir
            {
                let what = format!(
                    "directory appears in directories {p} and {dir} (a loop or a directory hardlink)"
                );
                return Err(Error::corrupt(Some(*c), None, what).into());
            }
        }
        for c in subdirs {
            parents.insert(c, dir);
        }
        Ok(out.into())
    }
}
