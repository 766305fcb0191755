//! Reading composefs EROFS images: [`ErofsImage`] is a lazy [`Tree`] over
//! the image bytes (inodes parsed on demand by nid, directories when listed)
//! and also offers the raw view (inodes, xattrs, directory entries as
//! stored) and [`ErofsImage::referenced_objects`] for garbage collection.
//!
//! The tree view undoes what the writer does for overlayfs, as the C
//! reader does (`lcfs_build_node_from_image` / `lcfs_build_node_erofs_xattr`
//! in `libcomposefs/lcfs-writer-erofs.c`):
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
//! Hostile images: every offset and size is checked against the image
//! length before use, all arithmetic is checked, allocation is bounded by
//! the image size, and a directory may be listed only once reached from
//! the root through a single parent, so no walk through this interface can
//! loop. Errors are returned, never panics.

use crate::show::short_path;
use std::collections::{HashMap, HashSet};

use crate::mapped::Bytes;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::format::{
    self, BLOCK_SIZE, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC, CompactInode, ComposefsHeader,
    Dirent, EROFS_MAGIC, ExtendedInode, SLOT_SIZE, Superblock, XattrEntryHeader, XattrIbodyHeader,
    overlay,
};
use crate::fsverity::{Algorithm, ObjectId};
use crate::tree::{DirEntry, FileData, Ino, Inode, Kind, Stat, Timespec, Tree, check_name, mode};

/// An inode as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawInode {
    pub nid: u64,
    /// Byte offset of the inode in the image.
    pub offset: u64,
    pub extended: bool,
    /// Data layout (`format::LAYOUT_*`).
    pub layout: u16,
    pub xattr_icount: u16,
    /// Full `st_mode` as stored.
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    /// `i_u`: block address, rdev or chunk format.
    pub u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    /// Own mtime (extended) or the superblock's build time (compact).
    pub mtime: Timespec,
}

impl RawInode {
    fn header_size(&self) -> u64 {
        if self.extended {
            ExtendedInode::SIZE as u64
        } else {
            CompactInode::SIZE as u64
        }
    }

    /// Size of the xattr area after the inode header.
    pub fn xattr_size(&self) -> u64 {
        format::xattr_ibody_size(self.xattr_icount)
    }

    /// Offset of the inline tail (right after the xattrs).
    pub fn inline_offset(&self) -> u64 {
        self.offset + self.header_size() + self.xattr_size()
    }

    /// The `S_IFMT` bits.
    pub fn file_format(&self) -> u32 {
        u32::from(self.mode) & mode::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_format() == mode::S_IFDIR
    }

    /// A character device 0:0: a whiteout stub.
    pub fn is_whiteout(&self) -> bool {
        self.file_format() == mode::S_IFCHR && self.u == 0
    }
}

/// An xattr as stored (name with its prefix expanded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawXattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Stored in the shared table.
    pub shared: bool,
}

/// A directory entry as stored (`.` and `..` and whiteout stubs included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDirent {
    pub name: Vec<u8>,
    pub nid: u64,
    pub file_type: u8,
}

/// A composefs EROFS image in memory.
pub struct ErofsImage {
    data: Bytes,
    header: ComposefsHeader,
    sb: Superblock,
    meta_start: u64,
    xattr_start: u64,
    /// Parent of every directory listed so far (see [`Tree::readdir`]).
    parents: Mutex<HashMap<u64, u64>>,
}

impl std::fmt::Debug for ErofsImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErofsImage")
            .field("len", &self.data.len())
            .field("header", &self.header)
            .field("root_nid", &self.sb.root_nid)
            .finish()
    }
}

impl ErofsImage {
    /// Check the header and superblock of `data` and wrap it.
    pub fn new(data: Vec<u8>) -> Result<Self> {
        Self::from_bytes(Bytes::Owned(data))
    }

    fn from_bytes(data: Bytes) -> Result<Self> {
        let header = ComposefsHeader::decode(&data).context("not a composefs image")?;
        if header.magic != COMPOSEFS_MAGIC {
            bail!("not a composefs image (bad magic {:#x})", header.magic);
        }
        if header.version != COMPOSEFS_HEADER_VERSION {
            bail!("unsupported composefs header version {}", header.version);
        }
        let sb = Superblock::decode(data.get(format::SUPER_OFFSET as usize..).unwrap_or(&[]))
            .context("truncated composefs image")?;
        if sb.magic != EROFS_MAGIC {
            bail!("bad EROFS superblock magic {:#x}", sb.magic);
        }
        if sb.blkszbits != format::BLOCK_BITS {
            bail!("unsupported EROFS block size 2^{}", sb.blkszbits);
        }
        let len = data.len() as u64;
        let meta_start = u64::from(sb.meta_blkaddr) * BLOCK_SIZE;
        let xattr_start = u64::from(sb.xattr_blkaddr) * BLOCK_SIZE;
        if meta_start >= len || xattr_start >= len {
            bail!("EROFS metadata or xattr area lies outside the image");
        }
        let img = ErofsImage {
            data,
            header,
            sb,
            meta_start,
            xattr_start,
            parents: Mutex::new(HashMap::new()),
        };
        let root = img
            .raw_inode(img.root_nid())
            .context("reading the root inode")?;
        if !root.is_dir() {
            bail!("the root inode is not a directory");
        }
        Ok(img)
    }

    /// An image file, mapped: only what is looked at is read, so opening
    /// costs nothing proportional to the image.
    pub fn from_file(file: File) -> Result<Self> {
        Self::from_bytes(Bytes::map(&file).context("cannot map the image")?)
    }

    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::from_file(f).with_context(|| format!("reading image {}", path.display()))
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn header(&self) -> &ComposefsHeader {
        &self.header
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn root_nid(&self) -> u64 {
        u64::from(self.sb.root_nid)
    }

    fn slice(&self, off: u64, len: u64) -> Result<&[u8]> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| anyhow!("offset overflow"))?;
        if end > self.data.len() as u64 {
            bail!(
                "range {off}..{end} lies outside the image ({} bytes)",
                self.data.len()
            );
        }
        Ok(&self.data[off as usize..end as usize])
    }

    /// Parse the inode `nid`.
    pub fn raw_inode(&self, nid: u64) -> Result<RawInode> {
        let offset = nid
            .checked_mul(SLOT_SIZE)
            .and_then(|o| o.checked_add(self.meta_start))
            .ok_or_else(|| anyhow!("inode {nid}: nid out of range"))?;
        let first = self
            .slice(offset, 2)
            .with_context(|| format!("inode {nid}"))?;
        let fmt = u16::from_le_bytes([first[0], first[1]]);
        let extended = fmt & format::I_VERSION_MASK != 0;
        let layout = (fmt >> format::I_DATALAYOUT_BIT) & format::I_DATALAYOUT_MASK;
        let raw = if extended {
            let e = ExtendedInode::decode(
                self.slice(offset, ExtendedInode::SIZE as u64)
                    .with_context(|| format!("inode {nid}"))?,
            )?;
            if e.mtime_nsec >= 1_000_000_000 {
                bail!("inode {nid}: invalid mtime nanoseconds {}", e.mtime_nsec);
            }
            RawInode {
                nid,
                offset,
                extended,
                layout,
                xattr_icount: e.xattr_icount,
                mode: e.mode,
                nlink: e.nlink,
                size: e.size,
                u: e.u,
                ino: e.ino,
                uid: e.uid,
                gid: e.gid,
                mtime: Timespec {
                    sec: e.mtime as i64,
                    nsec: e.mtime_nsec,
                },
            }
        } else {
            let c = CompactInode::decode(
                self.slice(offset, CompactInode::SIZE as u64)
                    .with_context(|| format!("inode {nid}"))?,
            )?;
            if self.sb.build_time_nsec >= 1_000_000_000 {
                bail!("invalid build time nanoseconds {}", self.sb.build_time_nsec);
            }
            RawInode {
                nid,
                offset,
                extended,
                layout,
                xattr_icount: c.xattr_icount,
                mode: c.mode,
                nlink: u32::from(c.nlink),
                size: u64::from(c.size),
                u: c.u,
                ino: c.ino,
                uid: u32::from(c.uid),
                gid: u32::from(c.gid),
                mtime: Timespec {
                    sec: self.sb.build_time as i64,
                    nsec: self.sb.build_time_nsec,
                },
            }
        };
        let fmt = raw.file_format();
        if !mode::is_known_type(fmt) {
            bail!("inode {nid}: unknown file type {fmt:#o}");
        }
        match layout {
            format::LAYOUT_FLAT_PLAIN | format::LAYOUT_FLAT_INLINE => {}
            format::LAYOUT_CHUNK_BASED if raw.file_format() == mode::S_IFREG => {}
            other => bail!("inode {nid}: unsupported data layout {other}"),
        }
        // The xattr area must be inside the image.
        self.slice(raw.offset + raw.header_size(), raw.xattr_size())
            .with_context(|| format!("inode {nid}: xattrs"))?;
        Ok(raw)
    }

    fn xattr_entry(&self, off: u64, end: u64, shared: bool) -> Result<(RawXattr, u64)> {
        let h = XattrEntryHeader::decode(self.slice(off, XattrEntryHeader::SIZE as u64)?)?;
        let size = h.entry_size();
        let stop = off
            .checked_add(size)
            .ok_or_else(|| anyhow!("xattr offset overflow"))?;
        if stop > end {
            bail!("xattr entry at {off} runs past its area");
        }
        let prefix = format::xattr_prefix(h.name_index)
            .ok_or_else(|| anyhow!("unknown xattr name index {}", h.name_index))?;
        let body = self.slice(off + 4, u64::from(h.name_len) + u64::from(h.value_size))?;
        let (suffix, value) = body.split_at(usize::from(h.name_len));
        let name = [prefix, suffix].concat();
        if name.is_empty() {
            bail!("empty xattr name");
        }
        Ok((
            RawXattr {
                name,
                value: value.to_vec(),
                shared,
            },
            size,
        ))
    }

    /// The xattrs of an inode as stored: inline ones first, then shared ones
    /// (the order the C reader applies them in).
    pub fn raw_xattrs(&self, ino: &RawInode) -> Result<Vec<RawXattr>> {
        let size = ino.xattr_size();
        if size == 0 {
            return Ok(Vec::new());
        }
        let start = ino.offset + ino.header_size();
        let end = start + size;
        let h = XattrIbodyHeader::decode(self.slice(start, XattrIbodyHeader::SIZE as u64)?)?;
        let shared_count = u64::from(h.shared_count);
        let mut pos = start + XattrIbodyHeader::SIZE as u64 + 4 * shared_count;
        if pos > end {
            bail!(
                "inode {}: shared xattr count exceeds the xattr area",
                ino.nid
            );
        }
        let mut out = Vec::new();
        while pos < end {
            let (x, n) = self
                .xattr_entry(pos, end, false)
                .with_context(|| format!("inode {}: xattrs", ino.nid))?;
            out.push(x);
            pos += n;
        }
        let refs = self.slice(start + XattrIbodyHeader::SIZE as u64, 4 * shared_count)?;
        let data_len = self.data.len() as u64;
        for r in refs.chunks_exact(4) {
            let idx = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            let off = self.xattr_start + 4 * u64::from(idx);
            let (x, _) = self
                .xattr_entry(off, data_len, true)
                .with_context(|| format!("inode {}: shared xattr {idx}", ino.nid))?;
            out.push(x);
        }
        Ok(out)
    }

    /// Where a flat inode's data is: out-of-line bytes (offset, length) and
    /// inline tail (offset, length).
    fn flat_ranges(&self, ino: &RawInode) -> Result<((u64, u64), (u64, u64))> {
        if ino.layout == format::LAYOUT_CHUNK_BASED {
            bail!("inode {}: chunk-based inode has no inline data", ino.nid);
        }
        if ino.size == 0 {
            return Ok(((0, 0), (0, 0)));
        }
        let nblocks = ino.size.div_ceil(BLOCK_SIZE);
        let (oob_len, tail_len) = if ino.layout == format::LAYOUT_FLAT_INLINE {
            let oob = (nblocks - 1) * BLOCK_SIZE;
            (oob, ino.size - oob)
        } else {
            (ino.size, 0)
        };
        let oob_off = if oob_len > 0 {
            u64::from(ino.u) * BLOCK_SIZE
        } else {
            0
        };
        let tail_off = ino.inline_offset();
        self.slice(oob_off, oob_len)
            .with_context(|| format!("inode {}: data blocks", ino.nid))?;
        self.slice(tail_off, tail_len)
            .with_context(|| format!("inode {}: inline data", ino.nid))?;
        Ok(((oob_off, oob_len), (tail_off, tail_len)))
    }

    /// The content of a flat (non-chunk-based) file or symlink.
    pub fn flat_data(&self, ino: &RawInode) -> Result<Vec<u8>> {
        let ((oo, ol), (to, tl)) = self.flat_ranges(ino)?;
        let mut v = Vec::with_capacity((ol + tl) as usize);
        v.extend_from_slice(self.slice(oo, ol)?);
        v.extend_from_slice(self.slice(to, tl)?);
        Ok(v)
    }

    /// The entries of a directory as stored.
    pub fn raw_dirents(&self, ino: &RawInode) -> Result<Vec<RawDirent>> {
        if !ino.is_dir() {
            bail!("inode {} is not a directory", ino.nid);
        }
        let ((oo, ol), (to, tl)) = self.flat_ranges(ino)?;
        let mut out = Vec::new();
        let mut off = oo;
        while off < oo + ol {
            let len = (oo + ol - off).min(BLOCK_SIZE);
            parse_dir_block(self.slice(off, len)?, &mut out)
                .with_context(|| format!("directory inode {}: block at {off}", ino.nid))?;
            off += len;
        }
        if tl > 0 {
            parse_dir_block(self.slice(to, tl)?, &mut out)
                .with_context(|| format!("directory inode {}: inline entries", ino.nid))?;
        }
        Ok(out)
    }

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
                    bail!("inode {nid}: symlink target of {} bytes", raw.size);
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

    /// Every object the image's files point to: the ids named by
    /// `trusted.overlay.redirect` paths of the form `XX/rest-of-hex` and the
    /// digests in `trusted.overlay.metacopy` (both, deduplicated, sorted).
    /// Walks every inode reachable from the root once.
    pub fn referenced_objects(&self) -> Result<Vec<ObjectId>> {
        let mut ids = HashSet::new();
        self.walk(|img, raw| {
            if raw.file_format() != mode::S_IFREG || raw.layout != format::LAYOUT_CHUNK_BASED {
                return Ok(());
            }
            for x in img.raw_xattrs(raw)? {
                if x.name == overlay::REDIRECT {
                    if let Some(id) = ObjectId::from_object_path(&x.value) {
                        ids.insert(id);
                    }
                } else if x.name == overlay::METACOPY
                    && let Some(id) = metacopy_digest(&x.value)
                {
                    ids.insert(id);
                }
            }
            Ok(())
        })?;
        let mut v: Vec<ObjectId> = ids.into_iter().collect();
        v.sort();
        Ok(v)
    }

    /// Visit every inode reachable from the root exactly once (raw view:
    /// whiteout stubs included); returns the number visited.
    pub fn walk(&self, mut f: impl FnMut(&Self, &RawInode) -> Result<()>) -> Result<u64> {
        let root = self.raw_inode(self.root_nid())?;
        let mut seen: HashSet<u64> = HashSet::from([root.nid]);
        f(self, &root)?;
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for e in self.raw_dirents(&dir)? {
                if e.name == b"." || e.name == b".." || !seen.insert(e.nid) {
                    continue;
                }
                let raw = self.raw_inode(e.nid)?;
                f(self, &raw)?;
                if raw.is_dir() {
                    dirs.push(raw);
                }
            }
        }
        Ok(seen.len() as u64)
    }

    /// Read the whole tree through the [`Tree`] interface (every inode,
    /// every directory), as a consistency check; returns the number of
    /// names visited.
    pub fn check(&self) -> Result<u64> {
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

fn metacopy_digest(v: &[u8]) -> Option<ObjectId> {
    match v.len() {
        36 => ObjectId::from_bytes(Algorithm::Sha256, &v[4..]),
        68 if v[3] == Algorithm::Sha512.kernel_id() => {
            ObjectId::from_bytes(Algorithm::Sha512, &v[4..])
        }
        _ => None,
    }
}

/// Parse one directory block (or inline tail) as `erofs_readdir_block`.
fn parse_dir_block(block: &[u8], out: &mut Vec<RawDirent>) -> Result<()> {
    let first = Dirent::decode(block)?;
    let head = usize::from(first.nameoff);
    ensure!(
        head >= Dirent::SIZE && head % Dirent::SIZE == 0 && head <= block.len(),
        "bad first name offset {head}"
    );
    let n = head / Dirent::SIZE;
    let mut prev = None;
    for i in 0..n {
        let d = Dirent::decode(&block[i * Dirent::SIZE..])?;
        let start = usize::from(d.nameoff);
        let end = if i + 1 < n {
            usize::from(Dirent::decode(&block[(i + 1) * Dirent::SIZE..])?.nameoff)
        } else {
            block.len()
        };
        ensure!(
            start >= head && start <= end && end <= block.len(),
            "bad name offsets {start}..{end}"
        );
        let mut name = &block[start..end];
        if i + 1 == n
            && let Some(z) = name.iter().position(|&b| b == 0)
        {
            name = &name[..z];
        }
        ensure!(
            !name.is_empty() && name.len() <= format::NAME_LEN,
            "bad name length {}",
            name.len()
        );
        if let Some(p) = prev {
            ensure!(p <= start, "name offsets go backwards");
        }
        prev = Some(start);
        out.push(RawDirent {
            name: name.to_vec(),
            nid: d.nid,
            file_type: d.file_type,
        });
    }
    Ok(())
}

impl Tree for ErofsImage {
    fn root(&self) -> Ino {
        self.root_nid()
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        Ok(Arc::new(self.load_inode(ino)?))
    }

    /// As stored: mkcomposefs records 2 + subdirectories for directories
    /// and the hardlink count for everything else.
    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        Ok(Some(u64::from(self.raw_inode(ino)?.nlink)))
    }

    /// Lists a directory. The root may always be listed; any other
    /// directory only once it was seen in its parent's listing, and a
    /// directory seen under two parents (or under itself, or the root under
    /// anything) is an error: walks through this interface cannot loop.
    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        let raw = self.raw_inode(dir)?;
        if !raw.is_dir() {
            bail!("inode {dir} is not a directory");
        }
        let root = self.root_nid();
        if dir != root {
            let parents = self.parents.lock().unwrap_or_else(|e| e.into_inner());
            if !parents.contains_key(&dir) {
                bail!("directory inode {dir} was not reached from the root");
            }
        }
        let mut out = Vec::new();
        let mut subdirs = Vec::new();
        for e in self.raw_dirents(&raw)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            check_name(&e.name).with_context(|| format!("directory inode {dir}"))?;
            let child = self.raw_inode(e.nid).with_context(|| {
                format!("directory inode {dir}: entry {:?}", short_path(&e.name))
            })?;
            if child.is_whiteout() {
                continue;
            }
            if child.is_dir() {
                if e.nid == root || e.nid == dir {
                    bail!(
                        "directory inode {dir}: entry {:?} loops back to inode {}",
                        short_path(&e.name),
                        e.nid
                    );
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
            bail!(
                "directory inode {dir}: the name {:?} appears twice",
                short_path(&w[0].name)
            );
        }
        subdirs.sort_unstable();
        if subdirs.windows(2).any(|w| w[0] == w[1]) {
            bail!("directory inode {dir}: a subdirectory appears under two names");
        }
        let mut parents = self.parents.lock().unwrap_or_else(|e| e.into_inner());
        for c in &subdirs {
            if let Some(p) = parents.get(c)
                && *p != dir
            {
                bail!(
                    "directory inode {c} appears in directories {p} and {dir} (a loop or a directory hardlink)"
                );
            }
        }
        for c in subdirs {
            parents.insert(c, dir);
        }
        Ok(out.into())
    }
}
