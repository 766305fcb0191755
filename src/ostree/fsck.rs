//! Checking stored ostree commits: each commit stream parses, its commit
//! object hashes to its name, its tree is complete; and the object index
//! is current (rebuilt when it is missing or stale).

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
}

fn check_commit(repo: &Repository, c: &Checksum) -> Result<()> {
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
    Ok(())
}

pub fn fsck(repo: &Repository) -> Result<OstreeFsck> {
    let commits = index::stored_commits(repo)?;
    let mut problems = Vec::new();
    for c in &commits {
        if let Err(e) = check_commit(repo, c) {
            problems.push(format!("{e:#}"));
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
    })
}
