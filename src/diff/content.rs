//! Where a regular file's bytes are, and deciding whether two files have
//! the same bytes while reading as little as possible:
//! - sizes first: different sizes are different contents, nothing read;
//! - object id against object id (same algorithm): equal ids, equal bytes;
//! - inline bytes against an object id: the fs-verity digest of the inline
//!   bytes with the id's algorithm (inlining thresholds differ between
//!   sources), no object read;
//! - a local file against an object id: the file's digest (only reached
//!   when the sizes match);
//! - inline or local bytes against each other: compared directly;
//! - a file whose content the tree does not locate (a dumpfile without
//!   digest): reported as different.
//!
//! Also reading the bytes for `--content` ([`read`], [`read_file`]),
//! bounded. An object is read only once its tree made it present
//! ([`present`]: a remote tree fetches it); ids are compared without.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::Side;
use crate::fsverity::{self, Algorithm, ObjectId};
use crate::repository::Repository;
use crate::tree::{FileData, Ino};

/// Where a regular file's content is.
#[derive(Clone, Copy, Debug)]
pub enum Loc<'a> {
    Inline(&'a [u8]),
    Object(ObjectId, u64),
    /// A file of a local directory, by its path on disk.
    Local(&'a Path, u64),
    /// Neither bytes nor an id nor a path: only the size is known.
    Unknown(u64),
}

impl Loc<'_> {
    pub fn size(&self) -> u64 {
        match self {
            Loc::Inline(b) => b.len() as u64,
            Loc::Object(_, s) | Loc::Local(_, s) | Loc::Unknown(s) => *s,
        }
    }
}

/// Where the content of regular file `ino` (with data `data`) of `side` is.
pub fn locate<'a>(side: &Side<'a>, ino: Ino, data: &'a FileData) -> Loc<'a> {
    match data {
        FileData::Inline(b) => Loc::Inline(b),
        FileData::External {
            size,
            digest: Some(id),
            ..
        } => Loc::Object(*id, *size),
        FileData::External { size, redirect, .. } => {
            if let Some(id) = redirect.as_deref().and_then(ObjectId::from_object_path) {
                return Loc::Object(id, *size);
            }
            match side.local.and_then(|l| l.file_path(ino)) {
                Some(p) => Loc::Local(p, *size),
                None => Loc::Unknown(*size),
            }
        }
    }
}

/// `loc`, the content of regular file `ino` of a tree (not a local
/// directory), with its object made present: a remote tree fetches it
/// ([`crate::tree::Tree::content_object`]). Anything else as it is.
pub fn present<'a>(side: &Side<'_>, ino: Ino, loc: Loc<'a>) -> Result<Loc<'a>> {
    match loc {
        Loc::Object(_, size) if side.local.is_none() => {
            Ok(match side.tree.content_object(ino)? {
                Some(id) => Loc::Object(id, size),
                None => loc,
            })
        }
        _ => Ok(loc),
    }
}

/// [`read`] of regular file `ino` (with data `data`) of `side`, its object
/// made present first ([`present`]); nothing fetched for a file larger
/// than `limit`.
pub fn read_file(
    repo: Option<&Repository>,
    side: &Side<'_>,
    ino: Ino,
    data: &FileData,
    limit: u64,
) -> Result<Option<Vec<u8>>> {
    let loc = locate(side, ino, data);
    if loc.size() > limit {
        return Ok(None);
    }
    read(repo, present(side, ino, loc)?, limit)
}

/// Digests of local files, computed once per (path, algorithm).
#[derive(Default)]
pub struct Digests {
    local: HashMap<(std::path::PathBuf, Algorithm), ObjectId>,
}

impl Digests {
    fn local(&mut self, path: &Path, alg: Algorithm) -> Result<ObjectId> {
        if let Some(id) = self.local.get(&(path.to_path_buf(), alg)) {
            return Ok(*id);
        }
        let f = open_local(path)?;
        let (id, _) = fsverity::digest_reader(alg, f)
            .with_context(|| format!("cannot read {}", crate::show::path(path)))?;
        self.local.insert((path.to_path_buf(), alg), id);
        Ok(id)
    }
}

/// Open a local file without following a symlink put in its place. A
/// path longer than the kernel takes in one call (a deep tree) is opened a
/// directory at a time, none of them followed if a symlink.
fn open_local(path: &Path) -> Result<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let what = || format!("cannot open {}", crate::show::path(path));
    if path.as_os_str().as_bytes().len() < libc::PATH_MAX as usize {
        return std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .with_context(what);
    }
    use rustix::fs::{CWD, Mode, OFlags, openat};
    use std::path::Component;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir: Option<std::os::fd::OwnedFd> = None;
    let mut comps = path.components().peekable();
    while let Some(c) = comps.next() {
        let name: &std::ffi::OsStr = match c {
            Component::RootDir => "/".as_ref(),
            Component::CurDir => continue,
            Component::ParentDir => "..".as_ref(),
            Component::Normal(n) => n,
            Component::Prefix(_) => bail!("{}: not a Unix path", what()),
        };
        let last = comps.peek().is_none();
        let f = if last {
            flags
        } else {
            flags | OFlags::DIRECTORY
        };
        let fd = match &dir {
            Some(d) => openat(d, name, f, Mode::empty()),
            None => openat(CWD, name, f, Mode::empty()),
        };
        dir = Some(fd.map_err(std::io::Error::from).with_context(what)?);
    }
    Ok(File::from(dir.with_context(what)?))
}

/// Whether two contents are the same bytes (see the module comment for
/// what is read).
pub fn equal(
    repo: Option<&Repository>,
    digests: &mut Digests,
    a: Loc<'_>,
    b: Loc<'_>,
) -> Result<bool> {
    if a.size() != b.size() {
        return Ok(false);
    }
    Ok(match (a, b) {
        (Loc::Unknown(_), _) | (_, Loc::Unknown(_)) => false,
        (Loc::Inline(x), Loc::Inline(y)) => x == y,
        (Loc::Object(x, _), Loc::Object(y, _)) => {
            if x.algorithm() == y.algorithm() {
                x == y
            } else {
                let r = repo.with_context(|| {
                    format!("objects {x:?} and {y:?} use different algorithms: comparing them needs the repository")
                })?;
                let f = r.open_object(&y).with_context(|| format!("object {y}"))?;
                let (id, _) = fsverity::digest_reader(x.algorithm(), f)
                    .with_context(|| format!("cannot read object {y}"))?;
                id == x
            }
        }
        (Loc::Inline(x), Loc::Object(id, _)) | (Loc::Object(id, _), Loc::Inline(x)) => {
            fsverity::digest_bytes(id.algorithm(), x) == id
        }
        (Loc::Local(p, _), Loc::Object(id, _)) | (Loc::Object(id, _), Loc::Local(p, _)) => {
            digests.local(p, id.algorithm())? == id
        }
        (Loc::Local(p, _), Loc::Inline(x)) | (Loc::Inline(x), Loc::Local(p, _)) => {
            same_reader(open_local(p)?, x, p)?
        }
        (Loc::Local(p, _), Loc::Local(q, _)) => {
            let mut g = open_local(q)?;
            let mut buf = vec![0u8; 1 << 16];
            let mut f = open_local(p)?;
            loop {
                let n = read_some(&mut f, &mut buf, p)?;
                if n == 0 {
                    let mut one = [0u8; 1];
                    break read_some(&mut g, &mut one, q)? == 0;
                }
                let mut other = vec![0u8; n];
                let m = crate::fsutil::read_full(&mut g, &mut other)
                    .with_context(|| format!("cannot read {}", crate::show::path(q)))?;
                if m != n || other != buf[..n] {
                    break false;
                }
            }
        }
    })
}

fn read_some(f: &mut File, buf: &mut [u8], p: &Path) -> Result<usize> {
    crate::fsutil::read_full(f, buf)
        .with_context(|| format!("cannot read {}", crate::show::path(p)))
}

/// Whether the reader yields exactly `want`.
fn same_reader(mut f: File, want: &[u8], p: &Path) -> Result<bool> {
    let mut buf = vec![0u8; want.len() + 1];
    let n = read_some(&mut f, &mut buf, p)?;
    Ok(n == want.len() && buf[..n] == *want)
}

/// The bytes of a content of at most `limit` bytes; `None` when larger.
/// Objects are read from `repo`.
pub fn read(repo: Option<&Repository>, loc: Loc<'_>, limit: u64) -> Result<Option<Vec<u8>>> {
    if loc.size() > limit {
        return Ok(None);
    }
    let (mut r, what): (Box<dyn Read>, String) = match loc {
        Loc::Inline(b) => return Ok(Some(b.to_vec())),
        Loc::Object(id, _) => {
            let repo =
                repo.with_context(|| format!("object {id}: no repository to read it from"))?;
            (
                Box::new(
                    repo.open_object(&id)
                        .with_context(|| format!("object {id}"))?,
                ),
                format!("object {id}"),
            )
        }
        Loc::Local(p, _) => (Box::new(open_local(p)?), crate::show::path(p)),
        Loc::Unknown(_) => bail!("the tree does not say where the content is"),
    };
    let mut v = Vec::with_capacity(loc.size() as usize);
    r.by_ref()
        .take(limit + 1)
        .read_to_end(&mut v)
        .with_context(|| format!("cannot read {what}"))?;
    if v.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_against_object_by_digest() {
        let data = b"hello, world\n".repeat(100);
        let id = fsverity::digest_bytes(Algorithm::Sha512, &data);
        let mut d = Digests::default();
        let size = data.len() as u64;
        assert!(equal(None, &mut d, Loc::Inline(&data), Loc::Object(id, size)).unwrap());
        let mut other = data.clone();
        other[5] = b'!';
        assert!(!equal(None, &mut d, Loc::Inline(&other), Loc::Object(id, size)).unwrap());
        // Different sizes: different, nothing digested.
        assert!(!equal(None, &mut d, Loc::Inline(b"x"), Loc::Object(id, size)).unwrap());
        assert!(!equal(None, &mut d, Loc::Unknown(1), Loc::Inline(b"x")).unwrap());
    }

    #[test]
    fn local_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let q = dir.path().join("g");
        let data = vec![7u8; 200_000];
        std::fs::write(&p, &data).unwrap();
        std::fs::write(&q, &data).unwrap();
        let n = data.len() as u64;
        let id = fsverity::digest_bytes(Algorithm::Sha256, &data);
        let mut d = Digests::default();
        assert!(equal(None, &mut d, Loc::Local(&p, n), Loc::Object(id, n)).unwrap());
        assert!(equal(None, &mut d, Loc::Local(&p, n), Loc::Local(&q, n)).unwrap());
        assert!(equal(None, &mut d, Loc::Local(&p, n), Loc::Inline(&data)).unwrap());
        let mut other = data.clone();
        other[199_999] = 1;
        std::fs::write(&q, &other).unwrap();
        assert!(!equal(None, &mut d, Loc::Local(&p, n), Loc::Local(&q, n)).unwrap());
        assert!(!equal(None, &mut d, Loc::Local(&q, n), Loc::Inline(&data)).unwrap());
        assert_eq!(
            read(None, Loc::Local(&q, n), 1 << 20).unwrap().unwrap(),
            other
        );
        assert!(read(None, Loc::Local(&q, n), 10).unwrap().is_none());
    }

    #[test]
    fn redirects() {
        let id = fsverity::digest_bytes(Algorithm::Sha256, b"abc");
        assert_eq!(
            ObjectId::from_object_path(id.object_path().as_bytes()),
            Some(id)
        );
        assert_eq!(ObjectId::from_object_path(b"zz/123"), None);
        assert_eq!(ObjectId::from_object_path(b"../etc/passwd"), None);
    }
}
