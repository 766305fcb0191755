//! Small filesystem helpers shared by the repository modules.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
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

/// Human-readable byte count (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Show a byte string for messages: UTF-8 lossily, with control characters escaped.
pub fn display_bytes(b: &[u8]) -> String {
    OsStr::from_bytes(b)
        .to_string_lossy()
        .escape_debug()
        .to_string()
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

/// Bytes kept at each end of a path shortened by [`short_path`].
pub const SHORT_PATH_KEEP: usize = 100;

/// A path for a message, as [`display_bytes`] shows it when it is short;
/// otherwise its first and last [`SHORT_PATH_KEEP`] bytes around `…`, with
/// its length and number of components, so that an error about a file
/// 10,000 directories deep is one line, not 20 KB.
pub fn short_path(p: &[u8]) -> String {
    if p.len() <= 2 * SHORT_PATH_KEEP + 32 {
        return display_bytes(p);
    }
    // Cut on UTF-8 character boundaries (never inside a sequence).
    let mut head = SHORT_PATH_KEEP;
    while head > 0 && p[head] & 0xc0 == 0x80 {
        head -= 1;
    }
    let mut tail = p.len() - SHORT_PATH_KEEP;
    while tail < p.len() && p[tail] & 0xc0 == 0x80 {
        tail += 1;
    }
    let components = p.split(|&c| c == b'/').filter(|c| !c.is_empty()).count();
    format!(
        "{}…{} ({} bytes, {components} components)",
        display_bytes(&p[..head]),
        display_bytes(&p[tail..]),
        p.len()
    )
}

/// `/proc/self/fd/N` for an open descriptor: how `linkat`, `open` and mount
/// options reach an unnamed file or a detached mount.
pub fn proc_self_fd(fd: impl AsFd) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

/// UTC calendar date and time of `secs` since the epoch: (year, month,
/// day, hour, minute, second). Days-from-civil arithmetic, no time zone
/// database.
pub fn utc_from_unix(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Bytes of a file, read into memory or mapped (read-only, private).
pub enum Bytes {
    Owned(Vec<u8>),
    Mapped {
        ptr: *mut std::ffi::c_void,
        len: usize,
    },
}

// SAFETY: the mapping is read-only and private, never written through,
// and unmapped only on drop.
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}

impl Bytes {
    /// Map a whole file. The file must not be truncated while mapped (a
    /// read past its new end would fault): meant for repository objects,
    /// which are written once, complete, and only ever unlinked.
    pub fn map(file: &std::fs::File) -> io::Result<Bytes> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::other("file too large to map"))?;
        if len == 0 {
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: a fresh private read-only mapping of `len` bytes of an
        // open file; no other memory is affected.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE,
                file,
                0,
            )
        }?;
        Ok(Bytes::Mapped { ptr, len })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            // SAFETY: `ptr` maps `len` readable bytes until drop.
            Bytes::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(*ptr as *const u8, *len)
            },
        }
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if let Bytes::Mapped { ptr, len } = *self {
            // SAFETY: unmapping our own mapping, once.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
        }
    }
}
