//! Where an image's documents and blobs come from. Every transport (a
//! registry, an OCI layout directory, an `oci-archive` or `docker-archive`
//! tar) implements [`ImageSource`]; the pull only asks for manifests and
//! blobs by digest and verifies everything it is given.

use std::io::Read;

use anyhow::Result;

/// A blob download cut short by the network (a reset connection, a
/// timeout, a body that ended early): starting the blob again may work.
/// Sources put it inside the `io::Error`s their blob readers return.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Whether `e` comes from an [`Interrupted`] download.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Interrupted>().is_some()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<Interrupted>().is_some())
    })
}

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
