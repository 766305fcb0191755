//! ostree: reading ostree repositories (local in every mode, or over HTTP),
//! pulling commits into the composefs repository, and presenting stored
//! commits as trees.
//!
//! - `checksum`, `objects`, `variant`, `summary`: the ostree formats.
//! - `source`, `local`, `http`: where objects come from.
//! - `resolve`, `pull`, `delta`, `signature`, `trust`: the pull.
//! - `shared`: how commits are stored (composefs-rs's format);
//!   `commitstream`, `cache`, `index`: how they are found fast.
//! - `image`: images of stored commits.
//! - `tree`: a stored commit as a filesystem tree.
//! - `remote`: a commit of a remote repository as a lazy tree.

pub mod cache;
pub mod checksum;
pub mod commitstream;
pub mod committree;
pub mod delta;
pub mod fsck;
pub mod http;
pub mod image;
pub mod index;
pub mod local;
pub mod objects;
pub mod partial;
pub mod pull;
pub mod remote;
pub mod resolve;
pub mod shared;
pub mod signature;
pub mod source;
pub mod summary;
pub mod tree;
pub mod trust;
pub mod variant;

pub use checksum::{Checksum, ObjType};
use source::Source;

/// Open a source: a local path, `file://` URL, or `http(s)://` URL.
pub fn open_source(spec: &str) -> anyhow::Result<Box<dyn Source>> {
    open_source_with(spec, None)
}

/// [`open_source`], with an HTTP timeout other than the default.
pub fn open_source_with(
    spec: &str,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<Box<dyn Source>> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(Box::new(http::HttpSource::new(spec, timeout)?));
    }
    let path = match spec.strip_prefix("file://") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(spec),
    };
    Ok(Box::new(local::LocalSource::open(&path)?))
}
