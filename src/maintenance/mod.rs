//! Maintenance of a repository across all the formats stored in it:
//! [`gc`] (delete what no ref reaches) and [`fsck`] (check everything).
//!
//! Both need to look inside what the repository stores (splitstreams,
//! EROFS images, ostree's caches beside it) to know which objects are
//! referenced, so they live above `repository`, which only stores bytes.
//! The store-level work they ask of it (listing entries and refs, removing
//! objects and crash-left temporaries) is plain [`crate::repository`]
//! operations.

pub mod fsck;
pub mod gc;
