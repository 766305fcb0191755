//! Where a pull reads from: an ostree repository, local (any mode) or
//! remote over HTTP (archive mode). One interface for both, so the pull
//! logic never knows which it has.

use std::io::{self, Read};
use std::path::PathBuf;

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
    pub content: Box<dyn Read + Send>,
}

/// An error worth retrying (network trouble, server errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// Whether `e` is [`Transient`], or carries one: directly, or inside an
/// `io::Error` (whose `source()` skips the error it wraps).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Transient>().is_some()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<Transient>().is_some())
    })
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

/// Open a source: a local path, `file://` URL, or `http(s)://` URL.
pub fn open(spec: &str) -> Result<Box<dyn Source>> {
    open_with(spec, None)
}

/// [`open`], with an HTTP timeout other than the default.
pub fn open_with(spec: &str, timeout: Option<std::time::Duration>) -> Result<Box<dyn Source>> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(Box::new(super::http::HttpSource::new(spec, timeout)?));
    }
    let path = match spec.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(spec),
    };
    Ok(Box::new(super::local::LocalSource::open(&path)?))
}

/// Content of an archive-mode `.filez` stream: header, then raw deflate.
/// The content reader yields exactly `header.size` bytes and fails if the
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
    let content: Box<dyn Read + Send> = if header.is_symlink() {
        Box::new(io::empty())
    } else {
        Box::new(ExactReader::new(
            DeflateDecoder::new(io::BufReader::with_capacity(64 * 1024, r)),
            size,
        ))
    };
    Ok(FileObject { header, content })
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
