//! Signature policy for pulls: which keys the user trusts and what an
//! unsigned or badly signed commit (or summary) means.
//!
//! - No keys, no `--require-signatures`: signatures are not checked.
//! - Keys given: a commit (or summary) that carries signatures must have
//!   at least one good one from a trusted key; unsigned passes.
//! - `--require-signatures`: the commit must carry a good signature; a
//!   signed summary must verify too.

use anyhow::{Result, bail};

use super::checksum::Checksum;
use super::signature::{self, Ed25519Keys, Keyring, Verdict};
use super::source::Source;
use crate::net::retry;

#[derive(Default)]
pub struct Trust {
    pub gpg: Option<Keyring>,
    pub ed25519: Option<Ed25519Keys>,
    pub require: bool,
}

impl Trust {
    fn has_keys(&self) -> bool {
        self.gpg.is_some() || self.ed25519.is_some()
    }

    /// Will commits' signatures be checked?
    pub fn wants_signatures(&self) -> bool {
        self.has_keys() || self.require
    }
}

fn verify(data: &[u8], detached: Option<&[u8]>, trust: &Trust) -> Verdict {
    let mut v = Verdict::default();
    if let Some(k) = &trust.gpg {
        let r = signature::verify_gpg(data, detached, k);
        v.good.extend(r.good);
        v.bad.extend(r.bad);
    }
    if let Some(k) = &trust.ed25519 {
        let r = signature::verify_ed25519(data, detached, k);
        v.good.extend(r.good);
        v.bad.extend(r.bad);
    }
    v
}

fn signed(detached: Option<&[u8]>) -> bool {
    detached.is_some_and(|d| {
        ["ostree.gpgsigs", "ostree.sign.ed25519"]
            .iter()
            .any(|k| super::objects::meta_bytes_list(d, k).is_some_and(|l| !l.is_empty()))
    })
}

/// Check a commit's signatures; returns who signed (for the report).
pub fn check_commit(
    commit: &Checksum,
    data: &[u8],
    detached: Option<&[u8]>,
    trust: &Trust,
) -> Result<Vec<String>> {
    if trust.require && !trust.has_keys() {
        bail!(
            "--require-signatures needs trusted keys (--gpg-keyring, --ed25519-key or --ed25519-keyfile)"
        );
    }
    if !trust.has_keys() {
        return Ok(Vec::new());
    }
    let v = verify(data, detached, trust);
    if v.good.is_empty() {
        if !signed(detached) {
            if trust.require {
                bail!("commit {commit} is not signed, and --require-signatures was given");
            }
            return Ok(Vec::new());
        }
        bail!(
            "commit {commit}: no good signature from a trusted key ({})",
            if v.bad.is_empty() {
                "no signature of a kind we were given keys for".to_string()
            } else {
                v.bad.join("; ")
            }
        );
    }
    Ok(v.good
        .iter()
        .map(|s| format!("commit {commit}: {s}"))
        .collect())
}

/// Check `summary.sig` if the summary is signed and keys are given.
pub fn check_summary(src: &dyn Source, summary: &[u8], trust: &Trust) -> Result<Vec<String>> {
    if !trust.has_keys() {
        return Ok(Vec::new());
    }
    let Some(sig) = retry(|| src.read("summary.sig", 16 << 20))? else {
        return Ok(Vec::new());
    };
    let v = verify(summary, Some(&sig), trust);
    if v.good.is_empty() {
        if trust.require || signed(Some(&sig)) {
            bail!(
                "summary of {}: no good signature from a trusted key ({})",
                src.describe(),
                if v.bad.is_empty() {
                    "no usable signature".to_string()
                } else {
                    v.bad.join("; ")
                }
            );
        }
        return Ok(Vec::new());
    }
    Ok(v.good.iter().map(|s| format!("summary: {s}")).collect())
}
