//! Pulled images as stored: `streams/refs/oci/NAME` → the manifest stream
//! (the manifest's bytes, naming the config stream) → the config stream
//! (the config's bytes, naming each layer stream by diff_id) → the layers.

use anyhow::{Context, Result, bail};

use super::pull::REF_PREFIX;
use super::spec::{Digest, ImageConfig, Manifest};
use crate::fsverity::ObjectId;
use crate::repository::{RefKind, Repository};
use crate::tree::MemTree;

/// A pulled image, read back.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config_bytes: Vec<u8>,
    pub manifest_bytes: Vec<u8>,
    pub config: ImageConfig,
    /// Layer stream objects, lowest first.
    pub layers: Vec<ObjectId>,
}

/// A stream's named references.
type NamedRefs = Vec<(String, ObjectId)>;

/// A stream's bytes (configs and manifests are small and wholly inline)
/// and its named references.
fn read_stream(repo: &Repository, id: &ObjectId) -> Result<(Vec<u8>, NamedRefs)> {
    let mut r = repo.open_stream_object(id)?;
    let named = r.named_refs().to_vec();
    let mut bytes = Vec::new();
    r.cat(repo, &mut bytes)?;
    Ok((bytes, named))
}

/// The manifest stream a name (`NAME`, as pulled) refers to.
pub fn manifest_stream(repo: &Repository, name: &str) -> Result<ObjectId> {
    let full = format!("{REF_PREFIX}{name}");
    match repo.ref_entry(RefKind::Stream, &full)? {
        Some(entry) if entry.starts_with("oci-manifest-") => repo
            .entry_object(RefKind::Stream, &entry)
            .with_context(|| format!("OCI image {name:?}")),
        Some(entry) => bail!("streams/refs/{full} names {entry}, not an OCI manifest"),
        None => bail!("no OCI image named {name:?} (see `composefs oci images`)"),
    }
}

impl StoredImage {
    pub fn open(repo: &Repository, name: &str) -> Result<StoredImage> {
        Self::from_stream(repo, &manifest_stream(repo, name)?)
            .with_context(|| format!("OCI image {name:?}"))
    }

    pub fn from_stream(repo: &Repository, manifest_stream: &ObjectId) -> Result<StoredImage> {
        let (manifest_bytes, named) = read_stream(repo, manifest_stream)?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).context("stored manifest is not a manifest")?;
        let config_stream = named
            .iter()
            .find(|(n, _)| n == manifest.config.digest.as_str())
            .map(|(_, id)| *id)
            .with_context(|| {
                format!(
                    "stored manifest does not name config {}",
                    manifest.config.digest
                )
            })?;
        let (config_bytes, layer_refs) = read_stream(repo, &config_stream)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .context("stored config is not an image config")?;
        let mut layers = Vec::new();
        for diff_id in &config.rootfs.diff_ids {
            let id = layer_refs
                .iter()
                .find(|(n, _)| n == diff_id.as_str())
                .map(|(_, id)| *id)
                .with_context(|| format!("stored config does not name layer {diff_id}"))?;
            layers.push(id);
        }
        Ok(StoredImage {
            manifest_digest: Digest::of(&manifest_bytes),
            manifest,
            config_bytes,
            manifest_bytes,
            config,
            layers,
        })
    }

    /// The merged tree of the layers (headers only are read).
    pub fn tree(&self, repo: &Repository) -> Result<MemTree> {
        super::merge::merge(repo, &self.layers)
    }

    /// Compressed size of the layers, as the manifest gives it.
    pub fn size(&self) -> u64 {
        self.manifest
            .layers
            .iter()
            .map(|l| l.size)
            .fold(0, u64::saturating_add)
    }
}

/// Every pulled image: `(name, image or why it cannot be read)`.
pub fn list(repo: &Repository) -> Result<Vec<(String, Result<StoredImage>)>> {
    Ok(repo
        .list_refs(RefKind::Stream)?
        .into_iter()
        .filter_map(|(name, _)| name.strip_prefix(REF_PREFIX).map(str::to_string))
        .map(|n| {
            let img = StoredImage::open(repo, &n);
            (n, img)
        })
        .collect())
}
