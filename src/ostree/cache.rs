//! Per-commit caches of our framed commit index, beside the shared commit
//! stream (`super::shared`) that composefs-rs also reads.
//!
//! The shared stream is one inline chunk that must be decompressed whole
//! to find anything; lookups (`diff`, `ls`, `mount`) instead use our framed
//! `ostreecm` stream of the same objects (`super::commitstream`), kept as
//! the file `ostree/cache/<commit>.<stream-object-id>`: outside `objects/`,
//! so no `gc` (ours or cfsctl's) sees or deletes it, and named after the
//! shared stream object it was built from, so a cache whose stream has
//! been rewritten or replaced is never used. Any cache may be deleted:
//! it is rebuilt from the shared stream on next use (and replaced, with
//! its stale siblings, when damaged). A read-only repository gets the
//! index built in memory instead.
//!
//! Commits stored by earlier versions (an `ostreecm` stream as the commit
//! stream itself) are opened directly and need no cache.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::checksum::Checksum;
use super::commitstream::{self, CommitStream, Objects, content_id};
use super::shared;
use crate::fsverity::ObjectId;
use crate::repository::{RefKind, Repository};
use crate::splitstream::FrameCoding;

fn dir(repo: &Repository) -> PathBuf {
    repo.path().join("ostree").join("cache")
}

fn path(repo: &Repository, commit: &Checksum, stream: &ObjectId) -> PathBuf {
    dir(repo).join(format!("{commit}.{stream}"))
}

/// The object id of the stream stored for `commit`.
pub fn stream_id(repo: &Repository, commit: &Checksum) -> Result<ObjectId> {
    Ok(repo
        .resolve(RefKind::Stream, &content_id(commit))
        .with_context(|| format!("stored ostree commit {commit}"))?
        .id)
}

/// [`open`], with absence as an answer: `Ok(None)` when no stream of
/// `commit` is stored (no `streams/ostree-commit-<commit>` entry), an error
/// when one is stored but cannot be read (a missing or damaged object).
pub fn try_open(repo: &Repository, commit: &Checksum) -> Result<Option<CommitStream>> {
    let entry = repo
        .path()
        .join(RefKind::Stream.dir())
        .join(content_id(commit));
    match std::fs::symlink_metadata(&entry) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot look up {}", entry.display())),
        Ok(_) => {}
    }
    open(repo, commit).map(Some)
}

impl CommitStream {
    /// Open stored commit `commit`: a stream in the shared format through
    /// its cache ([`open`]), an older `ostreecm` stream directly. (Here, not
    /// in `commitstream`, which knows nothing of the cache.)
    pub fn open(repo: &Repository, commit: &Checksum) -> Result<CommitStream> {
        open(repo, commit)
    }
}

/// Open stored commit `commit` for lookups.
pub fn open(repo: &Repository, commit: &Checksum) -> Result<CommitStream> {
    let id = stream_id(repo, commit)?;
    open_id(repo, commit, &id)
}

/// Open commit `commit` whose stream is object `id`, stored under no
/// entry (a remote commit read in place): the commit is found in the
/// stream (the cache of the stream, when there is one, names it), every
/// object checked as [`open`] checks it.
pub fn open_unnamed(repo: &Repository, id: &ObjectId) -> Result<(Checksum, CommitStream)> {
    let suffix = format!(".{id}");
    if let Ok(rd) = std::fs::read_dir(dir(repo)) {
        for e in rd.flatten() {
            let name = e.file_name();
            let commit = name
                .to_str()
                .and_then(|n| n.strip_suffix(&suffix))
                .and_then(|c| Checksum::from_hex(c).ok());
            if let Some(c) = commit {
                return Ok((c, open_id(repo, &c, id)?));
            }
        }
    }
    let reader = repo
        .open_stream_object(id)
        .with_context(|| format!("ostree commit stream {id}"))?;
    let (c, read) =
        shared::read_named(reader).with_context(|| format!("ostree commit stream {id}"))?;
    let s = match store(repo, &c, id, &read.objects) {
        Ok(s) => s,
        Err(_) => CommitStream::from_objects(&read.objects, c)
            .with_context(|| format!("ostree commit {c}"))?,
    };
    Ok((c, s))
}

/// Open commit `commit` whose stream is object `id`.
pub fn open_id(repo: &Repository, commit: &Checksum, id: &ObjectId) -> Result<CommitStream> {
    let id = *id;
    let p = path(repo, commit, &id);
    if let Ok(f) = File::open(&p) {
        match CommitStream::open_file(f, repo.algorithm(), *commit) {
            Ok(s) => return Ok(s),
            // Damaged: rebuilt below.
            Err(_) => drop(std::fs::remove_file(&p)),
        }
    }
    let reader = repo
        .open_stream_object(&id)
        .with_context(|| format!("stored ostree commit {commit}"))?;
    if reader.content_type == commitstream::CONTENT_TYPE {
        return CommitStream::open_legacy(repo, commit, &id);
    }
    let read = shared::read(reader, commit)?;
    match store(repo, commit, &id, &read.objects) {
        Ok(s) => Ok(s),
        Err(_) => CommitStream::from_objects(&read.objects, *commit)
            .with_context(|| format!("stored ostree commit {commit}")),
    }
}

/// Write the cache of `commit` (whose shared stream is object `stream`)
/// from its `objects`, drop stale ones, and open it.
pub fn store(
    repo: &Repository,
    commit: &Checksum,
    stream: &ObjectId,
    objects: &Objects,
) -> Result<CommitStream> {
    let obj = write(repo, commit, objects)?;
    place(repo, commit, stream, &obj)
}

/// Write the cache of `commit` from its `objects` as an object, not yet
/// placed (the shared stream it goes with may still be being written).
pub fn write(repo: &Repository, commit: &Checksum, objects: &Objects) -> Result<ObjectId> {
    let what = || format!("cache of stored ostree commit {commit}");
    repo.ensure_writable()?;
    let mut w = repo
        .stream_writer(commitstream::CONTENT_TYPE)?
        .framed(FrameCoding::Stored)?;
    commitstream::write(&mut w, objects).with_context(what)?;
    w.finish().with_context(what)
}

/// Make object `obj` (from [`write`]) the cache of `commit` whose shared
/// stream is object `stream`, drop stale ones, and open it.
pub fn place(
    repo: &Repository,
    commit: &Checksum,
    stream: &ObjectId,
    obj: &ObjectId,
) -> Result<CommitStream> {
    let what = || format!("cache of stored ostree commit {commit}");
    let d = dir(repo);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    let p = path(repo, commit, stream);
    // Out of objects/: nothing else refers to this object (it holds this
    // commit's index), and a gc must not find it there.
    if let Err(e) = std::fs::rename(repo.object_path(obj), &p)
        && !p.exists()
    {
        return Err(e).with_context(|| format!("cannot write {}", p.display()));
    }
    drop_stale(repo, commit, Some(stream));
    let f = File::open(&p).with_context(|| format!("cannot open {}", p.display()))?;
    CommitStream::open_file(f, repo.algorithm(), *commit).with_context(what)
}

/// The shared stream of `commit` was rewritten from `old` to `new` (same
/// objects, another image ref): carry the cache over.
pub fn moved(repo: &Repository, commit: &Checksum, old: &ObjectId, new: &ObjectId) {
    if old != new {
        let _ = std::fs::rename(path(repo, commit, old), path(repo, commit, new));
    }
}

/// Remove the caches of `commit` other than the one for `keep`.
fn drop_stale(repo: &Repository, commit: &Checksum, keep: Option<&ObjectId>) {
    let Ok(rd) = std::fs::read_dir(dir(repo)) else {
        return;
    };
    let prefix = format!("{commit}.");
    let keep = keep.map(|k| format!("{commit}.{k}"));
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && Some(name.as_ref()) != keep.as_deref() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// For `gc`: remove caches whose commit stream is gone or was replaced.
/// Returns how many were (or, on a dry run, would be) removed.
pub fn gc(repo: &Repository, dry_run: bool) -> Result<u64> {
    let d = dir(repo);
    let rd = match std::fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", d.display())),
    };
    let mut n = 0;
    for e in rd {
        let e = e.with_context(|| format!("cannot read {}", d.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let live = name.split_once('.').is_some_and(|(c, id)| {
            Checksum::from_hex(c)
                .ok()
                .and_then(|c| stream_id(repo, &c).ok())
                .is_some_and(|sid| sid.to_hex() == id)
        });
        if !live {
            n += 1;
            if !dry_run {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("cannot remove {}", e.path().display()))?;
            }
        }
    }
    Ok(n)
}
