//! A directory on disk as a tree: what `mkcomposefs DIR` reads.
//!
//! The walk is descriptor-relative (`openat`/`fstatat` with `O_NOFOLLOW`, no
//! symlink below the root is ever followed), sorts entries by name bytes and
//! keeps permissions, owner, mtime (with nanoseconds), device numbers,
//! symlink targets and xattrs of every namespace (read with
//! `flistxattr`/`fgetxattr` on an open file or directory, and for symlinks,
//! devices, fifos and sockets through an `O_PATH` descriptor's
//! `/proc/self/fd` link, as the C `read_xattrs` does). Non-directories with
//! the same `(st_dev, st_ino)` become one inode (a hardlink); directories
//! never are.
//!
//! Differences from the C `lcfs_build` (`libcomposefs/lcfs-writer.c`), on
//! purpose: the C walk does not detect hardlinks (every name becomes its own
//! inode with nlink 1); this one does unless [`DirOptions::ignore_hardlinks`]
//! asks for the C behaviour (`mkcomposefs DIR` does; `create-image` and
//! `diff` keep hardlinks). Like the C walk, sockets are kept (they are
//! ordinary EROFS inodes), `skip_devices` drops character and
//! block devices (whiteouts included), and `skip_xattrs` together with
//! `user_xattrs_only` is refused as contradictory. The root path itself may
//! be a symlink to a directory (it is opened like any path given on a
//! command line); nothing below it is followed.
//!
//! Regular file contents are handed to a caller-supplied function with the
//! open file, which decides inline vs. external (and may digest or copy the
//! file). [`scan_dir`] also returns the builder and the list of regular
//! files, so a caller can hand placeholders back during the walk, do the
//! heavy work on worker threads, and [`MemTreeBuilder::replace`] the inodes
//! afterwards.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, Dir, Mode, OFlags, Stat as RawStat};
use rustix::io::Errno;

use crate::show::short_path;

use super::{
    FileData, Ino, Inode, Kind, MemTree, MemTreeBuilder, Stat, Timespec, check_name, mode,
};

use crate::tree::{MAX_SYMLINK_TARGET, MAX_XATTR_VALUE};

/// What to read, as `mkcomposefs`'s options say it.
#[derive(Clone, Debug, Default)]
pub struct DirOptions {
    /// `--skip-xattrs`: no extended attributes at all.
    pub skip_xattrs: bool,
    /// `--user-xattrs`: only `user.*` extended attributes.
    pub user_xattrs_only: bool,
    /// `--skip-devices`: leave out character and block devices.
    pub skip_devices: bool,
    /// `--use-epoch`: every mtime is 0.0.
    pub use_epoch: bool,
    /// Give every name its own inode, as the C `lcfs_build` does (it does
    /// not detect hardlinks). Off by default: hardlinks are kept.
    pub ignore_hardlinks: bool,
}

/// The result of [`scan_dir`]: an unfinished tree.
#[derive(Debug)]
pub struct DirScan {
    pub builder: MemTreeBuilder,
    pub root: Ino,
    /// Every regular-file inode (once per inode, not per name), in the
    /// order the content function was called for them.
    pub files: Vec<Ino>,
}

impl DirScan {
    pub fn build(self) -> Result<MemTree> {
        self.builder.build(self.root)
    }
}

/// Read the directory `path` into a tree. `content` is called once per
/// regular-file inode with its path (`path` joined with the names below it),
/// the open file (read-only, at offset 0) and its size; the [`FileData`] it
/// returns must have that size.
pub fn read_dir_tree(
    path: &Path,
    opts: &DirOptions,
    content: &mut dyn FnMut(&Path, &File, u64) -> Result<FileData>,
) -> Result<MemTree> {
    scan_dir(path, opts, content)?.build()
}

/// Directory descriptors the walk keeps open: the current directory and
/// up to this many of its nearest ancestors. Farther ancestors are closed
/// on the way down and reopened through `..` on the way back up (checked
/// against the `(st_dev, st_ino)` they had), so a 10,000-deep tree needs
/// no more descriptors than a flat one.
const MAX_OPEN_DIRS: usize = 16;

/// One directory on the walk's stack (the path from the root to the
/// directory being read).
struct Frame {
    /// Open while the frame is one of the [`MAX_OPEN_DIRS`] deepest;
    /// always open for the top frame.
    fd: Option<OwnedFd>,
    ino: Ino,
    /// `(st_dev, st_ino)`, to recognise the directory when reopened.
    id: (u64, u64),
    /// Subdirectories still to read, in name order, with the
    /// `(st_dev, st_ino)` the listing showed.
    subdirs: std::vec::IntoIter<(Vec<u8>, (u64, u64))>,
    /// Length of [`Walker::path`] for this directory.
    path_len: usize,
}

#[allow(clippy::unnecessary_cast)]
fn raw_mode(st: &RawStat) -> u32 {
    st.st_mode as u32
}

#[allow(clippy::unnecessary_cast)]
fn dev_ino(st: &RawStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

#[allow(clippy::unnecessary_cast)]
fn to_stat(st: &RawStat, opts: &DirOptions, path: &[u8]) -> Result<Stat> {
    let mtime = if opts.use_epoch {
        Timespec::default()
    } else {
        let nsec = st.st_mtime_nsec as u64;
        if nsec >= 1_000_000_000 {
            bail!(
                "{}: mtime nanoseconds {nsec} out of range",
                short_path(path)
            );
        }
        Timespec {
            sec: st.st_mtime as i64,
            nsec: nsec as u32,
        }
    };
    Ok(Stat {
        perms: raw_mode(st) & mode::PERMS,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        mtime,
    })
}

/// Like [`read_dir_tree`], but stops before building: see [`DirScan`].
///
/// The walk is depth first with an explicit stack (no recursion: any depth
/// the filesystem holds is read), every open relative to the parent's
/// descriptor (no path is ever longer than one name, so `PATH_MAX` does not
/// apply), at most [`MAX_OPEN_DIRS`] + 1 directories open at once. Memory
/// beyond the tree itself: the current path and, per directory on it, the
/// names of its subdirectories not yet read.
pub fn scan_dir(
    path: &Path,
    opts: &DirOptions,
    content: &mut dyn FnMut(&Path, &File, u64) -> Result<FileData>,
) -> Result<DirScan> {
    if opts.skip_xattrs && opts.user_xattrs_only {
        bail!("skipping xattrs and keeping only user xattrs contradict each other");
    }
    let mut w = Walker {
        opts,
        content,
        b: MemTreeBuilder::new(),
        files: Vec::new(),
        hardlinks: HashMap::new(),
        path: path.as_os_str().as_bytes().to_vec(),
    };
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening directory {}", short_path(&w.path)))?;
    let top = w.read_directory(fd, None, None)?;
    let root = top.ino;
    let mut stack = vec![top];

    while let Some(top) = stack.last_mut() {
        match top.subdirs.next() {
            Some((name, id)) => {
                let pfd = top.fd.as_ref().expect("the top frame is open");
                let parent = top.ino;
                let len = w.push_name(&name);
                let fd = rustix::fs::openat(
                    pfd,
                    OsStr::from_bytes(&name),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .with_context(|| format!("opening directory {}", short_path(&w.path)))?;
                let mut frame = w.read_directory(fd, Some((parent, &name)), Some(id))?;
                frame.path_len = len;
                if stack.len() > MAX_OPEN_DIRS {
                    let far = stack.len() - 1 - MAX_OPEN_DIRS;
                    stack[far].fd = None;
                }
                stack.push(frame);
            }
            None => {
                let done = stack.pop().expect("a top frame");
                let Some(parent) = stack.last_mut() else {
                    break;
                };
                w.path.truncate(parent.path_len);
                if parent.fd.is_none() {
                    let child = done.fd.as_ref().expect("the top frame is open");
                    let fd = rustix::fs::openat(
                        child,
                        "..",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .with_context(|| format!("reopening directory {}", short_path(&w.path)))?;
                    let st = rustix::fs::fstat(&fd)
                        .with_context(|| format!("stat {}", short_path(&w.path)))?;
                    if dev_ino(&st) != parent.id {
                        bail!("{} was moved while it was being read", short_path(&w.path));
                    }
                    parent.fd = Some(fd);
                }
            }
        }
    }

    Ok(DirScan {
        builder: w.b,
        root,
        files: w.files,
    })
}

/// The state of one [`scan_dir`] walk.
struct Walker<'a> {
    opts: &'a DirOptions,
    content: &'a mut dyn FnMut(&Path, &File, u64) -> Result<FileData>,
    b: MemTreeBuilder,
    files: Vec<Ino>,
    hardlinks: HashMap<(u64, u64), Ino>,
    /// The path of what is being read: the root path as given, then the
    /// names below it (for messages and the content function).
    path: Vec<u8>,
}

impl Walker<'_> {
    /// Append `/name` to the path; returns the new length.
    fn push_name(&mut self, name: &[u8]) -> usize {
        if !self.path.ends_with(b"/") {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name);
        self.path.len()
    }

    /// Read the directory open as `fd` (whose path is [`Self::path`]): its
    /// inode, linked as `name` into `parent`, and every non-directory in
    /// it; returns its frame with the subdirectories still to read.
    fn read_directory(
        &mut self,
        fd: OwnedFd,
        parent: Option<(Ino, &[u8])>,
        expected: Option<(u64, u64)>,
    ) -> Result<Frame> {
        let st = rustix::fs::fstat(&fd).with_context(|| format!("stat {}", self.shown()))?;
        if expected.is_some_and(|id| dev_ino(&st) != id) {
            bail!("{} was replaced while it was being read", self.shown());
        }
        let xattrs = read_xattrs(XattrSource::Fd(fd.as_fd()), self.opts, &self.path)?;
        let ino = self.b.add(Inode {
            stat: to_stat(&st, self.opts, &self.path)?,
            kind: Kind::Directory,
            xattrs,
        });
        if let Some((parent, name)) = parent {
            self.b
                .link(parent, name, ino)
                .with_context(|| format!("adding {}", self.shown()))?;
        }

        // List it, sorted by name bytes.
        let mut names: Vec<Vec<u8>> = Vec::new();
        let dir =
            Dir::read_from(&fd).with_context(|| format!("reading directory {}", self.shown()))?;
        for entry in dir {
            let entry = entry.with_context(|| format!("reading directory {}", self.shown()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(name.to_vec());
        }
        names.sort_unstable();

        let dir_len = self.path.len();
        let mut subdirs = Vec::new();
        for name in names {
            self.path.truncate(dir_len);
            self.push_name(&name);
            check_name(&name).with_context(|| format!("{} cannot be stored", self.shown()))?;
            let cst = rustix::fs::statat(&fd, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| format!("stat {}", self.shown()))?;
            let fmt = raw_mode(&cst) & mode::S_IFMT;
            if fmt == mode::S_IFDIR {
                subdirs.push((name, dev_ino(&cst)));
                continue;
            }
            if self.opts.skip_devices && (fmt == mode::S_IFCHR || fmt == mode::S_IFBLK) {
                continue;
            }
            #[allow(clippy::unnecessary_cast)]
            let multi = !self.opts.ignore_hardlinks && cst.st_nlink as u64 > 1;
            if multi && let Some(&existing) = self.hardlinks.get(&dev_ino(&cst)) {
                self.b
                    .link(ino, &name, existing)
                    .with_context(|| format!("adding {}", self.shown()))?;
                continue;
            }
            let child = self.read_entry(&fd, &name, &cst)?;
            self.b
                .link(ino, &name, child)
                .with_context(|| format!("adding {}", self.shown()))?;
            if multi {
                self.hardlinks.insert(dev_ino(&cst), child);
            }
        }
        self.path.truncate(dir_len);
        Ok(Frame {
            fd: Some(fd),
            ino,
            id: dev_ino(&st),
            subdirs: subdirs.into_iter(),
            path_len: dir_len,
        })
    }

    /// [`Self::path`] for a message.
    fn shown(&self) -> String {
        short_path(&self.path)
    }

    /// Read one non-directory entry (at [`Self::path`]) into a new inode.
    fn read_entry(&mut self, dirfd: &OwnedFd, name: &[u8], st: &RawStat) -> Result<Ino> {
        let opts = self.opts;
        let name_os = OsStr::from_bytes(name);
        let fmt = raw_mode(st) & mode::S_IFMT;
        let stat = to_stat(st, opts, &self.path)?;
        #[allow(clippy::unnecessary_cast)]
        let rdev = st.st_rdev as u64;

        if fmt == mode::S_IFREG {
            let fd = rustix::fs::openat(
                dirfd,
                name_os,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening {}", self.shown()))?;
            let fst = rustix::fs::fstat(&fd).with_context(|| format!("stat {}", self.shown()))?;
            if dev_ino(&fst) != dev_ino(st) || raw_mode(&fst) & mode::S_IFMT != mode::S_IFREG {
                bail!("{} was replaced while it was being read", self.shown());
            }
            let xattrs = read_xattrs(XattrSource::Fd(fd.as_fd()), opts, &self.path)?;
            #[allow(clippy::unnecessary_cast)]
            let size = fst.st_size as u64;
            let file = File::from(fd);
            let data = (self.content)(Path::new(OsStr::from_bytes(&self.path)), &file, size)
                .with_context(|| format!("reading {}", self.shown()))?;
            if data.size() != size {
                bail!(
                    "{}: content of {} bytes but the file has {size} (did it change?)",
                    self.shown(),
                    data.size()
                );
            }
            let ino = self.b.add(Inode {
                stat,
                kind: Kind::Regular(data),
                xattrs,
            });
            self.files.push(ino);
            return Ok(ino);
        }

        let kind = match fmt {
            mode::S_IFLNK => {
                let target = rustix::fs::readlinkat(dirfd, name_os, Vec::new())
                    .with_context(|| format!("reading symlink {}", self.shown()))?
                    .into_bytes();
                if target.is_empty() {
                    bail!("{}: symlink with an empty target", self.shown());
                }
                if target.len() > MAX_SYMLINK_TARGET {
                    bail!(
                        "{}: symlink target of {} bytes is longer than {MAX_SYMLINK_TARGET}",
                        self.shown(),
                        target.len()
                    );
                }
                Kind::Symlink(target)
            }
            mode::S_IFCHR => Kind::CharDevice { rdev },
            mode::S_IFBLK => Kind::BlockDevice { rdev },
            mode::S_IFIFO => Kind::Fifo,
            mode::S_IFSOCK => Kind::Socket,
            other => bail!("{}: unknown file type {other:o}", self.shown()),
        };
        let xattrs = if opts.skip_xattrs {
            Vec::new()
        } else {
            let fd = rustix::fs::openat(
                dirfd,
                name_os,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening {}", self.shown()))?;
            let fst = rustix::fs::fstat(&fd).with_context(|| format!("stat {}", self.shown()))?;
            if dev_ino(&fst) != dev_ino(st) {
                bail!("{} was replaced while it was being read", self.shown());
            }
            read_xattrs(XattrSource::PathFd(fd.as_fd()), opts, &self.path)?
        };
        Ok(self.b.add(Inode { stat, kind, xattrs }))
    }
}

enum XattrSource<'a> {
    /// A descriptor open for reading: `flistxattr`/`fgetxattr`.
    Fd(BorrowedFd<'a>),
    /// An `O_PATH` descriptor: through its `/proc/self/fd` link.
    PathFd(BorrowedFd<'a>),
}

/// Retry a size-query-then-read pair a few times if the value grows in
/// between (ERANGE).
fn read_sized(
    mut query: impl FnMut() -> rustix::io::Result<usize>,
    mut read: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    for _ in 0..8 {
        let n = query()?;
        // The kernel caps lists and values at 64 KiB; never trust more.
        let mut buf = vec![0u8; n.min(1 << 16)];
        if n == 0 {
            return Ok(buf);
        }
        match read(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

fn read_xattrs(
    src: XattrSource,
    opts: &DirOptions,
    path: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if opts.skip_xattrs {
        return Ok(Vec::new());
    }
    let shown = || short_path(path);
    let proc_path = match src {
        XattrSource::PathFd(fd) => {
            use std::os::fd::AsRawFd;
            format!("/proc/self/fd/{}", fd.as_raw_fd())
        }
        XattrSource::Fd(_) => String::new(),
    };
    let list = match src {
        XattrSource::Fd(fd) => read_sized(
            || rustix::fs::flistxattr_query(fd),
            |buf| rustix::fs::flistxattr(fd, buf),
        ),
        XattrSource::PathFd(_) => read_sized(
            || rustix::fs::listxattr_query(proc_path.as_str()),
            |buf| rustix::fs::listxattr(proc_path.as_str(), buf),
        ),
    };
    let list = match list {
        Ok(l) => l,
        // A filesystem (or file type) without xattr support has none.
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {}", shown())),
    };
    let mut out = Vec::new();
    for name in list.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        if opts.user_xattrs_only && !name.starts_with(b"user.") {
            continue;
        }
        let name_os = OsStr::from_bytes(name);
        let value = match src {
            XattrSource::Fd(fd) => read_sized(
                || rustix::fs::fgetxattr_query(fd, name_os),
                |buf| rustix::fs::fgetxattr(fd, name_os, buf),
            ),
            XattrSource::PathFd(_) => read_sized(
                || rustix::fs::getxattr_query(proc_path.as_str(), name_os),
                |buf| rustix::fs::getxattr(proc_path.as_str(), name_os, buf),
            ),
        };
        let value = match value {
            Ok(v) => v,
            // Removed since it was listed.
            Err(Errno::NODATA) => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading xattr {} of {}",
                        String::from_utf8_lossy(name),
                        shown()
                    )
                });
            }
        };
        if value.len() > MAX_XATTR_VALUE {
            bail!(
                "{}: xattr {} has {} bytes, more than a composefs image can hold ({MAX_XATTR_VALUE})",
                shown(),
                String::from_utf8_lossy(name),
                value.len()
            );
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}
