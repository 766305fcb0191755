//! A blob's body as the registry sends it: exactly the descriptor's size
//! (longer is an error, shorter or cut by the network is transient: the
//! pull may start the blob again), errors saying which blob; and a range
//! of a blob ([`Registry::blob_range`]), for readers that fetch a layer's
//! table of contents and files one by one.

use std::io::Read;
use std::ops::Range;

use anyhow::Result;

use super::Registry;
use super::http::content_length;
use crate::oci::spec::Digest;

impl Registry {
    /// The URL of blob `digest`, for messages.
    pub fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }

    /// Bytes `range` of blob `digest` (`size` bytes in all), by an HTTP
    /// Range request: exactly `range.end - range.start` bytes. A 206
    /// answer must carry that range (`Content-Range`); a 200 answer (a
    /// registry or blob store that ignores ranges) is the whole blob, whose
    /// bytes before the range are read and dropped and after it are never
    /// read. Failures before any byte is handed out are retried; a body
    /// cut short later is a [`crate::net::Transient`] error (the caller
    /// may ask again).
    pub fn blob_range(
        &self,
        digest: &Digest,
        size: u64,
        range: Range<u64>,
    ) -> Result<Box<dyn Read + Send + '_>> {
        let what = format!("blob {digest} bytes {}..{}", range.start, range.end);
        if range.start >= range.end || range.end > size {
            return Err(self.error(format!("{what}: not a range of its {size} bytes")));
        }
        let len = range.end - range.start;
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let (reader, whole) = self.get(&path, &[("Range", &header)], &what, |resp| {
            let status = resp.status().as_u16();
            let announced = content_length(&resp);
            if status == 206 {
                let got = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                if got != Some((range.start, range.end - 1)) {
                    return Err(self.error(format!(
                        "{what}: the registry answered 206 with Content-Range {:?}",
                        resp.headers()
                            .get("content-range")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("(none)")
                    )));
                }
                if let Some(n) = announced
                    && n != len
                {
                    return Err(self.error(format!(
                        "{what}: the registry announces {n} bytes for a range of {len}"
                    )));
                }
                Ok((resp.into_body().into_with_config().reader(), false))
            } else {
                if let Some(n) = announced
                    && n != size
                {
                    return Err(self.error(format!(
                        "{what}: the registry ignores the range and announces {n} bytes, the descriptor {size}"
                    )));
                }
                Ok((resp.into_body().into_with_config().reader(), true))
            }
        })?;
        let described = self.error(&what).to_string();
        if !whole {
            return Ok(Box::new(BlobReader::new(reader, len, described)));
        }
        tracing::debug!("{what}: the registry sent the whole blob (no range support)");
        let mut body = BlobReader::new(reader, size, described);
        std::io::copy(&mut (&mut body).take(range.start), &mut std::io::sink())?;
        Ok(Box::new(body.take(len)))
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`): (FIRST, LAST).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, _total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
}

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

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9)));
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
        assert_eq!(parse_content_range("bytes a-9/100"), None);
    }
}
