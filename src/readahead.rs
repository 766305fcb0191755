//! Read-ahead on a helper thread: a stream whose bytes cost work to
//! produce (a network download being digested, a decompressor) is read
//! by its own thread, so producing the next bytes overlaps with consuming
//! the current ones.
//!
//! The producer reads blocks of [`BLOCK`] bytes and passes them over a
//! bounded channel ([`IN_FLIGHT`] blocks at most, so memory stays
//! bounded); consumed blocks go back for reuse. A read error is passed on
//! in order, after the bytes read before it. When the consumer is dropped
//! the producer stops at its next block.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Bytes per block handed from the producer to the consumer.
pub const BLOCK: usize = 1 << 20;
/// Blocks waiting for the consumer at most.
pub const IN_FLIGHT: usize = 4;

/// The consuming end: reads what the producer thread read.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Start a thread in `scope` reading `inner` ahead. The thread's result is
/// `inner` itself once it is read to its end (or the consumer went away),
/// so that whatever `inner` accumulated (a digest, a count) can be read.
pub fn spawn<'scope, R>(
    scope: &'scope Scope<'scope, '_>,
    name: &str,
    mut inner: R,
) -> io::Result<(ReadAhead, ScopedJoinHandle<'scope, R>)>
where
    R: Read + Send + 'scope,
{
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    let (spare, spares) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, move || {
            loop {
                let mut block = spares.try_recv().unwrap_or_default();
                block.resize(BLOCK, 0);
                match crate::fsutil::read_full(&mut inner, &mut block) {
                    Ok(0) => break,
                    Ok(n) => {
                        block.truncate(n);
                        if tx.send(Ok(block)).is_err() {
                            break; // the consumer is gone
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
            inner
        })?;
    Ok((
        ReadAhead {
            rx,
            spare,
            block: Vec::new(),
            pos: 0,
            done: false,
        },
        handle,
    ))
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(block)) => {
                    let old = std::mem::replace(&mut self.block, block);
                    let _ = self.spare.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing {
        data: Vec<u8>,
        pos: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return Err(io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.data.len() - self.pos).min(1000);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn passes_bytes_in_order() {
        let data: Vec<u8> = (0..3 * BLOCK + 17).map(|i| (i * 7 % 251) as u8).collect();
        std::thread::scope(|s| {
            let (mut r, h) = spawn(s, "t", &data[..]).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
            assert!(h.join().unwrap().is_empty());
        });
    }

    #[test]
    fn error_comes_after_the_bytes_before_it() {
        let data = vec![5u8; BLOCK + 10];
        std::thread::scope(|s| {
            let (mut r, _h) = spawn(
                s,
                "t",
                Failing {
                    data: data.clone(),
                    pos: 0,
                },
            )
            .unwrap();
            let mut out = vec![0u8; BLOCK];
            r.read_exact(&mut out).unwrap();
            let mut rest = Vec::new();
            let e = r.read_to_end(&mut rest).unwrap_err();
            assert_eq!(e.to_string(), "connection reset");
        });
    }

    #[test]
    fn producer_stops_when_consumer_goes() {
        let data = vec![1u8; 64 * BLOCK];
        std::thread::scope(|s| {
            let (mut r, h) = spawn(s, "t", &data[..]).unwrap();
            let mut one = [0u8; 1];
            r.read_exact(&mut one).unwrap();
            drop(r);
            let left = h.join().unwrap();
            assert!(!left.is_empty(), "the producer read everything");
        });
    }
}
