//! A local ostree repository in any mode: `archive` (`.filez`), `bare`
//! (real owners and xattrs), `bare-user` (metadata in the
//! `user.ostreemeta` xattr), `bare-user-only` (no owners or xattrs) and
//! `bare-split-xattrs` (xattrs in separate `.file-xattrs` objects).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType, object_path_ext};
use super::objects::{
    FileHeader, MAX_METADATA_SIZE, MAX_SYMLINK_TARGET, Xattr, parse_uuua, parse_xattrs,
};
use super::source::{
    ExactReader, FileContent, FileObject, RepoMode, Source, filez_object, mode_from_config,
};
use crate::tree::mode;

/// An archive object up to this size is read into memory in one go.
const READ_AT_ONCE: u64 = 1 << 20;

pub struct LocalSource {
    root: PathBuf,
    mode: RepoMode,
    /// Paths to read ahead, handled by a background thread so that the
    /// caller never waits for a directory or inode read.
    prefetch: std::sync::Mutex<Option<std::sync::mpsc::Sender<PathBuf>>>,
}

/// Read ahead each path sent (`fadvise(WILLNEED)`), until the sender goes.
fn prefetcher() -> std::sync::mpsc::Sender<PathBuf> {
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    std::thread::spawn(move || {
        for p in rx {
            if let Ok(f) = File::open(p) {
                let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
            }
        }
    });
    tx
}

impl LocalSource {
    pub fn open(root: &Path) -> Result<LocalSource> {
        let config = root.join("config");
        let text = std::fs::read_to_string(&config).with_context(|| {
            format!(
                "{} is not an ostree repository (cannot read {})",
                root.display(),
                config.display()
            )
        })?;
        let mode = mode_from_config(&text).with_context(|| format!("{}", config.display()))?;
        Ok(LocalSource {
            root: root.to_path_buf(),
            mode,
            prefetch: std::sync::Mutex::new(None),
        })
    }

    fn object(&self, csum: &Checksum, ext: &str) -> PathBuf {
        self.root.join(object_path_ext(csum, ext))
    }

    fn file_bare(&self, csum: &Checksum) -> Result<FileObject> {
        let path = self.object(csum, "file");
        let md = std::fs::symlink_metadata(&path)
            .with_context(|| format!("file object {csum} ({})", path.display()))?;
        let ft = md.file_type();
        let (uid, gid, xattrs) = match self.mode {
            RepoMode::Bare => (md.uid(), md.gid(), read_xattrs(&path)?),
            RepoMode::BareUserOnly => (0, 0, Vec::new()),
            RepoMode::BareSplitXattrs => (md.uid(), md.gid(), self.split_xattrs(csum)?),
            _ => unreachable!("bare modes only"),
        };
        if ft.is_symlink() {
            let target = std::fs::read_link(&path)
                .with_context(|| format!("file object {csum}: cannot read symlink"))?;
            let target = target
                .to_str()
                .with_context(|| format!("file object {csum}: symlink target is not UTF-8"))?
                .to_string();
            let header = FileHeader {
                size: 0,
                uid,
                gid,
                mode: mode::S_IFLNK | 0o777,
                rdev: 0,
                symlink: target,
                xattrs,
            };
            header
                .validate()
                .with_context(|| format!("file object {csum}"))?;
            return Ok(FileObject {
                header,
                content: FileContent::empty(),
            });
        }
        if !ft.is_file() || ft.is_fifo() {
            bail!("file object {csum} is not a regular file or symlink");
        }
        let header = FileHeader {
            size: md.len(),
            uid,
            gid,
            mode: md.mode(),
            rdev: 0,
            symlink: String::new(),
            xattrs,
        };
        header
            .validate()
            .with_context(|| format!("file object {csum}"))?;
        let f = File::open(&path).with_context(|| format!("file object {csum}"))?;
        Ok(FileObject {
            content: FileContent::Reader(Box::new(ExactReader::new(f, header.size))),
            header,
        })
    }

    fn file_bare_user(&self, csum: &Checksum) -> Result<FileObject> {
        let path = self.object(csum, "file");
        let meta = lgetxattr(&path, "user.ostreemeta")
            .with_context(|| format!("file object {csum}"))?
            .with_context(|| format!("file object {csum} has no user.ostreemeta xattr"))?;
        let (uid, gid, fmode, xattrs) =
            parse_uuua(&meta, "user.ostreemeta").with_context(|| format!("file object {csum}"))?;
        let mut f = File::open(&path).with_context(|| format!("file object {csum}"))?;
        let size = f.metadata()?.len();
        if fmode & mode::S_IFMT == mode::S_IFLNK {
            if size > MAX_SYMLINK_TARGET as u64 {
                bail!("file object {csum}: symlink target of {size} bytes");
            }
            let mut t = Vec::new();
            f.read_to_end(&mut t)?;
            // ostree writes the target with its terminating NUL.
            if t.last() == Some(&0) {
                t.pop();
            }
            let header = FileHeader {
                size: 0,
                uid,
                gid,
                mode: fmode,
                rdev: 0,
                symlink: String::from_utf8(t)
                    .with_context(|| format!("file object {csum}: symlink target is not UTF-8"))?,
                xattrs,
            };
            header
                .validate()
                .with_context(|| format!("file object {csum}"))?;
            return Ok(FileObject {
                header,
                content: FileContent::empty(),
            });
        }
        let header = FileHeader {
            size,
            uid,
            gid,
            mode: fmode,
            rdev: 0,
            symlink: String::new(),
            xattrs,
        };
        header
            .validate()
            .with_context(|| format!("file object {csum}"))?;
        Ok(FileObject {
            content: FileContent::Reader(Box::new(ExactReader::new(f, size))),
            header,
        })
    }

    /// bare-split-xattrs: `.file-xattrs-link` is a hard link to the
    /// `.file-xattrs` object holding the `a(ayay)` list.
    fn split_xattrs(&self, csum: &Checksum) -> Result<Vec<Xattr>> {
        let link = self.object(csum, "file-xattrs-link");
        match std::fs::read(&link) {
            Ok(data) => {
                if data.len() > MAX_METADATA_SIZE {
                    bail!("file object {csum}: xattrs of {} bytes", data.len());
                }
                parse_xattrs(&data).with_context(|| format!("file object {csum}: xattrs"))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("{}", link.display())),
        }
    }
}

impl Source for LocalSource {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn mode(&self) -> RepoMode {
        self.mode
    }

    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        crate::fsutil::read_small_file(&self.root.join(path), limit)
    }

    fn list_refs(&self) -> Result<Option<Vec<(String, Checksum)>>> {
        let mut out = Vec::new();
        for (dir, prefix) in [
            ("refs/heads", ""),
            ("refs/remotes", "remote:"),
            ("refs/mirrors", "mirror:"),
        ] {
            let base = self.root.join(dir);
            if base.is_dir() {
                walk_refs(&base, &base, prefix, &mut out)?;
            }
        }
        out.sort();
        Ok(Some(out))
    }

    fn prefetch(&self, csum: &Checksum, objtype: ObjType) {
        let ext = match (objtype, self.mode) {
            (ObjType::File, RepoMode::Archive) => "filez",
            (t, _) => t.extension_bare(),
        };
        let mut tx = self.prefetch.lock().expect("prefetch");
        let tx = tx.get_or_insert_with(prefetcher);
        let _ = tx.send(self.object(csum, ext));
    }

    fn file(&self, csum: &Checksum) -> Result<FileObject> {
        match self.mode {
            RepoMode::Archive => {
                let path = self.object(csum, "filez");
                let what = || format!("file object {csum} ({})", path.display());
                let mut f = File::open(&path).with_context(what)?;
                // Most objects are small: read at once (two reads, not one
                // per header field); a large one streams on from there.
                let mut head = Vec::with_capacity(64 * 1024);
                (&mut f)
                    .take(READ_AT_ONCE)
                    .read_to_end(&mut head)
                    .with_context(what)?;
                let r: Box<dyn Read + Send> = if (head.len() as u64) < READ_AT_ONCE {
                    Box::new(io::Cursor::new(head))
                } else {
                    Box::new(io::Cursor::new(head).chain(f))
                };
                filez_object(r, &format!("file object {csum}"))
            }
            RepoMode::BareUser => self.file_bare_user(csum),
            _ => self.file_bare(csum),
        }
    }
}

fn walk_refs(
    base: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, Checksum)>,
) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk_refs(base, &p, prefix, out)?;
            continue;
        }
        let rel = p
            .strip_prefix(base)
            .expect("under base")
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&p).with_context(|| format!("ref {}", p.display()))?;
        let csum =
            Checksum::from_hex(text.trim()).with_context(|| format!("ref {}", p.display()))?;
        let name = match prefix {
            "remote:" => match rel.split_once('/') {
                Some((remote, r)) => format!("{remote}:{r}"),
                None => rel,
            },
            "mirror:" => format!("mirrors/{rel}"),
            _ => rel,
        };
        out.push((name, csum));
    }
    Ok(())
}

/// One xattr of `path` (not following symlinks); `None` if absent.
fn lgetxattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 64 * 1024];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read xattr {name} of {}", path.display())),
    }
}

/// All xattrs of `path` (not following symlinks), sorted by name as ostree
/// records them.
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>> {
    let mut list = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut list) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot list xattrs of {}", path.display()));
        }
    };
    list.truncate(n);
    let mut out = Vec::new();
    for name in list.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        let s = OsStr::from_bytes(name);
        let mut buf = vec![0u8; 64 * 1024];
        match rustix::fs::lgetxattr(path, s, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                out.push((name.to_vec(), buf));
            }
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot read xattr {} of {}",
                        s.to_string_lossy(),
                        path.display()
                    )
                });
            }
        }
    }
    out.sort();
    Ok(out)
}
