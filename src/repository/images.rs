//! Composefs images as repository citizens: `images/<hex>` entries and
//! `images/refs/<name>`. Only images this tool wrote are ever linked here,
//! and only images linked here are mounted with the kernel. The store takes
//! an image's bytes; writing one from a tree is [`crate::erofs::store_image`].

use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};

use super::{RefKind, Repository, refs::Resolved};
use crate::fsverity::ObjectId;

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

    /// Open a stored image by ref, hex digest, or `images/` entry.
    pub fn open_image(&self, name: &str) -> Result<(Resolved, File)> {
        let resolved = self.resolve(RefKind::Image, name)?;
        let f = self
            .open_object(&resolved.id)
            .with_context(|| format!("image {name:?}"))?;
        Ok((resolved, f))
    }
}
