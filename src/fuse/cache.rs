//! The FUSE view's memory: decoded inodes and directory listings, kept in
//! one least-recently-used cache bounded in bytes (`--cache-size`), and
//! open object files, kept in an LRU bounded in count.
//!
//! Trees decode on demand and keep nothing themselves (beyond their
//! inode-number tables), so these bounds are what bounds the daemon,
//! however large the tree or however long the walk. A listing larger than
//! the whole budget is not kept here; the filesystem keeps the last few
//! such listings while they are being read (see `fs/inodes.rs`,
//! `BIG_LISTINGS`).

use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::lock;
use crate::fsverity::ObjectId;
use crate::tree::{DirEntry, FileData, Ino, Inode, Kind};

/// Default bound on decoded inodes and listings.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Default bound on open object files kept between reads.
pub const DEFAULT_OPEN_OBJECTS: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Inode(Ino),
    Dir(Ino),
}

#[derive(Clone)]
enum Value {
    Inode(Arc<Inode>),
    Dir(Arc<[DirEntry]>),
}

/// Rough heap and bookkeeping cost of an entry, in bytes.
fn weight(v: &Value) -> usize {
    const OVERHEAD: usize = 64;
    match v {
        Value::Inode(i) => {
            let data = match &i.kind {
                Kind::Regular(FileData::Inline(d)) => d.len(),
                Kind::Regular(FileData::External { redirect, .. }) => {
                    redirect.as_ref().map_or(0, Vec::len)
                }
                Kind::Symlink(t) => t.len(),
                _ => 0,
            };
            let xattrs: usize = i.xattrs.iter().map(|(n, v)| n.len() + v.len() + 48).sum();
            OVERHEAD + std::mem::size_of::<Inode>() + data + xattrs
        }
        Value::Dir(d) => NodeCache::dir_weight(d),
    }
}

struct Inner {
    lru: LruCache<Key, (Value, usize)>,
    bytes: usize,
    budget: usize,
}

/// Decoded inodes and listings, at most `budget` bytes (an entry larger
/// than the whole budget is served but not kept).
pub struct NodeCache {
    inner: Mutex<Inner>,
}

impl NodeCache {
    pub fn new(budget: usize) -> Self {
        NodeCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                budget,
            }),
        }
    }

    fn get(&self, k: Key) -> Option<Value> {
        lock(&self.inner).lru.get(&k).map(|(v, _)| v.clone())
    }

    /// Keep `v` (evicting the least recently used); false if it alone
    /// is larger than the budget, and so not kept.
    fn put(&self, k: Key, v: Value) -> bool {
        let w = weight(&v);
        let mut g = lock(&self.inner);
        if w > g.budget {
            return false;
        }
        if let Some((_, old)) = g.lru.put(k, (v, w)) {
            g.bytes -= old;
        }
        g.bytes += w;
        while g.bytes > g.budget {
            match g.lru.pop_lru() {
                Some((_, (_, old))) => g.bytes -= old,
                None => break,
            }
        }
        true
    }

    pub fn inode(&self, ino: Ino) -> Option<Arc<Inode>> {
        match self.get(Key::Inode(ino)) {
            Some(Value::Inode(i)) => Some(i),
            _ => None,
        }
    }

    pub fn put_inode(&self, ino: Ino, i: Arc<Inode>) {
        self.put(Key::Inode(ino), Value::Inode(i));
    }

    /// The weight a listing would have in the cache.
    pub fn dir_weight(d: &[DirEntry]) -> usize {
        64 + d
            .iter()
            .map(|e| e.name.len() + std::mem::size_of::<DirEntry>())
            .sum::<usize>()
    }

    pub fn dir(&self, ino: Ino) -> Option<Arc<[DirEntry]>> {
        match self.get(Key::Dir(ino)) {
            Some(Value::Dir(d)) => Some(d),
            _ => None,
        }
    }

    /// Keep a listing; false if it is larger than the whole budget.
    pub fn put_dir(&self, ino: Ino, d: Arc<[DirEntry]>) -> bool {
        self.put(Key::Dir(ino), Value::Dir(d))
    }

    /// Bytes held now (for tests and statistics).
    pub fn bytes(&self) -> usize {
        lock(&self.inner).bytes
    }
}

/// Open object files, least recently used closed first.
pub struct ObjectCache {
    lru: Mutex<LruCache<ObjectId, Arc<File>>>,
}

impl ObjectCache {
    pub fn new(cap: usize) -> Self {
        let cap = NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN);
        ObjectCache {
            lru: Mutex::new(LruCache::new(cap)),
        }
    }

    pub fn get(&self, id: &ObjectId) -> Option<Arc<File>> {
        lock(&self.lru).get(id).cloned()
    }

    pub fn insert(&self, id: ObjectId, f: Arc<File>) {
        lock(&self.lru).put(id, f);
    }
}

/// Parse a size like `64M`, `512k`, `1G` or `1048576` (bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: usize = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64M)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Stat;

    fn inode(inline: usize) -> Arc<Inode> {
        Arc::new(Inode {
            stat: Stat::default(),
            kind: Kind::Regular(FileData::Inline(vec![0; inline])),
            xattrs: vec![],
        })
    }

    #[test]
    fn bounded_in_bytes() {
        let c = NodeCache::new(10_000);
        for i in 0..1000 {
            c.put_inode(i, inode(100));
            assert!(c.bytes() <= 10_000);
        }
        // The newest are kept, the oldest gone.
        assert!(c.inode(999).is_some());
        assert!(c.inode(0).is_none());
        // Larger than the budget: not kept, nothing evicted for it.
        let before = c.bytes();
        c.put_inode(5000, inode(20_000));
        assert!(c.inode(5000).is_none());
        assert_eq!(c.bytes(), before);
        // Replacing an entry does not count it twice.
        c.put_inode(999, inode(100));
        assert_eq!(c.bytes(), before);
    }

    #[test]
    fn objects_evict_oldest() {
        let c = ObjectCache::new(2);
        let f = || Arc::new(File::open("/dev/null").unwrap());
        let ids: Vec<ObjectId> = (0u8..3)
            .map(|i| crate::fsverity::digest_bytes(crate::fsverity::Algorithm::Sha256, &[i]))
            .collect();
        c.insert(ids[0], f());
        c.insert(ids[1], f());
        assert!(c.get(&ids[0]).is_some());
        c.insert(ids[2], f());
        assert!(c.get(&ids[1]).is_none());
        assert!(c.get(&ids[0]).is_some());
        assert!(c.get(&ids[2]).is_some());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
