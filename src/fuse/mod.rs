//! The live view: any stored tree (an image, an ostree commit) served
//! read-only through FUSE straight from the repository.
//!
//! [`fs::TreeFs`] answers the kernel's requests from a [`crate::tree::Tree`]
//! and the repository's objects; [`daemon`] mounts it, in the foreground or
//! as a background daemon that reports readiness to the command that
//! started it, and unmounts on SIGINT/SIGTERM/SIGHUP. `prefetch` reads a
//! walk's files ahead into the kernel's page cache.

pub mod cache;
pub mod daemon;
pub mod fs;
pub mod fusermount;
mod prefetch;

pub use daemon::{MountOptions, serve, serve_later};
pub use fs::{FsOptions, TreeFs};

/// A mutex's guard, even when a thread panicked holding it (the daemon's
/// tables stay usable).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
