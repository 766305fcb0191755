//! Opening an existing repository: absent (nothing at the path, or a
//! directory with neither `meta.json` nor `objects/`) is an answer
//! ([`Repository::try_open`] gives `None`); a repository that is there but
//! cannot be used is an [`OpenError`] saying why. [`Repository::open`]
//! turns absence into an error naming the path.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::{Lock, Repository, meta, read_at};
use crate::fsutil::{mkdir_all_at, open_dir_at};

/// Why a repository that is there cannot be opened: damaged (its layout
/// or `meta.json`), made by a newer tool, or unreadable.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path is not a directory.
    #[error("cannot open repository {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// `objects/` but no `meta.json`: a repository of composefs-rs before
    /// 0.7, or one whose `meta.json` was lost.
    #[error(
        "{path} has objects/ but no {meta}: a repository of composefs-rs before 0.7 \
         (`cfsctl --repo {path} fsck` upgrades it in place, writing {meta} from its \
         objects), or one whose {meta} was lost (`composefs init` with its algorithm \
         writes a new one)",
        path = .0.display(),
        meta = meta::META_FILENAME
    )]
    NoMeta(PathBuf),
    /// `meta.json` does not parse, or asks for what this tool does not
    /// have (a newer format version, an unknown algorithm or incompatible
    /// feature, an unknown EROFS format).
    #[error("repository {}", .path.display())]
    Meta {
        path: PathBuf,
        #[source]
        source: meta::MetaError,
    },
    /// `objects` is there but is not a directory.
    #[error("repository {}: objects is not a directory", .0.display())]
    ObjectsNotADirectory(PathBuf),
    /// A system call failed: `what` says on what.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl OpenError {
    fn io(what: String, e: impl Into<io::Error>) -> Self {
        OpenError::Io {
            what,
            source: e.into(),
        }
    }
}

impl Repository {
    /// Open an existing repository with a shared lock; no repository at
    /// `path` is an error naming it (see [`Self::try_open`]).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_locked(path, Lock::Shared)
    }

    /// Open an existing repository, waiting for the given lock; no
    /// repository at `path` is an error naming it.
    pub fn open_locked(path: &Path, lock: Lock) -> Result<Self> {
        match Self::try_open_locked(path, lock)? {
            Some(r) => Ok(r),
            None if path.exists() => anyhow::bail!(
                "{} is not a composefs repository: it has no {} (create one with `composefs init`)",
                path.display(),
                meta::META_FILENAME
            ),
            None => anyhow::bail!(
                "no composefs repository at {} (create one with `composefs init`)",
                path.display()
            ),
        }
    }

    /// Open the repository at `path` with a shared lock, `None` when there
    /// is none: nothing at the path, or a directory with neither
    /// `meta.json` nor `objects/`.
    pub fn try_open(path: &Path) -> Result<Option<Self>, OpenError> {
        Self::try_open_locked(path, Lock::Shared)
    }

    /// [`Self::try_open`], waiting for the given lock.
    pub fn try_open_locked(path: &Path, lock: Lock) -> Result<Option<Self>, OpenError> {
        let shown = path.display();
        let dir = match open_dir_at(rustix::fs::CWD, path) {
            Ok(d) => d,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::NOTDIR) => return Err(OpenError::NotADirectory(path.to_path_buf())),
            Err(e) => return Err(OpenError::io(format!("cannot open repository {shown}"), e)),
        };
        let op = match lock {
            Lock::Shared => FlockOperation::LockShared,
            Lock::Exclusive => FlockOperation::LockExclusive,
        };
        rustix::fs::flock(&dir, op)
            .map_err(|e| OpenError::io(format!("cannot lock repository {shown}"), e))?;
        let (text, meta_file) = match read_at(&dir, meta::META_FILENAME) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if rustix::fs::statat(&dir, "objects", rustix::fs::AtFlags::empty()).is_ok() {
                    return Err(OpenError::NoMeta(path.to_path_buf()));
                }
                return Ok(None);
            }
            Err(e) => {
                let what = format!("cannot read {shown}/{}", meta::META_FILENAME);
                return Err(OpenError::io(what, e));
            }
        };
        let checked = meta::Meta::parse(&text)
            .and_then(|m| m.check())
            .map_err(|source| OpenError::Meta {
                path: path.to_path_buf(),
                source,
            })?;
        // As composefs-rs: objects need fs-verity iff meta.json has it.
        let meta_verity = crate::fsverity::ioctl::measure(&meta_file, checked.algorithm)
            .map_err(|e| {
                let what = format!(
                    "cannot measure fs-verity of {shown}/{}",
                    meta::META_FILENAME
                );
                OpenError::io(what, e)
            })?
            .is_some();
        let objects = match open_dir_at(&dir, "objects") {
            Ok(f) => f,
            Err(Errno::NOENT) => {
                // cfsctl makes objects/ when it first stores one.
                mkdir_all_at(&dir, Path::new("objects"), 0o755)
                    .and_then(|()| open_dir_at(&dir, "objects").map_err(io::Error::from))
                    .map_err(|e| OpenError::io(format!("cannot create {shown}/objects"), e))?
            }
            Err(Errno::NOTDIR) => {
                return Err(OpenError::ObjectsNotADirectory(path.to_path_buf()));
            }
            Err(e) => return Err(OpenError::io(format!("cannot open {shown}/objects"), e)),
        };
        Ok(Some(Repository {
            path: path.to_path_buf(),
            dir,
            objects,
            algorithm: checked.algorithm,
            verity: checked.verity && meta_verity,
            writable: checked.writable,
            erofs_version: checked.erofs_version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsverity::Algorithm;

    fn write_meta(dir: &Path, json: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(meta::META_FILENAME), json).unwrap();
    }

    #[test]
    fn absent_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let nothing = tmp.path().join("nothing");
        assert!(Repository::try_open(&nothing).unwrap().is_none());
        let err = format!("{:#}", Repository::open(&nothing).unwrap_err());
        assert!(err.starts_with("no composefs repository at"), "{err}");
        // An empty directory holds no repository either.
        std::fs::create_dir(&nothing).unwrap();
        assert!(Repository::try_open(&nothing).unwrap().is_none());
        let err = format!("{:#}", Repository::open(&nothing).unwrap_err());
        assert!(err.contains("is not a composefs repository"), "{err}");
        assert!(err.contains("composefs init"), "{err}");
    }

    #[test]
    fn present_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("r");
        drop(Repository::init(&p, Algorithm::Sha256).unwrap());
        let r = Repository::try_open(&p).unwrap().expect("a repository");
        assert_eq!(r.algorithm(), Algorithm::Sha256);
        // objects/ may be missing (cfsctl makes it on first use).
        drop(r);
        std::fs::remove_dir_all(p.join("objects")).unwrap();
        assert!(Repository::try_open(&p).unwrap().is_some());
        assert!(p.join("objects").is_dir());
    }

    #[test]
    fn damaged_is_an_error_saying_why() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Repository::try_open(&file),
            Err(OpenError::NotADirectory(_))
        ));

        let legacy = tmp.path().join("legacy");
        std::fs::create_dir_all(legacy.join("objects")).unwrap();
        let err = Repository::try_open(&legacy).unwrap_err();
        assert!(matches!(err, OpenError::NoMeta(_)), "{err}");
        assert!(err.to_string().contains("cfsctl"), "{err}");

        let bad = tmp.path().join("bad-json");
        write_meta(&bad, "{not json");
        assert!(matches!(
            Repository::try_open(&bad),
            Err(OpenError::Meta {
                source: meta::MetaError::Parse(_),
                ..
            })
        ));

        let newer = tmp.path().join("newer");
        write_meta(&newer, r#"{"version":2,"algorithm":"fsverity-sha512-12"}"#);
        let err = Repository::try_open(&newer).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::Meta {
                    source: meta::MetaError::TooNew(2),
                    ..
                }
            ),
            "{err}"
        );
        // Through `open`, the typed error is still there to be found.
        let e = Repository::open(&newer).unwrap_err();
        assert!(e.downcast_ref::<OpenError>().is_some());
        assert!(format!("{e:#}").contains("upgrade composefs"), "{e:#}");

        let objects = tmp.path().join("objects-file");
        write_meta(
            &objects,
            r#"{"version":1,"algorithm":"fsverity-sha512-12"}"#,
        );
        std::fs::write(objects.join("objects"), b"").unwrap();
        assert!(matches!(
            Repository::try_open(&objects),
            Err(OpenError::ObjectsNotADirectory(_))
        ));
    }
}
