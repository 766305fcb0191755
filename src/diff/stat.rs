//! [`DiffStat`]: a diff summarised per top-level directory, what `diff
//! --stat` and `ostree log --stat` print.
//!
//! Every change counts once, as the default output lists it: added,
//! deleted, or modified (`M` and `T`), directories included, so the total
//! equals the number of lines `composefs diff` prints. Bytes are those of
//! regular files: an added file's size is added, a deleted file's removed;
//! a content change removes the old size and adds the new; a type change
//! removes the old side's size and adds the new side's (when regular).
//! A change is grouped under its first path component (`/usr` for
//! `/usr/bin/ls` and for `/usr` itself when it is a directory on either
//! side), and under `/` for the root and for the non-directories at the
//! root.

use std::collections::BTreeMap;
use std::fmt;

use super::format::quote_path;
use super::{Aspects, Change, Status};
use crate::tree::{Inode, Kind};

/// Counts for one group (or the total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCounts {
    pub added: u64,
    pub deleted: u64,
    /// `M` and `T` changes.
    pub modified: u64,
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

impl StatCounts {
    pub fn paths(&self) -> u64 {
        self.added + self.deleted + self.modified
    }

    fn add(&mut self, o: &StatCounts) {
        self.added += o.added;
        self.deleted += o.deleted;
        self.modified += o.modified;
        self.bytes_added = self.bytes_added.saturating_add(o.bytes_added);
        self.bytes_removed = self.bytes_removed.saturating_add(o.bytes_removed);
    }
}

/// Changes summarised per top-level directory. Feed it every [`Change`]
/// with [`DiffStat::add`]; print it with `Display` (or [`DiffStat::render`]).
#[derive(Clone, Debug, Default)]
pub struct DiffStat {
    /// By group: `/` or `/NAME` (path bytes), sorted.
    pub groups: BTreeMap<Vec<u8>, StatCounts>,
    pub total: StatCounts,
}

fn file_size(i: &Option<std::sync::Arc<Inode>>) -> u64 {
    match i.as_deref().map(|i| &i.kind) {
        Some(Kind::Regular(d)) => d.size(),
        _ => 0,
    }
}

fn is_dir(i: &Option<std::sync::Arc<Inode>>) -> bool {
    i.as_deref().is_some_and(|i| i.kind.is_dir())
}

/// The group of a change: its first component when it has more than one
/// or is a directory, else `/`.
fn group(c: &Change) -> Vec<u8> {
    let rest = c.path.strip_prefix(b"/").unwrap_or(&c.path);
    if rest.is_empty() {
        return b"/".to_vec();
    }
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => [b"/", &rest[..i]].concat(),
        None if is_dir(&c.old) || is_dir(&c.new) => c.path.clone(),
        None => b"/".to_vec(),
    }
}

impl DiffStat {
    pub fn new() -> DiffStat {
        DiffStat::default()
    }

    /// Count one change.
    pub fn add(&mut self, c: &Change) {
        let mut n = StatCounts::default();
        match c.status {
            Status::Added => {
                n.added = 1;
                n.bytes_added = file_size(&c.new);
            }
            Status::Deleted => {
                n.deleted = 1;
                n.bytes_removed = file_size(&c.old);
            }
            Status::TypeChanged => {
                n.modified = 1;
                n.bytes_removed = file_size(&c.old);
                n.bytes_added = file_size(&c.new);
            }
            Status::Modified => {
                n.modified = 1;
                if c.aspects.contains(Aspects::CONTENT) {
                    n.bytes_removed = file_size(&c.old);
                    n.bytes_added = file_size(&c.new);
                }
            }
        }
        self.groups.entry(group(c)).or_default().add(&n);
        self.total.add(&n);
    }

    /// No change counted.
    pub fn is_empty(&self) -> bool {
        self.total.paths() == 0
    }

    /// The table: a header, one line per group, a total line; columns
    /// aligned, exact byte counts.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for DiffStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = ["added", "deleted", "modified", "+bytes", "-bytes"];
        let row = |c: &StatCounts| {
            [
                c.added.to_string(),
                c.deleted.to_string(),
                c.modified.to_string(),
                c.bytes_added.to_string(),
                c.bytes_removed.to_string(),
            ]
        };
        let mut rows: Vec<(String, [String; 5])> = self
            .groups
            .iter()
            .map(|(g, c)| (String::from_utf8_lossy(&quote_path(g)).into_owned(), row(c)))
            .collect();
        rows.push(("total".to_string(), row(&self.total)));
        let w0 = rows
            .iter()
            .map(|r| r.0.chars().count())
            .chain(["path".len()])
            .max()
            .unwrap_or(0);
        let mut w = head.map(str::len);
        for (_, cols) in &rows {
            for (i, c) in cols.iter().enumerate() {
                w[i] = w[i].max(c.len());
            }
        }
        write!(f, "{:<w0$}", "path")?;
        for (i, h) in head.iter().enumerate() {
            write!(f, "  {:>width$}", h, width = w[i])?;
        }
        writeln!(f)?;
        for (name, cols) in &rows {
            write!(f, "{name:<w0$}")?;
            for (i, c) in cols.iter().enumerate() {
                write!(f, "  {:>width$}", c, width = w[i])?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tree::{FileData, Stat};

    fn file(size: usize) -> Option<Arc<Inode>> {
        Some(Arc::new(Inode {
            stat: Stat::default(),
            kind: Kind::Regular(FileData::Inline(vec![0; size])),
            xattrs: vec![],
        }))
    }

    fn change(
        path: &str,
        status: Status,
        old: Option<Arc<Inode>>,
        new: Option<Arc<Inode>>,
    ) -> Change {
        Change {
            path: path.as_bytes().to_vec(),
            status,
            aspects: if status == Status::Modified {
                Aspects::CONTENT
            } else {
                Aspects::default()
            },
            old,
            new,
            old_ino: None,
            new_ino: None,
            old_links: vec![],
            new_links: vec![],
        }
    }

    #[test]
    fn groups_and_totals() {
        let dir = Some(Arc::new(Inode::default_dir()));
        let mut s = DiffStat::new();
        s.add(&change("/usr/bin/a", Status::Added, None, file(10)));
        s.add(&change("/usr/bin/b", Status::Modified, file(3), file(5)));
        s.add(&change("/etc", Status::Added, None, dir));
        s.add(&change("/etc/x", Status::Deleted, file(7), None));
        s.add(&change("/top", Status::Deleted, file(1), None));
        assert_eq!(s.groups.len(), 3);
        let usr = s.groups[&b"/usr".to_vec()];
        assert_eq!(
            (usr.added, usr.modified, usr.bytes_added, usr.bytes_removed),
            (1, 1, 15, 3)
        );
        let etc = s.groups[&b"/etc".to_vec()];
        assert_eq!((etc.added, etc.deleted, etc.bytes_removed), (1, 1, 7));
        assert_eq!(s.groups[&b"/".to_vec()].deleted, 1);
        assert_eq!(s.total.paths(), 5);
        let text = s.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("path"));
        assert!(lines[1].starts_with("/ "));
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["total", "2", "2", "1", "15", "11"]
        );
        // Aligned: every line as long as the header.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }
}
