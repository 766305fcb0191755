//! Step 5: the image's bytes as the [`Plan`] says, streamed to the
//! output ([`Out`] counts them): header, superblock, inodes with their
//! xattrs and inline tails, the shared xattr table, the data blocks.

use std::io::{BufWriter, Write};

use anyhow::Result;

use super::layout::Plan;
use super::node::{Child, Data, Node};
use crate::erofs::format::{
    self, BLOCK_SIZE, COMPOSEFS_FLAGS_HAS_ACL, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC,
    CompactInode, ComposefsHeader, Dirent, EROFS_MAGIC, ExtendedInode, FEATURE_COMPAT_MTIME,
    FEATURE_COMPAT_XATTR_FILTER, INODES_START, SLOT_SIZE, Superblock, XattrEntryHeader,
    XattrIbodyHeader,
};
use crate::tree::mode;

impl Plan {
    /// Write the planned image: header, superblock, inodes, shared
    /// xattrs, data blocks.
    pub(super) fn write<W: Write>(&self, w: &mut Out<W>) -> Result<()> {
        let header = ComposefsHeader {
            magic: COMPOSEFS_MAGIC,
            version: COMPOSEFS_HEADER_VERSION,
            flags: if self.has_acl {
                COMPOSEFS_FLAGS_HAS_ACL
            } else {
                0
            },
            composefs_version: self.version,
            unused: [0; 4],
        };
        w.write(&header.encode())?;
        w.zeros(format::SUPER_OFFSET - ComposefsHeader::SIZE as u64)?;
        let sb = Superblock {
            magic: EROFS_MAGIC,
            feature_compat: FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER,
            blkszbits: format::BLOCK_BITS,
            root_nid: self.nodes[0].nid as u16,
            inos: self.nodes.len() as u64,
            build_time: self.min_mtime.sec as u64,
            build_time_nsec: self.min_mtime.nsec,
            blocks: (self.data_start / BLOCK_SIZE + self.n_data_blocks) as u32,
            meta_blkaddr: (INODES_START / BLOCK_SIZE) as u32,
            xattr_blkaddr: (self.inodes_end / BLOCK_SIZE) as u32,
            ..Default::default()
        };
        w.write(&sb.encode())?;

        for (i, n) in self.nodes.iter().enumerate() {
            self.write_inode(w, i, n)?;
        }
        w.align(SLOT_SIZE)?;
        debug_assert_eq!(w.pos, self.inodes_end);

        for (k, v) in &self.shared.table {
            write_xattr(w, k, v)?;
        }
        w.align(BLOCK_SIZE)?;
        debug_assert_eq!(w.pos, self.data_start);

        for n in &self.nodes {
            if n.n_blocks == 0 {
                continue;
            }
            debug_assert_eq!(w.pos, u64::from(n.blkaddr) * BLOCK_SIZE);
            match n.data {
                Data::Dir => {
                    let (blocks, last, _) = self.split_dir(n);
                    let children = self.children_of(n);
                    for &(a, b) in &blocks {
                        self.write_dirents(w, n, &children[a..b])?;
                        w.align(BLOCK_SIZE)?;
                    }
                    if n.n_blocks > blocks.len() as u64 {
                        self.write_dirents(w, n, &children[last.0..last.1])?;
                        w.align(BLOCK_SIZE)?;
                    }
                }
                Data::Inline => {
                    let c = n.inline_content();
                    let end = c.len().min((n.n_blocks * BLOCK_SIZE) as usize);
                    w.write(&c[..end])?;
                    w.align(BLOCK_SIZE)?;
                }
                Data::Chunked { .. } => {
                    for _ in 0..format::MAX_CHUNKS {
                        w.write(&format::NULL_ADDR.to_le_bytes())?;
                    }
                }
                Data::Symlink => {
                    let t = n.symlink_target();
                    w.write(&t[..t.len().min(BLOCK_SIZE as usize)])?;
                    w.align(BLOCK_SIZE)?;
                }
                Data::None => {}
            }
        }
        debug_assert_eq!(w.pos, self.data_start + self.n_data_blocks * BLOCK_SIZE);
        Ok(())
    }

    fn write_inode<W: Write>(&self, w: &mut Out<W>, i: usize, n: &Node) -> Result<()> {
        w.zeros(u64::from(n.ipad))?;
        debug_assert_eq!(w.pos, n.nid * SLOT_SIZE);
        let icount = if n.xattr_size == 0 {
            0
        } else {
            ((u64::from(n.xattr_size) - XattrIbodyHeader::SIZE as u64) / 4 + 1) as u16
        };
        let mut layout = if n.tail > 0 {
            format::LAYOUT_FLAT_INLINE
        } else {
            format::LAYOUT_FLAT_PLAIN
        };
        let blkaddr = if n.n_blocks > 0 { n.blkaddr } else { 0 };
        let st_mode = n.mode();
        let (size, u) = match n.data {
            Data::Dir => (n.n_blocks * BLOCK_SIZE + u64::from(n.tail), blkaddr),
            Data::Chunked { bits, .. } => {
                layout = format::LAYOUT_CHUNK_BASED;
                let chunk_format = u32::from(bits) - u32::from(format::BLOCK_BITS);
                (n.size(), (blkaddr & 0xffff_0000) | chunk_format)
            }
            Data::Symlink if n.n_blocks == 0 => (u64::from(n.tail), 0),
            Data::Inline | Data::Symlink => (n.size(), blkaddr),
            Data::None => match st_mode & mode::S_IFMT {
                mode::S_IFCHR | mode::S_IFBLK => (0, n.rdev()),
                _ => (0, 0),
            },
        };
        let mode16 = st_mode as u16;
        let stat = &n.src.stat;
        if n.compact {
            let inode = CompactInode {
                format: format::inode_format(false, layout),
                xattr_icount: icount,
                mode: mode16,
                nlink: n.nlink as u16,
                size: size as u32,
                u,
                ino: i as u32,
                uid: stat.uid as u16,
                gid: stat.gid as u16,
                ..Default::default()
            };
            w.write(&inode.encode())?;
        } else {
            let inode = ExtendedInode {
                format: format::inode_format(true, layout),
                xattr_icount: icount,
                mode: mode16,
                size,
                u,
                ino: i as u32,
                uid: stat.uid,
                gid: stat.gid,
                mtime: stat.mtime.sec as u64,
                mtime_nsec: stat.mtime.nsec,
                nlink: n.nlink,
                ..Default::default()
            };
            w.write(&inode.encode())?;
        }

        if n.xattr_size > 0 {
            let start = w.pos;
            let stored = self.shared.stored(&self.sets, n);
            let mut filter = 0u32;
            for x in &stored {
                let (index, suffix) = format::xattr_split(x.key);
                filter |= format::xattr_filter_bit(index, suffix);
            }
            let shared: Vec<u64> = stored.iter().filter_map(|x| x.shared).collect();
            let header = XattrIbodyHeader {
                name_filter: !filter,
                shared_count: shared.len() as u8,
                reserved: [0; 7],
            };
            w.write(&header.encode())?;
            for off in shared {
                let r = (self.inodes_end % BLOCK_SIZE + off) / 4;
                w.write(&(r as u32).to_le_bytes())?;
            }
            for x in &stored {
                if x.shared.is_none() {
                    write_xattr(w, x.key, &x.value)?;
                }
            }
            debug_assert_eq!(w.pos - start, u64::from(n.xattr_size));
        }

        if n.tail > 0 {
            match n.data {
                Data::Dir => {
                    let (_, last, _) = self.split_dir(n);
                    self.write_dirents(w, n, &self.children_of(n)[last.0..last.1])?;
                }
                Data::Symlink => w.write(n.symlink_target())?,
                Data::Inline => {
                    let c = n.inline_content();
                    w.write(&c[c.len() - usize::from(n.tail)..])?;
                }
                Data::Chunked { count, .. } => {
                    for _ in 0..count {
                        w.write(&format::NULL_ADDR.to_le_bytes())?;
                    }
                }
                Data::None => {}
            }
        }
        Ok(())
    }

    fn write_dirents<W: Write>(
        &self,
        w: &mut Out<W>,
        dir: &Node,
        children: &[Child],
    ) -> Result<()> {
        let mut nameoff = (children.len() * Dirent::SIZE) as u64;
        for c in children {
            let target = &self.nodes[c.target as usize];
            let d = Dirent {
                nid: target.nid,
                nameoff: nameoff as u16,
                file_type: target.file_type(),
                reserved: 0,
            };
            w.write(&d.encode())?;
            nameoff += self.name_len(dir, c);
        }
        for c in children {
            w.write(&self.child_name(dir, c))?;
        }
        Ok(())
    }
}

fn write_xattr<W: Write>(w: &mut Out<W>, key: &[u8], value: &[u8]) -> Result<()> {
    let (index, suffix) = format::xattr_split(key);
    let h = XattrEntryHeader {
        name_len: suffix.len() as u8,
        name_index: index,
        value_size: value.len() as u16,
    };
    w.write(&h.encode())?;
    w.write(suffix)?;
    w.write(value)?;
    w.align(4)
}

/// The output, counting bytes.
pub(super) struct Out<W: Write> {
    inner: BufWriter<W>,
    pos: u64,
}

impl<W: Write> Out<W> {
    pub(super) fn new(out: W) -> Self {
        Out {
            inner: BufWriter::with_capacity(1 << 16, out),
            pos: 0,
        }
    }

    /// Flush the output; the number of bytes written.
    pub(super) fn finish(mut self) -> Result<u64> {
        self.inner.flush()?;
        Ok(self.pos)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.inner.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<()> {
        const Z: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(Z.len() as u64);
            self.write(&Z[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn align(&mut self, a: u64) -> Result<()> {
        self.zeros(self.pos.next_multiple_of(a) - self.pos)
    }
}
