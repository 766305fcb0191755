//! The whole repository as one live [`Tree`]:
//!
//! ```text
//! /ostree/<ref>/      each ostree ref (`streams/refs/ostree/…`; a ref
//!                     `a/b` is directory `a` holding `b`, whether it is
//!                     stored as composefs-rs spells it, `a%2Fb`, or nested)
//! /images/<ref>/      each image ref (`images/refs/…`)
//! /oci/<name>/        each pulled OCI image (`streams/refs/oci/…`, names
//!                     decoded and nested the same way), as its image holds it
//! /commits/<sha256>/  every stored ostree commit
//! ```
//!
//! The directories above the trees are *live*: each listing or lookup reads
//! the refs afresh, so a pull that finishes shows up and a removed ref goes
//! away while mounted. Below them, each tree is served as itself.
//!
//! Inode numbers: the directories above the trees are numbered from 0 (the
//! root) in the order first seen. Each tree at a place gets a *slot* (a
//! number from 1), and its inodes are `slot << 40 | n`, where `n` is 0 for
//! the tree's root and the tree's own number + 1 otherwise. A slot is for
//! one content at one place: a ref moved to another commit is another slot
//! (new numbers, so nothing cached for the old content is reused).
//!
//! Memory: trees are loaded on first use; a few recently used ones stay
//! loaded whole. The rest let go: images and OCI images are dropped (they
//! number their inodes the same way when loaded again), ostree commits
//! shrink to their inode tables ([`Tree::shrink`]: their numbers depend on
//! the order of listing, so the table stays). A slot, once handed out,
//! lasts as long as the mount, so an inode the kernel holds always means
//! the same file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result, bail};

use super::Source;
use crate::ostree::checksum::Checksum;
use crate::repository::Repository;
use crate::repository::refs::{RefKind, decode_ref_component, validate_ref_name};
use crate::tree::{DirEntry, Ino, Inode, Kind, Stat, Timespec, Tree};

const SHIFT: u32 = 40;
const LOW: u64 = (1 << SHIFT) - 1;
/// Slots are below 2^23, so that every inode number + 2 (the FUSE
/// numbering) fits in 64 bits.
const MAX_SLOT: u64 = 1 << 23;

/// Trees kept loaded whole although not the one in use.
const WARM_TREES: usize = 4;

/// Which refs a directory lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RefNs {
    Ostree,
    Images,
    Oci,
}

/// A directory above the trees.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Dir {
    Root,
    /// Refs of a namespace below a prefix ("" for the top).
    Refs(RefNs, String),
    Commits,
}

/// What sits at a place in a live directory.
enum Found {
    Dir(Dir),
    Tree(Source),
}

type SlotKey = (Ino, Vec<u8>, Source);

struct Slot {
    key: SlotKey,
    tree: Option<Arc<dyn Tree>>,
}

#[derive(Default)]
struct State {
    dirs: Vec<Dir>,
    dir_inos: HashMap<Dir, Ino>,
    slots: HashMap<u64, Slot>,
    slot_of: HashMap<SlotKey, u64>,
    next_slot: u64,
    /// Slots whose trees are loaded whole, most recently used first.
    warm: VecDeque<u64>,
}

impl State {
    fn dir_ino(&mut self, d: Dir) -> Ino {
        if let Some(i) = self.dir_inos.get(&d) {
            return *i;
        }
        let i = self.dirs.len() as Ino;
        self.dirs.push(d.clone());
        self.dir_inos.insert(d, i);
        i
    }

    fn slot(&mut self, key: SlotKey) -> Result<u64> {
        if let Some(s) = self.slot_of.get(&key) {
            return Ok(*s);
        }
        if self.next_slot >= MAX_SLOT {
            bail!("too many trees seen in this mount ({MAX_SLOT}); remount");
        }
        self.next_slot += 1;
        let s = self.next_slot;
        self.slot_of.insert(key.clone(), s);
        self.slots.insert(s, Slot { key, tree: None });
        Ok(s)
    }

    /// Mark `slot` most recently used; shrink or drop what falls off.
    fn touch(&mut self, slot: u64) {
        self.warm.retain(|w| *w != slot);
        self.warm.push_front(slot);
        while self.warm.len() > WARM_TREES {
            let old = self.warm.pop_back().expect("non-empty");
            if let Some(s) = self.slots.get_mut(&old) {
                match s.key.2 {
                    Source::Commit(_) => {
                        if let Some(t) = &s.tree {
                            t.shrink();
                        }
                    }
                    Source::Image(_) | Source::Oci(_) | Source::OciRaw(_) => s.tree = None,
                }
            }
        }
    }
}

/// The live view of a repository.
pub struct RepoView {
    repo: Repository,
    state: Mutex<State>,
}

impl RepoView {
    pub fn new(repo: &Repository) -> Result<RepoView> {
        let mut state = State::default();
        state.dir_ino(Dir::Root);
        Ok(RepoView {
            repo: repo.try_clone()?,
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dir(&self, ino: Ino) -> Result<Dir> {
        match self.state().dirs.get(ino as usize) {
            Some(d) => Ok(d.clone()),
            None => bail!("no directory inode {ino} in the repository view"),
        }
    }

    /// The directory on disk a live directory mirrors (for its owner and
    /// times), if it exists.
    fn backing(&self, d: &Dir) -> PathBuf {
        let p = self.repo.path();
        match d {
            Dir::Root => p.to_path_buf(),
            Dir::Refs(RefNs::Ostree, prefix) => p.join("streams/refs/ostree").join(prefix),
            Dir::Refs(RefNs::Images, prefix) => p.join("images/refs").join(prefix),
            Dir::Refs(RefNs::Oci, prefix) => p.join("streams/refs/oci").join(prefix),
            Dir::Commits => p.join("streams"),
        }
    }

    fn ref_name(prefix: &str, name: &str) -> String {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        }
    }

    /// Every ref of an encoded namespace (`ostree/`, `oci/`) by the name
    /// it stands for, with its path below the namespace directory: names
    /// stored as composefs-rs spells them (`a%2Fb`) and older nested ones
    /// (`a/b`) alike.
    fn decoded_refs(&self, ns: RefNs) -> Result<BTreeMap<String, String>> {
        let root = self.backing(&Dir::Refs(ns, String::new()));
        let mut out = BTreeMap::new();
        let mut stack = vec![(root.clone(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot list {}", dir.display()));
                }
            };
            for e in rd.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if name.starts_with(".tmp-") {
                    continue;
                }
                let path = Self::ref_name(&rel, &name);
                match e.file_type() {
                    Ok(t) if t.is_dir() && depth < 64 => {
                        stack.push((e.path(), path, depth + 1));
                    }
                    Ok(t) if t.is_symlink() => {
                        let logical = path
                            .split('/')
                            .map(decode_ref_component)
                            .collect::<Vec<_>>()
                            .join("/");
                        out.entry(logical).or_insert(path);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// What the ref stored at `path` below a namespace names, if it is a
    /// tree (refs of other kinds of stream are not shown).
    fn ref_source(&self, ns: RefNs, path: &str) -> Result<Option<Source>> {
        match ns {
            RefNs::Ostree => {
                let entry = self
                    .repo
                    .ref_entry(RefKind::Stream, &format!("ostree/{path}"))?;
                Ok(entry
                    .as_deref()
                    .and_then(|e| e.strip_prefix("ostree-commit-"))
                    .and_then(|hex| Checksum::from_hex(hex).ok())
                    .map(Source::Commit))
            }
            RefNs::Images => Ok(Some(Source::Image(
                self.repo.resolve(RefKind::Image, path)?.id,
            ))),
            RefNs::Oci => Ok(crate::oci::store::manifest_stream(
                &self.repo,
                &crate::oci::tags::decode(path),
            )
            .ok()
            .map(Source::Oci)),
        }
    }

    /// What is at `name` in a live directory, if anything.
    fn find(&self, d: &Dir, name: &str) -> Result<Option<Found>> {
        Ok(match d {
            Dir::Root => match name {
                "ostree" => Some(Found::Dir(Dir::Refs(RefNs::Ostree, String::new()))),
                "images" => Some(Found::Dir(Dir::Refs(RefNs::Images, String::new()))),
                "commits" => Some(Found::Dir(Dir::Commits)),
                "oci" => Some(Found::Dir(Dir::Refs(RefNs::Oci, String::new()))),
                _ => None,
            },
            Dir::Refs(ns @ (RefNs::Ostree | RefNs::Oci), prefix) => {
                let full = Self::ref_name(prefix, name);
                let refs = self.decoded_refs(*ns)?;
                if let Some(path) = refs.get(&full) {
                    // A ref removed meanwhile, or broken: not there.
                    match self.ref_source(*ns, path) {
                        Ok(s) => s.map(Found::Tree),
                        Err(e) => {
                            tracing::debug!("{full}: not shown: {e:#}");
                            None
                        }
                    }
                } else {
                    let below = format!("{full}/");
                    refs.range(below.clone()..)
                        .next()
                        .filter(|(k, _)| k.starts_with(&below))
                        .map(|_| Found::Dir(Dir::Refs(*ns, full)))
                }
            }
            Dir::Refs(ns, prefix) => {
                let full = Self::ref_name(prefix, name);
                if validate_ref_name(&full).is_err() || name.starts_with(".tmp-") {
                    return Ok(None);
                }
                let path = self.backing(d).join(name);
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => Some(Found::Dir(Dir::Refs(*ns, full))),
                    Ok(m) if m.file_type().is_symlink() => match self.ref_source(*ns, &full) {
                        Ok(s) => s.map(Found::Tree),
                        // A ref removed meanwhile, or broken: not there.
                        Err(e) => {
                            tracing::debug!("{full}: not shown: {e:#}");
                            None
                        }
                    },
                    Ok(_) => None,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
                }
            }
            Dir::Commits => {
                let Ok(c) = Checksum::from_hex(name) else {
                    return Ok(None);
                };
                let entry = self
                    .repo
                    .path()
                    .join("streams")
                    .join(crate::ostree::commitstream::content_id(&c));
                std::fs::symlink_metadata(&entry)
                    .is_ok()
                    .then_some(Found::Tree(Source::Commit(c)))
            }
        })
    }

    /// Every name in a live directory, sorted.
    fn names(&self, d: &Dir) -> Result<Vec<String>> {
        let mut out = match d {
            Dir::Root => vec![
                "commits".into(),
                "images".into(),
                "oci".into(),
                "ostree".into(),
            ],
            Dir::Refs(ns @ (RefNs::Ostree | RefNs::Oci), prefix) => {
                let below = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                let mut names: Vec<String> = self
                    .decoded_refs(*ns)?
                    .into_keys()
                    .filter_map(|k| {
                        let rest = k.strip_prefix(&below)?;
                        Some(rest.split('/').next().unwrap_or(rest).to_string())
                    })
                    .filter(|n| !n.is_empty())
                    .collect();
                names.sort();
                names.dedup();
                names
            }
            Dir::Refs(..) => {
                let path = self.backing(d);
                match std::fs::read_dir(&path) {
                    Ok(rd) => rd
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot list {}", path.display()));
                    }
                }
            }
            Dir::Commits => crate::ostree::index::stored_commits(&self.repo)?
                .iter()
                .map(Checksum::to_hex)
                .collect(),
        };
        out.sort();
        Ok(out)
    }

    /// The inode number of what was found at `name` in directory `dir`.
    fn place(&self, dir: Ino, name: &str, f: Found) -> Result<Ino> {
        let mut st = self.state();
        Ok(match f {
            Found::Dir(d) => st.dir_ino(d),
            Found::Tree(s) => st.slot((dir, name.as_bytes().to_vec(), s))? << SHIFT,
        })
    }

    /// The tree of a slot, loaded if need be.
    fn tree(&self, slot: u64) -> Result<Arc<dyn Tree>> {
        let source = {
            let mut st = self.state();
            let Some(s) = st.slots.get(&slot) else {
                bail!("no tree {slot} in the repository view");
            };
            if let Some(t) = s.tree.clone() {
                if st.warm.front() != Some(&slot) {
                    st.touch(slot);
                }
                return Ok(t);
            }
            s.key.2
        };
        let t = source.load(&self.repo)?;
        let mut st = self.state();
        let Some(s) = st.slots.get_mut(&slot) else {
            bail!("no tree {slot} in the repository view");
        };
        let t = s.tree.get_or_insert(t).clone();
        st.touch(slot);
        Ok(t)
    }

    fn split(&self, ino: Ino) -> Result<(u64, Arc<dyn Tree>, Ino)> {
        let slot = ino >> SHIFT;
        let tree = self.tree(slot)?;
        let t = match ino & LOW {
            0 => tree.root(),
            n => n - 1,
        };
        Ok((slot, tree, t))
    }

    fn join(slot: u64, tree: &dyn Tree, t: Ino) -> Result<Ino> {
        if t == tree.root() {
            return Ok(slot << SHIFT);
        }
        if t >= LOW {
            bail!("inode number {t} is too large for the repository view");
        }
        Ok(slot << SHIFT | (t + 1))
    }

    fn dir_inode(&self, d: &Dir) -> Inode {
        let meta = std::fs::metadata(self.backing(d))
            .or_else(|_| std::fs::metadata(self.repo.path()))
            .ok();
        Inode {
            stat: Stat {
                perms: 0o555,
                uid: meta.as_ref().map_or(0, |m| m.uid()),
                gid: meta.as_ref().map_or(0, |m| m.gid()),
                mtime: meta.as_ref().map_or(Timespec::default(), |m| Timespec {
                    sec: m.mtime(),
                    nsec: m.mtime_nsec().clamp(0, 999_999_999) as u32,
                }),
            },
            kind: Kind::Directory,
            xattrs: vec![],
        }
    }
}

impl Tree for RepoView {
    fn root(&self) -> Ino {
        0
    }

    fn live(&self, ino: Ino) -> bool {
        ino >> SHIFT == 0
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        if self.live(ino) {
            let d = self.dir(ino)?;
            return Ok(Arc::new(self.dir_inode(&d)));
        }
        let (_, tree, t) = self.split(ino)?;
        tree.inode(t)
    }

    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        if self.live(ino) {
            // Everything listed in a live directory is a directory.
            let d = self.dir(ino)?;
            return Ok(Some(2 + self.names(&d)?.len() as u64));
        }
        let (_, tree, t) = self.split(ino)?;
        Ok(Some(tree.nlink(t)?.unwrap_or(1)))
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        if self.live(dir) {
            let d = self.dir(dir)?;
            let mut out = Vec::new();
            for name in self.names(&d)? {
                if let Some(f) = self.find(&d, &name)? {
                    out.push(DirEntry {
                        ino: self.place(dir, &name, f)?,
                        name: name.into_bytes(),
                    });
                }
            }
            return Ok(out.into());
        }
        let (slot, tree, t) = self.split(dir)?;
        tree.readdir(t)?
            .iter()
            .map(|e| {
                Ok(DirEntry {
                    name: e.name.clone(),
                    ino: Self::join(slot, tree.as_ref(), e.ino)?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Into::into)
    }

    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
        if self.live(dir) {
            let d = self.dir(dir)?;
            let Ok(name) = std::str::from_utf8(name) else {
                return Ok(None);
            };
            return match self.find(&d, name)? {
                Some(f) => Ok(Some(self.place(dir, name, f)?)),
                None => Ok(None),
            };
        }
        let (slot, tree, t) = self.split(dir)?;
        match tree.lookup(t, name)? {
            Some(c) => Ok(Some(Self::join(slot, tree.as_ref(), c)?)),
            None => Ok(None),
        }
    }

    fn shrink(&self) {
        for s in self.state().slots.values() {
            if let Some(t) = &s.tree {
                t.shrink();
            }
        }
    }
}
