//! Scratch space for the targets: a per-process directory (tmpfs when
//! there is one) removed at exit, scratch repositories recycled every so
//! many uses, and anonymous in-memory files.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

use crate::fsverity::Algorithm;
use crate::repository::Repository;

/// Where fuzzers keep their scratch repositories: `$COMPOSEFS_FUZZ_TMPDIR`,
/// else `/dev/shm` (tmpfs: no disk writes), else the temporary directory.
fn scratch_parent() -> PathBuf {
    if let Some(d) = std::env::var_os("COMPOSEFS_FUZZ_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && rustix::fs::access(shm, rustix::fs::Access::WRITE_OK).is_ok() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// This process's scratch directory, removed at exit (libFuzzer ends with
/// `exit()`, which runs `atexit` handlers; a crash leaves it behind, and
/// `scripts/fuzz.sh` removes its whole `$COMPOSEFS_FUZZ_TMPDIR`).
fn scratch_dir() -> Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static MAKING: Mutex<()> = Mutex::new(());
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    let _one_at_a_time = lock(&MAKING);
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    let parent = scratch_parent();
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("composefs-fuzz-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?
        .keep();
    let dir = DIR.get_or_init(|| dir);
    extern "C" fn remove_scratch() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    // SAFETY: registering a plain `extern "C" fn` with no arguments.
    unsafe { libc::atexit(remove_scratch) };
    Ok(dir)
}

/// A scratch repository, created on first use and recreated after
/// [`RECYCLE`] uses (fuzzed inputs leave objects behind, in tmpfs).
pub(super) struct ScratchRepo {
    repo: Option<Repository>,
    uses: u64,
    generation: u64,
    name: &'static str,
    algorithm: Algorithm,
}

const RECYCLE: u64 = 5_000;

impl ScratchRepo {
    pub(super) const fn new(name: &'static str, algorithm: Algorithm) -> Self {
        ScratchRepo {
            repo: None,
            uses: 0,
            generation: 0,
            name,
            algorithm,
        }
    }

    /// The repository and its generation (a new one after each recycling).
    pub(super) fn get(&mut self) -> Result<(&Repository, u64)> {
        self.uses += 1;
        if self.uses > RECYCLE
            && let Some(r) = self.repo.take()
        {
            let path = r.path().to_path_buf();
            drop(r);
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            self.uses = 1;
        }
        if self.repo.is_none() {
            self.generation += 1;
            let path = scratch_dir()?.join(format!("{}-{}", self.name, self.generation));
            self.repo = Some(Repository::init(&path, self.algorithm)?);
        }
        Ok((self.repo.as_ref().expect("just made"), self.generation))
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An anonymous in-memory file holding `data` (readers that want a
/// `File` get one without touching a disk).
pub(super) fn memfile(data: &[u8]) -> Result<File> {
    let fd = rustix::fs::memfd_create("composefs-fuzz", rustix::fs::MemfdFlags::CLOEXEC)
        .context("memfd_create")?;
    let mut f = File::from(fd);
    f.write_all(data).context("writing a memfd")?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(0)).context("seeking a memfd")?;
    Ok(f)
}
