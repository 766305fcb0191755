//! Reading splitstreams: validate the layout, reassemble, or walk chunks.
//!
//! Every size and offset in the file is checked against the file's length
//! before use, and inline data is handed out in bounded pieces, so a hostile
//! splitstream can neither make us allocate unboundedly nor read past its end.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Take, Write};
use std::ops::Range;

use super::error::{Error, Result};
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

/// Read section `r` (checked to lie in the file) whole; `what` names it.
fn read_range(f: &mut File, r: &Range<u64>, what: &str) -> Result<Vec<u8>> {
    let mut v = vec![0u8; (r.end - r.start) as usize];
    f.seek(SeekFrom::Start(r.start))
        .and_then(|_| f.read_exact(&mut v))
        .map_err(|e| Error::io(format!("cannot read splitstream {what}"), e))?;
    Ok(v)
}

fn parse_ids(alg: Algorithm, raw: &[u8], what: &str) -> Result<Vec<ObjectId>> {
    let n = alg.digest_len();
    if !raw.len().is_multiple_of(n) {
        return Err(Error::corrupt(format!(
            "splitstream {what} array is {} bytes, not a multiple of {n}",
            raw.len()
        )));
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
        return Err(Error::corrupt(format!(
            "splitstream {what} array is {len} bytes, not a multiple of {n}"
        )));
    }
    let failed = |e| Error::io(format!("cannot read splitstream {what}"), e);
    let mut ids = Vec::with_capacity((len / n) as usize);
    f.seek(SeekFrom::Start(r.start)).map_err(failed)?;
    let mut buf = vec![0u8; (1024 * n) as usize];
    let mut left = len;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..k]).map_err(failed)?;
        ids.extend(parse_ids(alg, &buf[..k], what)?);
        left -= k as u64;
    }
    Ok(ids)
}

impl SplitStreamReader {
    /// Open and validate a splitstream. `algorithm` is the repository's: a
    /// stream made for another algorithm is refused.
    pub fn new(mut file: File, algorithm: Algorithm) -> Result<Self> {
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("cannot stat splitstream", e))?
            .len();
        let mut hb = [0u8; HEADER_SIZE];
        if file_len < HEADER_SIZE as u64 {
            return Err(Error::Truncated(format!(
                "splitstream is {file_len} bytes, shorter than its {HEADER_SIZE}-byte header: truncated"
            )));
        }
        file.read_exact(&mut hb)
            .map_err(|e| Error::io("cannot read splitstream header", e))?;
        let header = Header::decode(&hb)?;
        check_header(&header, file_len, algorithm)?;
        let info_bytes = read_range(
            &mut file,
            &(header.info.start..header.info.start + INFO_SIZE as u64),
            "info",
        )?;
        let info = Info::decode(&info_bytes)?;
        check_sections(&info, file_len)?;
        let stream_refs = read_ids(&mut file, algorithm, &info.stream_refs, "stream refs")?;
        let object_refs = read_ids(&mut file, algorithm, &info.object_refs, "object refs")?;
        let named_refs = parse_named_refs(
            &read_range(&mut file, &info.named_refs, "named refs")?,
            &stream_refs,
        )?;

        file.seek(SeekFrom::Start(info.stream.start))
            .map_err(|e| Error::io("cannot seek splitstream", e))?;
        let limited = file.take(info.stream.end - info.stream.start);
        let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::new(limited))
            .map_err(|e| Error::io("cannot start zstd decompression", e))?;
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
            .map_err(|e| Error::io("cannot map splitstream", e))?;
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
                .map_err(|e| Error::decompress("cannot decompress splitstream", e))?;
            if got == 0 {
                return Ok(None);
            }
            if got < 8 {
                // The zstd data ended cleanly: a chunk is missing its bytes.
                return Err(Error::Truncated(
                    "splitstream data ends inside a chunk header: truncated or corrupt".into(),
                ));
            }
            let v = i64::from_le_bytes(hdr);
            if v >= 0 {
                let Some(id) = self.object_refs.get(v as usize) else {
                    return Err(Error::corrupt(format!(
                        "splitstream chunk refers to object #{v}, but only {} are listed: corrupt",
                        self.object_refs.len()
                    )));
                };
                return Ok(Some(Piece::External(*id)));
            }
            let len = v.unsigned_abs();
            if len > self.stream_size.saturating_sub(self.inline_seen) {
                return Err(Error::corrupt(format!(
                    "splitstream inline chunk of {len} bytes exceeds the stream's recorded size {}: corrupt",
                    self.stream_size
                )));
            }
            self.inline_left = len;
        }
        let n = (self.inline_left as usize).min(PIECE);
        self.decoder
            .read_exact(&mut self.buf[..n])
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::Truncated(
                    "splitstream data ends inside an inline chunk: truncated".into(),
                ),
                _ => Error::decompress("cannot decompress splitstream", e),
            })?;
        self.inline_left -= n as u64;
        self.inline_seen += n as u64;
        Ok(Some(Piece::Inline(&self.buf[..n])))
    }

    /// Reassemble the original bytes into `out`, reading external objects
    /// from `repo`. Returns the byte count, checked against the header.
    ///
    /// Errors are [`Error`]s (reading the stream, [`Error::MissingObject`],
    /// [`Error::DamagedObject`], writing `out`), except where the
    /// repository fails to open an object that is there: that error is the
    /// repository's, as it reported it.
    pub fn cat(&mut self, repo: &Repository, out: &mut impl Write) -> anyhow::Result<u64> {
        let mut total = 0u64;
        while let Some(piece) = self.next_piece()? {
            match piece {
                Piece::Inline(b) => {
                    out.write_all(b)
                        .map_err(|e| Error::io("cannot write output", e))?;
                    total += b.len() as u64;
                }
                Piece::External(id) => total += copy_object(repo, &id, out)?,
            }
        }
        if total != self.stream_size {
            return Err(Error::corrupt(format!(
                "splitstream reassembled to {total} bytes but records {} bytes: an object is damaged or the stream is corrupt",
                self.stream_size
            ))
            .into());
        }
        Ok(total)
    }
}

/// Copy an object's content into `out`. Without kernel fs-verity, the
/// content is re-digested on the way and a mismatch is an error, so a
/// damaged object never passes silently.
fn copy_object(repo: &Repository, id: &ObjectId, out: &mut impl Write) -> anyhow::Result<u64> {
    let Some(mut f) = repo.try_open_object(id)? else {
        return Err(Error::MissingObject {
            id: *id,
            objects: repo.path().join("objects"),
        }
        .into());
    };
    if repo.verity() {
        return io::copy(&mut f, out)
            .map_err(|e| Error::io(format!("cannot copy object {id}"), e).into());
    }
    let mut hasher = crate::fsverity::Hasher::new(id.algorithm());
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("cannot read object {id}"), e).into()),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("cannot write output", e))?;
    }
    let len = hasher.len();
    let got = hasher.finish();
    if got != *id {
        return Err(Error::DamagedObject {
            id: *id,
            got: Box::new(got),
        }
        .into());
    }
    Ok(len)
}

fn parse_named_refs(raw: &[u8], stream_refs: &[ObjectId]) -> Result<Vec<(String, ObjectId)>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let failed = |e| Error::decompress("cannot decompress splitstream named refs", e);
    let mut text = Vec::new();
    zstd::stream::read::Decoder::new(raw)
        .map_err(failed)?
        .take(MAX_NAMED_REFS as u64 + 1)
        .read_to_end(&mut text)
        .map_err(failed)?;
    if text.len() > MAX_NAMED_REFS {
        return Err(Error::corrupt(format!(
            "splitstream named refs exceed {MAX_NAMED_REFS} bytes: corrupt"
        )));
    }
    let mut out = Vec::new();
    for rec in text.split(|&b| b == 0) {
        if rec.is_empty() {
            continue;
        }
        let rec = std::str::from_utf8(rec)
            .map_err(|e| Error::corrupt(format!("splitstream named ref is not UTF-8: {e}")))?;
        let (idx, name) = rec
            .split_once(':')
            .ok_or_else(|| Error::corrupt(format!("splitstream named ref {rec:?} has no ':'")))?;
        let idx: usize = idx.parse().map_err(|e| {
            Error::corrupt(format!("splitstream named ref {rec:?}: bad index: {e}"))
        })?;
        let id = stream_refs.get(idx).ok_or_else(|| {
            Error::corrupt(format!(
                "splitstream named ref {rec:?} points past the {} stream refs",
                stream_refs.len()
            ))
        })?;
        out.push((name.to_string(), *id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::InitOptions;
    use crate::splitstream::content_type;

    const ALG: Algorithm = Algorithm::Sha256;

    fn repo() -> (tempfile::TempDir, Repository) {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            insecure: true,
            ..InitOptions::new(ALG)
        };
        let repo = Repository::init_with(&tmp.path().join("repo"), &opts).unwrap();
        (tmp, repo)
    }

    fn file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    /// A splitstream laid out by hand: `chunks` is the decompressed chunk
    /// sequence, `size` the recorded stream size.
    fn craft(object_refs: &[ObjectId], chunks: &[u8], size: u64) -> Vec<u8> {
        let mut body = Vec::new();
        let mut at = (HEADER_SIZE + INFO_SIZE) as u64;
        let mut section = |bytes: &[u8]| {
            let r = at..at + bytes.len() as u64;
            at += bytes.len() as u64;
            body.extend_from_slice(bytes);
            r
        };
        let refs: Vec<u8> = object_refs
            .iter()
            .flat_map(|i| i.as_bytes().to_vec())
            .collect();
        let info = Info {
            stream_refs: section(&[]),
            object_refs: section(&refs),
            stream: section(&zstd::bulk::compress(chunks, 1).unwrap()),
            named_refs: section(&[]),
            content_type: content_type::OCI_BLOB,
            stream_size: size,
        };
        let header = Header {
            algorithm: ALG,
            lg_blocksize: Algorithm::LG_BLOCKSIZE,
            info: HEADER_SIZE as u64..(HEADER_SIZE + INFO_SIZE) as u64,
        };
        [&header.encode()[..], &info.encode(), &body].concat()
    }

    fn chunk_inline(data: &[u8]) -> Vec<u8> {
        [&(-(data.len() as i64)).to_le_bytes()[..], data].concat()
    }

    fn open(bytes: &[u8]) -> Result<SplitStreamReader> {
        SplitStreamReader::new(file(bytes), ALG)
    }

    /// Walk every piece; the first error.
    fn walk(bytes: &[u8]) -> Result<()> {
        let mut r = open(bytes)?;
        while r.next_piece()?.is_some() {}
        Ok(())
    }

    #[test]
    fn a_good_stream_reads() {
        let (_tmp, repo) = repo();
        let id = repo.store_bytes(b"object").unwrap();
        let chunks = [chunk_inline(b"head "), 0i64.to_le_bytes().to_vec()].concat();
        let bytes = craft(&[id], &chunks, 11);
        let mut out = Vec::new();
        open(&bytes).unwrap().cat(&repo, &mut out).unwrap();
        assert_eq!(out, b"head object");
    }

    #[test]
    fn header_errors() {
        let good = craft(&[], &chunk_inline(b"x"), 1);
        let patched = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            b
        };
        assert!(matches!(
            open(&patched(0, b's')),
            Err(Error::NotSplitstream)
        ));
        assert!(matches!(
            open(&patched(11, 1)),
            Err(Error::UnsupportedVersion { version: 1, .. })
        ));
        // Another algorithm, an unknown one, another block size.
        for (at, v) in [(14, 2), (14, 9), (15, 13)] {
            let e = open(&patched(at, v)).err().unwrap();
            assert!(matches!(e, Error::Unsupported(_)), "{e}");
        }
        let e = SplitStreamReader::new(file(&good), Algorithm::Sha512)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
    }

    #[test]
    fn truncated_streams() {
        let good = craft(&[], &chunk_inline(b"some inline bytes"), 17);
        for len in [0, 20, HEADER_SIZE + 10, good.len() - 1] {
            let e = open(&good[..len]).err().unwrap();
            assert!(matches!(e, Error::Truncated(_)), "{len} bytes: {e}");
            assert!(e.is_damaged());
        }
        // The chunk data ends early (the zstd data itself is whole).
        let short = craft(&[], &chunk_inline(b"abc")[..8 + 2], 3);
        assert!(matches!(walk(&short), Err(Error::Truncated(_))));
        let short = craft(&[], &[0xff; 5], 3);
        assert!(matches!(walk(&short), Err(Error::Truncated(_))));
    }

    #[test]
    fn corrupt_streams() {
        let id = ObjectId::zero(ALG);
        // A chunk naming object #1 of 1.
        let out_of_range = craft(&[id], &1i64.to_le_bytes(), 0);
        // An inline chunk longer than the stream.
        let too_long = craft(&[], &chunk_inline(b"abc"), 2);
        // The stream section is not zstd.
        let not_zstd = || {
            let mut b = craft(&[], &chunk_inline(b"abcdef"), 6);
            let at = Info::decode(&b[HEADER_SIZE..]).unwrap().stream.start as usize;
            b[at..at + 4].copy_from_slice(b"junk");
            b
        };
        // A section that ends before it starts.
        let mut inverted = craft(&[], &chunk_inline(b"x"), 1);
        inverted[HEADER_SIZE + 16..HEADER_SIZE + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        for (what, bytes) in [
            ("object index out of range", out_of_range),
            ("inline chunk past the size", too_long),
            ("not zstd", not_zstd()),
            ("inverted section", inverted),
        ] {
            let e = walk(&bytes)
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(matches!(e, Error::Corrupt { .. }), "{what}: {e}");
            assert!(e.is_damaged(), "{what}");
        }
        let e = walk(&not_zstd()).err().unwrap();
        // zstd's own message is the source.
        assert!(std::error::Error::source(&e).is_some(), "{e}");
    }

    #[test]
    fn missing_and_damaged_objects() {
        let (_tmp, repo) = repo();
        let absent = ObjectId::zero(ALG);
        let bytes = craft(&[absent], &0i64.to_le_bytes(), 4);
        let e = open(&bytes)
            .unwrap()
            .cat(&repo, &mut Vec::new())
            .unwrap_err();
        let found = Error::find(&e);
        assert!(
            matches!(found, Some(Error::MissingObject { id, .. }) if *id == absent),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("cannot open object"), "{e:#}");
        assert!(!found.unwrap().is_damaged());

        let id = repo.store_bytes(b"good").unwrap();
        let path = repo.object_path(&id);
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).unwrap();
        std::fs::write(&path, b"evil").unwrap();
        let bytes = craft(&[id], &0i64.to_le_bytes(), 4);
        let e = open(&bytes)
            .unwrap()
            .cat(&repo, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(Error::find(&e), Some(Error::DamagedObject { id: d, .. }) if *d == id),
            "{e:#}"
        );
    }
}
