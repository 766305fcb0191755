//! The kernel's requests answered: lookups (misses cached as negative
//! entries), attributes, links, opens (without a request where the kernel
//! allows, by passthrough where asked), reads, listings (`readdir`,
//! `readdirplus`), xattrs and statfs; everything that would change the
//! tree is refused with `EROFS`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::inodes::{TTL, file_type};
use super::{Handle, TreeFs};
use crate::fuse::lock;
use crate::tree::{Inode, Kind};

/// Answer `getxattr`/`listxattr`: the size for a size-0 query, `ERANGE`
/// when the buffer is too small, else the bytes.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        match u32::try_from(data.len()) {
            Ok(n) => reply.size(n),
            Err(_) => reply.error(Errno::E2BIG),
        }
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(data)
    }
}

impl Filesystem for TreeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            // Unsupported by this kernel: do without.
            let _ = config.add_capabilities(flag);
        }
        // Answering ENOSYS to opens is only understood when the kernel
        // offered to do without them.
        if self.no_open {
            self.no_open = config
                .add_capabilities(
                    InitFlags::FUSE_NO_OPEN_SUPPORT | InitFlags::FUSE_NO_OPENDIR_SUPPORT,
                )
                .is_ok();
        }
        if self.passthrough {
            // The objects sit on an ordinary filesystem: one level below.
            self.passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !self.passthrough {
                tracing::warn!(
                    "this kernel offers no FUSE passthrough; reading through the daemon"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_child(parent, name) {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            // Absent from an immutable directory: absent for good. Node id
            // 0 makes the kernel cache the miss (a negative dentry), so
            // searches along paths (ld.so, $PATH) ask once.
            Err(Errno::ENOENT) if self.to_tree(parent).is_ok_and(|t| !self.tree.live(t)) => {
                let mut attr = self.attr(self.root, &Inode::default_dir());
                attr.ino = INodeNo(0);
                reply.entry(&TTL, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self
            .to_tree(ino)
            .and_then(|t| Ok((self.attr(t, &*self.inode(t)?), self.ttl(t))));
        match r {
            Ok((attr, ttl)) => reply.attr(ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.to_tree(ino).and_then(|t| self.inode(t));
        match r {
            Ok(inode) => match &inode.kind {
                Kind::Symlink(target) => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if self.no_open {
            // The kernel stops sending opens (and releases) for good and
            // keeps the page cache; reads then come with no handle and are
            // served by inode. One request saved on every open and close.
            return reply.error(Errno::ENOSYS);
        }
        let t = match self.to_tree(ino) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        match self.open_file(t) {
            Ok(Handle::Object { file, size })
                if self.passthrough && !self.passthrough_refused.load(Ordering::Relaxed) =>
            {
                match self.backing(t, &file, &reply) {
                    Some(b) => {
                        let fh = self.new_handle(Handle::Passthrough(t));
                        reply.opened_passthrough(fh, FopenFlags::empty(), &b)
                    }
                    None => reply.opened(
                        self.new_handle(Handle::Object { file, size }),
                        FopenFlags::FOPEN_KEEP_CACHE,
                    ),
                }
            }
            Ok(h) => reply.opened(self.new_handle(h), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = if fh.0 == 0 {
            self.to_tree(_ino).and_then(|t| self.open_file(t))
        } else {
            self.handle(fh)
        };
        match h.and_then(|h| self.read_handle(&h, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(Handle::Passthrough(t)) = lock(&self.handles).remove(&fh.0) {
            let mut b = lock(&self.backings);
            if let Some((_, n)) = b.get_mut(&t) {
                *n -= 1;
                if *n == 0 {
                    b.remove(&t);
                }
            }
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush in a read-only tree; ENOSYS makes the kernel
        // stop sending flushes (one request saved on every close).
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            // As for files: the kernel stops sending opendir and
            // releasedir, and readdir comes by inode (two requests saved
            // on every directory walked).
            return reply.error(Errno::ENOSYS);
        }
        let r = self
            .to_tree(ino)
            .and_then(|t| Ok((self.dir_entries(t)?, self.tree.live(t))));
        match r {
            // A live listing is read afresh at every opendir.
            Ok((entries, true)) => {
                reply.opened(self.new_handle(Handle::Dir(entries)), FopenFlags::empty())
            }
            Ok((entries, false)) => reply.opened(
                self.new_handle(Handle::Dir(entries)),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.dir_handle(ino, fh) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        if offset == 0 {
            self.note_listing(ino, &entries);
        }
        // Offsets: 1 after ".", 2 after "..", 3 + i after entries[i].
        let mut idx = offset;
        while let Some((name, fino, kind)) = match idx {
            0 => Some((OsStr::new("."), ino, FileType::Directory)),
            1 => Some((OsStr::new(".."), ino, FileType::Directory)),
            n => match entries.get((n - 2) as usize) {
                None => {
                    // Past the end: the kernel has all of it.
                    if idx == offset
                        && let Ok(t) = self.to_tree(ino)
                    {
                        self.listed(t);
                    }
                    None
                }
                Some(e) => match self.inode(e.ino) {
                    Ok(inode) => Some((
                        OsStr::from_bytes(&e.name),
                        self.to_fuse(e.ino),
                        file_type(&inode.kind),
                    )),
                    Err(err) => return reply.error(err),
                },
            },
        } {
            if reply.add(fino, idx + 1, kind, name) {
                break;
            }
            idx += 1;
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.dir_handle(ino, fh) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let dir_attr = match self
            .to_tree(ino)
            .and_then(|t| Ok(self.attr(t, &*self.inode(t)?)))
        {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        if offset == 0 {
            self.note_listing(ino, &entries);
        }
        let mut idx = offset;
        loop {
            let (name, attr) = match idx {
                0 => (OsStr::new("."), dir_attr),
                1 => (OsStr::new(".."), dir_attr),
                n => match entries.get((n - 2) as usize) {
                    None => {
                        // Past the end: the kernel has all of it.
                        if idx == offset
                            && let Ok(t) = self.to_tree(ino)
                        {
                            self.listed(t);
                            self.prefetch.listing_ended(t);
                        }
                        break;
                    }
                    Some(e) => match self.inode(e.ino) {
                        Ok(inode) => (OsStr::from_bytes(&e.name), self.attr(e.ino, &inode)),
                        Err(err) => return reply.error(err),
                    },
                },
            };
            let ttl = if idx < 2 {
                &TTL
            } else {
                self.ttl_in(ino, attr.ino)
            };
            if reply.add(attr.ino, idx + 1, name, ttl, &attr, Generation(0)) {
                break;
            }
            idx += 1;
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, self.statfs_files(), 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.to_tree(ino).and_then(|t| self.inode(t)) {
            Ok(inode) => match inode.xattr(name.as_bytes()) {
                Some(v) => reply_sized(reply, size, v),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.to_tree(ino).and_then(|t| self.inode(t)) {
            Ok(inode) => {
                let mut list = Vec::new();
                for (name, _) in &inode.xattrs {
                    list.extend_from_slice(name);
                    list.push(0);
                }
                reply_sized(reply, size, &list)
            }
            Err(e) => reply.error(e),
        }
    }

    // Everything below would change the tree: refused.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}
