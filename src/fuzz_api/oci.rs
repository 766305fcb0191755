//! The OCI targets: a JSON document as a pull gets one, and an
//! `oci-archive` or `docker-archive` tar.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Result, bail};

use super::scratch::memfile;
use super::tar_layer::fix_tar_checksums;
use crate::oci::source::{Fetched, ImageSource};
use crate::oci::spec::{self, Digest, ImageConfig, Index, Manifest, Platform};

/// An image source that serves one document for every manifest request.
struct OneDocument(Vec<u8>);

impl ImageSource for OneDocument {
    fn manifest(&self, _reference: &str) -> Result<Fetched> {
        Ok(Fetched {
            media_type: spec::document_media_type(&self.0)
                .unwrap_or_else(|| spec::OCI_MANIFEST.to_string()),
            bytes: self.0.clone(),
        })
    }

    fn blob(&self, digest: &Digest, _size: u64) -> Result<Box<dyn Read + Send + '_>> {
        bail!("no blob {digest}")
    }

    fn describe(&self) -> String {
        "fuzz".to_string()
    }
}

/// An OCI (or Docker) JSON document as a pull gets one: its media type
/// guessed, resolved as the reference's manifest (through an index, by
/// platform) the way `oci pull` does, and parsed as a manifest, an index
/// and an image config with the spec types (layer media types and
/// digests checked as a pull checks them). `Ok` when one of the three
/// spec types accepts it.
pub fn oci_json(data: &[u8]) -> Result<()> {
    let _ = spec::document_media_type(data);
    let platform = Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
    };
    let _ = crate::oci::pull::resolve_manifest(&OneDocument(data.to_vec()), "", &platform);
    let mut accepted = Err(anyhow::anyhow!(
        "neither an image manifest, nor an index, nor an image config"
    ));
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        accepted = Ok(());
        for l in &m.layers {
            let _ = spec::layer_compression(&l.media_type);
            let _ = crate::oci::pull::layer_id(&l.digest);
        }
        let _ = serde_json::to_vec(&m).expect("a parsed manifest serialises");
    }
    if let Ok(i) = serde_json::from_slice::<Index>(data) {
        accepted = Ok(());
        for d in &i.manifests {
            let _ = spec::is_index(&d.media_type);
            let _ = d.annotations.as_ref().map(|a| a.len());
        }
    }
    if let Ok(c) = serde_json::from_slice::<ImageConfig>(data) {
        accepted = Ok(());
        for d in &c.rootfs.diff_ids {
            assert!(
                Digest::parse(d.as_str()).is_ok(),
                "a parsed digest reparses"
            );
        }
    }
    accepted
}

/// An `oci-archive` or `docker-archive` tar, as `oci pull` opens one: its
/// members indexed in place, `index.json` or `manifest.json` and the image
/// config read, the manifest resolved (by platform, through indexes) and
/// its config blob fetched and parsed. `Ok` when either kind opens. The
/// same again with the tar checksums recomputed (see
/// [`fix_tar_checksums`]), when that differs.
pub fn oci_archive(data: &[u8]) -> Result<()> {
    let r = open_archive(data);
    if let Some(fixed) = fix_tar_checksums(data) {
        let _ = open_archive(&fixed);
    }
    r
}

fn open_archive(data: &[u8]) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = memfile(data)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    let platform = Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
    };
    let use_source = |src: &dyn ImageSource| {
        let Ok((_, _, m)) = crate::oci::pull::resolve_manifest(src, "", &platform) else {
            return;
        };
        let _ = src.describe();
        if m.config.size <= 1 << 20
            && let Ok(r) = src.blob(&m.config.digest, m.config.size)
        {
            let mut config = Vec::new();
            if r.take(1 << 20).read_to_end(&mut config).is_ok() {
                let _ = serde_json::from_slice::<ImageConfig>(&config);
            }
        }
    };
    let layout = crate::oci::layout::Layout::archive(&path, None);
    if let Ok(l) = &layout {
        use_source(l);
    }
    let docker = crate::oci::layout::DockerArchive::open(&path);
    if let Ok(d) = &docker {
        use_source(d);
    }
    drop(f);
    match (layout, docker) {
        (Err(e), Err(_)) => Err(e),
        _ => Ok(()),
    }
}
