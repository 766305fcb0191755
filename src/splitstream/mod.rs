//! Splitstreams: a file stored as inline bytes plus references to objects.
//!
//! The on-disk format is composefs-rs's (see `docs/formats.md`): a 32-byte
//! header, an info section, flat arrays of stream and object digests (read by
//! GC without decompressing anything), zstd-compressed named refs, and a
//! zstd-compressed sequence of chunks — inline bytes, or "splice object N
//! here". [`SplitStreamWriter`] streams external content into the object
//! store as it is written; [`SplitStreamReader`] reassembles the original
//! bytes or walks the chunks without opening any object. Reading fails
//! with an [`Error`] saying which way: not a splitstream, unsupported,
//! truncated, corrupt, or an object it refers to missing or damaged.
//! The `store` module publishes and opens streams by name in a repository
//! (methods on [`crate::repository::Repository`], defined here: the
//! repository knows no splitstream).

mod error;
mod format;
pub mod frames;
mod reader;
mod reftable;
mod store;
mod writer;

pub use error::Error;
pub use format::{Header, Info, MAGIC, content_type, content_type_name};
pub use frames::{Frame, FrameCoding, Frames};
pub use reader::{Piece, SplitStreamReader};
pub use writer::SplitStreamWriter;
