//! Repository-wide commands: init, refs, gc, fsck; and [`write_json`],
//! how every `--json` listing prints its document.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::progress;
use crate::repository::{self, Lock, RefKind, Repository};
use crate::show::human_bytes;

pub fn open(repo: Option<&Path>) -> Result<Repository> {
    Repository::open(&repository::default_path(repo)?)
}

pub fn init(repo: Option<&Path>, opts: &repository::InitOptions) -> Result<ExitCode> {
    let path = repository::default_path(repo)?;
    let r = Repository::init_with(&path, opts)?;
    let verity = if r.verity() {
        "fs-verity enforced"
    } else if opts.insecure {
        "insecure: objects need no fs-verity"
    } else {
        "no fs-verity on this filesystem: digests computed in userspace, unverified"
    };
    writeln!(
        std::io::stdout(),
        "initialized {} repository at {} (EROFS format {}; {verity})",
        opts.algorithm.meta_name(),
        path.display(),
        opts.erofs_version
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// One ref as `refs --json` prints it.
#[derive(serde::Serialize)]
struct RefJson {
    /// As the text lists it (and `--delete` takes it): `streams/refs/NAME`.
    r#ref: String,
    /// `stream` or `image`.
    kind: &'static str,
    name: String,
    /// The entry it points to: a content id under `streams/`, a hex digest
    /// under `images/`.
    entry: String,
    /// The object the entry names (hex); `None` when it cannot be read.
    object: Option<String>,
    /// Why `object` cannot be read.
    error: Option<String>,
}

pub fn refs(repo: Option<&Path>, json: bool) -> Result<ExitCode> {
    let r = open(repo)?;
    let mut out = std::io::stdout().lock();
    let mut listed = Vec::new();
    for kind in [RefKind::Stream, RefKind::Image] {
        for (name, entry) in r.list_refs(kind)? {
            let object = r.entry_object(kind, &entry).map(|id| id.to_hex());
            let path = format!("{}/refs/{name}", kind.dir());
            if !json {
                let id = object.as_deref().unwrap_or("(broken)");
                writeln!(out, "{path}\t{entry}\t{id}")?;
                continue;
            }
            let (object, error) = match object {
                Ok(o) => (Some(o), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            listed.push(RefJson {
                r#ref: path,
                kind: match kind {
                    RefKind::Stream => "stream",
                    RefKind::Image => "image",
                },
                name,
                entry,
                object,
                error,
            });
        }
    }
    if json {
        write_json(&mut out, &listed)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `value` as one pretty-printed JSON document and a newline, as every
/// `--json` prints it.
pub(super) fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).context("cannot write to stdout")?;
    writeln!(out).context("cannot write to stdout")
}

/// Which ref a user means: a path as `refs` lists it, `ostree/NAME` or
/// `oci/NAME` (stream refs; a NAME with `/` in it is found as composefs-rs
/// spells it, `ostree/a%2Fb`, or nested as older versions stored it), else
/// an image ref or a stream ref of that name (refused when both exist).
fn ref_to_delete(r: &Repository, name: &str) -> Result<(RefKind, String)> {
    for kind in [RefKind::Stream, RefKind::Image] {
        if let Some(n) = name.strip_prefix(&format!("{}/refs/", kind.dir())) {
            return Ok((kind, n.to_string()));
        }
    }
    for ns in ["ostree/", "oci/"] {
        if let Some(rest) = name.strip_prefix(ns).filter(|r| r.contains('/')) {
            let encoded = format!("{ns}{}", repository::encode_ref_component(rest));
            if r.ref_entry(RefKind::Stream, &encoded)?.is_some() {
                return Ok((RefKind::Stream, encoded));
            }
        }
    }
    let image = r.ref_entry(RefKind::Image, name)?.is_some();
    let stream = r.ref_entry(RefKind::Stream, name)?.is_some();
    match (image, stream) {
        (true, true) => anyhow::bail!(
            "{name:?} is both an image ref and a stream ref: say images/refs/{name} or streams/refs/{name}"
        ),
        (true, false) => Ok((RefKind::Image, name.to_string())),
        _ => Ok((RefKind::Stream, name.to_string())),
    }
}

pub fn delete_refs(repo: Option<&Path>, names: &[String]) -> Result<ExitCode> {
    let r = open(repo)?;
    // Check every name before deleting any.
    let mut todo = Vec::new();
    for name in names {
        let (kind, n) = ref_to_delete(&r, name)?;
        if r.ref_entry(kind, &n)?.is_none() {
            anyhow::bail!("no ref {name:?} in {}", r.path().display());
        }
        todo.push((kind, n));
    }
    for (kind, n) in todo {
        r.remove_ref(kind, &n)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(repo: Option<&Path>, dry_run: bool) -> Result<ExitCode> {
    let path = repository::default_path(repo)?;
    let r = Repository::open_locked(&path, Lock::Exclusive)?;
    let report = crate::maintenance::gc::gc(&r, dry_run)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = std::io::stdout().lock();
    for s in &report.streams_removed {
        writeln!(out, "{verb} stream {s}")?;
    }
    for i in &report.images_removed {
        writeln!(out, "{verb} image {i}")?;
    }
    writeln!(
        out,
        "{verb} {} objects ({}), kept {}",
        report.objects_removed,
        human_bytes(report.bytes_freed),
        report.objects_kept
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(repo: Option<&Path>) -> Result<ExitCode> {
    let r = open(repo)?;
    let bar = progress::bytes(None, "checking objects");
    let mut report = crate::maintenance::fsck::fsck(&r, &|_, b| bar.set_position(b))?;
    bar.finish_and_clear();
    let ostree = crate::ostree::fsck::fsck(&r)?;
    report.problems.extend(ostree.problems);
    let mut out = std::io::stdout().lock();
    for p in &report.problems {
        writeln!(out, "problem: {p}")?;
    }
    for n in report.notes.iter().chain(&ostree.notes) {
        writeln!(out, "note: {n}")?;
    }
    if let Some(why) = &ostree.index_rebuilt {
        writeln!(out, "ostree object index: {why}")?;
    }
    writeln!(
        out,
        "checked {} objects ({}), {} streams, {} images, {} refs: {} problems",
        report.objects,
        human_bytes(report.bytes),
        report.streams,
        report.images,
        report.refs,
        report.problems.len()
    )?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
