//! `composefs::fsverity` against the reference implementation: the
//! `fsverity digest` command of fsverity-utils (Debian package `fsverity`),
//! on files whose sizes sit on every interesting boundary: empty, partial and
//! whole blocks, and the points where the Merkle tree grows a level (128
//! digests per block for sha256, 64 for sha512).
//!
//! The command is required: without it these tests fail rather than skip.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

mod common;

use composefs::fsverity::{Algorithm, Hasher, ObjectId, digest_file, digest_reader};

const BLOCK: u64 = 4096;
const ALGS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

/// xorshift64*: deterministic, fast, good enough to defeat any structure.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A temp file of `size` pseudo-random bytes.
fn random_file(size: u64, seed: u64) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("create temp file");
    let mut w = BufWriter::with_capacity(1 << 20, file.as_file());
    let mut rng = Prng(seed | 1);
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n]).expect("write temp file");
        left -= n as u64;
    }
    w.flush().expect("flush temp file");
    drop(w);
    assert_eq!(file.as_file().metadata().unwrap().len(), size);
    file
}

/// What `fsverity digest --hash-alg=ALG FILE` prints, parsed; panics with
/// an explanation when the command is missing or fails.
fn fsverity_cli(alg: Algorithm, path: &Path) -> ObjectId {
    let out = match Command::new("fsverity")
        .arg("digest")
        .arg(format!("--hash-alg={alg}"))
        .arg(path)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run `fsverity digest` ({e}): this test needs the fsverity-utils command \
             (Debian/Ubuntu: `apt-get install fsverity`) as its reference implementation"
        ),
    };
    assert!(
        out.status.success(),
        "`fsverity digest --hash-alg={alg} {}` failed: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Output: `sha256:<hex> FILE`.
    let stdout = String::from_utf8(out.stdout).expect("fsverity output is UTF-8");
    let first = stdout.split_whitespace().next().unwrap_or_default();
    let hex = first
        .strip_prefix(alg.name())
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or_else(|| panic!("unexpected `fsverity digest` output: {stdout:?}"));
    ObjectId::from_hex(alg, hex)
        .unwrap_or_else(|| panic!("bad digest in `fsverity digest` output: {stdout:?}"))
}

/// Compare ours with the CLI for a file of `size` bytes, both algorithms.
/// `piecewise` also feeds the file through [`Hasher::update`] in odd-sized
/// pieces (4097 bytes), which takes the staging paths rather than whole
/// groups of blocks straight from the read buffer.
fn check(size: u64, piecewise: bool) {
    let file = random_file(size, size.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234);
    for alg in ALGS {
        let expected = fsverity_cli(alg, file.path());
        let (ours, len) = digest_reader(alg, File::open(file.path()).unwrap()).unwrap();
        assert_eq!(len, size);
        assert_eq!(
            ours, expected,
            "{alg} digest of a {size}-byte file differs from `fsverity digest`"
        );
        // The file path: from 8 MiB, whole spans hashed on several threads.
        let (ours, len) = digest_file(alg, &File::open(file.path()).unwrap()).unwrap();
        assert_eq!(len, size);
        assert_eq!(
            ours, expected,
            "{alg} digest_file of a {size}-byte file differs from `fsverity digest`"
        );
        if piecewise {
            let data = std::fs::read(file.path()).unwrap();
            let mut h = Hasher::new(alg);
            for piece in data.chunks(4097) {
                h.update(piece);
            }
            assert_eq!(h.len(), size);
            assert_eq!(
                h.finish(),
                expected,
                "{alg} piecewise digest of a {size}-byte file"
            );
        }
    }
}

#[test]
fn small_files() {
    for size in [0, 1, 4095, 4096, 4097, (1 << 20) + 1] {
        check(size, true);
    }
}

#[test]
fn sha256_level_boundary() {
    // One level-1 block holds 128 sha256 digests.
    check(128 * BLOCK, true);
    check(128 * BLOCK + 1, true);
}

#[test]
fn sha512_level_boundary() {
    // One level-1 block holds 64 sha512 digests.
    check(64 * BLOCK, true);
    check(64 * BLOCK + 1, true);
}

#[test]
fn third_level() {
    // Just past two full sha256 levels: three levels for sha256, four for sha512.
    check(128 * 128 * BLOCK + 1, true);
}

#[test]
fn large_file() {
    // ~300 MiB, not a multiple of the block size.
    check(300 * (1 << 20) + 12345, false);
}

/// `COMPOSEFS_SIMD` caps the SHA-512 engine (to measure or test what a CPU
/// without AVX-512 gets): every cap gives `fsverity digest`'s digests, for
/// sizes that take the multi-lane groups, the partial last groups and the
/// one-block path.
#[test]
fn every_simd_cap_gives_the_same_digests() {
    let files: Vec<_> = [1, 2 * BLOCK + 5, 3 * BLOCK, 9 * BLOCK + 1, 200 * BLOCK + 17]
        .iter()
        .map(|&size| random_file(size, size ^ 0x5eed))
        .collect();
    let expected: Vec<String> = files
        .iter()
        .map(|f| fsverity_cli(Algorithm::Sha512, f.path()).to_hex())
        .collect();
    for cap in ["none", "avx2", "avx512"] {
        let mut args = vec![OsStr::new("measure")];
        args.extend(files.iter().map(|f| f.path().as_os_str()));
        let out = common::composefs(&args, None, &[("COMPOSEFS_SIMD", OsStr::new(cap))]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        assert_eq!(got, expected, "COMPOSEFS_SIMD={cap}");
    }
}
