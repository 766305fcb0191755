//! fs-verity ioctls: `FS_IOC_ENABLE_VERITY` and `FS_IOC_MEASURE_VERITY`
//! (Linux `include/uapi/linux/fsverity.h`, `Documentation/filesystems/fsverity.rst`).
//!
//! Both go through [`rustix::ioctl`], whose opcode helpers compute the `_IOW` /
//! `_IOWR` numbers for the target architecture (they differ on powerpc and
//! mips), so no raw numbers are hard-coded here.

use std::io;
use std::os::fd::AsFd;

use rustix::io::Errno;
use rustix::ioctl::{Opcode, Setter, Updater, opcode};

use super::{Algorithm, ObjectId};

/// Why enabling fs-verity failed.
#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    /// The filesystem (or kernel) has no fs-verity support.
    #[error("fs-verity is not supported on this filesystem")]
    Unsupported,
    #[error("enabling fs-verity failed: {0}")]
    Other(#[from] std::io::Error),
}

/// `struct fsverity_enable_arg` (128 bytes).
#[repr(C)]
struct FsverityEnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

/// The fixed header of `struct fsverity_digest`; the kernel writes up to
/// `digest_size` digest bytes right after it.
#[repr(C)]
struct FsverityDigestHeader {
    digest_algorithm: u16,
    digest_size: u16,
}

/// `struct fsverity_digest` with room for the largest digest (sha512).
#[repr(C)]
struct FsverityDigest {
    header: FsverityDigestHeader,
    digest: [u8; 64],
}

const _: () = assert!(size_of::<FsverityEnableArg>() == 128);
const _: () = assert!(size_of::<FsverityDigestHeader>() == 4);

/// `FS_IOC_ENABLE_VERITY = _IOW('f', 133, struct fsverity_enable_arg)`.
const FS_IOC_ENABLE_VERITY: Opcode = opcode::write::<FsverityEnableArg>(b'f', 133);
/// `FS_IOC_MEASURE_VERITY = _IOWR('f', 134, struct fsverity_digest)`; the
/// size encoded is that of the header only, as in the C definition.
const FS_IOC_MEASURE_VERITY: Opcode = opcode::read_write::<FsverityDigestHeader>(b'f', 134);

/// Enable fs-verity on a file opened read-only with no writers left.
///
/// Uses 4096-byte Merkle tree blocks, no salt and no signature, so the
/// kernel's measurement equals [`super::digest_reader`] on the same content.
///
/// Errors the kernel documents as "no fs-verity here" map to
/// [`EnableError::Unsupported`]: `ENOTTY` (filesystem type has no fs-verity),
/// `EOPNOTSUPP` (kernel built without it, filesystem feature flag not set, or
/// not supported for this file), `ENOPKG` (hash algorithm not built into the
/// kernel) and `EINVAL` (with the fixed arguments used here that means the
/// algorithm or the 4096-byte block size is unsupported, e.g. a pre-6.3 kernel
/// with a page size other than 4 KiB; it also is the answer for a file that
/// is not regular, which callers never pass).
///
/// `EEXIST` (verity already enabled) is success: the postcondition holds. The
/// existing tree may use another algorithm, so check with [`measure`].
/// Anything else, such as `ETXTBSY` (a writable fd is still open) or `EROFS`,
/// is [`EnableError::Other`]. `EINTR` is retried.
pub fn enable(fd: impl AsFd, alg: Algorithm) -> Result<(), EnableError> {
    let fd = fd.as_fd();
    loop {
        let arg = FsverityEnableArg {
            version: 1,
            hash_algorithm: u32::from(alg.kernel_id()),
            block_size: Algorithm::BLOCK_SIZE as u32,
            salt_size: 0,
            salt_ptr: 0,
            sig_size: 0,
            reserved1: 0,
            sig_ptr: 0,
            reserved2: [0; 11],
        };
        // SAFETY: FS_IOC_ENABLE_VERITY takes a pointer to a `struct
        // fsverity_enable_arg`, which `FsverityEnableArg` mirrors field for
        // field with `repr(C)` (size checked above). The kernel only reads it,
        // and the salt and signature pointers are null with zero sizes, so it
        // dereferences no other user memory. `Setter` keeps `arg` alive for
        // the duration of the call.
        let result =
            unsafe { rustix::ioctl::ioctl(fd, Setter::<FS_IOC_ENABLE_VERITY, _>::new(arg)) };
        return match result {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) if is_unsupported(e) || e == Errno::NOPKG || e == Errno::INVAL => {
                Err(EnableError::Unsupported)
            }
            Err(e) => Err(EnableError::Other(io::Error::from(e))),
        };
    }
}

/// `ENOTTY`: the filesystem has no fs-verity ioctls; `EOPNOTSUPP` (the same
/// value as `ENOTSUP` on Linux): the kernel or this filesystem lacks it.
fn is_unsupported(e: Errno) -> bool {
    e == Errno::NOTTY || e == Errno::OPNOTSUPP || e == Errno::NOTSUP
}

/// The kernel's measurement, or `None` when verity is not enabled on the file.
///
/// `None` covers `ENODATA` (the file has no verity) and the "unsupported"
/// errors `ENOTTY` / `EOPNOTSUPP` (no verity possible on this filesystem). A
/// file whose verity uses a different algorithm than `alg` is an
/// [`io::ErrorKind::InvalidData`] error: it can never match an id of `alg`.
pub fn measure(fd: impl AsFd, alg: Algorithm) -> io::Result<Option<ObjectId>> {
    let fd = fd.as_fd();
    loop {
        let mut d = FsverityDigest {
            header: FsverityDigestHeader {
                digest_algorithm: 0,
                digest_size: 64,
            },
            digest: [0; 64],
        };
        // SAFETY: FS_IOC_MEASURE_VERITY takes a pointer to a `struct
        // fsverity_digest`: the kernel reads `digest_size` (the capacity,
        // 64 here), fails with EOVERFLOW if the digest is larger, and
        // otherwise writes the 4-byte header plus at most `digest_size` bytes
        // after it. `FsverityDigest` is `repr(C)` with exactly that header
        // followed by 64 bytes, so every write lands inside `d`, which
        // `Updater` borrows mutably for the duration of the call.
        let result =
            unsafe { rustix::ioctl::ioctl(fd, Updater::<FS_IOC_MEASURE_VERITY, _>::new(&mut d)) };
        return match result {
            Ok(()) => {
                let kernel_alg = u8::try_from(d.header.digest_algorithm)
                    .ok()
                    .and_then(Algorithm::from_kernel_id);
                let size = usize::from(d.header.digest_size);
                match kernel_alg {
                    Some(a) if a == alg && size == alg.digest_len() => {
                        Ok(ObjectId::from_bytes(alg, &d.digest[..size]))
                    }
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "file has fs-verity with algorithm {} ({} byte digest), expected {alg}",
                            d.header.digest_algorithm, d.header.digest_size
                        ),
                    )),
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) if e == Errno::NODATA || is_unsupported(e) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    #[test]
    fn opcodes_match_the_kernel_headers() {
        // The numbers from <linux/fsverity.h> on x86, arm, riscv and friends.
        #[cfg(any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "riscv64"
        ))]
        {
            assert_eq!(FS_IOC_ENABLE_VERITY as u64, 0x4080_6685);
            assert_eq!(FS_IOC_MEASURE_VERITY as u64, 0xc004_6686);
        }
    }

    /// Enable then measure on a fresh file in `dir`. Where the kernel and the
    /// filesystem have no fs-verity (this project's machines), enable says
    /// Unsupported and measure says None; where they do, the measurement must
    /// equal the userspace digest.
    fn enable_and_measure_in(dir: &std::path::Path) {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let content = vec![0x5au8; 3 * 4096 + 17];
            let path = dir.join(format!("verity-{alg}"));
            {
                let mut f = File::create(&path).unwrap();
                f.write_all(&content).unwrap();
            }
            // Read-only, no writers left: what FS_IOC_ENABLE_VERITY wants.
            let f = File::open(&path).unwrap();
            assert_eq!(measure(&f, alg).unwrap(), None, "fresh file has no verity");
            match enable(&f, alg) {
                Err(EnableError::Unsupported) => {
                    assert_eq!(measure(&f, alg).unwrap(), None);
                }
                Ok(()) => {
                    let expected = super::super::digest_bytes(alg, &content);
                    assert_eq!(measure(&f, alg).unwrap(), Some(expected));
                    // Enabling again is fine.
                    enable(&f, alg).unwrap();
                }
                Err(e) => panic!("enable failed unexpectedly in {}: {e}", dir.display()),
            }
        }
    }

    #[test]
    fn enable_and_measure_on_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        enable_and_measure_in(dir.path());
    }

    #[test]
    fn enable_and_measure_on_tmpfs() {
        // tmpfs has no fs-verity at all: the ENOTTY path.
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            let dir = tempfile::tempdir_in(shm).unwrap();
            enable_and_measure_in(dir.path());
        }
    }

    #[test]
    fn directory_is_handled_without_panic() {
        // A directory: EINVAL/ENOTTY/EISDIR depending on the kernel; it must
        // not panic, and measure must not report a digest.
        let dir = tempfile::tempdir().unwrap();
        let d = File::open(dir.path()).unwrap();
        let _ = enable(&d, Algorithm::Sha256);
        assert!(!matches!(measure(&d, Algorithm::Sha256), Ok(Some(_))));
    }
}
