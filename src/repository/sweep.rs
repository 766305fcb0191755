//! Deleting from the store: every object outside a kept set, and the
//! temporary files a crash leaves behind. Deciding what to keep is not
//! the store's business (see `crate::maintenance::gc`); these only delete,
//! and only under the exclusive lock ([`super::Lock::Exclusive`]).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::{RefKind, Repository};
use crate::fsverity::ObjectId;

/// What [`Repository::remove_objects_except`] counted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ObjectSweep {
    pub kept: u64,
    pub removed: u64,
    pub bytes_freed: u64,
}

impl Repository {
    /// Remove every object not in `keep` (with `dry_run`, only count).
    /// Files under `objects/` whose names are not object names are left
    /// alone (fsck reports them).
    pub(crate) fn remove_objects_except(
        &self,
        keep: &HashSet<ObjectId>,
        dry_run: bool,
    ) -> Result<ObjectSweep> {
        let mut sweep = ObjectSweep::default();
        let objects = self.path().join("objects");
        for fan in 0..=255u8 {
            let dir = objects.join(format!("{fan:02x}"));
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
            };
            for ent in rd {
                let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
                let name = ent.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(id) = ObjectId::from_hex(self.algorithm(), &format!("{fan:02x}{name}"))
                else {
                    continue; // not an object name: leave it for fsck to report
                };
                if keep.contains(&id) {
                    sweep.kept += 1;
                    continue;
                }
                let size = ent.metadata().map(|m| m.size()).unwrap_or(0);
                if !dry_run {
                    std::fs::remove_file(ent.path()).with_context(|| {
                        format!("cannot remove object {}", ent.path().display())
                    })?;
                }
                sweep.removed += 1;
                sweep.bytes_freed += size;
            }
        }
        Ok(sweep)
    }

    /// Remove the store's crash leftovers: temporary objects, and half-made
    /// entries and refs (`.tmp-NAME.PID` symlinks, see
    /// `fsutil::replace_symlink`). Under the exclusive lock every temporary
    /// file is one.
    pub(crate) fn remove_stale_temporaries(&self) -> Result<()> {
        let root = self.path();
        remove_stale_files(&root.join("objects"), super::objects::TMP_PREFIX, false)?;
        for kind in [RefKind::Stream, RefKind::Image] {
            remove_stale_files(&root.join(kind.dir()), ".tmp-", false)?;
            remove_stale_files(&root.join(kind.dir()).join("refs"), ".tmp-", true)?;
        }
        Ok(())
    }
}

/// Remove every non-directory named `prefix…` in `dir` (and, with
/// `recurse`, below it). A missing `dir` has none.
pub(crate) fn remove_stale_files(dir: &Path, prefix: &str, recurse: bool) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for ent in rd {
        let ent = ent.with_context(|| format!("cannot list {}", dir.display()))?;
        let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            if recurse {
                remove_stale_files(&ent.path(), prefix, true)?;
            }
            continue;
        }
        if ent.file_name().to_string_lossy().starts_with(prefix) {
            std::fs::remove_file(ent.path()).with_context(|| {
                format!(
                    "cannot remove stale temporary file {}",
                    ent.path().display()
                )
            })?;
        }
    }
    Ok(())
}
