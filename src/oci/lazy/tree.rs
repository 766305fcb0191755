//! The lazy tree: the merged tables of contents in memory, and each
//! regular file's content fetched on first read ([`Tree::content_object`]):
//! its compressed range asked of the registry, decompressed, checked
//! against the table's sha256 while it streams into a repository object,
//! and the object placed only when the digest matched. One fetch per
//! content: a caller asking for a content being fetched waits for that
//! fetch (and gets its error if it fails; the next caller tries again),
//! callers of other files go on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};

use super::toc::{Compression, FileSource};
use crate::fsverity::ObjectId;
use crate::oci::registry::Registry;
use crate::oci::spec::Digest;
use crate::repository::Repository;
use crate::single_flight::SingleFlight;
use crate::tree::{DirEntry, FileData, Ino, Inode, Kind, LinkHint, MemTree, Tree};

/// One layer's blob, as the manifest names it.
pub(super) struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
}

pub(super) struct LazyTree {
    tree: MemTree,
    /// Each regular file with content: its source.
    files: HashMap<Ino, FileSource>,
    layers: Vec<LayerBlob>,
    registry: Registry,
    repo: Repository,
    /// `docker://host/name@digest`, for messages.
    image: String,
    /// Contents fetched, by sha256, by this tree or an earlier one (an
    /// object `gc` took is fetched again).
    stored: Mutex<HashMap<[u8; 32], ObjectId>>,
    /// Where they are kept across trees (`None`: it could not be opened;
    /// then this tree's fetches are its own).
    memo: Option<super::memo::Memo>,
    /// Contents being fetched, by sha256.
    flights: SingleFlight<[u8; 32]>,
}

impl LazyTree {
    pub(super) fn new(
        tree: MemTree,
        files: HashMap<Ino, FileSource>,
        layers: Vec<LayerBlob>,
        registry: Registry,
        repo: Repository,
        image: String,
    ) -> Self {
        let (memo, known) = match super::memo::Memo::open(&repo) {
            Ok((m, known)) => (Some(m), known),
            Err(e) => {
                tracing::warn!("{image}: fetched contents will not be remembered: {e:#}");
                (None, HashMap::new())
            }
        };
        LazyTree {
            tree,
            files,
            layers,
            registry,
            repo,
            image,
            stored: Mutex::new(known),
            memo,
            flights: SingleFlight::new(),
        }
    }

    /// The object holding `src`'s content: stored already, or fetched now
    /// (or by the reader fetching it already, waited for).
    fn object_for(&self, src: &FileSource) -> Result<ObjectId> {
        let stored = || {
            let known = self.stored().get(&src.sha256).copied();
            match known {
                // `gc` may have taken it (no ref names it): fetch again.
                Some(id) if self.repo.has_object(&id)? => Ok(Some(id)),
                _ => Ok(None),
            }
        };
        self.flights.run(src.sha256, stored, || {
            let id = self.fetch(src)?;
            self.stored().insert(src.sha256, id);
            if let Some(m) = &self.memo
                && let Err(e) = m.record(&src.sha256, &id)
            {
                tracing::warn!("{}: {e:#}", self.image);
            }
            Ok(id)
        })
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ObjectId>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetch, verify and store `src`'s content; network failures retried.
    fn fetch(&self, src: &FileSource) -> Result<ObjectId> {
        let layer = &self.layers[src.layer];
        let _span = tracing::debug_span!("fetch", file = src.name.as_str()).entered();
        crate::net::retry(|| self.fetch_once(src, layer)).with_context(|| {
            format!(
                "{}: {}: layer {} ({}), bytes {}..{} of {}",
                self.image,
                src.name,
                src.layer + 1,
                layer.digest,
                src.start,
                src.end,
                self.registry.blob_url(&layer.digest)
            )
        })
    }

    fn fetch_once(&self, src: &FileSource, layer: &LayerBlob) -> Result<ObjectId> {
        let body = self
            .registry
            .blob_range(&layer.digest, layer.size, src.start..src.end)?;
        let mut data: Box<dyn Read + '_> = match layer.compression {
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(body).context("cannot start a zstd decoder")?,
            ),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        };
        if src.skip > 0 {
            let skipped = std::io::copy(&mut (&mut data).take(src.skip), &mut std::io::sink())
                .context("cannot decompress")?;
            if skipped != src.skip {
                bail!(
                    "the compressed bytes end before the content starts ({skipped} of {} bytes to skip)",
                    src.skip
                );
            }
        }
        let mut writer = self.repo.object_writer()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut data = data.take(src.size);
        let mut got = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("cannot decompress")),
            };
            hasher.update(&buf[..n]);
            writer
                .write_all(&buf[..n])
                .context("cannot write the object")?;
            got += n as u64;
        }
        if got != src.size {
            bail!(
                "the compressed bytes hold {got} bytes of content, the table of contents says {}",
                src.size
            );
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != src.sha256 {
            bail!(
                "the content digests to sha256:{}, the table of contents says sha256:{}: refused",
                hex::encode(digest),
                hex::encode(src.sha256)
            );
        }
        let (id, new) = writer.finish()?;
        tracing::debug!(
            "{}: {} bytes fetched as object {id}{}",
            src.name,
            src.size,
            if new { "" } else { " (stored already)" }
        );
        Ok(id)
    }
}

impl Tree for LazyTree {
    fn fetches_contents(&self) -> bool {
        true
    }

    fn root(&self) -> Ino {
        self.tree.root()
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        self.tree.inode(ino)
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        self.tree.readdir(dir)
    }

    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        self.tree.nlink(ino)
    }

    fn link_hint(&self, ino: Ino) -> Option<LinkHint> {
        self.tree.link_hint(ino)
    }

    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
        self.tree.lookup(dir, name)
    }

    fn content_object(&self, ino: Ino) -> Result<Option<ObjectId>> {
        match &self.tree.inode(ino)?.kind {
            Kind::Regular(FileData::Inline(_)) => Ok(None),
            Kind::Regular(FileData::External { .. }) => {
                let src = self
                    .files
                    .get(&ino)
                    .with_context(|| format!("{}: inode {ino} has no source", self.image))?;
                self.object_for(src).map(Some)
            }
            _ => bail!("inode {ino} is not a regular file"),
        }
    }
}
