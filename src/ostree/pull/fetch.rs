//! Fetching one object for a pull and verifying it before it is used or
//! stored: metadata by the SHA-256 of its bytes and its type's parser, files
//! by ostree's checksum of header and content (computed while the content
//! goes into the object store), whole files from a delta the same way.

use std::io::{Read, Write};

use anyhow::{Context, Result, anyhow, bail};
use sha2::Digest;

use crate::net::retry;
use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::commitstream::{Content, Stored};
use crate::ostree::objects::{Commit, DirMeta, DirTree, FileHeader};
use crate::ostree::source::{self, FileObject, Source};
use crate::repository::Repository;

/// Content up to this size is read into memory, verified, then stored;
/// larger content streams to the object store while it is verified.
pub(super) const BUFFERED: u64 = source::WHOLE_CONTENT_MAX;

/// Fetch metadata object (c, t), check its SHA-256 and its type.
pub(crate) fn fetch_meta(src: &dyn Source, c: &Checksum, t: ObjType) -> Result<Vec<u8>> {
    let what = || format!("{} {c}", t.name());
    tracing::debug!("fetching {}", what());
    let data = retry(|| src.metadata(c, t))
        .with_context(what)?
        .ok_or_else(|| anyhow!("{} not found in {}", what(), src.describe()))?;
    verify_meta(c, t, &data)?;
    Ok(data)
}

pub(crate) fn verify_meta(c: &Checksum, t: ObjType, data: &[u8]) -> Result<()> {
    let what = || format!("{} {c}", t.name());
    let got = Checksum::of(data);
    if got != *c {
        bail!("{}: checksum mismatch (content hashes to {got})", what());
    }
    match t {
        ObjType::DirTree => DirTree::parse(data).map(drop),
        ObjType::DirMeta => DirMeta::parse(data).map(drop),
        ObjType::Commit => Commit::parse(data).map(drop),
        _ => Ok(()),
    }
    .with_context(what)
}

/// Fetch file object `c`, verify it, store its content. Returns the stored
/// form and the content size.
pub(crate) fn fetch_file(
    src: &dyn Source,
    repo: &Repository,
    c: &Checksum,
) -> Result<(Stored, u64)> {
    retry(|| fetch_file_once(src, repo, c))
}

fn fetch_file_once(src: &dyn Source, repo: &Repository, c: &Checksum) -> Result<(Stored, u64)> {
    tracing::debug!("fetching file {c}");
    store_file(repo, c, src.file(c)?)
}

/// Verify file object `c` (its header and content as read) by ostree's
/// checksum and store its content: inline when small, else as an object,
/// which is linked into place only once the checksum matched. Returns the
/// stored form and the content size.
pub(crate) fn store_file(
    repo: &Repository,
    c: &Checksum,
    obj: FileObject,
) -> Result<(Stored, u64)> {
    let header = obj.header;
    let mut hasher = header.checksum_hasher();
    let size = header.size;
    let content = if size <= BUFFERED {
        let buf = match obj.content {
            source::FileContent::Bytes(b) => b,
            source::FileContent::Reader(mut r) => {
                let mut buf = Vec::with_capacity(size as usize);
                r.read_to_end(&mut buf)
                    .with_context(|| format!("file object {c}"))?;
                buf
            }
        };
        if buf.len() as u64 != size {
            bail!("file object {c}: content is not the header's size");
        }
        hasher.update(&buf);
        check_file_sum(c, hasher)?;
        if size <= crate::ostree::shared::inline_max(repo.algorithm()) {
            Content::Inline(buf)
        } else {
            Content::External(repo.store_bytes(&buf)?)
        }
    } else {
        let mut w = repo.object_writer()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut content = obj.content.into_reader();
        loop {
            let n = content
                .read(&mut buf)
                .with_context(|| format!("file object {c}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            w.write_all(&buf[..n])?;
        }
        check_file_sum(c, hasher)?;
        Content::External(w.finish()?.0)
    };
    Ok((
        Stored::File {
            header: header.serialize_archive(),
            size,
            content,
        },
        size,
    ))
}

fn check_file_sum(c: &Checksum, h: sha2::Sha256) -> Result<()> {
    let got = crate::ostree::objects::finish_checksum(h);
    if got != *c {
        bail!("file object {c}: checksum mismatch (header and content hash to {got})");
    }
    Ok(())
}

/// Store a file that arrived whole (from a delta), after verifying it.
pub(super) fn store_whole_file(
    repo: &Repository,
    c: &Checksum,
    header: &FileHeader,
    content: &[u8],
) -> Result<Stored> {
    header
        .validate()
        .with_context(|| format!("file object {c}"))?;
    if header.size != content.len() as u64 {
        bail!("file object {c}: header size does not match content");
    }
    let got = header.checksum(content);
    if got != *c {
        bail!("file object {c}: checksum mismatch (header and content hash to {got})");
    }
    let content = if content.len() as u64 <= crate::ostree::shared::inline_max(repo.algorithm()) {
        Content::Inline(content.to_vec())
    } else {
        Content::External(repo.store_bytes(content)?)
    };
    Ok(Stored::File {
        header: header.serialize_archive(),
        size: header.size,
        content,
    })
}
