//! Where an image's documents and blobs come from. Every transport (a
//! registry, an OCI layout directory, an `oci-archive` or `docker-archive`
//! tar) implements [`ImageSource`]; the pull only asks for manifests and
//! blobs by digest and verifies everything it is given.

use std::io::Read;

use anyhow::Result;

use super::spec::Digest;

/// A manifest or index as served: its bytes and media type.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The media type the source declared (a registry's Content-Type, a
    /// layout's descriptor), or read from the document.
    pub media_type: String,
}

pub trait ImageSource: Send + Sync {
    /// The manifest or index a tag or digest names. The pull checks the
    /// bytes against the digest when it asked by digest.
    fn manifest(&self, reference: &str) -> Result<Fetched>;

    /// A blob, streamed (never held whole in memory). The pull verifies
    /// its digest while reading.
    fn blob(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + Send + '_>>;

    /// Where this is, for messages (`docker://host/name`, `oci:DIR`).
    fn describe(&self) -> String;
}
