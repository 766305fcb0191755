//! On-disk structures of a composefs EROFS image, with explicit
//! little-endian encoding and decoding.
//!
//! Layout of an image written by `mkcomposefs` (and by [`super::writer`]):
//!
//! ```text
//! 0        composefs header (32 bytes), zero padding to 1024
//! 1024     EROFS superblock (128 bytes)
//! 1152     inode table: inodes on 32-byte slots (nid = offset / 32), each
//!          followed by its xattrs and its inline tail
//! ...      shared xattr table (xattr_blkaddr = its block; entries addressed
//!          in 4-byte units from the start of that block)
//! ...      data blocks (directory blocks, non-inline file and symlink data),
//!          4096-byte aligned
//! ```
//!
//! Every struct here has an `encode` into a fixed-size array and a `decode`
//! from a byte slice that checks the slice is long enough; nothing is
//! transmuted.

use anyhow::{Result, bail};

/// log2 of the block size; composefs images always use 4096-byte blocks.
pub const BLOCK_BITS: u8 = 12;
/// The block size.
pub const BLOCK_SIZE: u64 = 1 << BLOCK_BITS;
/// log2 of the inode slot size.
pub const SLOT_BITS: u8 = 5;
/// Inodes start on 32-byte slots; a nid is an offset in slots.
pub const SLOT_SIZE: u64 = 1 << SLOT_BITS;
/// Offset of the EROFS superblock.
pub const SUPER_OFFSET: u64 = 1024;
/// Where the inode table starts in images we write (right after the
/// superblock).
pub const INODES_START: u64 = SUPER_OFFSET + Superblock::SIZE as u64;

/// `LCFS_EROFS_MAGIC`.
pub const COMPOSEFS_MAGIC: u32 = 0xd078_629a;
/// `LCFS_EROFS_VERSION`: the version of the composefs header itself.
pub const COMPOSEFS_HEADER_VERSION: u32 = 1;
/// `LCFS_EROFS_FLAGS_HAS_ACL`: some inode carries a POSIX ACL xattr.
pub const COMPOSEFS_FLAGS_HAS_ACL: u32 = 1 << 0;

/// `EROFS_SUPER_MAGIC_V1`.
pub const EROFS_MAGIC: u32 = 0xe0f5_e1e2;
/// `EROFS_FEATURE_COMPAT_MTIME`: `build_time` is the mtime of compact inodes.
pub const FEATURE_COMPAT_MTIME: u32 = 0x2;
/// `EROFS_FEATURE_COMPAT_XATTR_FILTER`: inodes carry an xattr name bloom filter.
pub const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x4;

/// Inode data layouts (`i_format` bits 1..3).
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
pub const LAYOUT_COMPRESSED_FULL: u16 = 1;
pub const LAYOUT_FLAT_INLINE: u16 = 2;
pub const LAYOUT_COMPRESSED_COMPACT: u16 = 3;
pub const LAYOUT_CHUNK_BASED: u16 = 4;
/// `i_format` bit 0: 0 = compact (32-byte) inode, 1 = extended (64-byte).
pub const I_VERSION_MASK: u16 = 0x1;
pub const I_DATALAYOUT_BIT: u16 = 1;
pub const I_DATALAYOUT_MASK: u16 = 0x7;

/// Chunk format: the low 5 bits are log2(chunk size) - BLOCK_BITS.
pub const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x001f;
/// Chunk format flag: 8-byte chunk indexes instead of 4-byte block addresses
/// (never used by composefs).
pub const CHUNK_FORMAT_INDEXES: u16 = 0x0020;
/// A chunk block address meaning "a hole": composefs files have no data
/// in the image, only holes.
pub const NULL_ADDR: u32 = 0xffff_ffff;
/// `LCFS_MAX_NONINLINE_CHUNKS`: the chunk map of a file must fit one block.
pub const MAX_CHUNKS: u64 = BLOCK_SIZE / 4;

/// Directory entry file types (`EROFS_FT_*`).
pub const FT_UNKNOWN: u8 = 0;
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

/// Longest name a directory entry may have (`EROFS_NAME_LEN`).
pub const NAME_LEN: usize = 255;

/// xattr name indexes (`EROFS_XATTR_INDEX_*`).
pub const XATTR_INDEX_USER: u8 = 1;
pub const XATTR_INDEX_POSIX_ACL_ACCESS: u8 = 2;
pub const XATTR_INDEX_POSIX_ACL_DEFAULT: u8 = 3;
pub const XATTR_INDEX_TRUSTED: u8 = 4;
pub const XATTR_INDEX_LUSTRE: u8 = 5;
pub const XATTR_INDEX_SECURITY: u8 = 6;
/// `EROFS_XATTR_LONG_PREFIX`: an index with this bit refers to a long
/// prefix table (never used by composefs); also the most shared xattrs one
/// inode may reference in `mkcomposefs`.
pub const XATTR_LONG_PREFIX: u8 = 0x80;

/// `EROFS_XATTR_FILTER_SEED`.
pub const XATTR_FILTER_SEED: u32 = 0x25bb_e08f;

/// The full xattr name prefix an index stands for, as the kernel reads it.
pub fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        0 => b"",
        XATTR_INDEX_USER => b"user.",
        XATTR_INDEX_POSIX_ACL_ACCESS => b"system.posix_acl_access",
        XATTR_INDEX_POSIX_ACL_DEFAULT => b"system.posix_acl_default",
        XATTR_INDEX_TRUSTED => b"trusted.",
        XATTR_INDEX_LUSTRE => b"lustre.",
        XATTR_INDEX_SECURITY => b"security.",
        _ => return None,
    })
}

/// Split an xattr name into the index and suffix `mkcomposefs` stores.
///
/// Mirrors `xattr_erofs_entry_index()`: the prefixes are tried in the order
/// `user.`, `system.posix_acl_access`, `system.posix_acl_default`,
/// `trusted.`, `security.`; `lustre.` is not in the C table, so such names
/// are stored whole under index 0. Note the ACL names match as plain
/// prefixes, as in C.
pub fn xattr_split(name: &[u8]) -> (u8, &[u8]) {
    const TABLE: [(&[u8], u8); 5] = [
        (b"user.", XATTR_INDEX_USER),
        (b"system.posix_acl_access", XATTR_INDEX_POSIX_ACL_ACCESS),
        (b"system.posix_acl_default", XATTR_INDEX_POSIX_ACL_DEFAULT),
        (b"trusted.", XATTR_INDEX_TRUSTED),
        (b"security.", XATTR_INDEX_SECURITY),
    ];
    for (prefix, index) in TABLE {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (index, rest);
        }
    }
    (0, name)
}

/// Overlayfs xattr names composefs writes or escapes.
pub mod overlay {
    pub const PREFIX: &[u8] = b"trusted.overlay.";
    pub const ESCAPED_PREFIX: &[u8] = b"trusted.overlay.overlay.";
    pub const METACOPY: &[u8] = b"trusted.overlay.metacopy";
    pub const REDIRECT: &[u8] = b"trusted.overlay.redirect";
    pub const OPAQUE: &[u8] = b"trusted.overlay.opaque";
    pub const ESCAPED_WHITEOUT: &[u8] = b"trusted.overlay.overlay.whiteout";
    pub const ESCAPED_WHITEOUTS: &[u8] = b"trusted.overlay.overlay.whiteouts";
    pub const ESCAPED_OPAQUE: &[u8] = b"trusted.overlay.overlay.opaque";
    pub const USERXATTR_WHITEOUT: &[u8] = b"user.overlay.whiteout";
    pub const USERXATTR_WHITEOUTS: &[u8] = b"user.overlay.whiteouts";
    pub const USERXATTR_OPAQUE: &[u8] = b"user.overlay.opaque";
}

/// `round_up(x, align)` for a power-of-two `align`, checked.
pub fn round_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

fn need(buf: &[u8], len: usize, what: &str) -> Result<()> {
    if buf.len() < len {
        bail!("{what}: need {len} bytes, only {} available", buf.len());
    }
    Ok(())
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The composefs header at offset 0 (`struct lcfs_erofs_header_s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComposefsHeader {
    pub magic: u32,
    /// Version of this header: [`COMPOSEFS_HEADER_VERSION`].
    pub version: u32,
    pub flags: u32,
    /// The composefs format version (0 or 1 for `mkcomposefs` 1.0.x).
    pub composefs_version: u32,
    pub unused: [u32; 4],
}

impl ComposefsHeader {
    pub const SIZE: usize = 32;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put32(&mut b, 0, self.magic);
        put32(&mut b, 4, self.version);
        put32(&mut b, 8, self.flags);
        put32(&mut b, 12, self.composefs_version);
        for (i, u) in self.unused.iter().enumerate() {
            put32(&mut b, 16 + 4 * i, *u);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        need(b, Self::SIZE, "composefs header")?;
        Ok(Self {
            magic: u32_at(b, 0),
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            composefs_version: u32_at(b, 12),
            unused: [u32_at(b, 16), u32_at(b, 20), u32_at(b, 24), u32_at(b, 28)],
        })
    }
}

/// The EROFS superblock at offset 1024 (`struct erofs_super_block`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    pub magic: u32,
    pub checksum: u32,
    pub feature_compat: u32,
    pub blkszbits: u8,
    pub sb_extslots: u8,
    pub root_nid: u16,
    pub inos: u64,
    pub build_time: u64,
    pub build_time_nsec: u32,
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub xattr_blkaddr: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: u32,
    /// `available_compr_algs` / `lz4_max_distance`.
    pub u1: u16,
    pub extra_devices: u16,
    pub devt_slotoff: u16,
    pub dirblkbits: u8,
    pub xattr_prefix_count: u8,
    pub xattr_prefix_start: u32,
    pub packed_nid: u64,
    pub xattr_filter_reserved: u8,
    pub reserved2: [u8; 23],
}

impl Superblock {
    pub const SIZE: usize = 128;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put32(&mut b, 0, self.magic);
        put32(&mut b, 4, self.checksum);
        put32(&mut b, 8, self.feature_compat);
        b[12] = self.blkszbits;
        b[13] = self.sb_extslots;
        put16(&mut b, 14, self.root_nid);
        put64(&mut b, 16, self.inos);
        put64(&mut b, 24, self.build_time);
        put32(&mut b, 32, self.build_time_nsec);
        put32(&mut b, 36, self.blocks);
        put32(&mut b, 40, self.meta_blkaddr);
        put32(&mut b, 44, self.xattr_blkaddr);
        b[48..64].copy_from_slice(&self.uuid);
        b[64..80].copy_from_slice(&self.volume_name);
        put32(&mut b, 80, self.feature_incompat);
        put16(&mut b, 84, self.u1);
        put16(&mut b, 86, self.extra_devices);
        put16(&mut b, 88, self.devt_slotoff);
        b[90] = self.dirblkbits;
        b[91] = self.xattr_prefix_count;
        put32(&mut b, 92, self.xattr_prefix_start);
        put64(&mut b, 96, self.packed_nid);
        b[104] = self.xattr_filter_reserved;
        b[105..128].copy_from_slice(&self.reserved2);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        need(b, Self::SIZE, "EROFS superblock")?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[48..64]);
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(&b[64..80]);
        let mut reserved2 = [0u8; 23];
        reserved2.copy_from_slice(&b[105..128]);
        Ok(Self {
            magic: u32_at(b, 0),
            checksum: u32_at(b, 4),
            feature_compat: u32_at(b, 8),
            blkszbits: b[12],
            sb_extslots: b[13],
            root_nid: u16_at(b, 14),
            inos: u64_at(b, 16),
            build_time: u64_at(b, 24),
            build_time_nsec: u32_at(b, 32),
            blocks: u32_at(b, 36),
            meta_blkaddr: u32_at(b, 40),
            xattr_blkaddr: u32_at(b, 44),
            uuid,
            volume_name,
            feature_incompat: u32_at(b, 80),
            u1: u16_at(b, 84),
            extra_devices: u16_at(b, 86),
            devt_slotoff: u16_at(b, 88),
            dirblkbits: b[90],
            xattr_prefix_count: b[91],
            xattr_prefix_start: u32_at(b, 92),
            packed_nid: u64_at(b, 96),
            xattr_filter_reserved: b[104],
            reserved2,
        })
    }
}

/// `i_format` from the inode version and data layout.
pub fn inode_format(extended: bool, layout: u16) -> u16 {
    (layout << I_DATALAYOUT_BIT) | u16::from(extended)
}

/// A 32-byte compact inode (`struct erofs_inode_compact`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactInode {
    pub format: u16,
    pub xattr_icount: u16,
    pub mode: u16,
    pub nlink: u16,
    pub size: u32,
    pub reserved: u32,
    /// `i_u`: raw block address, rdev, or chunk format (low 16 bits).
    pub u: u32,
    pub ino: u32,
    pub uid: u16,
    pub gid: u16,
    pub reserved2: u32,
}

impl CompactInode {
    pub const SIZE: usize = 32;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put16(&mut b, 0, self.format);
        put16(&mut b, 2, self.xattr_icount);
        put16(&mut b, 4, self.mode);
        put16(&mut b, 6, self.nlink);
        put32(&mut b, 8, self.size);
        put32(&mut b, 12, self.reserved);
        put32(&mut b, 16, self.u);
        put32(&mut b, 20, self.ino);
        put16(&mut b, 24, self.uid);
        put16(&mut b, 26, self.gid);
        put32(&mut b, 28, self.reserved2);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        need(b, Self::SIZE, "compact inode")?;
        Ok(Self {
            format: u16_at(b, 0),
            xattr_icount: u16_at(b, 2),
            mode: u16_at(b, 4),
            nlink: u16_at(b, 6),
            size: u32_at(b, 8),
            reserved: u32_at(b, 12),
            u: u32_at(b, 16),
            ino: u32_at(b, 20),
            uid: u16_at(b, 24),
            gid: u16_at(b, 26),
            reserved2: u32_at(b, 28),
        })
    }
}

/// A 64-byte extended inode (`struct erofs_inode_extended`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtendedInode {
    pub format: u16,
    pub xattr_icount: u16,
    pub mode: u16,
    pub reserved: u16,
    pub size: u64,
    pub u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub mtime_nsec: u32,
    pub nlink: u32,
    pub reserved2: [u8; 16],
}

impl ExtendedInode {
    pub const SIZE: usize = 64;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put16(&mut b, 0, self.format);
        put16(&mut b, 2, self.xattr_icount);
        put16(&mut b, 4, self.mode);
        put16(&mut b, 6, self.reserved);
        put64(&mut b, 8, self.size);
        put32(&mut b, 16, self.u);
        put32(&mut b, 20, self.ino);
        put32(&mut b, 24, self.uid);
        put32(&mut b, 28, self.gid);
        put64(&mut b, 32, self.mtime);
        put32(&mut b, 40, self.mtime_nsec);
        put32(&mut b, 44, self.nlink);
        b[48..64].copy_from_slice(&self.reserved2);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        need(b, Self::SIZE, "extended inode")?;
        let mut reserved2 = [0u8; 16];
        reserved2.copy_from_slice(&b[48..64]);
        Ok(Self {
            format: u16_at(b, 0),
            xattr_icount: u16_at(b, 2),
            mode: u16_at(b, 4),
            reserved: u16_at(b, 6),
            size: u64_at(b, 8),
            u: u32_at(b, 16),
            ino: u32_at(b, 20),
            uid: u32_at(b, 24),
            gid: u32_at(b, 28),
            mtime: u64_at(b, 32),
            mtime_nsec: u32_at(b, 40),
            nlink: u32_at(b, 44),
            reserved2,
        })
    }
}

/// The header of an inode's xattr area (`struct erofs_xattr_ibody_header`),
/// followed on disk by `shared_count` 4-byte shared xattr references.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrIbodyHeader {
    /// Bloom filter of the names present: bit set = name absent
    /// (with [`FEATURE_COMPAT_XATTR_FILTER`]).
    pub name_filter: u32,
    pub shared_count: u8,
    pub reserved: [u8; 7],
}

impl XattrIbodyHeader {
    pub const SIZE: usize = 12;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put32(&mut b, 0, self.name_filter);
        b[4] = self.shared_count;
        b[5..12].copy_from_slice(&self.reserved);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        need(b, Self::SIZE, "xattr header")?;
        let mut reserved = [0u8; 7];
        reserved.copy_from_slice(&b[5..12]);
        Ok(Self {
            name_filter: u32_at(b, 0),
            shared_count: b[4],
            reserved,
        })
    }
}

/// Size of an inode's xattr area for an `i_xattr_icount`.
pub fn xattr_ibody_size(icount: u16) -> u64 {
    if icount == 0 {
        0
    } else {
        XattrIbodyHeader::SIZE as u64 + (u64::from(icount) - 1) * 4
    }
}

/// The header of one xattr entry (`struct erofs_xattr_entry`), followed by
/// the name suffix and the value, padded to 4 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrEntryHeader {
    pub name_len: u8,
    pub name_index: u8,
    pub value_size: u16,
}

impl XattrEntryHeader {
    pub const SIZE: usize = 4;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0] = self.name_len;
        b[1] = self.name_index;
        put16(&mut b, 2, self.value_size);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        need(b, Self::SIZE, "xattr entry")?;
        Ok(Self {
            name_len: b[0],
            name_index: b[1],
            value_size: u16_at(b, 2),
        })
    }

    /// Size of the whole entry on disk, padding included.
    pub fn entry_size(&self) -> u64 {
        (Self::SIZE as u64 + u64::from(self.name_len) + u64::from(self.value_size) + 3) & !3
    }
}

/// A directory entry header (`struct erofs_dirent`); the names follow all
/// the headers of a block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dirent {
    pub nid: u64,
    pub nameoff: u16,
    pub file_type: u8,
    pub reserved: u8,
}

impl Dirent {
    pub const SIZE: usize = 12;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put64(&mut b, 0, self.nid);
        put16(&mut b, 8, self.nameoff);
        b[10] = self.file_type;
        b[11] = self.reserved;
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        need(b, Self::SIZE, "directory entry")?;
        Ok(Self {
            nid: u64_at(b, 0),
            nameoff: u16_at(b, 8),
            file_type: b[10],
            reserved: b[11],
        })
    }
}

/// The overlayfs metacopy xattr value (`struct ovl_metacopy`): version 0,
/// length, flags 0, fs-verity algorithm, digest. `None` for an unknown
/// algorithm number is never produced: the caller passes a known digest.
pub fn metacopy_value(alg_id: u8, digest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + digest.len());
    v.push(0); // version
    v.push((4 + digest.len()) as u8);
    v.push(0); // flags
    v.push(alg_id);
    v.extend_from_slice(digest);
    v
}

/// xxHash32, as the kernel's `xxh32()` (used for the xattr name filter).
pub fn xxh32(input: &[u8], seed: u32) -> u32 {
    const P1: u32 = 2_654_435_761;
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;

    fn round(acc: u32, lane: u32) -> u32 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    }
    fn lane(b: &[u8]) -> u32 {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    let len = input.len();
    let mut rest = input;
    let mut h = if len >= 16 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 16 {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = round(*acc, lane(&rest[4 * i..]));
            }
            rest = &rest[16..];
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len as u32);
    while rest.len() >= 4 {
        h = h
            .wrapping_add(lane(rest).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
        rest = &rest[4..];
    }
    for &b in rest {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^= h >> 16;
    h
}

/// The filter bit of one xattr (by the index and suffix it is stored under).
pub fn xattr_filter_bit(index: u8, suffix: &[u8]) -> u32 {
    1u32 << (xxh32(suffix, XATTR_FILTER_SEED.wrapping_add(u32::from(index))) & 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh32_known_values() {
        // Reference values of the xxHash32 specification.
        assert_eq!(xxh32(b"", 0), 0x02cc_5d05);
        assert_eq!(xxh32(b"a", 0), 0x550d_7456);
        assert_eq!(xxh32(b"abc", 0), 0x32d1_53ff);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition", 0),
            0xe229_3b2f
        );
    }

    #[test]
    fn structs_round_trip() {
        let sb = Superblock {
            magic: EROFS_MAGIC,
            blkszbits: 12,
            root_nid: 36,
            inos: 7,
            build_time: u64::MAX,
            reserved2: [9; 23],
            ..Default::default()
        };
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
        let e = ExtendedInode {
            format: 3,
            size: 1 << 40,
            mtime: 5,
            nlink: 70000,
            ..Default::default()
        };
        assert_eq!(ExtendedInode::decode(&e.encode()).unwrap(), e);
        let d = Dirent {
            nid: 1 << 33,
            nameoff: 24,
            file_type: FT_DIR,
            reserved: 0,
        };
        assert_eq!(Dirent::decode(&d.encode()).unwrap(), d);
        assert!(Dirent::decode(&[0; 11]).is_err());
    }

    #[test]
    fn split_like_c() {
        assert_eq!(xattr_split(b"user.foo"), (1, &b"foo"[..]));
        assert_eq!(xattr_split(b"system.posix_acl_access"), (2, &b""[..]));
        assert_eq!(xattr_split(b"lustre.lov"), (0, &b"lustre.lov"[..]));
        assert_eq!(xattr_split(b"security.selinux"), (6, &b"selinux"[..]));
    }
}
