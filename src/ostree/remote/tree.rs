//! A remote commit as a lazy [`Tree`]: inode numbers handed out as
//! directories are first listed (files first, in dirtree order, then
//! subdirectories, as [`crate::ostree::committree`] numbers them), each
//! standing for 16 bytes: a directory its dirtree and dirmeta checksums
//! (indexes into a table of the distinct ones), a file where its checksum
//! sits in its parent's dirtree. Dirtrees, dirmetas and file headers come
//! from the [`Fetcher`] on each use (its cache, its log, or the server).
//!
//! A file's attributes cost a request (its object's first 64 KiB) unless
//! known: when a second file of the same directory is asked for in a row
//! (a readdirplus, `ls -l`, a walk), the headers of the next 32 files are
//! fetched alongside it, on 8 threads. A lookup or a read of one file
//! fetches that file only.
//!
//! Each name is its own inode (no hardlinks, as `ostree checkout` of an
//! archive repository), and every directory's link count is 1, as btrfs
//! reports them: 2 + subdirectories would need every subdirectory's
//! dirtree to `stat` a directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result, bail};

use super::objects::{Fetcher, FileInfo};
use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::commitstream::Content;
use crate::ostree::committree::{checksum_in, listing_ids, name_order};
use crate::ostree::objects::{Commit, DirMeta, DirTree, DirTreeEntries};
use crate::ostree::tree::{MAX_DEPTH, MAX_INODES, dir_inode, file_inode};
use crate::tree::{DirEntry, FileData, Ino, Inode, Kind, Listing, SubtreeId, Tree};

#[derive(Clone, Copy)]
enum Node {
    /// Indexes into [`State::sums`].
    Dir { tree: u32, meta: u32, depth: u32 },
    /// The parent's dirtree (index into [`State::sums`]) and where in it
    /// this file's checksum is.
    File { dir: u32, at: u32 },
}

const _: () = assert!(std::mem::size_of::<Node>() <= 16);

/// A listed directory: its entries are inodes `first..first + files + dirs`.
#[derive(Clone, Copy)]
struct Listed {
    first: Ino,
    files: u32,
    dirs: u32,
}

#[derive(Default)]
struct State {
    nodes: Vec<Node>,
    listed: HashMap<Ino, Listed>,
    /// Distinct dirtree and dirmeta checksums.
    sums: Vec<Checksum>,
    index: HashMap<Checksum, u32>,
}

impl State {
    fn intern(&mut self, c: Checksum) -> u32 {
        let n = self.sums.len() as u32;
        *self.index.entry(c).or_insert_with(|| {
            self.sums.push(c);
            n
        })
    }
}

const ROOT: Ino = 1;

/// Headers fetched ahead when a directory's files are asked for in turn.
const READ_AHEAD: usize = 32;
const READ_AHEAD_THREADS: usize = 8;

/// A commit of a remote repository as a [`Tree`].
pub struct RemoteTree {
    commit: Checksum,
    fetch: Fetcher,
    state: Mutex<State>,
    /// The directory (dirtree index) of the last header fetched.
    last_header: Mutex<Option<u32>>,
}

impl RemoteTree {
    pub fn new(fetch: Fetcher, commit: Checksum, parsed: &Commit) -> RemoteTree {
        let mut state = State::default();
        let tree = state.intern(parsed.root_tree);
        let meta = state.intern(parsed.root_meta);
        // Index 0 is unused: inode numbers start at 1.
        state.nodes = vec![
            Node::File { dir: 0, at: 0 },
            Node::Dir {
                tree,
                meta,
                depth: 0,
            },
        ];
        RemoteTree {
            commit,
            fetch,
            state: Mutex::new(state),
            last_header: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        match self.state().nodes.get(ino as usize) {
            Some(n) if ino != 0 => Ok(*n),
            _ => bail!("no inode {ino} in commit {}", self.commit),
        }
    }

    fn sum(&self, i: u32) -> Checksum {
        self.state().sums[i as usize]
    }

    /// The checksum of file node (`dir`, `at`), read from its parent's
    /// dirtree.
    fn file_sum(&self, dir: u32, at: u32) -> Result<Checksum> {
        let t = self.sum(dir);
        let data = self.fetch.meta(&t, ObjType::DirTree)?;
        let at = at as usize;
        let b = data
            .get(at..at + 32)
            .with_context(|| format!("dirtree {t} is shorter than it was"))?;
        Ok(Checksum(b.try_into().expect("32 bytes")))
    }

    /// Parse a directory's dirtree and give its entries inode numbers (the
    /// ones they got when first listed, else new ones); `f` gets the parse,
    /// the dirtree's bytes and the first entry's number.
    fn list_with<R>(
        &self,
        dir: Ino,
        f: impl FnOnce(&DirTreeEntries<'_>, &[u8], Ino) -> R,
    ) -> Result<R> {
        let Node::Dir { tree, depth, .. } = self.node(dir)? else {
            bail!("inode {dir} is not a directory");
        };
        if depth as usize > MAX_DEPTH {
            bail!("directories nested deeper than {MAX_DEPTH} levels");
        }
        let tc = self.sum(tree);
        let data = self.fetch.meta(&tc, ObjType::DirTree)?;
        let t = DirTree::parse_in_place(&data).with_context(|| format!("dirtree {tc}"))?;
        let mut guard = self.state();
        let st = &mut *guard;
        let listed = match st.listed.get(&dir) {
            Some(l) => *l,
            None => {
                let n = t.files.len() + t.dirs.len();
                if (st.nodes.len() + n) as u64 > MAX_INODES {
                    bail!("the tree expands to more than {MAX_INODES} entries");
                }
                let first = st.nodes.len() as Ino;
                for &(_, off) in &t.files {
                    st.nodes.push(Node::File {
                        dir: tree,
                        at: off as u32,
                    });
                }
                for &(_, toff, moff) in &t.dirs {
                    let child_tree = st.intern(Checksum(checksum_in(&data, toff)));
                    let child_meta = st.intern(Checksum(checksum_in(&data, moff)));
                    st.nodes.push(Node::Dir {
                        tree: child_tree,
                        meta: child_meta,
                        depth: depth + 1,
                    });
                }
                let l = Listed {
                    first,
                    files: t.files.len() as u32,
                    dirs: t.dirs.len() as u32,
                };
                st.listed.insert(dir, l);
                l
            }
        };
        drop(guard);
        if listed.files as usize != t.files.len() || listed.dirs as usize != t.dirs.len() {
            bail!("directory inode {dir} changed between listings");
        }
        Ok(f(&t, &data, listed.first))
    }

    fn file_info(&self, ino: Ino) -> Result<(Checksum, Arc<FileInfo>)> {
        let Node::File { dir, at } = self.node(ino)? else {
            bail!("inode {ino} is not a file");
        };
        let c = self.file_sum(dir, at)?;
        if self.fetch.has_header(&c) {
            return Ok((c, self.fetch.file(&c)?));
        }
        // The second header fetched in a row from one directory: a walk of
        // its attributes (readdirplus, `ls -l`). The next few are fetched
        // alongside, in parallel.
        let walking = {
            let mut last = self.last_header.lock().unwrap_or_else(|e| e.into_inner());
            last.replace(dir) == Some(dir)
        };
        let ahead = match walking {
            true => self.unknown_after(dir, at),
            false => Vec::new(),
        };
        if ahead.is_empty() {
            return Ok((c, self.fetch.file(&c)?));
        }
        let per = ahead.len().div_ceil(READ_AHEAD_THREADS);
        let info = std::thread::scope(|s| {
            for chunk in ahead.chunks(per) {
                s.spawn(move || {
                    for c in chunk {
                        // The reader's errors are its own, when it asks.
                        if let Err(e) = self.fetch.file(c) {
                            tracing::debug!("read-ahead of file {c}: {e:#}");
                        }
                    }
                });
            }
            self.fetch.file(&c)
        })?;
        Ok((c, info))
    }

    /// Up to [`READ_AHEAD`] files after the one at `at` in dirtree `dir`
    /// whose headers are not at hand.
    fn unknown_after(&self, dir: u32, at: u32) -> Vec<Checksum> {
        let Ok(data) = self.fetch.meta(&self.sum(dir), ObjType::DirTree) else {
            return Vec::new();
        };
        let Ok(t) = DirTree::parse_in_place(&data) else {
            return Vec::new();
        };
        let Some(k) = t.files.iter().position(|&(_, off)| off as u32 == at) else {
            return Vec::new();
        };
        let mut out: Vec<Checksum> = Vec::new();
        for &(_, off) in &t.files[k + 1..] {
            let c = Checksum(checksum_in(&data, off));
            if !self.fetch.has_header(&c) && !out.contains(&c) {
                out.push(c);
                if out.len() == READ_AHEAD {
                    break;
                }
            }
        }
        out
    }
}

/// The inode of a file whose content may not be fetched yet.
fn remote_file_inode(info: &FileInfo) -> Inode {
    let h = &info.header;
    match &info.content {
        Some(content) => file_inode(h, content.clone()),
        None => {
            let mut i = file_inode(h, Content::Inline(Vec::new()));
            if !h.is_symlink() {
                i.kind = Kind::Regular(FileData::External {
                    size: h.size,
                    redirect: None,
                    digest: None,
                });
            }
            i
        }
    }
}

impl Tree for RemoteTree {
    fn fetches_contents(&self) -> bool {
        true
    }

    fn root(&self) -> Ino {
        ROOT
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        let r: Result<Arc<Inode>> = match self.node(ino)? {
            Node::Dir { meta, .. } => {
                let mc = self.sum(meta);
                let data = self.fetch.meta(&mc, ObjType::DirMeta)?;
                let m = DirMeta::parse(&data).with_context(|| format!("dirmeta {mc}"))?;
                Ok(Arc::new(dir_inode(&m)))
            }
            Node::File { .. } => {
                let (_, info) = self.file_info(ino)?;
                Ok(Arc::new(remote_file_inode(&info)))
            }
        };
        r.with_context(|| format!("commit {}", self.commit))
    }

    /// 1 for everything (see the module comment).
    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        self.node(ino)?;
        Ok(Some(1))
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        self.list_with(dir, |t, _, first| {
            name_order(t)
                .into_iter()
                .map(|(i, name)| DirEntry {
                    name: name.to_vec(),
                    ino: first + i as Ino,
                })
                .collect()
        })
        .with_context(|| format!("commit {}", self.commit))
    }

    fn readdir_ids(&self, dir: Ino, out: &mut Listing) -> Result<()> {
        self.list_with(dir, |t, data, first| {
            listing_ids(t, data, out, |i| first + i as Ino)
        })
        .with_context(|| format!("commit {}", self.commit))
    }

    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
        self.list_with(dir, |t, _, first| {
            let nf = t.files.len();
            t.files
                .iter()
                .position(|(n, _)| *n == name)
                .or_else(|| t.dirs.iter().position(|(n, ..)| *n == name).map(|j| nf + j))
                .map(|i| first + i as Ino)
        })
        .with_context(|| format!("commit {}", self.commit))
    }

    fn subtree_id(&self, ino: Ino) -> Option<SubtreeId> {
        match self.node(ino).ok()? {
            Node::Dir { tree, meta, .. } => Some(SubtreeId::OstreeDir {
                tree: self.sum(tree).0,
                meta: self.sum(meta).0,
            }),
            Node::File { dir, at } => Some(SubtreeId::OstreeFile(self.file_sum(dir, at).ok()?.0)),
        }
    }

    /// The file object fetched whole (unless it was), verified and stored.
    fn content_object(&self, ino: Ino) -> Result<Option<crate::fsverity::ObjectId>> {
        let Node::File { dir, at } = self.node(ino)? else {
            bail!("inode {ino} is not a regular file");
        };
        let c = self
            .file_sum(dir, at)
            .with_context(|| format!("commit {}", self.commit))?;
        let info = self
            .fetch
            .content(&c)
            .with_context(|| format!("commit {}", self.commit))?;
        if info.header.is_symlink() {
            bail!("inode {ino} is not a regular file");
        }
        Ok(match &info.content {
            Some(Content::External(id)) => Some(*id),
            _ => None,
        })
    }

    /// A file whose content is not at hand: its inode costs a request, and
    /// would not locate the content.
    fn costly_inode(&self, ino: Ino) -> bool {
        match self.node(ino) {
            Ok(Node::File { dir, at }) => self
                .file_sum(dir, at)
                .map_or(true, |c| !self.fetch.has_content(&c)),
            _ => false,
        }
    }

    fn shrink(&self) {
        self.fetch.shrink();
    }
}
