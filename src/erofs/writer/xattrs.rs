//! The xattrs of the image's inodes as the writer keeps them: a node's
//! list of (name, value) pairs, interned as numbered [`XattrSets`], and
//! the size of one stored xattr entry.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::erofs::format::{self, XattrEntryHeader};

/// A node's xattrs: (name, value) pairs.
pub(super) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Set (add or replace) an xattr, as `lcfs_node_set_xattr`.
pub(super) fn set_xattr(xs: &mut Xattrs, key: &[u8], value: &[u8]) {
    match xs.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value.to_vec(),
        None => xs.push((key.to_vec(), value.to_vec())),
    }
}

/// The distinct xattr sets of the image's inodes, each sorted by name:
/// most inodes share a few sets (often the empty one, number 0), so a
/// node names its set by number.
pub(super) struct XattrSets {
    pub(super) sets: Vec<Arc<Xattrs>>,
    index: HashMap<Arc<Xattrs>, u32>,
}

impl XattrSets {
    pub(super) fn new() -> Self {
        let empty: Arc<Xattrs> = Arc::new(Vec::new());
        XattrSets {
            sets: vec![empty.clone()],
            index: HashMap::from([(empty, 0)]),
        }
    }

    /// The number of `xs` (sorted here).
    pub(super) fn intern(&mut self, mut xs: Xattrs) -> Result<u32> {
        if xs.is_empty() {
            return Ok(0);
        }
        xs.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(&i) = self.index.get(&xs) {
            return Ok(i);
        }
        let i = u32::try_from(self.sets.len()).context("too many distinct xattr sets")?;
        let xs = Arc::new(xs);
        self.sets.push(xs.clone());
        self.index.insert(xs, i);
        Ok(i)
    }

    /// Set number `set` with `f` applied: the number of the result.
    pub(super) fn modified(&mut self, set: u32, f: impl FnOnce(&mut Xattrs)) -> Result<u32> {
        let mut xs = (*self.sets[set as usize]).clone();
        f(&mut xs);
        self.intern(xs)
    }
}

/// Bytes of one xattr entry (header, name suffix, value, padded to 4).
pub(super) fn entry_size(key: &[u8], value: &[u8]) -> u64 {
    let (_, suffix) = format::xattr_split(key);
    (XattrEntryHeader::SIZE as u64 + suffix.len() as u64 + value.len() as u64 + 3) & !3
}
