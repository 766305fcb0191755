//! Objects: immutable files under `objects/XX/<rest>`, named by fs-verity digest.
//!
//! An object is written to an unnamed `O_TMPFILE` (in `objects/XX/` when its
//! digest is known up front, else in `objects/`) while its digest is
//! computed; fs-verity is enabled on it where the filesystem supports it, and
//! only then is it linked into place. An object that already exists wins
//! (deduplication), and a crash never leaves a partial file under an
//! object's name. Nothing is fsynced per object — callers run
//! [`Repository::sync`] once before publishing a ref.
//!
//! Filesystems without `O_TMPFILE` get a named temporary file
//! (`.tmp-<pid>-<n>`), renamed into place with `RENAME_NOREPLACE`; `gc`
//! removes any a crash left behind.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::Repository;
use crate::fsverity::{self, Hasher, ObjectId};

const WRITE_BUF: usize = 128 * 1024;

/// Prefix of named temporary files in `objects/`.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// A temporary object file: unnamed, or named and removed when dropped
/// unless it was moved into place.
struct TmpFile<'r> {
    objects: &'r File,
    /// `Some(path relative to objects/)` for a named temporary file.
    name: Option<String>,
    placed: bool,
}

impl Drop for TmpFile<'_> {
    fn drop(&mut self) {
        if let (Some(name), false) = (&self.name, self.placed) {
            let _ = rustix::fs::unlinkat(self.objects, name.as_str(), AtFlags::empty());
        }
    }
}

/// Streams one new object into the repository: `write` the content, then
/// [`ObjectWriter::finish`]. Dropping it unfinished leaves nothing behind.
///
/// Hole-aware: 4 KiB blocks (at 4 KiB offsets) that are all zeros are not
/// written but skipped over, and [`ObjectWriter::write_zeros`] skips a
/// whole run without any data, so a mostly-zero file costs disk only for
/// its data (the holes read back as zeros, and the digest is over the
/// bytes, so nothing else can tell). Memory: one [`WRITE_BUF`] buffer.
pub struct ObjectWriter<'r> {
    repo: &'r Repository,
    file: File,
    /// Bytes not yet written; they start at file offset `flushed`.
    buf: Vec<u8>,
    /// Bytes written or skipped so far (the offset `buf` starts at).
    flushed: u64,
    tmp: TmpFile<'r>,
    hasher: Hasher,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The hole granularity: blocks of this size, at multiples of it, that
/// are all zeros are not written.
const HOLE_BLOCK: usize = 4096;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

impl<'r> ObjectWriter<'r> {
    pub(super) fn new(repo: &'r Repository) -> Result<Self> {
        repo.ensure_writable()?;
        let (file, tmp) = create_tmp(repo.objects_dir(), "").with_context(|| {
            format!(
                "cannot create a temporary object in {}/objects",
                repo.path().display()
            )
        })?;
        Ok(ObjectWriter {
            repo,
            file,
            buf: Vec::with_capacity(WRITE_BUF),
            flushed: 0,
            tmp,
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

    /// Append `n` zero bytes without writing them (a hole where the file
    /// system has holes).
    pub fn write_zeros(&mut self, mut n: u64) -> io::Result<()> {
        // Through the buffer up to a block boundary, then skip.
        let to_boundary = (HOLE_BLOCK - self.buf.len() % HOLE_BLOCK) % HOLE_BLOCK;
        let head = n.min(to_boundary as u64) as usize;
        self.write_all(&ZEROS[..head])?;
        n -= head as u64;
        if n == 0 {
            return Ok(());
        }
        self.flush_buf()?;
        let whole = n / HOLE_BLOCK as u64 * HOLE_BLOCK as u64;
        self.hasher.update_zeros(whole);
        self.flushed += whole;
        self.write_all(&ZEROS[..(n - whole) as usize])
    }

    /// Write out `buf` at `flushed`, leaving whole zero blocks as holes
    /// (the file is new: what is never written reads as zeros).
    fn flush_buf(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let n = self.buf.len();
        let zero_block = |at: usize| at + HOLE_BLOCK <= n && self.buf[at..at + HOLE_BLOCK] == ZEROS;
        let mut off = 0;
        while off < n {
            if zero_block(off) {
                off += HOLE_BLOCK;
                continue;
            }
            // A run of data up to the next zero block (or the end).
            let mut end = (off + HOLE_BLOCK).min(n);
            while end < n && !zero_block(end) {
                end = (end + HOLE_BLOCK).min(n);
            }
            self.file
                .write_all_at(&self.buf[off..end], self.flushed + off as u64)?;
            off = end;
        }
        self.flushed += n as u64;
        self.buf.clear();
        Ok(())
    }

    /// Move the object into place. Returns its id and whether it was new.
    pub fn finish(self) -> Result<(ObjectId, bool)> {
        let (repo, file, mut tmp, id) = self.complete()?;
        let new = seal_and_place(repo, file, &mut tmp, &id)?;
        Ok((id, new))
    }

    /// [`Self::finish`] for content that must digest to `expected` (an
    /// object fetched by its name): anything else is refused before it is
    /// placed, and nothing is left behind (the error names only the
    /// digest found: callers name the object). Returns whether it was new.
    pub fn finish_expecting(self, expected: &ObjectId) -> Result<bool> {
        let (repo, file, mut tmp, id) = self.complete()?;
        if id != *expected {
            bail!("corrupt: the content digests to {id}");
        }
        seal_and_place(repo, file, &mut tmp, &id)
    }

    /// Everything written out, the file at its length; the digest.
    #[allow(clippy::type_complexity)]
    fn complete(mut self) -> Result<(&'r Repository, File, TmpFile<'r>, ObjectId)> {
        self.flush_buf().context("cannot write object")?;
        // A trailing hole: the size says where the file ends.
        let len = self.hasher.len();
        if self.file.metadata().context("cannot stat object")?.len() != len {
            self.file.set_len(len).context("cannot write object")?;
        }
        let ObjectWriter {
            repo,
            file,
            tmp,
            hasher,
            ..
        } = self;
        Ok((repo, file, tmp, hasher.finish()))
    }
}

impl Write for ObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        while !data.is_empty() {
            let take = (WRITE_BUF - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == WRITE_BUF {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// A temporary file in `objects/<dir>` (`dir` empty or a fan-out directory).
fn create_tmp<'r>(objects: &'r File, dir: &str) -> io::Result<(File, TmpFile<'r>)> {
    let at = if dir.is_empty() { "." } else { dir };
    let mut made_dir = false;
    loop {
        match rustix::fs::openat(
            objects,
            at,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => {
                return Ok((
                    File::from(fd),
                    TmpFile {
                        objects,
                        name: None,
                        placed: false,
                    },
                ));
            }
            // A repository made elsewhere may lack the fan-out directory.
            Err(Errno::NOENT) if !dir.is_empty() && !made_dir => {
                match rustix::fs::mkdirat(objects, dir, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => made_dir = true,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => break,
            Err(e) => return Err(e.into()),
        }
    }
    loop {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{TMP_PREFIX}{}-{n}", std::process::id());
        match rustix::fs::openat(
            objects,
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => {
                return Ok((
                    File::from(fd),
                    TmpFile {
                        objects,
                        name: Some(name),
                        placed: false,
                    },
                ));
            }
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Enable fs-verity where the repository has it, then link or rename the
/// temporary file to the object's name. `Ok(false)` if it already existed.
fn seal_and_place(
    repo: &Repository,
    file: File,
    tmp: &mut TmpFile<'_>,
    id: &ObjectId,
) -> Result<bool> {
    let file = if repo.verity() {
        // fs-verity refuses files with writers: reopen read-only first (an
        // unnamed file vanishes with its last descriptor).
        let ro = File::open(crate::fsutil::proc_self_fd(&file))
            .with_context(|| format!("cannot reopen object {id}"))?;
        drop(file);
        seal_with_verity(&ro, id)?;
        ro
    } else {
        file
    };
    let new = place(repo, &file, tmp, id)?;
    tmp.placed = new;
    Ok(new)
}

/// Give the temporary file the object's name unless that exists.
fn place(repo: &Repository, file: &File, tmp: &TmpFile<'_>, id: &ObjectId) -> Result<bool> {
    let ctx = || {
        format!(
            "cannot store object {id} in {}/objects",
            repo.path().display()
        )
    };
    let name = id.object_path();
    let objects = repo.objects_dir();
    let attempt = || match &tmp.name {
        None => rustix::fs::linkat(
            CWD,
            crate::fsutil::proc_self_fd(file).as_str(),
            objects,
            name.as_str(),
            AtFlags::SYMLINK_FOLLOW,
        ),
        Some(tmp_name) => match rustix::fs::renameat_with(
            objects,
            tmp_name.as_str(),
            objects,
            name.as_str(),
            RenameFlags::NOREPLACE,
        ) {
            // Filesystems without RENAME_NOREPLACE: link (fails if present), then unlink.
            Err(Errno::INVAL | Errno::NOSYS) => rustix::fs::linkat(
                objects,
                tmp_name.as_str(),
                objects,
                name.as_str(),
                AtFlags::empty(),
            )
            .map(|()| {
                let _ = rustix::fs::unlinkat(objects, tmp_name.as_str(), AtFlags::empty());
            }),
            other => other,
        },
    };
    match attempt() {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(Errno::NOENT) => {
            // A repository made elsewhere may lack the fan-out directory.
            match rustix::fs::mkdirat(objects, &name[..2], Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e).with_context(ctx),
            }
            match attempt() {
                Ok(()) => Ok(true),
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(e).with_context(ctx),
            }
        }
        Err(e) => Err(e).with_context(ctx),
    }
}

/// Enable fs-verity and check the kernel's measurement against our digest.
fn seal_with_verity(ro: &File, id: &ObjectId) -> Result<()> {
    fsverity::ioctl::enable(ro, id.algorithm())
        .with_context(|| format!("cannot enable fs-verity on object {id}"))?;
    match fsverity::ioctl::measure(ro, id.algorithm())
        .with_context(|| format!("cannot measure object {id}"))?
    {
        Some(m) if m == *id => Ok(()),
        Some(m) => bail!("kernel measured object {id} as {m}: userspace digest disagrees"),
        None => bail!("fs-verity was enabled on object {id} but the kernel reports none"),
    }
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
        self.store_known(&id, data)?;
        Ok(id)
    }

    /// Write `data` whose digest is already known to be `id`: the temporary
    /// file is made in the object's own fan-out directory.
    fn store_known(&self, id: &ObjectId, data: &[u8]) -> Result<bool> {
        self.ensure_writable()?;
        let (mut file, mut tmp) = create_tmp(self.objects_dir(), &id.object_path()[..2])
            .with_context(|| {
                format!(
                    "cannot create a temporary object in {}/objects",
                    self.path().display()
                )
            })?;
        file.write_all(data)
            .with_context(|| format!("cannot write object {id}"))?;
        seal_and_place(self, file, &mut tmp, id)
    }

    /// Store a file's content as an object; small files are digested in
    /// memory first and not written at all when the object exists.
    pub fn store_file(&self, f: File) -> Result<(ObjectId, u64)> {
        self.store_file_with(f, &mut |_| {})
    }

    /// [`Self::store_file`], calling `progress` with the number of bytes
    /// of each piece done. A large file is read from its start with its
    /// holes skipped ([`crate::fsutil::for_each_extent`]) and written with
    /// holes where it has zeros ([`ObjectWriter`]): memory is one buffer
    /// whatever the size, and a mostly-hole file is neither read nor
    /// written in full.
    pub fn store_file_with(
        &self,
        mut f: File,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(ObjectId, u64)> {
        const IN_MEMORY: u64 = 4 << 20;
        let len = f.metadata().context("cannot stat file")?.len();
        if len <= IN_MEMORY {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).context("cannot read file")?;
            let id = self.store_bytes(&buf)?;
            progress(buf.len() as u64);
            return Ok((id, buf.len() as u64));
        }
        let mut w = self.object_writer()?;
        let mut buf = vec![0u8; WRITE_BUF];
        crate::fsutil::for_each_extent(&f, &mut buf, |e| {
            match e {
                crate::fsutil::Extent::Data(d) => {
                    w.write_all(d)?;
                    progress(d.len() as u64);
                }
                crate::fsutil::Extent::Zeros(n) => {
                    w.write_zeros(n)?;
                    progress(n);
                }
            }
            Ok(())
        })
        .context("cannot copy file into an object")?;
        let len = w.len();
        Ok((w.finish()?.0, len))
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
    /// must equal the id (cheap: one ioctl). A missing object is an error;
    /// see [`Self::try_open_object`] where it is an answer.
    pub fn open_object(&self, id: &ObjectId) -> Result<File> {
        match self.try_open_object(id)? {
            Some(f) => Ok(f),
            None => Err(self.open_failed(id, Errno::NOENT)),
        }
    }

    /// [`Self::open_object`], with `None` for an object that is not there
    /// (any other failure, a damaged object among them, is an error).
    pub fn try_open_object(&self, id: &ObjectId) -> Result<Option<File>> {
        let fd = match rustix::fs::openat(
            self.objects_dir(),
            id.object_path(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.open_failed(id, e)),
        };
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
        Ok(Some(f))
    }

    fn open_failed(&self, id: &ObjectId, e: Errno) -> anyhow::Error {
        anyhow::Error::new(io::Error::from(e)).context(format!(
            "cannot open object {id} in {}/objects",
            self.path().display()
        ))
    }

    /// Path of an object (for messages and for tools that want to read it).
    pub fn object_path(&self, id: &ObjectId) -> std::path::PathBuf {
        self.path().join("objects").join(id.object_path())
    }
}
