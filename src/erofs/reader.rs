//! Reading composefs EROFS images: [`ErofsImage`] is a lazy
//! [`Tree`](crate::tree::Tree) over the image bytes (inodes parsed on
//! demand by nid, directories when listed; that view, which undoes what
//! the writer does for overlayfs as the C reader does, is the child module
//! `tree`) and also offers the raw view (inodes, xattrs, directory entries
//! as stored) and [`ErofsImage::referenced_objects`] for garbage
//! collection.
//!
//! Hostile images: every offset and size is checked against the image
//! length before use, all arithmetic is checked, allocation is bounded by
//! the image size, and a directory may be listed only once reached from
//! the root through a single parent, so no walk through this interface can
//! loop. Errors are returned, never panics: an [`Error`] from the raw
//! view (not an image, unsupported, corrupt or out of bounds, with the
//! inode and offset), the same inside an `anyhow::Error` from the tree
//! view, with what the walk was doing as context.

mod error;
mod tree;

pub use error::Error;

use std::collections::{HashMap, HashSet};

use crate::mapped::Bytes;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use error::Result;

use super::format::{
    self, BLOCK_SIZE, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC, CompactInode, ComposefsHeader,
    Dirent, EROFS_MAGIC, ExtendedInode, SLOT_SIZE, Superblock, XattrEntryHeader, XattrIbodyHeader,
    overlay,
};
use crate::fsverity::{Algorithm, ObjectId};
use crate::tree::{Timespec, mode};

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
        let len = data.len() as u64;
        let Ok(header) = ComposefsHeader::decode(&data) else {
            return Err(Error::NotComposefs { magic: None, len });
        };
        if header.magic != COMPOSEFS_MAGIC {
            return Err(Error::NotComposefs {
                magic: Some(header.magic),
                len,
            });
        }
        if header.version != COMPOSEFS_HEADER_VERSION {
            return Err(Error::unsupported(
                None,
                format!("composefs header version {}", header.version),
            ));
        }
        let sb_bytes = bounded(&data, format::SUPER_OFFSET, Superblock::SIZE as u64)
            .map_err(|e| e.named("EROFS superblock"))?;
        let sb = Superblock::decode(sb_bytes).map_err(|e| decoded(e, format::SUPER_OFFSET))?;
        if sb.magic != EROFS_MAGIC {
            return Err(Error::NotErofs { magic: sb.magic });
        }
        if sb.blkszbits != format::BLOCK_BITS {
            return Err(Error::unsupported(
                None,
                format!("EROFS block size 2^{}", sb.blkszbits),
            ));
        }
        let meta_start = u64::from(sb.meta_blkaddr) * BLOCK_SIZE;
        let xattr_start = u64::from(sb.xattr_blkaddr) * BLOCK_SIZE;
        for (what, start) in [
            ("EROFS metadata area", meta_start),
            ("EROFS xattr area", xattr_start),
        ] {
            if start >= len {
                return Err(Error::OutOfBounds {
                    nid: None,
                    what,
                    start,
                    len: 0,
                    image_len: len,
                });
            }
        }
        let img = ErofsImage {
            data,
            header,
            sb,
            meta_start,
            xattr_start,
            parents: Mutex::new(HashMap::new()),
        };
        let root = img.raw_inode(img.root_nid())?;
        if !root.is_dir() {
            return Err(Error::corrupt(
                Some(root.nid),
                Some(root.offset),
                "the root inode is not a directory",
            ));
        }
        Ok(img)
    }

    /// An image file, mapped: only what is looked at is read, so opening
    /// costs nothing proportional to the image.
    pub fn from_file(file: File) -> Result<Self> {
        Self::from_bytes(Bytes::map(&file).map_err(Error::Map)?)
    }

    /// [`Self::from_file`] on the file at `path`, which errors name.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
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

    /// `len` bytes at `off`, which `what` names in the error when they
    /// are not all in the image.
    fn slice(&self, off: u64, len: u64, what: &'static str) -> Result<&[u8]> {
        bounded(&self.data, off, len).map_err(|e| e.named(what))
    }

    /// Parse the inode `nid`.
    pub fn raw_inode(&self, nid: u64) -> Result<RawInode> {
        self.raw_inode_at(nid).map_err(|e| e.in_inode(nid))
    }

    fn raw_inode_at(&self, nid: u64) -> Result<RawInode> {
        let offset = nid
            .checked_mul(SLOT_SIZE)
            .and_then(|o| o.checked_add(self.meta_start))
            .ok_or_else(|| Error::corrupt(Some(nid), None, "nid out of range"))?;
        let first = self.slice(offset, 2, "inode")?;
        let fmt = u16::from_le_bytes([first[0], first[1]]);
        let extended = fmt & format::I_VERSION_MASK != 0;
        let layout = (fmt >> format::I_DATALAYOUT_BIT) & format::I_DATALAYOUT_MASK;
        let raw = if extended {
            let e =
                ExtendedInode::decode(self.slice(offset, ExtendedInode::SIZE as u64, "inode")?)
                    .map_err(|e| decoded(e, offset))?;
            if e.mtime_nsec >= 1_000_000_000 {
                return Err(Error::corrupt(
                    Some(nid),
                    Some(offset),
                    format!("invalid mtime nanoseconds {}", e.mtime_nsec),
                ));
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
            let c = CompactInode::decode(self.slice(offset, CompactInode::SIZE as u64, "inode")?)
                .map_err(|e| decoded(e, offset))?;
            if self.sb.build_time_nsec >= 1_000_000_000 {
                return Err(Error::corrupt(
                    None,
                    Some(format::SUPER_OFFSET),
                    format!(
                        "invalid build time nanoseconds {} in the EROFS superblock",
                        self.sb.build_time_nsec
                    ),
                ));
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
            return Err(Error::corrupt(
                Some(nid),
                Some(offset),
                format!("unknown file type {fmt:#o}"),
            ));
        }
        match layout {
            format::LAYOUT_FLAT_PLAIN | format::LAYOUT_FLAT_INLINE => {}
            format::LAYOUT_CHUNK_BASED if raw.file_format() == mode::S_IFREG => {}
            other => {
                return Err(Error::unsupported(
                    Some(nid),
                    format!("data layout {other}"),
                ));
            }
        }
        // The xattr area must be inside the image.
        self.slice(raw.offset + raw.header_size(), raw.xattr_size(), "xattrs")?;
        Ok(raw)
    }

    fn xattr_entry(&self, off: u64, end: u64, shared: bool) -> Result<(RawXattr, u64)> {
        let h = XattrEntryHeader::decode(self.slice(
            off,
            XattrEntryHeader::SIZE as u64,
            "xattr entry",
        )?)
        .map_err(|e| decoded(e, off))?;
        let size = h.entry_size();
        if off.checked_add(size).is_none_or(|stop| stop > end) {
            return Err(Error::corrupt(
                None,
                Some(off),
                "xattr entry runs past its area",
            ));
        }
        let prefix = format::xattr_prefix(h.name_index).ok_or_else(|| {
            Error::unsupported(None, format!("xattr name index {}", h.name_index))
        })?;
        let body = self.slice(
            off + 4,
            u64::from(h.name_len) + u64::from(h.value_size),
            "xattr entry",
        )?;
        let (suffix, value) = body.split_at(usize::from(h.name_len));
        let name = [prefix, suffix].concat();
        if name.is_empty() {
            return Err(Error::corrupt(None, Some(off), "empty xattr name"));
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
        self.raw_xattrs_at(ino).map_err(|e| e.in_inode(ino.nid))
    }

    fn raw_xattrs_at(&self, ino: &RawInode) -> Result<Vec<RawXattr>> {
        let size = ino.xattr_size();
        if size == 0 {
            return Ok(Vec::new());
        }
        let start = ino.offset + ino.header_size();
        let end = start + size;
        let h =
            XattrIbodyHeader::decode(self.slice(start, XattrIbodyHeader::SIZE as u64, "xattrs")?)
                .map_err(|e| decoded(e, start))?;
        let shared_count = u64::from(h.shared_count);
        let mut pos = start + XattrIbodyHeader::SIZE as u64 + 4 * shared_count;
        if pos > end {
            return Err(Error::corrupt(
                None,
                Some(start),
                format!("{shared_count} shared xattrs exceed the xattr area of {size} bytes"),
            ));
        }
        let mut out = Vec::new();
        while pos < end {
            let (x, n) = self.xattr_entry(pos, end, false)?;
            out.push(x);
            pos += n;
        }
        let refs = self.slice(
            start + XattrIbodyHeader::SIZE as u64,
            4 * shared_count,
            "shared xattr refs",
        )?;
        let data_len = self.data.len() as u64;
        for r in refs.chunks_exact(4) {
            let idx = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            let off = self.xattr_start + 4 * u64::from(idx);
            let (x, _) = self.xattr_entry(off, data_len, true)?;
            out.push(x);
        }
        Ok(out)
    }

    /// Where a flat inode's data is: out-of-line bytes (offset, length) and
    /// inline tail (offset, length).
    fn flat_ranges(&self, ino: &RawInode) -> Result<((u64, u64), (u64, u64))> {
        if ino.layout == format::LAYOUT_CHUNK_BASED {
            return Err(Error::corrupt(
                Some(ino.nid),
                None,
                "chunk-based inode has no inline data",
            ));
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
        let in_inode = |e: Error| e.in_inode(ino.nid);
        self.slice(oob_off, oob_len, "data blocks")
            .map_err(in_inode)?;
        self.slice(tail_off, tail_len, "inline data")
            .map_err(in_inode)?;
        Ok(((oob_off, oob_len), (tail_off, tail_len)))
    }

    /// The content of a flat (non-chunk-based) file or symlink.
    pub fn flat_data(&self, ino: &RawInode) -> Result<Vec<u8>> {
        let ((oo, ol), (to, tl)) = self.flat_ranges(ino)?;
        let mut v = Vec::with_capacity((ol + tl) as usize);
        v.extend_from_slice(self.slice(oo, ol, "data blocks")?);
        v.extend_from_slice(self.slice(to, tl, "inline data")?);
        Ok(v)
    }

    /// The entries of a directory as stored.
    pub fn raw_dirents(&self, ino: &RawInode) -> Result<Vec<RawDirent>> {
        if !ino.is_dir() {
            return Err(Error::corrupt(Some(ino.nid), None, "not a directory"));
        }
        let ((oo, ol), (to, tl)) = self.flat_ranges(ino)?;
        let mut out = Vec::new();
        let mut off = oo;
        let placed = |at: u64| move |e: Error| e.at(at).in_inode(ino.nid);
        while off < oo + ol {
            let len = (oo + ol - off).min(BLOCK_SIZE);
            let block = self.slice(off, len, "data blocks").map_err(placed(off))?;
            parse_dir_block(block, &mut out).map_err(placed(off))?;
            off += len;
        }
        if tl > 0 {
            let tail = self.slice(to, tl, "inline data").map_err(placed(to))?;
            parse_dir_block(tail, &mut out).map_err(placed(to))?;
        }
        Ok(out)
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

/// `len` bytes of `data` at `off`, or an [`Error::OutOfBounds`] (its
/// `what` left for the caller to name).
fn bounded(data: &[u8], off: u64, len: u64) -> Result<&[u8]> {
    match off.checked_add(len) {
        Some(end) if end <= data.len() as u64 => Ok(&data[off as usize..end as usize]),
        _ => Err(Error::OutOfBounds {
            nid: None,
            what: "",
            start: off,
            len,
            image_len: data.len() as u64,
        }),
    }
}

/// A `format` decoding error (only a short buffer, which callers rule
/// out first) as a corrupt structure at `at`.
fn decoded(e: anyhow::Error, at: u64) -> Error {
    Error::corrupt(None, Some(at), format!("{e:#}"))
}

/// Parse one directory block (or inline tail) as `erofs_readdir_block`;
/// errors name no place (the caller knows it).
fn parse_dir_block(block: &[u8], out: &mut Vec<RawDirent>) -> Result<()> {
    let bad = |what: String| Err(Error::corrupt(None, None, what));
    let Ok(first) = Dirent::decode(block) else {
        return bad(format!(
            "directory block of {} bytes is shorter than an entry",
            block.len()
        ));
    };
    let head = usize::from(first.nameoff);
    if !(head >= Dirent::SIZE && head % Dirent::SIZE == 0 && head <= block.len()) {
        return bad(format!("bad first name offset {head}"));
    }
    let n = head / Dirent::SIZE;
    // Within `head`, which lies in the block: every entry is whole.
    let entry = |i: usize| {
        Dirent::decode(&block[i * Dirent::SIZE..]).expect("entries before head are whole")
    };
    let mut prev = None;
    for i in 0..n {
        let d = entry(i);
        let start = usize::from(d.nameoff);
        let end = if i + 1 < n {
            usize::from(entry(i + 1).nameoff)
        } else {
            block.len()
        };
        if !(start >= head && start <= end && end <= block.len()) {
            return bad(format!("bad name offsets {start}..{end}"));
        }
        let mut name = &block[start..end];
        if i + 1 == n
            && let Some(z) = name.iter().position(|&b| b == 0)
        {
            name = &name[..z];
        }
        if name.is_empty() || name.len() > format::NAME_LEN {
            return bad(format!("bad name length {}", name.len()));
        }
        if let Some(p) = prev
            && p > start
        {
            return bad("name offsets go backwards".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Tree;

    /// A small image: the root, a file with inline data, a directory.
    fn image() -> Vec<u8> {
        let dump = "/ 4096 40755 3 0 0 0 1000.0 - - -\n\
                    /d 0 40755 2 0 0 0 1000.0 - - -\n\
                    /f 5 100644 1 0 0 0 1000.0 - hello - user.x=1\n";
        let tree = crate::dumpfile::parse(dump.as_bytes()).unwrap();
        crate::erofs::image_version_to_vec(&tree, 1).unwrap()
    }

    fn patched(img: &[u8], at: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = img.to_vec();
        v[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        v
    }

    fn err(r: Result<ErofsImage>) -> Error {
        r.expect_err("an error")
    }

    #[test]
    fn a_good_image_reads() {
        let img = ErofsImage::new(image()).unwrap();
        assert_eq!(img.check().unwrap(), 2);
    }

    #[test]
    fn not_composefs_or_not_erofs() {
        let good = image();
        let e = err(ErofsImage::new(good[..10].to_vec()));
        assert!(
            matches!(
                e,
                Error::NotComposefs {
                    magic: None,
                    len: 10
                }
            ),
            "{e}"
        );
        let e = err(ErofsImage::new(patched(&good, 0, b"\0\0\0\0")));
        assert!(
            matches!(e, Error::NotComposefs { magic: Some(0), .. }),
            "{e}"
        );
        assert_eq!(e.to_string(), "not a composefs image (bad magic 0x0)");
        let e = err(ErofsImage::new(patched(
            &good,
            format::SUPER_OFFSET,
            b"XXXX",
        )));
        assert!(matches!(e, Error::NotErofs { .. }), "{e}");
        assert!(!e.is_damaged());
    }

    #[test]
    fn unsupported_versions_and_features() {
        let good = image();
        let e = err(ErofsImage::new(patched(&good, 4, &7u32.to_le_bytes())));
        assert!(matches!(e, Error::Unsupported { nid: None, .. }), "{e}");
        assert_eq!(e.to_string(), "unsupported composefs header version 7");
        let e = err(ErofsImage::new(patched(
            &good,
            format::SUPER_OFFSET + 12,
            &[13],
        )));
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        // The root inode with a compressed data layout.
        let img = ErofsImage::new(good.clone()).unwrap();
        let root = img.raw_inode(img.root_nid()).unwrap();
        let format =
            (format::LAYOUT_COMPRESSED_FULL << format::I_DATALAYOUT_BIT) | u16::from(root.extended);
        let e = err(ErofsImage::new(patched(
            &good,
            root.offset,
            &format.to_le_bytes(),
        )));
        assert!(
            matches!(&e, Error::Unsupported { nid: Some(n), .. } if *n == root.nid),
            "{e}"
        );
        assert!(e.to_string().contains("unsupported data layout 1"), "{e}");
    }

    #[test]
    fn corrupt_metadata_names_inode_and_offset() {
        let good = image();
        let img = ErofsImage::new(good.clone()).unwrap();
        let root = img.raw_inode(img.root_nid()).unwrap();
        // An unknown file type in the root inode.
        let e = err(ErofsImage::new(patched(&good, root.offset + 4, &[0, 0])));
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert_eq!((e.nid(), e.offset()), (Some(root.nid), Some(root.offset)));
        assert!(e.is_damaged());
        // The root's first directory entry with a bad name offset.
        let ((oob, oob_len), (tail, _)) = img.flat_ranges(&root).unwrap();
        let block = if oob_len > 0 { oob } else { tail };
        let bad = ErofsImage::new(patched(&good, block + 8, &1u16.to_le_bytes())).unwrap();
        let root = bad.raw_inode(bad.root_nid()).unwrap();
        let e = bad.raw_dirents(&root).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert_eq!((e.nid(), e.offset()), (Some(root.nid), Some(block)));
        assert!(e.to_string().contains("bad first name offset 1"), "{e}");
        // Through the tree view the same error is found in the chain.
        let e = bad.readdir(bad.root()).unwrap_err();
        assert_eq!(Error::find(&e).and_then(Error::nid), Some(root.nid));
    }

    #[test]
    fn ranges_past_the_end_are_out_of_bounds() {
        let good = image();
        // Cut inside the superblock.
        let e = err(ErofsImage::new(good[..1100].to_vec()));
        assert!(
            matches!(
                e,
                Error::OutOfBounds {
                    what: "EROFS superblock",
                    start: 1024,
                    ..
                }
            ),
            "{e}"
        );
        // The root inode's xattr count pointing past the end.
        let img = ErofsImage::new(good.clone()).unwrap();
        let root = img.raw_inode(img.root_nid()).unwrap();
        let e = err(ErofsImage::new(patched(
            &good,
            root.offset + 2,
            &[0xff, 0xff],
        )));
        assert!(
            matches!(&e, Error::OutOfBounds { what: "xattrs", nid: Some(n), .. } if *n == root.nid),
            "{e}"
        );
        assert!(e.to_string().contains("lies outside the image"), "{e}");
        // A file whose data blocks lie past the end.
        let f = img.readdir(img.root()).unwrap()[1].ino;
        let raw = img.raw_inode(f).unwrap();
        let mut v = patched(&good, raw.offset + 8, &100_000u32.to_le_bytes()); // size
        v = patched(&v, raw.offset + 16, &1000u32.to_le_bytes()); // block address
        let e = ErofsImage::new(v).unwrap().load_inode(f).unwrap_err();
        assert!(
            matches!(&e, Error::OutOfBounds { what: "data blocks", nid: Some(n), .. } if *n == f),
            "{e}"
        );
    }
}
