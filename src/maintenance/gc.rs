//! Garbage collection: delete what no ref reaches.
//!
//! Roots are the refs under `streams/refs/` and `images/refs/` (as in
//! composefs-rs, `streams/` and `images/` entries without a ref are not
//! roots). A reachable stream marks its object refs and, recursively,
//! what its named refs point at: another stream, or (composefs-rs's
//! `composefs.image` refs on OCI configs and ostree commits) an EROFS
//! image; a reachable image marks every object its files redirect to
//! (composefs-rs keeps only the image object itself and relies on the
//! layers; keeping the redirects too is the more conservative rule). Then every
//! `streams/` or `images/` entry whose object is unmarked (or gone) is
//! removed, and after that every unmarked object, so that a collection
//! cut short never leaves an entry naming a missing object. The caller
//! must hold the exclusive lock
//! ([`crate::repository::Lock::Exclusive`]), so no import can be half-way through.
//!
//! A root that cannot be read aborts the collection before anything is
//! deleted: its objects cannot be enumerated, so deleting would lose data.

use std::collections::HashSet;

use anyhow::{Context, Result};

use crate::fsverity::ObjectId;
use crate::repository::{RefKind, Repository, remove_stale_files};

/// What a collection removed (or, on a dry run, would remove).
#[derive(Debug, Default)]
pub struct GcReport {
    pub dry_run: bool,
    pub objects_kept: u64,
    pub objects_removed: u64,
    pub bytes_freed: u64,
    pub streams_removed: Vec<String>,
    pub images_removed: Vec<String>,
}

/// Every object reachable from a ref.
pub fn reachable(repo: &Repository) -> Result<HashSet<ObjectId>> {
    let mut marked = HashSet::new();
    let mut queue: Vec<(String, ObjectId)> = Vec::new();
    for (name, entry) in repo.list_refs(RefKind::Stream)? {
        let id = repo
            .entry_object(RefKind::Stream, &entry)
            .with_context(|| {
                format!("stream ref {name:?} is broken; run `composefs fsck` (nothing was deleted)")
            })?;
        queue.push((format!("ref {name:?}"), id));
    }
    let mut images: Vec<(String, ObjectId)> = Vec::new();
    while let Some((via, id)) = queue.pop() {
        if marked.contains(&id) {
            continue;
        }
        let what = object_kind(repo, &id)
            .with_context(|| {
                format!("cannot read object {id} (reached from {via}); run `composefs fsck` (nothing was deleted)")
            })?
            .with_context(|| {
                format!("object {id} (reached from {via}) is missing; run `composefs fsck` (nothing was deleted)")
            })?;
        if what == ObjectKind::Image {
            images.push((via, id));
            continue;
        }
        marked.insert(id);
        let stream = repo.open_stream_object(&id).map_err(|e| {
            let how = unreadable_stream(&e);
            e.context(format!(
                "stream {id} (reached from {via}) {how}; run `composefs fsck` (nothing was deleted)"
            ))
        })?;
        marked.extend(stream.object_refs().iter().copied());
        for s in stream.stream_refs() {
            queue.push((format!("stream {id}"), *s));
        }
    }
    for (name, entry) in repo.list_refs(RefKind::Image)? {
        let id = repo.entry_object(RefKind::Image, &entry).with_context(|| {
            format!("image ref {name:?} is broken; run `composefs fsck` (nothing was deleted)")
        })?;
        images.push((format!("image ref {name:?}"), id));
    }
    for (via, id) in images {
        if !marked.insert(id) {
            continue;
        }
        let image = repo
            .open_object(&id)
            .and_then(|f| {
                let image = crate::erofs::reader::ErofsImage::from_file(f)?;
                Ok(image.referenced_objects()?)
            })
            .with_context(|| {
                format!(
                    "cannot read image {id} ({via}); run `composefs fsck` (nothing was deleted)"
                )
            })?;
        marked.extend(
            image
                .into_iter()
                .filter(|o| o.algorithm() == repo.algorithm()),
        );
    }
    Ok(marked)
}

/// What a stream's named ref may point at.
#[derive(Debug, PartialEq, Eq)]
enum ObjectKind {
    /// A splitstream (or anything else: read as one, so that an
    /// unreadable one stops the collection).
    Stream,
    /// A composefs EROFS image (starts with the composefs header magic).
    Image,
}

/// Why a stream could not be opened, in words: the splitstream error
/// in `e` tells a damaged stream from one in a format this tool does not
/// read, and both from a failure to read it at all.
fn unreadable_stream(e: &anyhow::Error) -> &'static str {
    use crate::splitstream::Error;
    match Error::find(e) {
        Some(s) if s.is_damaged() => "is damaged",
        Some(Error::Unsupported(_) | Error::UnsupportedVersion { .. }) => {
            "is in a format this tool does not read"
        }
        _ => "cannot be read",
    }
}

/// Tell an image object from a stream by its first bytes; `None` when
/// the object is not there.
fn object_kind(repo: &Repository, id: &ObjectId) -> Result<Option<ObjectKind>> {
    let Some(mut f) = repo.try_open_object(id)? else {
        return Ok(None);
    };
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match std::io::Read::read(&mut f, &mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read"),
        }
    }
    Ok(Some(
        if got == 4 && u32::from_le_bytes(head) == crate::erofs::format::COMPOSEFS_MAGIC {
            ObjectKind::Image
        } else {
            ObjectKind::Stream
        },
    ))
}

/// Collect garbage. With `dry_run`, only report.
pub fn gc(repo: &Repository, dry_run: bool) -> Result<GcReport> {
    repo.ensure_writable()?;
    let marked = reachable(repo)?;
    let mut report = GcReport {
        dry_run,
        ..Default::default()
    };
    // Entries go before their objects: a collection cut short (kill -9,
    // power loss) then leaves unreferenced objects, never an entry naming
    // a missing object (which fsck reports and a pull would trust).
    for kind in [RefKind::Stream, RefKind::Image] {
        for (entry, id) in repo.list_entries(kind)? {
            let keep = matches!(&id, Ok(id) if marked.contains(id));
            if keep {
                continue;
            }
            if !dry_run {
                repo.remove_entry(kind, &entry)?;
            }
            match kind {
                RefKind::Stream => report.streams_removed.push(entry),
                RefKind::Image => report.images_removed.push(entry),
            }
        }
    }
    crate::ostree::cache::gc(repo, dry_run)?;
    let sweep = repo.remove_objects_except(&marked, dry_run)?;
    report.objects_kept = sweep.kept;
    report.objects_removed = sweep.removed;
    report.bytes_freed = sweep.bytes_freed;
    // We hold the exclusive lock: every temporary file is a crash leftover:
    // the store's (objects, entries, refs), then the ostree index's
    // temporary copies.
    if !dry_run {
        repo.remove_stale_temporaries()?;
        remove_stale_files(&repo.path().join("ostree"), ".tmp", false)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsverity::Algorithm;
    use crate::repository::InitOptions;
    use crate::splitstream::content_type;

    /// A repository whose ref `a` names a stream; the stream's object.
    fn repo_with_a_stream() -> (tempfile::TempDir, Repository, ObjectId) {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            insecure: true,
            ..InitOptions::new(Algorithm::Sha256)
        };
        let repo = Repository::init_with(&tmp.path().join("r"), &opts).unwrap();
        let mut w = repo.stream_writer(content_type::OCI_BLOB).unwrap();
        w.write_inline(b"some bytes").unwrap();
        let id = repo.commit_stream(w, "blob", Some("a")).unwrap();
        (tmp, repo, id)
    }

    fn reachable_error(repo: &Repository) -> String {
        format!("{:#}", reachable(repo).unwrap_err())
    }

    #[test]
    fn a_missing_stream_and_a_damaged_one_are_told_apart() {
        let (_tmp, repo, id) = repo_with_a_stream();
        assert!(reachable(&repo).unwrap().contains(&id));
        let path = repo.object_path(&id);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(40).unwrap();
        let e = reachable_error(&repo);
        assert!(
            e.contains(&format!("stream {id} (reached from ref \"a\") is damaged")),
            "{e}"
        );
        assert!(e.contains("nothing was deleted"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = reachable_error(&repo);
        assert!(
            e.contains(&format!("object {id} (reached from ref \"a\") is missing")),
            "{e}"
        );
    }

    #[test]
    fn a_stream_of_another_version_is_not_called_damaged() {
        let (_tmp, repo, id) = repo_with_a_stream();
        let path = repo.object_path(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[11] = 1; // the splitstream format version
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let e = reachable_error(&repo);
        assert!(e.contains("is in a format this tool does not read"), "{e}");
        assert!(e.contains("unsupported splitstream version 1"), "{e}");
    }
}
