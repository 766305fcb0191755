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
//! asks for the C behaviour. Like the C walk, sockets are kept (they are
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, Dir, Mode, OFlags, Stat as RawStat};
use rustix::io::Errno;

use super::{
    FileData, Ino, Inode, Kind, MemTree, MemTreeBuilder, Stat, Timespec, check_name, mode,
};

/// Longest symlink target accepted (the kernel's `PATH_MAX` less the NUL).
const MAX_SYMLINK_TARGET: usize = 4095;
/// Largest xattr value a composefs image can hold (the C library's limit).
const MAX_XATTR_VALUE: usize = 65535;

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
    /// Every regular-file inode (once per inode, not per name) with the
    /// path the content function saw, in the order it was called.
    pub files: Vec<(Ino, PathBuf)>,
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

struct Pending {
    /// `None` for the root.
    parent: Option<(Arc<OwnedFd>, Ino)>,
    name: Vec<u8>,
    path: PathBuf,
    /// `(st_dev, st_ino)` seen in the parent's listing.
    id: Option<(u64, u64)>,
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
fn to_stat(st: &RawStat, opts: &DirOptions, path: &Path) -> Result<Stat> {
    let mtime = if opts.use_epoch {
        Timespec::default()
    } else {
        let nsec = st.st_mtime_nsec as u64;
        if nsec >= 1_000_000_000 {
            bail!("{}: mtime nanoseconds {nsec} out of range", path.display());
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
pub fn scan_dir(
    path: &Path,
    opts: &DirOptions,
    content: &mut dyn FnMut(&Path, &File, u64) -> Result<FileData>,
) -> Result<DirScan> {
    if opts.skip_xattrs && opts.user_xattrs_only {
        bail!("skipping xattrs and keeping only user xattrs contradict each other");
    }
    let mut b = MemTreeBuilder::new();
    let mut files = Vec::new();
    let mut hardlinks: HashMap<(u64, u64), Ino> = HashMap::new();
    let mut root = None;
    let mut stack = vec![Pending {
        parent: None,
        name: Vec::new(),
        path: path.to_path_buf(),
        id: None,
    }];

    while let Some(p) = stack.pop() {
        let shown = p.path.display();
        // Open the directory itself, and make sure it is the one listed.
        let fd: OwnedFd = match &p.parent {
            None => rustix::fs::openat(
                rustix::fs::CWD,
                &p.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            Some((pfd, _)) => rustix::fs::openat(
                pfd,
                OsStr::from_bytes(&p.name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ),
        }
        .with_context(|| format!("opening directory {shown}"))?;
        let st = rustix::fs::fstat(&fd).with_context(|| format!("stat {shown}"))?;
        if p.id.is_some_and(|id| dev_ino(&st) != id) {
            bail!("{shown} was replaced while it was being read");
        }
        let xattrs = read_xattrs(XattrSource::Fd(fd.as_fd()), opts, &p.path)?;
        let ino = b.add(Inode {
            stat: to_stat(&st, opts, &p.path)?,
            kind: Kind::Directory,
            xattrs,
        });
        match &p.parent {
            None => root = Some(ino),
            Some((_, parent)) => b
                .link(*parent, &p.name, ino)
                .with_context(|| format!("adding {shown}"))?,
        }

        // List it, sorted by name bytes.
        let mut names: Vec<Vec<u8>> = Vec::new();
        let dir = Dir::read_from(&fd).with_context(|| format!("reading directory {shown}"))?;
        for entry in dir {
            let entry = entry.with_context(|| format!("reading directory {shown}"))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(name.to_vec());
        }
        names.sort_unstable();

        let fd = Arc::new(fd);
        let mut subdirs = Vec::new();
        for name in names {
            let cpath = p.path.join(OsStr::from_bytes(&name));
            let shown = cpath.display();
            check_name(&name).with_context(|| format!("{shown} cannot be stored"))?;
            let cst = rustix::fs::statat(&*fd, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| format!("stat {shown}"))?;
            let fmt = raw_mode(&cst) & mode::S_IFMT;
            if fmt == mode::S_IFDIR {
                subdirs.push(Pending {
                    parent: Some((fd.clone(), ino)),
                    name,
                    path: cpath,
                    id: Some(dev_ino(&cst)),
                });
                continue;
            }
            if opts.skip_devices && (fmt == mode::S_IFCHR || fmt == mode::S_IFBLK) {
                continue;
            }
            #[allow(clippy::unnecessary_cast)]
            let multi = !opts.ignore_hardlinks && cst.st_nlink as u64 > 1;
            if multi && let Some(&existing) = hardlinks.get(&dev_ino(&cst)) {
                b.link(ino, &name, existing)
                    .with_context(|| format!("adding {shown}"))?;
                continue;
            }
            let child = read_entry(&fd, &name, &cpath, &cst, opts, content, &mut b, &mut files)?;
            b.link(ino, &name, child)
                .with_context(|| format!("adding {shown}"))?;
            if multi {
                hardlinks.insert(dev_ino(&cst), child);
            }
        }
        // Pushed in reverse so they are read in name order.
        stack.extend(subdirs.into_iter().rev());
    }

    Ok(DirScan {
        builder: b,
        root: root.context("no root directory")?,
        files,
    })
}

/// Read one non-directory entry into a new inode.
#[allow(clippy::too_many_arguments)]
fn read_entry(
    dirfd: &OwnedFd,
    name: &[u8],
    path: &Path,
    st: &RawStat,
    opts: &DirOptions,
    content: &mut dyn FnMut(&Path, &File, u64) -> Result<FileData>,
    b: &mut MemTreeBuilder,
    files: &mut Vec<(Ino, PathBuf)>,
) -> Result<Ino> {
    let shown = path.display();
    let name_os = OsStr::from_bytes(name);
    let fmt = raw_mode(st) & mode::S_IFMT;
    let stat = to_stat(st, opts, path)?;
    #[allow(clippy::unnecessary_cast)]
    let rdev = st.st_rdev as u64;

    if fmt == mode::S_IFREG {
        let fd = rustix::fs::openat(
            dirfd,
            name_os,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {shown}"))?;
        let fst = rustix::fs::fstat(&fd).with_context(|| format!("stat {shown}"))?;
        if dev_ino(&fst) != dev_ino(st) || raw_mode(&fst) & mode::S_IFMT != mode::S_IFREG {
            bail!("{shown} was replaced while it was being read");
        }
        let xattrs = read_xattrs(XattrSource::Fd(fd.as_fd()), opts, path)?;
        #[allow(clippy::unnecessary_cast)]
        let size = fst.st_size as u64;
        let file = File::from(fd);
        let data = content(path, &file, size).with_context(|| format!("reading {shown}"))?;
        if data.size() != size {
            bail!(
                "{shown}: content of {} bytes but the file has {size} (did it change?)",
                data.size()
            );
        }
        let ino = b.add(Inode {
            stat,
            kind: Kind::Regular(data),
            xattrs,
        });
        files.push((ino, path.to_path_buf()));
        return Ok(ino);
    }

    let kind = match fmt {
        mode::S_IFLNK => {
            let target = rustix::fs::readlinkat(dirfd, name_os, Vec::new())
                .with_context(|| format!("reading symlink {shown}"))?
                .into_bytes();
            if target.is_empty() {
                bail!("{shown}: symlink with an empty target");
            }
            if target.len() > MAX_SYMLINK_TARGET {
                bail!(
                    "{shown}: symlink target of {} bytes is longer than {MAX_SYMLINK_TARGET}",
                    target.len()
                );
            }
            Kind::Symlink(target)
        }
        mode::S_IFCHR => Kind::CharDevice { rdev },
        mode::S_IFBLK => Kind::BlockDevice { rdev },
        mode::S_IFIFO => Kind::Fifo,
        mode::S_IFSOCK => Kind::Socket,
        other => bail!("{shown}: unknown file type {other:o}"),
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
        .with_context(|| format!("opening {shown}"))?;
        let fst = rustix::fs::fstat(&fd).with_context(|| format!("stat {shown}"))?;
        if dev_ino(&fst) != dev_ino(st) {
            bail!("{shown} was replaced while it was being read");
        }
        read_xattrs(XattrSource::PathFd(fd.as_fd()), opts, path)?
    };
    Ok(b.add(Inode { stat, kind, xattrs }))
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
    path: &Path,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if opts.skip_xattrs {
        return Ok(Vec::new());
    }
    let shown = path.display();
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
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {shown}")),
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
                    format!("reading xattr {} of {shown}", String::from_utf8_lossy(name))
                });
            }
        };
        if value.len() > MAX_XATTR_VALUE {
            bail!(
                "{shown}: xattr {} has {} bytes, more than a composefs image can hold ({MAX_XATTR_VALUE})",
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
