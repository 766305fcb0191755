//! Our lookup index of a stored commit: one splitstream (content type
//! `ostreecm`) holding every object of the commit behind an index sorted
//! by checksum, so any dirtree, dirmeta or file is found by searching the
//! index. It is written framed with stored frames (`splitstream::frames`):
//! opening it maps the file, and a lookup reads in place the index frame
//! it lands in and the frame of the object. Commits are stored in
//! composefs-rs's format (`super::shared`); this stream is their cache
//! (`super::cache`). Earlier versions stored it as the commit's stream
//! itself (`streams/ostree-commit-<checksum>`), which still opens
//! ([`CommitStream::open_legacy`]).
//!
//! Logical stream layout (all integers little-endian):
//! ```text
//! "CFSOSTR1"  u32 count  u32 0
//! count × { checksum[32] type:u8 flags:u8 pad[6] offset:u64 length:u64 }
//!         sorted by (checksum, type); flags bit 0: content is external
//! objects (depth first as pulls write them; older streams: index order):
//!   metadata (commit, commitmeta, dirtree, dirmeta): the object's bytes
//!   file: u32 header length, the archive header `(tuuuusa(ayay))`, content
//! ```
//! File content over 64 bytes is an external object spliced into the
//! stream right after its header; smaller content is inline. Offsets and
//! lengths count inline bytes only (external content is located by its
//! place in the chunk sequence), so the index is usable without knowing
//! object sizes. `composefs cat` of the stream yields the index followed
//! by every object in full.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::objects::FileHeader;
use crate::fsverity::{Algorithm, ObjectId};
use crate::repository::Repository;
use crate::splitstream::{Frame, Frames, Piece, SplitStreamReader, SplitStreamWriter};

/// Splitstream content type of stored ostree commits.
pub const CONTENT_TYPE: u64 = u64::from_le_bytes(*b"ostreecm");
const MAGIC: &[u8; 8] = b"CFSOSTR1";
const ENTRY_SIZE: usize = 56;
/// Frames of a framed commit stream hold about this many bytes.
pub const FRAME_TARGET: usize = 16 << 10;

/// The content id of the stream of commit `c`.
pub fn content_id(c: &Checksum) -> String {
    format!("ostree-commit-{c}")
}

/// File content as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Inline(Vec<u8>),
    External(ObjectId),
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    Meta(Vec<u8>),
    File {
        /// The archive-mode header bytes `(tuuuusa(ayay))`.
        header: Vec<u8>,
        size: u64,
        content: Content,
    },
}

pub type Objects = BTreeMap<(Checksum, ObjType), Stored>;
/// One object with its key, as produced by a delta part or a resume log.
pub type Entry = ((Checksum, ObjType), Stored);

/// The order objects are laid out in: the commit, then the tree depth
/// first — each directory's dirtree and dirmeta followed by its files —
/// then anything not reached. What one directory needs sits together,
/// so a framed reader decompresses few frames for it.
fn layout_order(objects: &Objects) -> Vec<(Checksum, ObjType)> {
    let mut order = Vec::with_capacity(objects.len());
    let mut placed = std::collections::HashSet::with_capacity(objects.len());
    let mut place = |k: (Checksum, ObjType), order: &mut Vec<_>| {
        if objects.contains_key(&k) && placed.insert(k) {
            order.push(k);
            true
        } else {
            false
        }
    };
    let root = objects.iter().find_map(|((c, t), s)| match (t, s) {
        (ObjType::Commit, Stored::Meta(b)) => Some((*c, super::objects::Commit::parse(b).ok()?)),
        _ => None,
    });
    if let Some((c, commit)) = root {
        place((c, ObjType::Commit), &mut order);
        place((c, ObjType::CommitMeta), &mut order);
        // An explicit stack: trees may be deep.
        let mut stack = vec![(commit.root_tree, commit.root_meta)];
        while let Some((tree, meta)) = stack.pop() {
            if !place((tree, ObjType::DirTree), &mut order) {
                place((meta, ObjType::DirMeta), &mut order);
                continue;
            }
            place((meta, ObjType::DirMeta), &mut order);
            let Some(Stored::Meta(b)) = objects.get(&(tree, ObjType::DirTree)) else {
                continue;
            };
            let Ok(dt) = super::objects::DirTree::parse_stored(b) else {
                continue;
            };
            for (_, f) in &dt.files {
                place((*f, ObjType::File), &mut order);
            }
            for (_, t, m) in dt.dirs.iter().rev() {
                stack.push((*t, *m));
            }
        }
    }
    for k in objects.keys() {
        place(*k, &mut order);
    }
    order
}

/// Where [`write`] puts a commit: a splitstream writer, or memory.
pub trait Sink {
    fn write_inline(&mut self, b: &[u8]) -> Result<()>;
    fn write_object_ref(&mut self, id: ObjectId, size: u64) -> Result<()>;
    fn end_frame(&mut self) -> Result<()>;
    fn frame_size(&self) -> usize;
}

impl Sink for SplitStreamWriter<'_> {
    fn write_inline(&mut self, b: &[u8]) -> Result<()> {
        SplitStreamWriter::write_inline(self, b)
    }
    fn write_object_ref(&mut self, id: ObjectId, size: u64) -> Result<()> {
        SplitStreamWriter::write_object_ref(self, id, size)
    }
    fn end_frame(&mut self) -> Result<()> {
        SplitStreamWriter::end_frame(self)
    }
    fn frame_size(&self) -> usize {
        SplitStreamWriter::frame_size(self)
    }
}

/// The logical stream in memory: inline bytes and where externals sit.
#[derive(Default)]
struct MemSink {
    inline: Vec<u8>,
    externals: Vec<(u64, ObjectId)>,
}

impl Sink for MemSink {
    fn write_inline(&mut self, b: &[u8]) -> Result<()> {
        self.inline.extend_from_slice(b);
        Ok(())
    }
    fn write_object_ref(&mut self, id: ObjectId, _size: u64) -> Result<()> {
        self.externals.push((self.inline.len() as u64, id));
        Ok(())
    }
    fn end_frame(&mut self) -> Result<()> {
        Ok(())
    }
    fn frame_size(&self) -> usize {
        0
    }
}

/// Write `objects` as a splitstream; the caller publishes it. With a
/// framed writer ([`SplitStreamWriter::framed`]) frames are cut about
/// every [`FRAME_TARGET`] bytes, between index entries and objects.
pub fn write(w: &mut dyn Sink, objects: &Objects) -> Result<()> {
    let order = layout_order(objects);
    let mut offsets = std::collections::HashMap::with_capacity(objects.len());
    let mut offset = (16 + objects.len() * ENTRY_SIZE) as u64;
    for k in &order {
        offsets.insert(*k, offset);
        offset += stored_len(&objects[k]).0;
    }
    let mut head = Vec::with_capacity(16 + objects.len() * ENTRY_SIZE);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    for (k @ (c, t), s) in objects {
        let (len, flags) = stored_len(s);
        head.extend_from_slice(&c.0);
        head.push(*t as u8);
        head.push(flags);
        head.extend_from_slice(&[0; 6]);
        head.extend_from_slice(&offsets[k].to_le_bytes());
        head.extend_from_slice(&len.to_le_bytes());
    }
    // Frames hold whole entries (the 16-byte head goes with the first).
    w.write_inline(&head[..16])?;
    for piece in head[16..].chunks(FRAME_TARGET / ENTRY_SIZE * ENTRY_SIZE) {
        w.write_inline(piece)?;
        w.end_frame()?;
    }
    for k in &order {
        match &objects[k] {
            Stored::Meta(b) => w.write_inline(b)?,
            Stored::File {
                header,
                size,
                content,
            } => {
                w.write_inline(&(header.len() as u32).to_le_bytes())?;
                w.write_inline(header)?;
                match content {
                    Content::Inline(b) => w.write_inline(b)?,
                    Content::External(id) => w.write_object_ref(*id, *size)?,
                }
            }
        }
        if w.frame_size() >= FRAME_TARGET {
            w.end_frame()?;
        }
    }
    Ok(())
}

/// Inline bytes of a stored object in the stream, and its index flags.
fn stored_len(s: &Stored) -> (u64, u8) {
    match s {
        Stored::Meta(b) => (b.len() as u64, 0),
        Stored::File {
            header, content, ..
        } => match content {
            Content::Inline(b) => (4 + header.len() as u64 + b.len() as u64, 0),
            Content::External(_) => (4 + header.len() as u64, 1),
        },
    }
}

/// A stored commit, opened. A framed stream (what pulls write) is mapped
/// and read a frame at a time, when an object in it is first asked for:
/// a lookup touches the few frames it needs, never the whole commit, and
/// stored frames are used in place. An older unframed stream is
/// decompressed whole on open, as one frame.
pub struct CommitStream {
    /// Inline offset and length of each frame.
    spans: Vec<(u64, u64)>,
    /// Each frame once read.
    loaded: Vec<OnceLock<Frame>>,
    /// Where unread frames come from (`None`: unframed, all read).
    frames: Option<Frames>,
    count: usize,
    pub commit: Checksum,
    /// Opened as the commit's own stream (stored by an earlier version).
    legacy: bool,
}

/// One index entry: checksum, type, flags, inline offset, inline length.
type IndexEntry = (Checksum, u8, u8, u64, u64);

impl CommitStream {
    /// Open a stream of ours (`ostreecm`) stored as the commit's stream
    /// (object `id`).
    pub fn open_legacy(
        repo: &Repository,
        commit: &Checksum,
        id: &ObjectId,
    ) -> Result<CommitStream> {
        let what = || format!("stored ostree commit {commit}");
        let file = repo.open_object(id).with_context(what)?;
        let s = match Frames::map(&file, repo.algorithm()).with_context(what)? {
            Some(frames) => Self::from_frames(frames, *commit),
            None => SplitStreamReader::new(file, repo.algorithm())
                .map_err(anyhow::Error::from)
                .and_then(|r| Self::load_whole(r, *commit)),
        };
        let mut s = s.with_context(what)?;
        s.legacy = true;
        Ok(s)
    }

    /// Open the framed (or older unframed) stream in `file`.
    pub fn open_file(
        file: std::fs::File,
        alg: Algorithm,
        commit: Checksum,
    ) -> Result<CommitStream> {
        match Frames::map(&file, alg)? {
            Some(frames) => Self::from_frames(frames, commit),
            None => SplitStreamReader::new(file, alg)
                .map_err(anyhow::Error::from)
                .and_then(|r| Self::load_whole(r, commit)),
        }
    }

    /// `objects` as a stream held in memory (one frame).
    pub fn from_objects(objects: &Objects, commit: Checksum) -> Result<CommitStream> {
        let mut m = MemSink::default();
        write(&mut m, objects)?;
        let len = m.inline.len() as u64;
        let s = CommitStream {
            spans: vec![(0, len)],
            loaded: vec![OnceLock::from(Frame::from_inline(m.inline, m.externals)?)],
            frames: None,
            count: 0,
            commit,
            legacy: false,
        };
        s.check_head()
    }

    pub fn load(reader: SplitStreamReader, commit: Checksum) -> Result<CommitStream> {
        match reader.into_frames()? {
            Ok(frames) => Self::from_frames(frames, commit),
            Err(reader) => Self::load_whole(reader, commit),
        }
    }

    fn from_frames(frames: Frames, commit: Checksum) -> Result<CommitStream> {
        let spans: Vec<_> = frames
            .table()
            .iter()
            .map(|e| (e.inline_offset, u64::from(e.inline_len)))
            .collect();
        let s = CommitStream {
            loaded: spans.iter().map(|_| OnceLock::new()).collect(),
            spans,
            frames: Some(frames),
            count: 0,
            commit,
            legacy: false,
        };
        s.check_head()
    }

    /// An unframed stream: everything decompressed now, as one frame.
    fn load_whole(mut reader: SplitStreamReader, commit: Checksum) -> Result<CommitStream> {
        let mut inline = Vec::new();
        let mut externals = Vec::new();
        while let Some(p) = reader.next_piece()? {
            match p {
                Piece::Inline(b) => inline.extend_from_slice(b),
                Piece::External(id) => externals.push((inline.len() as u64, id)),
            }
        }
        let len = inline.len() as u64;
        let s = CommitStream {
            spans: vec![(0, len)],
            loaded: vec![OnceLock::from(Frame::from_inline(inline, externals)?)],
            frames: None,
            count: 0,
            commit,
            legacy: false,
        };
        let s = s.check_head()?;
        s.verify_index()?;
        Ok(s)
    }

    /// Check the magic and that the index fits; take its entry count.
    fn check_head(mut self) -> Result<CommitStream> {
        let inline_len = self.spans.last().map_or(0, |(o, l)| o + l);
        let head = self
            .bytes(0, 16)
            .map_err(|_| anyhow::anyhow!("not an ostree commit stream (too short)"))?;
        if &head[..8] != MAGIC {
            bail!("not an ostree commit stream (bad magic)");
        }
        let count = u32::from_le_bytes(head[8..12].try_into().expect("4")) as usize;
        if 16 + count as u64 * ENTRY_SIZE as u64 > inline_len {
            bail!("ostree commit stream index is truncated");
        }
        self.count = count;
        Ok(self)
    }

    /// Check the whole index: sorted, every entry inside the stream and
    /// inside one frame. Reads every frame holding index entries; `fsck`
    /// calls it (lookups only ever read what they need).
    pub fn verify_index(&self) -> Result<()> {
        let mut prev: Option<(Checksum, u8)> = None;
        for i in 0..self.count {
            let (c, t, _, off, len) = self.entry(i)?;
            if prev.is_some_and(|p| p >= (c, t)) {
                bail!("ostree commit stream index is not sorted");
            }
            self.bytes(off, len)
                .with_context(|| format!("object {c} in stored commit {}", self.commit))?;
            prev = Some((c, t));
        }
        Ok(())
    }

    /// Frame `k`, read on first use.
    fn frame(&self, k: usize) -> Result<&Frame> {
        if let Some(d) = self.loaded[k].get() {
            return Ok(d);
        }
        let frames = self
            .frames
            .as_ref()
            .context("commit stream frame not loaded")?;
        let d = frames
            .read(k)
            .with_context(|| format!("stored ostree commit {}", self.commit))?;
        // Another thread may have read it meanwhile: either copy will do.
        let _ = self.loaded[k].set(d);
        Ok(self.loaded[k].get().expect("set above"))
    }

    /// The frame holding inline offset `at`, and its span.
    fn frame_at(&self, at: u64) -> Result<(&Frame, u64, u64)> {
        let k = self.spans.partition_point(|(o, l)| o + l <= at);
        match self.spans.get(k) {
            Some(&(o, l)) if o <= at => Ok((self.frame(k)?, o, l)),
            _ => bail!("offset {at} is past the end of the stream"),
        }
    }

    /// Inline bytes `[off, off+len)`, which must lie within one frame.
    fn bytes(&self, off: u64, len: u64) -> Result<&[u8]> {
        let end = off.checked_add(len).context("bad length")?;
        let (d, start, flen) = self.frame_at(off)?;
        if end > start + flen {
            bail!("object at {off} ({len} bytes) crosses a frame boundary: corrupt");
        }
        d.inline((off - start) as usize, len as usize)
            .context("object offset out of range")
    }

    fn entry(&self, i: usize) -> Result<IndexEntry> {
        let e = self.bytes(16 + (i * ENTRY_SIZE) as u64, ENTRY_SIZE as u64)?;
        let c = Checksum(e[..32].try_into().expect("32"));
        let off = u64::from_le_bytes(e[40..48].try_into().expect("8"));
        let len = u64::from_le_bytes(e[48..56].try_into().expect("8"));
        Ok((c, e[32], e[33], off, len))
    }

    /// Every (checksum, type) stored.
    pub fn keys(&self) -> Result<Vec<(Checksum, Option<ObjType>)>> {
        (0..self.count)
            .map(|i| {
                let (c, t, ..) = self.entry(i)?;
                Ok((c, ObjType::from_u8(t)))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The index entries wholly inside the frame holding entry `g`: the
    /// first, one past the last, and their bytes (`None` when entry `g`
    /// itself straddles two frames).
    fn index_run(&self, g: usize) -> Result<Option<(usize, usize, &[u8])>> {
        let e = ENTRY_SIZE as u64;
        let (frame, o, l) = self.frame_at(16 + g as u64 * e)?;
        let first = o.saturating_sub(16).div_ceil(e) as usize;
        let end = (((o + l).saturating_sub(16) / e) as usize).min(self.count);
        if !(first <= g && g < end) {
            return Ok(None);
        }
        let from = (16 + first as u64 * e - o) as usize;
        Ok(frame
            .inline(from, (end - first) * ENTRY_SIZE)
            .map(|run| (first, end, run)))
    }

    /// The index position of `(c, t)`. Checksums are SHA-256, spread
    /// evenly: interpolating on their first 8 bytes lands in the right
    /// frame of the index nearly always, and that frame's entries are
    /// then bisected in place. A skewed index costs a few more frames;
    /// entries that straddle frames fall back to bisection entry by entry.
    fn find(&self, c: &Checksum, t: ObjType) -> Result<Option<usize>> {
        use std::cmp::Ordering;
        let key = (&c.0[..], t as u8);
        let cmp = |run: &[u8], i: usize| {
            let e = &run[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
            (&e[..32], e[32]).cmp(&key)
        };
        let prefix = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let x = prefix(&c.0);
        // The entry, if there, lies in [lo, hi); keys there lie in
        // [lo_key, hi_key] (first 8 bytes).
        let (mut lo, mut hi) = (0, self.count);
        let (mut lo_key, mut hi_key) = (0u64, u64::MAX);
        for _ in 0..6 {
            if lo >= hi {
                return Ok(None);
            }
            if lo_key > hi_key {
                break; // not sorted: damaged
            }
            let x = x.clamp(lo_key, hi_key);
            let f = (x - lo_key) as f64 / ((hi_key - lo_key) as f64 + 1.0);
            let g = (lo + (f * (hi - lo) as f64) as usize).min(hi - 1);
            let Some((a, b, run)) = self.index_run(g)? else {
                break;
            };
            let n = b - a;
            if cmp(run, 0) == Ordering::Greater {
                hi = a;
                hi_key = prefix(run);
            } else if cmp(run, n - 1) == Ordering::Less {
                lo = b;
                lo_key = prefix(&run[(n - 1) * ENTRY_SIZE..]);
            } else {
                let (mut i, mut j) = (0, n);
                while i < j {
                    let m = (i + j) / 2;
                    match cmp(run, m) {
                        Ordering::Less => i = m + 1,
                        Ordering::Greater => j = m,
                        Ordering::Equal => return Ok(Some(a + m)),
                    }
                }
                return Ok(None);
            }
        }
        let key = (*c, t as u8);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (ec, et, ..) = self.entry(mid)?;
            match (ec, et).cmp(&key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Some(mid)),
            }
        }
        Ok(None)
    }

    /// Where `(c, t)` sits in the index: a compact handle for
    /// [`Self::metadata_at`] and [`Self::file_at`].
    pub fn position(&self, c: &Checksum, t: ObjType) -> Result<Option<u32>> {
        Ok(self.find(c, t)?.map(|i| i as u32))
    }

    /// The checksum at index position `i` (`None` past the end or when its
    /// frame cannot be read).
    pub fn checksum_at(&self, i: u32) -> Option<Checksum> {
        if i as usize >= self.count {
            return None;
        }
        self.entry(i as usize).ok().map(|e| e.0)
    }

    /// A metadata object's bytes.
    pub fn metadata(&self, c: &Checksum, t: ObjType) -> Result<Option<&[u8]>> {
        match self.find(c, t)? {
            Some(i) => self.metadata_at(i as u32).map(Some),
            None => Ok(None),
        }
    }

    /// The bytes of the metadata object at index position `i`.
    pub fn metadata_at(&self, i: u32) -> Result<&[u8]> {
        self.metadata_with_offset(i).map(|(_, b)| b)
    }

    /// Like [`Self::metadata_at`], with where the bytes sit in the stream
    /// (for [`Self::checksum_bytes_at`] of checksums inside them).
    pub fn metadata_with_offset(&self, i: u32) -> Result<(u64, &[u8])> {
        if i as usize >= self.count {
            bail!("no index position {i} in stored commit {}", self.commit);
        }
        let (c, t, _, off, len) = self.entry(i as usize)?;
        let name = ObjType::from_u8(t).map_or("object", |t| t.name());
        let b = self
            .bytes(off, len)
            .with_context(|| format!("{name} {c} in stored commit {}", self.commit))?;
        Ok((off, b))
    }

    /// The 32 bytes at inline offset `at` as a checksum (one a dirtree
    /// names, found by [`Self::metadata_with_offset`]).
    pub fn checksum_bytes_at(&self, at: u64) -> Result<Checksum> {
        let b = self.bytes(at, 32)?;
        Ok(Checksum(b.try_into().expect("32 bytes")))
    }

    /// A file object: header bytes, parsed header, content.
    pub fn file(&self, c: &Checksum) -> Result<Option<(Vec<u8>, FileHeader, Content)>> {
        match self.find(c, ObjType::File)? {
            Some(i) => self.file_at(i as u32).map(Some),
            None => Ok(None),
        }
    }

    /// The file object at index position `i`.
    pub fn file_at(&self, i: u32) -> Result<(Vec<u8>, FileHeader, Content)> {
        let i = i as usize;
        if i >= self.count {
            bail!("no index position {i} in stored commit {}", self.commit);
        }
        let (c, t, flags, off, len) = self.entry(i)?;
        if t != ObjType::File as u8 {
            bail!("object {c} in stored commit {} is not a file", self.commit);
        }
        let external = flags & 1 != 0;
        let what = || format!("file {c} in stored commit {}", self.commit);
        let whole = self.bytes(off, len).with_context(what)?;
        let hl = whole.get(..4).with_context(what)?;
        let hl = u32::from_le_bytes(hl.try_into().expect("4")) as usize;
        let hbytes = whole
            .get(4..4 + hl)
            .with_context(|| format!("{}: header past its entry", what()))?
            .to_vec();
        let header = FileHeader::parse_archive_stored(&hbytes).with_context(what)?;
        let content = if external {
            if whole.len() != 4 + hl {
                bail!("{}: bad entry length", what());
            }
            let coff = off + len;
            let (d, start, _) = self.frame_at(off)?;
            match d.external_at(coff - start) {
                Some(id) => Content::External(id),
                None => bail!("{}: external content missing", what()),
            }
        } else {
            if whole.len() as u64 != 4 + hl as u64 + header.size {
                bail!("{}: length does not match its header", what());
            }
            Content::Inline(whole[4 + hl..].to_vec())
        };
        Ok((hbytes, header, content))
    }

    /// Whether this is a commit stream stored by an earlier version (the
    /// commit's own stream, not a cache of the shared one).
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Every object, in the form the writer takes.
    pub fn objects(&self) -> Result<Objects> {
        let mut out = Objects::new();
        for (c, t) in self.keys()? {
            let t = t.with_context(|| {
                format!("object {c} in stored commit {}: unknown type", self.commit)
            })?;
            if let Some(s) = self.stored(&c, t)? {
                out.insert((c, t), s);
            }
        }
        Ok(out)
    }

    /// A stored object in the form the writer takes.
    pub fn stored(&self, c: &Checksum, t: ObjType) -> Result<Option<Stored>> {
        if t == ObjType::File {
            return Ok(self.file(c)?.map(|(header, h, content)| Stored::File {
                header,
                size: h.size,
                content,
            }));
        }
        Ok(self.metadata(c, t)?.map(|b| Stored::Meta(b.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsverity::Algorithm;
    use crate::splitstream::FrameCoding;

    /// Many metadata objects and files (inline and external): enough for
    /// dozens of frames.
    fn objects(repo: &Repository) -> Objects {
        let mut m = Objects::new();
        for i in 0..3000u32 {
            let c = Checksum::of(&i.to_le_bytes());
            let meta = format!("metadata object {i}").repeat(1 + i as usize % 7);
            let t = [ObjType::DirTree, ObjType::DirMeta][i as usize % 2];
            m.insert((c, t), Stored::Meta(meta.into_bytes()));
            let content = format!("file {i} ")
                .repeat(1 + i as usize % 20)
                .into_bytes();
            let h = FileHeader {
                size: content.len() as u64,
                uid: i,
                gid: 7,
                mode: 0o100644,
                rdev: 0,
                symlink: String::new(),
                xattrs: Vec::new(),
            };
            let content = if content.len() as u64 > crate::tree::INLINE_MAX {
                Content::External(repo.store_bytes(&content).unwrap())
            } else {
                Content::Inline(content)
            };
            m.insert(
                (Checksum::of(&(i + 1_000_000).to_le_bytes()), ObjType::File),
                Stored::File {
                    header: h.serialize_archive(),
                    size: h.size,
                    content,
                },
            );
        }
        m
    }

    /// `m` stored framed with `coding`, or unframed; opened as a pull's
    /// stream is (`open`: mapped) when `named`.
    fn store(
        repo: &Repository,
        m: &Objects,
        coding: Option<FrameCoding>,
        name: &str,
    ) -> CommitStream {
        let mut w = repo.stream_writer(CONTENT_TYPE).unwrap();
        if let Some(c) = coding {
            w = w.framed(c).unwrap();
        }
        write(&mut w, m).unwrap();
        let commit = Checksum::of(name.as_bytes());
        let id = repo.commit_stream(w, &content_id(&commit), None).unwrap();
        let r = repo.open_stream_object(&id).unwrap();
        let loaded = CommitStream::load(r, commit).unwrap();
        let opened = CommitStream::open(repo, &commit).unwrap();
        assert_eq!(opened.spans, loaded.spans);
        opened
    }

    #[test]
    fn framed_and_whole_streams_hold_the_same_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(&tmp.path().join("repo"), Algorithm::Sha256).unwrap();
        let m = objects(&repo);
        let stored = store(&repo, &m, Some(FrameCoding::Stored), "stored");
        let zstd = store(&repo, &m, Some(FrameCoding::Zstd), "zstd");
        let whole = store(&repo, &m, None, "whole");
        for framed in [&stored, &zstd] {
            assert!(framed.spans.len() > 20, "{} frames", framed.spans.len());
            // Nothing but the head frame is read before a lookup.
            assert_eq!(
                framed.loaded.iter().filter(|l| l.get().is_some()).count(),
                1
            );
            framed.verify_index().unwrap();
        }
        assert_eq!(whole.spans.len(), 1);
        for s in [&stored, &zstd, &whole] {
            assert_eq!(s.len(), m.len());
            let keys: Vec<_> = s.keys().unwrap();
            let want: Vec<_> = m.keys().map(|(c, t)| (*c, Some(*t))).collect();
            assert_eq!(keys, want);
            for ((c, t), v) in &m {
                assert_eq!(s.stored(c, *t).unwrap().as_ref(), Some(v), "{c} {t:?}");
                assert_eq!(
                    s.position(c, *t).unwrap().map(|i| s.checksum_at(i)),
                    Some(Some(*c))
                );
            }
            // Absent: anywhere, before the first entry, past the last.
            for c in [
                Checksum::of(b"absent"),
                Checksum([0; 32]),
                Checksum([0xff; 32]),
            ] {
                assert!(s.stored(&c, ObjType::File).unwrap().is_none());
            }
        }
        // One lookup in a fresh framed stream reads a few frames, not all.
        let fresh = store(&repo, &m, Some(FrameCoding::Stored), "fresh");
        let ((c, t), _) = m.iter().nth(4321).unwrap();
        fresh.stored(c, *t).unwrap().unwrap();
        let read = fresh.loaded.iter().filter(|l| l.get().is_some()).count();
        assert!(read <= 8, "{read} of {} frames read", fresh.spans.len());
    }
}
