//! A stored commit as a lazy [`Tree`]: nothing is decoded until asked for.
//! Directory listings are decoded from their dirtree on each `readdir`,
//! inodes from their dirmeta or file header on each `inode`.
//! Inode numbers are handed out as entries are first listed, so they are
//! stable for the life of the tree; a dirtree shared by several directories
//! gets distinct inodes at each place, as in a checkout. Entries naming the
//! same file object are one inode (the first listed), whose link count is
//! the number of such entries in the whole tree: the hardlinks of a
//! checkout from a bare repository, and of the commit's image.
//!
//! [`super::tree::commit_tree`] builds the same tree eagerly (for images).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::commitstream::CommitStream;
use super::objects::{Commit, DirMeta, DirTree, DirTreeEntries};
use super::tree::{dir_inode, file_inode};
use crate::repository::Repository;
use crate::tree::{DirEntry, Ino, Inode, Listing, SubtreeId, Tree};

/// No such object in the stream: the node fails when it is loaded.
const MISSING: u32 = u32::MAX;
/// Not looked up in the stream's index yet.
const UNRESOLVED: u32 = u32::MAX - 1;
/// The node was not listed from a dirtree (the root).
const NO_AT: u64 = u64::MAX;

/// What an inode number stands for: positions in the stream's index,
/// looked up when the node is first loaded, and where its checksums sit
/// in its parent's dirtree (`at`), so comparing two nodes by checksum
/// ([`Tree::subtree_id`]) needs no lookup at all. 24 bytes a node,
/// however long the names.
#[derive(Clone, Copy)]
enum Node {
    Dir {
        tree: u32,
        meta: u32,
        depth: u32,
        /// The dirtree checksum; the dirmeta checksum follows it.
        at: u64,
    },
    File {
        pos: u32,
        at: u64,
    },
}

const _: () = assert!(std::mem::size_of::<Node>() <= 24);

/// A listed directory: its children got the consecutive inode numbers
/// `first..first + files + dirs` (files first, in dirtree order, then
/// subdirectories), so listing it again yields the same numbers.
#[derive(Clone, Copy)]
struct Listed {
    first: Ino,
    files: u32,
    dirs: u32,
    /// Whether some file is another entry's inode (worked out when first
    /// listed with shared inodes).
    links: Links,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Links {
    Unknown,
    None,
    Some,
}

#[derive(Default)]
struct State {
    nodes: Vec<Node>,
    listed: HashMap<Ino, Listed>,
    /// Subdirectory counts of directories not listed yet.
    subdirs: HashMap<Ino, u32>,
    /// Checksums the stream lacks, by the node that names them (for the
    /// error message).
    missing: HashMap<Ino, Checksum>,
    /// The inode of each file object listed so far, by the first 8 bytes
    /// of its checksum (small entries: few pages touched)...
    file_ino: HashMap<u64, Ino, Cheap>,
    /// ... and by the whole checksum for those whose first 8 bytes are
    /// another's.
    file_ino_exact: HashMap<[u8; 32], Ino>,
    /// File entries listed after their object was: the inode they are.
    alias: HashMap<Ino, Ino, Cheap>,
}

/// A stored commit as a [`Tree`]. Holds only the inode-number table and
/// the loaded stream; decoded inodes and listings are not kept (callers
/// such as the FUSE view cache them within their own bounds). A tree
/// opened from a repository can let go of its stream ([`Tree::shrink`])
/// and load it again when next asked: its inode numbers stay.
pub struct CommitTree {
    commit: Checksum,
    repo: Option<Repository>,
    /// The stream's object, when the tree was opened by it (no entry
    /// names it): reloaded from there.
    stream_object: Option<crate::fsverity::ObjectId>,
    stream: RwLock<Option<Arc<CommitStream>>>,
    /// Entries naming each file object in the whole tree (counted when a
    /// file's link count is first asked for).
    links: std::sync::OnceLock<HashMap<[u8; 32], u64, Cheap>>,
    state: Mutex<State>,
}

const ROOT: Ino = 1;

impl CommitTree {
    /// The tree of a loaded stream (kept for the tree's life).
    pub fn new(stream: CommitStream) -> Result<CommitTree> {
        Self::build(stream, None)
    }

    /// The tree of a commit stored in `repo`; its stream may be unloaded
    /// and reloaded.
    pub fn open(repo: &Repository, commit: &Checksum) -> Result<CommitTree> {
        let stream = CommitStream::open(repo, commit)?;
        Self::build(stream, Some(repo.try_clone()?))
    }

    /// The tree of the commit whose stream (in the shared format) is
    /// object `id` of `repo`, named by no entry (a remote commit read in
    /// place): the commit is the one the stream holds.
    pub fn open_stream_object(
        repo: &Repository,
        id: &crate::fsverity::ObjectId,
    ) -> Result<CommitTree> {
        let (_, stream) = super::cache::open_unnamed(repo, id)?;
        let mut t = Self::build(stream, Some(repo.try_clone()?))?;
        t.stream_object = Some(*id);
        Ok(t)
    }

    fn build(stream: CommitStream, repo: Option<Repository>) -> Result<CommitTree> {
        let c = stream.commit;
        let bytes = stream
            .metadata(&c, ObjType::Commit)?
            .with_context(|| format!("stored commit {c} lacks its commit object"))?;
        let commit = Commit::parse(bytes).with_context(|| format!("commit {c}"))?;
        let mut state = State::default();
        let tree = stream.position(&commit.root_tree, ObjType::DirTree)?;
        let meta = stream.position(&commit.root_meta, ObjType::DirMeta)?;
        if tree.is_none() {
            bail!(
                "stored commit {c}: root dirtree {} is missing",
                commit.root_tree
            );
        }
        if meta.is_none() {
            bail!(
                "stored commit {c}: root dirmeta {} is missing",
                commit.root_meta
            );
        }
        // Index 0 is unused: inode numbers start at 1.
        state.nodes = vec![
            Node::File {
                pos: MISSING,
                at: NO_AT,
            },
            Node::Dir {
                tree: tree.unwrap_or(MISSING),
                meta: meta.unwrap_or(MISSING),
                depth: 0,
                at: NO_AT,
            },
        ];
        // About one node per object: reserved once (untouched pages cost
        // nothing), not regrown and copied listing by listing.
        state.nodes.reserve(stream.len());
        Ok(CommitTree {
            commit: c,
            repo,
            stream_object: None,
            stream: RwLock::new(Some(Arc::new(stream))),
            links: Default::default(),
            state: Mutex::new(state),
        })
    }

    pub fn commit(&self) -> Checksum {
        self.commit
    }

    /// The stream, loaded again if it was let go.
    fn stream(&self) -> Result<Arc<CommitStream>> {
        if let Some(s) = &*self.stream.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(s.clone());
        }
        let mut g = self.stream.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = &*g {
            return Ok(s.clone());
        }
        let repo = self
            .repo
            .as_ref()
            .with_context(|| format!("stored commit {} was unloaded", self.commit))?;
        let s = Arc::new(match &self.stream_object {
            Some(id) => super::cache::open_id(repo, &self.commit, id)?,
            None => CommitStream::open(repo, &self.commit)?,
        });
        *g = Some(s.clone());
        Ok(s)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A node as listed, positions possibly not looked up yet.
    fn raw_node(&self, ino: Ino) -> Result<Node> {
        match self.state().nodes.get(ino as usize) {
            Some(n) if ino != 0 => Ok(*n),
            _ => bail!("no inode {ino} in commit {}", self.commit),
        }
    }

    /// A node with its index positions (looked up now if not yet; a
    /// checksum the stream lacks becomes [`MISSING`], named in `missing`).
    fn node(&self, ino: Ino) -> Result<Node> {
        let n = self.raw_node(ino)?;
        let resolved = match n {
            Node::File {
                pos: UNRESOLVED,
                at,
            } => {
                let stream = self.stream()?;
                let c = stream.checksum_bytes_at(at)?;
                let pos = stream.position(&c, ObjType::File)?.unwrap_or(MISSING);
                if pos == MISSING {
                    self.state().missing.insert(ino, c);
                }
                Node::File { pos, at }
            }
            Node::Dir {
                tree: UNRESOLVED,
                depth,
                at,
                ..
            } => {
                let stream = self.stream()?;
                let (tc, mc) = (
                    stream.checksum_bytes_at(at)?,
                    stream.checksum_bytes_at(at + 32)?,
                );
                let tree = stream.position(&tc, ObjType::DirTree)?.unwrap_or(MISSING);
                let meta = stream.position(&mc, ObjType::DirMeta)?.unwrap_or(MISSING);
                if tree == MISSING {
                    self.state().missing.insert(ino, tc);
                } else if meta == MISSING {
                    self.state().missing.insert(ino, mc);
                }
                Node::Dir {
                    tree,
                    meta,
                    depth,
                    at,
                }
            }
            n => return Ok(n),
        };
        self.state().nodes[ino as usize] = resolved;
        Ok(resolved)
    }

    fn missing(&self, ino: Ino, what: &str) -> anyhow::Error {
        let c = self.state().missing.get(&ino).copied();
        match c {
            Some(c) => anyhow::anyhow!("commit {}: {what} {c} is missing", self.commit),
            None => anyhow::anyhow!("commit {}: {what} of inode {ino} is missing", self.commit),
        }
    }

    fn make_inode(&self, ino: Ino, node: Node) -> Result<Inode> {
        let stream = self.stream()?;
        Ok(match node {
            Node::Dir { meta, .. } => {
                if meta == MISSING {
                    return Err(self.missing(ino, "dirmeta"));
                }
                let data = stream.metadata_at(meta)?;
                let m = DirMeta::parse_stored(data).with_context(|| {
                    format!("dirmeta {}", stream.checksum_at(meta).unwrap_or_default())
                })?;
                dir_inode(&m)
            }
            Node::File { pos: f, .. } => {
                if f == MISSING {
                    return Err(self.missing(ino, "file"));
                }
                let (_, h, content) = stream.file_at(f)?;
                file_inode(&h, content)
            }
        })
    }

    /// Parse a directory's dirtree and give its children inode numbers
    /// (the ones it got when first listed, else new ones); `f` gets the
    /// parse, the dirtree's bytes and the numbers. With `shared`, a file
    /// whose object was listed before (in this mode) gets that entry's
    /// inode (hardlinks); without, each entry's own — which costs no
    /// lookup per file (what `diff`, which compares by checksum, asks for).
    fn list_with<R>(
        &self,
        dir: Ino,
        shared: bool,
        f: impl FnOnce(&DirTreeEntries<'_>, &[u8], Inos) -> R,
    ) -> Result<R> {
        let Node::Dir { tree, depth, .. } = self.node(dir)? else {
            bail!("inode {dir} is not a directory");
        };
        if depth as usize > super::tree::MAX_DEPTH {
            bail!(
                "directories nested deeper than {} levels",
                super::tree::MAX_DEPTH
            );
        }
        if tree == MISSING {
            return Err(self.missing(dir, "dirtree"));
        }
        let stream = self.stream()?;
        let (base, data) = stream.metadata_with_offset(tree)?;
        let t = DirTree::parse_in_place(data)
            .with_context(|| format!("dirtree {}", stream.checksum_at(tree).unwrap_or_default()))?;
        let mut guard = self.state();
        let st = &mut *guard;
        let mut listed = match st.listed.get(&dir) {
            Some(l) => *l,
            None => {
                let first = st.nodes.len() as Ino;
                for &(_, off) in &t.files {
                    st.nodes.push(Node::File {
                        pos: UNRESOLVED,
                        at: base + off as u64,
                    });
                }
                for &(_, toff, moff) in &t.dirs {
                    if moff != toff + 32 {
                        bail!("dirtree of inode {dir} is malformed");
                    }
                    st.nodes.push(Node::Dir {
                        tree: UNRESOLVED,
                        meta: UNRESOLVED,
                        depth: depth + 1,
                        at: base + toff as u64,
                    });
                }
                let l = Listed {
                    first,
                    files: t.files.len() as u32,
                    dirs: t.dirs.len() as u32,
                    links: Links::Unknown,
                };
                st.listed.insert(dir, l);
                l
            }
        };
        if listed.files as usize != t.files.len() || listed.dirs as usize != t.dirs.len() {
            bail!("directory inode {dir} changed between listings");
        }
        if shared && listed.links == Links::Unknown {
            let mut some = false;
            for (k, &(_, off)) in t.files.iter().enumerate() {
                let slot = listed.first + k as Ino;
                if let Some(canon) = st.share(&stream, slot, checksum_in(data, off))? {
                    st.alias.insert(slot, canon);
                    some = true;
                }
            }
            listed.links = if some { Links::Some } else { Links::None };
            st.listed.insert(dir, listed);
        }
        let files = if shared && listed.links == Links::Some {
            (0..listed.files as Ino)
                .map(|k| {
                    let slot = listed.first + k;
                    st.alias.get(&slot).copied().unwrap_or(slot)
                })
                .collect()
        } else {
            Vec::new()
        };
        drop(guard);
        Ok(f(&t, data, Inos { listed, files }))
    }

    /// How many entries of the whole tree name each file object.
    fn link_counts(&self) -> Result<&HashMap<[u8; 32], u64, Cheap>> {
        if let Some(l) = self.links.get() {
            return Ok(l);
        }
        let stream = self.stream()?;
        let c = self.commit;
        let cbytes = stream
            .metadata(&c, ObjType::Commit)?
            .with_context(|| format!("stored commit {c} lacks its commit object"))?;
        let commit = Commit::parse(cbytes).with_context(|| format!("commit {c}"))?;
        let mut counts: HashMap<[u8; 32], u64, Cheap> = HashMap::default();
        let mut entries = 0u64;
        let mut work = vec![commit.root_tree];
        while let Some(t) = work.pop() {
            let data = stream
                .metadata(&t, ObjType::DirTree)?
                .with_context(|| format!("commit {c}: dirtree {t} is missing"))?;
            let tree = DirTree::parse_in_place(data).with_context(|| format!("dirtree {t}"))?;
            entries += (tree.files.len() + tree.dirs.len()) as u64;
            if entries > super::tree::MAX_INODES {
                bail!(
                    "commit {c}: tree expands to more than {} entries",
                    super::tree::MAX_INODES
                );
            }
            for &(_, off) in &tree.files {
                *counts.entry(checksum_in(data, off)).or_default() += 1;
            }
            for &(_, toff, _) in &tree.dirs {
                work.push(Checksum(checksum_in(data, toff)));
            }
        }
        let _ = self.links.set(counts);
        Ok(self.links.get().expect("set above"))
    }
}

/// Hashing for maps keyed by checksums (already uniform: their first
/// 8 bytes are the hash) and inode numbers (one multiply). Listing a
/// directory hashes each file's checksum: SipHash there cost a `composefs
/// diff` half again its instructions.
#[derive(Clone, Copy, Default)]
struct Cheap;

impl std::hash::BuildHasher for Cheap {
    type Hasher = CheapHasher;
    fn build_hasher(&self) -> CheapHasher {
        CheapHasher(0)
    }
}

struct CheapHasher(u64);

impl std::hash::Hasher for CheapHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, b: &[u8]) {
        let mut a = [0u8; 8];
        let n = b.len().min(8);
        a[..n].copy_from_slice(&b[..n]);
        self.0 ^= u64::from_le_bytes(a);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl State {
    /// The inode an entry (`slot`) naming file object `c` shares, if its
    /// object was listed before (with shared inodes); else `slot` becomes
    /// the object's inode.
    fn share(&mut self, stream: &CommitStream, slot: Ino, c: [u8; 32]) -> Result<Option<Ino>> {
        let key = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
        let seen = match self.file_ino.entry(key) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(slot);
                return Ok(None);
            }
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
        };
        let same = match self.nodes.get(seen as usize) {
            Some(&Node::File { at, .. }) if at != NO_AT => stream.checksum_bytes_at(at)?.0 == c,
            _ => false,
        };
        if same {
            return Ok(Some(seen));
        }
        Ok(match self.file_ino_exact.entry(c) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(slot);
                None
            }
        })
    }
}

/// The inode numbers of a listed directory's entries.
struct Inos {
    listed: Listed,
    /// Each file's inode, when some are another entry's (else consecutive).
    files: Vec<Ino>,
}

impl Inos {
    /// The inode of entry `i` (files first, then subdirectories).
    fn get(&self, i: usize) -> Ino {
        match self.files.get(i) {
            Some(&ino) => ino,
            None => self.listed.first + i as Ino,
        }
    }
}

/// The entries of a parsed dirtree in name order, as (index: files first,
/// then subdirectories; name): one merge of the two sorted runs, or a sort
/// when the dirtree is not in ostree's order.
pub(super) fn name_order<'a>(t: &DirTreeEntries<'a>) -> Vec<(usize, &'a [u8])> {
    let nf = t.files.len();
    let mut order = Vec::with_capacity(nf + t.dirs.len());
    if t.sorted {
        let (mut i, mut j) = (0, 0);
        while i < nf || j < t.dirs.len() {
            match (t.files.get(i), t.dirs.get(j)) {
                (Some(f), Some(d)) if f.0 < d.0 => {
                    order.push((i, f.0));
                    i += 1;
                }
                (Some(f), None) => {
                    order.push((i, f.0));
                    i += 1;
                }
                (_, Some(d)) => {
                    order.push((nf + j, d.0));
                    j += 1;
                }
                (None, None) => break,
            }
        }
    } else {
        order.extend(t.files.iter().enumerate().map(|(i, f)| (i, f.0)));
        order.extend(t.dirs.iter().enumerate().map(|(j, d)| (nf + j, d.0)));
        order.sort_by(|a, b| a.1.cmp(b.1));
    }
    order
}

/// A parsed dirtree's entries into `out` (emptied first) in name order,
/// each with its checksums as a [`SubtreeId`] and the inode `ino` gives
/// its index (files first, then subdirectories).
pub(super) fn listing_ids(
    t: &DirTreeEntries<'_>,
    data: &[u8],
    out: &mut Listing,
    ino: impl Fn(usize) -> Ino,
) {
    let order = name_order(t);
    out.reset(order.len(), order.iter().map(|(_, n)| n.len()).sum());
    let nf = t.files.len();
    for (i, name) in order {
        let id = match i.checked_sub(nf) {
            None => SubtreeId::OstreeFile(checksum_in(data, t.files[i].1)),
            Some(j) => SubtreeId::OstreeDir {
                tree: checksum_in(data, t.dirs[j].1),
                meta: checksum_in(data, t.dirs[j].2),
            },
        };
        out.push(name, ino(i), Some(id));
    }
}

pub(super) fn checksum_in(data: &[u8], off: usize) -> [u8; 32] {
    data[off..off + 32]
        .try_into()
        .expect("parse_in_place checked")
}

impl Tree for CommitTree {
    fn root(&self) -> Ino {
        ROOT
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        let node = self.node(ino)?;
        Ok(Arc::new(self.make_inode(ino, node)?))
    }

    /// Files: the entries naming their object in the whole tree;
    /// directories: 2 + their subdirectories.
    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        match self.node(ino)? {
            Node::File { at, .. } => {
                let stream = self.stream()?;
                let c = stream.checksum_bytes_at(at)?;
                Ok(Some(self.link_counts()?.get(&c.0).copied().unwrap_or(1)))
            }
            Node::Dir { tree, .. } => {
                let known = {
                    let st = self.state();
                    st.listed
                        .get(&ino)
                        .map(|l| l.dirs)
                        .or_else(|| st.subdirs.get(&ino).copied())
                };
                let dirs = match known {
                    Some(n) => n,
                    None => {
                        // Count without listing: no inode numbers handed
                        // out, no lookups of every file (`ls -l` of a
                        // directory asks this of every subdirectory).
                        if tree == MISSING {
                            return Err(self.missing(ino, "dirtree"));
                        }
                        let stream = self.stream()?;
                        let n =
                            DirTree::count_dirs(stream.metadata_at(tree)?).with_context(|| {
                                format!("dirtree {}", stream.checksum_at(tree).unwrap_or_default())
                            })? as u32;
                        self.state().subdirs.insert(ino, n);
                        n
                    }
                };
                Ok(Some(2 + u64::from(dirs)))
            }
        }
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        self.list_with(dir, true, |t, _, inos| {
            name_order(t)
                .into_iter()
                .map(|(i, name)| DirEntry {
                    name: name.to_vec(),
                    ino: inos.get(i),
                })
                .collect()
        })
    }

    /// Names and checksums straight from the dirtree: no per-entry lookup.
    /// Each entry gets its own inode number here, also a file whose object
    /// another entry names (which [`Tree::readdir`] gives that entry's
    /// inode): comparisons go by checksum, and sharing would cost a lookup
    /// per file.
    fn readdir_ids(&self, dir: Ino, out: &mut Listing) -> Result<()> {
        self.list_with(dir, false, |t, data, inos| {
            listing_ids(t, data, out, |i| inos.get(i))
        })
    }

    /// The checksums ostree names the node by, read back from the
    /// stream's index at the positions the node already holds (no side
    /// table, nothing decoded): dirtree + dirmeta for a directory, the
    /// file checksum for a file. `None` for a node whose objects are
    /// missing (its loading fails with the reason).
    fn subtree_id(&self, ino: Ino) -> Option<crate::tree::SubtreeId> {
        let node = self.raw_node(ino).ok()?;
        let stream = self.stream().ok()?;
        match node {
            Node::Dir { at, .. } if at != NO_AT => Some(crate::tree::SubtreeId::OstreeDir {
                tree: stream.checksum_bytes_at(at).ok()?.0,
                meta: stream.checksum_bytes_at(at + 32).ok()?.0,
            }),
            Node::Dir { tree, meta, .. } if tree < UNRESOLVED && meta < UNRESOLVED => {
                Some(crate::tree::SubtreeId::OstreeDir {
                    tree: stream.checksum_at(tree)?.0,
                    meta: stream.checksum_at(meta)?.0,
                })
            }
            Node::File { at, .. } if at != NO_AT => Some(crate::tree::SubtreeId::OstreeFile(
                stream.checksum_bytes_at(at).ok()?.0,
            )),
            _ => None,
        }
    }

    /// Let go of the stream (a few hundred KiB to MiBs) when it can be
    /// loaded again.
    fn shrink(&self) {
        if self.repo.is_some() {
            *self.stream.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}
