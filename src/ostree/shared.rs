//! The stored form of an ostree commit that composefs-rs (`cfsctl`) also
//! reads and writes: one splitstream, content type `0xAFE138C18C463EF1`,
//! named `streams/ostree-commit-<checksum>`, with one inline chunk:
//!
//! ```text
//! u32 index of the commit object, u32 flags (0), u32[256] bucket ends
//! n × checksum[32]                    sorted; n = last bucket end
//! n × { u32 offset/8, u32 length, u32 object-ref index or u32::MAX }
//! content: each object's data, 8-byte aligned, zero padded
//! ```
//! Little-endian. The objects are the commit and every dirtree, dirmeta and
//! file it reaches (no detached metadata, no parents). Metadata objects are
//! their ostree bytes; a file is `u32 BE header length, u32 0, the archive
//! header (tuuuusa(ayay)), inline content`, its content being an external
//! object (by object-ref index, nothing inline) when larger than twice the
//! repository's digest length. When an image has been made for the commit
//! the stream names it with the named ref `composefs.image`.
//!
//! This is the shared format; our fast framed index of a commit is a
//! cache built from it (`super::cache`).

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::commitstream::{Content, Objects, Stored};
use super::objects::{Commit, DirTree, FileHeader};
use crate::fsverity::{Algorithm, ObjectId};
use crate::splitstream::{Piece, SplitStreamReader, SplitStreamWriter};

/// Splitstream content type of commits in the shared format.
pub const CONTENT_TYPE: u64 = 0xAFE1_38C1_8C46_3EF1;
/// The named ref that records the commit's EROFS image.
pub const IMAGE_REF: &str = "composefs.image";
const NO_EXTERNAL: u32 = u32::MAX;
const HEADER: usize = 8 + 256 * 4;

/// File content larger than this is stored as an object (composefs-rs:
/// twice the digest length, so 64 bytes for SHA-256, 128 for SHA-512).
pub fn inline_max(alg: Algorithm) -> u64 {
    2 * alg.digest_len() as u64
}

/// The stream ref name of stored ostree ref `name` (`ostree/` then the
/// name with `%` and `/` escaped, as composefs-rs spells it).
pub fn ref_name(name: &str) -> String {
    format!("ostree/{}", crate::repository::encode_ref_component(name))
}

/// The ostree ref name a stream ref below `ostree/` stands for.
pub fn decode_ref_name(encoded: &str) -> String {
    crate::repository::decode_ref_component(encoded)
}

/// The objects of `objects` that the shared stream of `commit` holds:
/// the commit and all it reaches, in checksum order, each with its data.
fn reachable<'a>(
    commit: &Checksum,
    objects: &'a Objects,
) -> Result<BTreeMap<Checksum, &'a Stored>> {
    let get = |c: &Checksum, t: ObjType| {
        objects
            .get(&(*c, t))
            .with_context(|| format!("commit {commit}: {} {c} is missing", t.name()))
    };
    let meta = |s: &'a Stored, what: &str| match s {
        Stored::Meta(b) => Ok(b.as_slice()),
        Stored::File { .. } => bail!("commit {commit}: {what} is stored as a file"),
    };
    let mut out = BTreeMap::new();
    let cs = get(commit, ObjType::Commit)?;
    let parsed = Commit::parse(meta(cs, "the commit object")?)
        .with_context(|| format!("commit {commit}"))?;
    out.insert(*commit, cs);
    out.insert(parsed.root_meta, get(&parsed.root_meta, ObjType::DirMeta)?);
    let mut seen = HashSet::new();
    let mut work = vec![parsed.root_tree];
    while let Some(t) = work.pop() {
        if !seen.insert(t) {
            continue;
        }
        let ts = get(&t, ObjType::DirTree)?;
        let tree = DirTree::parse_stored(meta(ts, "a dirtree")?)
            .with_context(|| format!("commit {commit}: dirtree {t}"))?;
        out.insert(t, ts);
        for (_, f) in &tree.files {
            out.insert(*f, get(f, ObjType::File)?);
        }
        for (_, dt, dm) in &tree.dirs {
            out.insert(*dm, get(dm, ObjType::DirMeta)?);
            work.push(*dt);
        }
    }
    Ok(out)
}

/// Store file content as composefs-rs would for this repository: content
/// over [`inline_max`] as an object, smaller content inline (objects
/// reused from commits stored with another threshold are converted).
pub fn normalize(repo: &crate::repository::Repository, objects: &mut Objects) -> Result<()> {
    let max = inline_max(repo.algorithm());
    for ((c, _), s) in objects.iter_mut() {
        if let Stored::File { size, content, .. } = s {
            match content {
                Content::Inline(b) if *size > max => {
                    *content = Content::External(repo.store_bytes(b)?);
                }
                Content::External(id) if *size <= max => {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut repo.open_object(id)?, &mut b)
                        .with_context(|| format!("content of file {c}"))?;
                    if b.len() as u64 != *size {
                        bail!("content of file {c}: object {id} has the wrong size");
                    }
                    *content = Content::Inline(b);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Write the shared stream of `commit` from `objects` into `w`, naming
/// `image` as its image when given. The caller publishes the stream.
pub fn write(
    w: &mut SplitStreamWriter<'_>,
    commit: &Checksum,
    objects: &Objects,
    image: Option<ObjectId>,
) -> Result<()> {
    if let Some(id) = image {
        w.add_named_ref(IMAGE_REF, id)?;
    }
    let entries = reachable(commit, objects)?;
    let n = entries.len();
    let commit_index = entries
        .keys()
        .position(|c| c == commit)
        .context("commit object")?;
    let mut head = Vec::with_capacity(HEADER + n * 44);
    head.extend_from_slice(&(commit_index as u32).to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    let mut buckets = [0u32; 256];
    for c in entries.keys() {
        buckets[c.0[0] as usize] += 1;
    }
    let mut end = 0u32;
    for b in buckets {
        end += b;
        head.extend_from_slice(&end.to_le_bytes());
    }
    for c in entries.keys() {
        head.extend_from_slice(&c.0);
    }
    let mut offset = 0u64;
    for (c, s) in &entries {
        let (len, external) = match s {
            Stored::Meta(b) => (b.len() as u64, None),
            Stored::File {
                header, content, ..
            } => match content {
                Content::Inline(b) => (8 + header.len() as u64 + b.len() as u64, None),
                Content::External(id) => (8 + header.len() as u64, Some(*id)),
            },
        };
        let block = u32::try_from(offset / 8)
            .with_context(|| format!("commit {commit} is too large for its stored form"))?;
        let len32 = u32::try_from(len).with_context(|| format!("object {c} is too large"))?;
        let ext = match external {
            Some(id) => u32::try_from(w.add_object_ref(id)?).context("too many objects")?,
            None => NO_EXTERNAL,
        };
        head.extend_from_slice(&block.to_le_bytes());
        head.extend_from_slice(&len32.to_le_bytes());
        head.extend_from_slice(&ext.to_le_bytes());
        offset += len.next_multiple_of(8);
    }
    w.write_inline(&head)?;
    const PAD: [u8; 7] = [0; 7];
    for s in entries.values() {
        let len = match s {
            Stored::Meta(b) => {
                w.write_inline(b)?;
                b.len()
            }
            Stored::File {
                header, content, ..
            } => {
                let hl = u32::try_from(header.len()).context("file header too large")?;
                w.write_inline(&hl.to_be_bytes())?;
                w.write_inline(&[0; 4])?;
                w.write_inline(header)?;
                let inline = match content {
                    Content::Inline(b) => {
                        w.write_inline(b)?;
                        b.len()
                    }
                    Content::External(_) => 0,
                };
                8 + header.len() + inline
            }
        };
        let pad = len.next_multiple_of(8) - len;
        if pad > 0 {
            w.write_inline(&PAD[..pad])?;
        }
    }
    Ok(())
}

/// A shared-format stream, read back: the commit's objects and the image
/// it names.
pub struct Read {
    pub objects: Objects,
    pub image: Option<ObjectId>,
}

/// Read a shared stream whose commit is not known beforehand (fetched by
/// name): the commit is the one its header names, then everything is
/// checked as [`read`] checks it, the commit against that checksum.
pub fn read_named(mut r: SplitStreamReader) -> Result<(Checksum, Read)> {
    let image = r
        .named_refs()
        .iter()
        .find(|(n, _)| n == IMAGE_REF)
        .map(|(_, id)| *id);
    let refs = r.object_refs().to_vec();
    let data = inline_content(&mut r)?;
    let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4"));
    let at = (data.len() >= HEADER)
        .then(|| HEADER + 32 * u32_at(0) as usize)
        .filter(|at| data.len() >= at + 32)
        .context("not a commit stream (no commit checksum)")?;
    let commit = Checksum(data[at..at + 32].try_into().expect("32"));
    let objects =
        parse(&data, &refs, &commit).with_context(|| format!("stored ostree commit {commit}"))?;
    Ok((commit, Read { objects, image }))
}

/// Read the shared stream of `commit` from `r`. Everything is checked
/// (bounds, order, that the commit is the one expected, checksums of the
/// metadata and of inline files); damage is an error naming the commit.
pub fn read(mut r: SplitStreamReader, commit: &Checksum) -> Result<Read> {
    read_inner(&mut r, commit).with_context(|| format!("stored ostree commit {commit}"))
}

fn read_inner(r: &mut SplitStreamReader, commit: &Checksum) -> Result<Read> {
    let image = r
        .named_refs()
        .iter()
        .find(|(n, _)| n == IMAGE_REF)
        .map(|(_, id)| *id);
    let refs = r.object_refs().to_vec();
    let data = inline_content(r)?;
    Ok(Read {
        objects: parse(&data, &refs, commit)?,
        image,
    })
}

/// A commit stream's one inline chunk.
fn inline_content(r: &mut SplitStreamReader) -> Result<Vec<u8>> {
    if r.content_type != CONTENT_TYPE {
        bail!(
            "stream is not an ostree commit (content type {:#x})",
            r.content_type
        );
    }
    let mut data = Vec::new();
    while let Some(p) = r.next_piece()? {
        match p {
            Piece::Inline(b) => data.extend_from_slice(b),
            Piece::External(_) => bail!("unexpected external chunk in a commit stream"),
        }
    }
    Ok(data)
}

/// The objects of the stream content `data` (object refs `refs`), which
/// must be the stored commit `commit`.
pub fn parse(data: &[u8], refs: &[ObjectId], commit: &Checksum) -> Result<Objects> {
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    if data.len() < HEADER {
        bail!("truncated: {} bytes, shorter than the header", data.len());
    }
    let commit_index = u32_at(data, 0) as usize;
    let mut prev = 0u32;
    for k in 0..256 {
        let e = u32_at(data, 8 + 4 * k);
        if e < prev {
            bail!("bucket table is not sorted");
        }
        prev = e;
    }
    let n = prev as usize;
    let ids_end = HEADER + n * 32;
    let info_end = ids_end + n * 12;
    if data.len() < info_end {
        bail!("truncated: {n} objects do not fit in {} bytes", data.len());
    }
    if commit_index >= n {
        bail!("commit index {commit_index} out of range ({n} objects)");
    }
    let content = &data[info_end..];
    let mut table: BTreeMap<Checksum, (&[u8], Option<ObjectId>)> = BTreeMap::new();
    let mut prev: Option<Checksum> = None;
    for i in 0..n {
        let c = Checksum(
            data[HEADER + 32 * i..HEADER + 32 * (i + 1)]
                .try_into()
                .expect("32"),
        );
        if prev.is_some_and(|p| p >= c) {
            bail!("object ids are not sorted");
        }
        let bucket = c.0[0] as usize;
        let lo = if bucket == 0 {
            0
        } else {
            u32_at(data, 8 + 4 * (bucket - 1))
        };
        let hi = u32_at(data, 8 + 4 * bucket);
        if !(lo as usize <= i && i < hi as usize) {
            bail!("object {c} is outside its bucket");
        }
        prev = Some(c);
        let at = ids_end + 12 * i;
        let off = u32_at(data, at) as usize * 8;
        let len = u32_at(data, at + 4) as usize;
        let ext = u32_at(data, at + 8);
        let bytes = content
            .get(off..)
            .and_then(|b| b.get(..len))
            .with_context(|| format!("object {c}: data past the end of the stream"))?;
        let ext = match ext {
            NO_EXTERNAL => None,
            k => Some(
                *refs
                    .get(k as usize)
                    .with_context(|| format!("object {c}: object ref {k} out of range"))?,
            ),
        };
        table.insert(c, (bytes, ext));
    }
    let found = Checksum(
        data[HEADER + 32 * commit_index..HEADER + 32 * (commit_index + 1)]
            .try_into()
            .expect("32"),
    );
    if found != *commit {
        bail!("stream holds commit {found}");
    }
    classify(commit, &table)
}

/// Give each object reachable from the commit its type (the format does
/// not record them), checking metadata checksums on the way.
fn classify(
    commit: &Checksum,
    table: &BTreeMap<Checksum, (&[u8], Option<ObjectId>)>,
) -> Result<Objects> {
    let meta = |c: &Checksum, t: ObjType| -> Result<&[u8]> {
        let (b, ext) = table
            .get(c)
            .with_context(|| format!("{} {c} is missing", t.name()))?;
        if ext.is_some() {
            bail!("{} {c} refers to an external object", t.name());
        }
        if Checksum::of(b) != *c {
            bail!("{} {c} does not match its checksum", t.name());
        }
        Ok(b)
    };
    let mut out = Objects::new();
    let cb = meta(commit, ObjType::Commit)?;
    let parsed = Commit::parse(cb).context("commit object")?;
    out.insert((*commit, ObjType::Commit), Stored::Meta(cb.to_vec()));
    let mut metas = vec![parsed.root_meta];
    let mut work = vec![parsed.root_tree];
    while let Some(t) = work.pop() {
        if out.contains_key(&(t, ObjType::DirTree)) {
            continue;
        }
        let tb = meta(&t, ObjType::DirTree)?;
        let tree = DirTree::parse(tb).with_context(|| format!("dirtree {t}"))?;
        out.insert((t, ObjType::DirTree), Stored::Meta(tb.to_vec()));
        for (name, f) in &tree.files {
            if out.contains_key(&(*f, ObjType::File)) {
                continue;
            }
            let (b, ext) = table
                .get(f)
                .with_context(|| format!("file {f} ({name}) is missing"))?;
            let s = file(f, b, *ext).with_context(|| format!("file {f} ({name})"))?;
            out.insert((*f, ObjType::File), s);
        }
        for (_, dt, dm) in &tree.dirs {
            metas.push(*dm);
            work.push(*dt);
        }
    }
    for m in metas {
        if let std::collections::btree_map::Entry::Vacant(e) = out.entry((m, ObjType::DirMeta)) {
            let b = meta(&m, ObjType::DirMeta)?;
            super::objects::DirMeta::parse(b).with_context(|| format!("dirmeta {m}"))?;
            e.insert(Stored::Meta(b.to_vec()));
        }
    }
    Ok(out)
}

/// A file object: sized header, then inline content or an external ref.
fn file(c: &Checksum, b: &[u8], ext: Option<ObjectId>) -> Result<Stored> {
    if b.len() < 8 {
        bail!("truncated header");
    }
    let hl = u32::from_be_bytes(b[..4].try_into().expect("4")) as usize;
    let header = b.get(8..8 + hl).context("header past the object's end")?;
    let h = FileHeader::parse_archive(header)?;
    let rest = &b[8 + hl..];
    let content = match ext {
        Some(id) => {
            if !rest.is_empty() {
                bail!("both inline data and an external object");
            }
            Content::External(id)
        }
        None => {
            if rest.len() as u64 != h.size {
                bail!("{} inline bytes, header says {}", rest.len(), h.size);
            }
            if h.checksum(rest) != *c {
                bail!("does not match its checksum");
            }
            Content::Inline(rest.to_vec())
        }
    };
    Ok(Stored::File {
        header: header.to_vec(),
        size: h.size,
        content,
    })
}
