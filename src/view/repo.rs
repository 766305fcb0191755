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
//! /remotes/<name>/<ref>/  each configured remote's trees, read in place
//!                     ([`super::remotes`], [`super::remote`])
//! ```
//!
//! `remotes/<name>/` lists what the remote lists: an ostree repository's
//! refs (its summary, nested by `/` as `ostree/` is), a registry
//! repository's tags; a composefs repository served as files lists
//! nothing, but a name looked up there (`ostree/NAME`, `images/NAME`,
//! `oci/NAME`, `streams/…`) is opened. A listing costs a request: it is
//! kept [`REMOTE_TTL`], failures too (logged, and shown empty). A tree is
//! opened when looked up (with the remote's trust); one that cannot be
//! opened is absent, a log line naming the remote and ref says why, and
//! it is not tried again for [`REMOTE_TTL`]. An ostree ref's slot is for
//! the commit the listing names (a ref moved upstream is a new slot, seen
//! once the listing is refreshed); a tag's or a composefs name's is for
//! what it named when first opened, for the mount's life. Remote trees
//! shrink but are never dropped (their numbers depend on the order they
//! were read in).
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
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Source;
use super::remote::OpenOptions;
use super::remotes::{RemoteConfig, UrlKind};
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

/// How long a remote's listing, or a remote tree's failure to open, is
/// kept.
pub const REMOTE_TTL: Duration = Duration::from_secs(30);

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
    /// The configured remotes.
    Remotes,
    /// A remote's trees below a prefix ("" for the top).
    Remote(String, String),
}

/// What a tree of the view is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Content {
    Stored(Source),
    /// The tree `rref` of a configured remote; an ostree ref by the
    /// commit its listing names.
    Remote {
        remote: String,
        rref: String,
        commit: Option<Checksum>,
    },
}

/// What a remote lists.
enum Listing {
    /// Refs (or tags), with the commit each names when known.
    Refs(BTreeMap<String, Option<Checksum>>),
    /// A composefs repository served as files: nothing is listed, names
    /// are looked up.
    Unlisted,
}

/// The configured remotes, their listings kept a while.
struct Remotes {
    configs: BTreeMap<String, RemoteConfig>,
    base: OpenOptions,
    listings: Mutex<HashMap<String, (Instant, Arc<Listing>)>>,
}

/// What sits at a place in a live directory.
enum Found {
    Dir(Dir),
    Tree(Content),
}

type SlotKey = (Ino, Vec<u8>, Content);

struct Slot {
    key: SlotKey,
    tree: Option<Arc<dyn Tree>>,
    /// When a remote tree last failed to open, and why.
    failed: Option<(Instant, String)>,
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
        self.slots.insert(
            s,
            Slot {
                key,
                tree: None,
                failed: None,
            },
        );
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
                    Content::Stored(Source::Commit(_)) | Content::Remote { .. } => {
                        if let Some(t) = &s.tree {
                            t.shrink();
                        }
                    }
                    Content::Stored(Source::Image(_) | Source::Oci(_) | Source::OciRaw(_)) => {
                        s.tree = None
                    }
                }
            }
        }
    }
}

/// The live view of a repository.
pub struct RepoView {
    repo: Repository,
    state: Mutex<State>,
    remotes: Remotes,
}

impl RepoView {
    /// The view, with no remotes.
    pub fn new(repo: &Repository) -> Result<RepoView> {
        Self::with_remotes(repo, BTreeMap::new(), OpenOptions::default())
    }

    /// The view, with `remotes` under `remotes/`, their trees opened with
    /// their own trust and `base`'s timeouts and registry access.
    pub fn with_remotes(
        repo: &Repository,
        remotes: BTreeMap<String, RemoteConfig>,
        base: OpenOptions,
    ) -> Result<RepoView> {
        let mut state = State::default();
        state.dir_ino(Dir::Root);
        Ok(RepoView {
            repo: repo.try_clone()?,
            state: Mutex::new(state),
            remotes: Remotes {
                configs: remotes,
                base,
                listings: Mutex::new(HashMap::new()),
            },
        })
    }

    /// What remote `name` lists, fetched at most every [`REMOTE_TTL`]
    /// (not under any lock: a slow remote holds up only its callers). A
    /// remote that cannot be listed lists nothing (logged).
    fn listing(&self, name: &str) -> Arc<Listing> {
        let cached = |now: Instant| {
            let l = self
                .remotes
                .listings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            l.get(name)
                .filter(|(at, _)| now.duration_since(*at) < REMOTE_TTL)
                .map(|(_, l)| l.clone())
        };
        if let Some(l) = cached(Instant::now()) {
            return l;
        }
        let Some(cfg) = self.remotes.configs.get(name) else {
            return Arc::new(Listing::Refs(BTreeMap::new()));
        };
        let listing = Arc::new(match self.list_remote(cfg) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("remote {name:?} ({}): cannot list its refs: {e:#}", cfg.url);
                Listing::Refs(BTreeMap::new())
            }
        });
        self.remotes
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (Instant::now(), listing.clone()));
        listing
    }

    fn list_remote(&self, cfg: &RemoteConfig) -> Result<Listing> {
        let base = &self.remotes.base;
        match cfg.kind() {
            UrlKind::Registry => {
                let Ok(crate::oci::reference::ImageRef::Registry {
                    host, repository, ..
                }) = crate::oci::reference::ImageRef::parse(&cfg.url)
                else {
                    bail!("{}: not a registry repository", cfg.url);
                };
                let registry =
                    crate::oci::registry::Registry::new(&host, &repository, &base.oci.registry)?;
                Ok(Listing::Refs(
                    registry.tags()?.into_iter().map(|t| (t, None)).collect(),
                ))
            }
            UrlKind::Files => {
                let remote = crate::fetch::remote::Remote::new(&cfg.url, base.fetch.timeout)?;
                match super::remote::probe(&remote, &cfg.url)? {
                    super::remote::Serves::Composefs(_) => Ok(Listing::Unlisted),
                    super::remote::Serves::Ostree => {
                        let src = crate::ostree::open_source_with(&cfg.url, base.ostree.timeout)?;
                        let (_, refs) =
                            crate::ostree::summary::remote_refs(src.as_ref(), &cfg.url)?;
                        Ok(Listing::Refs(
                            refs.into_iter().map(|(n, c)| (n, Some(c))).collect(),
                        ))
                    }
                }
            }
        }
    }

    /// Open a remote tree (no lock held).
    fn open_remote(
        &self,
        remote: &str,
        rref: &str,
        commit: Option<&Checksum>,
    ) -> Result<Arc<dyn Tree>> {
        let Some(cfg) = self.remotes.configs.get(remote) else {
            bail!("no remote {remote:?}");
        };
        let hex = commit.map(Checksum::to_hex);
        let target = hex.as_deref().unwrap_or(rref);
        let opened = super::remote::open_configured(&self.repo, cfg, target, &self.remotes.base)?;
        Ok(opened.tree)
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
            Dir::Remotes | Dir::Remote(..) => p.to_path_buf(),
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
                "remotes" if !self.remotes.configs.is_empty() => Some(Found::Dir(Dir::Remotes)),
                _ => None,
            },
            Dir::Refs(ns @ (RefNs::Ostree | RefNs::Oci), prefix) => {
                let full = Self::ref_name(prefix, name);
                let refs = self.decoded_refs(*ns)?;
                if let Some(path) = refs.get(&full) {
                    // A ref removed meanwhile, or broken: not there.
                    match self.ref_source(*ns, path) {
                        Ok(s) => s.map(|s| Found::Tree(Content::Stored(s))),
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
                        Ok(s) => s.map(|s| Found::Tree(Content::Stored(s))),
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
                    .then_some(Found::Tree(Content::Stored(Source::Commit(c))))
            }
            Dir::Remotes => self
                .remotes
                .configs
                .contains_key(name)
                .then(|| Found::Dir(Dir::Remote(name.to_string(), String::new()))),
            Dir::Remote(remote, prefix) => {
                let full = Self::ref_name(prefix, name);
                let tree = || {
                    Found::Tree(Content::Remote {
                        remote: remote.clone(),
                        rref: full.clone(),
                        commit: None,
                    })
                };
                match &*self.listing(remote) {
                    Listing::Refs(refs) => match refs.get(&full) {
                        Some(commit) => Some(Found::Tree(Content::Remote {
                            remote: remote.clone(),
                            rref: full.clone(),
                            commit: *commit,
                        })),
                        None => {
                            let below = format!("{full}/");
                            refs.range(below.clone()..)
                                .next()
                                .filter(|(k, _)| k.starts_with(&below))
                                .map(|_| Found::Dir(Dir::Remote(remote.clone(), full.clone())))
                        }
                    },
                    // A composefs repository's names: KIND/NAME, and
                    // streams/refs/NAME.
                    Listing::Unlisted => match (prefix.as_str(), name) {
                        ("", "ostree" | "images" | "oci" | "streams") | ("streams", "refs") => {
                            Some(Found::Dir(Dir::Remote(remote.clone(), full.clone())))
                        }
                        ("", _) => None,
                        _ => Some(tree()),
                    },
                }
            }
        })
    }

    /// Every name in a live directory, sorted.
    fn names(&self, d: &Dir) -> Result<Vec<String>> {
        let mut out = match d {
            Dir::Root => {
                let mut v: Vec<String> = vec![
                    "commits".into(),
                    "images".into(),
                    "oci".into(),
                    "ostree".into(),
                ];
                if !self.remotes.configs.is_empty() {
                    v.push("remotes".into());
                }
                v
            }
            Dir::Remotes => self.remotes.configs.keys().cloned().collect(),
            Dir::Remote(remote, prefix) => match &*self.listing(remote) {
                Listing::Unlisted => vec![],
                Listing::Refs(refs) => names_below(refs.keys(), prefix),
            },
            Dir::Refs(ns @ (RefNs::Ostree | RefNs::Oci), prefix) => {
                names_below(self.decoded_refs(*ns)?.keys(), prefix)
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
        let content = {
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
            if let Some((at, why)) = &s.failed
                && at.elapsed() < REMOTE_TTL
            {
                bail!("{why} (not tried again for {}s)", REMOTE_TTL.as_secs());
            }
            s.key.2.clone()
        };
        let loaded = match &content {
            Content::Stored(source) => source.load(&self.repo),
            Content::Remote {
                remote,
                rref,
                commit,
            } => self.open_remote(remote, rref, commit.as_ref()),
        };
        let mut st = self.state();
        let Some(s) = st.slots.get_mut(&slot) else {
            bail!("no tree {slot} in the repository view");
        };
        let t = match loaded {
            Ok(t) => t,
            Err(e) => {
                if matches!(content, Content::Remote { .. }) {
                    s.failed = Some((Instant::now(), format!("{e:#}")));
                }
                return Err(e);
            }
        };
        s.failed = None;
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

    /// Whether `ino` is the root of a remote tree (whose attributes
    /// change once it is opened), and whether that tree is not opened yet.
    fn remote_root(&self, ino: Ino) -> Option<bool> {
        if ino & LOW != 0 {
            return None;
        }
        let st = self.state();
        let s = st.slots.get(&(ino >> SHIFT))?;
        matches!(s.key.2, Content::Remote { .. }).then_some(s.tree.is_none())
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
        ino >> SHIFT == 0 || self.remote_root(ino).is_some()
    }

    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        if ino >> SHIFT == 0 {
            let d = self.dir(ino)?;
            return Ok(Arc::new(self.dir_inode(&d)));
        }
        // A listing shows a remote's trees without opening them: a
        // directory, until it is entered.
        if self.remote_root(ino) == Some(true) {
            return Ok(Arc::new(self.dir_inode(&Dir::Remotes)));
        }
        let (_, tree, t) = self.split(ino)?;
        tree.inode(t)
    }

    fn link_hint(&self, ino: Ino) -> Option<crate::tree::LinkHint> {
        if ino >> SHIFT == 0 || self.remote_root(ino) == Some(true) {
            return None;
        }
        let (_, tree, t) = self.split(ino).ok()?;
        tree.link_hint(t)
    }

    fn content_object(&self, ino: Ino) -> Result<Option<crate::fsverity::ObjectId>> {
        if ino >> SHIFT == 0 {
            bail!("inode {ino} is a directory");
        }
        let (_, tree, t) = self.split(ino)?;
        tree.content_object(t)
    }

    fn costly_inode(&self, ino: Ino) -> bool {
        if ino >> SHIFT == 0 || self.remote_root(ino).is_some() {
            return false;
        }
        self.split(ino)
            .is_ok_and(|(_, tree, t)| tree.costly_inode(t))
    }

    fn nlink(&self, ino: Ino) -> Result<Option<u64>> {
        if self.remote_root(ino) == Some(true) {
            return Ok(Some(2));
        }
        if ino >> SHIFT == 0 {
            // Everything listed in a live directory is a directory.
            let d = self.dir(ino)?;
            return Ok(Some(2 + self.names(&d)?.len() as u64));
        }
        let (_, tree, t) = self.split(ino)?;
        Ok(Some(tree.nlink(t)?.unwrap_or(1)))
    }

    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        if dir >> SHIFT == 0 {
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
        if dir >> SHIFT == 0 {
            let d = self.dir(dir)?;
            let Ok(name) = std::str::from_utf8(name) else {
                return Ok(None);
            };
            return match self.find(&d, name)? {
                Some(Found::Tree(Content::Remote {
                    remote,
                    rref,
                    commit,
                })) => {
                    let f = Found::Tree(Content::Remote {
                        remote: remote.clone(),
                        rref: rref.clone(),
                        commit,
                    });
                    let ino = self.place(dir, name, f)?;
                    // Opened now: a tree that cannot be opened is absent.
                    match self.tree(ino >> SHIFT) {
                        Ok(_) => Ok(Some(ino)),
                        Err(e) => {
                            tracing::warn!("remotes/{remote}/{rref}: not shown: {e:#}");
                            Ok(None)
                        }
                    }
                }
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

/// The entries of directory `prefix` ("" for the top) in a hierarchy of
/// ref names: the next component of each name below it, sorted, once each.
fn names_below<'a>(refs: impl Iterator<Item = &'a String>, prefix: &str) -> Vec<String> {
    let below = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut names: Vec<String> = refs
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
