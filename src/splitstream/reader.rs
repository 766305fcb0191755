//! Reading splitstreams: validate the layout, reassemble, or walk chunks.
//!
//! Every size and offset in the file is checked against the file's length
//! before use, and inline data is handed out in bounded pieces, so a hostile
//! splitstream can neither make us allocate unboundedly nor read past its end.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Take, Write};
use std::ops::Range;

use anyhow::{Context, Result, bail};

use super::format::{HEADER_SIZE, Header, INFO_SIZE, Info, check_header, check_sections};
use super::frames::Frames;
use crate::fsverity::{Algorithm, ObjectId};
use crate::repository::Repository;

/// Largest piece of inline data handed out at once.
const PIECE: usize = 64 * 1024;
/// Named refs decompress to at most this much.
const MAX_NAMED_REFS: usize = 16 << 20;

/// One step of a walk through the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes stored in the splitstream (a long inline chunk arrives as several pieces).
    Inline(&'a [u8]),
    /// The whole content of this object goes here.
    External(ObjectId),
}

/// An open splitstream.
pub struct SplitStreamReader {
    pub algorithm: Algorithm,
    pub content_type: u64,
    /// Length of the reassembled stream, as recorded by the writer.
    pub stream_size: u64,
    object_refs: Vec<ObjectId>,
    stream_refs: Vec<ObjectId>,
    named_refs: Vec<(String, ObjectId)>,
    /// Where the compressed chunks are in the file.
    section: Range<u64>,
    /// Where the object refs array is in the file.
    refs: Range<u64>,
    decoder: zstd::stream::read::Decoder<'static, BufReader<Take<File>>>,
    inline_left: u64,
    /// Inline bytes handed out so far (bounds claims against `stream_size`).
    inline_seen: u64,
    buf: Vec<u8>,
}

fn read_range(f: &mut File, r: &Range<u64>) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; (r.end - r.start) as usize];
    f.seek(SeekFrom::Start(r.start))?;
    f.read_exact(&mut v)?;
    Ok(v)
}

fn parse_ids(alg: Algorithm, raw: &[u8], what: &str) -> Result<Vec<ObjectId>> {
    let n = alg.digest_len();
    if !raw.len().is_multiple_of(n) {
        bail!(
            "splitstream {what} array is {} bytes, not a multiple of {n}",
            raw.len()
        );
    }
    Ok(raw
        .chunks_exact(n)
        .map(|c| ObjectId::from_bytes(alg, c).expect("length checked"))
        .collect())
}

/// Like [`parse_ids`] over `read_range`, read in bounded pieces: the raw
/// array (64 bytes an object) is never held whole beside the parsed one.
fn read_ids(f: &mut File, alg: Algorithm, r: &Range<u64>, what: &str) -> Result<Vec<ObjectId>> {
    let n = alg.digest_len() as u64;
    let len = r.end - r.start;
    if !len.is_multiple_of(n) {
        bail!("splitstream {what} array is {len} bytes, not a multiple of {n}");
    }
    let mut ids = Vec::with_capacity((len / n) as usize);
    f.seek(SeekFrom::Start(r.start))?;
    let mut buf = vec![0u8; (1024 * n) as usize];
    let mut left = len;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..k])?;
        ids.extend(parse_ids(alg, &buf[..k], what)?);
        left -= k as u64;
    }
    Ok(ids)
}

impl SplitStreamReader {
    /// Open and validate a splitstream. `algorithm` is the repository's: a
    /// stream made for another algorithm is refused.
    pub fn new(mut file: File, algorithm: Algorithm) -> Result<Self> {
        let file_len = file.metadata().context("cannot stat splitstream")?.len();
        let mut hb = [0u8; HEADER_SIZE];
        if file_len < HEADER_SIZE as u64 {
            bail!(
                "splitstream is {file_len} bytes, shorter than its {HEADER_SIZE}-byte header: truncated"
            );
        }
        file.read_exact(&mut hb)
            .context("cannot read splitstream header")?;
        let header = Header::decode(&hb)?;
        check_header(&header, file_len, algorithm)?;
        let info_bytes = read_range(
            &mut file,
            &(header.info.start..header.info.start + INFO_SIZE as u64),
        )
        .context("cannot read splitstream info")?;
        let info = Info::decode(&info_bytes)?;
        check_sections(&info, file_len)?;
        let stream_refs = read_ids(&mut file, algorithm, &info.stream_refs, "stream refs")?;
        let object_refs = read_ids(&mut file, algorithm, &info.object_refs, "object refs")?;
        let named_refs = parse_named_refs(&read_range(&mut file, &info.named_refs)?, &stream_refs)?;

        file.seek(SeekFrom::Start(info.stream.start))
            .context("cannot seek splitstream")?;
        let limited = file.take(info.stream.end - info.stream.start);
        let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::new(limited))
            .context("cannot start zstd decompression")?;
        Ok(SplitStreamReader {
            algorithm,
            content_type: info.content_type,
            stream_size: info.stream_size,
            object_refs,
            stream_refs,
            named_refs,
            section: info.stream.clone(),
            refs: info.object_refs.clone(),
            decoder,
            inline_left: 0,
            inline_seen: 0,
            buf: vec![0u8; PIECE],
        })
    }

    /// Random access to the stream's frames when it was written framed
    /// (see [`super::frames`]); `Ok(Err(self))` gives the reader back
    /// otherwise. Call before reading any piece.
    pub fn into_frames(self) -> Result<std::result::Result<Frames, SplitStreamReader>> {
        let map = crate::mapped::Bytes::map(self.decoder.get_ref().get_ref().get_ref())
            .context("cannot map splitstream")?;
        let refs = self.refs.start as usize..self.refs.end as usize;
        match Frames::open(
            std::sync::Arc::new(map),
            self.algorithm,
            self.section.clone(),
            refs,
        )? {
            Some(f) => Ok(Ok(f)),
            None => Ok(Err(self)),
        }
    }

    /// Objects whose content the stream splices in, in order of first use.
    pub fn object_refs(&self) -> &[ObjectId] {
        &self.object_refs
    }

    /// Other splitstreams this one refers to.
    pub fn stream_refs(&self) -> &[ObjectId] {
        &self.stream_refs
    }

    /// `(name, stream id)` pairs.
    pub fn named_refs(&self) -> &[(String, ObjectId)] {
        &self.named_refs
    }

    /// The next piece of the stream, or `None` at its end.
    pub fn next_piece(&mut self) -> Result<Option<Piece<'_>>> {
        if self.inline_left == 0 {
            let mut hdr = [0u8; 8];
            let got = crate::fsutil::read_full(&mut self.decoder, &mut hdr)
                .context("cannot decompress splitstream")?;
            if got == 0 {
                return Ok(None);
            }
            if got < 8 {
                bail!("splitstream data ends inside a chunk header: truncated or corrupt");
            }
            let v = i64::from_le_bytes(hdr);
            if v >= 0 {
                let Some(id) = self.object_refs.get(v as usize) else {
                    bail!(
                        "splitstream chunk refers to object #{v}, but only {} are listed: corrupt",
                        self.object_refs.len()
                    );
                };
                return Ok(Some(Piece::External(*id)));
            }
            let len = v.unsigned_abs();
            if len > self.stream_size.saturating_sub(self.inline_seen) {
                bail!(
                    "splitstream inline chunk of {len} bytes exceeds the stream's recorded size {}: corrupt",
                    self.stream_size
                );
            }
            self.inline_left = len;
        }
        let n = (self.inline_left as usize).min(PIECE);
        self.decoder
            .read_exact(&mut self.buf[..n])
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    anyhow::anyhow!("splitstream data ends inside an inline chunk: truncated")
                }
                _ => anyhow::Error::new(e).context("cannot decompress splitstream"),
            })?;
        self.inline_left -= n as u64;
        self.inline_seen += n as u64;
        Ok(Some(Piece::Inline(&self.buf[..n])))
    }

    /// Reassemble the original bytes into `out`, reading external objects
    /// from `repo`. Returns the byte count, checked against the header.
    pub fn cat(&mut self, repo: &Repository, out: &mut impl Write) -> Result<u64> {
        let mut total = 0u64;
        while let Some(piece) = self.next_piece()? {
            match piece {
                Piece::Inline(b) => {
                    out.write_all(b).context("cannot write output")?;
                    total += b.len() as u64;
                }
                Piece::External(id) => total += copy_object(repo, &id, out)?,
            }
        }
        if total != self.stream_size {
            bail!(
                "splitstream reassembled to {total} bytes but records {} bytes: an object is damaged or the stream is corrupt",
                self.stream_size
            );
        }
        Ok(total)
    }
}

/// Copy an object's content into `out`. Without kernel fs-verity, the
/// content is re-digested on the way and a mismatch is an error, so a
/// damaged object never passes silently.
fn copy_object(repo: &Repository, id: &ObjectId, out: &mut impl Write) -> Result<u64> {
    let mut f = repo.open_object(id)?;
    if repo.verity() {
        return io::copy(&mut f, out).with_context(|| format!("cannot copy object {id}"));
    }
    let mut hasher = crate::fsverity::Hasher::new(id.algorithm());
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read object {id}")),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).context("cannot write output")?;
    }
    let len = hasher.len();
    let got = hasher.finish();
    if got != *id {
        bail!("object {id} is corrupt: its content digests to {got} (run `composefs fsck`)");
    }
    Ok(len)
}

fn parse_named_refs(raw: &[u8], stream_refs: &[ObjectId]) -> Result<Vec<(String, ObjectId)>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let mut text = Vec::new();
    zstd::stream::read::Decoder::new(raw)
        .context("cannot decompress splitstream named refs")?
        .take(MAX_NAMED_REFS as u64 + 1)
        .read_to_end(&mut text)
        .context("cannot decompress splitstream named refs")?;
    if text.len() > MAX_NAMED_REFS {
        bail!("splitstream named refs exceed {MAX_NAMED_REFS} bytes: corrupt");
    }
    let mut out = Vec::new();
    for rec in text.split(|&b| b == 0) {
        if rec.is_empty() {
            continue;
        }
        let rec = std::str::from_utf8(rec).context("splitstream named ref is not UTF-8")?;
        let (idx, name) = rec
            .split_once(':')
            .with_context(|| format!("splitstream named ref {rec:?} has no ':'"))?;
        let idx: usize = idx
            .parse()
            .with_context(|| format!("splitstream named ref {rec:?}: bad index"))?;
        let id = stream_refs.get(idx).with_context(|| {
            format!(
                "splitstream named ref {rec:?} points past the {} stream refs",
                stream_refs.len()
            )
        })?;
        out.push((name.to_string(), *id));
    }
    Ok(out)
}
