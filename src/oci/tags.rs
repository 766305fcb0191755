//! Image names ("tags") as refs, spelled as composefs-rs spells them.
//!
//! A pulled image's name `NAME` is the ref `streams/refs/oci/ENC`, where
//! `ENC` is `NAME` with every `%` written `%25` and every `/` written `%2F`
//! (in that order), so any name is one path component. Decoding reads
//! left to right and turns only `%2F` and `%25` back; any other `%` stays.
//!
//! Older versions of this tool wrote the name as it is, a `/` making
//! nested directories (`streams/refs/oci/reg/app:1`). Such refs are still
//! read: [`lookup`] tries the encoded spelling first, then the nested one,
//! and listing decodes each ref's path below `oci/` (a nested path has no
//! `%2F` and decodes to itself), so an old image lists under the name it was
//! pulled as. A new pull or tag of that name replaces the nested ref.

use anyhow::{Result, bail};

use crate::repository::{RefKind, Repository};

/// Below `streams/refs/`: the namespace of image names.
pub const PREFIX: &str = "oci/";

/// `NAME` as one path component.
pub fn encode(name: &str) -> String {
    crate::repository::encode_ref_component(name)
}

/// The name an encoded component (or an old nested path) stands for.
pub fn decode(encoded: &str) -> String {
    crate::repository::decode_ref_component(encoded)
}

/// The ref (below `streams/refs/`) a name is written as.
pub fn ref_name(name: &str) -> Result<String> {
    check(name)?;
    Ok(format!("{PREFIX}{}", encode(name)))
}

/// Names composefs-rs would refuse, or that cannot be a ref.
pub fn check(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("image name is empty");
    }
    if name.starts_with('@') {
        bail!("image name {name:?}: a leading '@' is reserved for digests");
    }
    crate::repository::validate_ref_name(&format!("{PREFIX}{}", encode(name)))
}

/// The ref a stored name is under: the encoded one, else an old nested
/// one; `None` when neither exists.
pub fn lookup(repo: &Repository, name: &str) -> Result<Option<(String, String)>> {
    let mut candidates = vec![ref_name(name)?];
    if name.contains('/') && crate::repository::validate_ref_name(name).is_ok() {
        candidates.push(format!("{PREFIX}{name}"));
    }
    for r in candidates {
        if let Some(entry) = repo.ref_entry(RefKind::Stream, &r)? {
            return Ok(Some((r, entry)));
        }
    }
    Ok(None)
}

/// Point `name` at the manifest stream entry `entry`; an old nested ref of
/// the same name is removed.
pub fn set(repo: &Repository, name: &str, entry: &str) -> Result<()> {
    let r = ref_name(name)?;
    repo.set_ref(RefKind::Stream, &r, entry)?;
    if name.contains('/') {
        let old = format!("{PREFIX}{name}");
        if crate::repository::validate_ref_name(&old).is_ok()
            && repo.ref_entry(RefKind::Stream, &old)?.is_some()
        {
            repo.remove_ref(RefKind::Stream, &old)?;
        }
    }
    Ok(())
}

/// Every name: `(name, ref, entry)`, sorted by name.
pub fn list(repo: &Repository) -> Result<Vec<(String, String, String)>> {
    let mut out: Vec<(String, String, String)> = repo
        .list_refs(RefKind::Stream)?
        .into_iter()
        .filter_map(|(r, entry)| {
            let rest = r.strip_prefix(PREFIX)?;
            Some((decode(rest), r.clone(), entry))
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        for n in [
            "a",
            "reg/app:1",
            "100%",
            "%2F",
            "a/%25/b",
            "%zz",
            "%2",
            "x%",
        ] {
            assert_eq!(decode(&encode(n)), n, "{n:?}");
            assert!(!encode(n).contains('/'));
        }
        assert_eq!(encode("reg/app:1"), "reg%2Fapp:1");
        assert_eq!(encode("a%/b"), "a%25%2Fb");
        assert_eq!(decode("%252F"), "%2F");
        assert_eq!(decode("a/b"), "a/b");
    }

    #[test]
    fn leading_at_is_refused() {
        assert!(check("@sha256:00").is_err());
        assert!(check("").is_err());
        assert!(check("..").is_err());
        assert!(check("x/..").is_ok());
    }
}
