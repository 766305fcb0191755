//! eStargz (containerd's stargz-snapshotter): a gzip-compressed tar whose
//! files (or chunks of them) start new gzip members, ending with a gzip
//! member holding a tar of one file, `stargz.index.json` (the table of
//! contents), and a 51-byte footer: an empty gzip member whose extra
//! field (subfield `SG`) is `%016x` of the table's offset followed by
//! `STARGZ`.
//!
//! The manifest's layer annotation `containerd.io/snapshot/stargz/toc.digest`
//! is the sha256 of the table's *uncompressed* JSON: it is what the
//! table is trusted by. The landmark files (`.prefetch.landmark`,
//! `.no.prefetch.landmark`) and the table's own tar entry are the
//! format's, not the image's: they are left out, as containers/storage's
//! partial pulls leave them out.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

use super::{MAX_TOC, fetch_range};
use crate::oci::registry::Registry;
use crate::oci::spec::Descriptor;

pub(super) const ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
const TOC_NAME: &str = "stargz.index.json";
pub(super) const SKIP_NAMES: &[&str] = &[TOC_NAME, ".prefetch.landmark", ".no.prefetch.landmark"];
const FOOTER: u64 = 51;

/// The annotation, if the layer has one.
pub(super) fn digest(a: &BTreeMap<String, String>) -> Option<&str> {
    a.get(ANNOTATION).map(String::as_str)
}

/// The table's offset, from the footer.
fn parse_footer(f: &[u8]) -> Result<u64> {
    let bad = || anyhow::anyhow!("no eStargz footer at the end of the blob");
    if f.len() != FOOTER as usize || f[..3] != [0x1f, 0x8b, 8] || f[3] & 4 == 0 {
        return Err(bad());
    }
    // XLEN 26, subfield "SG" of 22 bytes: 16 hex digits and "STARGZ".
    if f[10..12] != [26, 0] || &f[12..14] != b"SG" || f[14..16] != [22, 0] {
        return Err(bad());
    }
    if &f[32..38] != b"STARGZ" {
        return Err(bad());
    }
    let hex = std::str::from_utf8(&f[16..32]).map_err(|_| bad())?;
    u64::from_str_radix(hex, 16).map_err(|_| bad())
}

/// The layer's table (JSON), verified against `digest`, and its offset
/// (file data ends there).
pub(super) fn read_toc(reg: &Registry, layer: &Descriptor, digest: &str) -> Result<(Vec<u8>, u64)> {
    let want = super::toc::parse_sha256(digest).context("the toc.digest annotation")?;
    if layer.size <= FOOTER {
        bail!("the blob is too small for an eStargz footer");
    }
    let footer = fetch_range(reg, layer, layer.size - FOOTER..layer.size, "footer")?;
    let offset = parse_footer(&footer)?;
    let end = layer.size - FOOTER;
    if offset >= end {
        bail!("the footer puts the table of contents at byte {offset}, past its end");
    }
    if end - offset > MAX_TOC {
        bail!(
            "the table of contents is {} bytes compressed: more than {MAX_TOC}",
            end - offset
        );
    }
    let compressed = fetch_range(reg, layer, offset..end, "table of contents")?;
    let json = untar_toc(&compressed)?;
    let got: [u8; 32] = Sha256::digest(&json).into();
    if got != want {
        bail!(
            "the table of contents digests to sha256:{}, the manifest's annotation says {digest}: refused",
            hex::encode(got)
        );
    }
    Ok((json, offset))
}

/// `stargz.index.json` out of the gzipped tar that holds it.
fn untar_toc(compressed: &[u8]) -> Result<Vec<u8>> {
    let mut gz = flate2::read::GzDecoder::new(compressed);
    let mut header = [0u8; 512];
    gz.read_exact(&mut header)
        .context("cannot decompress the table of contents")?;
    crate::tarheader::verify_checksum(&header, 0).context("the table of contents' tar")?;
    let name = crate::tarheader::header_name(&header);
    if name != TOC_NAME.as_bytes() {
        bail!(
            "the table of contents' tar holds {:?}, not {TOC_NAME}",
            crate::show::display_bytes(&name)
        );
    }
    let size = crate::tarheader::numeric_u64(&header[124..136], "size")?;
    if size > MAX_TOC {
        bail!("the table of contents is {size} bytes: more than {MAX_TOC}");
    }
    let mut json = Vec::new();
    (&mut gz)
        .take(size)
        .read_to_end(&mut json)
        .context("cannot decompress the table of contents")?;
    if json.len() as u64 != size {
        bail!(
            "the table of contents ends after {} of its {size} bytes",
            json.len()
        );
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The footer as stargz-snapshotter's gzip compressor writes it.
    fn footer(offset: u64) -> Vec<u8> {
        let mut f = vec![
            0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
        ];
        f.extend(format!("{offset:016x}STARGZ").as_bytes());
        f.extend([1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn footers() {
        assert_eq!(parse_footer(&footer(0x1234)).unwrap(), 0x1234);
        let mut bad = footer(7);
        bad[33] = b'x';
        assert!(parse_footer(&bad).is_err());
        assert!(parse_footer(&footer(7)[1..]).is_err());
        let mut nohex = footer(7);
        nohex[20] = b'g';
        assert!(parse_footer(&nohex).is_err());
    }
}
