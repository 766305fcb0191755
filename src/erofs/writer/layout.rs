//! Step 4 (`compute_erofs_inodes`): the [`Plan`] of the whole image,
//! every inode's size, block count, inline tail, padding and place, the
//! shared xattr table's and the data blocks' place; and how a
//! directory's entries split into blocks.

use std::borrow::Cow;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::node::{Child, DOT, DOTDOT, Data, FIRST_SPECIAL, Node, STUB, path_in, stub_name};
use super::order::{Ordered, order};
use super::scan::Scan;
use super::shared_xattrs::Shared;
use super::xattrs::{XattrSets, entry_size};
use crate::erofs::format::{
    BLOCK_SIZE, CompactInode, Dirent, ExtendedInode, INODES_START, SLOT_SIZE, XattrIbodyHeader,
};
use crate::tree::{DirEntry, Timespec, Tree};

/// Everything about the image but inline file content, which is read
/// from the tree's inodes as it is written.
pub(super) struct Plan {
    pub(super) nodes: Vec<Node>,
    /// Every directory's entries, `.` and `..` included, in name order.
    pub(super) children: Vec<Child>,
    pub(super) listings: Vec<Arc<[DirEntry]>>,
    pub(super) sets: XattrSets,
    pub(super) shared: Shared,
    pub(super) version: u32,
    pub(super) has_acl: bool,
    pub(super) min_mtime: Timespec,
    pub(super) inodes_end: u64,
    pub(super) data_start: u64,
    pub(super) n_data_blocks: u64,
}

impl Plan {
    /// Order the tree's inodes ([`order`]), pick the shared xattrs and
    /// lay everything out; `unsigned_mtime` as in
    /// [`super::write_image_composefs_rs`].
    pub(super) fn build(
        scan: &Scan,
        tree: &dyn Tree,
        version: u32,
        unsigned_mtime: bool,
    ) -> Result<Plan> {
        let Ordered {
            nodes,
            children,
            listings,
            sets,
        } = order(scan, tree, version)?;
        let mut plan = Plan {
            nodes,
            children,
            listings,
            sets,
            shared: Shared::default(),
            version,
            has_acl: false,
            min_mtime: Timespec::default(),
            inodes_end: 0,
            data_start: 0,
            n_data_blocks: 0,
        };
        if plan.nodes.len() as u64 > u64::from(u32::MAX) + 1 {
            bail!(
                "{} inodes do not fit 32-bit inode numbers",
                plan.nodes.len()
            );
        }
        let mut set_used = vec![false; plan.sets.sets.len()];
        for n in &plan.nodes {
            set_used[n.xattrs as usize] = true;
        }
        plan.has_acl = plan.sets.sets.iter().zip(&set_used).any(|(s, used)| {
            *used
                && s.iter().any(|(k, _)| {
                    k == b"system.posix_acl_access" || k == b"system.posix_acl_default"
                })
        });
        plan.min_mtime = if unsigned_mtime {
            plan.nodes
                .iter()
                .map(|n| n.src.stat.mtime)
                .min_by_key(|t| (t.sec as u64, t.nsec))
                .unwrap_or_default()
        } else {
            plan.nodes
                .iter()
                .map(|n| n.src.stat.mtime)
                .min()
                .unwrap_or_default()
        };

        plan.shared = Shared::pick(&plan.sets, &plan.nodes);
        let shared_size: u64 = plan
            .shared
            .table
            .iter()
            .map(|(k, v)| entry_size(k, v))
            .sum();

        // Inode layout (`compute_erofs_inodes`).
        let mut pos = INODES_START;
        let mut n_data_blocks = 0u64;
        for i in 0..plan.nodes.len() {
            plan.compute_sizes(i);
            let xattr_size = {
                let stored = plan.shared.stored(&plan.sets, &plan.nodes[i]);
                let n_shared = stored.iter().filter(|x| x.shared.is_some()).count() as u64;
                let inline: u64 = stored
                    .iter()
                    .filter(|x| x.shared.is_none())
                    .map(|x| entry_size(x.key, &x.value))
                    .sum();
                if stored.is_empty() {
                    0
                } else {
                    (XattrIbodyHeader::SIZE as u64 + 4 * n_shared + inline + 3) & !3
                }
            };
            if xattr_size > 0 && (xattr_size - XattrIbodyHeader::SIZE as u64) / 4 + 1 > 0xffff {
                bail!(
                    "{}: {} bytes of xattrs do not fit an EROFS inode",
                    plan.path_of(i),
                    xattr_size
                );
            }
            let min_mtime = plan.min_mtime;
            let n = &mut plan.nodes[i];
            n.xattr_size = xattr_size as u32;
            let size = if n.is_dir() {
                n.n_blocks * BLOCK_SIZE + u64::from(n.tail)
            } else {
                n.size()
            };
            n.compact = n.src.stat.mtime == min_mtime
                && n.nlink <= u32::from(u16::MAX)
                && n.src.stat.uid <= u32::from(u16::MAX)
                && n.src.stat.gid <= u32::from(u16::MAX)
                && size <= u64::from(u32::MAX);
            let inode_size = if n.compact {
                CompactInode::SIZE
            } else {
                ExtendedInode::SIZE
            } as u64;
            let ppos = pos;
            pos = pos.next_multiple_of(SLOT_SIZE);
            let mut ipad = pos - ppos;
            let extra = padding_for_tail(n, pos, inode_size);
            ipad += extra;
            n.ipad = ipad as u16;
            pos += extra;
            n.nid = pos / SLOT_SIZE;
            n_data_blocks += n.n_blocks;
            pos += inode_size + u64::from(n.xattr_size) + u64::from(n.tail);
        }
        let inodes_end = pos.next_multiple_of(SLOT_SIZE);
        let data_start = (inodes_end + shared_size).next_multiple_of(BLOCK_SIZE);
        let total_blocks = data_start / BLOCK_SIZE + n_data_blocks;
        if total_blocks > u64::from(u32::MAX) {
            bail!("the image would need {total_blocks} blocks; EROFS addresses 2^32");
        }
        let mut current = data_start;
        for n in plan.nodes.iter_mut().filter(|n| n.n_blocks > 0) {
            n.blkaddr = (current / BLOCK_SIZE) as u32;
            current += n.n_blocks * BLOCK_SIZE;
        }
        if plan.nodes[0].nid > u64::from(u16::MAX) {
            bail!("root inode number does not fit 16 bits");
        }
        plan.inodes_end = inodes_end;
        plan.data_start = data_start;
        plan.n_data_blocks = n_data_blocks;
        Ok(plan)
    }

    /// The entries of directory node `n`.
    pub(super) fn children_of(&self, n: &Node) -> &[Child] {
        let start = n.first_child as usize;
        &self.children[start..start + n.n_children as usize]
    }

    /// The name of entry `c` of directory node `n`.
    pub(super) fn child_name<'a>(&'a self, n: &Node, c: &Child) -> Cow<'a, [u8]> {
        match c.name {
            DOT => Cow::Borrowed(b"."),
            DOTDOT => Cow::Borrowed(b".."),
            s if s >= FIRST_SPECIAL => Cow::Owned(stub_name(STUB - s).to_vec()),
            p => Cow::Borrowed(&self.listings[n.listing as usize][p as usize].name),
        }
    }

    pub(super) fn name_len(&self, n: &Node, c: &Child) -> u64 {
        match c.name {
            DOT => 1,
            DOTDOT | FIRST_SPECIAL..=STUB => 2,
            p => self.listings[n.listing as usize][p as usize].name.len() as u64,
        }
    }

    /// Split directory entries into blocks as `write_erofs_dentries` does:
    /// returns the ranges of the full blocks and the last range with its
    /// size.
    pub(super) fn split_dir(&self, n: &Node) -> (Vec<(usize, usize)>, (usize, usize), u64) {
        let children = self.children_of(n);
        let mut blocks = Vec::new();
        let mut first = 0;
        let mut size = 0u64;
        for (i, c) in children.iter().enumerate() {
            let len = Dirent::SIZE as u64 + self.name_len(n, c);
            if size + len > BLOCK_SIZE {
                blocks.push((first, i));
                first = i;
                size = 0;
            }
            size += len;
        }
        (blocks, (first, children.len()), size)
    }

    /// Block count and inline tail of a node (`compute_erofs_inode_size`).
    fn compute_sizes(&mut self, i: usize) {
        let n = &self.nodes[i];
        let (blocks, tail) = match n.data {
            Data::Dir => {
                let (full, _, last) = self.split_dir(n);
                if last > BLOCK_SIZE / 2 {
                    (full.len() as u64 + 1, 0)
                } else {
                    (full.len() as u64, last)
                }
            }
            Data::Symlink => (0, n.size()),
            Data::Inline => {
                let size = n.size();
                let (b, t) = (size / BLOCK_SIZE, size % BLOCK_SIZE);
                if t > BLOCK_SIZE / 2 {
                    (b + 1, 0)
                } else {
                    (b, t)
                }
            }
            Data::Chunked { count, .. } => (0, u64::from(count) * 4),
            Data::None => (0, 0),
        };
        let n = &mut self.nodes[i];
        n.n_blocks = blocks;
        n.tail = tail as u16;
    }

    fn path_of(&self, i: usize) -> String {
        path_in(&self.nodes, &self.children, &self.listings, i)
    }
}

/// Padding before an inode so its tail does not cross a block
/// (`compute_erofs_inode_padding_for_tail`); may move the tail to a block.
fn padding_for_tail(n: &mut Node, pos: u64, inode_size: u64) -> u64 {
    let non_tail = inode_size + u64::from(n.xattr_size);
    let tail = u64::from(n.tail);
    let total = non_tail + tail;
    if matches!(n.data, Data::Symlink) {
        // The kernel wants the inode and the symlink target in one block;
        // if they cannot share one, the target goes to a data block.
        if total >= BLOCK_SIZE {
            n.n_blocks += 1;
            n.tail = 0;
        }
        if pos / BLOCK_SIZE != (pos + total - 1) / BLOCK_SIZE {
            return pos.next_multiple_of(BLOCK_SIZE) - pos;
        }
        return 0;
    }
    let remainder = BLOCK_SIZE - (pos + non_tail) % BLOCK_SIZE;
    if remainder < tail {
        let extra = remainder.next_multiple_of(SLOT_SIZE);
        let remainder = BLOCK_SIZE - (pos + non_tail + extra) % BLOCK_SIZE;
        if tail <= remainder {
            return extra;
        }
        n.n_blocks += 1;
        n.tail = 0;
        return pos.next_multiple_of(BLOCK_SIZE) - pos;
    }
    0
}
