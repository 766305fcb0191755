//! The inode table: FUSE numbers to the tree's and back, inodes and
//! listings through the daemon's caches (big listings kept while read),
//! attributes as the kernel wants them, and how long it may keep them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::TreeFs;
use crate::fuse::lock;
use crate::tree::{DirEntry, Ino, Inode, Kind, Timespec};

/// How long the kernel may cache entries and attributes: the trees are
/// immutable, so as long as it likes.
pub(super) const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long the kernel may cache live entries and attributes (refs that a
/// pull or a gc may change): short, so changes show at once.
const LIVE_TTL: Duration = Duration::from_secs(1);

/// Listings larger than the whole cache budget kept while they are read
/// (a kernel reads a directory in chunks of a few dozen entries, each a
/// request that would otherwise read the whole listing again): at most
/// this many, each dropped once read to its end or pushed out by newer
/// ones. So a huge directory costs the daemon one copy of its listing
/// while it is being listed (none for a tree held in memory, whose
/// listings are shared), not one per request, and nothing after.
const BIG_LISTINGS: usize = 2;

fn to_system_time(t: Timespec) -> SystemTime {
    let nsec = t.nsec.min(999_999_999);
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, nsec)
    } else if nsec == 0 {
        UNIX_EPOCH - Duration::new(t.sec.unsigned_abs(), 0)
    } else {
        // sec + nsec/1e9 with sec < 0: (|sec| - 1) s and (1e9 - nsec) ns before the epoch.
        UNIX_EPOCH - Duration::new(t.sec.unsigned_abs() - 1, 1_000_000_000 - nsec)
    }
}

/// The kernel's 32-bit `new_encode_dev` of a glibc `dev_t`.
fn encode_dev(rdev: u64) -> u32 {
    let major = rustix::fs::major(rdev as _);
    let minor = rustix::fs::minor(rdev as _);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub(super) fn file_type(kind: &Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::Regular(_) => FileType::RegularFile,
        Kind::Symlink(_) => FileType::Symlink,
        Kind::CharDevice { .. } => FileType::CharDevice,
        Kind::BlockDevice { .. } => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

impl TreeFs {
    pub(super) fn to_tree(&self, ino: INodeNo) -> Result<Ino, Errno> {
        match ino.0 {
            0 => Err(Errno::ENOENT),
            1 => Ok(self.root),
            n => {
                let t = n - 2;
                if t == self.root {
                    Err(Errno::ENOENT)
                } else {
                    Ok(t)
                }
            }
        }
    }

    pub(super) fn to_fuse(&self, ino: Ino) -> INodeNo {
        if ino == self.root {
            INodeNo(1)
        } else {
            INodeNo(ino.wrapping_add(2))
        }
    }

    /// The inode, or `EIO` (logged) when the tree cannot produce it.
    pub(super) fn inode(&self, ino: Ino) -> Result<Arc<Inode>, Errno> {
        let live = self.tree.live(ino);
        if !live && let Some(i) = self.nodes.inode(ino) {
            return Ok(i);
        }
        let i = self.tree.inode(ino).map_err(|e| {
            tracing::error!("cannot load inode {ino}: {e:#}");
            Errno::EIO
        })?;
        if !live {
            self.nodes.put_inode(ino, i.clone());
        }
        Ok(i)
    }

    pub(super) fn dir_entries(&self, ino: Ino) -> Result<Arc<[DirEntry]>, Errno> {
        let live = self.tree.live(ino);
        if !live {
            if let Some(d) = self.nodes.dir(ino) {
                return Ok(d);
            }
            if let Some(d) = self.big_listing(ino) {
                return Ok(d);
            }
        }
        let inode = self.inode(ino)?;
        if !inode.kind.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let d = self.tree.readdir(ino).map_err(|e| {
            tracing::error!("cannot list directory inode {ino}: {e:#}");
            Errno::EIO
        })?;
        if !live && !self.nodes.put_dir(ino, d.clone()) {
            lock(&self.big_dirs).insert(ino);
            let mut big = lock(&self.big);
            big.retain(|(i, _)| *i != ino);
            big.push_front((ino, d.clone()));
            big.truncate(BIG_LISTINGS);
        }
        Ok(d)
    }

    /// A listing kept in [`Self::big`], made the most recent.
    fn big_listing(&self, ino: Ino) -> Option<Arc<[DirEntry]>> {
        let mut big = lock(&self.big);
        let pos = big.iter().position(|(i, _)| *i == ino)?;
        let entry = big.remove(pos)?;
        let d = entry.1.clone();
        big.push_front(entry);
        Some(d)
    }

    /// A listing was read to its end: let go of it if it is a big one.
    pub(super) fn listed(&self, ino: Ino) {
        lock(&self.big).retain(|(i, _)| *i != ino);
    }

    /// How long the kernel may keep what it learns about `ino`.
    pub(super) fn ttl(&self, ino: Ino) -> &'static Duration {
        if self.tree.live(ino) { &LIVE_TTL } else { &TTL }
    }

    /// How long the kernel may keep an entry of directory `dir` (FUSE
    /// numbers): short when either is live.
    pub(super) fn ttl_in(&self, dir: INodeNo, child: INodeNo) -> &'static Duration {
        let live = |i| self.to_tree(i).is_ok_and(|t| self.tree.live(t));
        if live(dir) || live(child) {
            &LIVE_TTL
        } else {
            &TTL
        }
    }

    pub(super) fn attr(&self, ino: Ino, inode: &Inode) -> FileAttr {
        let size = match &inode.kind {
            Kind::Directory => 4096,
            _ => inode.size(),
        };
        let rdev = match inode.kind {
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => encode_dev(rdev),
            _ => 0,
        };
        let t = to_system_time(inode.stat.mtime);
        let nlink = match self.nlinks.get(&ino) {
            Some(n) => *n,
            None => self.tree.nlink(ino).ok().flatten().unwrap_or(1),
        };
        FileAttr {
            ino: self.to_fuse(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(&inode.kind),
            perm: (inode.stat.perms & crate::tree::mode::PERMS) as u16,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            uid: inode.stat.uid,
            gid: inode.stat.gid,
            rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The child's attributes and how long they (and the name) may be
    /// cached. In a live directory, the tree resolves the name itself (a
    /// ref may have just appeared); elsewhere, by binary search in the
    /// cached listing.
    pub(super) fn lookup_child(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(FileAttr, Duration), Errno> {
        let dir = self.to_tree(parent)?;
        let child = if self.tree.live(dir) {
            if !self.inode(dir)?.kind.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            self.tree.lookup(dir, name.as_bytes()).map_err(|e| {
                tracing::error!("cannot look up {name:?} in directory inode {dir}: {e:#}");
                Errno::EIO
            })?
        } else if lock(&self.big_dirs).contains(&dir) && self.big_listing(dir).is_none() {
            // Too large to keep: the tree finds the name without a
            // listing made for it (or, by default, with one let go at once).
            self.tree.lookup(dir, name.as_bytes()).map_err(|e| {
                tracing::error!("cannot look up {name:?} in directory inode {dir}: {e:#}");
                Errno::EIO
            })?
        } else {
            let entries = self.dir_entries(dir)?;
            entries
                .binary_search_by(|e| e.name.as_slice().cmp(name.as_bytes()))
                .ok()
                .map(|i| entries[i].ino)
        };
        let child = child.ok_or(Errno::ENOENT)?;
        let inode = self.inode(child)?;
        let ttl = if self.tree.live(dir) || self.tree.live(child) {
            LIVE_TTL
        } else {
            TTL
        };
        Ok((self.attr(child, &inode), ttl))
    }

    pub(super) fn statfs_files(&self) -> u64 {
        self.nlinks.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch() {
        let t = to_system_time(Timespec {
            sec: -5,
            nsec: 300_000_000,
        });
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::new(4, 700_000_000)
        );
        let t = to_system_time(Timespec { sec: -5, nsec: 0 });
        assert_eq!(UNIX_EPOCH.duration_since(t).unwrap(), Duration::new(5, 0));
        let t = to_system_time(Timespec { sec: 7, nsec: 9 });
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap(), Duration::new(7, 9));
    }

    #[test]
    fn device_numbers() {
        let d = rustix::fs::makedev(8, 1);
        assert_eq!(encode_dev(d), (8 << 8) | 1);
        let d = rustix::fs::makedev(259, 300);
        assert_eq!(
            encode_dev(d),
            (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12)
        );
    }
}
