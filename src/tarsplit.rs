//! Tar archives as splitstreams: headers, padding and small files stay
//! inline; regular file contents larger than [`INLINE_MAX`] become objects.
//!
//! The split is byte-exact: reassembling the splitstream yields the original
//! (uncompressed) tar, including PAX and GNU long-name records, padding, and
//! whatever follows the end-of-archive marker. Headers are parsed only as far
//! as needed to know how much data follows each one; PAX `size` records are
//! honoured. Sparse files are refused (their data layout cannot be spliced).

use std::io::{self, Read};

use anyhow::{Context, Result, bail};

use crate::fsutil::read_full;
use crate::hashtee::HashTee;
use crate::show::short_path;
use crate::splitstream::SplitStreamWriter;
use crate::tarheader::{self, BLOCK, header_name, parse_numeric, pax_records, verify_checksum};

pub use crate::tree::INLINE_MAX;
/// PAX and GNU long-name records are read into memory; cap them.
const MAX_META_RECORD: u64 = 16 << 20;
/// Why sparse members are refused, and what to do instead.
const SPARSE_UNSUPPORTED: &str = "sparse tar members are not supported (the tar stores a \
     packed map, not the file's bytes, so the content cannot be stored as an object and \
     spliced back); write the archive without --sparse: composefs stores zero blocks as holes";

/// What an import saw.
#[derive(Clone, Debug, Default)]
pub struct TarSummary {
    /// sha256 of the uncompressed tar (the OCI diff_id).
    pub sha256: [u8; 32],
    /// Bytes of uncompressed tar.
    pub size: u64,
    /// Archive members (not counting PAX/long-name records).
    pub entries: u64,
    /// Regular files stored as external objects.
    pub external: u64,
}

impl TarSummary {
    pub fn diff_id(&self) -> String {
        format!("sha256:{}", hex::encode(self.sha256))
    }
}

/// Split the uncompressed tar read from `input` into `out`.
/// `progress` is called with the number of input bytes consumed so far.
pub fn split(
    input: impl Read,
    out: &mut SplitStreamWriter<'_>,
    mut progress: impl FnMut(u64),
) -> Result<TarSummary> {
    let mut r = HashTee::new(input);
    let mut summary = TarSummary::default();
    let mut block = [0u8; BLOCK];
    let mut pax_size: Option<u64> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut meta = Vec::new();

    loop {
        let at = r.position();
        let got = read_full(&mut r, &mut block).context("cannot read tar")?;
        if got == 0 {
            // A stream that ends exactly at a member boundary is a complete
            // archive without the end-of-archive blocks (umoci and many Go
            // producers write layers so; GNU tar, Go's archive/tar and
            // composefs-rs read them). Between an extension record and its
            // member it is cut short.
            if pax_size.is_some() || long_name.is_some() {
                bail!(
                    "tar ends at byte {at} after an extended header, before its member: truncated"
                );
            }
            break;
        }
        if got < BLOCK {
            return Err(tarheader::Error::TruncatedHeader { at, got }.into());
        }
        if block.iter().all(|&b| b == 0) {
            // End of archive: keep the marker and any trailing padding verbatim.
            out.write_inline(&block)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = read_full(&mut r, &mut buf).context("cannot read tar")?;
                if n == 0 {
                    break;
                }
                out.write_inline(&buf[..n])?;
            }
            break;
        }
        let name = long_name.take().unwrap_or_else(|| header_name(&block));
        let shown = || short_path(&name);
        verify_checksum(&block, at).with_context(|| format!("member {:?}", shown()))?;
        let typeflag = block[156];
        let header_size = parse_numeric(&block[124..136])
            .and_then(|v| u64::try_from(v).ok())
            .with_context(|| {
                format!(
                    "tar header at byte {at} (member {:?}) has a bad size field",
                    shown()
                )
            })?;
        out.write_inline(&block)?;

        let size = match typeflag {
            b'x' | b'g' | b'L' | b'K' => header_size,
            _ => pax_size.take().unwrap_or(header_size),
        };
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let Some(padded) = size.checked_add(padding) else {
            bail!(
                "tar member {:?} (header at byte {at}) claims an impossible size {size}",
                shown()
            );
        };
        let short = |what: &str, end: u64| {
            format!(
                "tar ends at byte {end}, inside the {what} of member {:?} (header at byte {at}): truncated",
                shown()
            )
        };

        match typeflag {
            b'x' | b'g' | b'L' | b'K' => {
                if size > MAX_META_RECORD {
                    bail!(
                        "tar {} record at byte {at} claims {size} bytes; refusing more than {MAX_META_RECORD}",
                        typeflag as char
                    );
                }
                meta.clear();
                (&mut r)
                    .take(padded)
                    .read_to_end(&mut meta)
                    .context("cannot read tar")?;
                // Short padding can only be the end of the input, which
                // the member this record waits for makes an error below.
                if (meta.len() as u64) < size {
                    bail!(short("extended header", r.position()));
                }
                let data = &meta[..size as usize];
                match typeflag {
                    b'x' => {
                        let records = pax_records(data)
                            .with_context(|| format!("PAX header at byte {at}"))?;
                        for &(k, v) in &records {
                            if k == b"size" {
                                let v = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                                pax_size = Some(v.with_context(|| {
                                    format!("PAX header at byte {at} has a bad size")
                                })?);
                            } else if k.starts_with(b"GNU.sparse.") {
                                // The member's real name: GNU.sparse.name
                                // (format 0.1/1.0), else the PAX path.
                                let name = ["GNU.sparse.name", "path"].iter().find_map(|want| {
                                    records.iter().find(|(k, _)| *k == want.as_bytes())
                                });
                                let who = match name {
                                    Some((_, v)) => format!(
                                        "tar member {:?} (PAX header at byte {at})",
                                        short_path(v)
                                    ),
                                    None => format!("the tar member after byte {at}"),
                                };
                                bail!(
                                    "{who} is a sparse file (GNU.sparse.* records): \
                                     {SPARSE_UNSUPPORTED}"
                                );
                            }
                        }
                    }
                    b'L' => {
                        long_name =
                            Some(data.split(|&b| b == 0).next().unwrap_or_default().to_vec())
                    }
                    _ => {}
                }
                out.write_inline(&meta)?;
                progress(r.position());
                continue;
            }
            b'S' => bail!(
                "tar member {:?} (header at byte {at}) is a GNU sparse file (type 'S'): \
                 {SPARSE_UNSUPPORTED}",
                shown()
            ),
            _ => {}
        }

        summary.entries += 1;
        let regular = matches!(typeflag, b'0' | 0 | b'7');
        if regular && size > INLINE_MAX {
            out.queue_external(&mut r, size).map_err(|e| {
                if e.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::UnexpectedEof)
                {
                    anyhow::anyhow!(short("content", r.position()))
                } else {
                    e.context(format!("cannot store content of tar member {:?}", shown()))
                }
            })?;
            summary.external += 1;
        } else {
            copy_inline(&mut r, out, size).map_err(|e| match e.downcast_ref::<io::Error>() {
                Some(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                    anyhow::anyhow!(short("content", r.position()))
                }
                _ => e,
            })?;
        }
        // The last member's padding may be short or missing: the input
        // ends there, a complete archive without its end-of-archive
        // blocks (umoci 0.4's insert writes layers so; Go's archive/tar, which
        // umoci, podman and containerd read layers with, takes them).
        copy_padding(&mut r, out, padding)?;
        progress(r.position());
    }
    let (sha256, size) = r.finish().context("cannot read tar")?;
    summary.sha256 = sha256;
    summary.size = size;
    progress(size);
    Ok(summary)
}

/// Copy up to `n` bytes of padding from `r` into the stream inline,
/// stopping early only where the input ends.
fn copy_padding(r: &mut impl Read, out: &mut SplitStreamWriter<'_>, n: u64) -> Result<()> {
    let mut buf = [0u8; BLOCK];
    let got = read_full(&mut *r, &mut buf[..n as usize]).context("cannot read tar")?;
    if got > 0 {
        out.write_inline(&buf[..got])?;
    }
    Ok(())
}

/// Copy exactly `n` bytes from `r` into the stream inline.
fn copy_inline(r: &mut impl Read, out: &mut SplitStreamWriter<'_>, mut n: u64) -> Result<()> {
    let mut buf = [0u8; 8192];
    while n > 0 {
        let want = (n as usize).min(buf.len());
        let got = read_full(&mut *r, &mut buf[..want]).context("cannot read tar")?;
        if got == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        out.write_inline(&buf[..got])?;
        n -= got as u64;
    }
    Ok(())
}
