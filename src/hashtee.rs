//! A reader that computes the sha256 of everything read through it on a
//! helper thread, so hashing a stream (an OCI diff_id, a blob digest) costs
//! the reading thread almost nothing.
//!
//! Input is read in 1 MiB blocks; each block is shared (not copied) with the
//! hashing thread. At most [`IN_FLIGHT`] blocks wait for it, so memory stays
//! bounded.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

const BLOCK: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// Reads from `inner`, hashing on the side. Call [`HashTee::finish`] for the digest.
pub struct HashTee<R> {
    inner: R,
    block: Arc<Vec<u8>>,
    pos: usize,
    len: usize,
    total: u64,
    tx: Option<SyncSender<Arc<Vec<u8>>>>,
    /// Blocks the hasher is done with, for reuse.
    spare: Receiver<Arc<Vec<u8>>>,
    hasher: Option<JoinHandle<[u8; 32]>>,
    eof: bool,
}

impl<R: Read> HashTee<R> {
    pub fn new(inner: R) -> Self {
        let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(IN_FLIGHT);
        let (spare_tx, spare) = sync_channel::<Arc<Vec<u8>>>(IN_FLIGHT + 2);
        let hasher = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut sha = Sha256::new();
                for block in rx {
                    sha.update(&block[..]);
                    let _ = spare_tx.try_send(block);
                }
                sha.finalize().into()
            })
            .ok();
        HashTee {
            inner,
            block: Arc::new(Vec::new()),
            pos: 0,
            len: 0,
            total: 0,
            tx: Some(tx),
            spare,
            hasher,
            eof: false,
        }
    }

    /// Bytes handed out so far.
    pub fn position(&self) -> u64 {
        self.total - (self.len - self.pos) as u64
    }

    /// Refill from `inner`: hand the finished block to the hasher first.
    fn refill(&mut self) -> io::Result<()> {
        let done = std::mem::replace(&mut self.block, Arc::new(Vec::new()));
        if !done.is_empty() {
            self.send(done)?;
        }
        let mut next = self.spare.try_recv().unwrap_or_default();
        if Arc::get_mut(&mut next).is_none() {
            next = Arc::default();
        }
        let buf = Arc::get_mut(&mut next).expect("a fresh or unshared block");
        buf.resize(BLOCK, 0);
        let n = crate::fsutil::read_full(&mut self.inner, buf)?;
        buf.truncate(n);
        self.eof = n == 0;
        self.total += n as u64;
        self.block = next;
        self.pos = 0;
        self.len = n;
        Ok(())
    }

    fn send(&mut self, block: Arc<Vec<u8>>) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .send(block)
                .map_err(|_| io::Error::other("the sha256 thread stopped")),
            None => Ok(()),
        }
    }

    /// Read whatever is left (the digest covers the whole input), then
    /// return the sha256 and the total length.
    pub fn finish(mut self) -> io::Result<([u8; 32], u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let last = std::mem::replace(&mut self.block, Arc::new(Vec::new()));
        if !last.is_empty() {
            self.send(last)?;
        }
        self.tx.take();
        let digest = self
            .hasher
            .take()
            .ok_or_else(|| io::Error::other("cannot start the sha256 thread"))?
            .join()
            .map_err(|_| io::Error::other("the sha256 thread panicked"))?;
        Ok((digest, self.total))
    }
}

impl<R: Read> Read for HashTee<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            if self.eof {
                return Ok(0);
            }
            self.refill()?;
            if self.len == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_everything_in_order() {
        for len in [0usize, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut tee = HashTee::new(&data[..]);
            let mut first = vec![0u8; len / 3];
            tee.read_exact(&mut first).unwrap();
            assert_eq!(tee.position(), first.len() as u64);
            assert_eq!(first, data[..len / 3]);
            let (digest, total) = tee.finish().unwrap();
            assert_eq!(total, len as u64);
            assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)));
        }
    }
}
