//! The object refs of a splitstream being written: deduplicated in order of
//! first use, spooled to a temporary file, indexed in memory by an 8-byte
//! digest prefix (about 16 bytes per distinct object), so writing a stream
//! of millions of objects stays small.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::fsverity::ObjectId;

/// Digests buffered in memory before they go to the spool file.
const PENDING_MAX: usize = 64 * 1024;

pub(super) struct RefTable {
    spool: File,
    /// Digests not yet written to `spool`, starting at index `flushed`.
    pending: Vec<u8>,
    flushed: usize,
    count: usize,
    digest_len: usize,
    by_prefix: HashMap<u64, u32>,
    /// Ids whose prefix is taken by a different id (rare).
    collided: HashMap<ObjectId, u32>,
}

fn prefix(id: &ObjectId) -> u64 {
    u64::from_le_bytes(
        id.as_bytes()[..8]
            .try_into()
            .expect("digests are longer than 8 bytes"),
    )
}

impl RefTable {
    pub fn new(spool: File, digest_len: usize) -> Self {
        RefTable {
            spool,
            pending: Vec::new(),
            flushed: 0,
            count: 0,
            digest_len,
            by_prefix: HashMap::new(),
            collided: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes the refs take in the file.
    pub fn byte_len(&self) -> u64 {
        (self.count * self.digest_len) as u64
    }

    /// The index of `id`, adding it if new.
    pub fn index_of(&mut self, id: &ObjectId) -> io::Result<usize> {
        let p = prefix(id);
        match self.by_prefix.get(&p).copied() {
            None => {
                let i = self.push(id)?;
                self.by_prefix.insert(p, i as u32);
                Ok(i)
            }
            Some(i) if self.digest_at(i as usize)? == id.as_bytes() => Ok(i as usize),
            Some(_) => {
                if let Some(&i) = self.collided.get(id) {
                    return Ok(i as usize);
                }
                let i = self.push(id)?;
                self.collided.insert(*id, i as u32);
                Ok(i)
            }
        }
    }

    fn push(&mut self, id: &ObjectId) -> io::Result<usize> {
        if self.count >= u32::MAX as usize {
            return Err(io::Error::other("more than 2^32 objects in one stream"));
        }
        self.pending.extend_from_slice(id.as_bytes());
        self.count += 1;
        if self.pending.len() >= PENDING_MAX {
            self.flush()?;
        }
        Ok(self.count - 1)
    }

    fn flush(&mut self) -> io::Result<()> {
        let off = (self.flushed * self.digest_len) as u64;
        self.spool.write_all_at(&self.pending, off)?;
        self.flushed += self.pending.len() / self.digest_len;
        self.pending.clear();
        Ok(())
    }

    fn digest_at(&self, i: usize) -> io::Result<Vec<u8>> {
        let n = self.digest_len;
        if i >= self.flushed {
            let at = (i - self.flushed) * n;
            return Ok(self.pending[at..at + n].to_vec());
        }
        let mut buf = vec![0u8; n];
        self.spool.read_exact_at(&mut buf, (i * n) as u64)?;
        Ok(buf)
    }

    /// Write every digest, in index order.
    pub fn copy_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.flush()?;
        self.spool.seek(SeekFrom::Start(0))?;
        let len = self.byte_len();
        let mut limited = io::Read::take(&mut self.spool, len);
        io::copy(&mut limited, out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsverity::Algorithm;

    #[test]
    fn dedups_in_first_use_order_across_the_spool() {
        let mut t = RefTable::new(tempfile::tempfile().unwrap(), 32);
        let id = |n: u32, salt: u8| {
            let mut b = [salt; 32];
            b[8..12].copy_from_slice(&n.to_le_bytes());
            ObjectId::from_bytes(Algorithm::Sha256, &b).unwrap()
        };
        // 5000 distinct ids (more than PENDING_MAX holds), all with the same
        // 8-byte prefix for salt 7: every lookup goes through the collision path.
        for n in 0..5000 {
            assert_eq!(t.index_of(&id(n, 7)).unwrap(), n as usize);
        }
        for n in (0..5000).rev() {
            assert_eq!(t.index_of(&id(n, 7)).unwrap(), n as usize);
        }
        assert_eq!(t.index_of(&id(0, 9)).unwrap(), 5000);
        assert_eq!(t.len(), 5001);
        let mut out = Vec::new();
        t.copy_to(&mut out).unwrap();
        assert_eq!(out.len(), 5001 * 32);
        assert_eq!(&out[32 * 4999..32 * 5000], id(4999, 7).as_bytes());
        assert_eq!(&out[32 * 5000..], id(0, 9).as_bytes());
    }
}
