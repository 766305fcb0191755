//! Streaming userspace fs-verity digest, bit-for-bit what the kernel measures.
//!
//! The format (Linux `Documentation/filesystems/fsverity.rst`, and
//! `lib/compute_digest.c` in fsverity-utils, whose `fsverity digest` command
//! is our test oracle):
//!
//! - The data is cut into 4096-byte blocks, the last one zero-padded, and each
//!   block is hashed.
//! - The digests of one level are packed into 4096-byte blocks (the last one
//!   zero-padded) and those blocks are hashed in turn, level after level, until
//!   a level fits in a single block. The hash of that block is the root hash. A
//!   file of exactly one block has the hash of that block as root; an empty
//!   file has an all-zero root.
//! - The file digest is the hash of the 256-byte `fsverity_descriptor` built
//!   from the root hash and the data size (see [`descriptor`]).
//!
//! # Streaming without knowing the size
//!
//! The kernel knows the file size up front, so it knows the tree height. A
//! streaming hasher does not, so every level here is *lazy*: a full level block
//! is hashed (and its digest pushed one level up) only when one more digest
//! arrives for that level. At [`Hasher::finish`] the levels are folded from the
//! bottom: every level below the top is zero-padded and hashed into the next,
//! and the top level, once it holds a single digest, is the root. That yields
//! exactly the kernel's tree, including at the level boundaries (128 digests per
//! block for sha256, 64 for sha512), which the integration tests pin.
//!
//! # Speed
//!
//! Every 4 KiB block is hashed with the raw SHA-2 compression function
//! ([`sha2::block_api::compress256`] / [`compress512`]), which picks SHA-NI
//! (sha256) or AVX2 (sha512) at run time. Since the message length of a tree
//! block is always 4096, its final padding block is a constant, so no
//! `Digest` buffering is involved; whole blocks are hashed straight out of the
//! caller's slice, and only a partial block at either end of an `update` is
//! copied. Memory is one 4 KiB buffer for the partial data block plus one per
//! tree level (at most 9 levels for a 2^64-byte file), allocated once.

use std::io::{self, Read};

use sha2::block_api::{compress256, compress512};

use super::{Algorithm, ObjectId};

/// The Merkle tree block size.
const BLOCK: usize = Algorithm::BLOCK_SIZE;

/// Size of the `fsverity_descriptor` that the file digest is the hash of.
const DESCRIPTOR_SIZE: usize = 256;

/// Largest digest (sha512).
const MAX_DIGEST: usize = 64;

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-512 initial hash value (FIPS 180-4, 5.3.5).
const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// The final SHA-256 block of a message of `len` bytes, `len` a multiple of 64.
const fn sha256_pad(len: usize) -> [u8; 64] {
    let mut pad = [0u8; 64];
    pad[0] = 0x80;
    let bits = ((len as u64) * 8).to_be_bytes();
    let mut i = 0;
    while i < 8 {
        pad[56 + i] = bits[i];
        i += 1;
    }
    pad
}

/// The final SHA-512 block of a message of `len` bytes, `len` a multiple of 128.
const fn sha512_pad(len: usize) -> [u8; 128] {
    let mut pad = [0u8; 128];
    pad[0] = 0x80;
    let bits = ((len as u128) * 8).to_be_bytes();
    let mut i = 0;
    while i < 16 {
        pad[112 + i] = bits[i];
        i += 1;
    }
    pad
}

const SHA256_PAD_BLOCK: [u8; 64] = sha256_pad(BLOCK);
const SHA512_PAD_BLOCK: [u8; 128] = sha512_pad(BLOCK);
const SHA256_PAD_DESCRIPTOR: [u8; 64] = sha256_pad(DESCRIPTOR_SIZE);
const SHA512_PAD_DESCRIPTOR: [u8; 128] = sha512_pad(DESCRIPTOR_SIZE);

/// SHA-256 of `msg` (a multiple of 64 bytes long) whose final padding block
/// `pad` was precomputed for that length.
#[inline]
fn sha256_aligned(msg: &[u8], pad: &[u8; 64], out: &mut [u8; MAX_DIGEST]) {
    let (blocks, rest) = msg.as_chunks::<64>();
    debug_assert!(rest.is_empty());
    let mut state = SHA256_IV;
    compress256(&mut state, blocks);
    compress256(&mut state, std::slice::from_ref(pad));
    for (o, w) in out.as_chunks_mut::<4>().0.iter_mut().zip(state) {
        *o = w.to_be_bytes();
    }
}

/// SHA-512 of `msg` (a multiple of 128 bytes long) whose final padding block
/// `pad` was precomputed for that length.
#[inline]
fn sha512_aligned(msg: &[u8], pad: &[u8; 128], out: &mut [u8; MAX_DIGEST]) {
    let (blocks, rest) = msg.as_chunks::<128>();
    debug_assert!(rest.is_empty());
    let mut state = SHA512_IV;
    compress512(&mut state, blocks);
    compress512(&mut state, std::slice::from_ref(pad));
    for (o, w) in out.as_chunks_mut::<8>().0.iter_mut().zip(state) {
        *o = w.to_be_bytes();
    }
}

/// Hash one 4096-byte tree block (data or digests) into `out`; only the first
/// `alg.digest_len()` bytes of `out` are meaningful.
#[inline]
fn hash_block(alg: Algorithm, block: &[u8; BLOCK], out: &mut [u8; MAX_DIGEST]) {
    match alg {
        Algorithm::Sha256 => sha256_aligned(block, &SHA256_PAD_BLOCK, out),
        Algorithm::Sha512 => sha512_aligned(block, &SHA512_PAD_BLOCK, out),
    }
}

/// The 256-byte `struct fsverity_descriptor` for a file of `data_size` bytes
/// with the given root hash, 4 KiB blocks and no salt:
///
/// ```text
/// u8  version = 1        u8  hash_algorithm   u8 log_blocksize = 12
/// u8  salt_size = 0      u32 reserved = 0     u64 data_size (LE)
/// u8  root_hash[64]      u8  salt[32]         u8  reserved[144]
/// ```
fn descriptor(alg: Algorithm, data_size: u64, root: &[u8]) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = [0u8; DESCRIPTOR_SIZE];
    d[0] = 1;
    d[1] = alg.kernel_id();
    d[2] = Algorithm::LG_BLOCKSIZE;
    // d[3] salt_size and d[4..8] reserved stay zero.
    d[8..16].copy_from_slice(&data_size.to_le_bytes());
    d[16..16 + root.len()].copy_from_slice(root);
    // salt (d[80..112]) and reserved (d[112..256]) stay zero.
    d
}

/// One level of the Merkle tree: the digests of the blocks below, packed.
struct Level {
    buf: Box<[u8; BLOCK]>,
    /// Bytes of `buf` holding digests; a multiple of the digest size.
    filled: usize,
}

/// Streaming fs-verity hasher: feed bytes with [`Hasher::update`], then
/// [`Hasher::finish`]. Memory is constant whatever the input size.
pub struct Hasher {
    alg: Algorithm,
    /// Bytes fed so far; the partial data block is `len % 4096` bytes long.
    len: u64,
    /// The partial data block (full blocks are hashed at once).
    data: Box<[u8; BLOCK]>,
    /// Tree levels, the data block digests first; grows to the tree height.
    levels: Vec<Level>,
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        Hasher {
            alg,
            len: 0,
            data: Box::new([0u8; BLOCK]),
            levels: Vec::new(),
        }
    }

    /// Feed more data; slices of any size, including empty, are fine.
    pub fn update(&mut self, mut data: &[u8]) {
        let pending = (self.len % BLOCK as u64) as usize;
        self.len += data.len() as u64;
        if pending > 0 {
            let take = (BLOCK - pending).min(data.len());
            self.data[pending..pending + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if pending + take < BLOCK {
                return;
            }
            let mut digest = [0u8; MAX_DIGEST];
            hash_block(self.alg, &self.data, &mut digest);
            push(self.alg, &mut self.levels, 0, &digest);
        }
        // Whole blocks straight from the caller's buffer: no copy.
        let (blocks, rest) = data.as_chunks::<BLOCK>();
        for block in blocks {
            let mut digest = [0u8; MAX_DIGEST];
            hash_block(self.alg, block, &mut digest);
            push(self.alg, &mut self.levels, 0, &digest);
        }
        self.data[..rest.len()].copy_from_slice(rest);
    }

    /// Total bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True until some data has been fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fs-verity file digest of everything fed.
    pub fn finish(mut self) -> ObjectId {
        let alg = self.alg;
        let dlen = alg.digest_len();
        let mut root = [0u8; MAX_DIGEST];
        // An empty file has an all-zero root hash.
        if self.len > 0 {
            let pending = (self.len % BLOCK as u64) as usize;
            if pending > 0 {
                self.data[pending..].fill(0);
                let mut digest = [0u8; MAX_DIGEST];
                hash_block(alg, &self.data, &mut digest);
                push(alg, &mut self.levels, 0, &digest);
            }
            // Fold the levels bottom-up until the top holds a single digest.
            // Every existing level holds at least one digest: a level is
            // created by a push and only emptied right before a push into it.
            let mut i = 0;
            loop {
                let top = i + 1 == self.levels.len();
                let level = &mut self.levels[i];
                if top && level.filled == dlen {
                    root[..dlen].copy_from_slice(&level.buf[..dlen]);
                    break;
                }
                level.buf[level.filled..].fill(0);
                let mut digest = [0u8; MAX_DIGEST];
                hash_block(alg, &level.buf, &mut digest);
                level.filled = 0;
                push(alg, &mut self.levels, i + 1, &digest);
                i += 1;
            }
        }
        let desc = descriptor(alg, self.len, &root[..dlen]);
        let mut out = [0u8; MAX_DIGEST];
        match alg {
            Algorithm::Sha256 => sha256_aligned(&desc, &SHA256_PAD_DESCRIPTOR, &mut out),
            Algorithm::Sha512 => sha512_aligned(&desc, &SHA512_PAD_DESCRIPTOR, &mut out),
        }
        ObjectId::from_bytes(alg, &out[..dlen]).expect("digest length matches algorithm")
    }
}

/// Append `digest` (its first `alg.digest_len()` bytes) to tree level `i`,
/// first hashing that level's block up a level if it is already full.
fn push(alg: Algorithm, levels: &mut Vec<Level>, i: usize, digest: &[u8; MAX_DIGEST]) {
    let dlen = alg.digest_len();
    if i == levels.len() {
        levels.push(Level {
            buf: Box::new([0u8; BLOCK]),
            filled: 0,
        });
    }
    // BLOCK is a multiple of both digest sizes, so "no room" means "full".
    if levels[i].filled == BLOCK {
        let mut up = [0u8; MAX_DIGEST];
        hash_block(alg, &levels[i].buf, &mut up);
        levels[i].filled = 0;
        push(alg, levels, i + 1, &up);
    }
    let level = &mut levels[i];
    level.buf[level.filled..level.filled + dlen].copy_from_slice(&digest[..dlen]);
    level.filled += dlen;
}

/// Digest of an in-memory buffer.
pub fn digest_bytes(alg: Algorithm, data: &[u8]) -> ObjectId {
    let mut h = Hasher::new(alg);
    h.update(data);
    h.finish()
}

/// Read size of [`digest_reader`]: a multiple of the block size, so reads from
/// a file keep whole blocks hashed in place, small enough to stay in L2.
const READ_BUF: usize = 1 << 16;

/// Digest of everything a reader yields; returns the digest and the byte count.
pub fn digest_reader(alg: Algorithm, mut r: impl Read) -> io::Result<(ObjectId, u64)> {
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// Deterministic pseudo-random bytes (xorshift64*), same as the
    /// integration test's generator.
    fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            out.extend_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn hex_of(alg: Algorithm, data: &[u8]) -> String {
        digest_bytes(alg, data).to_hex()
    }

    #[test]
    fn block_hash_matches_sha2_digest() {
        let data = prng_bytes(7, BLOCK);
        let block: &[u8; BLOCK] = data.as_slice().try_into().unwrap();
        let mut out = [0u8; MAX_DIGEST];
        hash_block(Algorithm::Sha256, block, &mut out);
        assert_eq!(out[..32], sha2::Sha256::digest(&data)[..]);
        hash_block(Algorithm::Sha512, block, &mut out);
        assert_eq!(out[..], sha2::Sha512::digest(&data)[..]);

        let desc = [0xa5u8; DESCRIPTOR_SIZE];
        sha256_aligned(&desc, &SHA256_PAD_DESCRIPTOR, &mut out);
        assert_eq!(out[..32], sha2::Sha256::digest(desc)[..]);
        sha512_aligned(&desc, &SHA512_PAD_DESCRIPTOR, &mut out);
        assert_eq!(out[..], sha2::Sha512::digest(desc)[..]);
    }

    #[test]
    fn descriptor_layout() {
        let d = descriptor(Algorithm::Sha512, 0x0102_0304_0506_0708, &[0xee; 64]);
        assert_eq!(d[..4], [1, 2, 12, 0]);
        assert_eq!(d[4..8], [0; 4]);
        assert_eq!(d[8..16], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(d[16..80], [0xee; 64]);
        assert!(d[80..].iter().all(|&b| b == 0));
        let d = descriptor(Algorithm::Sha256, 1, &[0xee; 32]);
        assert_eq!(d[..4], [1, 1, 12, 0]);
        assert_eq!(d[16..48], [0xee; 32]);
        assert!(d[48..].iter().all(|&b| b == 0));
    }

    // The vectors below were produced by `fsverity digest --hash-alg=...`
    // (fsverity-utils v1.5) on files with the described content.

    #[test]
    fn empty_file() {
        assert_eq!(
            hex_of(Algorithm::Sha256, b""),
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        );
        assert_eq!(
            hex_of(Algorithm::Sha512, b""),
            "ccf9e5aea1c2a64efa2f2354a6024b90dffde6bbc017825045dce374474e13d1\
             0adb9dadcc6ca8e17a3c075fbd31336e8f266ae6fa93a6c3bed66f9e784e5abf"
        );
        let h = Hasher::new(Algorithm::Sha256);
        assert_eq!(h.len(), 0);
        assert!(h.is_empty());
    }

    #[test]
    fn known_vectors() {
        // "hello world\n" (12 bytes).
        assert_eq!(hex_of(Algorithm::Sha256, b"hello world\n"), "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92");
        assert_eq!(hex_of(Algorithm::Sha512, b"hello world\n"), "4098b052d2427dc9029c85062215dd6e6c41667bfae09f5ce90a49f7e01fca29\
             5c89b16a4d2703ac5b0593f476ca174675ee51829c2f1fd07c4133a87041c1d7");
        // 129 blocks + 1 byte of the prng (two tree levels for sha256).
        let data = prng_bytes(42, 129 * BLOCK + 1);
        assert_eq!(hex_of(Algorithm::Sha256, &data), "85c04e59a206e82c66bf3d41cf115e465d8a0f028a9c44a3eb5f3be5e2d6a5ae");
        assert_eq!(hex_of(Algorithm::Sha512, &data), "c520331c150078a9d54d5f9c0b9bac3e4754fe63a63702deeba601c2c6868d37\
             a9010ab52e9ebc9fe14f9d59224b8c95a8e4651af3e60058813a2a0736f0ba81");
    }

    /// Feed `data` in pseudo-random pieces from 0 to `max` bytes.
    fn digest_in_pieces(alg: Algorithm, data: &[u8], seed: u64, max: usize) -> ObjectId {
        let sizes = prng_bytes(seed, data.len() + 1);
        let mut h = Hasher::new(alg);
        let mut off = 0;
        let mut i = 0;
        while off < data.len() {
            let r = u32::from_le_bytes([sizes[i % sizes.len()], sizes[(i + 1) % sizes.len()], 0, 0]);
            let n = (r as usize % (max + 1)).min(data.len() - off);
            h.update(&data[off..off + n]);
            off += n;
            i += 2;
            assert_eq!(h.len(), off as u64);
        }
        h.finish()
    }

    #[test]
    fn split_updates_agree() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            // Crosses the level boundary of both algorithms (64 and 128
            // digests per block) and ends with a partial block.
            let data = prng_bytes(3, 129 * BLOCK + 100);
            let whole = digest_bytes(alg, &data);
            for (seed, max) in [(1, 7), (2, 5000), (3, 3 * BLOCK), (4, 70_000)] {
                assert_eq!(digest_in_pieces(alg, &data, seed, max), whole, "{alg} max={max}");
            }
            // One byte at a time.
            let mut h = Hasher::new(alg);
            for b in &data {
                h.update(std::slice::from_ref(b));
            }
            assert_eq!(h.len(), data.len() as u64);
            assert_eq!(h.finish(), whole);
            // Empty updates change nothing.
            let mut h = Hasher::new(alg);
            h.update(&[]);
            h.update(&data[..BLOCK]);
            h.update(&[]);
            h.update(&data[BLOCK..]);
            assert_eq!(h.finish(), whole);
        }
    }

    #[test]
    fn reader_agrees_with_bytes() {
        let data = prng_bytes(9, 3 * READ_BUF + 12345);
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let (id, n) = digest_reader(alg, &data[..]).unwrap();
            assert_eq!(n, data.len() as u64);
            assert_eq!(id, digest_bytes(alg, &data));
            assert_eq!(id.algorithm(), alg);
        }
    }
}
