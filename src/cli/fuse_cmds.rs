//! `composefs mount REF MOUNTPOINT` without `--kernel`: the FUSE view.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::repo_cmds::open;
use crate::erofs::reader::ErofsImage;
use crate::fuse::{MountOptions, TreeFs, serve};
use crate::ostree::commitstream::CommitStream;
use crate::ostree::committree::CommitTree;
use crate::ostree::resolve::stored_commit;
use crate::repository::Repository;
use crate::tree::Tree;

/// The tree a REF names: `ostree/NAME` or a stored ostree commit (name,
/// checksum or prefix), else a stored image (ref or digest).
pub fn open_tree(r: &Repository, name: &str) -> Result<Arc<dyn Tree>> {
    let commit = |n: &str| -> Result<Arc<dyn Tree>> {
        let c = stored_commit(r, n)?;
        let stream = CommitStream::open(r, &c).with_context(|| format!("ostree commit {c}"))?;
        // Lazy: dirtrees and headers are decoded as the kernel asks.
        Ok(Arc::new(
            CommitTree::new(stream).with_context(|| format!("ostree commit {c}"))?,
        ))
    };
    if let Some(n) = name.strip_prefix("ostree/") {
        return commit(n);
    }
    let ostree_err = match commit(name) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    match r.open_image(name) {
        Ok((_, f)) => Ok(Arc::new(
            ErofsImage::from_file(f).with_context(|| format!("image {name:?}"))?,
        )),
        Err(image_err) => bail!(
            "{name:?} names neither an image nor a stored ostree commit: {image_err:#}; {ostree_err:#}"
        ),
    }
}

pub fn mount(
    repo: Option<&Path>,
    name: &str,
    target: &Path,
    foreground: bool,
    allow_other: bool,
) -> Result<ExitCode> {
    // Check the mount point first: a typo there should not cost a tree load.
    if !target.is_dir() {
        bail!(
            "mount point {} does not exist or is not a directory",
            target.display()
        );
    }
    let r = open(repo)?;
    let tree = open_tree(&r, name)?;
    let fs = TreeFs::new(tree, r).with_context(|| format!("cannot serve {name:?}"))?;
    let opts = MountOptions {
        foreground,
        allow_other,
        ..MountOptions::default()
    };
    serve(fs, target, &opts)
        .with_context(|| format!("cannot mount {name:?} at {}", target.display()))?;
    Ok(ExitCode::SUCCESS)
}
