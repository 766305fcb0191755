//! `meta.json`: the repository's format version, digest algorithm and feature flags.
//!
//! Compatible with composefs-rs: `{"version":1,"algorithm":"fsverity-sha512-12",
//! "features":{"compatible":[],"read-only-compatible":[],"incompatible":[]}}`.
//! Unknown *incompatible* features make us refuse the repository, unknown
//! *read-only-compatible* ones make it read-only, unknown *compatible* ones are ignored.
//!
//! We add one compatible feature of our own, [`NO_FSVERITY`]: the repository
//! lives on a filesystem without fs-verity, so objects are named by digests
//! computed in userspace and the kernel does not enforce them.

use serde::{Deserialize, Serialize};

use crate::fsverity::Algorithm;

pub const META_FILENAME: &str = "meta.json";

/// The newest base format version this tool understands.
pub const FORMAT_VERSION: u32 = 1;

/// Compatible feature: objects have no fs-verity (the filesystem lacks it).
pub const NO_FSVERITY: &str = "no-fsverity";

/// Read-only-compatible feature: images are EROFS format version 1.
pub const V1_EROFS: &str = "v1_erofs";

const KNOWN_RO_COMPAT: &[&str] = &[V1_EROFS];
const KNOWN_INCOMPAT: &[&str] = &[];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Features {
    #[serde(default)]
    pub compatible: Vec<String>,
    #[serde(default)]
    pub read_only_compatible: Vec<String>,
    #[serde(default)]
    pub incompatible: Vec<String>,
}

/// composefs-rs's `erofs_formats`: which EROFS format version images of this
/// repository are written in (`default`), and which more (`extra`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErofsFormats {
    pub default: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    pub algorithm: String,
    #[serde(default)]
    pub features: Features,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erofs_formats: Option<ErofsFormats>,
}

/// What the metadata allows us to do with the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub algorithm: Algorithm,
    /// The EROFS format version of this repository's images (composefs-rs's
    /// rule: `erofs_formats.default`, else 1 with the `v1_erofs` flag, else 2).
    pub erofs_version: u32,
    /// `false` when unknown read-only-compatible features are present.
    pub writable: bool,
    /// `true` when objects carry (and reads enforce) fs-verity.
    pub verity: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot parse {META_FILENAME}: {0}")]
    Parse(#[from] serde_json::Error),
    #[error(
        "repository format version {0} is newer than this tool understands (up to {FORMAT_VERSION}); upgrade composefs"
    )]
    TooNew(u32),
    #[error("unknown digest algorithm {0:?} in {META_FILENAME}")]
    Algorithm(String),
    #[error("repository needs features this tool does not know: {0:?}; upgrade composefs")]
    Incompatible(Vec<String>),
}

impl Meta {
    pub fn new(algorithm: Algorithm, verity: bool) -> Self {
        let mut features = Features::default();
        if !verity {
            features.compatible.push(NO_FSVERITY.to_string());
        }
        Meta {
            version: FORMAT_VERSION,
            algorithm: algorithm.meta_name(),
            features,
            erofs_formats: None,
        }
    }

    pub fn parse(text: &[u8]) -> Result<Self, MetaError> {
        Ok(serde_json::from_slice(text)?)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("meta serializes");
        s.push('\n');
        s
    }

    /// Apply the compatibility rules.
    pub fn check(&self) -> Result<Checked, MetaError> {
        if self.version > FORMAT_VERSION {
            return Err(MetaError::TooNew(self.version));
        }
        let algorithm = Algorithm::from_meta_name(&self.algorithm)
            .ok_or_else(|| MetaError::Algorithm(self.algorithm.clone()))?;
        let unknown = |list: &[String], known: &[&str]| -> Vec<String> {
            list.iter()
                .filter(|f| !known.contains(&f.as_str()))
                .cloned()
                .collect()
        };
        let incompat = unknown(&self.features.incompatible, KNOWN_INCOMPAT);
        if !incompat.is_empty() {
            return Err(MetaError::Incompatible(incompat));
        }
        let writable = unknown(&self.features.read_only_compatible, KNOWN_RO_COMPAT).is_empty();
        let verity = !self.features.compatible.iter().any(|f| f == NO_FSVERITY);
        let erofs_version = match &self.erofs_formats {
            Some(f) => f.default,
            None if self
                .features
                .read_only_compatible
                .iter()
                .any(|f| f == V1_EROFS) =>
            {
                1
            }
            None => 2,
        };
        Ok(Checked {
            algorithm,
            erofs_version,
            writable,
            verity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Meta::new(Algorithm::Sha256, false);
        let back = Meta::parse(m.to_json().as_bytes()).unwrap();
        assert_eq!(back, m);
        let c = back.check().unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(!c.verity);
        assert!(c.writable);
    }

    #[test]
    fn composefs_rs_style_meta() {
        let m = Meta::parse(br#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"compatible":[],"read-only-compatible":["v1_erofs"],"incompatible":[]},"erofs_formats":{"default":1}}"#).unwrap();
        let c = m.check().unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha512);
        assert!(c.verity && c.writable);
    }

    #[test]
    fn refusals() {
        let too_new = Meta::parse(br#"{"version":2,"algorithm":"fsverity-sha512-12"}"#).unwrap();
        assert!(matches!(too_new.check(), Err(MetaError::TooNew(2))));
        let incompat = Meta::parse(
            br#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"incompatible":["warp"]}}"#,
        )
        .unwrap();
        assert!(matches!(incompat.check(), Err(MetaError::Incompatible(_))));
        let ro = Meta::parse(
            br#"{"version":1,"algorithm":"fsverity-sha512-12","features":{"read-only-compatible":["x"]}}"#,
        )
        .unwrap();
        assert!(!ro.check().unwrap().writable);
        let alg = Meta::parse(br#"{"version":1,"algorithm":"md5"}"#).unwrap();
        assert!(matches!(alg.check(), Err(MetaError::Algorithm(_))));
        assert!(Meta::parse(b"{not json").is_err());
    }
}
