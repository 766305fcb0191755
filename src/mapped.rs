//! A file's bytes in memory: read, or mapped read-only (the one `unsafe`
//! mapping the tool keeps: images and streams are read in place).

use std::io;

/// Bytes of a file, read into memory or mapped (read-only, private).
pub enum Bytes {
    Owned(Vec<u8>),
    Mapped {
        ptr: *mut std::ffi::c_void,
        len: usize,
    },
}

// SAFETY: the mapping is read-only and private, never written through,
// and unmapped only on drop.
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}

impl Bytes {
    /// Map a whole file. The file must not be truncated while mapped (a
    /// read past its new end would fault): meant for repository objects,
    /// which are written once, complete, and only ever unlinked.
    pub fn map(file: &std::fs::File) -> io::Result<Bytes> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::other("file too large to map"))?;
        if len == 0 {
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: a fresh private read-only mapping of `len` bytes of an
        // open file; no other memory is affected.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE,
                file,
                0,
            )
        }?;
        Ok(Bytes::Mapped { ptr, len })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            // SAFETY: `ptr` maps `len` readable bytes until drop.
            Bytes::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(*ptr as *const u8, *len)
            },
        }
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if let Bytes::Mapped { ptr, len } = *self {
            // SAFETY: unmapping our own mapping, once.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
        }
    }
}
