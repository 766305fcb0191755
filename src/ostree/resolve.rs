//! Which commit a ref names: in the source (`main`, `heads/main`,
//! `refs/heads/main`, `origin:main`, `refs/remotes/origin/main`,
//! `refs/mirrors/…`, a full checksum or a unique prefix), and among the
//! commits stored in our repository (by name or checksum).

use anyhow::{Context, Result, bail};

use super::checksum::Checksum;
use super::index;
use super::source::Source;
use super::summary::Summary;
use crate::net::retry;
use crate::repository::{RefKind, Repository};

pub struct Resolved {
    pub commit: Checksum,
    /// The ref as given (its name for storing), or the full checksum.
    pub name: String,
}

/// Candidate ref file paths for `r`, most specific first.
fn ref_paths(r: &str) -> Vec<String> {
    if r.starts_with("refs/") {
        return vec![r.to_string()];
    }
    if let Some((remote, name)) = r.split_once(':') {
        return vec![format!("refs/remotes/{remote}/{name}")];
    }
    for p in ["heads/", "remotes/", "mirrors/"] {
        if r.starts_with(p) {
            return vec![format!("refs/{r}")];
        }
    }
    vec![
        format!("refs/heads/{r}"),
        format!("refs/remotes/{r}"),
        format!("refs/mirrors/{r}"),
    ]
}

/// The summary's name for a ref (`heads/` names are bare).
fn summary_name(r: &str) -> &str {
    r.strip_prefix("refs/heads/")
        .or_else(|| r.strip_prefix("heads/"))
        .unwrap_or(r)
}

fn check_ref_syntax(r: &str) -> Result<()> {
    if r.is_empty()
        || r.contains('\0')
        || r.contains("..")
        || r.starts_with('/')
        || r.split('/').any(|c| c.is_empty() || c == ".")
    {
        bail!("invalid ref {r:?}");
    }
    Ok(())
}

pub fn resolve(src: &dyn Source, summary: Option<&Summary>, r: &str) -> Result<Resolved> {
    if r.len() == 64
        && let Ok(c) = Checksum::from_hex(r)
    {
        return Ok(Resolved {
            commit: c,
            name: c.to_hex(),
        });
    }
    check_ref_syntax(r)?;
    if let Some(s) = summary
        && let Some(e) = s.refs.get(summary_name(r))
    {
        return Ok(Resolved {
            commit: e.commit,
            name: r.to_string(),
        });
    }
    for p in ref_paths(r) {
        if let Some(b) = retry(|| src.read(&p, 1024))? {
            let text = String::from_utf8_lossy(&b);
            let c = Checksum::from_hex(text.trim())
                .with_context(|| format!("ref {p} in {}", src.describe()))?;
            return Ok(Resolved {
                commit: c,
                name: r.to_string(),
            });
        }
    }
    // A unique prefix of a commit checksum.
    if r.len() >= 4 && r.len() < 64 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        let lower = r.to_ascii_lowercase();
        let mut found: Vec<Checksum> = Vec::new();
        if let Some(refs) = src.list_refs()? {
            found.extend(
                refs.iter()
                    .map(|(_, c)| *c)
                    .filter(|c| c.to_hex().starts_with(&lower)),
            );
        }
        if let Some(s) = summary {
            found.extend(
                s.refs
                    .values()
                    .map(|e| e.commit)
                    .filter(|c| c.to_hex().starts_with(&lower)),
            );
        }
        found.extend(local_commits_with_prefix(src, &lower));
        found.sort();
        found.dedup();
        match found.len() {
            1 => {
                return Ok(Resolved {
                    commit: found[0],
                    name: found[0].to_hex(),
                });
            }
            0 => {}
            n => bail!(
                "{r:?} is ambiguous: {n} commits in {} start with it",
                src.describe()
            ),
        }
    }
    bail!("ref {r:?} not found in {}", src.describe())
}

/// Commits in a local repository whose checksum starts with `prefix`.
fn local_commits_with_prefix(src: &dyn Source, prefix: &str) -> Vec<Checksum> {
    let desc = src.describe();
    let dir = std::path::Path::new(&desc)
        .join("objects")
        .join(&prefix[..2]);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let rest = name.strip_suffix(".commit")?;
        let c = Checksum::from_hex(&format!("{}{rest}", &prefix[..2])).ok()?;
        c.to_hex().starts_with(prefix).then_some(c)
    })
    .collect()
}

/// A commit stored in our repository, by name (`streams/refs/ostree/NAME`),
/// full checksum or unique prefix.
pub fn stored_commit(repo: &Repository, name: &str) -> Result<Checksum> {
    // The ref as composefs-rs spells it (`/` escaped), then as earlier
    // versions of this tool did (`/` as directories; also the escaped
    // spelling given literally).
    for r in [super::shared::ref_name(name), format!("ostree/{name}")] {
        if let Ok(r) = repo.resolve(RefKind::Stream, &r)
            && let Some(entry) = r.entry
            && let Some(hex) = entry.strip_prefix("ostree-commit-")
        {
            return Checksum::from_hex(hex);
        }
    }
    let lower = name.to_ascii_lowercase();
    if lower.len() >= 4 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        let found: Vec<Checksum> = index::stored_commits(repo)?
            .into_iter()
            .filter(|c| c.to_hex().starts_with(&lower))
            .collect();
        match found.len() {
            1 => return Ok(found[0]),
            0 => {}
            n => bail!("{name:?} is ambiguous: {n} stored commits start with it"),
        }
    }
    bail!("no stored ostree commit named {name:?} (see `composefs ostree list`)")
}
