//! A tree written as an image into a repository (or a temporary file):
//! the one place that turns a tree into an image file. The repository itself only takes
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
    let f = image_tempfile(tree, version)?;
    repo.commit_image(std::io::BufReader::new(f), ref_name)
}

/// Write `tree` as an image in EROFS format `version` into an unnamed
/// temporary file, rewound to be read (or digested, or mounted). A file,
/// not memory: an image takes about 50 bytes an inode.
pub fn image_tempfile(tree: &dyn Tree, version: u32) -> Result<std::fs::File> {
    let mut f = tempfile::tempfile().context("cannot create a temporary file")?;
    {
        let mut w = std::io::BufWriter::new(&mut f);
        super::write_image_version(tree, version, &mut w)?;
        std::io::Write::flush(&mut w).context("cannot write the image")?;
    }
    f.rewind().context("cannot read the image back")?;
    Ok(f)
}
