//! OCI images: references in the transports people type, the image-spec
//! documents, where blobs come from (registries, layouts, archives), the
//! pull that stores them as splitstreams, and the merged tree of an
//! image's layers.
//!
//! - [`reference`]: `docker://…`, `oci:DIR[:name]`, `oci-archive:FILE[:name]`,
//!   `docker-archive:FILE[:name|:@N]`.
//! - [`spec`]: manifests, indexes, configs, digests, media types.
//! - [`source`]: the [`source::ImageSource`] trait every transport implements.
//! - [`registry`]: the distribution-spec client; [`layout`]: OCI layouts,
//!   `oci-archive` and `docker-archive` files.
//! - [`pull`]: verify and store an image as splitstreams under `oci/NAME`.
//! - [`merge`]: layers (stored tar splitstreams) → one tree; [`store`]:
//!   pulled images stored and read back, as composefs-rs stores them;
//!   [`tags`]: image names as refs.
//! - [`transform`]: composefs-rs's OCI transform of the merged tree;
//!   [`image`]: the composefs image of a pulled image (compute, commit,
//!   link from the config).
//! - [`lazy`]: a registry image read without a pull (zstd:chunked, eStargz).

pub mod image;
pub mod layout;
pub mod lazy;
pub mod merge;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod source;
pub mod spec;
pub mod store;
pub mod tags;
pub mod transform;
