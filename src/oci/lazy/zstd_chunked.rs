//! zstd:chunked (containers/storage): a zstd-compressed tar whose every
//! file's content starts a new zstd frame, followed by skippable frames
//! holding the table of contents (zstd-compressed JSON), in newer
//! writers the tar-split, and a footer.
//!
//! The manifest's layer annotations say where the table is and what it
//! digests to:
//! - `…zstd-chunked.manifest-checksum`: `sha256:…` of the table's
//!   *compressed* bytes (the payload of its skippable frame);
//! - `…zstd-chunked.manifest-position`: `OFFSET:LENGTH:UNCOMPRESSED:TYPE`
//!   (TYPE 1: the CRFS-style JSON).
//!
//! The prefix is `io.github.containers.` since containers/storage 1.44
//! (November 2022) and `io.containers.` before (Debian 12's skopeo 1.9
//! writes that one); both are read. Without a position annotation the
//! footer (the blob's last bytes, inside a skippable frame) says it:
//! little-endian u64s OFFSET, LENGTH, UNCOMPRESSED, TYPE, then (the newer
//! 64-byte footer) the tar-split's three, then the magic `GNUlInUx`; the
//! older 40-byte footer ends after TYPE with `GnUlInUx`. The checksum
//! annotation is required either way: it is what the table is trusted by.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

use super::{MAX_TOC, fetch_range};
use crate::oci::registry::Registry;
use crate::oci::spec::Descriptor;

const PREFIXES: [&str; 2] = ["io.github.containers.", "io.containers."];
const CHECKSUM: &str = "zstd-chunked.manifest-checksum";
const POSITION: &str = "zstd-chunked.manifest-position";
const MAGIC_NEW: &[u8; 8] = b"GNUlInUx";
const MAGIC_OLD: &[u8; 8] = b"GnUlInUx";
/// The skippable frame's header: magic and length.
const FRAME_HEADER: u64 = 8;

/// The checksum annotation, if the layer has one (under either prefix),
/// and the prefix it was found under.
pub(super) fn checksum(a: &BTreeMap<String, String>) -> Option<(&'static str, &str)> {
    PREFIXES
        .iter()
        .find_map(|p| a.get(&format!("{p}{CHECKSUM}")).map(|v| (*p, v.as_str())))
}

/// Where the table is: offset and length of its compressed bytes, and
/// their decompressed length.
#[derive(Debug, PartialEq, Eq)]
struct Position {
    offset: u64,
    length: u64,
    uncompressed: u64,
}

fn parse_position(s: &str) -> Result<Position> {
    let parts: Vec<&str> = s.split(':').collect();
    let [o, l, u, t] = parts.as_slice() else {
        bail!("manifest-position {s:?} is not OFFSET:LENGTH:UNCOMPRESSED:TYPE");
    };
    let n = |v: &str| -> Result<u64> {
        v.parse()
            .with_context(|| format!("manifest-position {s:?}: {v:?} is not a number"))
    };
    let pos = Position {
        offset: n(o)?,
        length: n(l)?,
        uncompressed: n(u)?,
    };
    if n(t)? != 1 {
        bail!("manifest-position {s:?}: table type {t} (only 1 is known)");
    }
    Ok(pos)
}

/// The footer at the end of `tail` (the blob's last bytes).
fn parse_footer(tail: &[u8]) -> Result<Position> {
    let u = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let footer = if tail.len() >= 64 && tail.ends_with(MAGIC_NEW) {
        &tail[tail.len() - 64..]
    } else if tail.len() >= 40 && tail.ends_with(MAGIC_OLD) {
        &tail[tail.len() - 40..]
    } else {
        bail!("no zstd:chunked footer at the end of the blob");
    };
    if u(footer, 3) != 1 {
        bail!(
            "zstd:chunked footer: table type {} (only 1 is known)",
            u(footer, 3)
        );
    }
    Ok(Position {
        offset: u(footer, 0),
        length: u(footer, 1),
        uncompressed: u(footer, 2),
    })
}

/// The layer's table (JSON), verified against the checksum annotation,
/// and the offset where file data ends (the table's skippable frame).
pub(super) fn read_toc(
    reg: &Registry,
    layer: &Descriptor,
    prefix: &str,
    checksum: &str,
) -> Result<(Vec<u8>, u64)> {
    let want = super::toc::parse_sha256(checksum).context("the manifest-checksum annotation")?;
    let annotations = layer.annotations.as_ref();
    let pos = match annotations.and_then(|a| a.get(&format!("{prefix}{POSITION}"))) {
        Some(p) => parse_position(p)?,
        None => {
            let n = layer.size.min(64);
            let tail = fetch_range(reg, layer, layer.size - n..layer.size, "footer")?;
            parse_footer(&tail)?
        }
    };
    if pos.length > MAX_TOC || pos.uncompressed > MAX_TOC {
        bail!(
            "the table of contents is {} bytes ({} compressed): more than {MAX_TOC}",
            pos.uncompressed,
            pos.length
        );
    }
    let end = pos.offset.checked_add(pos.length);
    if pos.offset < FRAME_HEADER || pos.length == 0 || end.is_none_or(|e| e > layer.size) {
        bail!(
            "the table of contents at bytes {}+{} is not within the blob of {}",
            pos.offset,
            pos.length,
            layer.size
        );
    }
    let compressed = fetch_range(
        reg,
        layer,
        pos.offset..pos.offset + pos.length,
        "table of contents",
    )?;
    let got: [u8; 32] = Sha256::digest(&compressed).into();
    if got != want {
        bail!(
            "the table of contents digests to sha256:{}, the manifest's annotation says {checksum}: refused",
            hex::encode(got)
        );
    }
    let mut json = Vec::new();
    let mut d = zstd::stream::read::Decoder::new(&compressed[..])
        .context("cannot decompress the table of contents")?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut d, pos.uncompressed + 1),
        &mut json,
    )
    .context("cannot decompress the table of contents")?;
    if json.len() as u64 != pos.uncompressed {
        bail!(
            "the table of contents decompresses to {}{} bytes, its position says {}",
            json.len(),
            if json.len() as u64 > pos.uncompressed {
                " or more"
            } else {
                ""
            },
            pos.uncompressed
        );
    }
    Ok((json, pos.offset - FRAME_HEADER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(
            parse_position("2000771:2026:7017:1").unwrap(),
            Position {
                offset: 2000771,
                length: 2026,
                uncompressed: 7017
            }
        );
        assert!(parse_position("1:2:3:2").is_err());
        assert!(parse_position("1:2:3").is_err());
        assert!(parse_position("1:x:3:1").is_err());
    }

    #[test]
    fn footers() {
        let le = |v: &[u64]| v.iter().flat_map(|n| n.to_le_bytes()).collect::<Vec<u8>>();
        // Debian 12's skopeo 1.9: 40 bytes, "GnUlInUx".
        let mut old = b"P*M\x18(\0\0\0".to_vec();
        old.extend(le(&[2000771, 2026, 7017, 1]));
        old.extend(MAGIC_OLD);
        let want = Position {
            offset: 2000771,
            length: 2026,
            uncompressed: 7017,
        };
        assert_eq!(parse_footer(&old).unwrap(), want);
        let mut new = le(&[2000771, 2026, 7017, 1, 5, 6, 7]);
        new.extend(MAGIC_NEW);
        assert_eq!(parse_footer(&new).unwrap(), want);
        assert!(parse_footer(&new[1..]).is_err());
        assert!(parse_footer(b"GnUlInUx").is_err());
        let mut bad_type = le(&[1, 2, 3, 9]);
        bad_type.extend(MAGIC_OLD);
        assert!(parse_footer(&bad_type).is_err());
    }
}
