//! One piece of work per key at a time: the lazy trees' fetches. A
//! reader asking for what another is fetching waits for that fetch and
//! then looks again (finding it stored, or trying itself if the first
//! failed), instead of fetching the same bytes twice.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;

/// Work in flight, by key.
pub struct SingleFlight<K> {
    slots: Mutex<HashMap<K, Arc<Mutex<()>>>>,
}

impl<K> Default for SingleFlight<K> {
    fn default() -> Self {
        SingleFlight {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked leaves nothing half-done here: go on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Eq + Hash + Clone> SingleFlight<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `check`'s answer if it has one; else `work`'s, run by one caller
    /// per key at a time: the others wait for it and `check` again.
    pub fn run<T>(
        &self,
        key: K,
        check: impl Fn() -> Result<Option<T>>,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if let Some(v) = check()? {
            return Ok(v);
        }
        let slot = lock(&self.slots).entry(key.clone()).or_default().clone();
        let r = {
            let _turn = lock(&slot);
            match check() {
                Ok(Some(v)) => Ok(v),
                Ok(None) => work(),
                Err(e) => Err(e),
            }
        };
        let mut slots = lock(&self.slots);
        // Only the map and this caller hold the slot: nobody waits.
        if Arc::strong_count(&slot) == 2 {
            slots.remove(&key);
        }
        r
    }

    /// Callers working on or waiting for `key` now.
    pub fn callers(&self, key: &K) -> usize {
        lock(&self.slots)
            .get(key)
            .map_or(0, |s| Arc::strong_count(s) - 1)
    }

    /// Nothing in flight.
    pub fn is_idle(&self) -> bool {
        lock(&self.slots).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_worker_per_key_and_the_others_find_its_result() {
        let flights = SingleFlight::new();
        let done = Mutex::new(None::<u32>);
        let runs = AtomicUsize::new(0);
        let gate = Mutex::new(());
        let held = lock(&gate);
        std::thread::scope(|s| {
            let call = || {
                flights.run(
                    7,
                    || Ok(*lock(&done)),
                    || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        drop(lock(&gate));
                        *lock(&done) = Some(42);
                        Ok(42)
                    },
                )
            };
            let a = s.spawn(call);
            let b = s.spawn(call);
            while flights.callers(&7) < 2 {
                std::thread::yield_now();
            }
            drop(held);
            assert_eq!(a.join().unwrap().unwrap(), 42);
            assert_eq!(b.join().unwrap().unwrap(), 42);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_idle());
    }

    #[test]
    fn a_failed_worker_lets_the_next_caller_try() {
        let flights = SingleFlight::new();
        let r: Result<u32> = flights.run("k", || Ok(None), || anyhow::bail!("down"));
        assert!(r.is_err());
        assert!(flights.is_idle());
        assert_eq!(flights.run("k", || Ok(None), || Ok(1)).unwrap(), 1);
    }
}
