//! Parallel object storage: digest and write objects on worker threads while
//! the caller goes on parsing its input.
//!
//! Each job is one in-memory object. Results come back through a [`Ticket`]
//! per job, so the caller decides the order in which it consumes them (a
//! splitstream must reference objects in stream order). The buffer travels
//! back with the result for reuse.

use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Result, anyhow};

use super::Repository;
use crate::fsverity::ObjectId;

type Reply = Result<(ObjectId, Vec<u8>)>;

struct Job {
    data: Vec<u8>,
    reply: SyncSender<Reply>,
}

/// Where a submitted object's id will arrive.
pub struct Ticket(Receiver<Reply>);

impl Ticket {
    /// The result if the object is stored already.
    pub fn try_take(&self) -> Option<Reply> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(anyhow!("object storage worker died"))),
        }
    }

    /// Wait for the result.
    pub fn take(&self) -> Reply {
        self.0
            .recv()
            .unwrap_or_else(|_| Err(anyhow!("object storage worker died")))
    }
}

/// A fixed set of worker threads storing objects into one repository.
pub struct StorePool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl StorePool {
    /// Start `threads` workers, each with its own handle on `repo`.
    pub fn new(repo: &Repository, threads: usize) -> Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let repo = repo.try_clone()?;
            let rx = Arc::clone(&rx);
            let handle = std::thread::Builder::new()
                .name(format!("store-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(Job { data, reply }) = job else { return };
                        let result = repo.store_bytes(&data).map(|id| (id, data));
                        let _ = reply.send(result);
                    }
                })
                .map_err(|e| anyhow!("cannot start an object storage thread: {e}"))?;
            workers.push(handle);
        }
        Ok(StorePool {
            jobs: Some(tx),
            workers,
        })
    }

    /// Queue `data` to be stored as one object.
    pub fn submit(&self, data: Vec<u8>) -> Ticket {
        let (reply, rx) = mpsc::sync_channel(1);
        if let Some(jobs) = &self.jobs
            && let Err(mpsc::SendError(job)) = jobs.send(Job { data, reply })
        {
            let _ = job
                .reply
                .send(Err(anyhow!("object storage workers have stopped")));
        }
        Ticket(rx)
    }
}

impl Drop for StorePool {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
