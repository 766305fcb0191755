//! The shared xattr table (step 3, `compute_erofs_shared_xattrs`): the
//! xattrs more than one inode has, stored once after the inodes and
//! referred to by offset; and a node's xattrs as stored, each either
//! inline or a reference into the table.

use std::borrow::Cow;
use std::collections::HashMap;

use super::node::{Data, Node};
use super::xattrs::{XattrSets, Xattrs, entry_size};
use crate::erofs::format::{self, overlay};
use crate::fsverity::ObjectId;
use crate::tree::{FileData, Kind};

/// An xattr's name and value, borrowed or made.
type CowXattr<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// An xattr of a node as stored: name, value, and its offset in the
/// shared table if the inode refers to it there.
pub(super) struct StoredXattr<'a> {
    pub(super) key: &'a [u8],
    pub(super) value: Cow<'a, [u8]>,
    pub(super) shared: Option<u64>,
}

/// The shared xattr table and how to find an entry in it.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) table: Xattrs,
    /// Per set: the table offset of each of its xattrs, if shared.
    sets: Vec<Vec<Option<u64>>>,
    /// Offsets of shared metacopy values, by digest.
    metacopy: HashMap<Option<ObjectId>, u64>,
    /// Offsets of shared redirects, by backing path.
    redirect: HashMap<Vec<u8>, u64>,
}

impl Shared {
    /// A node's xattrs as stored, sorted by name: its set and, for an
    /// external file, the overlay metacopy and redirect; each with its
    /// shared table offset when the inode refers to it there (at most
    /// 128 do).
    pub(super) fn stored<'a>(&'a self, sets: &'a XattrSets, n: &Node) -> Vec<StoredXattr<'a>> {
        let set = &sets.sets[n.xattrs as usize];
        let offsets = self.sets.get(n.xattrs as usize);
        let mut out: Vec<StoredXattr<'a>> = set
            .iter()
            .enumerate()
            .map(|(j, (k, v))| StoredXattr {
                key: k,
                value: Cow::Borrowed(v.as_slice()),
                shared: offsets.and_then(|o| o[j]),
            })
            .collect();
        let (metacopy, redirect) = n.derived_xattrs();
        let mut derived = false;
        if let Some(v) = metacopy {
            let digest = match &n.src.kind {
                Kind::Regular(FileData::External { digest, .. }) => *digest,
                _ => None,
            };
            out.push(StoredXattr {
                key: overlay::METACOPY,
                shared: self.metacopy.get(&digest).copied(),
                value: Cow::Owned(v),
            });
            derived = true;
        }
        if let Some(v) = redirect {
            out.push(StoredXattr {
                key: overlay::REDIRECT,
                shared: self.redirect.get(&v[1..]).copied(),
                value: Cow::Owned(v),
            });
        }
        if derived {
            out.sort_by(|a, b| a.key.cmp(b.key));
        }
        let mut used = 0;
        for x in out.iter_mut() {
            if x.shared.is_some() {
                if used < format::XATTR_LONG_PREFIX {
                    used += 1;
                } else {
                    x.shared = None;
                }
            }
        }
        out
    }

    /// Pick the shared xattrs: those that more than one inode has
    /// (`compute_erofs_shared_xattrs`), counted by set and, for the
    /// derived metacopy and redirect, by digest and backing path, without
    /// listing every inode's xattrs.
    pub(super) fn pick(sets: &XattrSets, nodes: &[Node]) -> Shared {
        let mut uses = vec![0u64; sets.sets.len()];
        let mut metacopy: HashMap<Option<&ObjectId>, u64> = HashMap::new();
        let mut redirect: HashMap<&[u8], u64> = HashMap::new();
        for n in nodes {
            uses[n.xattrs as usize] += 1;
            if let (
                Data::Chunked { .. },
                Kind::Regular(FileData::External {
                    redirect: r,
                    digest,
                    ..
                }),
            ) = (n.data, &n.src.kind)
            {
                *metacopy.entry(digest.as_ref()).or_default() += 1;
                if let Some(r) = r.as_deref().filter(|r| !r.is_empty()) {
                    *redirect.entry(r).or_default() += 1;
                }
            }
        }
        let mut counts: HashMap<(&[u8], &[u8]), u64> = HashMap::new();
        for (s, &u) in sets.sets.iter().zip(&uses) {
            if u == 0 {
                continue;
            }
            for (k, v) in s.iter() {
                *counts.entry((k, v)).or_default() += u;
            }
        }
        // The derived xattrs' names differ from every set's (user
        // `trusted.overlay.*` names are escaped), so the counts add up
        // separately.
        let mut shared: Vec<CowXattr> = counts
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|((k, v), _)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
            .collect();
        for (d, c) in &metacopy {
            if *c > 1 {
                let v = match d {
                    Some(id) => format::metacopy_value(id.algorithm().kernel_id(), id.as_bytes()),
                    None => Vec::new(),
                };
                shared.push((Cow::Borrowed(overlay::METACOPY), Cow::Owned(v)));
            }
        }
        for (r, c) in &redirect {
            if *c > 1 {
                shared.push((
                    Cow::Borrowed(overlay::REDIRECT),
                    Cow::Owned([b"/", *r].concat()),
                ));
            }
        }
        // `xattrs_ht_sort`: name, then value length, then value, all descending.
        shared.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.len().cmp(&a.1.len()))
                .then(b.1.cmp(&a.1))
        });
        let mut offsets: HashMap<(&[u8], &[u8]), u64> = HashMap::with_capacity(shared.len());
        let mut off = 0;
        for (k, v) in &shared {
            offsets.insert((k, v), off);
            off += entry_size(k, v);
        }
        let sets = sets
            .sets
            .iter()
            .map(|s| {
                s.iter()
                    .map(|(k, v)| offsets.get(&(k.as_slice(), v.as_slice())).copied())
                    .collect()
            })
            .collect();
        let metacopy = metacopy
            .into_keys()
            .filter_map(|d| {
                let v = match &d {
                    Some(id) => format::metacopy_value(id.algorithm().kernel_id(), id.as_bytes()),
                    None => Vec::new(),
                };
                offsets
                    .get(&(overlay::METACOPY, &v[..]))
                    .map(|&o| (d.copied(), o))
            })
            .collect();
        let redirect = redirect
            .into_keys()
            .filter_map(|r| {
                let v = [b"/", r].concat();
                offsets
                    .get(&(overlay::REDIRECT, &v[..]))
                    .map(|&o| (r.to_vec(), o))
            })
            .collect();
        let table = shared
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        Shared {
            table,
            sets,
            metacopy,
            redirect,
        }
    }
}
