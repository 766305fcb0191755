//! Names for objects: `streams/<content-id>` and `images/<hex>` entries, and
//! the refs below `streams/refs/` and `images/refs/` that are the GC roots.
//!
//! Entries are symlinks to `../objects/XX/<rest>`; refs are relative symlinks
//! to an entry (`streams/refs/a/b` → `../../<content-id>`), exactly as
//! composefs-rs lays them out, so either tool can read the other's repository.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::Repository;
use crate::fsutil::{mkdir_all_at, replace_symlink};
use crate::fsverity::ObjectId;

/// Which namespace a name lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Stream,
    Image,
}

impl RefKind {
    pub fn dir(self) -> &'static str {
        match self {
            RefKind::Stream => "streams",
            RefKind::Image => "images",
        }
    }
}

/// A name resolved to its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The entry under `streams/` or `images/` (content id or hex digest),
    /// `None` when the name was a bare digest.
    pub entry: Option<String>,
    pub id: ObjectId,
}

/// A name with `/` in it as one ref path component, as composefs-rs spells
/// OCI image names and ostree ref names below `streams/refs/oci/` and
/// `streams/refs/ostree/`: `%` written `%25`, `/` written `%2F`.
pub fn encode_ref_component(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// The name an [`encode_ref_component`] component stands for (any other
/// `%` is kept as it is).
pub fn decode_ref_component(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix("2F") {
            out.push('/');
            rest = r;
        } else if let Some(r) = after.strip_prefix("25") {
            out.push('%');
            rest = r;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A ref name is a relative path of ordinary components: no empty, `.` or
/// `..` components, no leading `/`, no NUL, at most 1024 bytes.
pub fn validate_ref_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("ref name is empty");
    }
    if name.len() > 1024 {
        bail!("ref name {name:?} is longer than 1024 bytes");
    }
    if name.contains('\0') {
        bail!("ref name {name:?} contains a NUL byte");
    }
    if name.starts_with('/') {
        bail!("ref name {name:?} must be relative (no leading '/')");
    }
    for comp in name.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            bail!("ref name {name:?} has an empty, '.' or '..' component");
        }
        if comp.starts_with(".tmp-") {
            bail!("ref name {name:?} has a component starting with '.tmp-' (reserved)");
        }
    }
    Ok(())
}

/// Entry names (content ids) are single path components.
fn validate_entry_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name == "refs"
        || name.contains(['/', '\0'])
        || name.starts_with(".tmp-")
    {
        bail!("invalid stream name {name:?}");
    }
    Ok(())
}

/// Parse `../objects/XX/<rest>` (or any path ending in `XX/<rest>`) into
/// an id of the repository's algorithm.
fn id_from_object_link(repo: &Repository, target: &Path) -> Option<ObjectId> {
    let mut comps = target.components().rev();
    let rest = comps.next()?.as_os_str().to_str()?;
    let fan = comps.next()?.as_os_str().to_str()?;
    ObjectId::from_object_path(format!("{fan}/{rest}").as_bytes())
        .filter(|id| id.algorithm() == repo.algorithm())
}

impl Repository {
    fn readlink(&self, path: &Path) -> std::io::Result<PathBuf> {
        let target = rustix::fs::readlinkat(self.dir(), path, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Point `streams/<content_id>` (or `images/<hex>`) at object `id`.
    pub fn link_entry(&self, kind: RefKind, entry: &str, id: &ObjectId) -> Result<()> {
        self.ensure_writable()?;
        validate_entry_name(entry)?;
        let path = Path::new(kind.dir()).join(entry);
        let target = Path::new("../objects").join(id.object_path());
        if let Ok(existing) = self.readlink(&path)
            && existing == target
        {
            return Ok(());
        }
        // A cfsctl repository gets streams/ and images/ when first needed.
        mkdir_all_at(self.dir(), Path::new(kind.dir()), 0o755)
            .with_context(|| format!("cannot create {}/{}", self.path().display(), kind.dir()))?;
        replace_symlink(self.dir(), &path, &target)
            .with_context(|| format!("cannot link {}/{}", self.path().display(), path.display()))
    }

    /// Make ref `name` (below `streams/refs/` or `images/refs/`) point at `entry`.
    pub fn set_ref(&self, kind: RefKind, name: &str, entry: &str) -> Result<()> {
        self.ensure_writable()?;
        validate_ref_name(name)?;
        validate_entry_name(entry)?;
        let rel = Path::new(kind.dir()).join("refs").join(name);
        if let Some(parent) = rel.parent() {
            mkdir_all_at(self.dir(), parent, 0o755).with_context(|| {
                format!(
                    "cannot create {}/{}",
                    self.path().display(),
                    parent.display()
                )
            })?;
        }
        // From streams/refs/a/b, one `..` per component of `refs/a` reaches streams/.
        let depth = name.split('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push(entry);
        replace_symlink(self.dir(), &rel, &target)
            .with_context(|| format!("cannot write ref {}", rel.display()))
    }

    /// Delete a ref. Errors if it does not exist.
    pub fn remove_ref(&self, kind: RefKind, name: &str) -> Result<()> {
        self.ensure_writable()?;
        validate_ref_name(name)?;
        let rel = Path::new(kind.dir()).join("refs").join(name);
        match rustix::fs::unlinkat(self.dir(), &rel, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT) => bail!(
                "no ref {name:?} in {}/{}/refs",
                self.path().display(),
                kind.dir()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot remove ref {}", rel.display())),
        }
    }

    /// What object an entry (`streams/<content-id>` / `images/<hex>`) names.
    pub fn entry_object(&self, kind: RefKind, entry: &str) -> Result<ObjectId> {
        validate_entry_name(entry)?;
        let path = Path::new(kind.dir()).join(entry);
        let target = self.readlink(&path).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                anyhow::anyhow!("no {} named {entry:?}", kind_noun(kind))
            } else {
                anyhow::Error::new(e).context(format!("cannot read {}", path.display()))
            }
        })?;
        id_from_object_link(self, &target).with_context(|| {
            format!(
                "{} does not point into objects/ (it points to {})",
                path.display(),
                target.display()
            )
        })
    }

    /// What entry a ref points to.
    pub fn ref_entry(&self, kind: RefKind, name: &str) -> Result<Option<String>> {
        validate_ref_name(name)?;
        let rel = Path::new(kind.dir()).join("refs").join(name);
        let target = match self.readlink(&rel) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                bail!("{} is not a symlink", rel.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read ref {}", rel.display())),
        };
        let entry = target
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| {
                format!(
                    "ref {} has an unusable target {}",
                    rel.display(),
                    target.display()
                )
            })?;
        Ok(Some(entry.to_string()))
    }

    /// Resolve a user-supplied name: a ref (optionally spelled `refs/NAME`),
    /// an entry (content id), or a bare hex digest.
    pub fn resolve(&self, kind: RefKind, name: &str) -> Result<Resolved> {
        let mut ref_names = vec![name];
        if let Some(stripped) = name.strip_prefix("refs/") {
            ref_names.push(stripped);
        }
        for ref_name in ref_names {
            if validate_ref_name(ref_name).is_ok()
                && let Some(entry) = self.ref_entry(kind, ref_name)?
            {
                let id = self
                    .entry_object(kind, &entry)
                    .with_context(|| format!("ref {ref_name:?} is broken"))?;
                return Ok(Resolved {
                    entry: Some(entry),
                    id,
                });
            }
        }
        if validate_entry_name(name).is_ok() {
            match self.entry_object(kind, name) {
                Ok(id) => {
                    return Ok(Resolved {
                        entry: Some(name.to_string()),
                        id,
                    });
                }
                Err(_)
                    if std::fs::symlink_metadata(self.path().join(kind.dir()).join(name))
                        .is_err() => {}
                Err(e) => return Err(e),
            }
        }
        // A bare digest names any stream object; images must be linked
        // under images/ (never mount an arbitrary object).
        if kind == RefKind::Stream
            && let Some(id) = ObjectId::from_hex(self.algorithm(), name)
            && self.has_object(&id)?
        {
            return Ok(Resolved { entry: None, id });
        }
        bail!(
            "no {} named {name:?} in {}",
            kind_noun(kind),
            self.path().display()
        )
    }

    /// Every ref of a kind as `(name, entry)`, sorted by name.
    pub fn list_refs(&self, kind: RefKind) -> Result<Vec<(String, String)>> {
        let root = self.path().join(kind.dir()).join("refs");
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(prefix) = stack.pop() {
            let dir = if prefix.is_empty() {
                root.clone()
            } else {
                root.join(&prefix)
            };
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound && prefix.is_empty() => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
            };
            for ent in rd {
                let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
                let path = ent.path();
                // Anything a ref cannot be must stop gc: it might name data.
                let fname = ent.file_name().into_string().map_err(|n| {
                    anyhow::anyhow!("{}: ref name {n:?} is not UTF-8", dir.display())
                })?;
                if fname.starts_with(".tmp-") {
                    continue;
                }
                let name = if prefix.is_empty() {
                    fname
                } else {
                    format!("{prefix}/{fname}")
                };
                let ft = ent
                    .file_type()
                    .with_context(|| format!("cannot stat {}", path.display()))?;
                if ft.is_dir() {
                    stack.push(name);
                } else if ft.is_symlink() {
                    let entry = self.ref_entry(kind, &name)?.unwrap_or_default();
                    out.push((name, entry));
                } else {
                    bail!("{} is not a symlink: a ref must be one", path.display());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every entry of a kind (`streams/*` or `images/*`, not `refs`), with
    /// the object it names or why it names none.
    pub fn list_entries(&self, kind: RefKind) -> Result<Vec<(String, Result<ObjectId>)>> {
        let dir = self.path().join(kind.dir());
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        for ent in rd {
            let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name == "refs" || name.starts_with(".tmp-") {
                continue;
            }
            let id = self.entry_object(kind, &name);
            out.push((name, id));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Remove an entry symlink (used by gc).
    pub(crate) fn remove_entry(&self, kind: RefKind, entry: &str) -> Result<()> {
        let path = Path::new(kind.dir()).join(entry);
        match rustix::fs::unlinkat(self.dir(), &path, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    /// Is `path` (relative to the repository) a symlink? For fsck.
    pub(crate) fn is_symlink(&self, path: &Path) -> bool {
        rustix::fs::statat(self.dir(), path, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
            .unwrap_or(false)
    }
}

fn kind_noun(kind: RefKind) -> &'static str {
    match kind {
        RefKind::Stream => "stream",
        RefKind::Image => "image",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        assert!(validate_ref_name("a").is_ok());
        assert!(validate_ref_name("oci/img:latest").is_ok());
        for bad in [
            "", "/a", "a//b", "a/../b", "..", ".", "a/.", "a\0b", ".tmp-x",
        ] {
            assert!(validate_ref_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_ref_name(&"x".repeat(1025)).is_err());
    }
}
