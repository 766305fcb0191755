//! Directories into trees whose file contents live elsewhere: in the
//! repository (`create-image`), in a plain digest store (`mkcomposefs
//! --digest-store`), or nowhere (digest only).
//!
//! The directory is scanned first (metadata, small files inline); then the
//! large files are digested — and stored — on all cores in parallel.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

use crate::fsverity::{self, Algorithm, ObjectId};
use crate::repository::Repository;
use crate::tree::dirsource::{DirOptions, scan_dir};
use crate::tree::{FileData, Ino, Kind, MemTree};

/// Files up to this size are stored in the image itself (as mkcomposefs does).
pub const INLINE_MAX: u64 = 64;

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

/// Read `path` into a tree; regular files over [`INLINE_MAX`] bytes become
/// `FileData::External` pointing at their digest.
pub fn tree_from_directory(
    path: &Path,
    opts: &DirOptions,
    sink: &ContentSink<'_>,
    threads: usize,
) -> Result<(MemTree, ImportStats)> {
    let mut stats = ImportStats::default();
    let mut scan = scan_dir(path, opts, &mut |p, file, size| {
        stats.files += 1;
        if size <= INLINE_MAX {
            let mut buf = Vec::with_capacity(size as usize);
            file.take(size + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", p.display()))?;
            if buf.len() as u64 != size {
                bail!("{} changed size while being read", p.display());
            }
            Ok(FileData::Inline(buf))
        } else {
            Ok(FileData::External {
                size,
                redirect: None,
                digest: None,
            })
        }
    })?;
    let pending: Vec<(Ino, PathBuf, u64)> = scan
        .files
        .iter()
        .filter_map(|(ino, p)| match &scan.builder.get(*ino)?.kind {
            Kind::Regular(FileData::External { size, .. }) => Some((*ino, p.clone(), *size)),
            _ => None,
        })
        .collect();
    stats.external = pending.len() as u64;
    stats.bytes = pending.iter().map(|(_, _, s)| s).sum();

    let results = Mutex::new(Vec::with_capacity(pending.len()));
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let repo = match sink {
                    ContentSink::Repository(r) => match r.try_clone() {
                        Ok(r) => Some(r),
                        Err(e) => {
                            first_error.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    },
                    _ => None,
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((ino, path, size)) = pending.get(i) else {
                        break;
                    };
                    if first_error.lock().unwrap().is_some() {
                        break;
                    }
                    match store_one(sink, repo.as_ref(), path, *size) {
                        Ok(id) => results.lock().unwrap().push((*ino, id, *size)),
                        Err(e) => {
                            first_error.lock().unwrap().get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    for (ino, id, size) in results.into_inner().unwrap() {
        let mut inode = scan.builder.get(ino).expect("scanned inode").clone();
        inode.kind = Kind::Regular(FileData::object(id, size));
        scan.builder.replace(ino, inode)?;
    }
    Ok((scan.build()?, stats))
}

fn open_checked(path: &Path, size: u64) -> Result<File> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let now = f
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    if now != size {
        bail!(
            "{} changed size while being imported ({size} → {now} bytes)",
            path.display()
        );
    }
    Ok(f)
}

fn store_one(
    sink: &ContentSink<'_>,
    repo: Option<&Repository>,
    path: &Path,
    size: u64,
) -> Result<ObjectId> {
    let f = open_checked(path, size)?;
    match sink {
        ContentSink::DigestOnly(alg) => {
            let (id, n) =
                fsverity::digest_reader(*alg, io::BufReader::with_capacity(256 * 1024, f))
                    .with_context(|| format!("cannot read {}", path.display()))?;
            check_len(path, n, size)?;
            Ok(id)
        }
        ContentSink::Repository(_) => {
            let repo = repo.expect("a repository handle per worker");
            let (id, n) = repo
                .store_file(f)
                .with_context(|| format!("cannot import {}", path.display()))?;
            check_len(path, n, size)?;
            Ok(id)
        }
        ContentSink::DigestStore(dir) => {
            let (id, n) = fsverity::digest_reader(
                Algorithm::Sha256,
                io::BufReader::with_capacity(256 * 1024, &f),
            )
            .with_context(|| format!("cannot read {}", path.display()))?;
            check_len(path, n, size)?;
            copy_to_store(dir, &id, path)?;
            Ok(id)
        }
    }
}

fn check_len(path: &Path, got: u64, want: u64) -> Result<()> {
    if got != want {
        bail!(
            "{} changed size while being read ({want} → {got} bytes)",
            path.display()
        );
    }
    Ok(())
}

/// Copy `src` to `dir/XX/<rest>` unless present: temp file, then rename.
fn copy_to_store(dir: &Path, id: &ObjectId, src: &Path) -> Result<()> {
    let dest = dir.join(id.object_path());
    if dest.exists() {
        return Ok(());
    }
    let parent = dest.parent().expect("object path has a directory");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot write into {}", parent.display()))?;
    let mut input = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    io::copy(&mut input, tmp.as_file_mut())
        .with_context(|| format!("cannot copy {}", src.display()))?;
    tmp.as_file_mut().flush()?;
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
pub fn reject_sockets(tree: &dyn crate::tree::Tree) -> Result<()> {
    let mut stack = vec![(tree.root(), Vec::<u8>::new())];
    while let Some((dir, path)) = stack.pop() {
        for e in tree.readdir(dir)?.iter() {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            match tree.inode(e.ino)?.kind {
                Kind::Socket => bail!(
                    "{} is a socket: sockets cannot be stored in an image",
                    crate::util::display_bytes(&p)
                ),
                Kind::Directory => stack.push((e.ino, p)),
                _ => {}
            }
        }
    }
    Ok(())
}
