//! composefs-rs's legacy EROFS format (version 2).
use std::io::Write;

use anyhow::{Result, bail};

use crate::tree::Tree;

/// Write `tree` as a version-2 image; returns its size.
pub fn write_image(_tree: &dyn Tree, _out: &mut impl Write) -> Result<u64> {
    bail!("EROFS format version 2 is not written yet")
}
