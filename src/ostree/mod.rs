//! ostree: reading ostree repositories (local in every mode, or over HTTP),
//! pulling commits into the composefs repository, and presenting stored
//! commits as trees.

pub mod checksum;
pub mod objects;
pub mod variant;

pub use checksum::{Checksum, ObjType};
pub mod delta;
pub mod signature;
