//! The composefs image of a pulled OCI image, as composefs-rs 0.9.4 makes
//! it: the layers merged ([`super::merge`]), transformed
//! ([`super::transform`]) and written in the repository's EROFS format.
//! [`compute`] digests it without storing anything (`oci compute-id`);
//! [`commit`] stores it, links `images/<hex>`, and links it from the
//! config stream (`composefs.image.v1` / `composefs.image`), rewriting the
//! config and manifest streams, as composefs-rs does at pull time.
//!
//! Images are written in the repository's EROFS format
//! ([`Repository::erofs_version`]: 0, 1 or 2, composefs-rs's numbering) by
//! [`crate::erofs::versions`].

use anyhow::{Context, Result};

use super::store::{StoredImage, link_image};
use crate::fsverity::ObjectId;
use crate::repository::{RefKind, Repository};
use crate::tree::MemTree;

/// The tree a composefs image of `img` holds, and why it is not
/// transformed, if it is not: an image composefs-rs has no composefs image
/// of (no `/usr`, a `/run` that is not a directory) gives its layers
/// merged untransformed (as its `oci/NAME` view shows it).
pub fn image_tree(repo: &Repository, img: &StoredImage) -> Result<(MemTree, Option<String>)> {
    transformed(img, img.tree(repo)?)
}

/// [`image_tree`] of the merged tree of `img`'s layers.
pub fn transformed(img: &StoredImage, merged: MemTree) -> Result<(MemTree, Option<String>)> {
    match super::transform::transform(&merged) {
        Ok(t) => Ok((t, None)),
        Err(e) if super::transform::is_untransformable(&e) => Ok((
            merged,
            Some(format!(
                "OCI image {}: {e:#}; the image holds the layers untransformed and is not linked from the config",
                img.manifest_digest
            )),
        )),
        Err(e) => Err(e.context(format!("OCI image {}", img.manifest_digest))),
    }
}

/// Write `tree` in EROFS format `version` into a temporary file, rewound.
fn image_file(tree: &MemTree, version: u32) -> Result<std::fs::File> {
    crate::erofs::image_tempfile(tree, version)
}

/// The image's fs-verity digest (its object id), nothing stored; and why
/// it is untransformed, if it is.
pub fn compute(
    repo: &Repository,
    img: &StoredImage,
    version: u32,
) -> Result<(ObjectId, Option<String>)> {
    let (tree, why) = image_tree(repo, img)?;
    let f = image_file(&tree, version)?;
    let (id, _) =
        crate::fsverity::digest_file(repo.algorithm(), &f).context("cannot digest the image")?;
    Ok((id, why))
}

/// What [`commit`] did.
pub struct Committed {
    pub id: ObjectId,
    /// The image as read back after relinking.
    pub image: StoredImage,
    /// Why the image is untransformed (and unlinked), if it is.
    pub untransformed: Option<String>,
}

/// Store the image, link `images/<hex>` (and `images/refs/NAME` if
/// asked), and link it from the config (when it is transformed, in the
/// repository's own format, and that format has a key).
pub fn commit(repo: &Repository, img: &StoredImage, image_name: Option<&str>) -> Result<Committed> {
    let (tree, why) = image_tree(repo, img)?;
    commit_tree(repo, img, &tree, why, image_name)
}

/// [`commit`] of a tree [`image_tree`] gave.
pub fn commit_tree(
    repo: &Repository,
    img: &StoredImage,
    tree: &MemTree,
    untransformed: Option<String>,
    image_name: Option<&str>,
) -> Result<Committed> {
    let version = repo.erofs_version();
    let f = image_file(tree, version)?;
    let (id, _) = repo
        .store_reader(std::io::BufReader::new(f))
        .context("cannot store the image")?;
    repo.sync()?;
    repo.link_entry(RefKind::Image, &id.to_hex(), &id)?;
    let image = if untransformed.is_none()
        && super::store::image_key(version).is_some()
        && (img.image(version) != Some(id) || img.legacy)
    {
        link_image(repo, img, version, id)?
    } else {
        img.clone()
    };
    if let Some(n) = image_name {
        repo.set_ref(RefKind::Image, n, &id.to_hex())?;
    }
    Ok(Committed {
        id,
        image,
        untransformed,
    })
}
