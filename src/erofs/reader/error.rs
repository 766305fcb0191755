//! Why an image cannot be read: one enum, so that a caller can tell a
//! file that is no composefs image from one using what this reader does
//! not implement, and both from a damaged image, whose error says what is
//! wrong and where (the inode's nid, a byte offset).

use std::fmt;
use std::io;

/// An error reading a composefs EROFS image.
#[derive(Debug)]
pub enum Error {
    /// Too short for the composefs header (`magic` `None`), or the wrong
    /// magic in it.
    NotComposefs { magic: Option<u32>, len: u64 },
    /// The composefs header is right but the EROFS superblock magic is not.
    NotErofs { magic: u32 },
    /// A version or feature this reader does not implement (a composefs
    /// header version, a block size, a data layout, an xattr name index).
    Unsupported { nid: Option<u64>, what: String },
    /// Metadata that contradicts itself or the format.
    Corrupt {
        nid: Option<u64>,
        offset: Option<u64>,
        what: String,
    },
    /// A range the metadata names (`what`: "inode", "xattrs", "data
    /// blocks"…) reaches past the end of the image.
    OutOfBounds {
        nid: Option<u64>,
        what: &'static str,
        start: u64,
        len: u64,
        image_len: u64,
    },
    /// The image file could not be mapped.
    Map(io::Error),
}

impl Error {
    pub(super) fn corrupt(nid: Option<u64>, offset: Option<u64>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            nid,
            offset,
            what: what.into(),
        }
    }

    pub(super) fn unsupported(nid: Option<u64>, what: impl Into<String>) -> Self {
        Error::Unsupported {
            nid,
            what: what.into(),
        }
    }

    /// An [`Error::OutOfBounds`] saying what it was reading, unless it
    /// already says.
    pub(super) fn named(mut self, name: &'static str) -> Self {
        if let Error::OutOfBounds { what, .. } = &mut self
            && what.is_empty()
        {
            *what = name;
        }
        self
    }

    /// The error, placed in inode `nid` unless it already names one.
    pub(super) fn in_inode(mut self, inode: u64) -> Self {
        if let Error::Unsupported { nid, .. }
        | Error::Corrupt { nid, .. }
        | Error::OutOfBounds { nid, .. } = &mut self
        {
            nid.get_or_insert(inode);
        }
        self
    }

    /// The error, placed at byte `at` unless it already names a place.
    pub(super) fn at(mut self, at: u64) -> Self {
        if let Error::Corrupt { offset, .. } = &mut self {
            offset.get_or_insert(at);
        }
        self
    }

    /// The inode the error is in, when known.
    pub fn nid(&self) -> Option<u64> {
        match self {
            Error::Unsupported { nid, .. }
            | Error::Corrupt { nid, .. }
            | Error::OutOfBounds { nid, .. } => *nid,
            _ => None,
        }
    }

    /// The byte offset in the image the error is at, when known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Corrupt { offset, .. } => *offset,
            Error::OutOfBounds { start, .. } => Some(*start),
            _ => None,
        }
    }

    /// Whether the image is damaged (inconsistent, or cut short), as
    /// opposed to not an image at all, or using what this reader lacks.
    pub fn is_damaged(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::OutOfBounds { .. })
    }

    /// The image error in `e`'s chain, if any (for callers holding an
    /// `anyhow::Error` with context added on the way).
    pub fn find(e: &anyhow::Error) -> Option<&Error> {
        e.chain().find_map(|c| c.downcast_ref::<Error>())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(nid) = self.nid() {
            write!(f, "inode {nid}: ")?;
        }
        match self {
            Error::NotComposefs { magic: Some(m), .. } => {
                write!(f, "not a composefs image (bad magic {m:#x})")
            }
            Error::NotComposefs { magic: None, len } => write!(
                f,
                "not a composefs image: {len} bytes, shorter than the composefs header"
            ),
            Error::NotErofs { magic } => {
                write!(
                    f,
                    "not a composefs image: bad EROFS superblock magic {magic:#x}"
                )
            }
            Error::Unsupported { what, .. } => write!(f, "unsupported {what}"),
            Error::Corrupt { offset, what, .. } => {
                write!(f, "{what}")?;
                match offset {
                    Some(at) => write!(f, " (at byte {at})"),
                    None => Ok(()),
                }
            }
            Error::OutOfBounds {
                what,
                start,
                len,
                image_len,
                ..
            } => {
                if !what.is_empty() {
                    write!(f, "{what}: ")?;
                }
                if *len == 0 {
                    write!(f, "byte {start}")?;
                } else {
                    let end = u128::from(*start) + u128::from(*len);
                    write!(f, "range {start}..{end}")?;
                }
                write!(f, " lies outside the image ({image_len} bytes)")
            }
            Error::Map(_) => write!(f, "cannot map the image"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Map(e) => Some(e),
            _ => None,
        }
    }
}

/// EROFS reader results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_and_where() {
        let e = Error::corrupt(None, Some(4096), "bad name length 0").in_inode(7);
        assert_eq!(e.to_string(), "inode 7: bad name length 0 (at byte 4096)");
        assert_eq!((e.nid(), e.offset()), (Some(7), Some(4096)));
        // The innermost place wins.
        let e = e.in_inode(9).at(1);
        assert_eq!((e.nid(), e.offset()), (Some(7), Some(4096)));
        let e = Error::OutOfBounds {
            nid: None,
            what: "xattrs",
            start: u64::MAX,
            len: 2,
            image_len: 100,
        }
        .in_inode(3);
        assert_eq!(
            e.to_string(),
            "inode 3: xattrs: range 18446744073709551615..18446744073709551617 lies outside the image (100 bytes)"
        );
        assert!(e.is_damaged());
        assert!(!Error::NotErofs { magic: 1 }.is_damaged());
        let wrapped = anyhow::Error::new(e).context("image x");
        assert_eq!(Error::find(&wrapped).and_then(Error::nid), Some(3));
    }
}
