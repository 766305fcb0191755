//! composefs: one content-addressed repository for ostree commits and OCI
//! images, with live views into it.
//!
//! The modules read like the architecture (see `docs/architecture.md`):
//! - [`fsverity`]: digests that name every object.
//! - [`repository`]: the on-disk store: objects, streams, images, refs, locking, gc, fsck.
//! - [`splitstream`]: the container format that stores a file as inline bytes
//!   plus references to objects.
//! - [`tarsplit`]: turning a tar archive into a splitstream and back.
//! - [`cli`]: the `composefs` command, argument plumbing only.

pub mod cli;
pub mod compression;
pub mod diff;
pub mod dumpfile;
pub mod erofs;
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
pub mod mapped;
pub mod mount;
pub mod net;
pub mod oci;
pub mod ostree;
pub mod readahead;
pub mod repository;
pub mod show;
pub mod splitstream;
pub mod tarheader;
pub mod tarsplit;
pub mod tree;
pub mod view;
