//! Objects: immutable files under `objects/XX/<rest>`, named by fs-verity digest.
//!
//! An object is written to an unnamed `O_TMPFILE` in `objects/` while its
//! digest is computed, fs-verity is enabled on it where the filesystem
//! supports it, and only then is it linked into place. An object that already
//! exists wins (deduplication); nothing is fsynced per object — callers run
//! [`Repository::sync`] once before publishing a ref.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::Repository;
use crate::fsverity::{self, Algorithm, Hasher, ObjectId};
use crate::util::{link_tmpfile, proc_self_fd};

const WRITE_BUF: usize = 128 * 1024;

/// Where the temporary file of an [`ObjectWriter`] lives.
enum Tmp {
    /// `O_TMPFILE`: no name until linked.
    Anonymous,
    /// Fallback for filesystems without `O_TMPFILE`: a dot-name in `objects/`.
    Named(String),
}

/// Removes a named temporary file when dropped.
struct TmpGuard<'r> {
    objects: &'r File,
    tmp: Tmp,
}

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        if let Tmp::Named(name) = &self.tmp {
            let _ = rustix::fs::unlinkat(self.objects, name.as_str(), AtFlags::empty());
        }
    }
}

/// Streams one new object into the repository: `write` the content, then
/// [`ObjectWriter::finish`]. Dropping it unfinished leaves nothing behind.
pub struct ObjectWriter<'r> {
    repo: &'r Repository,
    out: BufWriter<File>,
    tmp: TmpGuard<'r>,
    hasher: Hasher,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl<'r> ObjectWriter<'r> {
    pub(super) fn new(repo: &'r Repository) -> Result<Self> {
        repo.ensure_writable()?;
        let (file, tmp) = create_tmp(repo.objects_dir()).with_context(|| {
            format!(
                "cannot create a temporary object in {}/objects",
                repo.path().display()
            )
        })?;
        Ok(ObjectWriter {
            repo,
            out: BufWriter::with_capacity(WRITE_BUF, file),
            tmp: TmpGuard {
                objects: repo.objects_dir(),
                tmp,
            },
            hasher: Hasher::new(repo.algorithm()),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Link the object into place. Returns its id and whether it was new.
    pub fn finish(self) -> Result<(ObjectId, bool)> {
        let ObjectWriter {
            repo,
            out,
            tmp,
            hasher,
        } = self;
        let id = hasher.finish();
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write object")?;
        let file = if repo.verity() {
            seal_with_verity(file, &id)?
        } else {
            file
        };
        let name = id.object_path();
        let linked = match &tmp.tmp {
            Tmp::Anonymous => link_retry(
                || link_tmpfile(&file, repo.objects_dir(), OsStr::new(&name)),
                repo,
                &id,
            ),
            Tmp::Named(tmp) => link_retry(
                || {
                    rustix::fs::linkat(
                        repo.objects_dir(),
                        tmp.as_str(),
                        repo.objects_dir(),
                        name.as_str(),
                        AtFlags::empty(),
                    )
                },
                repo,
                &id,
            ),
        };
        linked.map(|new| (id, new))
    }
}

impl Write for ObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)?;
        self.hasher.update(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn create_tmp(objects: &File) -> io::Result<(File, Tmp)> {
    match rustix::fs::openat(
        objects,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => return Ok((File::from(fd), Tmp::Anonymous)),
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    loop {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".tmp-{}-{n}", std::process::id());
        match rustix::fs::openat(
            objects,
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => return Ok((File::from(fd), Tmp::Named(name))),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Link, creating the fan-out directory if a foreign repository lacks it.
/// `Ok(false)` when the object already existed.
fn link_retry(
    link: impl Fn() -> rustix::io::Result<()>,
    repo: &Repository,
    id: &ObjectId,
) -> Result<bool> {
    let ctx = || {
        format!(
            "cannot store object {id} in {}/objects",
            repo.path().display()
        )
    };
    match link() {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(Errno::NOENT) => {
            let sub = &id.object_path()[..2];
            match rustix::fs::mkdirat(repo.objects_dir(), sub, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e).with_context(ctx),
            }
            match link() {
                Ok(()) => Ok(true),
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(e).with_context(ctx),
            }
        }
        Err(e) => Err(e).with_context(ctx),
    }
}

/// Reopen read-only (fs-verity refuses files with writers), enable verity and
/// check the kernel's measurement against our userspace digest.
fn seal_with_verity(file: File, id: &ObjectId) -> Result<File> {
    let ro =
        File::open(proc_self_fd(&file)).with_context(|| format!("cannot reopen object {id}"))?;
    drop(file);
    fsverity::ioctl::enable(&ro, id.algorithm())
        .with_context(|| format!("cannot enable fs-verity on object {id}"))?;
    match fsverity::ioctl::measure(&ro, id.algorithm())
        .with_context(|| format!("cannot measure object {id}"))?
    {
        Some(m) if m == *id => Ok(ro),
        Some(m) => bail!("kernel measured object {id} as {m}: userspace digest disagrees"),
        None => bail!("fs-verity was enabled on object {id} but the kernel reports none"),
    }
}

/// Does the filesystem under `objects` support fs-verity? Tried on a scratch file.
pub(super) fn probe_verity(objects: &File, alg: Algorithm) -> bool {
    let Ok((mut f, tmp)) = create_tmp(objects) else {
        return false;
    };
    let _guard = TmpGuard { objects, tmp };
    if f.write_all(b"composefs fs-verity probe").is_err() {
        return false;
    }
    let Ok(ro) = File::open(proc_self_fd(&f)) else {
        return false;
    };
    drop(f);
    fsverity::ioctl::enable(&ro, alg).is_ok()
}

impl Repository {
    /// Start writing a new object.
    pub fn object_writer(&self) -> Result<ObjectWriter<'_>> {
        ObjectWriter::new(self)
    }

    /// Store `data` as an object (skipping the write if it already exists).
    pub fn store_bytes(&self, data: &[u8]) -> Result<ObjectId> {
        let id = fsverity::digest_bytes(self.algorithm, data);
        if self.has_object(&id)? {
            return Ok(id);
        }
        let mut w = self.object_writer()?;
        w.write_all(data)
            .with_context(|| format!("cannot write object {id}"))?;
        Ok(w.finish()?.0)
    }

    /// Store everything `r` yields as one object.
    pub fn store_reader(&self, mut r: impl Read) -> Result<(ObjectId, u64)> {
        let mut w = self.object_writer()?;
        io::copy(&mut r, &mut w).context("cannot write object")?;
        let len = w.len();
        Ok((w.finish()?.0, len))
    }

    pub fn has_object(&self, id: &ObjectId) -> Result<bool> {
        match rustix::fs::statat(
            self.objects_dir(),
            id.object_path(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot look up object {id}")),
        }
    }

    /// Open an object for reading. With fs-verity the kernel's measurement
    /// must equal the id (cheap: one ioctl).
    pub fn open_object(&self, id: &ObjectId) -> Result<File> {
        let fd = rustix::fs::openat(
            self.objects_dir(),
            id.object_path(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(io::Error::from)
        .with_context(|| {
            format!(
                "cannot open object {id} in {}/objects",
                self.path().display()
            )
        })?;
        let f = File::from(fd);
        if self.verity() {
            match fsverity::ioctl::measure(&f, id.algorithm())
                .with_context(|| format!("cannot measure object {id}"))?
            {
                Some(m) if m == *id => {}
                Some(m) => bail!("object {id} is corrupt: fs-verity measures it as {m}"),
                None => bail!("object {id} has no fs-verity, but the repository requires it"),
            }
        }
        Ok(f)
    }

    /// Path of an object (for messages and for tools that want to read it).
    pub fn object_path(&self, id: &ObjectId) -> std::path::PathBuf {
        self.path().join("objects").join(id.object_path())
    }
}
