//! Local image sources: an OCI image layout directory (`oci:DIR[:tag]`),
//! the same layout in a tar (`oci-archive:FILE[:tag]`, read in place: the
//! members are indexed, nothing is extracted), and `docker save` output
//! (`docker-archive:FILE[:name|:@N]`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::source::{Fetched, ImageSource};
use super::spec::{self, Descriptor, Digest, Index, Manifest};

/// The largest JSON document (index, manifest, config) we read whole.
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// Where a layout's files are: a directory, or members of a tar.
enum Files {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        /// member path (without `./`) → (data offset, size)
        members: HashMap<String, (u64, u64)>,
    },
}

impl Files {
    fn index_tar(file: &Path) -> Result<Files> {
        let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        for e in ar
            .entries()
            .with_context(|| format!("cannot read {} as a tar", file.display()))?
        {
            let e = e.with_context(|| format!("cannot read {} as a tar", file.display()))?;
            if !e.header().entry_type().is_file() {
                continue;
            }
            let path = e.path()?.to_string_lossy().into_owned();
            let path = path.trim_start_matches("./").to_string();
            members.insert(path, (e.raw_file_position(), e.size()));
        }
        Ok(Files::Tar {
            file: file.to_path_buf(),
            members,
        })
    }

    fn where_(&self) -> String {
        match self {
            Files::Dir(d) => d.display().to_string(),
            Files::Tar { file, .. } => file.display().to_string(),
        }
    }

    /// A file of the layout (a relative path we built or validated).
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Files::Dir(d) => {
                let p = d.join(rel);
                // A blob is a regular file of the layout, never a link out
                // of it (to /dev/zero, a FIFO, someone's secrets).
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                let meta = f.metadata()?;
                if !meta.is_file() {
                    bail!("{} is not a regular file", p.display());
                }
                let len = meta.len();
                Ok((Box::new(f), len))
            }
            Files::Tar { file, members } => {
                let Some(&(off, size)) = members.get(rel) else {
                    bail!("{} has no member {rel}", file.display());
                };
                let mut f =
                    File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
                f.seek(SeekFrom::Start(off))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    fn read_small(&self, rel: &str) -> Result<Vec<u8>> {
        let (r, len) = self.open(rel)?;
        if len > MAX_DOCUMENT {
            bail!(
                "{}: {rel} is {len} bytes, more than a document may be",
                self.where_()
            );
        }
        let mut v = Vec::with_capacity(len as usize);
        r.take(MAX_DOCUMENT).read_to_end(&mut v)?;
        Ok(v)
    }
}

/// An OCI image layout, in a directory or a tar.
pub struct Layout {
    files: Files,
    tag: Option<String>,
    shown: String,
}

impl Layout {
    pub fn dir(dir: &Path, tag: Option<&str>) -> Result<Layout> {
        if !dir.join("index.json").is_file() {
            bail!(
                "{} is not an OCI image layout (no index.json)",
                dir.display()
            );
        }
        Ok(Layout {
            files: Files::Dir(dir.to_path_buf()),
            tag: tag.map(str::to_string),
            shown: format!("oci:{}", dir.display()),
        })
    }

    pub fn archive(file: &Path, tag: Option<&str>) -> Result<Layout> {
        let files = Files::index_tar(file)?;
        if let Files::Tar { members, .. } = &files
            && !members.contains_key("index.json")
        {
            bail!("{} is not an OCI archive (no index.json)", file.display());
        }
        Ok(Layout {
            files,
            tag: tag.map(str::to_string),
            shown: format!("oci-archive:{}", file.display()),
        })
    }

    fn blob_path(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    /// The descriptor the tag (or the only manifest) names in index.json.
    fn top(&self, tag: Option<&str>) -> Result<Descriptor> {
        let bytes = self.files.read_small("index.json")?;
        let index: Index = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: index.json is not an OCI index", self.shown))?;
        fn named(d: &Descriptor) -> Option<&str> {
            d.annotations
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .map(String::as_str)
        }
        match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|d| named(d) == Some(t))
                .cloned()
                .with_context(|| format!("{}: no image tagged {t:?}", self.shown)),
            None => match index.manifests.as_slice() {
                [one] => Ok(one.clone()),
                [] => bail!("{}: the layout holds no image", self.shown),
                many => {
                    let tags: Vec<&str> = many.iter().filter_map(named).collect();
                    bail!(
                        "{} holds {} images: say which (tags: {})",
                        self.shown,
                        many.len(),
                        tags.join(", ")
                    )
                }
            },
        }
    }
}

impl ImageSource for Layout {
    fn manifest(&self, reference: &str) -> Result<Fetched> {
        let desc = match Digest::parse(reference) {
            Ok(d) => {
                let bytes = self.files.read_small(&Self::blob_path(&d))?;
                return Ok(Fetched {
                    media_type: spec::document_media_type(&bytes)
                        .unwrap_or_else(|| spec::OCI_MANIFEST.to_string()),
                    bytes,
                });
            }
            Err(_) if reference.is_empty() => self.top(self.tag.as_deref())?,
            Err(_) => self.top(Some(reference))?,
        };
        let bytes = self.files.read_small(&Self::blob_path(&desc.digest))?;
        if Digest::of(&bytes) != desc.digest {
            bail!(
                "{}: blob {} does not match its digest",
                self.shown,
                desc.digest
            );
        }
        Ok(Fetched {
            bytes,
            media_type: desc.media_type,
        })
    }

    fn blob(&self, digest: &Digest, _size: u64) -> Result<Box<dyn Read + Send + '_>> {
        Ok(self.files.open(&Self::blob_path(digest))?.0)
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

/// `docker save` output: `manifest.json` lists each image's config file
/// and layer tars. Served as an OCI manifest made up on the spot, whose
/// layer digests are the config's diff_ids (the layers are uncompressed
/// tars, so a layer's digest is its diff_id).
pub struct DockerArchive {
    files: Files,
    config: (String, Digest, u64),
    layers: Vec<(String, Digest, u64)>,
    manifest: Vec<u8>,
    shown: String,
}

impl DockerArchive {
    /// The archive's only image.
    pub fn open(file: &Path) -> Result<DockerArchive> {
        Self::open_image(file, None)
    }

    /// One image of the archive: `image` is a name as its `RepoTags` list
    /// it (Docker's defaults applied: `debian` is
    /// `docker.io/library/debian:latest`) or `@N`, the N-th image (from 0);
    /// without it, the archive must hold one image (as skopeo reads
    /// `docker-archive:FILE[:name|:@N]`).
    pub fn open_image(file: &Path, image: Option<&str>) -> Result<DockerArchive> {
        let shown = match image {
            Some(i) => format!("docker-archive:{}:{i}", file.display()),
            None => format!("docker-archive:{}", file.display()),
        };
        let files = Files::index_tar(file)?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            layers: Vec<String>,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
        }
        let mut entries: Vec<Entry> = serde_json::from_slice(
            &files
                .read_small("manifest.json")
                .with_context(|| format!("{shown} is not a docker archive"))?,
        )
        .with_context(|| format!("{shown}: manifest.json"))?;
        let tags = |entries: &[Entry]| -> String {
            let t: Vec<&str> = entries
                .iter()
                .flat_map(|e| e.repo_tags.iter().flatten())
                .map(String::as_str)
                .collect();
            if t.is_empty() {
                "none".into()
            } else {
                t.join(", ")
            }
        };
        let chosen = match image {
            _ if entries.is_empty() => bail!("{shown}: manifest.json lists no image"),
            None if entries.len() == 1 => 0,
            None => bail!(
                "{shown} holds {} images: say which, docker-archive:FILE:NAME[:TAG] or \
                 docker-archive:FILE:@INDEX (tags: {})",
                entries.len(),
                tags(&entries)
            ),
            Some(i) => match i.strip_prefix('@') {
                Some(n) => {
                    let n: usize = n
                        .parse()
                        .with_context(|| format!("{shown}: bad image index {n:?}"))?;
                    if n >= entries.len() {
                        bail!(
                            "{shown}: no image @{n}: the archive holds {} (@0 to @{})",
                            entries.len(),
                            entries.len() - 1
                        );
                    }
                    n
                }
                None => entries
                    .iter()
                    .position(|e| {
                        e.repo_tags
                            .iter()
                            .flatten()
                            .any(|t| super::reference::same_docker_name(t, i))
                    })
                    .with_context(|| {
                        format!("{shown}: no image tagged {i:?} (tags: {})", tags(&entries))
                    })?,
            },
        };
        let e = entries.swap_remove(chosen);
        let config_bytes = files.read_small(&e.config)?;
        let config: spec::ImageConfig = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("{shown}: {} is not an image config", e.config))?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            bail!(
                "{shown}: {} layers but the config lists {} diff_ids",
                e.layers.len(),
                config.rootfs.diff_ids.len()
            );
        }
        let size = |rel: &str| match &files {
            Files::Tar { members, .. } => members.get(rel).map(|m| m.1),
            Files::Dir(_) => None,
        };
        let config_desc = (
            e.config.clone(),
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        );
        let mut layers = Vec::new();
        for (rel, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let s = size(rel).with_context(|| format!("{shown} has no member {rel}"))?;
            layers.push((rel.clone(), diff_id.clone(), s));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(spec::OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: spec::OCI_CONFIG.into(),
                digest: config_desc.1.clone(),
                size: config_desc.2,
                platform: None,
                annotations: None,
            },
            layers: layers
                .iter()
                .map(|(_, d, s)| Descriptor {
                    media_type: spec::OCI_LAYER_TAR.into(),
                    digest: d.clone(),
                    size: *s,
                    platform: None,
                    annotations: None,
                })
                .collect(),
        };
        Ok(DockerArchive {
            files,
            config: config_desc,
            layers,
            manifest: serde_json::to_vec(&manifest)?,
            shown,
        })
    }
}

impl ImageSource for DockerArchive {
    fn manifest(&self, reference: &str) -> Result<Fetched> {
        if let Ok(d) = Digest::parse(reference)
            && d != Digest::of(&self.manifest)
        {
            bail!("{}: no manifest {d}", self.shown);
        }
        Ok(Fetched {
            bytes: self.manifest.clone(),
            media_type: spec::OCI_MANIFEST.into(),
        })
    }

    fn blob(&self, digest: &Digest, _size: u64) -> Result<Box<dyn Read + Send + '_>> {
        let rel = if *digest == self.config.1 {
            &self.config.0
        } else {
            &self
                .layers
                .iter()
                .find(|l| l.1 == *digest)
                .with_context(|| format!("{}: no blob {digest}", self.shown))?
                .0
        };
        Ok(self.files.open(rel)?.0)
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}
