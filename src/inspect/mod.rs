//! Looking at what is stored, as plain data: the summary of any stored
//! tree (`composefs show`: its kind, names, sizes and counts, and what its
//! kind records: an ostree commit's metadata and signatures, an OCI
//! image's manifest and config, a composefs image's header) in
//! [`summary`], and an ostree commit's history as far as it is stored
//! (`composefs ostree log`) in [`log`].
//!
//! Everything here returns data structures that serialise with serde (the
//! `--json` output); the command line only formats them. Nothing here
//! changes the repository.

pub mod log;
pub mod summary;

use anyhow::{Context, Result, bail};

use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::commitstream::CommitStream;
use crate::ostree::objects::Commit;
use crate::repository::{RefKind, Repository};

/// A stored commit's stream and its parsed commit object, checked against
/// its checksum (a damaged stream is an error naming the commit).
pub fn load_commit(repo: &Repository, c: &Checksum) -> Result<(CommitStream, Commit)> {
    let s = CommitStream::open(repo, c)?;
    let commit = commit_of(&s, c)?;
    Ok((s, commit))
}

/// The commit object of `c` in its stream, checked against `c`.
pub fn commit_of(s: &CommitStream, c: &Checksum) -> Result<Commit> {
    let bytes = s
        .metadata(c, ObjType::Commit)
        .with_context(|| format!("stored ostree commit {c}"))?
        .with_context(|| format!("stored ostree commit {c} lacks its commit object"))?;
    let got = Checksum::of(bytes);
    if got != *c {
        bail!("stored ostree commit {c} is damaged: its commit object digests to {got}");
    }
    Commit::parse(bytes).with_context(|| format!("stored ostree commit {c}"))
}

/// Is commit `c` stored (its stream entry `streams/ostree-commit-<c>` exists)?
pub fn commit_stored(repo: &Repository, c: &Checksum) -> bool {
    std::fs::symlink_metadata(
        repo.path()
            .join(RefKind::Stream.dir())
            .join(crate::ostree::commitstream::content_id(c)),
    )
    .is_ok()
}

/// ostree's content checksum of a commit: SHA-256 of the root dirtree's
/// and the root dirmeta's checksums (binary, concatenated).
pub fn content_checksum(c: &Commit) -> Checksum {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(&c.root_tree.0);
    b[32..].copy_from_slice(&c.root_meta.0);
    Checksum::of(&b)
}

/// `secs` since the epoch as ISO 8601 UTC (`2024-01-31T12:00:00Z`).
pub fn iso_utc(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = crate::show::utc_from_unix(secs.min(i64::MAX as u64) as i64);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// The names (refs) that point to the entry `entry` (a content id under
/// `streams/`, or an image's hex digest under `images/`), as the user
/// spells them: `ostree/NAME`, `oci/NAME` (stream refs, named as stored)
/// and `images/NAME` (image refs).
pub fn names_of(repo: &Repository, kind: RefKind, entry: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = repo
        .list_refs(kind)?
        .into_iter()
        .filter(|(_, e)| e == entry)
        .map(|(name, _)| match kind {
            // Image names are refs spelled percent-encoded: shown as named.
            RefKind::Stream => match name.strip_prefix(crate::oci::tags::PREFIX) {
                Some(rest) => format!(
                    "{}{}",
                    crate::oci::tags::PREFIX,
                    crate::oci::tags::decode(rest)
                ),
                None => name,
            },
            RefKind::Image => format!("images/{name}"),
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        // Out-of-range timestamps do not panic.
        let _ = iso_utc(u64::MAX);
    }
}
