//! A blob's body as the registry sends it: exactly the descriptor's size
//! (longer is an error, shorter or cut by the network is transient: the
//! pull may start the blob again), errors saying which blob.

use std::io::Read;

/// A blob's body: exactly `size` bytes, errors say which blob.
pub(super) struct BlobReader {
    inner: ureq::BodyReader<'static>,
    size: u64,
    remaining: u64,
    what: String,
}

impl BlobReader {
    /// `inner`, which should hold `size` bytes; `what` names the blob in
    /// errors.
    pub(super) fn new(inner: ureq::BodyReader<'static>, size: u64, what: String) -> Self {
        BlobReader {
            inner,
            size,
            remaining: size,
            what,
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        if buf.is_empty() {
            return Ok(0);
        }
        // Network trouble: the pull may start the blob again.
        let wrap = |e: Error, what: &str| {
            Error::new(e.kind(), crate::net::Transient(format!("{what}: {e}")))
        };
        if self.remaining == 0 {
            let mut extra = [0u8; 1];
            return match self.inner.read(&mut extra) {
                Ok(0) => Ok(0),
                Ok(_) => Err(Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: longer than its {} bytes", self.what, self.size),
                )),
                Err(e) => Err(wrap(e, &self.what)),
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..n]) {
            Ok(0) => Err(Error::new(
                ErrorKind::UnexpectedEof,
                crate::net::Transient(format!(
                    "{}: the body ended after {} of {} bytes",
                    self.what,
                    self.size - self.remaining,
                    self.size
                )),
            )),
            Ok(k) => {
                self.remaining -= k as u64;
                Ok(k)
            }
            Err(e) => Err(wrap(e, &self.what)),
        }
    }
}
