//! The `summary` file of an ostree repository `(a(s(taya{sv}))a{sv})`:
//! its refs with commit, size and timestamp, and the static deltas it
//! offers (inline, or through `delta-indexes/`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use gvariant::{Marker, Structure, gv};

use super::checksum::Checksum;

/// Largest summary we read.
pub const MAX_SUMMARY_SIZE: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct SummaryRef {
    pub commit: Checksum,
    pub size: u64,
    pub timestamp: Option<u64>,
    pub version: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub refs: BTreeMap<String, SummaryRef>,
    /// Delta name (`TO` or `FROM-TO`, hex) → superblock checksum.
    pub deltas: BTreeMap<String, Checksum>,
    /// Deltas are listed in `delta-indexes/` instead.
    pub indexed_deltas: bool,
}

fn t_be(v: &gvariant::Variant) -> Option<u64> {
    v.get(gv!("t")).map(|t| u64::from_be(*t))
}

/// Parse an `a{sv}` of delta name → `ay` superblock checksum.
fn parse_delta_dict(v: &gvariant::Variant, out: &mut BTreeMap<String, Checksum>) {
    if let Some(d) = v.get(gv!("a{sv}")) {
        for e in d {
            let (k, v) = e.to_tuple();
            if let Some(b) = v.get(gv!("ay"))
                && let Ok(c) = Checksum::from_bytes(b)
            {
                out.insert(k.to_str().to_string(), c);
            }
        }
    }
}

impl Summary {
    pub fn parse(data: &[u8]) -> Result<Summary> {
        let v = gv!("(a(s(taya{sv}))a{sv})").from_bytes(data);
        let (refs, meta) = v.to_tuple();
        let mut s = Summary::default();
        for r in refs {
            let (name, info) = r.to_tuple();
            let (size, csum, rmeta) = info.to_tuple();
            let commit = Checksum::from_bytes(csum)
                .with_context(|| format!("summary ref {:?}", name.to_str()))?;
            let mut timestamp = None;
            let mut version = None;
            for e in rmeta {
                let (k, v) = e.to_tuple();
                match k.to_str() {
                    "ostree.commit.timestamp" => timestamp = t_be(v),
                    "ostree.commit.version" => {
                        version = v.get(gv!("s")).map(|s| s.to_str().to_string())
                    }
                    _ => {}
                }
            }
            s.refs.insert(
                name.to_str().to_string(),
                SummaryRef {
                    commit,
                    size: u64::from_be(*size),
                    timestamp,
                    version,
                },
            );
        }
        for e in meta {
            let (k, v) = e.to_tuple();
            match k.to_str() {
                "ostree.static-deltas" => parse_delta_dict(v, &mut s.deltas),
                "ostree.summary.indexed-deltas" => {
                    s.indexed_deltas = v.get(gv!("b")).is_some_and(|b| b.to_bool())
                }
                _ => {}
            }
        }
        Ok(s)
    }
}

/// `delta-indexes/XX/REST.index` for commit `to`.
pub fn delta_index_path(to: &Checksum) -> String {
    let b = to.to_b64();
    format!("delta-indexes/{}/{}.index", &b[..2], &b[2..])
}

/// Parse a delta index file (`a{sv}` with `ostree.static-deltas`).
pub fn parse_delta_index(data: &[u8]) -> BTreeMap<String, Checksum> {
    let mut out = BTreeMap::new();
    for e in &*gv!("a{sv}").from_bytes(data) {
        let (k, v) = e.to_tuple();
        if k.to_str() == "ostree.static-deltas" {
            parse_delta_dict(v, &mut out);
        }
    }
    out
}

/// Refs by name, each with the commit it names.
pub type RefList = Vec<(String, Checksum)>;

/// The refs of the repository `src` (`spec` names it in messages), and
/// its summary if it has one: the refs its file listing gives (a local
/// repository), else the summary's. A repository served over HTTP
/// without a summary cannot be listed: an error says so. What `composefs
/// ostree ls-remote` and the live view's `remotes/NAME/` list.
pub fn remote_refs(
    src: &dyn super::source::Source,
    spec: &str,
) -> Result<(Option<Summary>, RefList)> {
    let summary = crate::net::retry(|| src.read("summary", MAX_SUMMARY_SIZE))?
        .map(|b| Summary::parse(&b))
        .transpose()
        .with_context(|| format!("summary of {spec}"))?;
    let mut refs: Vec<(String, Checksum)> = match (&summary, src.list_refs()?) {
        (_, Some(l)) => l,
        (Some(s), None) => s.refs.iter().map(|(n, r)| (n.clone(), r.commit)).collect(),
        (None, None) => anyhow::bail!(
            "{spec} has no summary file; its refs cannot be listed over HTTP (run `ostree summary -u` on the server)"
        ),
    };
    refs.sort();
    Ok((summary, refs))
}
