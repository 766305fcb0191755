//! How a pulled commit is stored: one splitstream (content id
//! `ostree-commit-<checksum>`) holding every object of the commit, sorted
//! by checksum behind an index, so any dirtree, dirmeta or file can be
//! found by binary search once the (small) inline part is loaded.
//!
//! Logical stream layout (all integers little-endian):
//! ```text
//! "CFSOSTR1"  u32 count  u32 0
//! count × { checksum[32] type:u8 flags:u8 pad[6] offset:u64 length:u64 }
//!         sorted by (checksum, type); flags bit 0: content is external
//! objects, in index order:
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

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::objects::FileHeader;
use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::splitstream::{Piece, SplitStreamReader, SplitStreamWriter};

/// Splitstream content type of stored ostree commits.
pub const CONTENT_TYPE: u64 = u64::from_le_bytes(*b"ostreecm");
const MAGIC: &[u8; 8] = b"CFSOSTR1";
const ENTRY_SIZE: usize = 56;
/// Content up to this size is kept inline in the stream.
pub const INLINE_MAX: u64 = 64;

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

/// Write `objects` as a splitstream; the caller publishes it.
pub fn write(w: &mut SplitStreamWriter<'_>, objects: &Objects) -> Result<()> {
    let mut head = Vec::with_capacity(16 + objects.len() * ENTRY_SIZE);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    let mut offset = (16 + objects.len() * ENTRY_SIZE) as u64;
    for ((c, t), s) in objects {
        let (len, flags) = match s {
            Stored::Meta(b) => (b.len() as u64, 0),
            Stored::File {
                header, content, ..
            } => match content {
                Content::Inline(b) => (4 + header.len() as u64 + b.len() as u64, 0),
                Content::External(_) => (4 + header.len() as u64, 1),
            },
        };
        head.extend_from_slice(&c.0);
        head.push(*t as u8);
        head.push(flags);
        head.extend_from_slice(&[0; 6]);
        head.extend_from_slice(&offset.to_le_bytes());
        head.extend_from_slice(&len.to_le_bytes());
        offset += len;
    }
    w.write_inline(&head)?;
    for s in objects.values() {
        match s {
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
    }
    Ok(())
}

/// A stored commit, loaded: the index and inline bytes in memory, external
/// content by object id.
pub struct CommitStream {
    /// The stream with external content left out.
    inline: Vec<u8>,
    /// (inline bytes before it, object id) of each external chunk, sorted.
    externals: Vec<(u64, ObjectId)>,
    count: usize,
    pub commit: Checksum,
}

impl CommitStream {
    pub fn open(repo: &Repository, commit: &Checksum) -> Result<CommitStream> {
        let (_, reader) = repo
            .open_stream(&content_id(commit))
            .with_context(|| format!("stored ostree commit {commit}"))?;
        Self::load(reader, *commit).with_context(|| format!("stored ostree commit {commit}"))
    }

    pub fn load(mut reader: SplitStreamReader, commit: Checksum) -> Result<CommitStream> {
        let mut inline = Vec::new();
        let mut externals = Vec::new();
        while let Some(p) = reader.next_piece()? {
            match p {
                Piece::Inline(b) => inline.extend_from_slice(b),
                Piece::External(id) => externals.push((inline.len() as u64, id)),
            }
        }
        if inline.len() < 16 || &inline[..8] != MAGIC {
            bail!("not an ostree commit stream (bad magic)");
        }
        let count = u32::from_le_bytes(inline[8..12].try_into().expect("4")) as usize;
        if 16 + count.saturating_mul(ENTRY_SIZE) > inline.len() {
            bail!("ostree commit stream index is truncated");
        }
        let s = CommitStream {
            inline,
            externals,
            count,
            commit,
        };
        let mut prev: Option<(Checksum, u8)> = None;
        for i in 0..count {
            let (c, t, _, _) = s.entry(i);
            if prev.is_some_and(|p| p >= (c, t)) {
                bail!("ostree commit stream index is not sorted");
            }
            prev = Some((c, t));
        }
        Ok(s)
    }

    fn entry(&self, i: usize) -> (Checksum, u8, u64, u64) {
        let e = self.raw_entry(i);
        let c = Checksum(e[..32].try_into().expect("32"));
        let off = u64::from_le_bytes(e[40..48].try_into().expect("8"));
        let len = u64::from_le_bytes(e[48..56].try_into().expect("8"));
        (c, e[32], off, len)
    }

    fn raw_entry(&self, i: usize) -> &[u8] {
        &self.inline[16 + i * ENTRY_SIZE..16 + (i + 1) * ENTRY_SIZE]
    }

    /// Every (checksum, type) stored.
    pub fn keys(&self) -> impl Iterator<Item = (Checksum, Option<ObjType>)> + '_ {
        (0..self.count).map(|i| {
            let (c, t, _, _) = self.entry(i);
            (c, ObjType::from_u8(t))
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn find(&self, c: &Checksum, t: ObjType) -> Option<(usize, u64, u64)> {
        let key = (*c, t as u8);
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (ec, et, off, len) = self.entry(mid);
            match (ec, et).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some((mid, off, len)),
            }
        }
        None
    }

    /// Inline bytes `[off, off+len)`.
    fn inline_range(&self, off: u64, len: u64) -> Result<&[u8]> {
        let end = off.checked_add(len).context("bad length")?;
        self.inline
            .get(off as usize..end as usize)
            .context("object offset out of range")
    }

    /// Where `(c, t)` sits in the index: a compact handle for
    /// [`Self::metadata_at`] and [`Self::file_at`].
    pub fn position(&self, c: &Checksum, t: ObjType) -> Option<u32> {
        self.find(c, t).map(|(i, _, _)| i as u32)
    }

    /// The checksum at index position `i`.
    pub fn checksum_at(&self, i: u32) -> Option<Checksum> {
        ((i as usize) < self.count).then(|| self.entry(i as usize).0)
    }

    /// A metadata object's bytes.
    pub fn metadata(&self, c: &Checksum, t: ObjType) -> Result<Option<&[u8]>> {
        match self.find(c, t) {
            Some((i, _, _)) => self.metadata_at(i as u32).map(Some),
            None => Ok(None),
        }
    }

    /// The bytes of the metadata object at index position `i`.
    pub fn metadata_at(&self, i: u32) -> Result<&[u8]> {
        if i as usize >= self.count {
            bail!("no index position {i} in stored commit {}", self.commit);
        }
        let (c, t, off, len) = self.entry(i as usize);
        let name = ObjType::from_u8(t).map_or("object", |t| t.name());
        self.inline_range(off, len)
            .with_context(|| format!("{name} {c} in stored commit {}", self.commit))
    }

    /// A file object: header bytes, parsed header, content.
    pub fn file(&self, c: &Checksum) -> Result<Option<(Vec<u8>, FileHeader, Content)>> {
        match self.find(c, ObjType::File) {
            Some((i, _, _)) => self.file_at(i as u32).map(Some),
            None => Ok(None),
        }
    }

    /// The file object at index position `i`.
    pub fn file_at(&self, i: u32) -> Result<(Vec<u8>, FileHeader, Content)> {
        let i = i as usize;
        if i >= self.count {
            bail!("no index position {i} in stored commit {}", self.commit);
        }
        let (c, t, off, len) = self.entry(i);
        if t != ObjType::File as u8 {
            bail!("object {c} in stored commit {} is not a file", self.commit);
        }
        let external = self.raw_entry(i)[33] & 1 != 0;
        let what = || format!("file {c} in stored commit {}", self.commit);
        let hl = self.inline_range(off, 4).with_context(what)?;
        let hl = u32::from_le_bytes(hl.try_into().expect("4")) as u64;
        let hbytes = self.inline_range(off + 4, hl).with_context(what)?.to_vec();
        let header = FileHeader::parse_archive(&hbytes).with_context(what)?;
        let coff = off + 4 + hl;
        let content = if external {
            if len != 4 + hl {
                bail!("{}: bad entry length", what());
            }
            match self.externals.binary_search_by_key(&coff, |e| e.0) {
                Ok(j) => Content::External(self.externals[j].1),
                Err(_) => bail!("{}: external content missing", what()),
            }
        } else {
            if len != 4 + hl + header.size {
                bail!("{}: length does not match its header", what());
            }
            Content::Inline(
                self.inline_range(coff, header.size)
                    .with_context(what)?
                    .to_vec(),
            )
        };
        Ok((hbytes, header, content))
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
