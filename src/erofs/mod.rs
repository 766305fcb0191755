//! composefs EROFS images: the on-disk [`format`], the [`writer`]
//! (byte-identical with the C `mkcomposefs` 1.0.8, format versions 0 and 1),
//! [`writer_v2`] (composefs-rs's legacy format 2), [`versions`] (one entry
//! point for the three, numbered as composefs-rs numbers them) and the
//! [`reader`] ([`ErofsImage`], a lazy [`crate::tree::Tree`] over an image of
//! any version, plus the raw view GC and debugging need). [`store_image`]
//! writes a tree as an image into a repository.

pub mod format;
pub mod reader;
mod store;
pub mod versions;
pub mod writer;
pub mod writer_v2;

pub use reader::ErofsImage;
pub use store::{image_tempfile, store_image};
pub use versions::{image_version_to_vec, write_image_version};
pub use writer::{
    FormatVersion, ImageInfo, WriteOptions, image_to_vec, write_image, write_image_with,
};
