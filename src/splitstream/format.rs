//! Byte layout of the splitstream header and info section (all little-endian).

use std::ops::Range;

use super::error::{Error, Result};
use crate::fsverity::Algorithm;

pub const MAGIC: [u8; 11] = *b"SplitStream";
pub const HEADER_SIZE: usize = 32;
/// Size of the info section we write; readers accept larger ones.
pub const INFO_SIZE: usize = 80;

/// Well-known `content_type` values (8 ASCII bytes read as a LE u64), shared
/// with composefs-rs.
pub mod content_type {
    pub const OCI_LAYER: u64 = u64::from_le_bytes(*b"ocilayer");
    pub const OCI_CONFIG: u64 = u64::from_le_bytes(*b"ociconfg");
    pub const OCI_MANIFEST: u64 = u64::from_le_bytes(*b"ocimanif");
    pub const OCI_BLOB: u64 = u64::from_le_bytes(*b"oci_blob");
}

/// The fixed 32-byte header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub algorithm: Algorithm,
    pub lg_blocksize: u8,
    pub info: Range<u64>,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..11].copy_from_slice(&MAGIC);
        b[11] = 0; // version
        // b[12..14]: flags, zero
        b[14] = self.algorithm.kernel_id();
        b[15] = self.lg_blocksize;
        b[16..24].copy_from_slice(&self.info.start.to_le_bytes());
        b[24..32].copy_from_slice(&self.info.end.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_SIZE {
            return Err(Error::Truncated(format!(
                "splitstream is {} bytes, shorter than its {HEADER_SIZE}-byte header: truncated",
                b.len()
            )));
        }
        if b[..11] != MAGIC {
            return Err(Error::NotSplitstream);
        }
        if b[11] != 0 {
            return Err(Error::UnsupportedVersion {
                what: "splitstream",
                version: u32::from(b[11]),
            });
        }
        let Some(algorithm) = Algorithm::from_kernel_id(b[14]) else {
            return Err(Error::Unsupported(format!(
                "unknown fs-verity algorithm id {} in splitstream header",
                b[14]
            )));
        };
        let lg_blocksize = b[15];
        let info = u64_at(b, 16)..u64_at(b, 24);
        Ok(Header {
            algorithm,
            lg_blocksize,
            info,
        })
    }
}

/// The info section: where everything else is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub stream_refs: Range<u64>,
    pub object_refs: Range<u64>,
    pub stream: Range<u64>,
    pub named_refs: Range<u64>,
    pub content_type: u64,
    pub stream_size: u64,
}

impl Info {
    pub fn encode(&self) -> [u8; INFO_SIZE] {
        let mut b = [0u8; INFO_SIZE];
        let vals = [
            self.stream_refs.start,
            self.stream_refs.end,
            self.object_refs.start,
            self.object_refs.end,
            self.stream.start,
            self.stream.end,
            self.named_refs.start,
            self.named_refs.end,
            self.content_type,
            self.stream_size,
        ];
        for (i, v) in vals.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < INFO_SIZE {
            return Err(Error::corrupt(format!(
                "splitstream info section is {} bytes, need at least {INFO_SIZE}",
                b.len()
            )));
        }
        Ok(Info {
            stream_refs: u64_at(b, 0)..u64_at(b, 8),
            object_refs: u64_at(b, 16)..u64_at(b, 24),
            stream: u64_at(b, 32)..u64_at(b, 40),
            named_refs: u64_at(b, 48)..u64_at(b, 56),
            content_type: u64_at(b, 64),
            stream_size: u64_at(b, 72),
        })
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Show a content type as its ASCII spelling where it has one.
pub fn content_type_name(ct: u64) -> String {
    let bytes = ct.to_le_bytes();
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        format!("{ct:#018x}")
    }
}

/// A section must lie in the file: one that ends past it is cut short
/// (or its end is garbage), one that ends before it starts is corrupt.
fn check_range(r: &Range<u64>, file_len: u64, what: &str) -> Result<()> {
    if r.start > r.end || r.end > file_len {
        let what = format!(
            "splitstream {what} section {}..{} lies outside the file ({file_len} bytes): truncated or corrupt",
            r.start, r.end
        );
        return Err(if r.start > r.end {
            Error::corrupt(what)
        } else {
            Error::Truncated(what)
        });
    }
    Ok(())
}

/// Check a splitstream's header against its file length and the
/// repository's algorithm, before its info section is read.
pub fn check_header(header: &Header, file_len: u64, algorithm: Algorithm) -> Result<()> {
    if header.algorithm != algorithm {
        return Err(Error::Unsupported(format!(
            "splitstream uses {}, the repository uses {algorithm}",
            header.algorithm
        )));
    }
    if header.lg_blocksize != Algorithm::LG_BLOCKSIZE {
        return Err(Error::Unsupported(format!(
            "splitstream uses fs-verity block size 2^{}, only 2^12 is supported",
            header.lg_blocksize
        )));
    }
    check_range(&header.info, file_len, "info")?;
    if header.info.end - header.info.start < INFO_SIZE as u64 {
        return Err(Error::corrupt(format!(
            "splitstream info section is too short ({} bytes)",
            header.info.end - header.info.start
        )));
    }
    Ok(())
}

/// Check the sections an info names lie in the file: with
/// [`check_header`], everything [`super::SplitStreamReader::new`]
/// and [`super::Frames::map`] rely on.
pub fn check_sections(info: &Info, file_len: u64) -> Result<()> {
    check_range(&info.stream_refs, file_len, "stream refs")?;
    check_range(&info.object_refs, file_len, "object refs")?;
    check_range(&info.stream, file_len, "stream")?;
    check_range(&info.named_refs, file_len, "named refs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            algorithm: Algorithm::Sha512,
            lg_blocksize: 12,
            info: 32..112,
        };
        let b = h.encode();
        assert_eq!(&b[..11], b"SplitStream");
        assert_eq!(Header::decode(&b).unwrap(), h);
        let mut bad = b;
        bad[0] = b's';
        assert!(matches!(Header::decode(&bad), Err(Error::NotSplitstream)));
        let mut bad = b;
        bad[14] = 9;
        assert!(matches!(Header::decode(&bad), Err(Error::Unsupported(_))));
        assert!(matches!(Header::decode(&b[..20]), Err(Error::Truncated(_))));
    }

    #[test]
    fn info_round_trip() {
        let i = Info {
            stream_refs: 1..2,
            object_refs: 3..4,
            stream: 5..6,
            named_refs: 7..8,
            content_type: content_type::OCI_LAYER,
            stream_size: 99,
        };
        assert_eq!(Info::decode(&i.encode()).unwrap(), i);
        assert_eq!(content_type_name(content_type::OCI_LAYER), "ocilayer");
    }
}
