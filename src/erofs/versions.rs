//! One entry point for the three EROFS format versions composefs-rs
//! numbers (`cfsctl --erofs-version`, `meta.json` `erofs_formats`):
//! 0 and 1 are C `mkcomposefs --max-version=0` and `--min-version=1`
//! ([`super::writer`]; 0 is C's default output unless the tree has whiteouts;
//! both differ from C for mtimes before 1970, see
//! [`super::writer::write_image_composefs_rs`]),
//! 2 is composefs-rs's legacy format ([`super::writer_v2`]).

use std::io::Write;

use anyhow::{Result, bail};

use super::writer::{FormatVersion, WriteOptions, write_image_composefs_rs};
use crate::tree::Tree;

/// The versions there are.
pub const VERSIONS: [u32; 3] = [0, 1, 2];

/// Write `tree` as an image of composefs-rs format `version` (0, 1 or 2);
/// returns its size.
pub fn write_image_version(tree: &dyn Tree, version: u32, out: &mut impl Write) -> Result<u64> {
    match version {
        // composefs-rs's 0 never upgrades to 1 for whiteouts (C would,
        // with its default --max-version=1): C `--max-version=0`.
        0 => Ok(write_image_composefs_rs(
            tree,
            &WriteOptions {
                min_version: FormatVersion::V0,
                max_version: FormatVersion::V0,
            },
            out,
        )?
        .size),
        1 => Ok(
            write_image_composefs_rs(tree, &WriteOptions::version(FormatVersion::V1), out)?.size,
        ),
        2 => super::writer_v2::write_image(tree, out),
        n => bail!("unsupported EROFS format version {n} (0, 1 or 2)"),
    }
}

/// [`write_image_version`] into memory.
pub fn image_version_to_vec(tree: &dyn Tree, version: u32) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    write_image_version(tree, version, &mut v)?;
    Ok(v)
}
