//! Directories into trees whose file contents live elsewhere: in the
//! repository (`create-image`), in a plain digest store (`mkcomposefs
//! --digest-store`), or nowhere (digest only).
//!
//! The directory is scanned first (metadata, small files inline); then the
//! large files are digested — and stored — on all cores in parallel.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use crate::fsverity::{self, Algorithm, ObjectId};
use crate::repository::Repository;
use crate::tree::dirsource::{DirOptions, scan_dir};
use crate::tree::{FileData, INLINE_MAX, Kind, MemTree};

/// Where large file contents go.
pub enum ContentSink<'a> {
    /// Only compute digests (plain `mkcomposefs DIR IMAGE`).
    DigestOnly(Algorithm),
    /// Store each file as a repository object.
    Repository(&'a Repository),
    /// Copy each file to `DIR/XX/<rest>` named by its sha256 fs-verity
    /// digest (`mkcomposefs --digest-store`).
    DigestStore(PathBuf),
}

/// What [`tree_from_directory`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImportStats {
    pub files: u64,
    pub external: u64,
    pub bytes: u64,
}

/// A large file on its way from the directory walk to a worker: the
/// open file (a duplicate of the walk's descriptor, so the worker never
/// opens anything by path), its size, and its path shortened for messages.
struct Job {
    /// Which call of the content function it came from: the index into
    /// `DirScan::files`.
    index: usize,
    file: File,
    size: u64,
    shown: String,
}

/// Read `path` into a tree; regular files over [`INLINE_MAX`] bytes become
/// `FileData::External` pointing at their digest.
///
/// The walk ([`scan_dir`], one thread) hands each large file, open, to
/// `threads` workers that digest (and store) it while the walk goes on:
/// files are reached through their directory's descriptor, never by path,
/// so depth does not matter. At most `4 × threads` files wait in the queue
/// (that many descriptors and [`Job`]s: memory and descriptors do not grow
/// with the number of files). Large files are read with their holes
/// skipped and stored with holes ([`Repository::store_file_with`]).
pub fn tree_from_directory(
    path: &Path,
    opts: &DirOptions,
    sink: &ContentSink<'_>,
    threads: usize,
) -> Result<(MemTree, ImportStats)> {
    tree_from_directory_with(path, opts, sink, threads, &|_| {})
}

/// [`tree_from_directory`] with a progress callback, called from the
/// workers with the bytes of large-file content done so far, piece by
/// piece (a 10 GB file moves the bar as it goes).
pub fn tree_from_directory_with(
    path: &Path,
    opts: &DirOptions,
    sink: &ContentSink<'_>,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(MemTree, ImportStats)> {
    let threads = threads.max(1);
    let mut stats = ImportStats::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(4 * threads);
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let results: Mutex<Vec<(usize, ObjectId)>> = Mutex::new(Vec::new());
    let fail = |e: anyhow::Error| {
        first_error.lock().unwrap().get_or_insert(e);
        failed.store(true, Ordering::Relaxed);
    };

    let scanned = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let repo = match sink {
                    ContentSink::Repository(r) => match r.try_clone() {
                        Ok(r) => Some(r),
                        Err(e) => {
                            fail(e);
                            None
                        }
                    },
                    _ => None,
                };
                // Runs until the walk closes the queue; after a failure it
                // only drains it (the walk stops at its next large file).
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok(job) = job else { break };
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    let index = job.index;
                    match store_one(sink, repo.as_ref(), job, &mut |n| progress(n)) {
                        Ok(id) => {
                            results.lock().unwrap().push((index, id));
                        }
                        Err(e) => fail(e),
                    }
                }
            });
        }
        let mut calls = 0usize;
        let scan = scan_dir(path, opts, &mut |p, file, size| {
            let index = calls;
            calls += 1;
            stats.files += 1;
            if size <= INLINE_MAX {
                let mut buf = Vec::with_capacity(size as usize);
                file.take(size + 1)
                    .read_to_end(&mut buf)
                    .with_context(|| format!("cannot read {}", shown(p)))?;
                if buf.len() as u64 != size {
                    bail!("{} changed size while being read", shown(p));
                }
                return Ok(FileData::Inline(buf));
            }
            if failed.load(Ordering::Relaxed) {
                bail!("stopped after an error");
            }
            stats.external += 1;
            stats.bytes += size;
            let job = Job {
                index,
                file: file
                    .try_clone()
                    .with_context(|| format!("cannot duplicate the descriptor of {}", shown(p)))?,
                size,
                shown: shown(p),
            };
            tx.send(job).ok().context("the import workers stopped")?;
            Ok(FileData::External {
                size,
                redirect: None,
                digest: None,
            })
        });
        if scan.is_err() {
            // The workers only drain what is queued.
            failed.store(true, Ordering::Relaxed);
        }
        drop(tx);
        scan
    });
    // A worker's error is the cause of any "stopped" error of the walk.
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let mut scan = scanned?;
    let results = results.into_inner().unwrap();
    if results.len() as u64 != stats.external {
        bail!(
            "{} of {} large files were stored",
            results.len(),
            stats.external
        );
    }
    for (index, id) in results {
        let ino = *scan
            .files
            .get(index)
            .context("a stored file not in the scan")?;
        let mut inode = scan.builder.get(ino).context("a scanned inode")?.clone();
        let size = inode.size();
        inode.kind = Kind::Regular(FileData::object(id, size));
        scan.builder.replace(ino, inode)?;
    }
    Ok((scan.build()?, stats))
}

/// A path for messages: short even 10,000 directories deep.
fn shown(p: &Path) -> String {
    crate::show::short_path(p.as_os_str().as_bytes())
}

/// Digest (and store) one large file; its length is checked against the
/// size the walk saw.
fn store_one(
    sink: &ContentSink<'_>,
    repo: Option<&Repository>,
    job: Job,
    progress: &mut dyn FnMut(u64),
) -> Result<ObjectId> {
    let Job {
        file, size, shown, ..
    } = job;
    let path = shown.as_str();
    match sink {
        ContentSink::DigestOnly(alg) => {
            let (id, n) = fsverity::digest_file(*alg, &file)
                .with_context(|| format!("cannot read {path}"))?;
            progress(n);
            check_len(path, n, size)?;
            Ok(id)
        }
        ContentSink::Repository(_) => {
            let repo = repo.context("no repository handle")?;
            let (id, n) = repo
                .store_file_with(file, progress)
                .with_context(|| format!("cannot import {path}"))?;
            check_len(path, n, size)?;
            Ok(id)
        }
        ContentSink::DigestStore(dir) => {
            let (id, n) = fsverity::digest_file(Algorithm::Sha256, &file)
                .with_context(|| format!("cannot read {path}"))?;
            progress(n);
            check_len(path, n, size)?;
            copy_to_store(dir, &id, &file, path)?;
            Ok(id)
        }
    }
}

fn check_len(path: &str, got: u64, want: u64) -> Result<()> {
    if got != want {
        bail!("{path} changed size while being read ({want} → {got} bytes)");
    }
    Ok(())
}

/// Copy the open file `src` (from its start) to `dir/XX/<rest>` unless
/// present: temp file, then rename.
fn copy_to_store(dir: &Path, id: &ObjectId, mut src: &File, shown: &str) -> Result<()> {
    let dest = dir.join(id.object_path());
    if dest.exists() {
        return Ok(());
    }
    let parent = dest.parent().expect("object path has a directory");
    // Directories made with mode 0755 (less the umask), as C mkcomposefs
    // (`mkdir_parents(path, 0755)`).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot write into {}", parent.display()))?;
    src.seek(io::SeekFrom::Start(0))
        .with_context(|| format!("cannot rewind {shown}"))?;
    io::copy(&mut src, tmp.as_file_mut()).with_context(|| format!("cannot copy {shown}"))?;
    // Readable by all and on disk before it gets its name, as C mkcomposefs
    // leaves its copies (`fchmod(0644)`, `fsync`).
    {
        use std::os::unix::fs::PermissionsExt;
        let f = tmp.as_file_mut();
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    }
    let f = tmp.persist_noclobber(&dest);
    match f {
        Ok(f) => {
            // fs-verity where the filesystem has it, as mkcomposefs does.
            drop(f);
            if let Ok(ro) = File::open(&dest) {
                let _ = fsverity::ioctl::enable(&ro, Algorithm::Sha256);
            }
            Ok(())
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error).with_context(|| format!("cannot create {}", dest.display())),
    }
}

/// Refuse a tree holding a socket: a socket in an image has no listener
/// and no meaning. (`mkcomposefs` keeps them, as the C tool does.)
/// Depth first with an explicit stack; the path is only put together for
/// the message (shortened: the tree may be 10,000 directories deep).
pub fn reject_sockets(tree: &dyn crate::tree::Tree) -> Result<()> {
    // (directory, its entries, the next entry to look at)
    let mut stack = vec![(tree.root(), tree.readdir(tree.root())?, 0usize)];
    while let Some((_, entries, pos)) = stack.last_mut() {
        let Some(e) = entries.get(*pos).cloned() else {
            stack.pop();
            continue;
        };
        *pos += 1;
        match tree.inode(e.ino)?.kind {
            Kind::Socket => {
                let mut p = Vec::new();
                for (_, entries, pos) in &stack {
                    p.push(b'/');
                    p.extend_from_slice(&entries[*pos - 1].name);
                }
                bail!(
                    "{} is a socket: sockets cannot be stored in an image",
                    crate::show::short_path(&p)
                );
            }
            Kind::Directory => {
                let entries = tree.readdir(e.ino)?;
                stack.push((e.ino, entries, 0));
            }
            _ => {}
        }
    }
    Ok(())
}
