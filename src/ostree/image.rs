//! Images of stored commits, as composefs-rs makes them: the tree of
//! [`super::tree::image_tree`] written in the repository's EROFS format
//! version, stored as `images/<id>` and recorded on the commit's shared
//! stream (named ref `composefs.image`: the stream is rewritten and
//! `streams/ostree-commit-<checksum>` re-pointed, so every ref to the
//! commit follows).
//!
//! Every image of a commit goes through [`write`], in the repository's
//! format version (0, 1 or 2: [`crate::erofs::versions`]).

use anyhow::{Context, Result};

use super::cache;
use super::checksum::Checksum;
use super::commitstream::{CommitStream, Objects, content_id};
use super::shared;
use crate::fsverity::ObjectId;
use crate::repository::Repository;

/// The image of the commit in `s`, written to a temporary file.
pub fn write(repo: &Repository, s: &CommitStream) -> Result<std::fs::File> {
    let tree = super::tree::image_tree(s)?;
    crate::erofs::image_tempfile(&tree, repo.erofs_version())
        .with_context(|| format!("image of commit {}", s.commit))
}

/// The image's object id (fs-verity digest), nothing stored.
pub fn compute_id(repo: &Repository, s: &CommitStream) -> Result<ObjectId> {
    let f = write(repo, s)?;
    let (id, _) =
        crate::fsverity::digest_file(repo.algorithm(), &f).context("cannot digest the image")?;
    Ok(id)
}

/// Store the image as `images/<id>` (and `images/refs/NAME`).
pub fn store(repo: &Repository, s: &CommitStream, name: Option<&str>) -> Result<ObjectId> {
    let f = write(repo, s)?;
    repo.commit_image(std::io::BufReader::new(f), name)
}

/// Write the shared stream of `commit` from `objects` naming `image`, link
/// `streams/ostree-commit-<commit>` to it and, if given, the stream ref;
/// returns its object id.
pub fn publish(
    repo: &Repository,
    commit: &Checksum,
    objects: &Objects,
    image: Option<ObjectId>,
    ref_name: Option<&str>,
) -> Result<ObjectId> {
    publish_with(repo, commit, objects, || Ok(image), ref_name)
}

/// [`publish`], with the image it names made by `image` on a thread of
/// its own while the stream's body is written (the image is a named ref,
/// recorded whenever it comes before the stream is finished).
fn publish_with(
    repo: &Repository,
    commit: &Checksum,
    objects: &Objects,
    image: impl FnOnce() -> Result<Option<ObjectId>> + Send,
    ref_name: Option<&str>,
) -> Result<ObjectId> {
    std::thread::scope(|scope| {
        let image = scope.spawn(image);
        let mut w = repo.stream_writer(shared::CONTENT_TYPE)?;
        shared::write(&mut w, commit, objects, None)?;
        let image = image
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("making the image panicked")))?;
        if let Some(id) = image {
            w.add_named_ref(shared::IMAGE_REF, id)?;
        }
        repo.commit_stream(w, &content_id(commit), ref_name)
            .with_context(|| format!("cannot store commit {commit}"))
    })
}

/// Store a pulled commit as cfsctl does: file content placed by its
/// threshold, the image made, then the stream naming it published (under
/// `ref_name`); then our lookup cache (which also keeps the detached
/// metadata) and the ostree index ([`super::index`]). Returns the stream's
/// object id.
///
/// The image, the stream's body and the cache are written at once; the
/// cache and the index are only placed once the ref is published (every
/// write before the ref ends before the `syncfs` that publishes it, and
/// the index never names a commit that is not stored).
pub fn store_pulled(
    repo: &Repository,
    commit: &Checksum,
    objects: &mut Objects,
    ref_name: Option<&str>,
) -> Result<ObjectId> {
    if let Some(name) = ref_name {
        crate::repository::validate_ref_name(name)?;
    }
    shared::normalize(repo, objects)?;
    let objects = &*objects;
    let (sid, cache_obj) = std::thread::scope(|scope| -> Result<_> {
        let cache_obj = scope.spawn(|| cache::write(repo, commit, objects));
        let image = || {
            let s = CommitStream::from_objects(objects, *commit)?;
            store(repo, &s, None).map(Some)
        };
        let sid = publish_with(repo, commit, objects, image, None)?;
        Ok((sid, cache_obj.join()))
    })?;
    if let Some(name) = ref_name {
        repo.sync()?;
        repo.set_ref(
            crate::repository::RefKind::Stream,
            name,
            &content_id(commit),
        )?;
    }
    // Best effort: rebuilt from the stream when missing.
    if let Ok(Ok(obj)) = cache_obj {
        let _ = cache::place(repo, commit, &sid, &obj);
    }
    super::index::add(repo, *commit, objects.keys().copied())
        .context("cannot update the ostree index")?;
    Ok(sid)
}

/// Make the image of stored `commit` and record it on its stream, as
/// `cfsctl` does when it pulls or images a commit. A stream that already
/// names an image keeps it. Older (`ostreecm`) streams are left as they
/// are: the image is stored, not recorded. Returns the image id.
pub fn ensure(repo: &Repository, commit: &Checksum, name: Option<&str>) -> Result<ObjectId> {
    let what = || format!("stored ostree commit {commit}");
    let sid = cache::stream_id(repo, commit)?;
    let reader = repo.open_stream_object(&sid).with_context(what)?;
    let s = CommitStream::open(repo, commit)?;
    if reader.content_type != shared::CONTENT_TYPE {
        return store(repo, &s, name);
    }
    let read = shared::read(reader, commit)?;
    let image = store(repo, &s, name)?;
    if read.image == Some(image) {
        return Ok(image);
    }
    let new = publish(repo, commit, &read.objects, Some(image), None)?;
    cache::moved(repo, commit, &sid, &new);
    Ok(image)
}

/// The image a stored commit's stream names, if any.
pub fn recorded(repo: &Repository, commit: &Checksum) -> Result<Option<ObjectId>> {
    let entry = content_id(commit);
    let (_, r) = repo
        .open_stream(&entry)
        .with_context(|| format!("stored ostree commit {commit}"))?;
    Ok(r.named_refs()
        .iter()
        .find(|(n, _)| n == shared::IMAGE_REF)
        .map(|(_, id)| *id))
}
