//! Pulling through a static delta: finding one that fits (listed in the
//! summary or its delta index, or probed for from the parent), then applying
//! its parts in parallel, each object verified as it comes out of a part.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use super::fetch::{store_whole_file, verify_meta};
use super::walk::Walk;
use crate::net::retry;
use crate::ostree::checksum::{Checksum, ObjType, delta_name};
use crate::ostree::commitstream::{CommitStream, Content, Entry, Stored};
use crate::ostree::delta::{self, DeltaSink, PartMeta};
use crate::ostree::index;
use crate::ostree::objects::{FileHeader, MAX_METADATA_SIZE};
use crate::ostree::source::Source;
use crate::ostree::summary::{self, Summary};
use crate::repository::Repository;

/// Delta names (`FROM-TO`, or `TO` from scratch) and their superblocks' checksums.
pub(super) type DeltaList = std::collections::BTreeMap<String, Checksum>;

/// The deltas the source lists for `to`: from the summary, or its
/// `delta-indexes/` file; `None` without a summary (deltas are probed).
pub(super) fn delta_listing(
    src: &dyn Source,
    summary: Option<&Summary>,
    to: &Checksum,
) -> Result<Option<DeltaList>> {
    Ok(match summary {
        Some(s) if s.indexed_deltas => Some(
            retry(|| src.read(&summary::delta_index_path(to), MAX_METADATA_SIZE as u64))?
                .map(|d| summary::parse_delta_index(&d))
                .unwrap_or_default(),
        ),
        Some(s) => Some(s.deltas.clone()),
        None => None,
    })
}

/// Find a static delta to `to`: from the base or the parent if stored (or
/// any stored commit the listing has a delta from), else from scratch when
/// no base is stored. Returns (from, superblock).
pub(super) fn find_delta(
    src: &dyn Source,
    listed: Option<&DeltaList>,
    repo: &Repository,
    to: &Checksum,
    parent: Option<Checksum>,
    base: Option<Checksum>,
) -> Result<Option<(Option<Checksum>, delta::Superblock)>> {
    let stored: HashSet<Checksum> = index::stored_commits(repo)?.into_iter().collect();
    let mut froms: Vec<Checksum> = base
        .into_iter()
        .chain(parent)
        .filter(|c| stored.contains(c))
        .collect();
    froms.dedup();
    if let Some(l) = listed {
        // Any stored commit with a delta to `to` is a basis too.
        for name in l.keys() {
            if let Some((f, t)) = name.split_once('-')
                && t == to.to_hex()
                && let Ok(f) = Checksum::from_hex(f)
                && stored.contains(&f)
                && !froms.contains(&f)
            {
                froms.push(f);
            }
        }
    }
    let have_basis = !froms.is_empty();
    let mut candidates: Vec<Option<Checksum>> = froms.into_iter().map(Some).collect();
    if !have_basis {
        candidates.push(None);
    }
    for from in candidates {
        let expected = match listed {
            Some(l) => match l.get(&delta_name(from.as_ref(), to)) {
                Some(c) => Some(*c),
                None => continue,
            },
            None => None,
        };
        let path = delta::superblock_path(from.as_ref(), to);
        let Some(data) = retry(|| src.read(&path, 1 << 30))? else {
            if expected.is_some() {
                bail!("delta superblock {path} is listed but missing");
            }
            continue;
        };
        if let Some(e) = expected {
            let got = Checksum::of(&data);
            if got != e {
                bail!("delta superblock {path}: checksum mismatch (expected {e}, got {got})");
            }
        }
        let sb =
            delta::parse_superblock(&data).with_context(|| format!("delta superblock {path}"))?;
        if sb.to != *to || sb.from != from {
            bail!("delta superblock {path} is for another commit pair");
        }
        if Checksum::of(&sb.commit) != *to {
            bail!("delta superblock {path}: its commit does not match {to}");
        }
        return Ok(Some((from, sb)));
    }
    Ok(None)
}

/// Sink for one delta part: verifies and stores what the part produces.
struct PartSink<'a> {
    repo: &'a Repository,
    from: Option<&'a CommitStream>,
    out: Vec<Entry>,
    bytes: u64,
}

impl DeltaSink for PartSink<'_> {
    fn metadata(&mut self, objtype: ObjType, checksum: Checksum, data: Vec<u8>) -> Result<()> {
        verify_meta(&checksum, objtype, &data)?;
        self.bytes += data.len() as u64;
        self.out.push(((checksum, objtype), Stored::Meta(data)));
        Ok(())
    }

    fn file(&mut self, checksum: Checksum, header: FileHeader, content: &[u8]) -> Result<()> {
        let s = store_whole_file(self.repo, &checksum, &header, content)?;
        self.bytes += content.len() as u64;
        self.out.push(((checksum, ObjType::File), s));
        Ok(())
    }

    fn read_source(&mut self, checksum: Checksum) -> Result<Vec<u8>> {
        let from = self
            .from
            .context("delta reads a source object but has no base commit")?;
        let (_, _, content) = from
            .file(&checksum)?
            .with_context(|| format!("delta source object {checksum} is not in the base commit"))?;
        match content {
            Content::Inline(b) => Ok(b),
            Content::External(id) => {
                let mut f = self.repo.open_object(&id)?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok(buf)
            }
        }
    }
}

pub(super) fn apply_delta(
    src: &dyn Source,
    repo: &Repository,
    from: Option<&Checksum>,
    to: &Checksum,
    sb: &delta::Superblock,
    walk: &mut Walk<'_, '_>,
    jobs: usize,
) -> Result<()> {
    let from_stream = match from {
        Some(f) => Some(CommitStream::open(repo, f)?),
        None => None,
    };
    // Parts whose objects we all hold already are skipped.
    let needed: Vec<&PartMeta> = sb
        .parts
        .iter()
        .filter(|p| {
            p.objects.iter().any(|(t, c)| {
                !walk.objects.contains_key(&(*c, *t)) && walk.reuse.index.lookup(c, *t).is_none()
            })
        })
        .collect();
    walk.stats.objects_total.fetch_add(
        needed.iter().map(|p| p.objects.len() as u64).sum(),
        Ordering::Relaxed,
    );
    let stats = walk.stats;
    let next = AtomicU64::new(0);
    let results: Mutex<Vec<Result<Vec<Entry>>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, needed.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(part) = needed.get(i) else { break };
                    let r = (|| -> Result<_> {
                        let path = delta::part_path(from, to, part.index);
                        let raw = match &part.inline {
                            Some(b) => b.clone(),
                            None => retry(|| src.read(&path, part.size.max(1) + (1 << 20)))?
                                .with_context(|| format!("delta part {path} not found"))?,
                        };
                        let mut sink = PartSink {
                            repo,
                            from: from_stream.as_ref(),
                            out: Vec::new(),
                            bytes: 0,
                        };
                        delta::apply_part(part, &raw, &mut sink)
                            .with_context(|| format!("delta part {path}"))?;
                        stats.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
                        stats
                            .objects_done
                            .fetch_add(sink.out.len() as u64, Ordering::Relaxed);
                        stats
                            .fetched
                            .fetch_add(sink.out.len() as u64, Ordering::Relaxed);
                        Ok(sink.out)
                    })();
                    let bad = r.is_err();
                    results.lock().expect("results").push(r);
                    if bad {
                        next.store(u64::MAX / 2, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    for r in results.into_inner().expect("results") {
        for (k, s) in r? {
            walk.objects.insert(k, s);
        }
    }
    Ok(())
}
