//! An image in a registry read lazily: layers in zstd:chunked or eStargz
//! form carry a table of contents (every file's metadata and where its
//! compressed bytes sit), fetched by range request; the layers' tables
//! merged as a pull merges layers; a file's bytes fetched by range on
//! first read, checked against the table's digest and stored in the
//! repository. Images with plain gzip/zstd layers are refused (they have
//! no table: pull them).
//!
//! What is fetched and checked, and when:
//! - [`open_tree`]: the manifest (through an index, by platform) and the
//!   config, exactly as `oci pull` fetches and checks them
//!   ([`crate::oci::pull::resolve_manifest`], [`crate::oci::pull::fetch_config`]);
//!   then each layer's table of contents by range request: found through
//!   the layer's annotations (zstd:chunked: `…manifest-position`, else the
//!   blob's footer; eStargz: the footer), refused unless it digests to
//!   the annotation that names it (`…manifest-checksum`,
//!   `containerd.io/snapshot/stargz/toc.digest`). The tables' entries are
//!   merged by the OCI rules of a pull ([`crate::oci::merge::EntryMerge`]:
//!   whiteouts, opaque directories, hardlinks, hostile paths refused);
//!   sizes and ranges are checked against the blob.
//! - [`crate::tree::Tree::content_object`]: a file's compressed range,
//!   decompressed (zstd frames, gzip members), refused unless it is the
//!   table's size and sha256, stored as a repository object.
//!
//! What is not checked: the layers' blob digests and the config's
//! diff_ids, which would need every layer's whole blob. The tree shown
//! is the one the tables describe, which the manifest authenticates
//! through their digests; a producer whose table disagrees with its own
//! tar would show here what a pull of the same image would not.
//!
//! The tree is the merged layers with composefs-rs's OCI transform when
//! it applies (a `/usr` directory, a `/run` that is a directory or
//! absent), as `oci/NAME` shows a pulled image; untransformed otherwise,
//! or when [`LazyOptions::raw`] asks (as `oci-raw/NAME`).
//!
//! Modules: `toc` (the table's JSON, entries into the merge, each file's
//! range), `zstd_chunked` and `estargz` (finding and verifying the
//! table), `tree` (the [`Tree`] and its fetches).

mod estargz;
mod memo;
mod toc;
mod tree;
mod zstd_chunked;

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use super::merge::EntryMerge;
use super::reference::ImageRef;
use super::registry::{Registry, RegistryOptions};
use super::source::ImageSource;
use super::spec::{Descriptor, Platform};
use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::tree::{FileData, Kind, Tree};
use toc::{Compression, LayerInfo};

pub use toc::MAX_FILE_SIZE;

/// Largest table of contents read, compressed or not (as
/// containers/storage bounds it).
pub const MAX_TOC: u64 = 150 << 20;

/// How a registry image is opened lazily.
#[derive(Default)]
pub struct LazyOptions {
    /// Registry access (plain HTTP, credentials, timeouts, retries).
    pub registry: RegistryOptions,
    /// The image of this platform in an index (default: this machine's).
    pub platform: Option<Platform>,
    /// The merged layers as they are, without composefs-rs's OCI
    /// transform (as `oci-raw/NAME` shows a pulled image).
    pub raw: bool,
    /// An image whose layers carry no table of contents is pulled whole
    /// ([`pull_whole`]) by the caller instead of refused.
    pub pull_plain: bool,
}

/// Why an image cannot be read lazily: a layer without a table of
/// contents (plain gzip or zstd). The caller may pull it instead.
#[derive(Debug, thiserror::Error)]
#[error(
    "the layer ({media_type}) has no table of contents (it is neither zstd:chunked nor \
     eStargz): it cannot be read lazily; `composefs oci pull` the image instead (or pass --pull)"
)]
pub struct NoTableOfContents {
    pub media_type: String,
}

/// Whether `e` says the image has a layer without a table of contents.
pub fn is_not_lazy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<NoTableOfContents>())
}

/// The registry, tag or digest and platform that `reference`
/// (`docker://REGISTRY/NAME[:TAG|@DIGEST]`) and `opts` name.
fn registry_image(reference: &str, opts: &LazyOptions) -> Result<(Registry, String, Platform)> {
    let ImageRef::Registry {
        host,
        repository,
        reference: tag,
    } = ImageRef::parse(reference)?
    else {
        bail!("{reference}: only registry images (docker://…) are read lazily or pulled here");
    };
    let registry = Registry::new(&host, &repository, &opts.registry)?;
    let platform = opts
        .platform
        .clone()
        .unwrap_or_else(super::pull::host_platform);
    Ok((registry, tag, platform))
}

/// Pull `reference` whole (as `composefs oci pull` does, under its default
/// name) for an image that cannot be read lazily; its manifest stream.
pub fn pull_whole(repo: &Repository, reference: &str, opts: &LazyOptions) -> Result<ObjectId> {
    struct Quiet;
    impl super::pull::PullProgress for Quiet {}
    let name = ImageRef::parse(reference)?.default_name();
    let (registry, tag, platform) = registry_image(reference, opts)?;
    tracing::info!("{reference}: no table of contents: pulling it whole as oci/{name}");
    let report = super::pull::pull(repo, &registry, &tag, &name, &platform, &Quiet)
        .with_context(|| format!("cannot pull {reference}"))?;
    super::store::manifest_stream(repo, &report.name)
}

/// The image `reference` (`docker://REGISTRY/NAME[:TAG|@DIGEST]`) as a
/// lazy tree whose file contents are fetched into `repo` on first read.
pub fn open_tree(repo: &Repository, reference: &str, opts: &LazyOptions) -> Result<Arc<dyn Tree>> {
    let (registry, tag, platform) = registry_image(reference, opts)?;
    let (digest, _, manifest) = super::pull::resolve_manifest(&registry, &tag, &platform)?;
    super::pull::fetch_config(&registry, &digest, &manifest)?;
    let image = format!("{}@{digest}", registry.describe());
    let _span = tracing::info_span!("lazy", image = image.as_str()).entered();

    let mut merge = EntryMerge::new();
    let mut sources = Vec::new();
    let mut layers = Vec::new();
    for (i, d) in manifest.layers.iter().enumerate() {
        let what = || format!("{image}: layer {} ({})", i + 1, d.digest);
        let (info, json) = read_layer_toc(&registry, i, d).with_context(what)?;
        let toc = toc::parse(&json).with_context(what)?;
        drop(json);
        tracing::info!(
            "layer {} ({}): {} entries in its table of contents",
            i + 1,
            d.digest,
            toc.entries.len()
        );
        toc::apply_layer(&mut merge, &toc, &info, &mut sources).with_context(what)?;
        layers.push(tree::LayerBlob {
            digest: d.digest.clone(),
            size: d.size,
            compression: info.compression,
        });
    }
    let merged = merge
        .build()
        .with_context(|| format!("{image}: the layers do not merge"))?;
    let mut tree = if opts.raw {
        merged
    } else {
        match super::transform::transform(&merged) {
            Ok(t) => t,
            Err(e) if super::transform::is_untransformable(&e) => {
                tracing::info!("{image}: shown untransformed: {e}");
                merged
            }
            Err(e) => return Err(e.context(format!("{image}: cannot transform the tree"))),
        }
    };
    // The inodes name their sources by index until here.
    let mut files = HashMap::new();
    let mut bad = None;
    tree.map_inodes(|ino, inode| {
        let Kind::Regular(FileData::External { size, redirect, .. }) = &inode.kind else {
            return None;
        };
        match redirect.as_deref().and_then(toc::key_source) {
            Some(i) if i < sources.len() => {
                files.insert(ino, sources[i].clone());
            }
            _ => bad = Some(ino),
        }
        let mut out = inode.clone();
        out.kind = Kind::Regular(FileData::External {
            size: *size,
            redirect: None,
            digest: None,
        });
        Some(out)
    })?;
    if let Some(ino) = bad {
        bail!("{image}: inode {ino} lost its source");
    }
    drop(sources);
    Ok(Arc::new(tree::LazyTree::new(
        tree,
        files,
        layers,
        registry,
        repo.try_clone()?,
        image,
    )))
}

/// A layer's format and table of contents (verified), or why it has none.
fn read_layer_toc(reg: &Registry, index: usize, d: &Descriptor) -> Result<(LayerInfo, Vec<u8>)> {
    let empty = Default::default();
    let a = d.annotations.as_ref().unwrap_or(&empty);
    // stargz-snapshotter's zstd:chunked carries both annotations: the
    // zstd:chunked one is read (it names the bytes the table is read
    // from), the eStargz one says whose landmark files to leave out.
    let stargz = estargz::digest(a);
    let skip_names = if stargz.is_some() {
        estargz::SKIP_NAMES
    } else {
        &[]
    };
    let (compression, json, toc_offset) = match (zstd_chunked::checksum(a), stargz) {
        (Some((prefix, sum)), _) => {
            let (json, off) = zstd_chunked::read_toc(reg, d, prefix, sum)
                .context("its zstd:chunked table of contents")?;
            (Compression::Zstd, json, off)
        }
        (None, Some(sum)) => {
            let (json, off) =
                estargz::read_toc(reg, d, sum).context("its eStargz table of contents")?;
            (Compression::Gzip, json, off)
        }
        (None, None) => {
            return Err(NoTableOfContents {
                media_type: d.media_type.clone(),
            }
            .into());
        }
    };
    Ok((
        LayerInfo {
            index,
            compression,
            blob_size: d.size,
            toc_offset,
            skip_names,
        },
        json,
    ))
}

/// Bytes `range` of layer `d`'s blob, all of them, retried as a pull
/// retries a blob; `what` names them in errors.
fn fetch_range(reg: &Registry, d: &Descriptor, range: Range<u64>, what: &str) -> Result<Vec<u8>> {
    let len = usize::try_from(range.end - range.start).map_err(|_| anyhow!("{what}: too large"))?;
    crate::net::retry(|| {
        let mut r = reg.blob_range(&d.digest, d.size, range.clone())?;
        let mut buf = Vec::with_capacity(len);
        r.read_to_end(&mut buf)
            .with_context(|| format!("cannot read the {what}"))?;
        Ok(buf)
    })
    .with_context(|| {
        format!(
            "{what}: bytes {}..{} of {}",
            range.start,
            range.end,
            reg.blob_url(&d.digest)
        )
    })
}
