//! fs-verity digests: the identity of every object in the repository.
//!
//! Owns the [`Algorithm`] choice (sha256/sha512 with 4 KiB blocks), the
//! [`ObjectId`] value type, the streaming userspace [`Hasher`] that computes
//! exactly what the kernel measures, and the `FS_IOC_ENABLE_VERITY` /
//! `FS_IOC_MEASURE_VERITY` ioctls (in [`ioctl`]).

mod digest;
pub mod ioctl;
mod object_id;

pub use digest::{Hasher, digest_bytes, digest_file, digest_reader};
pub use object_id::{Algorithm, ObjectId};
