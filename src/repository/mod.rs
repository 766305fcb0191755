//! The content-addressed repository on disk.
//!
//! ```text
//! meta.json                  format version, algorithm, features,
//!                            EROFS format; fs-verity on it = objects
//!                            need fs-verity                         (meta)
//! objects/XX/<rest>          content named by fs-verity digest    (objects)
//! streams/<content-id>       → ../objects/XX/<rest>  (splitstreams) (refs)
//! streams/refs/<name>        → ../../<content-id>    (GC roots)
//! images/<hex>               → ../objects/XX/<rest>  (EROFS images)
//! images/refs/<name>         → ../../<hex>           (GC roots)
//! ```
//!
//! The layout is composefs-rs's (`cfsctl`): either tool opens the other's
//! repositories. `objects/`, `streams/` and `images/` may be missing (cfsctl
//! makes them when first needed): `objects/` is made on open, the others
//! read as empty until written.
//!
//! Opening tells absence (no repository at the path: an answer) from
//! damage (an [`OpenError`]); see the `open` module.
//!
//! Every handle holds a `flock` on the repository directory: shared for
//! ordinary use, exclusive for garbage collection (see
//! [`crate::maintenance::gc`]), so a collection never runs while another
//! process is importing.
//!
//! The repository stores bytes and knows no format inside them: no tree,
//! no EROFS image, no splitstream. What is built on it lives above it:
//! named streams in [`crate::splitstream`] (its `store` module adds the
//! stream methods to [`Repository`]), images written from a tree in
//! [`crate::erofs::store_image`], gc and fsck in [`crate::maintenance`].

mod images;
pub mod meta;
mod objects;
mod open;
pub mod pool;
pub mod refs;
mod sweep;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::fsutil::{mkdir_all_at, open_dir_at};
use crate::fsverity::Algorithm;

pub use objects::ObjectWriter;
pub use open::OpenError;
pub use refs::{RefKind, decode_ref_component, encode_ref_component, validate_ref_name};
pub(crate) use sweep::remove_stale_files;

/// Environment variable naming the repository when `--repo` is not given.
pub const REPO_ENV: &str = "COMPOSEFS_REPO";

/// How a repository handle locks the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// Readers and writers: many at once.
    Shared,
    /// Garbage collection: alone.
    Exclusive,
}

/// How [`Repository::init_with`] makes a repository (`cfsctl init`'s choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOptions {
    pub algorithm: Algorithm,
    /// Objects need no fs-verity (`--insecure`): `meta.json` gets none.
    /// Without it, fs-verity is enabled on `meta.json` where the filesystem
    /// supports it, and the repository is insecure where it does not.
    pub insecure: bool,
    /// EROFS format version of the repository's images (0, 1 or 2).
    pub erofs_version: u32,
}

impl InitOptions {
    /// cfsctl's defaults: sha512, fs-verity where possible, EROFS version 1.
    pub fn new(algorithm: Algorithm) -> Self {
        InitOptions {
            algorithm,
            insecure: false,
            erofs_version: 1,
        }
    }
}

/// An open repository. Dropping it releases the lock.
pub struct Repository {
    path: PathBuf,
    /// The repository directory; also carries the flock.
    dir: File,
    objects: File,
    algorithm: Algorithm,
    verity: bool,
    writable: bool,
    /// The EROFS format version images are written in (meta.json's `erofs_formats`).
    erofs_version: u32,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("path", &self.path)
            .field("algorithm", &self.algorithm)
            .field("verity", &self.verity)
            .finish()
    }
}

/// The repository path: `--repo`, else `$COMPOSEFS_REPO`, else
/// `/sysroot/composefs` for root and `~/.var/lib/composefs` for users.
pub fn default_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(REPO_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/sysroot/composefs"));
    }
    let home = std::env::var_os("HOME")
        .context("cannot find the repository: $HOME is not set (use --repo)")?;
    Ok(Path::new(&home).join(".var/lib/composefs"))
}

impl Repository {
    /// Create a repository at `path` as `cfsctl init` would (sha512 or
    /// sha256, fs-verity where the filesystem has it, EROFS version 1).
    pub fn init(path: &Path, algorithm: Algorithm) -> Result<Self> {
        Self::init_with(path, &InitOptions::new(algorithm))
    }

    /// Create a repository at `path` (the directory may exist but must not
    /// hold a repository already): `meta.json` as `cfsctl init` writes it,
    /// with fs-verity enabled on it unless `insecure` or unsupported.
    pub fn init_with(path: &Path, opts: &InitOptions) -> Result<Self> {
        if opts.erofs_version > 2 {
            bail!(
                "unsupported EROFS format version {} (0, 1 or 2)",
                opts.erofs_version
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create repository directory {}", path.display()))?;
        let dir = open_dir_at(rustix::fs::CWD, path)
            .with_context(|| format!("cannot open repository directory {}", path.display()))?;
        rustix::fs::flock(&dir, FlockOperation::LockExclusive)
            .with_context(|| format!("cannot lock repository {}", path.display()))?;
        let meta_path = path.join(meta::META_FILENAME);
        if meta_path.exists() {
            bail!("{} already holds a composefs repository", path.display());
        }
        for sub in ["objects", "streams/refs", "images/refs"] {
            mkdir_all_at(&dir, Path::new(sub), 0o755)
                .with_context(|| format!("cannot create {}/{sub}", path.display()))?;
        }
        // 256 fan-out directories up front: saves a mkdir attempt per object.
        for b in 0..=255u8 {
            let sub = format!("objects/{b:02x}");
            mkdir_all_at(&dir, Path::new(&sub), 0o755)
                .with_context(|| format!("cannot create {}/{sub}", path.display()))?;
        }
        let objects = open_dir_at(&dir, "objects")
            .with_context(|| format!("cannot open {}/objects", path.display()))?;
        let meta = meta::Meta::new(opts.algorithm, opts.erofs_version);
        let verity = write_meta(&dir, &meta, opts.algorithm, !opts.insecure)
            .with_context(|| format!("cannot write {}", meta_path.display()))?;
        rustix::fs::flock(&dir, FlockOperation::LockShared)
            .with_context(|| format!("cannot lock repository {}", path.display()))?;
        Ok(Repository {
            path: path.to_path_buf(),
            dir,
            objects,
            algorithm: opts.algorithm,
            verity,
            writable: true,
            erofs_version: opts.erofs_version,
        })
    }

    /// Let go of the lock (for this handle and every [`Self::try_clone`]
    /// of it). For long-lived readers such as a mount daemon, which must
    /// not keep `gc` waiting: they must then expect objects of trees whose
    /// refs were removed to vanish under them.
    pub fn unlock(&self) -> Result<()> {
        rustix::fs::flock(&self.dir, FlockOperation::Unlock)
            .with_context(|| format!("cannot unlock repository {}", self.path.display()))
    }

    /// A second handle on the same repository (sharing this one's lock),
    /// for worker threads.
    pub fn try_clone(&self) -> Result<Self> {
        let ctx = || format!("cannot duplicate handle on {}", self.path.display());
        Ok(Repository {
            path: self.path.clone(),
            dir: self.dir.try_clone().with_context(ctx)?,
            objects: self.objects.try_clone().with_context(ctx)?,
            algorithm: self.algorithm,
            verity: self.verity,
            writable: self.writable,
            erofs_version: self.erofs_version,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The EROFS format version (0, 1 or 2, as composefs-rs numbers them)
    /// this repository's images are written in.
    pub fn erofs_version(&self) -> u32 {
        self.erofs_version
    }

    /// Whether objects carry kernel-enforced fs-verity.
    pub fn verity(&self) -> bool {
        self.verity
    }

    pub(crate) fn dir(&self) -> &File {
        &self.dir
    }

    pub(crate) fn objects_dir(&self) -> &File {
        &self.objects
    }

    /// Fail unless we may write (unknown read-only-compatible features forbid it).
    pub fn ensure_writable(&self) -> Result<()> {
        if !self.writable {
            bail!(
                "repository {} uses features this tool only understands read-only; upgrade composefs to write to it",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Flush everything written so far to disk (one `syncfs` for the whole
    /// filesystem): call before publishing a ref that depends on new objects.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::syncfs(&self.dir).with_context(|| format!("syncfs on {}", self.path.display()))
    }

    /// Run `f` while a background thread flushes the filesystem every
    /// 150 ms, so that the writes of a long import reach the disk while it
    /// runs instead of all waiting for the `syncfs` that publishes its ref.
    /// The thread is not waited for: when `f` returns it starts one last
    /// `syncfs` (or finishes the one under way) in the background while the
    /// caller carries on, so a publishing [`Repository::sync`] then waits
    /// only for what was written after. It holds its own descriptor of the
    /// directory (opened anew: a duplicate would share the repository's
    /// lock).
    pub fn with_flusher<T>(&self, f: impl FnOnce() -> T) -> T {
        let dir = rustix::fs::openat(
            &self.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let running = std::sync::Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
        let flusher = dir.ok().and_then(|dir| {
            let running = running.clone();
            std::thread::Builder::new()
                .name("flusher".into())
                .spawn(move || {
                    let (lock, cond) = &*running;
                    let mut on = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while *on {
                        on = cond
                            .wait_timeout(on, std::time::Duration::from_millis(150))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        if *on {
                            drop(on);
                            let _ = rustix::fs::syncfs(&dir);
                            on = lock.lock().unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    drop(on);
                    // One more, while the caller goes on to what follows
                    // (an image, a stream) and its own sync before it
                    // publishes.
                    let _ = rustix::fs::syncfs(&dir);
                })
                .ok()
        });
        let r = f();
        if flusher.is_some() {
            *running.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
            running.1.notify_all();
        }
        r
    }
}

/// A small file's content, and the file (for an fs-verity probe).
pub(crate) fn read_at(dir: &File, name: &str) -> std::io::Result<(Vec<u8>, File)> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut f = File::from(fd);
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v)?;
    Ok((v, f))
}

/// Write `meta.json` (temporary name, fsync, fs-verity if `verity` and
/// the filesystem has it, rename; never over an existing one). Returns
/// whether it got fs-verity, i.e. whether objects will need it.
fn write_meta(dir: &File, meta: &meta::Meta, algorithm: Algorithm, verity: bool) -> Result<bool> {
    let tmp = format!(".tmp-{}.{}", meta::META_FILENAME, std::process::id());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .context("cannot create a temporary file")?;
    let cleanup = |e: anyhow::Error| {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), rustix::fs::AtFlags::empty());
        e
    };
    let mut f = File::from(fd);
    f.write_all(meta.to_json().as_bytes())
        .and_then(|()| f.sync_all())
        .context("cannot write")
        .map_err(cleanup)?;
    drop(f);
    let mut has_verity = false;
    if verity {
        let ro = rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .context("cannot reopen")
        .map_err(cleanup)?;
        match crate::fsverity::ioctl::enable(&ro, algorithm) {
            Ok(()) => has_verity = true,
            Err(crate::fsverity::ioctl::EnableError::Unsupported) => {}
            Err(e) => {
                return Err(cleanup(
                    anyhow::Error::new(e).context("cannot enable fs-verity"),
                ));
            }
        }
    }
    // Never over an existing meta.json; a filesystem without
    // RENAME_NOREPLACE gets a plain rename (the caller holds the exclusive
    // lock and found none).
    rustix::fs::renameat_with(
        dir,
        tmp.as_str(),
        dir,
        meta::META_FILENAME,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .or_else(|e| match e {
        rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS => {
            rustix::fs::renameat(dir, tmp.as_str(), dir, meta::META_FILENAME)
        }
        e => Err(e),
    })
    .map_err(|e| {
        cleanup(anyhow::Error::new(std::io::Error::from(e)).context("cannot rename into place"))
    })?;
    Ok(has_verity)
}
