//! Open files and directories: handles, object files opened (and, with
//! `--verify`, digested) through the daemon's cache, contents read by
//! handle or by inode, passthrough backing files shared per inode, and the
//! read-ahead told what is listed and read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use fuser::{BackingId, Errno, FileHandle, INodeNo, ReplyOpen};

use super::{Handle, TreeFs};
use crate::fsverity::ObjectId;
use crate::fuse::lock;
use crate::fuse::prefetch::Ahead;
use crate::tree::{DirEntry, FileData, Ino, Kind};

impl TreeFs {
    /// A directory's listing: the one its handle holds, or by inode when
    /// it was opened without a request (`fh` 0).
    pub(super) fn dir_handle(
        &self,
        ino: INodeNo,
        fh: FileHandle,
    ) -> Result<Arc<[DirEntry]>, Errno> {
        if fh.0 == 0 {
            return self.to_tree(ino).and_then(|t| self.dir_entries(t));
        }
        match self.handle(fh)? {
            Handle::Dir(e) => Ok(e),
            _ => Err(Errno::ENOTDIR),
        }
    }

    pub(super) fn new_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        FileHandle(fh)
    }

    pub(super) fn handle(&self, fh: FileHandle) -> Result<Handle, Errno> {
        lock(&self.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// Note a listed directory's external files for read-ahead
    /// ([`crate::fuse::prefetch::Prefetch`]; not in a live tree, whose
    /// objects may go).
    pub(super) fn note_listing(&self, dir: INodeNo, entries: &[DirEntry]) {
        let Ok(t) = self.to_tree(dir) else { return };
        if self.tree.live(t) {
            return;
        }
        let files: Vec<(Ino, Ahead)> = entries
            .iter()
            // Through the daemon's cache: the listing's reply loads the
            // same inodes right after.
            .filter_map(|e| match &self.inode(e.ino).ok()?.kind {
                Kind::Regular(FileData::External { size, digest, .. }) => Some((
                    e.ino,
                    Ahead {
                        ino: self.to_fuse(e.ino),
                        tree_ino: e.ino,
                        id: *digest,
                        size: *size,
                    },
                )),
                _ => None,
            })
            .collect();
        self.prefetch.listed(t, files);
    }

    /// An object's open file, from the cache or opened (and, with
    /// `--verify`, digested: a mismatch is an error naming the object).
    fn open_object(&self, id: &ObjectId) -> Result<Arc<File>> {
        if let Some(f) = self.objects.get(id) {
            return Ok(f);
        }
        let f = self.repo.open_object(id)?;
        if self.verify {
            let (got, _) = crate::fsverity::digest_reader(id.algorithm(), &f)
                .with_context(|| format!("cannot read object {id}"))?;
            if got != *id {
                anyhow::bail!("object {id} is corrupt: its content digests to {got}");
            }
        }
        let f = Arc::new(f);
        self.objects.insert(*id, f.clone());
        Ok(f)
    }

    pub(super) fn open_file(&self, ino: Ino) -> Result<Handle, Errno> {
        let inode = self.inode(ino)?;
        match &inode.kind {
            Kind::Regular(FileData::Inline(_)) => Ok(Handle::Inline(inode.clone())),
            Kind::Regular(FileData::External { size, .. }) => {
                self.prefetch.reading(ino);
                // A remote tree fetches the object here (this request
                // waits; others go on being served by the other threads).
                let id = match self.tree.content_object(ino) {
                    Ok(Some(id)) => id,
                    Ok(None) => {
                        tracing::error!("inode {ino} names no object for its content");
                        return Err(Errno::EIO);
                    }
                    Err(e) => {
                        tracing::error!("cannot get the content of inode {ino}: {e:#}");
                        return Err(Errno::EIO);
                    }
                };
                match self.open_object(&id) {
                    Ok(file) => Ok(Handle::Object { file, size: *size }),
                    Err(e) => {
                        tracing::error!("cannot open object {id} (inode {ino}): {e:#}");
                        Err(Errno::EIO)
                    }
                }
            }
            Kind::Directory => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(super) fn read_handle(&self, h: &Handle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        match h {
            Handle::Inline(inode) => {
                let Kind::Regular(FileData::Inline(data)) = &inode.kind else {
                    return Err(Errno::EIO);
                };
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                Ok(data[start..end].to_vec())
            }
            Handle::Object { file, size: total } => {
                let want = (*total).saturating_sub(offset).min(u64::from(size)) as usize;
                let mut buf = vec![0u8; want];
                let mut done = 0;
                while done < want {
                    match file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => {
                            tracing::error!(
                                "object is shorter than its recorded size {total} \
                                 (read at {})",
                                offset + done as u64
                            );
                            return Err(Errno::EIO);
                        }
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::error!("cannot read object: {e}");
                            return Err(Errno::EIO);
                        }
                    }
                }
                Ok(buf)
            }
            Handle::Dir(_) => Err(Errno::EISDIR),
            Handle::Passthrough(_) => Err(Errno::EIO),
        }
    }

    /// The backing id for an inode's object: the one its open files use,
    /// else a new one. `None` when the kernel refuses (then passthrough is
    /// off for good, and files are read through the daemon).
    pub(super) fn backing(
        &self,
        ino: Ino,
        file: &File,
        reply: &ReplyOpen,
    ) -> Option<Arc<BackingId>> {
        let mut b = lock(&self.backings);
        if let Some((id, n)) = b.get_mut(&ino) {
            *n += 1;
            return Some(id.clone());
        }
        match reply.open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                b.insert(ino, (id.clone(), 1));
                Some(id)
            }
            Err(e) => {
                self.passthrough_refused.store(true, Ordering::Relaxed);
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!("FUSE passthrough refused ({e}); reading through the daemon")
                });
                None
            }
        }
    }
}
