//! Checking stored ostree commits: each commit stream parses (in the
//! shared format: every bound, the order and every metadata and inline
//! file checksum), its commit object hashes to its name, its tree is
//! complete, its lookup cache is current; and the object index is current
//! (rebuilt when it is missing or stale). Commits stored by earlier
//! versions (our own `ostreecm` stream) are fine for us but unreadable to
//! composefs-rs: noted, with the way to convert them (pull again).

use anyhow::{Context, Result};

use super::checksum::{Checksum, ObjType};
use super::commitstream::CommitStream;
use super::index;
use super::tree::commit_tree;
use crate::repository::Repository;

pub struct OstreeFsck {
    pub commits: usize,
    pub problems: Vec<String>,
    /// Why the index was rebuilt, if it was.
    pub index_rebuilt: Option<String>,
    /// Not problems: commits in the older format.
    pub notes: Vec<String>,
}

/// Check commit `c`; `Some(note)` when it is stored in the older format.
fn check_commit(repo: &Repository, c: &Checksum) -> Result<Option<String>> {
    let sid = super::cache::stream_id(repo, c)?;
    let reader = repo
        .open_stream_object(&sid)
        .with_context(|| format!("stored ostree commit {c}"))?;
    let note = if reader.content_type == super::shared::CONTENT_TYPE {
        super::shared::read(reader, c)?;
        None
    } else {
        Some(format!(
            "stored ostree commit {c} is in this tool's older format, which composefs-rs \
             (cfsctl) cannot read; `composefs ostree pull` it again to convert it"
        ))
    };
    let s = CommitStream::open(repo, c)?;
    s.verify_index()
        .with_context(|| format!("stored ostree commit {c}"))?;
    let bytes = s
        .metadata(c, ObjType::Commit)?
        .ok_or_else(|| anyhow::anyhow!("stored commit {c} lacks its commit object"))?;
    if Checksum::of(bytes) != *c {
        anyhow::bail!("stored commit {c}: commit object does not hash to its name");
    }
    commit_tree(&s)?;
    Ok(note)
}

pub fn fsck(repo: &Repository) -> Result<OstreeFsck> {
    let commits = index::stored_commits(repo)?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for c in &commits {
        match check_commit(repo, c) {
            Ok(n) => notes.extend(n),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    let mut index_rebuilt = None;
    if problems.is_empty()
        && let Some(why) = index::check(repo)?
    {
        let n = index::rebuild(repo)?;
        index_rebuilt = Some(format!("{why}; rebuilt with {n} records"));
    }
    Ok(OstreeFsck {
        commits: commits.len(),
        problems,
        index_rebuilt,
        notes,
    })
}
