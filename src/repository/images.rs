//! Composefs images as repository citizens: `images/<hex>` entries and
//! `images/refs/<name>`. Only images this tool wrote are ever linked here,
//! and only images linked here are mounted with the kernel.

use std::fs::File;
use std::io::{Read, Seek};

use anyhow::{Context, Result};

use super::{RefKind, Repository, refs::Resolved};
use crate::fsverity::ObjectId;
use crate::tree::Tree;

impl Repository {
    /// Store an image from `r` as an object, link `images/<hex>` and, if
    /// given, `images/refs/<name>` (after syncing everything it needs).
    pub fn commit_image(&self, r: impl Read, ref_name: Option<&str>) -> Result<ObjectId> {
        if let Some(name) = ref_name {
            super::validate_ref_name(name)?;
        }
        let (id, _) = self.store_reader(r).context("cannot store image")?;
        let entry = id.to_hex();
        self.link_entry(RefKind::Image, &entry, &id)?;
        if let Some(name) = ref_name {
            self.sync()?;
            self.set_ref(RefKind::Image, name, &entry)?;
        }
        Ok(id)
    }

    /// Write `tree` as an image in this repository's EROFS format
    /// ([`Repository::erofs_version`], as composefs-rs's `commit_image`),
    /// store it and link `images/<hex>` (and `images/refs/NAME` if named).
    /// The one call for anything that turns a tree into a stored image.
    pub fn write_tree_image(&self, tree: &dyn Tree, ref_name: Option<&str>) -> Result<ObjectId> {
        self.write_tree_image_version(tree, self.erofs_version(), ref_name)
    }

    /// [`Self::write_tree_image`] in an explicit format version (0, 1 or 2).
    pub fn write_tree_image_version(
        &self,
        tree: &dyn Tree,
        version: u32,
        ref_name: Option<&str>,
    ) -> Result<ObjectId> {
        self.ensure_writable()?;
        if let Some(name) = ref_name {
            super::validate_ref_name(name)?;
        }
        // A temporary file, not memory: an image takes ~50 bytes an inode.
        let mut f = tempfile::tempfile().context("cannot create a temporary file")?;
        crate::erofs::write_image_version(tree, version, &mut f)?;
        f.rewind().context("cannot read the image back")?;
        self.commit_image(std::io::BufReader::new(f), ref_name)
    }

    /// Open a stored image by ref, hex digest, or `images/` entry.
    pub fn open_image(&self, name: &str) -> Result<(Resolved, File)> {
        let resolved = self.resolve(RefKind::Image, name)?;
        let f = self
            .open_object(&resolved.id)
            .with_context(|| format!("image {name:?}"))?;
        Ok((resolved, f))
    }
}
