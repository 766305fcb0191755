//! The digest algorithm and the digest value that names objects.

use std::fmt;
use std::str::FromStr;

/// An fs-verity hash algorithm, always with 4096-byte Merkle tree blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// log2 of the Merkle tree block size used everywhere in this crate.
    pub const LG_BLOCKSIZE: u8 = 12;
    /// The Merkle tree block size.
    pub const BLOCK_SIZE: usize = 1 << Self::LG_BLOCKSIZE;

    /// Length of a digest in bytes (32 or 64).
    pub const fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    /// The kernel's `FS_VERITY_HASH_ALG_*` number (1 = sha256, 2 = sha512).
    pub const fn kernel_id(self) -> u8 {
        match self {
            Algorithm::Sha256 => 1,
            Algorithm::Sha512 => 2,
        }
    }

    /// Inverse of [`Algorithm::kernel_id`].
    pub fn from_kernel_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Algorithm::Sha256),
            2 => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// Short name: `sha256` or `sha512`.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The `meta.json` spelling, e.g. `fsverity-sha512-12`.
    pub fn meta_name(self) -> String {
        format!("fsverity-{}-{}", self.name(), Self::LG_BLOCKSIZE)
    }

    /// Parse the `meta.json` spelling (`fsverity-sha256-12`).
    pub fn from_meta_name(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("fsverity-")?;
        let (hash, lg) = rest.rsplit_once('-')?;
        if lg != "12" {
            return None;
        }
        hash.parse().ok()
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(format!(
                "unknown hash algorithm {other:?} (expected sha256 or sha512)"
            )),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An fs-verity digest: the name of an object in the repository.
///
/// Plain data (`Copy`), 65 bytes; the algorithm travels with the value so a
/// sha256 id can never be confused with a prefix of a sha512 one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    alg: Algorithm,
    bytes: [u8; 64],
}

impl ObjectId {
    /// Build from raw digest bytes; `None` if the length does not fit `alg`.
    pub fn from_bytes(alg: Algorithm, raw: &[u8]) -> Option<Self> {
        if raw.len() != alg.digest_len() {
            return None;
        }
        let mut bytes = [0u8; 64];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(ObjectId { alg, bytes })
    }

    /// Parse lowercase or uppercase hex of exactly the algorithm's length.
    pub fn from_hex(alg: Algorithm, s: &str) -> Option<Self> {
        if s.len() != alg.digest_len() * 2 {
            return None;
        }
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(s, &mut bytes[..alg.digest_len()]).ok()?;
        Some(ObjectId { alg, bytes })
    }

    /// The all-zero digest (the fs-verity root hash of an empty file is zero,
    /// but the file digest is not: this is only a placeholder value).
    pub fn zero(alg: Algorithm) -> Self {
        ObjectId {
            alg,
            bytes: [0u8; 64],
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.alg.digest_len()]
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// The id named by an object path, [`Self::object_path`]'s inverse:
    /// `XX/<rest of hex>`, with or without a leading `/` (as overlayfs
    /// redirects spell it); the algorithm from the length; hex digits in
    /// either case. Anything else is `None`.
    pub fn from_object_path(p: &[u8]) -> Option<Self> {
        let p = p.strip_prefix(b"/").unwrap_or(p);
        let s = std::str::from_utf8(p).ok()?;
        let (fan, rest) = s.split_once('/')?;
        if fan.len() != 2 || rest.contains('/') {
            return None;
        }
        let alg = match fan.len() + rest.len() {
            64 => Algorithm::Sha256,
            128 => Algorithm::Sha512,
            _ => return None,
        };
        let mut bytes = [0u8; 64];
        let n = alg.digest_len();
        hex::decode_to_slice(fan, &mut bytes[..1]).ok()?;
        hex::decode_to_slice(rest, &mut bytes[1..n]).ok()?;
        Some(ObjectId { alg, bytes })
    }

    /// Path of the object below `objects/`: `XX/<rest of hex>`.
    pub fn object_path(&self) -> String {
        /// Each byte's two hex digits.
        const HEX: [[u8; 2]; 256] = {
            let digits = b"0123456789abcdef";
            let mut t = [[0u8; 2]; 256];
            let mut i = 0;
            while i < 256 {
                t[i] = [digits[i >> 4], digits[i & 15]];
                i += 1;
            }
            t
        };
        let b = self.as_bytes();
        let mut s = Vec::with_capacity(2 * b.len() + 1);
        s.extend_from_slice(&HEX[b[0] as usize]);
        s.push(b'/');
        for &x in &b[1..] {
            s.extend_from_slice(&HEX[x as usize]);
        }
        String::from_utf8(s).expect("hex digits are ASCII")
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg, self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_path() {
        let id = ObjectId::from_hex(Algorithm::Sha256, &"ab".repeat(32)).unwrap();
        assert_eq!(id.to_hex(), "ab".repeat(32));
        assert_eq!(id.object_path(), format!("ab/{}", "ab".repeat(31)));
        assert!(ObjectId::from_hex(Algorithm::Sha512, &"ab".repeat(32)).is_none());
        assert!(ObjectId::from_hex(Algorithm::Sha256, &"zz".repeat(32)).is_none());
    }

    #[test]
    fn object_paths_parse_back() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let hex: String = (0..alg.digest_len())
                .map(|i| format!("{:02x}", i * 7 % 256))
                .collect();
            let id = ObjectId::from_hex(alg, &hex).unwrap();
            let p = id.object_path();
            assert_eq!(ObjectId::from_object_path(p.as_bytes()), Some(id));
            assert_eq!(
                ObjectId::from_object_path(format!("/{p}").as_bytes()),
                Some(id)
            );
            assert_eq!(
                ObjectId::from_object_path(p.to_uppercase().as_bytes()),
                Some(id)
            );
        }
        for bad in [
            "".to_string(),
            "ab".to_string(),
            format!("abc/{}", "0".repeat(61)),
            format!("ab/{}", "0".repeat(61)),
            format!("ab/cd/{}", "0".repeat(59)),
            format!("zz/{}", "0".repeat(62)),
            format!("//ab/{}", "0".repeat(62)),
            "../etc/passwd".to_string(),
        ] {
            assert_eq!(ObjectId::from_object_path(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn meta_names() {
        assert_eq!(Algorithm::Sha512.meta_name(), "fsverity-sha512-12");
        assert_eq!(
            Algorithm::from_meta_name("fsverity-sha256-12"),
            Some(Algorithm::Sha256)
        );
        assert_eq!(Algorithm::from_meta_name("fsverity-sha256-16"), None);
        assert_eq!(Algorithm::from_meta_name("sha256"), None);
    }
}
