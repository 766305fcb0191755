//! ostree object names: SHA-256 checksums, object types and the paths they
//! have inside an ostree repository.

use std::fmt;

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};

/// An ostree object checksum (SHA-256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Checksum(pub [u8; 32]);

impl Checksum {
    /// Parse 64 lowercase or uppercase hex digits.
    pub fn from_hex(s: &str) -> Result<Checksum> {
        if s.len() != 64 {
            bail!("{s:?} is not an ostree checksum (64 hex digits)");
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| anyhow::anyhow!("{s:?} is not an ostree checksum (64 hex digits)"))?;
        Ok(Checksum(b))
    }

    /// From the 32 raw bytes GVariant objects carry (`ay`).
    pub fn from_bytes(b: &[u8]) -> Result<Checksum> {
        let Ok(a) = <[u8; 32]>::try_from(b) else {
            bail!("checksum field has {} bytes, not 32", b.len());
        };
        Ok(Checksum(a))
    }

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Checksum {
        Checksum(Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// ostree's "modified base64" (`/` written as `_`, no padding), used in
    /// static delta paths.
    pub fn to_b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(self.0)
            .replace('/', "_")
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// ostree object types, with the numbers ostree uses in deltas and APIs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum ObjType {
    File = 1,
    DirTree = 2,
    DirMeta = 3,
    Commit = 4,
    TombstoneCommit = 5,
    CommitMeta = 6,
    PayloadLink = 7,
    FileXattrs = 8,
    FileXattrsLink = 9,
}

impl ObjType {
    pub fn from_u8(n: u8) -> Option<ObjType> {
        Some(match n {
            1 => ObjType::File,
            2 => ObjType::DirTree,
            3 => ObjType::DirMeta,
            4 => ObjType::Commit,
            5 => ObjType::TombstoneCommit,
            6 => ObjType::CommitMeta,
            7 => ObjType::PayloadLink,
            8 => ObjType::FileXattrs,
            9 => ObjType::FileXattrsLink,
            _ => return None,
        })
    }

    /// The file name extension in a repository of `archive` mode (bare
    /// modes store files as `.file`; see [`ObjType::extension_bare`]).
    pub fn extension(self) -> &'static str {
        match self {
            ObjType::File => "filez",
            ObjType::DirTree => "dirtree",
            ObjType::DirMeta => "dirmeta",
            ObjType::Commit => "commit",
            ObjType::TombstoneCommit => "commit-tombstone",
            ObjType::CommitMeta => "commitmeta",
            ObjType::PayloadLink => "payload-link",
            ObjType::FileXattrs => "file-xattrs",
            ObjType::FileXattrsLink => "file-xattrs-link",
        }
    }

    pub fn extension_bare(self) -> &'static str {
        match self {
            ObjType::File => "file",
            other => other.extension(),
        }
    }

    /// Human name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjType::File => "file",
            ObjType::DirTree => "dirtree",
            ObjType::DirMeta => "dirmeta",
            ObjType::Commit => "commit",
            ObjType::TombstoneCommit => "commit tombstone",
            ObjType::CommitMeta => "detached commit metadata",
            ObjType::PayloadLink => "payload link",
            ObjType::FileXattrs => "file xattrs",
            ObjType::FileXattrsLink => "file xattrs link",
        }
    }

    /// Metadata objects are named by the SHA-256 of their bytes.
    pub fn is_meta(self) -> bool {
        matches!(
            self,
            ObjType::DirTree | ObjType::DirMeta | ObjType::Commit | ObjType::TombstoneCommit
        )
    }
}

/// `objects/ab/cdef….EXT` for an object in an `archive` repository.
pub fn object_path(csum: &Checksum, objtype: ObjType) -> String {
    object_path_ext(csum, objtype.extension())
}

pub fn object_path_ext(csum: &Checksum, ext: &str) -> String {
    let h = csum.to_hex();
    format!("objects/{}/{}.{}", &h[..2], &h[2..], ext)
}

/// `deltas/…` directory of the static delta `from` → `to` (ostree's
/// `_ostree_get_relative_static_delta_path`).
pub fn delta_dir(from: Option<&Checksum>, to: &Checksum) -> String {
    let to64 = to.to_b64();
    match from {
        None => format!("deltas/{}/{}", &to64[..2], &to64[2..]),
        Some(f) => {
            let f64 = f.to_b64();
            format!("deltas/{}/{}-{}", &f64[..2], &f64[2..], to64)
        }
    }
}

/// The summary's name for a delta: `TO` or `FROM-TO` in hex.
pub fn delta_name(from: Option<&Checksum>, to: &Checksum) -> String {
    match from {
        None => to.to_hex(),
        Some(f) => format!("{f}-{to}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let c = Checksum::of(b"x");
        assert_eq!(Checksum::from_hex(&c.to_hex()).unwrap(), c);
        assert!(Checksum::from_hex("zz").is_err());
        assert!(Checksum::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn b64_uses_underscore() {
        let c = Checksum([0xff; 32]);
        assert!(c.to_b64().contains('_'));
        assert!(!c.to_b64().contains('/'));
        assert_eq!(c.to_b64().len(), 43);
    }
}
