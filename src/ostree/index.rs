//! The repository-wide ostree object index: for every object of every
//! stored commit (files, dirtrees, dirmetas), which stored commit holds
//! it. A pull looks objects up here so nothing already stored is fetched
//! again, whichever commit it came with. It is a cache: rebuilt from the
//! stored commit streams when missing or stale (`composefs fsck` checks
//! it; a pull rebuilds it if it is missing), and entries whose commit is
//! gone are simply misses.
//!
//! File `ostree/index`: `"CFSOIDX1"`, u64 count, then count records of
//! 72 bytes `{checksum[32] type:u8 pad[7] commit[32]}` sorted by
//! (checksum, type). Replaced atomically (rename) under `ostree/index.lock`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::commitstream::CommitStream;
use crate::repository::{RefKind, Repository};

const MAGIC: &[u8; 8] = b"CFSOIDX1";
const RECORD: usize = 72;

pub struct Index {
    data: Vec<u8>,
    count: usize,
}

fn dir(repo: &Repository) -> PathBuf {
    repo.path().join("ostree")
}

fn path(repo: &Repository) -> PathBuf {
    dir(repo).join("index")
}

impl Index {
    pub fn empty() -> Index {
        Index {
            data: Vec::new(),
            count: 0,
        }
    }

    /// Load the index; `None` if there is none.
    pub fn load(repo: &Repository) -> Result<Option<Index>> {
        let p = path(repo);
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        Self::parse(data)
            .with_context(|| format!("ostree index {}", p.display()))
            .map(Some)
    }

    fn parse(data: Vec<u8>) -> Result<Index> {
        if data.len() < 16 || &data[..8] != MAGIC {
            bail!("bad magic");
        }
        let count = u64::from_le_bytes(data[8..16].try_into().expect("8")) as usize;
        if Some(data.len()) != count.checked_mul(RECORD).and_then(|n| n.checked_add(16)) {
            bail!("size does not match its count");
        }
        let idx = Index { data, count };
        for i in 1..count {
            if idx.key(i - 1) >= idx.key(i) {
                bail!("records are not sorted");
            }
        }
        Ok(idx)
    }

    fn record(&self, i: usize) -> &[u8] {
        &self.data[16 + i * RECORD..16 + (i + 1) * RECORD]
    }

    fn key(&self, i: usize) -> (&[u8], u8) {
        let r = self.record(i);
        (&r[..32], r[32])
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The stored commit that holds object (c, t).
    pub fn lookup(&self, c: &Checksum, t: ObjType) -> Option<Checksum> {
        let key = (&c.0[..], t as u8);
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return Some(Checksum(self.record(mid)[40..72].try_into().expect("32")));
                }
            }
        }
        None
    }

    pub fn entries(&self) -> impl Iterator<Item = ((Checksum, u8), Checksum)> + '_ {
        (0..self.count).map(|i| {
            let r = self.record(i);
            (
                (Checksum(r[..32].try_into().expect("32")), r[32]),
                Checksum(r[40..72].try_into().expect("32")),
            )
        })
    }
}

/// Commits stored in the repository (entries `streams/ostree-commit-*`).
pub fn stored_commits(repo: &Repository) -> Result<Vec<Checksum>> {
    let d = repo.path().join(RefKind::Stream.dir());
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&d) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", d.display())),
    };
    for e in rd {
        let e = e?;
        if let Some(hex) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("ostree-commit-"))
            && let Ok(c) = Checksum::from_hex(hex)
        {
            out.push(c);
        }
    }
    out.sort();
    Ok(out)
}

/// Hold `ostree/index.lock` exclusively while updating.
fn lock(repo: &Repository) -> Result<File> {
    let d = dir(repo);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    let p = d.join("index.lock");
    let f = File::create(&p).with_context(|| format!("cannot open {}", p.display()))?;
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("cannot lock {}", p.display()))?;
    Ok(f)
}

fn write(repo: &Repository, map: &BTreeMap<(Checksum, u8), Checksum>) -> Result<()> {
    let d = dir(repo);
    let mut tmp = tempfile::NamedTempFile::new_in(&d)
        .with_context(|| format!("cannot create a temporary file in {}", d.display()))?;
    let mut buf = Vec::with_capacity(16 + map.len() * RECORD);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(map.len() as u64).to_le_bytes());
    for ((c, t), commit) in map {
        buf.extend_from_slice(&c.0);
        buf.push(*t);
        buf.extend_from_slice(&[0; 7]);
        buf.extend_from_slice(&commit.0);
    }
    tmp.write_all(&buf)
        .context("cannot write the ostree index")?;
    tmp.persist(path(repo))
        .map_err(|e| e.error)
        .context("cannot replace the ostree index")?;
    Ok(())
}

fn add_commit(
    map: &mut BTreeMap<(Checksum, u8), Checksum>,
    commit: Checksum,
    keys: impl IntoIterator<Item = (Checksum, ObjType)>,
) {
    for (c, t) in keys {
        if matches!(t, ObjType::File | ObjType::DirTree | ObjType::DirMeta) {
            map.entry((c, t as u8)).or_insert(commit);
        }
    }
}

/// Add the objects (`keys`) of newly stored `commit`.
pub fn add(
    repo: &Repository,
    commit: Checksum,
    keys: impl IntoIterator<Item = (Checksum, ObjType)>,
) -> Result<()> {
    let _l = lock(repo)?;
    let mut map = BTreeMap::new();
    match Index::load(repo) {
        Ok(Some(old)) => map.extend(old.entries()),
        Ok(None) => {}
        Err(_) => return rebuild_locked(repo).map(drop),
    }
    add_commit(&mut map, commit, keys);
    write(repo, &map)
}

/// Rebuild from every stored commit; returns the number of records.
pub fn rebuild(repo: &Repository) -> Result<usize> {
    let _l = lock(repo)?;
    rebuild_locked(repo)
}

fn rebuild_locked(repo: &Repository) -> Result<usize> {
    let mut map = BTreeMap::new();
    for c in stored_commits(repo)? {
        let s = CommitStream::open(repo, &c)?;
        add_commit(
            &mut map,
            c,
            s.keys()?.into_iter().filter_map(|(o, t)| Some((o, t?))),
        );
    }
    write(repo, &map)?;
    Ok(map.len())
}

/// Is the index current: present (if any commit is stored), naming only
/// stored commits, and holding every object of every stored commit?
pub fn check(repo: &Repository) -> Result<Option<String>> {
    let commits = stored_commits(repo)?;
    let idx = match Index::load(repo) {
        Ok(Some(i)) => i,
        Ok(None) if commits.is_empty() => return Ok(None),
        Ok(None) => return Ok(Some("missing".into())),
        Err(e) => return Ok(Some(format!("{e:#}"))),
    };
    let set: std::collections::HashSet<_> = commits.iter().collect();
    if let Some((_, c)) = idx.entries().find(|(_, c)| !set.contains(c)) {
        return Ok(Some(format!("names commit {c}, which is not stored")));
    }
    for c in &commits {
        let s = CommitStream::open(repo, c)?;
        for (o, t) in s.keys()? {
            if let Some(t) = t
                && matches!(t, ObjType::File | ObjType::DirTree | ObjType::DirMeta)
                && idx.lookup(&o, t).is_none()
            {
                return Ok(Some(format!("lacks {} {o} of commit {c}", t.name())));
            }
        }
    }
    Ok(None)
}
