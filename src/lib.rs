//! composefs: one content-addressed repository for ostree commits and OCI
//! images, with live views into it.
//!
//! The modules read like the architecture (see `docs/architecture.md`):
//! - [`fsverity`]: digests that name every object.
//! - [`repository`]: the on-disk store: objects, entries and refs, meta.json,
//!   locking, the worker pool. It stores bytes and knows no format in them.
//! - [`splitstream`]: the container format that stores a file as inline bytes
//!   plus references to objects, and named streams in the repository.
//! - [`erofs`]: composefs images: writing, reading, storing a tree as one.
//! - [`maintenance`]: gc and fsck, across all the formats a repository holds.
//! - [`tarsplit`]: turning a tar archive into a splitstream and back.
//! - [`cli`]: the `composefs` command, argument plumbing only.

pub mod cli;
pub mod compression;
pub mod diff;
pub mod dumpfile;
pub mod erofs;
pub mod fetch;
pub mod fsutil;
pub mod fsverity;
pub mod fuse;
#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub mod fuzz_api;
pub mod hashtee;
pub mod importdir;
pub mod inspect;
pub mod logging;
pub mod maintenance;
pub mod mapped;
pub mod mount;
pub mod net;
pub mod oci;
pub mod ostree;
pub mod readahead;
pub mod repository;
pub mod show;
pub mod single_flight;
pub mod splitstream;
pub mod tarheader;
pub mod tarsplit;
pub mod tree;
pub mod view;
