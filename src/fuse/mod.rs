//! The live view: any stored tree (an image, an ostree commit) served
//! read-only through FUSE straight from the repository.
//!
//! [`fs::TreeFs`] answers the kernel's requests from a [`crate::tree::Tree`]
//! and the repository's objects; [`daemon`] mounts it, in the foreground or
//! as a background daemon that reports readiness to the command that
//! started it, and unmounts on SIGINT/SIGTERM/SIGHUP.

pub mod cache;
pub mod daemon;
pub mod fs;
pub mod fusermount;

pub use daemon::{MountOptions, serve};
pub use fs::{FsOptions, TreeFs};
