//! Multi-buffer SHA-512 of whole 4096-byte tree blocks: one independent block
//! per SIMD lane: 8 lanes with AVX-512, 4 with AVX2.
//!
//! A single SHA-512 is a long serial dependency chain that SIMD cannot speed
//! up (sha2's AVX2 backend only vectorizes the message schedule and runs at
//! ~590 MB/s here, no faster than plain scalar code, while OpenSSL's
//! hand-scheduled assembly reaches ~830 MB/s). The blocks of a Merkle tree
//! level are independent though, so hashing several side by side fills the
//! vector units. Every lane hashes a 4096-byte message, so all lanes share
//! the same final padding block, whose message schedule is a constant.
//!
//! The AVX-512 variant (one-instruction rotates and three-input logic, twice
//! the lanes) needs Rust 1.89, where those intrinsics became stable.

use super::{BLOCK, SHA512_IV, SHA512_PAD_BLOCK};

/// SHA-512 round constants (FIPS 180-4, 4.2.3).
#[rustfmt::skip]
const K: [u64; 80] = [
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
];

/// `K[t] + W[t]` for the padding block of a 4096-byte message, the same
/// in every lane.
const PAD_KW: [u64; 80] = {
    let mut w = [0u64; 80];
    let mut t = 0;
    while t < 16 {
        let p = &SHA512_PAD_BLOCK;
        let i = 8 * t;
        w[t] = u64::from_be_bytes([
            p[i],
            p[i + 1],
            p[i + 2],
            p[i + 3],
            p[i + 4],
            p[i + 5],
            p[i + 6],
            p[i + 7],
        ]);
        t += 1;
    }
    while t < 80 {
        let x = w[t - 15];
        let s0 = x.rotate_right(1) ^ x.rotate_right(8) ^ (x >> 7);
        let y = w[t - 2];
        let s1 = y.rotate_right(19) ^ y.rotate_right(61) ^ (y >> 6);
        w[t] = s1
            .wrapping_add(w[t - 7])
            .wrapping_add(s0)
            .wrapping_add(w[t - 16]);
        t += 1;
    }
    let mut kw = [0u64; 80];
    t = 0;
    while t < 80 {
        kw[t] = K[t].wrapping_add(w[t]);
        t += 1;
    }
    kw
};

/// One SHA-512 round on all lanes; rotates the roles of the eight working
/// variables by writing only `$d` and `$h` (the caller renames).
macro_rules! round {
    ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $kw:expr) => {{
        let kw = $kw;
        let s1 = xor3(ror::<14, 50>($e), ror::<18, 46>($e), ror::<41, 23>($e));
        let t1 = add(add($h, s1), add(ch($e, $f, $g), kw));
        let s0 = xor3(ror::<28, 36>($a), ror::<34, 30>($a), ror::<39, 25>($a));
        let t2 = add(s0, maj($a, $b, $c));
        $d = add($d, t1);
        $h = add(t1, t2);
    }};
}

/// Sixteen rounds; `$kw!(w, base, j)` yields `K + W` of round `base + j`.
macro_rules! rounds16 {
    ($kw:ident, $w:ident, $base:expr,
     $a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident) => {
        round!($a, $b, $c, $d, $e, $f, $g, $h, $kw!($w, $base, 0));
        round!($h, $a, $b, $c, $d, $e, $f, $g, $kw!($w, $base, 1));
        round!($g, $h, $a, $b, $c, $d, $e, $f, $kw!($w, $base, 2));
        round!($f, $g, $h, $a, $b, $c, $d, $e, $kw!($w, $base, 3));
        round!($e, $f, $g, $h, $a, $b, $c, $d, $kw!($w, $base, 4));
        round!($d, $e, $f, $g, $h, $a, $b, $c, $kw!($w, $base, 5));
        round!($c, $d, $e, $f, $g, $h, $a, $b, $kw!($w, $base, 6));
        round!($b, $c, $d, $e, $f, $g, $h, $a, $kw!($w, $base, 7));
        round!($a, $b, $c, $d, $e, $f, $g, $h, $kw!($w, $base, 8));
        round!($h, $a, $b, $c, $d, $e, $f, $g, $kw!($w, $base, 9));
        round!($g, $h, $a, $b, $c, $d, $e, $f, $kw!($w, $base, 10));
        round!($f, $g, $h, $a, $b, $c, $d, $e, $kw!($w, $base, 11));
        round!($e, $f, $g, $h, $a, $b, $c, $d, $kw!($w, $base, 12));
        round!($d, $e, $f, $g, $h, $a, $b, $c, $kw!($w, $base, 13));
        round!($c, $d, $e, $f, $g, $h, $a, $b, $kw!($w, $base, 14));
        round!($b, $c, $d, $e, $f, $g, $h, $a, $kw!($w, $base, 15));
    };
}

/// Rounds 0-15: the message words as loaded.
macro_rules! kw_loaded {
    ($w:ident, $base:expr, $j:literal) => {
        add($w[$j], splat(K[$base + $j]))
    };
}

/// Rounds 16-79: extend the message schedule in place (`w` is a ring of
/// the last 16 words), then use it.
macro_rules! kw_scheduled {
    ($w:ident, $base:expr, $j:literal) => {{
        let x = $w[($j + 1) & 15];
        let s0 = xor3(ror::<1, 63>(x), ror::<8, 56>(x), shr::<7>(x));
        let y = $w[($j + 14) & 15];
        let s1 = xor3(ror::<19, 45>(y), ror::<61, 3>(y), shr::<6>(y));
        $w[$j] = add(add($w[$j], s0), add($w[($j + 9) & 15], s1));
        add($w[$j], splat(K[$base + $j]))
    }};
}

/// Rounds of the shared padding block: a constant `K + W`.
macro_rules! kw_padding {
    ($w:ident, $base:expr, $j:literal) => {
        splat(PAD_KW[$base + $j])
    };
}

/// The body of `hash(blocks, out)` for one instruction set, whose module
/// provides `V`, `LANES`, `splat`, `add`, `xor3`, `ch`, `maj`, `ror`,
/// `shr` and `load`.
macro_rules! hash_fn {
    ($features:literal) => {
        /// SHA-512 of each of `LANES` 4096-byte blocks.
        #[target_feature(enable = $features)]
        pub(crate) fn hash(blocks: &[[u8; BLOCK]; LANES], out: &mut [[u8; 64]; LANES]) {
            let mut state: [V; 8] = SHA512_IV.map(|x| splat(x));
            for chunk in 0..BLOCK / 128 {
                let mut w: [V; 16] = load(blocks, chunk);
                let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
                rounds16!(kw_loaded, w, 0, a, b, c, d, e, f, g, h);
                for r in 1..5 {
                    rounds16!(kw_scheduled, w, 16 * r, a, b, c, d, e, f, g, h);
                }
                for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                    *s = add(*s, v);
                }
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
            for r in 0..5 {
                rounds16!(kw_padding, w, 16 * r, a, b, c, d, e, f, g, h);
            }
            for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = add(*s, v);
            }
            for (i, s) in state.into_iter().enumerate() {
                for (lane, word) in store(s).into_iter().enumerate() {
                    out[lane][8 * i..8 * i + 8].copy_from_slice(&word.to_be_bytes());
                }
            }
        }
    };
}

/// 8 lanes of `__m512i`; needs AVX512F (rotates, ternary logic, gathers)
/// and AVX512BW (byte shuffle).
pub(crate) mod avx512 {
    use super::{BLOCK, K, PAD_KW, SHA512_IV};
    use core::arch::x86_64::*;

    pub(crate) const LANES: usize = 8;
    type V = __m512i;

    /// True when this CPU can run [`hash`].
    pub(crate) fn detected() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn splat(x: u64) -> V {
        _mm512_set1_epi64(x as i64)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn add(x: V, y: V) -> V {
        _mm512_add_epi64(x, y)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn xor3(x: V, y: V, z: V) -> V {
        _mm512_ternarylogic_epi64::<0x96>(x, y, z)
    }
    /// `(e & f) ^ (!e & g)`
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn ch(e: V, f: V, g: V) -> V {
        _mm512_ternarylogic_epi64::<0xca>(e, f, g)
    }
    /// Majority of `a`, `b`, `c`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn maj(a: V, b: V, c: V) -> V {
        _mm512_ternarylogic_epi64::<0xe8>(a, b, c)
    }
    /// Rotate right by `R` (`L` = 64 - `R` is for the AVX2 variant).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn ror<const R: i32, const L: i32>(x: V) -> V {
        _mm512_ror_epi64::<R>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn shr<const N: u32>(x: V) -> V {
        _mm512_srli_epi64::<N>(x)
    }
    /// The 16 big-endian message words of 128-byte chunk `chunk` of every
    /// block, word `t` of lane `l` in element `l` of vector `t`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn load(blocks: &[[u8; BLOCK]; LANES], chunk: usize) -> [V; 16] {
        assert!(chunk < BLOCK / 128);
        // Offsets of the lanes in 8-byte units: the blocks are contiguous.
        let idx = _mm512_setr_epi64(0, 512, 1024, 1536, 2048, 2560, 3072, 3584);
        let bswap = _mm512_set4_epi64(
            0x08090a0b0c0d0e0f,
            0x0001020304050607,
            0x08090a0b0c0d0e0f,
            0x0001020304050607,
        );
        let base = blocks.as_ptr().cast::<u8>();
        let mut w = [_mm512_setzero_si512(); 16];
        for (t, w) in w.iter_mut().enumerate() {
            let off = chunk * 128 + t * 8;
            // SAFETY: lane `l` reads the 8 bytes at `blocks[l][off..off + 8]`
            // (byte offset `8 * 512 * l + off` from the start of the array
            // of arrays), in bounds since `off + 8 <= BLOCK` by the assert;
            // gathers need no alignment.
            let v = unsafe { _mm512_i64gather_epi64::<8>(idx, base.add(off).cast()) };
            *w = _mm512_shuffle_epi8(v, bswap);
        }
        w
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn store(x: V) -> [u64; LANES] {
        // SAFETY: same size, and every bit pattern is a valid u64.
        unsafe { core::mem::transmute::<V, [u64; LANES]>(x) }
    }

    hash_fn!("avx512f,avx512bw");
}

/// 4 lanes of `__m256i` with AVX2 only: rotates are shift/shift/or.
pub(crate) mod avx2 {
    use super::{BLOCK, K, PAD_KW, SHA512_IV};
    use core::arch::x86_64::*;

    pub(crate) const LANES: usize = 4;
    type V = __m256i;

    /// True when this CPU can run [`hash`].
    pub(crate) fn detected() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn splat(x: u64) -> V {
        _mm256_set1_epi64x(x as i64)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(x: V, y: V) -> V {
        _mm256_add_epi64(x, y)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor3(x: V, y: V, z: V) -> V {
        _mm256_xor_si256(_mm256_xor_si256(x, y), z)
    }
    /// `(e & f) ^ (!e & g)` as `((f ^ g) & e) ^ g`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ch(e: V, f: V, g: V) -> V {
        _mm256_xor_si256(_mm256_and_si256(_mm256_xor_si256(f, g), e), g)
    }
    /// Majority as `((a ^ b) & (b ^ c)) ^ b`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn maj(a: V, b: V, c: V) -> V {
        _mm256_xor_si256(
            _mm256_and_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(b, c)),
            b,
        )
    }
    /// Rotate right by `R`; `L` must be `64 - R`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ror<const R: i32, const L: i32>(x: V) -> V {
        _mm256_or_si256(_mm256_srli_epi64::<R>(x), _mm256_slli_epi64::<L>(x))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn shr<const N: i32>(x: V) -> V {
        _mm256_srli_epi64::<N>(x)
    }
    /// The 16 big-endian message words of 128-byte chunk `chunk` of every
    /// block, word `t` of lane `l` in element `l` of vector `t`: four
    /// 32-byte loads per lane and 4x4 transposes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(blocks: &[[u8; BLOCK]; LANES], chunk: usize) -> [V; 16] {
        let bswap = _mm256_setr_epi64x(
            0x0001020304050607,
            0x08090a0b0c0d0e0f,
            0x0001020304050607,
            0x08090a0b0c0d0e0f,
        );
        let mut w = [_mm256_setzero_si256(); 16];
        for k in 0..4 {
            let off = chunk * 128 + k * 32;
            let q0 = load32(&blocks[0], off);
            let q1 = load32(&blocks[1], off);
            let q2 = load32(&blocks[2], off);
            let q3 = load32(&blocks[3], off);
            let t0 = _mm256_unpacklo_epi64(q0, q1);
            let t1 = _mm256_unpackhi_epi64(q0, q1);
            let t2 = _mm256_unpacklo_epi64(q2, q3);
            let t3 = _mm256_unpackhi_epi64(q2, q3);
            w[4 * k] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x20>(t0, t2), bswap);
            w[4 * k + 1] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x20>(t1, t3), bswap);
            w[4 * k + 2] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x31>(t0, t2), bswap);
            w[4 * k + 3] = _mm256_shuffle_epi8(_mm256_permute2x128_si256::<0x31>(t1, t3), bswap);
        }
        w
    }
    /// The 32 bytes at `off` of `block`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load32(block: &[u8; BLOCK], off: usize) -> V {
        let bytes: &[u8; 32] = block[off..off + 32].try_into().unwrap();
        // SAFETY: reads exactly the 32 bytes of `bytes`; unaligned is fine.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store(x: V) -> [u64; LANES] {
        // SAFETY: same size, and every bit pattern is a valid u64.
        unsafe { core::mem::transmute::<V, [u64; LANES]>(x) }
    }

    hash_fn!("avx2");
}
