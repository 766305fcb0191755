//! Pulling an image into the repository, from any [`ImageSource`].
//!
//! The manifest (through an index, by platform) and the config are
//! fetched and checked against their digests; each layer not stored yet is
//! streamed through its blob digest, decompressed, and split into a tar
//! splitstream (`oci-layer-sha256:<diff_id>`, contents as shared objects);
//! its diff_id must be the config's. Only then is the layer's stream
//! named. The config and the manifest become streams too, as
//! composefs-rs writes them ([`super::store`]); then, as composefs-rs does
//! at pull, the composefs image is made of the merged layers and linked
//! from the config ([`super::image`]; config and manifest streams
//! rewritten), and the name ([`super::tags`]) is pointed at the manifest:
//! `gc` keeps what a name reaches, and a failed pull publishes no name.

use std::io::{self, Read};

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

use super::source::ImageSource;
use super::spec::{self, Descriptor, Digest, ImageConfig, Index, Manifest, Platform};
use crate::fsverity::ObjectId;
use crate::repository::{RefKind, Repository};
use crate::splitstream::content_type;

pub use super::store::{config_id, layer_id, manifest_id};

/// Layers downloaded at once.
const PARALLEL_LAYERS: usize = 3;

/// At most this many layers in one image.
const MAX_LAYERS: usize = 4096;

/// The platform of this machine, as OCI names it.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: arch.into(),
        os: "linux".into(),
        variant: None,
    }
}

/// Parse `os/arch[/variant]`.
pub fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: None,
        }),
        [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: Some(v.to_string()),
        }),
        _ => bail!("platform {s:?}: expected os/arch[/variant], e.g. linux/amd64"),
    }
}

/// Told how much a pull will download, then of each layer as it starts,
/// arrives (from several threads at once) and ends.
pub trait PullProgress: Sync {
    /// Compressed bytes of all the layers to download.
    fn total(&self, _bytes: u64) {}
    /// Layer `index` (0-based, in manifest order) of `size` bytes starts;
    /// again if the network cut it short (its bytes so far are lost).
    fn layer_start(&self, _index: usize, _digest: &Digest, _size: u64) {}
    /// `n` more bytes of layer `index` arrived.
    fn bytes(&self, _index: usize, _n: u64) {}
    /// Layer `index` is stored (or failed).
    fn layer_done(&self, _index: usize) {}
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub name: String,
    pub manifest: Digest,
    pub layers_fetched: usize,
    pub layers_reused: usize,
    /// Blob bytes downloaded (compressed).
    pub bytes: u64,
    /// The composefs image linked from the config, or why there is none.
    pub image: std::result::Result<ObjectId, String>,
}

/// A reader that digests and counts what passes through it, and tells
/// `progress` of it.
struct Verifier<'a> {
    inner: Box<dyn Read + Send + 'a>,
    hasher: Sha256,
    count: u64,
    progress: Option<(&'a dyn PullProgress, usize)>,
}

impl<'a> Verifier<'a> {
    /// The blob `d` from `src`, never read past its declared size (+1 to
    /// notice a longer blob).
    fn blob(
        src: &'a dyn ImageSource,
        d: &Descriptor,
        progress: Option<(&'a dyn PullProgress, usize)>,
    ) -> Result<Self> {
        Ok(Verifier {
            inner: Box::new(src.blob(&d.digest, d.size)?.take(d.size.saturating_add(1))),
            hasher: Sha256::new(),
            count: 0,
            progress,
        })
    }

    /// Check size and digest of what was read.
    fn check(&self, want: &Descriptor, what: &str) -> Result<()> {
        if self.count != want.size {
            bail!(
                "{what}: {} bytes, the manifest says {}",
                self.count,
                want.size
            );
        }
        let got = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if got != want.digest.as_str() {
            bail!(
                "{what} is corrupt: its content digests to {got}, not {}",
                want.digest
            );
        }
        Ok(())
    }
}

impl Read for Verifier<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some((p, i)) = self.progress {
            p.bytes(i, n as u64);
        }
        Ok(n)
    }
}

/// A whole small blob (a config), checked; started again when the
/// network cuts it short.
fn fetch_document(src: &dyn ImageSource, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if d.size > super::layout::MAX_DOCUMENT {
        bail!("{what} is {} bytes: too large", d.size);
    }
    crate::net::retry(|| {
        let mut r = Verifier::blob(src, d, None)?;
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {what}"))?;
        r.check(d, what)?;
        Ok(bytes)
    })
}

/// The config `manifest` (whose digest is `digest`) names: fetched,
/// checked against its digest, parsed, and with one diff_id per layer.
pub(crate) fn fetch_config(
    src: &dyn ImageSource,
    digest: &Digest,
    manifest: &Manifest,
) -> Result<(Vec<u8>, ImageConfig)> {
    let what_config = format!("{}: config {}", src.describe(), manifest.config.digest);
    let config_bytes = fetch_document(src, &manifest.config, &what_config)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("{what_config} is not an image config"))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "{}: manifest {digest} has {} layers but its config lists {} diff_ids",
            src.describe(),
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    Ok((config_bytes, config))
}

fn platform_matches(p: &Platform, want: &Platform) -> bool {
    p.os == want.os
        && p.architecture == want.architecture
        && (want.variant.is_none() || p.variant == want.variant)
}

/// The image manifest a reference names, through an index by platform;
/// with its digest.
pub fn resolve_manifest(
    src: &dyn ImageSource,
    reference: &str,
    platform: &Platform,
) -> Result<(Digest, Vec<u8>, Manifest)> {
    let mut fetched = src.manifest(reference)?;
    let mut digest = Digest::of(&fetched.bytes);
    if let Ok(d) = Digest::parse(reference)
        && d != digest
    {
        bail!("{}: the manifest {d} digests to {digest}", src.describe());
    }
    for _ in 0..4 {
        if !spec::is_index(&fetched.media_type) {
            let m: Manifest = serde_json::from_slice(&fetched.bytes).with_context(|| {
                format!(
                    "{}: manifest {digest} is not an image manifest",
                    src.describe()
                )
            })?;
            if m.layers.len() > MAX_LAYERS {
                bail!(
                    "{}: manifest {digest} has {} layers",
                    src.describe(),
                    m.layers.len()
                );
            }
            if !matches!(
                m.config.media_type.as_str(),
                spec::OCI_CONFIG | spec::DOCKER_CONFIG
            ) {
                bail!(
                    "{}: manifest {digest}: unsupported config media type {:?}",
                    src.describe(),
                    m.config.media_type
                );
            }
            return Ok((digest, fetched.bytes, m));
        }
        let index: Index = serde_json::from_slice(&fetched.bytes)
            .with_context(|| format!("{}: index {digest} is not an image index", src.describe()))?;
        let Some(d) = index.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| platform_matches(p, platform))
        }) else {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            bail!(
                "{}: no image for {}/{} (offered: {})",
                src.describe(),
                platform.os,
                platform.architecture,
                offered.join(", ")
            );
        };
        let want = d.digest.clone();
        fetched = src.manifest(want.as_str())?;
        digest = Digest::of(&fetched.bytes);
        if digest != want {
            bail!("{}: manifest {want} digests to {digest}", src.describe());
        }
    }
    bail!("{}: indexes nested too deep", src.describe())
}

/// The stream `content_id` names, if it is stored: the entry and its
/// object (an entry left naming a missing object is not stored).
fn stored(repo: &Repository, content_id: &str) -> Option<ObjectId> {
    repo.entry_object(RefKind::Stream, content_id)
        .ok()
        .filter(|id| repo.has_object(id).unwrap_or(false))
}

/// Download, verify and store one layer; its stream object.
///
/// Three stages overlap, each on its own thread: the download (with the
/// blob digest), the decompression, and the split into objects (with
/// the diff_id on a helper thread of its own, and the objects digested
/// and written by the writer's pool).
fn pull_layer(
    repo: &Repository,
    src: &dyn ImageSource,
    index: usize,
    d: &Descriptor,
    diff_id: &Digest,
    what: &str,
    progress: &dyn PullProgress,
) -> Result<ObjectId> {
    spec::layer_compression(&d.media_type).with_context(|| what.to_string())?;
    let raw = Verifier::blob(src, d, Some((progress, index)))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut writer = repo
        .stream_writer(content_type::OCI_LAYER)?
        .parallel(threads)?;
    std::thread::scope(|scope| -> Result<()> {
        let panicked = |stage: &str| anyhow::anyhow!("{what}: the {stage} thread panicked");
        let (fetched, fetcher) = crate::readahead::spawn(scope, "fetch", raw)
            .context("cannot start a download thread")?;
        // By magic, not by media type: what the bytes are decides.
        let (_, tar) = crate::compression::decompress(fetched)
            .with_context(|| format!("cannot read {what}"))?;
        let (tar, inflater) = crate::readahead::spawn(scope, "inflate", tar)
            .context("cannot start a decompression thread")?;
        let summary = crate::tarsplit::split(tar, &mut writer, |_| {})
            .with_context(|| format!("cannot import {what}"));
        let mut fetched = inflater
            .join()
            .map_err(|_| panicked("decompression"))?
            .into_inner();
        // Whatever follows the compressed tar counts too.
        let drained = match &summary {
            Ok(_) => io::copy(&mut fetched, &mut io::sink())
                .map(drop)
                .with_context(|| format!("cannot read {what}")),
            Err(_) => Ok(()),
        };
        drop(fetched);
        let raw = fetcher.join().map_err(|_| panicked("download"))?;
        let summary = summary?;
        drained?;
        raw.check(d, what)?;
        if summary.diff_id() != diff_id.as_str() {
            bail!(
                "{what}: the uncompressed layer digests to {}, the config says {diff_id}",
                summary.diff_id()
            );
        }
        Ok(())
    })?;
    let id = writer
        .finish()
        .with_context(|| format!("cannot store {what}"))?;
    repo.link_entry(RefKind::Stream, &layer_id(diff_id), &id)?;
    tracing::info!("{what}: stored as stream {id}");
    Ok(id)
}

/// Pull the image `reference` (a tag, a digest, or "" for the source's
/// own) names, storing it as `oci/NAME`. `progress` hears of the layer
/// bytes to download and of them as they arrive.
pub fn pull(
    repo: &Repository,
    src: &dyn ImageSource,
    reference: &str,
    name: &str,
    platform: &Platform,
    progress: &dyn PullProgress,
) -> Result<PullReport> {
    repo.ensure_writable()?;
    super::tags::check(name)?;
    let _span = tracing::info_span!("pull", image = name).entered();
    tracing::info!("resolving {reference:?} in {}", src.describe());
    let (digest, manifest_bytes, manifest) = resolve_manifest(src, reference, platform)?;
    tracing::info!(
        "manifest {digest}: {} layers, {}",
        manifest.layers.len(),
        crate::show::human_bytes(
            manifest
                .layers
                .iter()
                .map(|l| l.size)
                .fold(0, u64::saturating_add)
        )
    );
    let mut report = PullReport {
        name: name.to_string(),
        manifest: digest.clone(),
        layers_fetched: 0,
        layers_reused: 0,
        bytes: 0,
        image: Err(String::new()),
    };
    let mid = manifest_id(&digest);
    if let Some(id) = stored(repo, &mid)
        && let Ok(img) = super::store::StoredImage::from_stream(repo, &id)
    {
        report.layers_reused = manifest.layers.len();
        tracing::info!("manifest {digest} is stored already: naming it");
        report.image = ensure_image(repo, &img, None)?;
        repo.sync()?;
        super::tags::set(repo, name, &mid)?;
        return Ok(report);
    }
    let (config_bytes, config) = fetch_config(src, &digest, &manifest)?;

    // Layers not stored yet are fetched side by side (a few at a time:
    // each also stores its objects on every core).
    let mut layers: Vec<Option<ObjectId>> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(_, diff_id)| stored(repo, &layer_id(diff_id)))
        .collect();
    report.layers_reused = layers.iter().filter(|l| l.is_some()).count();
    for (i, l) in layers.iter().enumerate() {
        match l {
            Some(id) => tracing::info!(
                "layer {} ({}): stored already as stream {id}",
                i + 1,
                manifest.layers[i].digest
            ),
            None => tracing::info!(
                "layer {} ({}, {}): to fetch",
                i + 1,
                manifest.layers[i].digest,
                crate::show::human_bytes(manifest.layers[i].size)
            ),
        }
    }
    let todo: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].is_none()).collect();
    progress.total(
        todo.iter()
            .map(|&i| manifest.layers[i].size)
            .fold(0, u64::saturating_add),
    );
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    repo.with_flusher(|| {
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL_LAYERS.min(todo.len()) {
                scope.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break };
                        let d = &manifest.layers[i];
                        let what = format!("{}: layer {} ({})", src.describe(), i + 1, d.digest);
                        let _span = tracing::info_span!("layer", n = i + 1).entered();
                        // A blob the network cut short starts again; objects
                        // stored by an earlier attempt are not written twice.
                        let r = crate::net::retry(|| {
                            progress.layer_start(i, &d.digest, d.size);
                            pull_layer(repo, src, i, d, &config.rootfs.diff_ids[i], &what, progress)
                        });
                        progress.layer_done(i);
                        let failed = r.is_err();
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((i, r));
                        if failed {
                            // Stop taking new layers; the others finish.
                            next.store(todo.len(), std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    for (i, r) in results {
        layers[i] = Some(r?);
        report.layers_fetched += 1;
        report.bytes = report.bytes.saturating_add(manifest.layers[i].size);
    }
    let layers: Vec<ObjectId> = layers
        .into_iter()
        .collect::<Option<_>>()
        .context("a layer was not fetched")?;

    // The layers must merge (no entry escaping the root, no hardlink to
    // nothing, …): a hostile image fails here, not at its first mount,
    // and gets no ref. Only the streams' headers are read. The merged tree
    // is kept when a composefs image will be made of it.
    let does_not_merge = || {
        format!(
            "{}: manifest {digest}: the layers do not merge",
            src.describe()
        )
    };
    let merged = super::merge::merge(repo, &layers).with_context(does_not_merge)?;

    let layer_refs: Vec<(Digest, ObjectId)> = config
        .rootfs
        .diff_ids
        .iter()
        .cloned()
        .zip(layers.iter().copied())
        .collect();
    let config_stream = super::store::write_config(repo, &config_bytes, &layer_refs, &[])?;
    let manifest_stream = super::store::write_manifest(
        repo,
        &manifest_bytes,
        &manifest.config.digest,
        config_stream,
        &layer_refs,
    )?;
    let img = super::store::StoredImage::from_stream(repo, &manifest_stream)?;
    report.image = ensure_image(repo, &img, Some(merged))?;
    repo.sync()?;
    super::tags::set(repo, name, &mid)?;
    Ok(report)
}

/// The composefs image of a pulled image, made and linked from its config
/// as composefs-rs does at pull time, unless it is already. An image that
/// has none (no `/usr`: composefs-rs would fail the whole pull) is still
/// pulled; the reason is returned instead.
fn ensure_image(
    repo: &Repository,
    img: &super::store::StoredImage,
    merged: Option<crate::tree::MemTree>,
) -> Result<std::result::Result<ObjectId, String>> {
    if !img.legacy
        && let Some(id) = img.image(repo.erofs_version())
        && repo.has_object(&id)?
    {
        return Ok(Ok(id));
    }
    let merged = match merged {
        Some(m) => m,
        None => img.tree(repo)?,
    };
    let (tree, why) = super::image::transformed(img, merged)?;
    if let Some(why) = why {
        return Ok(Err(why));
    }
    let c = super::image::commit_tree(repo, img, &tree, None, None)?;
    Ok(Ok(c.id))
}
