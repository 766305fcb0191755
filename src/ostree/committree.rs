//! A stored commit as a lazy [`Tree`]: nothing is decoded until asked for.
//! Directory listings are built from their dirtree on first `readdir` (or
//! `lookup`), inodes from their dirmeta or file header on first `inode`.
//! Inode numbers are handed out as entries are first listed, so they are
//! stable for the life of the tree; a dirtree shared by several directories
//! gets distinct inodes at each place, as in a checkout.
//!
//! [`super::tree::commit_tree`] builds the same tree eagerly (for images).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::commitstream::CommitStream;
use super::objects::{Commit, DirMeta, DirTree};
use super::tree::{dir_inode, file_inode};
use crate::tree::{DirEntry, Ino, Inode, Tree};

#[derive(Clone, Copy)]
enum Node {
    Dir {
        tree: Checksum,
        meta: Checksum,
        depth: usize,
    },
    File(Checksum),
}

#[derive(Default)]
struct State {
    nodes: Vec<Node>,
    dirs: HashMap<Ino, Arc<[DirEntry]>>,
    inodes: HashMap<Ino, Arc<Inode>>,
}

pub struct CommitTree {
    stream: CommitStream,
    state: Mutex<State>,
}

const ROOT: Ino = 1;

impl CommitTree {
    pub fn new(stream: CommitStream) -> Result<CommitTree> {
        let c = stream.commit;
        let bytes = stream
            .metadata(&c, ObjType::Commit)?
            .with_context(|| format!("stored commit {c} lacks its commit object"))?;
        let commit = Commit::parse(bytes).with_context(|| format!("commit {c}"))?;
        let state = State {
            // Index 0 is unused: inode numbers start at 1.
            nodes: vec![
                Node::File(Checksum([0; 32])),
                Node::Dir {
                    tree: commit.root_tree,
                    meta: commit.root_meta,
                    depth: 0,
                },
            ],
            ..Default::default()
        };
        Ok(CommitTree {
            stream,
            state: Mutex::new(state),
        })
    }

    pub fn commit(&self) -> Checksum {
        self.stream.commit
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        let st = self.state.lock().expect("commit tree");
        match st.nodes.get(ino as usize) {
            Some(n) if ino != 0 => Ok(*n),
            _ => bail!("no inode {ino} in commit {}", self.stream.commit),
        }
    }

    fn dirmeta(&self, m: &Checksum) -> Result<DirMeta> {
        let data = self
            .stream
            .metadata(m, ObjType::DirMeta)?
            .with_context(|| format!("commit {}: dirmeta {m} is missing", self.stream.commit))?;
        DirMeta::parse(data).with_context(|| format!("dirmeta {m}"))
    }

    fn make_inode(&self, node: Node) -> Result<Inode> {
        Ok(match node {
            Node::Dir { meta, .. } => dir_inode(&self.dirmeta(&meta)?),
            Node::File(f) => {
                let (_, h, content) = self.stream.file(&f)?.with_context(|| {
                    format!("commit {}: file {f} is missing", self.stream.commit)
                })?;
                file_inode(&h, content)
            }
        })
    }
}

impl Tree for CommitTree {
    fn root(&self) -> Ino {
        ROOT
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        if let Some(i) = self.state.lock().expect("commit tree").inodes.get(&ino) {
            return Ok(i.clone());
        }
        let node = self.node(ino)?;
        let inode = Arc::new(self.make_inode(node)?);
        self.state
            .lock()
            .expect("commit tree")
            .inodes
            .insert(ino, inode.clone());
        Ok(inode)
    }

    /// Files have one link (each entry is its own inode); directories
    /// 2 + their subdirectories.
    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        match self.node(ino)? {
            Node::File(_) => Ok(Some(1)),
            Node::Dir { .. } => {
                let entries = self.readdir(ino)?;
                let st = self.state.lock().expect("commit tree");
                let subdirs = entries
                    .iter()
                    .filter(|e| matches!(st.nodes.get(e.ino as usize), Some(Node::Dir { .. })))
                    .count() as u64;
                Ok(Some(2 + subdirs))
            }
        }
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        if let Some(d) = self.state.lock().expect("commit tree").dirs.get(&dir) {
            return Ok(d.clone());
        }
        let Node::Dir { tree, depth, .. } = self.node(dir)? else {
            bail!("inode {dir} is not a directory");
        };
        if depth >= super::tree::MAX_DEPTH {
            bail!(
                "directories nested deeper than {} levels",
                super::tree::MAX_DEPTH
            );
        }
        let data = self
            .stream
            .metadata(&tree, ObjType::DirTree)?
            .with_context(|| format!("commit {}: dirtree {tree} is missing", self.stream.commit))?;
        let t = DirTree::parse(data).with_context(|| format!("dirtree {tree}"))?;
        let mut st = self.state.lock().expect("commit tree");
        // Another thread may have listed it meanwhile: keep its inodes.
        if let Some(d) = st.dirs.get(&dir) {
            return Ok(d.clone());
        }
        let mut entries = Vec::with_capacity(t.files.len() + t.dirs.len());
        for (name, f) in &t.files {
            st.nodes.push(Node::File(*f));
            entries.push(DirEntry {
                name: name.as_bytes().to_vec(),
                ino: (st.nodes.len() - 1) as Ino,
            });
        }
        for (name, dt, dm) in &t.dirs {
            st.nodes.push(Node::Dir {
                tree: *dt,
                meta: *dm,
                depth: depth + 1,
            });
            entries.push(DirEntry {
                name: name.as_bytes().to_vec(),
                ino: (st.nodes.len() - 1) as Ino,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let entries: Arc<[DirEntry]> = entries.into();
        st.dirs.insert(dir, entries.clone());
        Ok(entries)
    }
}
