//! A layer's tar bytes as its splitstream holds them: inline pieces
//! buffered so that headers and records may straddle them, and a regular
//! file's content either inline or one spliced-in object.

use anyhow::{Result, bail};

use crate::fsverity::ObjectId;
use crate::splitstream::{Piece, SplitStreamReader};
use crate::tarheader::BLOCK;
use crate::tree::FileData;

enum Fill {
    Inline,
    External(ObjectId),
    End,
}

/// The tar bytes of a splitstream, inline pieces buffered so that headers
/// and records may straddle them.
pub(super) struct TarReader {
    stream: SplitStreamReader,
    buf: Vec<u8>,
    pos: usize,
    /// Tar bytes consumed so far (an object counts as its content's size).
    pub(super) offset: u64,
}

impl TarReader {
    pub(super) fn new(stream: SplitStreamReader) -> Self {
        TarReader {
            stream,
            buf: Vec::new(),
            pos: 0,
            offset: 0,
        }
    }

    /// Load the next piece; the buffer must be used up.
    fn fill(&mut self) -> Result<Fill> {
        debug_assert_eq!(self.pos, self.buf.len());
        Ok(match self.stream.next_piece()? {
            None => Fill::End,
            Some(Piece::Inline(b)) => {
                self.buf.clear();
                self.buf.extend_from_slice(b);
                self.pos = 0;
                Fill::Inline
            }
            Some(Piece::External(id)) => Fill::External(id),
        })
    }

    /// The next run of at most `max` (> 0) inline bytes; `None` at the end
    /// of the stream. An object here is an error: only a regular file's
    /// content may be one.
    fn inline(&mut self, max: u64) -> Result<Option<&[u8]>> {
        while self.pos == self.buf.len() {
            match self.fill()? {
                Fill::End => return Ok(None),
                Fill::Inline => {}
                Fill::External(id) => bail!(
                    "the stream splices in object {id} at tar byte {}, where only headers, \
                     padding or small data belong: corrupt",
                    self.offset
                ),
            }
        }
        let start = self.pos;
        let n = (self.buf.len() - start).min(usize::try_from(max).unwrap_or(usize::MAX));
        self.pos += n;
        self.offset += n as u64;
        Ok(Some(&self.buf[start..start + n]))
    }

    /// The next 512-byte block; `None` if the stream ends right here.
    pub(super) fn block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.inline((BLOCK - got) as u64)? {
                None if got == 0 => return Ok(None),
                None => {
                    return Err(crate::tarheader::Error::TruncatedHeader {
                        at: self.offset - got as u64,
                        got,
                    }
                    .into());
                }
                Some(s) => {
                    block[got..got + s.len()].copy_from_slice(s);
                    got += s.len();
                }
            }
        }
        Ok(Some(block))
    }

    /// Exactly `n` inline bytes (the caller bounds `n`).
    pub(super) fn read(&mut self, n: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let Some(s) = self.inline(left)? else {
                bail!(
                    "tar ends at byte {}, inside an extended header record: truncated",
                    self.offset
                );
            };
            out.extend_from_slice(s);
            left -= s.len() as u64;
        }
        Ok(out)
    }

    /// Skip `n` inline bytes.
    pub(super) fn skip(&mut self, n: u64) -> Result<()> {
        let mut left = n;
        while left > 0 {
            let Some(s) = self.inline(left)? else {
                bail!(
                    "tar ends at byte {}, inside an entry's data: truncated",
                    self.offset
                );
            };
            left -= s.len() as u64;
        }
        Ok(())
    }

    /// Skip up to `n` bytes of padding: the stream may end inside it, the
    /// last member's padding short or missing (as `crate::tarsplit` takes
    /// it); the next [`Self::block`] then finds the end.
    pub(super) fn skip_padding(&mut self, n: u64) -> Result<()> {
        let mut left = n;
        while left > 0 {
            let Some(s) = self.inline(left)? else {
                break;
            };
            left -= s.len() as u64;
        }
        Ok(())
    }

    /// A regular file's `size` bytes of content: inline bytes, or one
    /// object holding all of it.
    pub(super) fn content(&mut self, size: u64) -> Result<FileData> {
        let mut data = Vec::new();
        let mut left = size;
        while left > 0 {
            if self.pos == self.buf.len() {
                match self.fill()? {
                    Fill::End => bail!(
                        "tar ends at byte {}, inside a file's content: truncated",
                        self.offset
                    ),
                    Fill::Inline => continue,
                    Fill::External(id) => {
                        if left != size {
                            bail!(
                                "a file's content is partly inline and partly object {id}: corrupt"
                            );
                        }
                        self.offset += size;
                        return Ok(FileData::object(id, size));
                    }
                }
            }
            let n = (self.buf.len() - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            data.extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            left -= n as u64;
        }
        Ok(FileData::Inline(data))
    }
}
