//! Framed splitstreams: random access to the chunk sequence.
//!
//! A splitstream's chunks are one zstd stream, so reaching any byte means
//! decompressing everything before it. A *framed* splitstream writes its
//! chunks as independent zstd frames instead, cut where the writer chose
//! (always on chunk boundaries), and ends its stream section with a zstd
//! *skippable* frame holding a table of them. zstd decoders skip such
//! frames, so any splitstream reader (ours, composefs-rs) still reads the
//! stream front to back as before; [`Frames`] reads one frame at a time.
//! Stored ostree commits use this (see `ostree::commitstream`): a diff or
//! a lookup touches only the frames holding the objects it needs.
//!
//! Frames are compressed ([`FrameCoding::Zstd`]) or *stored*
//! ([`FrameCoding::Stored`]): a valid zstd frame holding one raw
//! (uncompressed) block and zstd's content checksum. A stored frame is
//! read straight from the mapped file — no decompression, no copy — after
//! its checksum is checked; ostree commit streams (mostly checksums, which
//! do not compress) are written this way.
//!
//! The table (all integers little-endian), at the very end of the stream
//! section:
//! ```text
//! u32 0x184D2A5E  u32 N            zstd skippable frame header, N = 32 × count + 16
//! count × { u64 compressed_offset  u32 compressed_len  u32 raw_len
//!           u64 inline_offset      u32 inline_len      u32 externals }
//! u32 count  u32 1 (version)  "CFSFRAME"
//! ```
//! `compressed_offset` counts from the start of the stream section;
//! `raw_len` is the frame's decompressed size (chunk headers included;
//! each frame carries zstd's content checksum, checked as it is read);
//! `inline_offset`/`inline_len` place the frame's inline bytes in the
//! stream with external content left out; `externals` counts its object
//! chunks.
//!
//! Everything read from a table is checked before use: frames must tile
//! the section and the inline bytes in order, a frame decompresses to
//! exactly its `raw_len` (at most [`MAX_FRAME_RAW`]), and its chunks to
//! exactly its inline length and external count.

use std::fs::File;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use super::error::{Error, Result};
use super::format::{HEADER_SIZE, Header, INFO_SIZE, Info};
use crate::fsverity::{Algorithm, ObjectId};
use crate::mapped::Bytes;

/// Largest decompressed frame written or read.
pub const MAX_FRAME_RAW: usize = 64 << 20;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// zstd's largest block.
const ZSTD_BLOCK_MAX: usize = 128 << 10;
const FOOTER_MAGIC: &[u8; 8] = b"CFSFRAME";
const FOOTER_SIZE: usize = 16;
const ENTRY_SIZE: usize = 32;
const VERSION: u32 = 1;

/// How a framed stream's frames are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameCoding {
    /// zstd-compressed.
    Zstd,
    /// Raw zstd blocks: read in place, never decompressed.
    Stored,
}

/// One frame as the table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameEntry {
    pub compressed_offset: u64,
    pub compressed_len: u32,
    pub raw_len: u32,
    pub inline_offset: u64,
    pub inline_len: u32,
    pub externals: u32,
}

/// The skippable frame holding `table`.
pub fn encode_table(table: &[FrameEntry]) -> Vec<u8> {
    let body = table.len() * ENTRY_SIZE + FOOTER_SIZE;
    let mut out = Vec::with_capacity(8 + body);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body as u32).to_le_bytes());
    for e in table {
        out.extend_from_slice(&e.compressed_offset.to_le_bytes());
        out.extend_from_slice(&e.compressed_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.extend_from_slice(&e.inline_offset.to_le_bytes());
        out.extend_from_slice(&e.inline_len.to_le_bytes());
        out.extend_from_slice(&e.externals.to_le_bytes());
    }
    out.extend_from_slice(&(table.len() as u32).to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(FOOTER_MAGIC);
    out
}

/// `raw` as one zstd frame of raw blocks (what [`FrameCoding::Stored`]
/// writes): magic; a header saying single segment, a 4-byte content size
/// and a content checksum; blocks of at most 128 KiB; the low 32 bits of
/// the content's XXH64. `zstd -d` reads it like any other frame.
pub fn stored_frame(raw: &[u8]) -> Vec<u8> {
    debug_assert!(raw.len() <= MAX_FRAME_RAW);
    let blocks = raw.len().div_ceil(ZSTD_BLOCK_MAX).max(1);
    let mut out = Vec::with_capacity(raw.len() + 9 + 3 * blocks + 4);
    out.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame_Content_Size_flag 2 (4 bytes), Single_Segment, Content_Checksum.
    out.push(0b1010_0100);
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    let mut pieces = raw.chunks(ZSTD_BLOCK_MAX).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&1u32.to_le_bytes()[..3]); // one empty last block
    }
    while let Some(p) = pieces.next() {
        let last = u32::from(pieces.peek().is_none());
        // Block_Type 0 (raw) in bits 1–2, Block_Size from bit 3.
        out.extend_from_slice(&(last | (p.len() as u32) << 3).to_le_bytes()[..3]);
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&(xxhash_rust::xxh64::xxh64(raw, 0) as u32).to_le_bytes());
    out
}

/// The content of `frame` when it is a stored frame of one block (as
/// [`stored_frame`] writes up to 128 KiB) of `raw_len` bytes with a
/// checksum; `None` for any other frame, left to zstd.
fn stored_content(frame: &[u8], raw_len: usize) -> Option<&[u8]> {
    let head = frame.get(..12)?;
    if u32_at(head, 0) != ZSTD_MAGIC || head[4] != 0b1010_0100 {
        return None;
    }
    let block = u32::from_le_bytes([head[9], head[10], head[11], 0]);
    // Last block, raw, exactly the content; then the 4-byte checksum.
    if u32_at(head, 5) as usize != raw_len
        || block != 1 | (raw_len as u32) << 3
        || frame.len() != 12 + raw_len + 4
    {
        return None;
    }
    Some(&frame[12..12 + raw_len])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Run `f` with this thread's zstd decompression context (made once: a
/// context costs more to set up than a small frame to decompress).
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    DCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Decompressor::new()?);
        }
        f(c.as_mut().expect("set above"))
    })
}

/// Where a frame's raw chunk bytes are.
enum FrameBytes {
    /// In the mapped stream file (a stored frame), at this range.
    Mapped(Arc<Bytes>, Range<usize>),
    /// Decompressed (or gathered) into memory.
    Owned(Vec<u8>),
}

impl FrameBytes {
    fn get(&self) -> &[u8] {
        match self {
            FrameBytes::Mapped(map, r) => &map[r.clone()],
            FrameBytes::Owned(v) => v,
        }
    }
}

/// Where the ids of a frame's external chunks come from.
enum Ids {
    /// The stream's object refs array in the mapped file: ref `n` is the
    /// `n`th digest of `refs` (every `n` a frame holds was checked).
    Refs {
        map: Arc<Bytes>,
        refs: Range<usize>,
        algorithm: Algorithm,
    },
    /// Listed (an unframed stream read whole): ref `n` is the `n`th.
    Listed(Vec<ObjectId>),
}

/// One frame, read: its chunks located in place. Inline bytes are handed
/// out from where they lie (the mapped file for a stored frame); a range
/// that spans chunks is served from a joined copy made on first need.
/// 12 bytes an inline chunk, 12 an external one.
pub struct Frame {
    bytes: FrameBytes,
    /// Inline chunks in order: (offset among the frame's inline bytes,
    /// offset in `bytes`, length).
    chunks: Vec<(u32, u32, u32)>,
    /// Objects spliced in, in order: (offset among the inline bytes, ref).
    externals: Vec<(u32, u32)>,
    ids: Ids,
    inline_len: usize,
    joined: OnceLock<Vec<u8>>,
}

impl Frame {
    /// A frame of contiguous inline bytes with objects spliced in at the
    /// given offsets (an unframed stream read whole); at most 4 GiB.
    pub fn from_inline(inline: Vec<u8>, externals: Vec<(u64, ObjectId)>) -> Result<Frame> {
        let len = inline.len();
        let n = u32::try_from(len)
            .ok()
            .filter(|_| externals.len() < u32::MAX as usize);
        let Some(n) = n else {
            return Err(Error::Unsupported(format!(
                "a splitstream of {len} inline bytes is too large to read whole"
            )));
        };
        Ok(Frame {
            bytes: FrameBytes::Owned(inline),
            chunks: vec![(0, 0, n)],
            externals: externals
                .iter()
                .enumerate()
                .map(|(k, (at, _))| (*at as u32, k as u32))
                .collect(),
            ids: Ids::Listed(externals.into_iter().map(|(_, id)| id).collect()),
            inline_len: len,
            joined: OnceLock::new(),
        })
    }

    fn raw(&self) -> &[u8] {
        self.bytes.get()
    }

    fn id(&self, n: u32) -> ObjectId {
        match &self.ids {
            Ids::Refs {
                map,
                refs,
                algorithm,
            } => {
                let len = algorithm.digest_len();
                let at = refs.start + n as usize * len;
                ObjectId::from_bytes(*algorithm, &map[at..at + len]).expect("digest length")
            }
            Ids::Listed(v) => v[n as usize],
        }
    }

    /// Inline bytes in this frame.
    pub fn inline_len(&self) -> usize {
        self.inline_len
    }

    /// The objects spliced into this frame, with where (offset among its
    /// inline bytes), in order.
    pub fn externals(&self) -> impl Iterator<Item = (u64, ObjectId)> + '_ {
        (self.externals.iter()).map(|&(at, n)| (u64::from(at), self.id(n)))
    }

    /// The object spliced in at inline offset `at` of this frame.
    pub fn external_at(&self, at: u64) -> Option<ObjectId> {
        let at = u32::try_from(at).ok()?;
        let k = self.externals.binary_search_by_key(&at, |e| e.0).ok()?;
        Some(self.id(self.externals[k].1))
    }

    /// Inline bytes `[off, off + len)` of this frame, `None` past its end.
    pub fn inline(&self, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.inline_len {
            return None;
        }
        let k = self.chunks.partition_point(|c| (c.0 + c.2) as usize <= off);
        if let Some(&(at, raw_at, n)) = self.chunks.get(k) {
            let (at, raw_at, n) = (at as usize, raw_at as usize, n as usize);
            if at <= off && end <= at + n {
                return self.raw().get(raw_at + off - at..raw_at + end - at);
            }
        }
        self.joined.get_or_init(|| self.to_inline()).get(off..end)
    }

    /// All inline bytes of the frame, joined.
    pub fn to_inline(&self) -> Vec<u8> {
        let raw = self.raw();
        let mut v = Vec::with_capacity(self.inline_len);
        for &(_, at, n) in &self.chunks {
            v.extend_from_slice(&raw[at as usize..(at + n) as usize]);
        }
        v
    }
}

/// Random access to the frames of a framed splitstream.
pub struct Frames {
    map: Arc<Bytes>,
    section: Range<u64>,
    algorithm: Algorithm,
    /// The object refs array, in the file.
    refs: Range<usize>,
    table: Vec<FrameEntry>,
}

impl Frames {
    /// Map a splitstream file and read its frame table, without reading
    /// anything else (object refs are read from the mapping as frames
    /// need them). `None` when the stream is not framed; the caller reads
    /// it as a [`super::SplitStreamReader`]. A bad layout or table is an
    /// error, as the reader would report it.
    pub fn map(file: &File, algorithm: Algorithm) -> Result<Option<Frames>> {
        let map = Bytes::map(file).map_err(|e| Error::io("cannot map splitstream", e))?;
        let header = Header::decode(map.get(..HEADER_SIZE).unwrap_or(&map[..]))?;
        super::format::check_header(&header, map.len() as u64, algorithm)?;
        let info_at = header.info.start as usize;
        let info = Info::decode(&map[info_at..info_at + INFO_SIZE])?;
        super::format::check_sections(&info, map.len() as u64)?;
        let refs = info.object_refs.start as usize..info.object_refs.end as usize;
        Self::open(Arc::new(map), algorithm, info.stream, refs)
    }

    /// The frame table of the stream section `section` of the file mapped
    /// at `map`, or `None` when the stream is not framed. A table that is
    /// there but inconsistent is an error. `section` and `refs` lie in the
    /// file (checked by the caller).
    pub(super) fn open(
        map: Arc<Bytes>,
        algorithm: Algorithm,
        section: Range<u64>,
        refs: Range<usize>,
    ) -> Result<Option<Frames>> {
        let len = section.end - section.start;
        if len < (8 + FOOTER_SIZE) as u64 {
            return Ok(None);
        }
        let end = section.end as usize;
        let footer = &map[end - FOOTER_SIZE..end];
        if &footer[8..] != FOOTER_MAGIC {
            return Ok(None);
        }
        if u32_at(footer, 4) != VERSION {
            return Err(Error::UnsupportedVersion {
                what: "splitstream frame table",
                version: u32_at(footer, 4),
            });
        }
        let count = u32_at(footer, 0) as u64;
        let body = count * ENTRY_SIZE as u64 + FOOTER_SIZE as u64;
        if body + 8 > len {
            return Err(Error::corrupt(format!(
                "splitstream frame table of {count} frames does not fit its stream section"
            )));
        }
        let table_at = section.end - body - 8;
        let raw = &map[table_at as usize..end];
        if u32_at(raw, 0) != SKIPPABLE_MAGIC || u64::from(u32_at(raw, 4)) != body {
            return Err(Error::corrupt(
                "splitstream frame table lacks its skippable frame header: corrupt",
            ));
        }
        let frames_len = table_at - section.start;
        let mut table = Vec::with_capacity(count as usize);
        let (mut compressed, mut inline) = (0u64, 0u64);
        for i in 0..count as usize {
            let b = &raw[8 + i * ENTRY_SIZE..8 + (i + 1) * ENTRY_SIZE];
            let e = FrameEntry {
                compressed_offset: u64_at(b, 0),
                compressed_len: u32_at(b, 8),
                raw_len: u32_at(b, 12),
                inline_offset: u64_at(b, 16),
                inline_len: u32_at(b, 24),
                externals: u32_at(b, 28),
            };
            if e.compressed_offset != compressed
                || e.inline_offset != inline
                || e.raw_len as usize > MAX_FRAME_RAW
                || u64::from(e.inline_len) > u64::from(e.raw_len)
            {
                return Err(Error::corrupt(format!(
                    "splitstream frame table entry {i} is inconsistent: corrupt"
                )));
            }
            compressed += u64::from(e.compressed_len);
            inline += u64::from(e.inline_len);
            table.push(e);
        }
        if compressed != frames_len {
            return Err(Error::corrupt(format!(
                "splitstream frames cover {compressed} bytes, the stream section holds {frames_len}: corrupt"
            )));
        }
        if !(refs.end - refs.start).is_multiple_of(algorithm.digest_len()) {
            return Err(Error::corrupt(format!(
                "splitstream object refs array is {} bytes, not a multiple of {}",
                refs.end - refs.start,
                algorithm.digest_len()
            )));
        }
        Ok(Some(Frames {
            map,
            section,
            algorithm,
            refs,
            table,
        }))
    }

    pub fn table(&self) -> &[FrameEntry] {
        &self.table
    }

    /// Inline bytes in the whole stream.
    pub fn inline_len(&self) -> u64 {
        self.table
            .last()
            .map_or(0, |e| e.inline_offset + u64::from(e.inline_len))
    }

    /// The frame holding inline offset `at`.
    pub fn frame_of(&self, at: u64) -> Option<usize> {
        let i = self
            .table
            .partition_point(|e| e.inline_offset + u64::from(e.inline_len) <= at);
        (i < self.table.len() && self.table[i].inline_offset <= at).then_some(i)
    }

    /// Object refs the stream lists.
    fn ref_count(&self) -> u64 {
        ((self.refs.end - self.refs.start) / self.algorithm.digest_len()) as u64
    }

    /// Read frame `i` — in place when stored, else decompressed — check
    /// its checksum and locate its chunks.
    pub fn read(&self, i: usize) -> Result<Frame> {
        let Some(&e) = self.table.get(i) else {
            return Err(Error::corrupt(format!(
                "no splitstream frame {i}: the table lists {}",
                self.table.len()
            )));
        };
        let at = (self.section.start + e.compressed_offset) as usize;
        let frame = &self.map[at..at + e.compressed_len as usize];
        let raw_len = e.raw_len as usize;
        let bytes = match stored_content(frame, raw_len) {
            Some(content) => {
                let sum = u32_at(frame, frame.len() - 4);
                if xxhash_rust::xxh64::xxh64(content, 0) as u32 != sum {
                    return Err(Error::corrupt(format!(
                        "splitstream frame {i} fails its checksum: corrupt"
                    )));
                }
                let start = at + 12;
                FrameBytes::Mapped(self.map.clone(), start..start + raw_len)
            }
            None => {
                let raw = with_decompressor(|d| d.decompress(frame, raw_len)).map_err(|e| {
                    Error::decompress(format!("cannot decompress splitstream frame {i}"), e)
                })?;
                if raw.len() != raw_len {
                    return Err(Error::corrupt(format!(
                        "splitstream frame {i} decompresses to {} bytes, its table says {}: corrupt",
                        raw.len(),
                        e.raw_len
                    )));
                }
                FrameBytes::Owned(raw)
            }
        };
        let raw = bytes.get();
        // Inline chunks alternate with external ones, about.
        let mut chunks = Vec::with_capacity(e.externals as usize + 1);
        let mut externals = Vec::with_capacity(e.externals as usize);
        let mut inline = 0usize;
        let mut at = 0usize;
        while at < raw.len() {
            let Some(h) = raw.get(at..at + 8) else {
                return Err(Error::corrupt(format!(
                    "splitstream frame {i} ends inside a chunk header: corrupt"
                )));
            };
            let v = i64::from_le_bytes(h.try_into().expect("8 bytes"));
            at += 8;
            if v >= 0 {
                if v as u64 >= self.ref_count() {
                    return Err(Error::corrupt(format!(
                        "splitstream frame {i} refers to object #{v}, but only {} are listed: corrupt",
                        self.ref_count()
                    )));
                }
                externals.push((inline as u32, v as u32));
            } else {
                let Some(n) = usize::try_from(v.unsigned_abs())
                    .ok()
                    .filter(|n| at.checked_add(*n).is_some_and(|end| end <= raw.len()))
                else {
                    return Err(Error::corrupt(format!(
                        "splitstream frame {i} ends inside an inline chunk: corrupt"
                    )));
                };
                // Frames are at most MAX_FRAME_RAW bytes: offsets fit u32.
                chunks.push((inline as u32, at as u32, n as u32));
                inline += n;
                at += n;
            }
        }
        if inline != e.inline_len as usize || externals.len() != e.externals as usize {
            return Err(Error::corrupt(format!(
                "splitstream frame {i} does not hold what its table says: corrupt"
            )));
        }
        Ok(Frame {
            bytes,
            chunks,
            externals,
            ids: Ids::Refs {
                map: self.map.clone(),
                refs: self.refs.clone(),
                algorithm: self.algorithm,
            },
            inline_len: inline,
            joined: OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_frames_are_zstd_frames() {
        for n in [
            0,
            1,
            100,
            ZSTD_BLOCK_MAX - 1,
            ZSTD_BLOCK_MAX,
            ZSTD_BLOCK_MAX * 2 + 5,
        ] {
            let raw: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let frame = stored_frame(&raw);
            let back = zstd::bulk::decompress(&frame, n.max(1)).unwrap();
            assert_eq!(back, raw, "{n} bytes");
            // One block: read in place; more: left to zstd.
            assert_eq!(
                stored_content(&frame, n).is_some(),
                n <= ZSTD_BLOCK_MAX,
                "{n} bytes"
            );
        }
        // zstd's checksum is what we write: a flipped content byte fails it.
        let mut frame = stored_frame(b"some stored bytes");
        frame[14] ^= 1;
        assert!(zstd::bulk::decompress(&frame, 100).is_err());
    }

    /// A framed stream's table version and frames, damaged, give the
    /// errors that say so.
    #[test]
    fn table_and_frame_errors() {
        use crate::repository::{InitOptions, Repository};
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            insecure: true,
            ..InitOptions::new(Algorithm::Sha256)
        };
        let repo = Repository::init_with(&tmp.path().join("r"), &opts).unwrap();
        let mut w = repo
            .stream_writer(super::super::content_type::OCI_BLOB)
            .unwrap()
            .framed(FrameCoding::Stored)
            .unwrap();
        w.write_inline(b"frame one").unwrap();
        w.end_frame().unwrap();
        w.write_inline(b"frame two").unwrap();
        let id = w.finish().unwrap();
        let good = std::fs::read(repo.object_path(&id)).unwrap();
        let info = Info::decode(&good[HEADER_SIZE..]).unwrap();
        let end = info.stream.end as usize;
        let map = |bytes: &[u8]| {
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(bytes).unwrap();
            Frames::map(&f, Algorithm::Sha256)
        };
        let frames = map(&good).unwrap().expect("framed");
        assert_eq!(frames.read(1).unwrap().to_inline(), b"frame two");

        let mut b = good.clone();
        b[end - 12] = 9;
        assert!(matches!(
            map(&b),
            Err(Error::UnsupportedVersion { version: 9, .. })
        ));
        let mut b = good.clone();
        b[end - FOOTER_SIZE - 8 - 2 * ENTRY_SIZE] ^= 1; // skippable frame magic
        assert!(matches!(map(&b), Err(Error::Corrupt { .. })));
        // A byte of the first (stored) frame's content: its checksum fails.
        let mut b = good.clone();
        b[info.stream.start as usize + 12 + 8] ^= 1;
        let e = map(&b).unwrap().unwrap().read(0).err().unwrap();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("checksum"), "{e}");
        // Cut short: the sections no longer fit the file.
        assert!(matches!(map(&good[..end - 1]), Err(Error::Truncated(_))));
    }
}
