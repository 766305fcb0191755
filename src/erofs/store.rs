//! A tree written as an image into a repository: the one call for anything
//! that turns a tree into a stored image. The repository itself only takes
//! an image's bytes ([`Repository::commit_image`]); the EROFS writer lives
//! here, above it.

use std::io::Seek;

use anyhow::{Context, Result};

use crate::fsverity::ObjectId;
use crate::repository::{Repository, validate_ref_name};
use crate::tree::Tree;

/// Write `tree` as an image in EROFS format `version` (0, 1 or 2; a
/// repository's own is [`Repository::erofs_version`], as composefs-rs's
/// `commit_image` writes), store it in `repo` and link `images/<hex>`
/// (and `images/refs/NAME` if named).
pub fn store_image(
    repo: &Repository,
    tree: &dyn Tree,
    version: u32,
    ref_name: Option<&str>,
) -> Result<ObjectId> {
    repo.ensure_writable()?;
    if let Some(name) = ref_name {
        validate_ref_name(name)?;
    }
    // A temporary file, not memory: an image takes ~50 bytes an inode.
    let mut f = tempfile::tempfile().context("cannot create a temporary file")?;
    super::write_image_version(tree, version, &mut f)?;
    f.rewind().context("cannot read the image back")?;
    repo.commit_image(std::io::BufReader::new(f), ref_name)
}
