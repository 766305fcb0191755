//! The `splitstream` target: a splitstream as found in a repository, and
//! the same bytes as the chunk stream of a well-formed one.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Mutex, OnceLock};

use anyhow::Result;

use super::base_tar::{BASE_TAR, base_layer};
use super::scratch::{ScratchRepo, lock, memfile};
use super::walk::consume_tree;
use crate::fsverity::{Algorithm, ObjectId};
use crate::oci::merge;
use crate::splitstream::{Piece, SplitStreamReader, content_type};
use crate::tarsplit;

/// Repositories (one per algorithm) holding the objects of the base tar
/// (see [`set_base_tar`](super::set_base_tar)), so that splitstreams made
/// from it reassemble.
struct StreamFixture {
    sha256: ScratchRepo,
    sha512: ScratchRepo,
    /// The base tar's layer stream in each repository, by algorithm and
    /// generation (see [`base_layer`](super::base_tar::base_layer)).
    base_layer: BTreeMap<u64, ObjectId>,
}

static STREAMS: Mutex<StreamFixture> = Mutex::new(StreamFixture {
    sha256: ScratchRepo::new("streams-sha256", Algorithm::Sha256),
    sha512: ScratchRepo::new("streams-sha512", Algorithm::Sha512),
    base_layer: BTreeMap::new(),
});

/// A splitstream as found in a repository: opened and validated, walked
/// chunk by chunk (as `merge` and the OCI readers do), and reassembled
/// (as `composefs cat` does) against a repository holding the objects of
/// the base tar (see [`set_base_tar`](super::set_base_tar)). The algorithm
/// is the one the header names (sha512 unless it says sha256). Then the same for the
/// input as the decompressed chunk stream of a well-formed container (see
/// [`wrap_chunks`]), which is also merged as an OCI layer. Returns the
/// number of inline bytes the walk saw, of the input as a splitstream,
/// else as a chunk stream (reassembly also fails for objects the fixture
/// lacks, so the walk decides).
pub fn splitstream(data: &[u8]) -> Result<u64> {
    let algorithm = match data.get(14) {
        Some(1) => Algorithm::Sha256,
        _ => Algorithm::Sha512,
    };
    let raw = walk_stream(data, algorithm);
    if raw.is_ok() {
        let _ = reassemble(data, algorithm, false);
    }
    let _ = read_frames(data, algorithm);
    let wrapped = wrap_chunks(data).map(|w| {
        let walked = walk_stream(&w, Algorithm::Sha512);
        if walked.is_ok() {
            let _ = reassemble(&w, Algorithm::Sha512, true);
        }
        walked
    });
    match (raw, wrapped) {
        (Err(_), Some(Ok(n))) => Ok(n),
        (raw, _) => raw,
    }
}

/// Open a splitstream as a framed one (its frame table, then every
/// frame); the number of inline bytes.
fn read_frames(data: &[u8], algorithm: Algorithm) -> Result<u64> {
    let r = SplitStreamReader::new(memfile(data)?, algorithm)?;
    let Ok(frames) = r.into_frames()? else {
        return Ok(0);
    };
    let mut inline = 0u64;
    for i in 0..frames.table().len() {
        let f = frames.read(i)?;
        let all = f.to_inline();
        assert_eq!(f.inline(0, all.len()), Some(&all[..]));
        inline += f.inline_len() as u64;
    }
    Ok(inline)
}

/// Open a splitstream and walk its chunks (no object is opened); the
/// number of inline bytes.
fn walk_stream(data: &[u8], algorithm: Algorithm) -> Result<u64> {
    let mut r = SplitStreamReader::new(memfile(data)?, algorithm)?;
    let _ = (r.object_refs().len(), r.stream_refs().len());
    let _ = r.named_refs().len();
    let mut inline = 0u64;
    while let Some(p) = r.next_piece()? {
        if let Piece::Inline(b) = p {
            inline += b.len() as u64;
        }
    }
    Ok(inline)
}

/// A well-formed sha512 splitstream whose decompressed chunk stream is
/// `data[8..]` and whose recorded size is `data[..8]` (little-endian),
/// referring to the base tar's objects (and a few that do not exist) and,
/// by name, to two streams. Mutating a real splitstream mostly breaks its
/// zstd frame; this lets the fuzzer reach the chunk walk and reassembly
/// with any chunk sequence.
fn wrap_chunks(data: &[u8]) -> Option<Vec<u8>> {
    use crate::splitstream::{Header, Info};
    const HEADER_SIZE: u64 = 32;
    const INFO_SIZE: u64 = 80;
    let (size, chunks) = data.split_first_chunk::<8>()?;
    let stream_size = u64::from_le_bytes(*size);
    let compressed = zstd::bulk::compress(chunks, 1).ok()?;
    let alg = Algorithm::Sha512;
    let objects = wrap_objects();
    let streams = [ObjectId::zero(alg), objects[0]];
    let named = zstd::bulk::compress(b"0:first\x001:second\0", 1).ok()?;
    let mut body = Vec::new();
    let mut at = HEADER_SIZE + INFO_SIZE;
    let mut section = |bytes: &[u8]| {
        let r = at..at + bytes.len() as u64;
        at += bytes.len() as u64;
        body.extend_from_slice(bytes);
        r
    };
    let stream_refs: Vec<u8> = streams.iter().flat_map(|i| i.as_bytes().to_vec()).collect();
    let object_refs: Vec<u8> = objects.iter().flat_map(|i| i.as_bytes().to_vec()).collect();
    let info = Info {
        stream_refs: section(&stream_refs),
        object_refs: section(&object_refs),
        named_refs: section(&named),
        stream: section(&compressed),
        content_type: content_type::OCI_LAYER,
        stream_size,
    };
    let header = Header {
        algorithm: alg,
        lg_blocksize: Algorithm::LG_BLOCKSIZE,
        info: HEADER_SIZE..HEADER_SIZE + INFO_SIZE,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&info.encode());
    out.extend_from_slice(&body);
    Some(out)
}

/// The object refs of [`wrap_chunks`]: the base tar's external contents
/// (in the fixture repository), then two objects that are not.
fn wrap_objects() -> &'static [ObjectId] {
    static IDS: OnceLock<Vec<ObjectId>> = OnceLock::new();
    IDS.get_or_init(|| {
        let alg = Algorithm::Sha512;
        let mut ids = Vec::new();
        if let Some(tar) = BASE_TAR.get() {
            let mut ar = tar::Archive::new(&tar[..]);
            if let Ok(entries) = ar.entries() {
                for mut e in entries.flatten() {
                    if e.header().entry_type().is_file() && e.size() > tarsplit::INLINE_MAX {
                        let mut content = Vec::new();
                        if e.read_to_end(&mut content).is_ok() {
                            ids.push(crate::fsverity::digest_bytes(alg, &content));
                        }
                    }
                }
            }
        }
        ids.push(ObjectId::zero(alg));
        ids.push(crate::fsverity::digest_bytes(alg, b"not in the repository"));
        ids
    })
}

/// Reassemble a splitstream against the fixture repository of its
/// algorithm; with `merge`, also store it there and merge it as a layer.
fn reassemble(data: &[u8], algorithm: Algorithm, merge: bool) -> Result<u64> {
    let mut fx = lock(&STREAMS);
    let StreamFixture {
        sha256,
        sha512,
        base_layer: cache,
    } = &mut *fx;
    let (scratch, key) = match algorithm {
        Algorithm::Sha256 => (sha256, 256),
        Algorithm::Sha512 => (sha512, 512),
    };
    let (repo, generation) = scratch.get()?;
    base_layer(repo, generation, cache, key)?;
    if merge {
        let id = repo.store_bytes(data)?;
        if let Ok(tree) = merge::merge(repo, &[id]) {
            consume_tree(&tree, 1 << 20);
        }
    }
    let mut r = SplitStreamReader::new(memfile(data)?, algorithm)?;
    r.cat(repo, &mut io::sink())
}
