//! What can be looked at: a name resolved to a [`Tree`] (a stored ostree
//! commit, a composefs image, a pulled OCI image; or a remote tree read in
//! place, [`remote`]), and the whole repository as one live tree
//! ([`RepoView`]). The FUSE view, `ls` and `cat` read trees only through
//! here, so a new kind of stored tree (OCI images) is added in one place.

pub mod remote;
pub mod remotes;
pub mod repo;

use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::erofs::reader::ErofsImage;
use crate::fsverity::ObjectId;
use crate::ostree::checksum::Checksum;
use crate::ostree::committree::CommitTree;
use crate::ostree::resolve::stored_commit;
use crate::repository::Repository;
use crate::repository::refs::RefKind;
use crate::tree::Tree;

pub use repo::RepoView;

/// A stored tree, by what names its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An ostree commit (its stream `ostree-commit-<checksum>`).
    Commit(Checksum),
    /// A composefs image (`images/<digest>`).
    Image(ObjectId),
    /// A pulled OCI image, by its manifest stream: what its composefs image
    /// holds (the layers merged, with composefs-rs's OCI transform; see
    /// [`crate::oci::transform`]). An image that has no composefs image
    /// (no `/usr` directory, a `/run` that is not one) is shown untransformed.
    Oci(ObjectId),
    /// A pulled OCI image, its layers merged as they are (what `umoci
    /// unpack` gives): spelled `oci-raw/NAME`.
    OciRaw(ObjectId),
}

impl Source {
    /// Load the tree, lazily: nothing proportional to its size is read.
    pub fn load(&self, r: &Repository) -> Result<Arc<dyn Tree>> {
        match self {
            Source::Commit(c) => Ok(Arc::new(
                CommitTree::open(r, c).with_context(|| format!("ostree commit {c}"))?,
            )),
            Source::Oci(id) | Source::OciRaw(id) => {
                let img = crate::oci::store::StoredImage::from_stream(r, id)
                    .with_context(|| format!("OCI image {id}"))?;
                let merged = img
                    .tree(r)
                    .with_context(|| format!("OCI image {}", img.manifest_digest))?;
                if matches!(self, Source::OciRaw(_)) {
                    return Ok(Arc::new(merged));
                }
                match crate::oci::transform::transform(&merged) {
                    Ok(t) => Ok(Arc::new(t)),
                    Err(e) if crate::oci::transform::is_untransformable(&e) => Ok(Arc::new(merged)),
                    Err(e) => Err(e.context(format!("OCI image {}", img.manifest_digest))),
                }
            }
            Source::Image(id) => {
                let f = r.open_object(id).with_context(|| format!("image {id}"))?;
                Ok(Arc::new(
                    ErofsImage::from_file(f).with_context(|| format!("image {id}"))?,
                ))
            }
        }
    }
}

/// What a user's name means. The spellings of the whole-repository view
/// name one kind: `ostree/NAME` (an ostree ref), `images/NAME` (an image
/// ref), `oci/NAME` (a pulled OCI image, as its composefs image holds it),
/// `oci-raw/NAME` (its layers merged untransformed), `commits/CHECKSUM`. A bare name
/// is a stored ostree commit (ref name, checksum or unique prefix), an
/// image (ref or digest) or a pulled OCI image; a name that is more than
/// one is refused as ambiguous.
pub fn resolve(r: &Repository, name: &str) -> Result<Source> {
    if let Some(n) = name.strip_prefix("ostree/") {
        return Ok(Source::Commit(stored_commit(r, n)?));
    }
    if let Some(n) = name.strip_prefix("oci/") {
        return Ok(Source::Oci(crate::oci::store::manifest_stream(r, n)?));
    }
    if let Some(n) = name.strip_prefix("oci-raw/") {
        return Ok(Source::OciRaw(crate::oci::store::manifest_stream(r, n)?));
    }
    if let Some(n) = name.strip_prefix("commits/") {
        let c = Checksum::from_hex(n).with_context(|| format!("{name:?}: not a full checksum"))?;
        return Ok(Source::Commit(stored_commit(r, &c.to_hex())?));
    }
    if let Some(n) = name.strip_prefix("images/")
        && let Ok(res) = r.resolve(RefKind::Image, n)
    {
        return Ok(Source::Image(res.id));
    }
    if let Ok(id) = crate::oci::store::manifest_stream(r, name) {
        if stored_commit(r, name).is_ok() || r.resolve(RefKind::Image, name).is_ok() {
            bail!(
                "{name:?} names an OCI image and something else: say oci/{name}, ostree/{name} or images/{name}"
            );
        }
        return Ok(Source::Oci(id));
    }
    let commit = stored_commit(r, name);
    let image = r.resolve(RefKind::Image, name);
    match (commit, image) {
        (Ok(c), Ok(_)) => bail!(
            "{name:?} names both an ostree commit ({c}) and an image: say ostree/{name} or images/{name}"
        ),
        (Ok(c), Err(_)) => Ok(Source::Commit(c)),
        (Err(_), Ok(res)) => Ok(Source::Image(res.id)),
        (Err(ostree_err), Err(image_err)) => bail!(
            "{name:?} names neither an image nor a stored ostree commit: {image_err:#}; {ostree_err:#}"
        ),
    }
}

/// The tree a name means (see [`resolve`]).
pub fn open_tree(r: &Repository, name: &str) -> Result<Arc<dyn Tree>> {
    let source = resolve(r, name)?;
    source.load(r).with_context(|| format!("{name:?}"))
}

/// The tree any name means: a remote one ([`remote`]: `URL#REF`,
/// `docker://…`, opened with `opts`, its contents fetched into `r` when
/// read) or a stored one ([`open_tree`]).
pub fn open_any(r: &Repository, name: &str, opts: &remote::OpenOptions) -> Result<Arc<dyn Tree>> {
    match remote::RemoteName::parse(name)? {
        Some(n) => Ok(remote::open(r, &n, opts)?.tree),
        None => open_tree(r, name),
    }
}
