//! Framed splitstreams: random access to the chunk sequence.
//!
//! A splitstream's chunks are one zstd stream, so reaching any byte means
//! decompressing everything before it. A *framed* splitstream compresses
//! its chunks as independent zstd frames instead, cut where the writer
//! chose (always on chunk boundaries), and ends its stream section with a
//! zstd *skippable* frame holding a table of them. zstd decoders skip such
//! frames, so any splitstream reader (ours, composefs-rs) still reads the
//! stream front to back as before; [`Frames`] reads one frame at a time.
//! Stored ostree commits use this (see `ostree::commitstream`): a diff or
//! a lookup touches only the frames holding the objects it needs.
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
//! each frame carries zstd's content checksum, checked as it decompresses);
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
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};

use crate::fsverity::ObjectId;

/// Largest decompressed frame written or read.
pub const MAX_FRAME_RAW: usize = 64 << 20;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const FOOTER_MAGIC: &[u8; 8] = b"CFSFRAME";
const FOOTER_SIZE: usize = 16;
const ENTRY_SIZE: usize = 32;
const VERSION: u32 = 1;

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

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .with_context(|| format!("cannot read {len} bytes of splitstream at offset {offset}"))?;
    Ok(buf)
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

/// A frame, decompressed: its inline bytes, and the objects spliced in
/// with where (offset into `inline`).
#[derive(Debug, Default)]
pub struct FrameData {
    pub inline: Vec<u8>,
    pub externals: Vec<(u64, ObjectId)>,
}

/// Random access to the frames of a framed splitstream.
pub struct Frames {
    file: File,
    section: Range<u64>,
    object_refs: Vec<ObjectId>,
    table: Vec<FrameEntry>,
}

impl Frames {
    /// The frame table of the stream section `section` of `file`, or
    /// `None` when the stream is not framed (then `object_refs` is left
    /// alone; else the frames take it). A table that is there but
    /// inconsistent is an error.
    pub(super) fn open(
        file: File,
        section: Range<u64>,
        object_refs: &mut Vec<ObjectId>,
    ) -> Result<Option<Frames>> {
        let len = section.end - section.start;
        if len < (8 + FOOTER_SIZE) as u64 {
            return Ok(None);
        }
        let footer = read_at(&file, section.end - FOOTER_SIZE as u64, FOOTER_SIZE)?;
        if &footer[8..] != FOOTER_MAGIC {
            return Ok(None);
        }
        if u32_at(&footer, 4) != VERSION {
            bail!(
                "splitstream frame table version {} is not supported",
                u32_at(&footer, 4)
            );
        }
        let count = u32_at(&footer, 0) as u64;
        let body = count * ENTRY_SIZE as u64 + FOOTER_SIZE as u64;
        if body + 8 > len {
            bail!("splitstream frame table of {count} frames does not fit its stream section");
        }
        let table_at = section.end - body - 8;
        let raw = read_at(&file, table_at, (body + 8) as usize)?;
        if u32_at(&raw, 0) != SKIPPABLE_MAGIC || u64::from(u32_at(&raw, 4)) != body {
            bail!("splitstream frame table lacks its skippable frame header: corrupt");
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
                bail!("splitstream frame table entry {i} is inconsistent: corrupt");
            }
            compressed += u64::from(e.compressed_len);
            inline += u64::from(e.inline_len);
            table.push(e);
        }
        if compressed != frames_len {
            bail!(
                "splitstream frames cover {compressed} bytes, the stream section holds {frames_len}: corrupt"
            );
        }
        Ok(Some(Frames {
            file,
            section,
            object_refs: std::mem::take(object_refs),
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

    /// Decompress frame `i` and split its chunks.
    pub fn read(&self, i: usize) -> Result<FrameData> {
        let e = *self.table.get(i).context("no such splitstream frame")?;
        let packed = read_at(
            &self.file,
            self.section.start + e.compressed_offset,
            e.compressed_len as usize,
        )?;
        let raw = with_decompressor(|d| d.decompress(&packed, e.raw_len as usize))
            .with_context(|| format!("cannot decompress splitstream frame {i}"))?;
        if raw.len() != e.raw_len as usize {
            bail!(
                "splitstream frame {i} decompresses to {} bytes, its table says {}: corrupt",
                raw.len(),
                e.raw_len
            );
        }
        let mut data = FrameData {
            inline: Vec::with_capacity(e.inline_len as usize),
            externals: Vec::with_capacity(e.externals as usize),
        };
        let mut at = 0usize;
        while at < raw.len() {
            let Some(h) = raw.get(at..at + 8) else {
                bail!("splitstream frame {i} ends inside a chunk header: corrupt");
            };
            let v = i64::from_le_bytes(h.try_into().expect("8 bytes"));
            at += 8;
            if v >= 0 {
                let id = self.object_refs.get(v as usize).with_context(|| {
                    format!(
                        "splitstream frame {i} refers to object #{v}, but only {} are listed: corrupt",
                        self.object_refs.len()
                    )
                })?;
                data.externals.push((data.inline.len() as u64, *id));
            } else {
                let n = v.unsigned_abs();
                let Some(b) = usize::try_from(n)
                    .ok()
                    .and_then(|n| raw.get(at..at.checked_add(n)?))
                else {
                    bail!("splitstream frame {i} ends inside an inline chunk: corrupt");
                };
                data.inline.extend_from_slice(b);
                at += b.len();
            }
        }
        if data.inline.len() != e.inline_len as usize
            || data.externals.len() != e.externals as usize
        {
            bail!("splitstream frame {i} does not hold what its table says: corrupt");
        }
        Ok(data)
    }
}
