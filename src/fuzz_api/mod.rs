//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and for the
//! regression tests of what they found (`tests/fuzz_regressions.rs`).
//!
//! Each function feeds one input to the code the tool runs on data from
//! outside (a registry, an ostree remote, an image or dumpfile someone
//! handed us), the way the tool runs it, and does a bounded amount of
//! work. None of them may panic, hang or allocate without bound, whatever
//! the input: that is what the fuzzers check. A few also check properties
//! that must hold for every input the parsers accept (a split tar
//! reassembles to the same bytes, an image we write reads back); those are
//! assertions, so a violation is a finding too.
//!
//! The functions return the result of the main parse (so a regression test
//! can assert that a hostile input is refused); the secondary paths they
//! also run have their errors ignored.
//!
//! Not a stable API: it exists for the fuzzers and changes with them.
//!
//! One child module per family of targets: `splitstream`, `tar_layer`
//! (layer tars, split and merged), `image` (EROFS images and dumpfiles),
//! `ostree`, `oci` and `auth_challenge` (what a registry sends besides
//! documents); with what they share: `scratch` (scratch repositories and
//! in-memory files), `base_tar` (the fixture tar's layer) and `walk` (using
//! a tree the way the views do).

mod auth_challenge;
mod base_tar;
mod image;
mod oci;
mod ostree;
mod scratch;
mod splitstream;
mod tar_layer;
mod walk;

pub use auth_challenge::auth_challenge;
pub use base_tar::set_base_tar;
pub use image::{dumpfile, erofs};
pub use oci::{oci_archive, oci_json};
pub use ostree::{
    SignedCommit, ostree_commit, ostree_commit_stream, ostree_delta_part, ostree_delta_superblock,
    ostree_detached_metadata, ostree_dirmeta, ostree_dirtree, ostree_fileheader, ostree_summary,
};
pub use splitstream::splitstream;
pub use tar_layer::{fix_tar_checksums, tarsplit};
