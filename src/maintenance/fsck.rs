//! Consistency check: every object re-digested, every stream parsed and its
//! references resolved, every entry and ref followed. Problems are collected,
//! not fatal: one run reports all of them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::Result;

use crate::fsverity::{self, ObjectId};
use crate::repository::{RefKind, Repository, meta, read_at};
use crate::splitstream::Piece;

#[derive(Debug, Default)]
pub struct FsckReport {
    pub objects: u64,
    pub bytes: u64,
    pub streams: u64,
    pub images: u64,
    pub refs: u64,
    pub problems: Vec<String>,
    /// Not problems: what an older repository of this tool differs in from
    /// what `composefs init` / `cfsctl init` write now, and what to do.
    pub notes: Vec<String>,
}

impl FsckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the whole repository. `progress` gets (objects checked, bytes).
pub fn fsck(repo: &Repository, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<FsckReport> {
    let mut report = FsckReport::default();
    let sizes = check_objects(repo, &mut report, progress);
    check_entries(repo, &mut report, &sizes);
    check_refs(repo, &mut report);
    legacy_notes(repo, &mut report);
    report.problems.sort();
    Ok(report)
}

/// What older versions of this tool wrote differently (see [`FsckReport::notes`]).
fn legacy_notes(repo: &Repository, report: &mut FsckReport) {
    let Ok((text, _)) = read_at(repo.dir(), meta::META_FILENAME) else {
        return;
    };
    let Ok(meta) = meta::Meta::parse(&text) else {
        return;
    };
    if meta
        .features
        .compatible
        .iter()
        .any(|f| f == meta::NO_FSVERITY)
    {
        report.notes.push(format!(
            "meta.json has the compatible feature {:?} of earlier versions of composefs: objects need no \
             fs-verity (honoured); cfsctl and this tool now say so by meta.json having no fs-verity \
             (cfsctl reads this repository the same way: nothing to do)",
            meta::NO_FSVERITY
        ));
    }
    if meta.erofs_formats.is_none() {
        report.notes.push(format!(
            "meta.json has no erofs_formats: as cfsctl, this tool writes EROFS format {} images here \
             (earlier versions of composefs wrote format 0 or 1; those images stay valid). For \
             C-compatible images, create a new repository with `composefs init --erofs-version 1` \
             and import again",
            repo.erofs_version()
        ));
    }
    let Ok(entries) = repo.list_entries(RefKind::Image) else {
        return;
    };
    let mut other = Vec::new();
    for (entry, id) in entries {
        let Ok(id) = id else { continue };
        let Ok(img) = repo
            .open_object(&id)
            .and_then(|f| Ok(crate::erofs::reader::ErofsImage::from_file(f)?))
        else {
            continue;
        };
        let v = img.header().composefs_version;
        let same = match repo.erofs_version() {
            2 => v == 2,
            _ => v < 2,
        };
        if !same {
            other.push(format!("images/{entry} (composefs_version {v})"));
        }
    }
    if !other.is_empty() {
        report.notes.push(format!(
            "{} image(s) in another EROFS format than the repository's ({}): {}; both tools read and \
             mount them; `create-image` again to get the repository's format",
            other.len(),
            repo.erofs_version(),
            other.join(", ")
        ));
    }
}

/// Re-digest every object on all cores; returns each good object's size.
fn check_objects(
    repo: &Repository,
    report: &mut FsckReport,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> HashMap<ObjectId, u64> {
    let next_fan = AtomicUsize::new(0);
    let count = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let problems = Mutex::new(Vec::new());
    let sizes = Mutex::new(HashMap::new());
    let objects = repo.path().join("objects");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local_sizes = Vec::new();
                loop {
                    let fan = next_fan.fetch_add(1, Ordering::Relaxed);
                    if fan > 255 {
                        break;
                    }
                    let dir = objects.join(format!("{fan:02x}"));
                    let rd = match std::fs::read_dir(&dir) {
                        Ok(rd) => rd,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            problems
                                .lock()
                                .unwrap()
                                .push(format!("cannot list {}: {e}", dir.display()));
                            continue;
                        }
                    };
                    for ent in rd.flatten() {
                        let name = ent.file_name().to_string_lossy().into_owned();
                        let shown = format!("objects/{fan:02x}/{name}");
                        let Some(id) =
                            ObjectId::from_hex(repo.algorithm(), &format!("{fan:02x}{name}"))
                        else {
                            problems
                                .lock()
                                .unwrap()
                                .push(format!("{shown}: not an object name"));
                            continue;
                        };
                        match check_object(repo, &id) {
                            Ok(n) => {
                                local_sizes.push((id, n));
                                count.fetch_add(1, Ordering::Relaxed);
                                let b = bytes.fetch_add(n, Ordering::Relaxed) + n;
                                progress(count.load(Ordering::Relaxed), b);
                            }
                            Err(e) => problems.lock().unwrap().push(format!("{shown}: {e:#}")),
                        }
                    }
                }
                sizes.lock().unwrap().extend(local_sizes);
            });
        }
    });
    report.objects = count.into_inner();
    report.bytes = bytes.into_inner();
    report.problems.extend(problems.into_inner().unwrap());
    sizes.into_inner().unwrap()
}

fn check_object(repo: &Repository, id: &ObjectId) -> Result<u64> {
    let path = repo.object_path(id);
    let meta = std::fs::symlink_metadata(&path)?;
    if !meta.file_type().is_file() {
        anyhow::bail!("not a regular file");
    }
    let f = std::fs::File::open(&path)?;
    if repo.verity() {
        match fsverity::ioctl::measure(&f, id.algorithm())? {
            Some(m) if m == *id => {}
            Some(m) => anyhow::bail!("fs-verity measures {m}"),
            None => anyhow::bail!("fs-verity is not enabled"),
        }
    }
    // Holes are not read: an object stored with holes checks in the
    // time its data takes.
    let (digest, n) = fsverity::digest_file(id.algorithm(), &f)?;
    if digest != *id {
        anyhow::bail!("content digest is {digest}: the object is corrupt");
    }
    Ok(n)
}

fn check_entries(repo: &Repository, report: &mut FsckReport, sizes: &HashMap<ObjectId, u64>) {
    for kind in [RefKind::Stream, RefKind::Image] {
        let entries = match repo.list_entries(kind) {
            Ok(e) => e,
            Err(e) => {
                report.problems.push(format!("{e:#}"));
                continue;
            }
        };
        for (entry, id) in entries {
            let shown = format!("{}/{entry}", kind.dir());
            if !repo.is_symlink(&Path::new(kind.dir()).join(&entry)) {
                report.problems.push(format!("{shown}: not a symlink"));
                continue;
            }
            let id = match id {
                Ok(id) => id,
                Err(e) => {
                    report.problems.push(format!("{shown}: {e:#}"));
                    continue;
                }
            };
            if !sizes.contains_key(&id) {
                report
                    .problems
                    .push(format!("{shown}: its object {id} is missing or damaged"));
                continue;
            }
            let checked = match kind {
                RefKind::Stream => {
                    report.streams += 1;
                    check_stream(repo, &id, sizes)
                }
                RefKind::Image => {
                    report.images += 1;
                    check_image(repo, &id, sizes)
                }
            };
            if let Err(e) = checked {
                report.problems.push(format!("{shown}: {e:#}"));
            }
        }
    }
}

/// Parse a stream fully: header, refs, every chunk; sizes must add up.
fn check_stream(repo: &Repository, id: &ObjectId, sizes: &HashMap<ObjectId, u64>) -> Result<()> {
    let mut stream = repo.open_stream_object(id)?;
    for r in stream.object_refs() {
        if !sizes.contains_key(r) {
            anyhow::bail!("refers to object {r}, which is missing or damaged");
        }
    }
    for r in stream.stream_refs() {
        if !sizes.contains_key(r) {
            anyhow::bail!("refers to stream {r}, which is missing or damaged");
        }
    }
    let mut total = 0u64;
    while let Some(piece) = stream.next_piece()? {
        total += match piece {
            Piece::Inline(b) => b.len() as u64,
            Piece::External(o) => sizes.get(&o).copied().unwrap_or(0),
        };
    }
    if total != stream.stream_size {
        anyhow::bail!(
            "chunks add up to {total} bytes but the stream records {}",
            stream.stream_size
        );
    }
    Ok(())
}

/// Parse an image fully; every object it redirects to must be present.
fn check_image(repo: &Repository, id: &ObjectId, sizes: &HashMap<ObjectId, u64>) -> Result<()> {
    let image = crate::erofs::reader::ErofsImage::from_file(repo.open_object(id)?)?;
    image.check()?;
    for o in image.referenced_objects()? {
        if o.algorithm() == repo.algorithm() && !sizes.contains_key(&o) {
            anyhow::bail!("refers to object {o}, which is missing or damaged");
        }
    }
    Ok(())
}

fn check_refs(repo: &Repository, report: &mut FsckReport) {
    for kind in [RefKind::Stream, RefKind::Image] {
        let refs = match repo.list_refs(kind) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(format!("{e:#}"));
                continue;
            }
        };
        for (name, entry) in refs {
            report.refs += 1;
            if let Err(e) = repo.entry_object(kind, &entry) {
                report
                    .problems
                    .push(format!("{}/refs/{name}: {e:#}", kind.dir()));
            }
        }
    }
}
