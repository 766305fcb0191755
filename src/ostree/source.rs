//! Where a pull reads from: an ostree repository, local (any mode) or
//! remote over HTTP (archive mode). One interface for both, so the pull
//! logic never knows which it has.

use std::io::{self, Read};

use anyhow::{Context, Result, bail};
use flate2::read::DeflateDecoder;

use super::checksum::{Checksum, ObjType, object_path};
use super::objects::{FileHeader, MAX_METADATA_SIZE, split_filez_header};

/// The storage modes of ostree repositories (`core.mode` in `config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoMode {
    Archive,
    Bare,
    BareUser,
    BareUserOnly,
    BareSplitXattrs,
}

impl RepoMode {
    pub fn parse(s: &str) -> Result<RepoMode> {
        Ok(match s {
            "archive" | "archive-z2" => RepoMode::Archive,
            "bare" => RepoMode::Bare,
            "bare-user" => RepoMode::BareUser,
            "bare-user-only" => RepoMode::BareUserOnly,
            "bare-split-xattrs" => RepoMode::BareSplitXattrs,
            other => bail!("unknown ostree repository mode {other:?}"),
        })
    }
}

/// Read `core.mode` from an ostree `config` file (an ini file).
pub fn mode_from_config(text: &str) -> Result<RepoMode> {
    let mut in_core = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_core = line == "[core]";
        } else if in_core
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == "mode"
        {
            return RepoMode::parse(v.trim());
        }
    }
    Ok(RepoMode::Bare) // ostree's default when core.mode is absent
}

/// A file object: its header and exactly `header.size` bytes of content.
pub struct FileObject {
    pub header: FileHeader,
    pub content: FileContent,
}

/// A file object's content: already in memory (small archive objects are
/// inflated in one call), or a reader that yields exactly the header's size.
pub enum FileContent {
    Bytes(Vec<u8>),
    Reader(Box<dyn Read + Send>),
}

impl FileContent {
    /// No content (symlinks).
    pub fn empty() -> Self {
        FileContent::Bytes(Vec::new())
    }

    /// The content as a reader, whichever form it came in.
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        match self {
            FileContent::Bytes(b) => Box::new(io::Cursor::new(b)),
            FileContent::Reader(r) => r,
        }
    }
}

/// An ostree repository to pull from.
pub trait Source: Send + Sync {
    /// For messages: the path or URL.
    fn describe(&self) -> String;

    /// The repository's mode.
    fn mode(&self) -> RepoMode;

    /// A file of the repository by relative path (`refs/heads/x`,
    /// `summary`, `deltas/…`), at most `limit` bytes; `None` if absent.
    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>>;

    /// Refs the repository lists itself (local repositories only; remote
    /// ones are listed through their summary): (name, commit).
    fn list_refs(&self) -> Result<Option<Vec<(String, Checksum)>>> {
        Ok(None)
    }

    /// A metadata object's bytes; `None` if absent.
    fn metadata(&self, csum: &Checksum, objtype: ObjType) -> Result<Option<Vec<u8>>> {
        self.read(&object_path(csum, objtype), MAX_METADATA_SIZE as u64)
    }

    /// A file object, header parsed, content streaming.
    fn file(&self, csum: &Checksum) -> Result<FileObject>;

    /// A hint that object (`csum`, `objtype`) will be wanted soon (a local
    /// source starts reading it into the page cache). Errors are ignored.
    fn prefetch(&self, _csum: &Checksum, _objtype: ObjType) {}
}

/// Content up to this size is inflated whole, in one call, when its
/// compressed form is read (a pull keeps content this small in memory anyway);
/// larger content streams through a decoder.
pub const WHOLE_CONTENT_MAX: u64 = 4 << 20;

/// Content of an archive-mode `.filez` stream: header, then raw deflate.
/// The content yields exactly `header.size` bytes and is an error if the
/// stream holds fewer or more.
pub fn filez_object(mut r: Box<dyn Read + Send>, what: &str) -> Result<FileObject> {
    let mut prefix = [0u8; 8];
    r.read_exact(&mut prefix)
        .with_context(|| format!("{what}: truncated .filez (no header)"))?;
    let len = u32::from_be_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_METADATA_SIZE {
        bail!("{what}: .filez header length {len} is absurd");
    }
    let mut buf = prefix.to_vec();
    buf.resize(8 + len, 0);
    r.read_exact(&mut buf[8..])
        .with_context(|| format!("{what}: truncated .filez header"))?;
    let (header, _) = split_filez_header(&buf).with_context(|| what.to_string())?;
    let size = header.size;
    let content = if header.is_symlink() {
        FileContent::empty()
    } else if size > 0 && size <= WHOLE_CONTENT_MAX {
        inflate_whole(r, size).with_context(|| what.to_string())?
    } else {
        FileContent::Reader(inflate_stream(r, size))
    };
    Ok(FileObject { header, content })
}

/// A streaming inflater of raw deflate `r` that yields exactly `size` bytes.
fn inflate_stream(r: Box<dyn Read + Send>, size: u64) -> Box<dyn Read + Send> {
    Box::new(ExactReader::new(
        DeflateDecoder::new(io::BufReader::with_capacity(64 * 1024, r)),
        size,
    ))
}

/// Inflate raw deflate `r` holding `size` bytes in one call (libdeflate:
/// about 1.6x zlib-rs's speed on ostree's objects). Deflate expands stored
/// data by 5 bytes per 64 KiB block, so a compressed stream longer than
/// `size` plus that and some slack is unusual, though not wrong: it streams
/// through the ordinary decoder instead.
fn inflate_whole(mut r: Box<dyn Read + Send>, size: u64) -> Result<FileContent> {
    let bound = size + size / 1024 + 4096;
    let mut compressed = Vec::with_capacity((size / 2 + 64) as usize);
    (&mut r)
        .take(bound + 1)
        .read_to_end(&mut compressed)
        .context("reading compressed content")?;
    if compressed.len() as u64 > bound {
        let rest = io::Cursor::new(compressed).chain(r);
        return Ok(FileContent::Reader(inflate_stream(Box::new(rest), size)));
    }
    thread_local! {
        static INFLATER: std::cell::RefCell<libdeflater::Decompressor> =
            std::cell::RefCell::new(libdeflater::Decompressor::new());
    }
    let mut out = vec![0u8; size as usize];
    let got = INFLATER.with_borrow_mut(|d| d.deflate_decompress(&compressed, &mut out));
    match got {
        Ok(n) if n as u64 == size => Ok(FileContent::Bytes(out)),
        Ok(n) => bail!(
            "content ends {} bytes short of its header's size",
            size - n as u64
        ),
        Err(libdeflater::DecompressionError::InsufficientSpace) => {
            bail!("content is longer than its header says")
        }
        Err(libdeflater::DecompressionError::BadData) => bail!("corrupt deflate stream"),
    }
}

/// Yields exactly `size` bytes of `inner`: an early end is `UnexpectedEof`,
/// extra bytes after `size` are `InvalidData`.
pub struct ExactReader<R> {
    inner: R,
    left: u64,
    checked: bool,
}

impl<R: Read> ExactReader<R> {
    pub fn new(inner: R, size: u64) -> Self {
        ExactReader {
            inner,
            left: size,
            checked: false,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if !self.checked {
                self.checked = true;
                let mut extra = [0u8; 1];
                if self.inner.read(&mut extra)? != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "content is longer than its header says",
                    ));
                }
            }
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "content ends {} bytes short of its header's size",
                    self.left
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::objects::FileHeader;
    use std::io::Write;

    fn header(size: u64) -> FileHeader {
        FileHeader {
            size,
            uid: 0,
            gid: 0,
            mode: crate::tree::mode::S_IFREG | 0o644,
            rdev: 0,
            symlink: String::new(),
            xattrs: Vec::new(),
        }
    }

    /// A `.filez` stream: header of `size`, then `deflated`.
    fn filez(size: u64, deflated: &[u8]) -> Vec<u8> {
        let h = header(size).serialize_archive();
        let mut v = (h.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&h);
        v.extend_from_slice(deflated);
        v
    }

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read(bytes: Vec<u8>) -> Result<(bool, Vec<u8>)> {
        let obj = filez_object(Box::new(io::Cursor::new(bytes)), "file object X")?;
        let whole = matches!(obj.content, FileContent::Bytes(_));
        let mut out = Vec::new();
        obj.content.into_reader().read_to_end(&mut out)?;
        Ok((whole, out))
    }

    #[test]
    fn small_content_is_inflated_whole_and_large_streams() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (whole, out) = read(filez(data.len() as u64, &deflate(&data, 6))).unwrap();
        assert!(whole);
        assert_eq!(out, data);
        let big = vec![7u8; (WHOLE_CONTENT_MAX + 1) as usize];
        let (whole, out) = read(filez(big.len() as u64, &deflate(&big, 1))).unwrap();
        assert!(!whole);
        assert_eq!(out, big);
        // Stored (level 0) blocks: longer than the content, still whole.
        let (whole, out) = read(filez(data.len() as u64, &deflate(&data, 0))).unwrap();
        assert!(whole);
        assert_eq!(out, data);
        // Empty content streams (no deflate stream needed at all).
        let (_, out) = read(filez(0, &deflate(b"", 6))).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_padded_stream_falls_back_to_the_decoder() {
        // Empty stored blocks make a valid stream far longer than its content.
        let mut padded = Vec::new();
        for _ in 0..2000 {
            padded.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        }
        padded.extend_from_slice(&deflate(b"hello", 6));
        let (whole, out) = read(filez(5, &padded)).unwrap();
        assert!(!whole);
        assert_eq!(out, b"hello");
    }

    #[test]
    fn wrong_sizes_and_corrupt_streams_are_errors_naming_the_object() {
        let data = vec![3u8; 10_000];
        let d = deflate(&data, 6);
        for (size, stream, want) in [
            (10_001, d.clone(), "short"),
            (9_999, d.clone(), "longer than its header"),
            (10_000, d[..d.len() / 2].to_vec(), "corrupt deflate"),
            (10_000, vec![0xff; 64], "corrupt deflate"),
        ] {
            let err = match read(filez(size, &stream)) {
                Ok(_) => panic!("size {size} ({want}) was accepted"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains("file object X"), "{err}");
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
