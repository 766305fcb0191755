//! A commit of a remote ostree repository (archive mode, over HTTP(S)) as
//! a lazy [`Tree`]: the commit resolved and its signatures checked as
//! `ostree pull` does, directories fetched when first listed, file objects
//! when first needed, each verified before use and stored in the
//! repository as a pull stores it (recorded in the commit's resume log,
//! so a later pull of the same commit fetches only the rest).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use super::trust::Trust;
use crate::repository::Repository;
use crate::tree::Tree;

/// How a remote commit is opened.
#[derive(Default)]
pub struct RemoteOptions {
    /// Which signatures are required and which keys are trusted (as for
    /// `composefs ostree pull`).
    pub trust: Trust,
    /// HTTP connect and read timeout (the pulls' defaults when `None`).
    pub timeout: Option<Duration>,
}

/// The commit `rref` (a ref, a checksum or a unique prefix) of the ostree
/// repository at `url`, as a lazy tree whose contents are fetched into
/// `repo` on first read.
pub fn open_tree(
    repo: &Repository,
    url: &str,
    rref: &str,
    opts: &RemoteOptions,
) -> Result<Arc<dyn Tree>> {
    let _ = (repo, opts);
    bail!("{url}#{rref}: remote ostree repositories are not readable yet")
}
