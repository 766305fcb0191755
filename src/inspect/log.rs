//! An ostree commit's history as far as it is stored (`composefs ostree
//! log`): from a stored commit through parent checksums, one commit at a
//! time, until a commit has no parent or its parent is not stored here (a
//! pull stores only the commit it names, not its ancestors).
//!
//! Each commit is read from its stream (`ostree-commit-<checksum>`) and
//! checked against its checksum, so a damaged stream is an error naming
//! that commit. With `stat`, each commit whose parent is stored gets the
//! [`DiffStat`] of the change from its parent (the diff engine skips the
//! subtrees the two commits share unread); each commit's tree is opened
//! once, serving as the new side of its own diff and the old side of its
//! child's.

use std::collections::HashSet;
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{commit_stored, content_checksum, iso_utc, load_commit};
use crate::diff::{DiffOptions, DiffStat, StatCounts, diff_trees};
use crate::ostree::checksum::Checksum;
use crate::ostree::committree::CommitTree;
use crate::repository::Repository;

/// One commit of a log.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    pub commit: String,
    pub parent: Option<String>,
    /// Whether the parent is stored (false when there is none).
    pub parent_stored: bool,
    pub content_checksum: String,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// The timestamp, ISO 8601 UTC.
    pub date: String,
    pub version: Option<String>,
    pub subject: String,
    pub body: String,
    /// With `stat`: the change from the parent, when it is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stat: Option<LogStat>,
}

/// What changed from a commit's parent, per top-level directory.
#[derive(Clone, Debug, Serialize)]
pub struct LogStat {
    pub groups: Vec<StatLine>,
    pub total: StatLine,
    /// The table as `composefs diff --stat` prints it.
    #[serde(skip)]
    pub text: String,
}

/// Counts of one group (`/`, `/NAME`) or of the total.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StatLine {
    pub path: String,
    pub added: u64,
    pub deleted: u64,
    /// Modified or type changed.
    pub modified: u64,
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

impl StatLine {
    fn new(path: String, c: &StatCounts) -> StatLine {
        StatLine {
            path,
            added: c.added,
            deleted: c.deleted,
            modified: c.modified,
            bytes_added: c.bytes_added,
            bytes_removed: c.bytes_removed,
        }
    }
}

impl From<&DiffStat> for LogStat {
    fn from(s: &DiffStat) -> LogStat {
        LogStat {
            groups: s
                .groups
                .iter()
                .map(|(g, c)| StatLine::new(String::from_utf8_lossy(g).into_owned(), c))
                .collect(),
            total: StatLine::new("total".into(), &s.total),
            text: s.render(),
        }
    }
}

/// The change from commit `parent` to commit `commit` (both stored).
pub fn stat(repo: &Repository, parent: &CommitTree, commit: &CommitTree) -> Result<DiffStat> {
    let mut s = DiffStat::new();
    diff_trees(
        Some(repo),
        parent,
        commit,
        &DiffOptions::default(),
        &mut |c| {
            s.add(&c);
            Ok(())
        },
    )
    .with_context(|| format!("diff of {} and {}", parent.commit(), commit.commit()))?;
    Ok(s)
}

/// Why a log stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum LogEnd {
    /// The last commit has no parent.
    Root,
    /// The last commit's parent is not stored here.
    ParentNotStored { parent: String },
    /// The limit was reached; `next` is the parent of the last commit shown.
    Limit { next: String },
}

/// Walk the history from `start` (a stored commit), calling `each` for up
/// to `limit` commits, newest first; with `with_stat`, each entry whose
/// parent is stored carries the [`LogStat`] of its change.
pub fn walk(
    repo: &Repository,
    start: &Checksum,
    limit: Option<usize>,
    with_stat: bool,
    mut each: impl FnMut(&LogEntry) -> Result<()>,
) -> Result<LogEnd> {
    let mut c = *start;
    let mut seen = HashSet::new();
    let mut shown = 0usize;
    // The tree of `c`, opened as the parent side of the previous diff.
    let mut tree: Option<CommitTree> = None;
    loop {
        if limit.is_some_and(|n| shown >= n) {
            return Ok(LogEnd::Limit { next: c.to_hex() });
        }
        if !seen.insert(c) {
            bail!("the history of {start} loops at commit {c}");
        }
        let (stream, commit) = load_commit(repo, &c)?;
        let parent_stored = commit.parent.is_some_and(|p| commit_stored(repo, &p));
        let mut stat_of = None;
        if with_stat && let Some(p) = commit.parent.filter(|_| parent_stored) {
            let this = match tree.take() {
                Some(t) => t,
                None => {
                    CommitTree::new(stream).with_context(|| format!("stored ostree commit {c}"))?
                }
            };
            let parent =
                CommitTree::open(repo, &p).with_context(|| format!("stored ostree commit {p}"))?;
            stat_of = Some(LogStat::from(&stat(repo, &parent, &this)?));
            tree = Some(parent);
        }
        let entry = LogEntry {
            commit: c.to_hex(),
            parent: commit.parent.map(|p| p.to_hex()),
            parent_stored,
            content_checksum: content_checksum(&commit).to_hex(),
            timestamp: commit.timestamp,
            date: iso_utc(commit.timestamp),
            version: commit.meta_string("version"),
            subject: commit.subject.clone(),
            body: commit.body.clone(),
            stat: stat_of,
        };
        each(&entry)?;
        shown += 1;
        match commit.parent {
            None => return Ok(LogEnd::Root),
            Some(p) if !parent_stored => {
                return Ok(LogEnd::ParentNotStored { parent: p.to_hex() });
            }
            Some(p) => c = p,
        }
    }
}

/// Every commit of the history from `start` (see [`walk`]).
pub fn collect(
    repo: &Repository,
    start: &Checksum,
    limit: Option<usize>,
    with_stat: bool,
) -> Result<(Vec<LogEntry>, LogEnd)> {
    let mut out = Vec::new();
    let end = walk(repo, start, limit, with_stat, |e| {
        out.push(e.clone());
        Ok(())
    })?;
    Ok((out, end))
}

impl LogEntry {
    /// The entry as `ostree log` prints it: `commit`, `Parent:`,
    /// `ContentChecksum:`, `Date:` (UTC), `Version:`, then the subject and
    /// the body indented by four spaces, each followed by a blank line.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "commit {}", self.commit);
        if let Some(p) = &self.parent {
            let _ = writeln!(o, "Parent:  {p}");
        }
        let _ = writeln!(o, "ContentChecksum:  {}", self.content_checksum);
        let (y, m, d, hh, mm, ss) =
            crate::show::utc_from_unix(self.timestamp.min(i64::MAX as u64) as i64);
        let _ = writeln!(
            o,
            "Date:  {y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} +0000"
        );
        if let Some(v) = &self.version {
            let _ = writeln!(o, "Version: {v}");
        }
        o.push('\n');
        indented(&mut o, &self.subject);
        if !self.body.is_empty() {
            o.push('\n');
            indented(&mut o, &self.body);
        }
        o.push('\n');
        if let Some(s) = &self.stat {
            indented(&mut o, &s.text);
            o.push('\n');
        }
        o
    }
}

/// Each line of `text` indented by four spaces, as ostree prints subjects
/// and bodies (a last line without a newline gets one; nothing for "").
fn indented(o: &mut String, text: &str) {
    for l in text.split_inclusive('\n') {
        o.push_str("    ");
        o.push_str(l);
        if !l.ends_with('\n') {
            o.push('\n');
        }
    }
}

impl LogEnd {
    /// The closing line of a text log, if any.
    pub fn to_text(&self) -> Option<String> {
        match self {
            LogEnd::Root | LogEnd::Limit { .. } => None,
            LogEnd::ParentNotStored { parent } => Some(format!("(parent {parent} not stored)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(subject: &str, body: &str, version: Option<&str>, parent: bool) -> LogEntry {
        LogEntry {
            commit: "c".repeat(64),
            parent: parent.then(|| "p".repeat(64)),
            parent_stored: false,
            content_checksum: "a".repeat(64),
            timestamp: 1_700_000_000,
            date: iso_utc(1_700_000_000),
            version: version.map(str::to_string),
            subject: subject.into(),
            body: body.into(),
            stat: None,
        }
    }

    #[test]
    fn text_like_ostree_log() {
        let c = "c".repeat(64);
        let p = "p".repeat(64);
        let a = "a".repeat(64);
        assert_eq!(
            entry("subj", "", Some("1.0"), true).to_text(),
            format!(
                "commit {c}\nParent:  {p}\nContentChecksum:  {a}\nDate:  2023-11-14 22:13:20 +0000\nVersion: 1.0\n\n    subj\n\n"
            )
        );
        assert_eq!(
            entry("s", "b1\n\nb2\n", None, false).to_text(),
            format!(
                "commit {c}\nContentChecksum:  {a}\nDate:  2023-11-14 22:13:20 +0000\n\n    s\n\n    b1\n    \n    b2\n\n"
            )
        );
        assert_eq!(
            entry("", "", None, false).to_text(),
            format!("commit {c}\nContentChecksum:  {a}\nDate:  2023-11-14 22:13:20 +0000\n\n\n")
        );
    }
}
