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
//! ([`super::Lock::Exclusive`]), so no import can be half-way through.
//!
//! A root that cannot be read aborts the collection before anything is
//! deleted: its objects cannot be enumerated, so deleting would lose data.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};

use super::{RefKind, Repository};
use crate::fsverity::ObjectId;

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
    let objects = repo.path().join("objects");
    for fan in 0..=255u8 {
        let dir = objects.join(format!("{fan:02x}"));
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for ent in rd {
            let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(id) = ObjectId::from_hex(repo.algorithm(), &format!("{fan:02x}{name}")) else {
                continue; // not an object name: leave it for fsck to report
            };
            if marked.contains(&id) {
                report.objects_kept += 1;
                continue;
            }
            let size = ent.metadata().map(|m| m.size()).unwrap_or(0);
            if !dry_run {
                std::fs::remove_file(ent.path())
                    .with_context(|| format!("cannot remove object {}", ent.path().display()))?;
            }
            report.objects_removed += 1;
            report.bytes_freed += size;
        }
    }
    // We hold the exclusive lock: every temporary file is a crash leftover:
    // named objects, half-made entries and refs (`.tmp-NAME.PID` symlinks,
    // see `fsutil::replace_symlink`), the ostree index's temporary copies.
    if !dry_run {
        let root = repo.path();
        remove_stale_tmp(&objects, super::objects::TMP_PREFIX, false)?;
        for kind in [RefKind::Stream, RefKind::Image] {
            remove_stale_tmp(&root.join(kind.dir()), ".tmp-", false)?;
            remove_stale_tmp(&root.join(kind.dir()).join("refs"), ".tmp-", true)?;
        }
        remove_stale_tmp(&root.join("ostree"), ".tmp", false)?;
    }
    Ok(report)
}

/// Remove every non-directory named `prefix…` in `dir` (and, with
/// `recurse`, below it).
fn remove_stale_tmp(dir: &std::path::Path, prefix: &str, recurse: bool) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for ent in rd {
        let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
        let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            if recurse {
                remove_stale_tmp(&ent.path(), prefix, true)?;
            }
            continue;
        }
        if ent.file_name().to_string_lossy().starts_with(prefix) {
            std::fs::remove_file(ent.path()).with_context(|| {
                format!(
                    "cannot remove stale temporary file {}",
                    ent.path().display()
                )
            })?;
        }
    }
    Ok(())
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
