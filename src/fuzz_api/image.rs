//! The `erofs` and `dumpfile` targets: a composefs EROFS image and a
//! dumpfile, as the tool reads them.

use std::io;

use anyhow::Result;

use super::walk::walk_tree;
use crate::dumpfile;
use crate::erofs::reader::ErofsImage;
use crate::erofs::writer::{FormatVersion, image_to_vec};

/// A composefs EROFS image, as `mount`, `ls`, `dump` and `gc` read one:
/// opened, walked through the [`Tree`](crate::tree::Tree) interface
/// (bounded: every name takes at least 12 bytes of the image, and each
/// directory can be listed once per walk), checked, its object references
/// collected, dumped, and rewritten. Returns the number of names the walk saw.
pub fn erofs(data: &[u8]) -> Result<u64> {
    let limit = data.len() as u64 / 12 + 16;
    let image = ErofsImage::new(data.to_vec())?;
    let names = walk_tree(&image, limit);
    let _ = image.check();
    let _ = image.referenced_objects();
    let _ = image.walk(|img, raw| {
        let _ = img.raw_xattrs(raw);
        if raw.is_dir() {
            let _ = img.raw_dirents(raw);
        }
        Ok(())
    });
    let _ = dumpfile::write(&image, &mut io::sink());
    let _ = image_to_vec(&image, FormatVersion::V0);
    names
}

/// A dumpfile, as `mkcomposefs` and `create-image --from-dump` read one:
/// parsed into a tree; when that succeeds, written back as a dumpfile
/// (which must parse again and write the same text: the canonical form is
/// a fixed point) and as EROFS images of both format versions (which, when
/// the writer accepts the tree, must open and pass [`ErofsImage::check`]).
pub fn dumpfile(data: &[u8]) -> Result<()> {
    let tree = dumpfile::parse(data)?;
    let _ = walk_tree(&tree, u64::MAX);
    let mut once = Vec::new();
    dumpfile::write(&tree, &mut once).expect("a parsed dumpfile must write");
    let again = dumpfile::parse(&once).unwrap_or_else(|e| {
        panic!(
            "our own dumpfile does not parse: {e:#}\n{}",
            String::from_utf8_lossy(&once)
        )
    });
    let mut twice = Vec::new();
    dumpfile::write(&again, &mut twice).expect("a parsed dumpfile must write");
    assert!(
        once == twice,
        "dumpfile canonical form is not a fixed point:\n{}\n---\n{}",
        String::from_utf8_lossy(&once),
        String::from_utf8_lossy(&twice)
    );
    for v in [FormatVersion::V0, FormatVersion::V1] {
        if let Ok(img) = image_to_vec(&tree, v) {
            let image = ErofsImage::new(img)
                .unwrap_or_else(|e| panic!("an image we wrote ({v:?}) does not open: {e:#}"));
            image
                .check()
                .unwrap_or_else(|e| panic!("an image we wrote ({v:?}) fails its check: {e:#}"));
        }
    }
    Ok(())
}
