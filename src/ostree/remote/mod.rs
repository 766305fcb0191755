//! A commit of a remote ostree repository (archive mode, over HTTP(S)) as
//! a lazy [`Tree`]: the commit resolved and its signatures checked as
//! `composefs ostree pull` does, directories fetched when first listed, file objects
//! when first needed, each verified before use and stored in the
//! repository as a pull stores it (recorded in the commit's resume log,
//! so a later pull of the same commit fetches only the rest).
//!
//! What is fetched when:
//! - opening: `config` (a repository of another mode than archive is
//!   refused), the summary (and `summary.sig` when keys are given) or the
//!   ref's file, the commit and its detached metadata: the pull's own
//!   `resolve_target` and `check_head`, so refs, prefixes, checksums and
//!   signatures (`Trust`, `require`) behave exactly as for a pull. Static
//!   deltas are not used (nothing is fetched in bulk). A commit stored
//!   already is opened from the repository instead
//!   ([`crate::ostree::committree`]), once its signatures are checked.
//! - listing or looking up in a directory: its dirtree; its attributes:
//!   its dirmeta. [`Tree::readdir_ids`] and [`Tree::subtree_id`] (what
//!   `composefs diff` compares) read only dirtrees, and a file not fetched
//!   says so ([`Tree::costly_inode`]): `diff` reports it changed by its
//!   checksum instead of fetching it.
//! - a file's attributes ([`Tree::inode`]): the first 64 KiB of its
//!   `.filez` (an HTTP `Range` request). Most objects are smaller: the
//!   whole object then is verified and stored at once. Of a larger one only
//!   the header is kept (in memory, unverified) until its content is asked
//!   for. When a second file of one directory is asked for in a row (a
//!   readdirplus, `ls -l`), the next 32 headers are fetched alongside it;
//!   one lookup or one read fetches that file only.
//! - a file's content ([`Tree::content_object`], which the FUSE view and
//!   `cat` open contents through): the whole object, unless it came whole
//!   already; a second caller for the same file waits for the first.
//!
//! What is verified when: every object before it is used. Metadata by the
//! SHA-256 of its bytes and the strict parsers (names with `/`, `..` or
//! NUL, duplicates, bytes not in normal form are errors); a file by ostree's
//! checksum of header and content before any of its content is stored or
//! served, and its header must be the one handed out before (a large
//! file's attributes are shown from its header before the content is
//! fetched and checked: that header is the one unverified thing, and
//! content whose verified header differs is refused). Errors name the
//! object and its URL; nothing failing verification is stored or logged.
//!
//! What is stored: file contents as a pull stores them (objects above the
//! shared format's inline threshold, [`crate::ostree::shared::inline_max`];
//! smaller contents only in the log), and every verified object (commit,
//! detached metadata, dirtrees, dirmetas, files) as a record of the
//! commit's resume log `ostree/partial/<commit>` ([`crate::ostree::partial`]).
//! The log is the tree's second-level cache (read back by position), what
//! the next open of the same commit reads instead of fetching, and what
//! `composefs ostree pull` of the commit resumes from. Records are appended
//! whole (`O_APPEND`, one write each) without the pull's lock, so a mount
//! and a pull of the same commit can log side by side.
//!
//! Limits: memory is the inode table (16 bytes per inode handed out, plus
//! the distinct directory checksums) and a 16 MiB cache of decoded
//! objects; the tree refuses to expand beyond [`crate::ostree::tree::MAX_INODES`]
//! entries or [`crate::ostree::tree::MAX_DEPTH`] levels as it is listed. Objects stored
//! are named by no ref until a pull stores the commit: a `gc` meanwhile
//! removes them, and they are fetched again when next read. Headers of
//! large files are not logged (the log holds verified objects only), so
//! a new open fetches them again.

mod objects;
mod tree;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::commitstream::Stored;
use super::http::HttpSource;
use super::partial::SharedLog;
use super::pull::fetch::fetch_meta;
use super::pull::{check_head, resolve_target, stored_signers};
use super::trust::Trust;
use crate::repository::Repository;
use crate::tree::Tree;
use objects::Fetcher;

pub use tree::RemoteTree;

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
    open_commit(repo, url, rref, opts).map(|(_, t)| t)
}

/// [`open_tree`], with the checksum `rref` resolved to.
pub fn open_commit(
    repo: &Repository,
    url: &str,
    rref: &str,
    opts: &RemoteOptions,
) -> Result<(Checksum, Arc<dyn Tree>)> {
    open(repo, url, rref, opts).with_context(|| format!("{url}#{rref}"))
}

/// A commit object's bytes and its detached metadata's.
pub type VerifiedHead = (Vec<u8>, Option<Vec<u8>>);

/// The commit object and detached metadata of `commit` as opening it
/// verified them: from the repository when the commit is stored, else
/// from its log. `None` when neither holds them (the log could not be
/// written).
pub fn verified_head(repo: &Repository, commit: &Checksum) -> Result<Option<VerifiedHead>> {
    if let Some(stored) = super::cache::try_open(repo, commit)? {
        let bytes = stored
            .metadata(commit, ObjType::Commit)?
            .map(<[u8]>::to_vec);
        let meta = stored
            .metadata(commit, ObjType::CommitMeta)?
            .map(<[u8]>::to_vec);
        return Ok(bytes.map(|b| (b, meta)));
    }
    let (log, logged) = SharedLog::open(repo, commit)?;
    let find = |t: ObjType| -> Result<Option<Vec<u8>>> {
        for (key, pos) in &logged {
            if *key == (*commit, t)
                && let Some((_, Stored::Meta(b))) = log.read(*pos)?
            {
                return Ok(Some(b));
            }
        }
        Ok(None)
    };
    let Some(bytes) = find(ObjType::Commit)?.filter(|b| Checksum::of(b) == *commit) else {
        return Ok(None);
    };
    Ok(Some((bytes, find(ObjType::CommitMeta)?)))
}

fn open(
    repo: &Repository,
    url: &str,
    rref: &str,
    opts: &RemoteOptions,
) -> Result<(Checksum, Arc<dyn Tree>)> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("a remote ostree repository is an http:// or https:// URL");
    }
    repo.ensure_writable()?;
    let src = HttpSource::new(url, opts.timeout)?;
    let target = resolve_target(&src, rref, &opts.trust, None)?;
    let commit = target.commit;
    for s in &target.signers {
        tracing::info!("{s}");
    }
    let stored = super::cache::try_open(repo, &commit)
        .with_context(|| format!("commit {commit} is stored but cannot be read"))?;
    if let Some(stored) = stored {
        for s in stored_signers(&src, &stored, &commit, &opts.trust)? {
            tracing::info!("{s}");
        }
        tracing::info!("commit {commit} is stored: read from the repository");
        return Ok((
            commit,
            Arc::new(super::committree::CommitTree::open(repo, &commit)?),
        ));
    }
    let fetch = Fetcher::open(src, repo.try_clone()?, &commit);
    let logged = fetch.logged_meta(&commit, ObjType::Commit);
    let cbytes = match logged {
        Some(b) => b,
        None => fetch_meta(fetch.source(), &commit, ObjType::Commit)?,
    };
    let meta = fetch.logged_meta(&commit, ObjType::CommitMeta);
    let (head, signers) = check_head(fetch.source(), &commit, cbytes, meta, true, &opts.trust)?;
    for s in signers {
        tracing::info!("{s}");
    }
    fetch.record_meta(&commit, ObjType::Commit, &head.bytes);
    if let Some(m) = &head.meta {
        fetch.record_meta(&commit, ObjType::CommitMeta, m);
    }
    Ok((
        commit,
        Arc::new(RemoteTree::new(fetch, commit, &head.parsed)),
    ))
}
