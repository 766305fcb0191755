//! `meta.json`: the repository's format version, digest algorithm and feature flags.
//!
//! Compatible with composefs-rs: `{"version":1,"algorithm":"fsverity-sha512-12",
//! "features":{"compatible":[],"read-only-compatible":[],"incompatible":[]}}`.
//! Unknown *incompatible* features make us refuse the repository, unknown
//! *read-only-compatible* ones make it read-only, unknown *compatible* ones are ignored.
//!
//! Whether objects need fs-verity is signalled as composefs-rs does: by
//! fs-verity on `meta.json` itself (none: "insecure", objects need none).
//! Earlier versions of this tool wrote a compatible feature of their own,
//! [`NO_FSVERITY`], instead; it is still honoured when read, never written.
//!
//! The EROFS format of the repository's images: `erofs_formats.default`
//! (0, 1 or 2); without that field, 1 with the read-only-compatible
//! `v1_erofs` flag, else 2. New repositories get both the field and, for
//! version 1, the flag, as `cfsctl init` writes them.

use serde::{Deserialize, Serialize};

use crate::fsverity::Algorithm;

pub const META_FILENAME: &str = "meta.json";

/// The newest base format version this tool understands.
pub const FORMAT_VERSION: u32 = 1;

/// Compatible feature written by earlier versions of this tool: objects
/// have no fs-verity. Read, never written (see the module doc).
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
    /// `false` when the legacy [`NO_FSVERITY`] flag says objects have no
    /// fs-verity; otherwise fs-verity on `meta.json` decides.
    pub verity: bool,
}

/// Why `meta.json` is refused: it does not parse, or asks for what this
/// tool does not have.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Not JSON, or not the fields `meta.json` has (the source says where).
    #[error("cannot parse {META_FILENAME}")]
    Parse(#[from] serde_json::Error),
    #[error(
        "repository format version {0} is newer than this tool understands (up to {FORMAT_VERSION}); upgrade composefs"
    )]
    TooNew(u32),
    #[error("unknown digest algorithm {0:?} in {META_FILENAME}")]
    Algorithm(String),
    #[error("repository needs features this tool does not know: {0:?}; upgrade composefs")]
    Incompatible(Vec<String>),
    #[error(
        "unsupported EROFS format version {0} in {META_FILENAME} erofs_formats (0, 1 or 2 are known); upgrade composefs"
    )]
    ErofsVersion(u32),
}

impl Meta {
    /// What `cfsctl init --erofs-version N` writes: the version, the
    /// algorithm, `erofs_formats: {"default": N}` and, for N = 1, the
    /// read-only-compatible `v1_erofs` flag.
    pub fn new(algorithm: Algorithm, erofs_version: u32) -> Self {
        let mut features = Features::default();
        if erofs_version == 1 {
            features.read_only_compatible.push(V1_EROFS.to_string());
        }
        Meta {
            version: FORMAT_VERSION,
            algorithm: algorithm.meta_name(),
            features,
            erofs_formats: Some(ErofsFormats {
                default: erofs_version,
                extra: Vec::new(),
            }),
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
        if erofs_version > 2 {
            return Err(MetaError::ErofsVersion(erofs_version));
        }
        if let Some(bad) = self
            .erofs_formats
            .iter()
            .flat_map(|f| f.extra.iter())
            .find(|v| **v > 2)
        {
            return Err(MetaError::ErofsVersion(*bad));
        }
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
        for v in 0..=2 {
            let m = Meta::new(Algorithm::Sha256, v);
            let back = Meta::parse(m.to_json().as_bytes()).unwrap();
            assert_eq!(back, m);
            let c = back.check().unwrap();
            assert_eq!(c.algorithm, Algorithm::Sha256);
            assert_eq!(c.erofs_version, v);
            assert!(c.verity && c.writable);
            assert_eq!(m.features.read_only_compatible.is_empty(), v != 1);
        }
        let legacy = Meta::parse(
            br#"{"version":1,"algorithm":"fsverity-sha256-12","features":{"compatible":["no-fsverity"]}}"#,
        )
        .unwrap();
        let c = legacy.check().unwrap();
        assert!(!c.verity);
        assert_eq!(c.erofs_version, 2);
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
        let e = Meta::parse(b"{not json").unwrap_err();
        assert!(matches!(e, MetaError::Parse(_)));
        // The parser's message is the source, said once.
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert!(
            chain.starts_with("cannot parse meta.json: key must be a string"),
            "{chain}"
        );
        assert_eq!(chain.matches("key must").count(), 1, "{chain}");
        let v9 = Meta::parse(
            br#"{"version":1,"algorithm":"fsverity-sha512-12","erofs_formats":{"default":9}}"#,
        )
        .unwrap();
        assert!(matches!(v9.check(), Err(MetaError::ErofsVersion(9))));
    }
}
