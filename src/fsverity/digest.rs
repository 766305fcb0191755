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
//! A tree block's message length is always 4096, so its final SHA padding
//! block is a constant and no `Digest` buffering is needed: blocks go straight
//! to the raw compression functions ([`sha2::block_api::compress256`] /
//! [`compress512`]; sha2 picks SHA-NI for sha256 at run time, which matches
//! OpenSSL). For SHA-512, whose single-stream speed in sha2 (~590 MB/s here)
//! trails OpenSSL's assembly (~830 MB/s), data blocks are hashed several at a
//! time, one per SIMD lane ([`mb512`]): about twice as fast as OpenSSL with
//! AVX2 and three times with AVX-512. Whole blocks (or groups of blocks) are hashed straight out of the
//! caller's slice; only what does not fill a group is copied into a staging
//! buffer. Memory is that buffer (4 KiB, or one group of blocks) plus one
//! 4 KiB block per tree level (at most 9 for a 2^64-byte file), whatever the
//! input size.

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

/// How whole data blocks are hashed: one at a time, or several side by side
/// (multi-buffer SHA-512, see [`mb512`]). Chosen once per hasher from the
/// CPU's features; a SIMD variant only exists once its features were detected,
/// which is what makes calling its `hash` sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Sha512Avx512,
    #[cfg(target_arch = "x86_64")]
    Sha512Avx2,
}

impl Engine {
    /// The fastest engine this CPU supports for `alg`, no faster than
    /// [`SIMD_ENV`] allows.
    fn detect(alg: Algorithm) -> Self {
        let limit = simd_limit();
        match alg {
            // sha2 uses SHA-NI where present, as fast as OpenSSL per block.
            Algorithm::Sha256 => Engine::Scalar,
            #[cfg(target_arch = "x86_64")]
            Algorithm::Sha512 if limit >= SimdLimit::Avx512 && mb512::avx512::detected() => {
                Engine::Sha512Avx512
            }
            #[cfg(target_arch = "x86_64")]
            Algorithm::Sha512 if limit >= SimdLimit::Avx2 && mb512::avx2::detected() => {
                Engine::Sha512Avx2
            }
            Algorithm::Sha512 => Engine::Scalar,
        }
    }

    /// Blocks hashed together.
    fn lanes(self) -> usize {
        match self {
            Engine::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Engine::Sha512Avx512 => mb512::avx512::LANES,
            #[cfg(target_arch = "x86_64")]
            Engine::Sha512Avx2 => mb512::avx2::LANES,
        }
    }
}

/// Environment variable that caps the multi-buffer SHA-512 engine, to measure
/// or test what a CPU without AVX-512 (`avx2`) or without either (`none`)
/// gets; it can only lower the choice, never pick features the CPU lacks.
/// Unset or any other value: the best the CPU has.
pub const SIMD_ENV: &str = "COMPOSEFS_SIMD";

/// The highest SIMD level [`SIMD_ENV`] allows, read once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SimdLimit {
    None,
    Avx2,
    Avx512,
}

fn simd_limit() -> SimdLimit {
    static LIMIT: std::sync::OnceLock<SimdLimit> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| match std::env::var(SIMD_ENV).as_deref() {
        Ok("none") => SimdLimit::None,
        Ok("avx2") => SimdLimit::Avx2,
        _ => SimdLimit::Avx512,
    })
}

/// An all-zero data block.
static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];
/// Zeros for a whole group of blocks (the most [`Hasher::update_zeros`]
/// stages at once).
static ZERO_BLOCK_RUN: [u8; MAX_LANES * BLOCK] = [0; MAX_LANES * BLOCK];

/// The hash of an all-zero data block, computed once per algorithm.
fn zero_block_hash(alg: Algorithm) -> &'static [u8; MAX_DIGEST] {
    static SHA256: std::sync::OnceLock<[u8; MAX_DIGEST]> = std::sync::OnceLock::new();
    static SHA512: std::sync::OnceLock<[u8; MAX_DIGEST]> = std::sync::OnceLock::new();
    let cell = match alg {
        Algorithm::Sha256 => &SHA256,
        Algorithm::Sha512 => &SHA512,
    };
    cell.get_or_init(|| {
        let mut d = [0u8; MAX_DIGEST];
        hash_block(alg, &ZERO_BLOCK, &mut d);
        d
    })
}

/// Is every block of `blocks` all zeros? (A compare that stops at the
/// first non-zero byte: next to nothing for ordinary data.)
#[inline]
fn all_zero(blocks: &[[u8; BLOCK]]) -> bool {
    blocks.iter().all(|b| *b == ZERO_BLOCK)
}

/// Hash whole data blocks, in order, and push their digests to level 0.
/// All-zero blocks (the holes and zero runs of sparse-ish files) are not
/// hashed: their digest is a constant, so a run of zeros costs a compare
/// per block instead of a hash.
fn hash_data_blocks(
    alg: Algorithm,
    engine: Engine,
    levels: &mut Vec<Level>,
    blocks: &[[u8; BLOCK]],
) {
    #[allow(unused_mut)]
    let mut blocks = blocks;
    match engine {
        Engine::Scalar => {}
        #[cfg(target_arch = "x86_64")]
        Engine::Sha512Avx512 => {
            let (groups, rest) = blocks.as_chunks::<{ mb512::avx512::LANES }>();
            for group in groups {
                if all_zero(group) {
                    for _ in group {
                        push(alg, levels, 0, zero_block_hash(alg));
                    }
                    continue;
                }
                let mut out = [[0u8; MAX_DIGEST]; mb512::avx512::LANES];
                // SAFETY: this engine is only chosen after
                // `mb512::avx512::detected()` said the CPU has the features.
                unsafe { mb512::avx512::hash(group, &mut out) };
                for digest in &out {
                    push(alg, levels, 0, digest);
                }
            }
            blocks = rest;
        }
        #[cfg(target_arch = "x86_64")]
        Engine::Sha512Avx2 => {
            let (groups, rest) = blocks.as_chunks::<{ mb512::avx2::LANES }>();
            for group in groups {
                if all_zero(group) {
                    for _ in group {
                        push(alg, levels, 0, zero_block_hash(alg));
                    }
                    continue;
                }
                let mut out = [[0u8; MAX_DIGEST]; mb512::avx2::LANES];
                // SAFETY: this engine is only chosen after
                // `mb512::avx2::detected()` said the CPU has the features.
                unsafe { mb512::avx2::hash(group, &mut out) };
                for digest in &out {
                    push(alg, levels, 0, digest);
                }
            }
            blocks = rest;
        }
    }
    for block in blocks {
        if *block == ZERO_BLOCK {
            push(alg, levels, 0, zero_block_hash(alg));
            continue;
        }
        let mut digest = [0u8; MAX_DIGEST];
        hash_block(alg, block, &mut digest);
        push(alg, levels, 0, &digest);
    }
}

/// The widest group of blocks any engine hashes at once.
const MAX_LANES: usize = 8;

/// Hash the last (fewer than a group of) data blocks: through a
/// zero-filled multi-lane group when that is cheaper than one at a time
/// (from 3 blocks for 4 lanes, from 5 for 8 lanes), else one by one.
fn hash_last_blocks(
    alg: Algorithm,
    engine: Engine,
    levels: &mut Vec<Level>,
    blocks: &[[u8; BLOCK]],
) {
    let n = blocks.len();
    match engine {
        #[cfg(target_arch = "x86_64")]
        Engine::Sha512Avx512 if n >= 5 => {
            let mut group = [[0u8; BLOCK]; mb512::avx512::LANES];
            group[..n].copy_from_slice(blocks);
            let mut out = [[0u8; MAX_DIGEST]; mb512::avx512::LANES];
            // SAFETY: this engine is only chosen after
            // `mb512::avx512::detected()` said the CPU has the features.
            unsafe { mb512::avx512::hash(&group, &mut out) };
            for digest in &out[..n] {
                push(alg, levels, 0, digest);
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        Engine::Sha512Avx512 | Engine::Sha512Avx2 if n >= 3 && mb512::avx2::detected() => {
            let mut done = 0;
            while n - done >= 3 {
                let take = (n - done).min(mb512::avx2::LANES);
                let mut group = [[0u8; BLOCK]; mb512::avx2::LANES];
                group[..take].copy_from_slice(&blocks[done..done + take]);
                let mut out = [[0u8; MAX_DIGEST]; mb512::avx2::LANES];
                // SAFETY: `mb512::avx2::detected()` was checked just above.
                unsafe { mb512::avx2::hash(&group, &mut out) };
                for digest in &out[..take] {
                    push(alg, levels, 0, digest);
                }
                done += take;
            }
            for block in &blocks[done..] {
                let mut digest = [0u8; MAX_DIGEST];
                hash_block(alg, block, &mut digest);
                push(alg, levels, 0, &digest);
            }
            return;
        }
        _ => {}
    }
    for block in blocks {
        let mut digest = [0u8; MAX_DIGEST];
        hash_block(alg, block, &mut digest);
        push(alg, levels, 0, &digest);
    }
}

/// Streaming fs-verity hasher: feed bytes with [`Hasher::update`], then
/// [`Hasher::finish`]. Memory is constant whatever the input size.
pub struct Hasher {
    alg: Algorithm,
    engine: Engine,
    /// Bytes fed so far.
    len: u64,
    /// Data not hashed yet, always shorter than one group of `engine.lanes()`
    /// blocks (4 KiB, or 32 KiB for 8-lane SHA-512); its capacity is
    /// allocated at first use. Input is staged here only when it does not
    /// come in whole groups: those are hashed straight from the caller's slice.
    pending: Vec<u8>,
    /// Tree levels, the data block digests first; grows to the tree height.
    levels: Vec<Level>,
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        Self::with_engine(alg, Engine::detect(alg))
    }

    fn with_engine(alg: Algorithm, engine: Engine) -> Self {
        Hasher {
            alg,
            engine,
            len: 0,
            pending: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Feed more data; slices of any size, including empty, are fine.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        let group = self.engine.lanes() * BLOCK;
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= group {
                // Whole groups straight from the caller's buffer: no copy.
                let whole = data.len() / group * group;
                let (blocks, _) = data[..whole].as_chunks::<BLOCK>();
                hash_data_blocks(self.alg, self.engine, &mut self.levels, blocks);
                data = &data[whole..];
                continue;
            }
            if self.pending.capacity() < group {
                self.pending.reserve_exact(group);
            }
            let take = (group - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == group {
                let (blocks, _) = self.pending.as_chunks::<BLOCK>();
                hash_data_blocks(self.alg, self.engine, &mut self.levels, blocks);
                self.pending.clear();
            }
        }
    }

    /// Feed `n` zero bytes without materialising them: what a hole in a
    /// sparse file reads as. Whole blocks cost one push of a constant
    /// digest each (no hash, no memory), so a 10 GiB hole digests in
    /// milliseconds.
    pub fn update_zeros(&mut self, mut n: u64) {
        // Zeros up to the next group boundary go through the staging buffer.
        if !self.pending.is_empty() {
            let group = (self.engine.lanes() * BLOCK) as u64;
            let take = (group - self.pending.len() as u64).min(n);
            self.update(&ZERO_BLOCK_RUN[..take as usize]);
            n -= take;
        }
        if n == 0 {
            return;
        }
        debug_assert!(self.pending.is_empty());
        let whole = n / BLOCK as u64;
        for _ in 0..whole {
            push(self.alg, &mut self.levels, 0, zero_block_hash(self.alg));
        }
        self.len += whole * BLOCK as u64;
        self.update(&ZERO_BLOCK[..(n % BLOCK as u64) as usize]);
    }

    /// Total bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True until some data has been fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feed one whole span of data ([`span_len`] bytes, the blocks whose
    /// digests fill one tree block) by its [`span_digest`], computed
    /// elsewhere (on another thread): the same result as feeding its bytes.
    /// Only at a span boundary: everything fed so far is whole spans.
    pub fn push_span(&mut self, digest: &[u8; MAX_DIGEST]) {
        let span = span_len(self.alg);
        assert!(
            self.pending.is_empty() && self.len.is_multiple_of(span as u64),
            "push_span off a span boundary"
        );
        // Whole spans fed as bytes leave the data blocks' level full (it is
        // carried up lazily): carry it up first, to keep the order.
        if let Some(l0) = self.levels.first_mut()
            && l0.filled == BLOCK
        {
            let mut up = [0u8; MAX_DIGEST];
            hash_block(self.alg, &l0.buf, &mut up);
            l0.filled = 0;
            push(self.alg, &mut self.levels, 1, &up);
        }
        if self.levels.is_empty() {
            self.levels.push(Level {
                buf: Box::new([0u8; BLOCK]),
                filled: 0,
            });
        }
        push(self.alg, &mut self.levels, 1, digest);
        self.len += span as u64;
    }

    /// The fs-verity file digest of everything fed.
    pub fn finish(mut self) -> ObjectId {
        let alg = self.alg;
        let dlen = alg.digest_len();
        let mut root = [0u8; MAX_DIGEST];
        // An empty file has an all-zero root hash.
        if self.len > 0 {
            // The last blocks (fewer than a group, the tail zero-padded)
            // still go through the lanes when enough of them are left:
            // most files end in a partial group, so this matters.
            let (blocks, tail) = self.pending.as_chunks::<BLOCK>();
            let mut rest = [[0u8; BLOCK]; MAX_LANES];
            let mut n = blocks.len();
            rest[..n].copy_from_slice(blocks);
            if !tail.is_empty() {
                rest[n][..tail.len()].copy_from_slice(tail);
                n += 1;
            }
            hash_last_blocks(alg, self.engine, &mut self.levels, &rest[..n]);
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
                // Data fed as whole spans ([`Hasher::push_span`]) leaves
                // the data blocks' level empty: nothing of it to carry up.
                if !top && level.filled == 0 {
                    i += 1;
                    continue;
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

/// Bytes of data in one span: the data blocks whose digests fill one
/// block of the tree's first level (512 KiB for sha256, 256 KiB for
/// sha512). Spans hash independently of each other ([`span_digest`]).
pub fn span_len(alg: Algorithm) -> usize {
    BLOCK / alg.digest_len() * BLOCK
}

/// The first-level tree digest of one whole span of data (exactly
/// [`span_len`] bytes), for [`Hasher::push_span`].
pub fn span_digest(alg: Algorithm, data: &[u8]) -> [u8; MAX_DIGEST] {
    assert_eq!(data.len(), span_len(alg), "span_digest of a partial span");
    let mut levels = Vec::new();
    let (blocks, _) = data.as_chunks::<BLOCK>();
    hash_data_blocks(alg, Engine::detect(alg), &mut levels, blocks);
    let mut up = [0u8; MAX_DIGEST];
    hash_block(alg, &levels[0].buf, &mut up);
    up
}

/// Files from this size are digested on several threads at once
/// ([`digest_file`]), when they have no holes.
const PARALLEL_FROM: u64 = 8 << 20;

/// Digest of a file, from its start: holes (as `SEEK_DATA`/`SEEK_HOLE`
/// report them) are not read but fed as zeros, so a 10 GiB file that is
/// mostly holes digests in the time its data takes. A large file without
/// holes is digested span by span on up to four threads, read with
/// `pread`. Returns the digest and the byte count.
pub fn digest_file(alg: Algorithm, f: &std::fs::File) -> io::Result<(ObjectId, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = f.metadata()?;
    if meta.len() >= PARALLEL_FROM && meta.blocks() * 512 >= meta.len() {
        // Asked once: it reads cgroup files.
        static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let threads = *THREADS
            .get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)));
        if threads > 1 {
            return digest_file_parallel(alg, f, meta.len(), threads);
        }
    }
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; READ_BUF];
    let n = crate::fsutil::for_each_extent(f, &mut buf, |e| {
        match e {
            crate::fsutil::Extent::Data(d) => h.update(d),
            crate::fsutil::Extent::Zeros(n) => h.update_zeros(n),
        }
        Ok(())
    })?;
    debug_assert_eq!(n, h.len());
    Ok((h.finish(), n))
}

/// [`digest_file`] of a large file without holes: its whole spans are
/// hashed on `threads` threads (each reads and hashes the next span not
/// taken), the rest after them in order.
fn digest_file_parallel(
    alg: Algorithm,
    f: &std::fs::File,
    size: u64,
    threads: usize,
) -> io::Result<(ObjectId, u64)> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let span = span_len(alg);
    let spans = (size / span as u64) as usize;
    let next = AtomicUsize::new(0);
    let digests = std::sync::Mutex::new(vec![[0u8; MAX_DIGEST]; spans]);
    std::thread::scope(|s| {
        let work = || -> io::Result<()> {
            let mut buf = vec![0u8; span];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= spans {
                    return Ok(());
                }
                f.read_exact_at(&mut buf, i as u64 * span as u64)?;
                let d = span_digest(alg, &buf);
                digests.lock().unwrap()[i] = d;
            }
        };
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mine = work();
        for h in helpers {
            h.join().expect("a digest thread panicked")?;
        }
        mine
    })?;
    let mut h = Hasher::new(alg);
    for d in digests.into_inner().unwrap().iter() {
        h.push_span(d);
    }
    // The rest, to the end of the file (which may have grown since).
    let mut buf = vec![0u8; READ_BUF];
    let mut pos = spans as u64 * span as u64;
    loop {
        let n = match f.read_at(&mut buf, pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok((h.finish(), pos))
}

/// Multi-buffer SHA-512 of whole tree blocks (its own file).
#[cfg(target_arch = "x86_64")]
mod mb512;

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

    #[test]
    fn spans_hashed_apart_give_the_same_digest() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let span = span_len(alg);
            for len in [
                span,
                4 * span,
                4 * span + 1,
                5 * span + 3 * BLOCK + 7,
                17 * span + span - 1,
            ] {
                let mut data = prng_bytes(len as u64, len);
                // A zero block and a zero span among the data.
                data[BLOCK..2 * BLOCK].fill(0);
                if len >= 3 * span {
                    data[2 * span..3 * span].fill(0);
                }
                let want = digest_bytes(alg, &data);
                let mut f = tempfile::tempfile().unwrap();
                std::io::Write::write_all(&mut f, &data).unwrap();
                for threads in [1, 2, 3] {
                    let (got, n) = digest_file_parallel(alg, &f, len as u64, threads).unwrap();
                    assert_eq!((got, n), (want, len as u64), "{alg:?} {len} x{threads}");
                }
                // Spans pushed after bytes fed whole spans at a time.
                let mut h = Hasher::new(alg);
                h.update(&data[..span]);
                for c in data[span..].chunks_exact(span) {
                    h.push_span(&span_digest(alg, c));
                }
                h.update(&data[len / span * span..]);
                assert_eq!(h.finish(), want, "{alg:?} {len} mixed");
                assert_eq!(digest_file(alg, &f).unwrap().0, want);
            }
        }
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
        assert_eq!(
            hex_of(Algorithm::Sha256, b"hello world\n"),
            "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
        );
        assert_eq!(
            hex_of(Algorithm::Sha512, b"hello world\n"),
            "4098b052d2427dc9029c85062215dd6e6c41667bfae09f5ce90a49f7e01fca29\
             5c89b16a4d2703ac5b0593f476ca174675ee51829c2f1fd07c4133a87041c1d7"
        );
        // 129 blocks + 1 byte of the prng (two tree levels for sha256).
        let data = prng_bytes(42, 129 * BLOCK + 1);
        assert_eq!(
            hex_of(Algorithm::Sha256, &data),
            "85c04e59a206e82c66bf3d41cf115e465d8a0f028a9c44a3eb5f3be5e2d6a5ae"
        );
        assert_eq!(
            hex_of(Algorithm::Sha512, &data),
            "c520331c150078a9d54d5f9c0b9bac3e4754fe63a63702deeba601c2c6868d37\
             a9010ab52e9ebc9fe14f9d59224b8c95a8e4651af3e60058813a2a0736f0ba81"
        );
    }

    /// Feed `data` in pseudo-random pieces from 0 to `max` bytes.
    fn digest_in_pieces(alg: Algorithm, data: &[u8], seed: u64, max: usize) -> ObjectId {
        let sizes = prng_bytes(seed, data.len() + 1);
        let mut h = Hasher::new(alg);
        let mut off = 0;
        let mut i = 0;
        while off < data.len() {
            let r =
                u32::from_le_bytes([sizes[i % sizes.len()], sizes[(i + 1) % sizes.len()], 0, 0]);
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
                assert_eq!(
                    digest_in_pieces(alg, &data, seed, max),
                    whole,
                    "{alg} max={max}"
                );
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

    /// Every engine this CPU can run, scalar first.
    fn engines(alg: Algorithm) -> Vec<Engine> {
        let mut v = vec![Engine::Scalar];
        #[cfg(target_arch = "x86_64")]
        if alg == Algorithm::Sha512 && mb512::avx512::detected() {
            v.push(Engine::Sha512Avx512);
        }
        #[cfg(target_arch = "x86_64")]
        if alg == Algorithm::Sha512 && mb512::avx2::detected() {
            v.push(Engine::Sha512Avx2);
        }
        v
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn multi_buffer_sha512_matches_sha2() {
        fn check<const N: usize>(hash: impl Fn(&[[u8; BLOCK]; N], &mut [[u8; 64]; N])) {
            for seed in 1..4 {
                let data = prng_bytes(seed, N * BLOCK);
                let blocks: &[[u8; BLOCK]; N] = data.as_chunks::<BLOCK>().0.try_into().unwrap();
                let mut out = [[0u8; 64]; N];
                hash(blocks, &mut out);
                for (block, digest) in blocks.iter().zip(&out) {
                    assert_eq!(digest[..], sha2::Sha512::digest(block)[..]);
                }
            }
        }
        if mb512::avx512::detected() {
            // SAFETY: the CPU features were just detected.
            check(|b, o| unsafe { mb512::avx512::hash(b, o) });
        } else {
            eprintln!("no AVX-512 on this CPU: 8-lane SHA-512 not tested");
        }
        if mb512::avx2::detected() {
            // SAFETY: the CPU features were just detected.
            check(|b, o| unsafe { mb512::avx2::hash(b, o) });
        } else {
            eprintln!("no AVX2 on this CPU: 4-lane SHA-512 not tested");
        }
    }

    #[test]
    fn engines_agree() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            // Around the group sizes (1, 4 and 8 blocks) and level boundaries.
            for len in [
                1,
                BLOCK,
                3 * BLOCK + 5,
                4 * BLOCK,
                8 * BLOCK - 1,
                8 * BLOCK,
                8 * BLOCK + 1,
                65 * BLOCK + 9,
                300 * BLOCK,
            ]
            .into_iter()
            // Every count of leftover blocks (0..=8) with and without a tail.
            .chain((0..=9).flat_map(|n| [n * BLOCK, n * BLOCK + 100, 16 * BLOCK + n * BLOCK + 7]))
            .filter(|&len| len > 0)
            {
                let data = prng_bytes(len as u64, len);
                let expected = {
                    let mut h = Hasher::with_engine(alg, Engine::Scalar);
                    h.update(&data);
                    h.finish()
                };
                for engine in engines(alg) {
                    let mut h = Hasher::with_engine(alg, engine);
                    h.update(&data);
                    assert_eq!(h.finish(), expected, "{alg} {engine:?} len={len}");
                    for (seed, max) in [(5, 100), (6, 3 * BLOCK), (7, 40_000)] {
                        let mut h = Hasher::with_engine(alg, engine);
                        let mut off = 0;
                        for r in prng_bytes(seed, data.len() + 8).chunks(4) {
                            if off == data.len() {
                                break;
                            }
                            let n = (u32::from_le_bytes(r.try_into().unwrap()) as usize
                                % (max + 1))
                                .min(data.len() - off);
                            h.update(&data[off..off + n]);
                            off += n;
                        }
                        // prng pieces may not cover everything: feed the rest.
                        h.update(&data[off..]);
                        assert_eq!(h.finish(), expected, "{alg} {engine:?} len={len} max={max}");
                    }
                }
            }
        }
    }

    /// fs-verity digest the slow and obvious way, with the sha2 crate's
    /// digests: an oracle independent of the zero-block shortcut.
    fn naive_digest(alg: Algorithm, data: &[u8]) -> Vec<u8> {
        let h = |b: &[u8]| -> Vec<u8> {
            match alg {
                Algorithm::Sha256 => sha2::Sha256::digest(b).to_vec(),
                Algorithm::Sha512 => sha2::Sha512::digest(b).to_vec(),
            }
        };
        let padded_hashes = |bytes: &[u8]| -> Vec<u8> {
            bytes
                .chunks(BLOCK)
                .flat_map(|c| {
                    let mut b = c.to_vec();
                    b.resize(BLOCK, 0);
                    h(&b)
                })
                .collect()
        };
        let root = if data.is_empty() {
            vec![0u8; alg.digest_len()]
        } else {
            let mut level = padded_hashes(data);
            while level.len() > alg.digest_len() {
                level = padded_hashes(&level);
            }
            level
        };
        h(&descriptor(alg, data.len() as u64, &root))
    }

    /// Data with zero runs: random blocks, zero blocks, partial blocks.
    fn zero_heavy(seed: u64, pieces: &[(bool, usize)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, &(zero, len)) in pieces.iter().enumerate() {
            if zero {
                v.resize(v.len() + len, 0);
            } else {
                v.extend_from_slice(&prng_bytes(seed + i as u64, len));
            }
        }
        v
    }

    fn zero_cases() -> Vec<Vec<(bool, usize)>> {
        let b = BLOCK;
        vec![
            vec![(true, 1)],
            vec![(true, b - 1)],
            vec![(true, b)],
            vec![(true, b + 1)],
            vec![(true, 8 * b)],
            // Crosses the level boundaries (64 and 128 digests per block).
            vec![(true, 129 * b + 5)],
            vec![
                (false, 100),
                (true, 20 * b),
                (false, 3 * b),
                (true, 300 * b),
            ],
            vec![(true, 9 * b), (false, 1), (true, 70 * b + 17)],
            vec![(false, b), (true, 130 * b), (false, b / 2)],
        ]
    }

    #[test]
    fn zero_blocks_digest_like_any_blocks() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for (k, case) in zero_cases().iter().enumerate() {
                let data = zero_heavy(k as u64 * 10, case);
                let want = naive_digest(alg, &data);
                for engine in engines(alg) {
                    let mut h = Hasher::with_engine(alg, engine);
                    h.update(&data);
                    assert_eq!(
                        h.finish().as_bytes(),
                        &want[..],
                        "{alg} {engine:?} case {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn update_zeros_agrees_with_zero_bytes() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for (k, case) in zero_cases().iter().enumerate() {
                let data = zero_heavy(k as u64 * 10, case);
                let want = naive_digest(alg, &data);
                for engine in engines(alg) {
                    // Zero runs through update_zeros, split at odd places.
                    for split in [1usize, 777, BLOCK, 5 * BLOCK + 3] {
                        let mut h = Hasher::with_engine(alg, engine);
                        for (i, &(zero, len)) in case.iter().enumerate() {
                            if zero {
                                let first = split.min(len);
                                h.update(&vec![0; first]);
                                h.update_zeros((len - first) as u64);
                            } else {
                                h.update(&prng_bytes(k as u64 * 10 + i as u64, len));
                            }
                        }
                        assert_eq!(h.len(), data.len() as u64);
                        assert_eq!(
                            h.finish().as_bytes(),
                            &want[..],
                            "{alg} {engine:?} case {k} split {split}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sparse_file_digest_reads_holes_as_zeros() {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = tempfile::tempfile().unwrap();
        let mut data = vec![0u8; 3 << 20];
        for (at, seed) in [(5000usize, 1u64), (1 << 20, 2), ((3 << 20) - 10, 3)] {
            // 10 bytes each; the last ends exactly at the 3 MiB mark.
            let chunk = prng_bytes(seed, 10);
            data[at..at + chunk.len()].copy_from_slice(&chunk);
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.write_all(&chunk).unwrap();
        }
        // And a trailing hole past the last data.
        data.resize(5 << 20, 0);
        f.set_len(data.len() as u64).unwrap();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let (id, n) = digest_file(alg, &f).unwrap();
            assert_eq!(n, data.len() as u64);
            assert_eq!(id.as_bytes(), &naive_digest(alg, &data)[..]);
        }
        // An empty file.
        let e = tempfile::tempfile().unwrap();
        let (id, n) = digest_file(Algorithm::Sha256, &e).unwrap();
        assert_eq!((id, n), (digest_bytes(Algorithm::Sha256, b""), 0));
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
