//! Why a splitstream cannot be read: one enum, so that a caller can tell
//! a file that is no splitstream, or one of a version or algorithm this
//! tool does not read, from a damaged one (cut short, or inconsistent
//! inside), and a damaged stream from a missing or damaged object it
//! refers to.

use std::io;
use std::path::PathBuf;

use crate::fsverity::ObjectId;

/// An error reading a splitstream. The message is the whole story; the
/// source, where there is one, is the I/O or zstd error underneath.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file does not start with the splitstream magic.
    #[error("not a splitstream (bad magic)")]
    NotSplitstream,
    /// A format version this tool does not read: `what` is the part
    /// versioned (the stream, or its frame table).
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: u32 },
    /// A well-formed stream made for other parameters: another digest
    /// algorithm than the repository's, or an fs-verity block size other
    /// than 4 KiB.
    #[error("{0}")]
    Unsupported(String),
    /// The file ends before something its header, info or chunks say is
    /// there.
    #[error("{0}")]
    Truncated(String),
    /// The stream contradicts itself: a section or frame table that does
    /// not fit, data that is not zstd, a chunk or named ref that refers past
    /// the lists, lengths that do not add up.
    #[error("{what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<io::Error>,
    },
    /// An object the stream splices in is not in the repository.
    #[error(
        "cannot open object {id} in {}: it is missing (run `composefs fsck`)",
        .objects.display()
    )]
    MissingObject { id: ObjectId, objects: PathBuf },
    /// An object the stream splices in does not hold the content its
    /// name says: it digests to `got` (boxed: keeps every result small).
    #[error("object {id} is corrupt: its content digests to {got} (run `composefs fsck`)")]
    DamagedObject { id: ObjectId, got: Box<ObjectId> },
    /// Reading the file failed (not its content: the system call).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// A [`Error::Corrupt`] without an underlying error.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// An I/O failure doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A failure decompressing (`what`): corrupt data, unless the system
    /// call underneath failed (an error with an OS error code).
    pub fn decompress(what: impl Into<String>, source: io::Error) -> Self {
        if source.raw_os_error().is_some() {
            Error::io(what, source)
        } else {
            Error::Corrupt {
                what: what.into(),
                source: Some(source),
            }
        }
    }

    /// Whether the stream itself is damaged (cut short or inconsistent),
    /// as opposed to unreadable, of another kind, or intact but referring
    /// to an object that is missing or damaged.
    pub fn is_damaged(&self) -> bool {
        matches!(
            self,
            Error::NotSplitstream | Error::Truncated(_) | Error::Corrupt { .. }
        )
    }

    /// The splitstream error in `e`'s chain, if any: how a caller holding
    /// an `anyhow::Error` (with context added on the way) tells cases
    /// apart.
    pub fn find(e: &anyhow::Error) -> Option<&Error> {
        e.chain().find_map(|c| c.downcast_ref::<Error>())
    }
}

/// Splitstream results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_through_context() {
        let e = anyhow::Error::new(Error::Truncated("short".into()))
            .context("stream object x")
            .context("stored ostree commit y");
        assert!(matches!(Error::find(&e), Some(Error::Truncated(_))));
        assert!(Error::find(&e).unwrap().is_damaged());
        assert!(Error::find(&anyhow::anyhow!("other")).is_none());
        let zstd = io::Error::other("Unknown frame descriptor");
        assert!(Error::decompress("x", zstd).is_damaged());
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(Error::decompress("x", eio), Error::Io { .. }));
    }
}
