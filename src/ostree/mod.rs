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
pub mod resolve;
pub mod shared;
pub mod signature;
pub mod source;
pub mod summary;
pub mod tree;
pub mod trust;
pub mod variant;

pub use checksum::{Checksum, ObjType};
