//! The `tarsplit` target: a layer tar split into a repository, reassembled
//! and merged; and the tar checksum fixer it and the `oci_archive` target
//! share.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use super::base_tar::base_layer;
use super::scratch::{ScratchRepo, lock};
use super::walk::consume_tree;
use crate::fsverity::{Algorithm, ObjectId};
use crate::oci::merge;
use crate::splitstream::content_type;
use crate::tarsplit;

/// `data` with the checksum of every tar header it can find recomputed
/// (walking headers and sizes as a tar reader does, roughly); `None` when
/// nothing changed. A fuzzer mutating a header almost never fixes its
/// checksum too, so without this every mutated header is refused at once
/// and what lies behind the checksum check is never reached; the targets
/// run both the input as given (the checksum check) and this.
pub fn fix_tar_checksums(data: &[u8]) -> Option<Vec<u8>> {
    use crate::tarheader::BLOCK;
    let mut out = data.to_vec();
    let mut at = 0usize;
    let mut changed = false;
    while at + BLOCK <= out.len() {
        let block = &mut out[at..at + BLOCK];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let sum = crate::tarheader::checksum((&*block).try_into().expect("one block"));
        let field = format!("{sum:06o}\0 ");
        if block[148..156] != *field.as_bytes() {
            block[148..156].copy_from_slice(field.as_bytes());
            changed = true;
        }
        let size = crate::tarheader::parse_numeric(&block[124..136])
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let padded = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
        let Some(next) = usize::try_from(padded)
            .ok()
            .and_then(|p| (at + BLOCK).checked_add(p))
        else {
            break;
        };
        at = next;
    }
    changed.then_some(out)
}

static TARS: Mutex<(ScratchRepo, BTreeMap<u64, ObjectId>)> =
    Mutex::new((ScratchRepo::new("tars", Algorithm::Sha512), BTreeMap::new()));

/// A layer tar (plain, gzip or zstd), as `composefs import-tar` and `oci
/// pull` take it: decompressed, split into a splitstream in a scratch
/// repository; when that succeeds, the stream must reassemble to exactly
/// the tar, and it is merged as an OCI layer alone and on top of the base
/// tar's layer (see [`set_base_tar`](super::set_base_tar)), and the merged
/// tree is walked and written as an EROFS image and a dumpfile, as
/// `create-image` does for an OCI image. Returns the split's outcome. The same again for the input
/// with its tar checksums recomputed (see [`fix_tar_checksums`]), when
/// that differs.
pub fn tarsplit(data: &[u8]) -> Result<tarsplit::TarSummary> {
    let r = split_and_merge(data);
    if let Some(fixed) = fix_tar_checksums(data) {
        let _ = split_and_merge(&fixed);
    }
    r
}

fn split_and_merge(data: &[u8]) -> Result<tarsplit::TarSummary> {
    // As `import-tar` and `oci pull` take layers: gzip or zstd detected
    // by magic and decoded (here into memory, at most 16 MiB of it).
    const MAX_DECODED: u64 = 16 << 20;
    let (_, decoded) = crate::compression::decompress(data)?;
    let mut tar = Vec::new();
    decoded
        .take(MAX_DECODED + 1)
        .read_to_end(&mut tar)
        .context("cannot decompress")?;
    if tar.len() as u64 > MAX_DECODED {
        bail!("decompresses to more than {MAX_DECODED} bytes");
    }
    let data = &tar[..];
    let mut guard = lock(&TARS);
    let (scratch, cache) = &mut *guard;
    let (repo, generation) = scratch.get()?;
    let base = base_layer(repo, generation, cache, 0)?;

    let mut w = repo.stream_writer(content_type::OCI_LAYER)?;
    let summary = tarsplit::split(data, &mut w, |_| {})?;
    let id = w.finish()?;

    // Byte-exact: what was split comes back.
    let mut back = Vec::with_capacity(data.len());
    let mut r = repo.open_stream_object(&id)?;
    let n = r
        .cat(repo, &mut back)
        .expect("a stream tarsplit wrote must reassemble");
    assert_eq!(n, data.len() as u64, "reassembled length");
    assert!(back == data, "a split tar must reassemble byte for byte");
    assert_eq!(summary.size, data.len() as u64, "TarSummary::size");

    let mut layers = vec![id];
    if let Ok(tree) = merge::merge(repo, &layers) {
        consume_tree(&tree, 1 << 20);
    }
    if let Some(b) = base {
        layers.insert(0, b);
        if let Ok(tree) = merge::merge(repo, &layers) {
            consume_tree(&tree, 1 << 20);
        }
    }
    Ok(summary)
}
