//! Which repository object holds a content a lazy registry tree fetched,
//! by the content's sha256 (what a table of contents names it by), kept
//! across trees and mounts in `oci-lazy/contents` beside the repository's
//! objects: a second mount of the same image (or another image sharing
//! files) reads what the first fetched. A cache: records are appended
//! whole in one write each (`O_APPEND`, so concurrent mounts may share
//! it); a torn tail is ignored; an object `gc` took since is fetched again
//! (the caller checks it is stored).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::fsverity::{Algorithm, ObjectId};
use crate::repository::Repository;

pub(super) struct Memo {
    path: PathBuf,
    file: File,
    alg: Algorithm,
}

impl Memo {
    /// Open (or create) the repository's memo, with what it holds.
    pub(super) fn open(repo: &Repository) -> Result<(Memo, HashMap<[u8; 32], ObjectId>)> {
        let dir = repo.path().join("oci-lazy");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("contents");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let alg = repo.algorithm();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let rec = 32 + alg.digest_len();
        let known = bytes
            .chunks_exact(rec)
            .filter_map(|r| {
                let sha: [u8; 32] = r[..32].try_into().ok()?;
                Some((sha, ObjectId::from_bytes(alg, &r[32..])?))
            })
            .collect();
        Ok((Memo { path, file, alg }, known))
    }

    /// Note that `id` holds the content whose sha256 is `sha`.
    pub(super) fn record(&self, sha: &[u8; 32], id: &ObjectId) -> Result<()> {
        if id.algorithm() != self.alg {
            return Ok(());
        }
        let mut rec = Vec::with_capacity(32 + self.alg.digest_len());
        rec.extend_from_slice(sha);
        rec.extend_from_slice(id.as_bytes());
        (&self.file)
            .write_all(&rec)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(&tmp.path().join("r"), Algorithm::Sha512).unwrap();
        let id = crate::fsverity::digest_bytes(Algorithm::Sha512, b"content");
        {
            let (m, known) = Memo::open(&repo).unwrap();
            assert!(known.is_empty());
            m.record(&[7; 32], &id).unwrap();
        }
        // Half a record, as a crash mid-write would leave.
        let path = repo.path().join("oci-lazy/contents");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9; 40]).unwrap();
        let (_, known) = Memo::open(&repo).unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known[&[7; 32]], id);
    }
}
