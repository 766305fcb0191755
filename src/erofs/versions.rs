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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erofs::ErofsImage;

    /// Every version reads back (with our reader) as the tree it was
    /// written from; version 2 drops sub-second mtimes.
    #[test]
    fn every_version_round_trips_through_the_reader() {
        let hex = "ab".repeat(32);
        let dump = format!(
            "/ 4096 40755 2 0 0 0 1000.5 - - -\n\
             /a 0 40700 2 7 8 0 1001.0 - - - user.x=1 trusted.overlay.y=2\n\
             /a/big 100 100644 2 0 0 0 1002.0 {}/{} - {hex} user.x=1\n\
             /a/link 3 120777 1 0 0 0 1003.0 big - -\n\
             /dev 0 20600 1 0 0 259 1004.0 - - -\n\
             /fifo 0 10644 1 0 0 0 1005.0 - - -\n\
             /hl 100 @100644 - - - - 0.0 /a/big - -\n\
             /small 5 100644 1 0 0 0 -5.25 - hello -\n",
            &hex[..2],
            &hex[2..]
        );
        let tree = crate::dumpfile::parse(dump.as_bytes()).unwrap();
        for v in VERSIONS {
            let mut f = tempfile::tempfile().unwrap();
            write_image_version(&tree, v, &mut f).unwrap();
            let back = ErofsImage::from_file(f).unwrap();
            let mut a = Vec::new();
            let mut b = Vec::new();
            crate::dumpfile::write(&tree, &mut a).unwrap();
            crate::dumpfile::write(&back, &mut b).unwrap();
            let (a, b) = (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
            let strip = |s: &str| -> Vec<String> {
                s.lines()
                    .map(|l| {
                        // Directory sizes depend on the format; v2 keeps no nanoseconds.
                        let mut f: Vec<&str> = l.split(' ').collect();
                        if f.len() > 7 && f[2].starts_with("4") {
                            f[1] = "-";
                        }
                        if v == 2 && f.len() > 7 {
                            let t = f[7].split('.').next().unwrap().to_string();
                            return [&f[..7], &[t.as_str()], &f[8..]].concat().join(" ");
                        }
                        f.join(" ")
                    })
                    .collect()
            };
            assert_eq!(strip(&a), strip(&b), "version {v}");
        }
    }
}
