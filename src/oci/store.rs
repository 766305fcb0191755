//! Pulled images as stored, in composefs-rs 0.9.4's layout (see
//! `docs/formats.md`):
//!
//! - `streams/oci-manifest-<digest>`: content type `ocimanif`; the manifest
//!   JSON as one external object (its exact bytes); named refs
//!   `config:<config digest>` → the config stream and `<diff_id>` → each
//!   layer stream.
//! - `streams/oci-config-<digest>`: content type `ociconfg`; the config JSON
//!   as one external object; named refs `<diff_id>` → each layer stream and,
//!   once a composefs image was made, `composefs.image.v1` (format 1) or
//!   `composefs.image` (format 2) → the image object (which gc must keep).
//! - `streams/oci-layer-<diff_id>`: content type `ocilayer`, the tar.
//! - `streams/refs/oci/<name>` → the manifest entry ([`super::tags`]).
//!
//! Images pulled by older versions of this tool hold the JSON inline and
//! name the config by its bare digest; they are read as well ([`legacy`]
//! says which) and rewritten in the current layout when an image is linked.
//!
//! [`legacy`]: StoredImage::legacy

use anyhow::{Context, Result, bail};

use super::spec::{Digest, ImageConfig, Manifest};
use super::tags;
use crate::fsverity::ObjectId;
use crate::repository::{RefKind, Repository};
use crate::splitstream::{content_type, content_type_name};
use crate::tree::MemTree;

/// The named ref of a config stream to the format-2 composefs image.
pub const IMAGE_KEY_V2: &str = "composefs.image";
/// The named ref of a config stream to the format-1 composefs image.
pub const IMAGE_KEY_V1: &str = "composefs.image.v1";
/// Named refs to boot images (composefs-rs's `composefs.image.boot…`):
/// kept as they are when a config stream is rewritten.
pub const BOOT_KEY_PREFIX: &str = "composefs.image.boot";
/// The manifest's named ref to its config stream: this prefix + digest.
pub const CONFIG_KEY_PREFIX: &str = "config:";

pub fn layer_id(diff_id: &Digest) -> String {
    format!("oci-layer-{diff_id}")
}

pub fn config_id(d: &Digest) -> String {
    format!("oci-config-{d}")
}

pub fn manifest_id(d: &Digest) -> String {
    format!("oci-manifest-{d}")
}

/// The config's named ref for a composefs image of EROFS format `version`
/// (composefs-rs has none for format 0).
pub fn image_key(version: u32) -> Option<&'static str> {
    match version {
        1 => Some(IMAGE_KEY_V1),
        2 => Some(IMAGE_KEY_V2),
        _ => None,
    }
}

/// A stored JSON document (manifest or config) and its stream's named refs.
struct Document {
    bytes: Vec<u8>,
    named: Vec<(String, ObjectId)>,
    /// Held inline (as older versions of this tool wrote it).
    inline: bool,
}

/// Read the document stream `id`; `what` names it in errors.
fn read_document(repo: &Repository, id: &ObjectId, want: u64, what: &str) -> Result<Document> {
    let mut r = repo
        .open_stream_object(id)
        .with_context(|| format!("{what}: cannot open stream {id}"))?;
    if r.content_type != want {
        bail!(
            "{what}: stream {id} has content type {}, not {}",
            content_type_name(r.content_type),
            content_type_name(want)
        );
    }
    let objects = r.object_refs().to_vec();
    if objects.len() > 1 {
        bail!(
            "{what}: stream {id} splices {} objects, expected the JSON as one",
            objects.len()
        );
    }
    for o in &objects {
        if !repo.has_object(o)? {
            bail!("{what}: stream {id} holds its JSON in object {o}, which is missing");
        }
    }
    let named = r.named_refs().to_vec();
    let mut bytes = Vec::new();
    r.cat(repo, &mut bytes)
        .with_context(|| format!("{what}: cannot read stream {id}"))?;
    Ok(Document {
        bytes,
        named,
        inline: objects.is_empty(),
    })
}

/// A pulled image, read back.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_stream: ObjectId,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
    pub config_stream: ObjectId,
    /// Layer stream objects, lowest first.
    pub layers: Vec<ObjectId>,
    /// Linked composefs images: `(named ref, image object)`
    /// (`composefs.image`, `composefs.image.v1`, boot images).
    pub images: Vec<(String, ObjectId)>,
    /// Stored by an older version of this tool (JSON inline, config named
    /// by its bare digest).
    pub legacy: bool,
}

/// The manifest stream a name (as pulled or tagged) refers to.
pub fn manifest_stream(repo: &Repository, name: &str) -> Result<ObjectId> {
    match tags::lookup(repo, name)? {
        Some((_, entry)) if entry.starts_with("oci-manifest-") => repo
            .entry_object(RefKind::Stream, &entry)
            .with_context(|| format!("OCI image {name:?}")),
        Some((r, entry)) => bail!("streams/refs/{r} names {entry}, not an OCI manifest"),
        None => bail!("no OCI image named {name:?} (see `composefs oci images`)"),
    }
}

fn find(named: &[(String, ObjectId)], key: &str) -> Option<ObjectId> {
    named.iter().find(|(n, _)| n == key).map(|(_, id)| *id)
}

impl StoredImage {
    pub fn open(repo: &Repository, name: &str) -> Result<StoredImage> {
        Self::from_stream(repo, &manifest_stream(repo, name)?)
            .with_context(|| format!("OCI image {name:?}"))
    }

    pub fn from_stream(repo: &Repository, manifest_stream: &ObjectId) -> Result<StoredImage> {
        let m = read_document(
            repo,
            manifest_stream,
            content_type::OCI_MANIFEST,
            "manifest",
        )?;
        let manifest_digest = Digest::of(&m.bytes);
        let manifest: Manifest = serde_json::from_slice(&m.bytes)
            .with_context(|| format!("stored manifest {manifest_digest} is not a manifest"))?;
        let cd = &manifest.config.digest;
        let key = format!("{CONFIG_KEY_PREFIX}{cd}");
        let config_stream = find(&m.named, &key)
            .or_else(|| find(&m.named, cd.as_str()).filter(|_| m.inline))
            .with_context(|| {
                format!(
                    "manifest {manifest_digest} (stream {manifest_stream}) has no named ref {key:?} to its config"
                )
            })?;
        let what = format!("config {cd} of manifest {manifest_digest}");
        let c = read_document(repo, &config_stream, content_type::OCI_CONFIG, &what)?;
        if Digest::of(&c.bytes) != *cd {
            bail!(
                "{what}: stream {config_stream} holds JSON digesting to {}",
                Digest::of(&c.bytes)
            );
        }
        let config: ImageConfig = serde_json::from_slice(&c.bytes)
            .with_context(|| format!("{what} is not an image config"))?;
        let mut layers = Vec::new();
        for diff_id in &config.rootfs.diff_ids {
            let id = find(&c.named, diff_id.as_str()).with_context(|| {
                format!("{what} (stream {config_stream}) has no named ref to layer {diff_id}")
            })?;
            layers.push(id);
        }
        let images = c
            .named
            .iter()
            .filter(|(n, _)| n == IMAGE_KEY_V2 || n.starts_with("composefs.image."))
            .cloned()
            .collect();
        Ok(StoredImage {
            manifest_digest,
            manifest,
            manifest_bytes: m.bytes,
            manifest_stream: *manifest_stream,
            config_bytes: c.bytes,
            config,
            config_stream,
            layers,
            images,
            legacy: m.inline || c.inline,
        })
    }

    /// The merged tree of the layers, untransformed (what `umoci unpack`
    /// gives; headers only are read).
    pub fn tree(&self, repo: &Repository) -> Result<MemTree> {
        super::merge::merge(repo, &self.layers)
    }

    /// The composefs image of EROFS format `version` linked from the
    /// config, if any.
    pub fn image(&self, version: u32) -> Option<ObjectId> {
        image_key(version).and_then(|k| find(&self.images, k))
    }

    /// `(diff_id, layer stream)` in config order.
    pub fn layer_refs(&self) -> Vec<(Digest, ObjectId)> {
        self.config
            .rootfs
            .diff_ids
            .iter()
            .cloned()
            .zip(self.layers.iter().copied())
            .collect()
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

/// Store `json` as a document stream: one external object, `named` refs.
fn write_document(
    repo: &Repository,
    ct: u64,
    json: &[u8],
    named: &[(&str, ObjectId)],
) -> Result<ObjectId> {
    let mut w = repo.stream_writer(ct)?;
    for (n, id) in named {
        w.add_named_ref(n, *id)?;
    }
    w.write_external(json, json.len() as u64)?;
    w.finish()
}

/// Write the config stream (refs in the order composefs-rs adds them:
/// layers by diff_id, then `composefs.image`, `composefs.image.v1`, then
/// boot images) and link `streams/oci-config-<digest>` to it once synced.
pub fn write_config(
    repo: &Repository,
    json: &[u8],
    layers: &[(Digest, ObjectId)],
    images: &[(String, ObjectId)],
) -> Result<ObjectId> {
    let digest = Digest::of(json);
    let mut named: Vec<(&str, ObjectId)> = layers.iter().map(|(d, id)| (d.as_str(), *id)).collect();
    for key in [IMAGE_KEY_V2, IMAGE_KEY_V1] {
        if let Some(id) = find(images, key) {
            named.push((key, id));
        }
    }
    for (k, id) in images {
        if k.starts_with(BOOT_KEY_PREFIX) {
            named.push((k, *id));
        }
    }
    let id = write_document(repo, content_type::OCI_CONFIG, json, &named)
        .with_context(|| format!("cannot store config {digest}"))?;
    repo.sync()?;
    repo.link_entry(RefKind::Stream, &config_id(&digest), &id)?;
    Ok(id)
}

/// Write the manifest stream (`config:<digest>` first, then the layers in
/// diff_id order) and link `streams/oci-manifest-<digest>` once synced.
pub fn write_manifest(
    repo: &Repository,
    json: &[u8],
    config_digest: &Digest,
    config_stream: ObjectId,
    layers: &[(Digest, ObjectId)],
) -> Result<ObjectId> {
    let digest = Digest::of(json);
    let key = format!("{CONFIG_KEY_PREFIX}{config_digest}");
    let mut named = vec![(key.as_str(), config_stream)];
    named.extend(layers.iter().map(|(d, id)| (d.as_str(), *id)));
    let id = write_document(repo, content_type::OCI_MANIFEST, json, &named)
        .with_context(|| format!("cannot store manifest {digest}"))?;
    repo.sync()?;
    repo.link_entry(RefKind::Stream, &manifest_id(&digest), &id)?;
    Ok(id)
}

/// Link composefs image `image` (EROFS format `version`) from the image's
/// config stream under its key, rewriting the config and then the
/// manifest stream (every name of the manifest follows, being a link to
/// its entry). An image already linked under that key is replaced.
pub fn link_image(
    repo: &Repository,
    img: &StoredImage,
    version: u32,
    image: ObjectId,
) -> Result<StoredImage> {
    let key = image_key(version).with_context(|| {
        format!("composefs images of EROFS format {version} have no named ref in an OCI config")
    })?;
    let mut images: Vec<(String, ObjectId)> = img
        .images
        .iter()
        .filter(|(k, _)| k != key)
        .cloned()
        .collect();
    images.push((key.to_string(), image));
    let layers = img.layer_refs();
    let config_stream = write_config(repo, &img.config_bytes, &layers, &images)?;
    let manifest_stream = write_manifest(
        repo,
        &img.manifest_bytes,
        &img.manifest.config.digest,
        config_stream,
        &layers,
    )?;
    StoredImage::from_stream(repo, &manifest_stream)
}

/// Every name: `(name, image or why it cannot be read)`.
pub fn list(repo: &Repository) -> Result<Vec<(String, Result<StoredImage>)>> {
    Ok(tags::list(repo)?
        .into_iter()
        .map(|(name, _, entry)| {
            let img = if entry.starts_with("oci-manifest-") {
                repo.entry_object(RefKind::Stream, &entry)
                    .and_then(|id| StoredImage::from_stream(repo, &id))
            } else {
                Err(anyhow::anyhow!("names {entry}, not an OCI manifest"))
            };
            (name, img)
        })
        .collect())
}
