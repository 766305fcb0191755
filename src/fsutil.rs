//! Filesystem helpers shared by the repository, the importers and the
//! views: symlinks replaced atomically, directories made and opened at a
//! descriptor, full reads, small files read whole within a limit, a
//! file's data and holes in order, and the `/proc/self/fd` path of a
//! descriptor.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

/// Replace (or create) the symlink `dir/name` → `target` atomically: create
/// it under a temporary name, then rename over.
pub fn replace_symlink(dir: impl AsFd, name: &Path, target: &Path) -> io::Result<()> {
    let dir = dir.as_fd();
    let parent = name.parent().filter(|p| !p.as_os_str().is_empty());
    let base = name.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "symlink name has no file name")
    })?;
    let mut tmp_name = parent.map(Path::to_path_buf).unwrap_or_default();
    // Unique per process and call: two threads may link the same name
    // (an image listing one layer twice).
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_base = std::ffi::OsString::from(".tmp-");
    tmp_base.push(base);
    tmp_base.push(format!(".{}.{seq}", std::process::id()));
    tmp_name.push(tmp_base);
    let _ = rustix::fs::unlinkat(dir, &tmp_name, AtFlags::empty());
    rustix::fs::symlinkat(target, dir, &tmp_name)?;
    if let Err(e) = rustix::fs::renameat(dir, &tmp_name, dir, name) {
        let _ = rustix::fs::unlinkat(dir, &tmp_name, AtFlags::empty());
        return Err(e.into());
    }
    Ok(())
}

/// `mkdir -p` relative to a directory descriptor.
pub fn mkdir_all_at(dir: impl AsFd, path: &Path, mode: u32) -> io::Result<()> {
    let dir = dir.as_fd();
    let mut cur = PathBuf::new();
    for comp in path.components() {
        cur.push(comp);
        match rustix::fs::mkdirat(dir, &cur, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Open a directory below `dir` (read-only, close-on-exec).
pub fn open_dir_at(
    dir: impl AsFd,
    path: impl rustix::path::Arg,
) -> rustix::io::Result<std::fs::File> {
    rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(std::fs::File::from)
}

/// The whole of the file at `path`, or `None` when it does not exist; an
/// error names the file, also when it holds more than `limit` bytes
/// (nothing past the limit is read).
pub fn read_small_file(path: &Path, limit: u64) -> anyhow::Result<Option<Vec<u8>>> {
    use anyhow::Context;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > limit {
        anyhow::bail!("{} is larger than {limit} bytes", path.display());
    }
    Ok(Some(buf))
}

/// Read until `buf` is full or EOF; returns the number of bytes read.
pub fn read_full(mut r: impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A piece of a file as [`for_each_extent`] reads it.
pub enum Extent<'a> {
    /// Bytes read (may still contain zeros).
    Data(&'a [u8]),
    /// A hole: this many zero bytes, not read.
    Zeros(u64),
}

/// Read `f` from offset 0 to its end, in order, skipping what the file
/// system reports as holes (`SEEK_DATA`/`SEEK_HOLE`): they come as
/// [`Extent::Zeros`] without being read. Where the file system cannot
/// tell (no `SEEK_DATA`), everything is data. Reads are positioned
/// (`pread`) into `buf`; the file offset is moved by the seeks. Returns
/// the number of bytes seen (data and zeros): the file's size, unless it
/// changed meanwhile.
pub fn for_each_extent(
    f: &std::fs::File,
    buf: &mut [u8],
    mut each: impl FnMut(Extent<'_>) -> io::Result<()>,
) -> io::Result<u64> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt;
    let mut pos = 0u64;
    let mut sparse = true;
    loop {
        // The next stretch of data: [data, hole).
        let (data, hole) = if sparse {
            match rustix::fs::seek(f, SeekFrom::Data(pos)) {
                Ok(d) => (d, rustix::fs::seek(f, SeekFrom::Hole(d))?),
                Err(rustix::io::Errno::NXIO) => {
                    // Nothing but a hole from here to the end.
                    let end = f.metadata()?.len();
                    if end > pos {
                        each(Extent::Zeros(end - pos))?;
                        pos = end;
                    }
                    return Ok(pos);
                }
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) if pos == 0 => {
                    sparse = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            (pos, u64::MAX)
        };
        if data > pos {
            each(Extent::Zeros(data - pos))?;
            pos = data;
        }
        while pos < hole {
            let want = (hole - pos).min(buf.len() as u64) as usize;
            let n = match f.read_at(&mut buf[..want], pos) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // The end of the file (it may have shrunk meanwhile).
                return Ok(pos);
            }
            each(Extent::Data(&buf[..n]))?;
            pos += n as u64;
        }
    }
}

/// `/proc/self/fd/N` for an open descriptor: how `linkat`, `open` and mount
/// options reach an unnamed file or a detached mount.
pub fn proc_self_fd(fd: impl AsFd) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}
