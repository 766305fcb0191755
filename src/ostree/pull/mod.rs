//! Pulling a commit: resolve the ref, fetch and verify the commit and its
//! signatures, use a static delta when one fits, then walk the tree
//! breadth-first with a pool of workers fetching what is not stored yet,
//! and finally store everything as one commit splitstream under
//! `streams/refs/ostree/NAME`.
//!
//! Everything fetched is verified before it is used or stored: metadata
//! by the SHA-256 of its bytes, files by ostree's checksum of header and
//! content (computed while the content streams into the object store).
//! A failure leaves no stream and no ref; objects stored before it are
//! unreferenced and go at the next `composefs gc`.

pub(crate) mod fetch;
mod via_delta;
mod walk;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType};
use super::commitstream::{self, Stored};
use super::objects::{Commit, DirTree, check_dict};
use super::partial::PartialLog;
use super::resolve::{self, Resolved};
use super::source::Source;
use super::summary::{MAX_SUMMARY_SIZE, Summary};
use super::trust::{self, Trust};
use crate::net::retry;
use crate::repository::Repository;
use via_delta::{apply_delta, delta_listing, find_delta};
use walk::{Queue, Reuse, Walk};

pub struct PullOptions {
    /// Name under `streams/refs/ostree/` (default: the ref as given).
    pub name: Option<String>,
    /// A stored commit (name or checksum) to prefer as delta base.
    pub base: Option<String>,
    pub no_deltas: bool,
    /// Parallel fetches.
    pub jobs: usize,
    pub trust: Trust,
    /// HTTP connect and read timeout (default: 30 s to connect, 60 s
    /// for any read).
    pub timeout: Option<std::time::Duration>,
}

/// Live counters for progress display.
#[derive(Default)]
pub struct Stats {
    /// Objects the walk knows it needs, and those done (fetched or reused).
    pub objects_total: AtomicU64,
    pub objects_done: AtomicU64,
    pub fetched: AtomicU64,
    pub reused: AtomicU64,
    /// Bytes of content fetched and stored.
    pub bytes: AtomicU64,
    pub delta: Mutex<Option<String>>,
    pub phase: Mutex<&'static str>,
}

#[derive(Debug)]
pub struct PullReport {
    pub commit: Checksum,
    pub name: String,
    pub fetched: u64,
    pub reused: u64,
    pub bytes: u64,
    /// "scratch" or "from <hex>" when a static delta was used.
    pub delta: Option<String>,
    pub signers: Vec<String>,
    pub already_stored: bool,
}

/// Pull `rref` from `source_spec` into `repo`.
pub fn pull(
    repo: &Repository,
    source_spec: &str,
    rref: &str,
    opts: &PullOptions,
    stats: &Stats,
) -> Result<PullReport> {
    repo.ensure_writable()?;
    let _span = tracing::info_span!("pull", r#ref = rref).entered();
    stats.set_phase("resolving");
    let src = super::open_source_with(source_spec, opts.timeout)?;
    let src: &dyn Source = &*src;
    tracing::info!("source {} ({:?} mode)", src.describe(), src.mode());
    let mut target = resolve_target(src, rref, &opts.trust, opts.name.as_deref())?;
    tracing::info!("{rref:?} is commit {}", target.commit);
    if let Some(report) = name_if_stored(repo, src, opts, &mut target)? {
        return Ok(report);
    }

    stats.set_phase("commit");
    let (delta, head) = fetch_commit(repo, src, opts, &mut target, stats)?;
    let commit = target.commit;

    let mut reuse = Reuse::new(repo)?;
    let queue = Queue::new();
    let mut walk = Walk::new(&mut reuse, &queue, stats, src);
    walk.resume(repo, &commit)?;

    let mut delta_used = None;
    if let Some((from, sb)) = &delta {
        stats.set_phase("delta");
        let label = match from {
            None => "scratch".to_string(),
            Some(f) => format!("from {f}"),
        };
        *stats.delta.lock().expect("stats") = Some(label.clone());
        tracing::info!("using the static delta {label} ({} parts)", sb.parts.len());
        apply_delta(src, repo, from.as_ref(), &commit, sb, &mut walk, opts.jobs)?;
        delta_used = Some(label);
    }

    stats.set_phase("objects");
    walk::run(repo, src, &mut walk, &head.parsed, opts.jobs)?;

    tracing::info!(
        "objects: {} fetched, {} reused, {} of content",
        stats.fetched.load(Ordering::Relaxed),
        stats.reused.load(Ordering::Relaxed),
        crate::show::human_bytes(stats.bytes.load(Ordering::Relaxed))
    );
    stats.set_phase("storing");
    store(repo, &mut walk, &commit, head, &target.ref_name)?;
    tracing::info!("stored as {}", target.ref_name);
    Ok(PullReport {
        commit,
        name: target.name,
        fetched: stats.fetched.load(Ordering::Relaxed),
        reused: stats.reused.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        delta: delta_used,
        signers: target.signers,
        already_stored: false,
    })
}

impl Stats {
    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().expect("stats") = phase;
    }
}

/// What a pull is after: the commit a ref resolves to, the name it will be
/// stored under, and the signers checked so far.
pub(crate) struct Target {
    pub(crate) summary: Option<Summary>,
    pub(crate) commit: Checksum,
    pub(crate) name: String,
    pub(crate) ref_name: String,
    pub(crate) signers: Vec<String>,
}

/// Read (and check the signature of) the source's summary, if it has one,
/// and resolve `rref` to a commit, to be stored as `name` (default: the
/// ref as given). Also what a remote commit is opened by
/// ([`crate::ostree::remote`]).
pub(crate) fn resolve_target(
    src: &dyn Source,
    rref: &str,
    trust: &Trust,
    name: Option<&str>,
) -> Result<Target> {
    let summary_bytes = retry(|| src.read("summary", MAX_SUMMARY_SIZE)).context("summary")?;
    let summary = match &summary_bytes {
        Some(b) => {
            Some(Summary::parse(b).with_context(|| format!("summary of {}", src.describe()))?)
        }
        None => None,
    };
    let mut signers = Vec::new();
    if let Some(b) = &summary_bytes {
        signers.extend(trust::check_summary(src, b, trust)?);
    }
    let Resolved {
        commit,
        name: refname,
    } = resolve::resolve(src, summary.as_ref(), rref)?;
    let name = name.map(str::to_string).unwrap_or(refname);
    let ref_name = super::shared::ref_name(&name);
    crate::repository::validate_ref_name(&ref_name)?;
    Ok(Target {
        summary,
        commit,
        name,
        ref_name,
        signers,
    })
}

/// When the commit is stored already: check the signatures on what we
/// hold, then just name it. Stored but unreadable is an error, not a reason
/// to pull it over.
fn name_if_stored(
    repo: &Repository,
    src: &dyn Source,
    opts: &PullOptions,
    target: &mut Target,
) -> Result<Option<PullReport>> {
    let commit = target.commit;
    let stored = super::cache::try_open(repo, &commit).with_context(|| {
        format!(
            "commit {commit} is stored but cannot be read (`composefs fsck` tells what is \
             damaged; delete what names it and gc before pulling it again)"
        )
    })?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    tracing::info!("commit {commit} is stored already: naming it");
    target
        .signers
        .extend(stored_signers(src, &stored, &commit, &opts.trust)?);
    if stored.is_legacy() {
        // Stored by an earlier version: rewritten as cfsctl stores it.
        let mut objects = stored.objects()?;
        super::image::store_pulled(repo, &commit, &mut objects, Some(&target.ref_name))?;
    } else {
        repo.sync()?;
        repo.set_ref(
            crate::repository::RefKind::Stream,
            &target.ref_name,
            &commitstream::content_id(&commit),
        )?;
    }
    // Best effort: the ref is published whatever happens here.
    let _ = PartialLog::discard(repo, &commit);
    Ok(Some(PullReport {
        commit,
        name: target.name.clone(),
        fetched: 0,
        reused: stored.len() as u64,
        bytes: 0,
        delta: None,
        signers: std::mem::take(&mut target.signers),
        already_stored: true,
    }))
}

/// The signatures of `commit`, stored already as `stored`, checked as a
/// pull checks a fetched commit's (the detached metadata, which the shared
/// stream does not hold, asked of the source when keys are given).
pub(crate) fn stored_signers(
    src: &dyn Source,
    stored: &commitstream::CommitStream,
    commit: &Checksum,
    trust: &Trust,
) -> Result<Vec<String>> {
    let cbytes = stored
        .metadata(commit, ObjType::Commit)?
        .context("stored commit lacks its commit object")?;
    let mut meta = stored
        .metadata(commit, ObjType::CommitMeta)?
        .map(<[u8]>::to_vec);
    if meta.is_none() && trust.wants_signatures() {
        meta = retry(|| src.metadata(commit, ObjType::CommitMeta))
            .with_context(|| format!("detached metadata of commit {commit}"))?;
    }
    trust::check_commit(commit, cbytes, meta.as_deref(), trust)
}

/// The commit object, verified, parsed and its signatures checked, with its
/// detached metadata.
pub(crate) struct Head {
    pub(crate) bytes: Vec<u8>,
    pub(crate) parsed: Commit,
    pub(crate) meta: Option<Vec<u8>>,
}

/// A static delta to use: its base (`None`: from scratch) and superblock.
type ChosenDelta = (Option<Checksum>, super::delta::Superblock);

/// Fetch the commit: from a static delta's superblock when one fits (it
/// carries the commit and its detached metadata, so a delta pull makes no
/// object requests), else as an object.
fn fetch_commit(
    repo: &Repository,
    src: &dyn Source,
    opts: &PullOptions,
    target: &mut Target,
    stats: &Stats,
) -> Result<(Option<ChosenDelta>, Head)> {
    let commit = target.commit;
    let mut delta = None;
    let mut fetched_commit = None;
    if !opts.no_deltas {
        let base = match &opts.base {
            Some(b) => Some(resolve::stored_commit(repo, b)?),
            None => None,
        };
        let listed = delta_listing(src, target.summary.as_ref(), &commit)?;
        // Without a listing, deltas are probed for: from the parent.
        let parent = if listed.is_none() {
            let b = fetch::fetch_meta(src, &commit, ObjType::Commit)?;
            let p = Commit::parse(&b)
                .with_context(|| format!("commit {commit}"))?
                .parent;
            fetched_commit = Some(b);
            p
        } else {
            None
        };
        delta = find_delta(src, listed.as_ref(), repo, &commit, parent, base)?;
    }
    let (cbytes, commitmeta) = match (&delta, fetched_commit) {
        (Some((_, sb)), _) => (sb.commit.clone(), sb.detached_metadata.clone()),
        (None, Some(b)) => (b, None),
        (None, None) => (fetch::fetch_meta(src, &commit, ObjType::Commit)?, None),
    };
    let fetch_detached = delta.is_none() || opts.trust.wants_signatures();
    let (head, signers) = check_head(
        src,
        &commit,
        cbytes,
        commitmeta,
        fetch_detached,
        &opts.trust,
    )?;
    target.signers.extend(signers);
    stats
        .fetched
        .fetch_add(1 + head.meta.is_some() as u64, Ordering::Relaxed);
    Ok((delta, head))
}

/// Commit `commit` from its bytes `cbytes` (fetched, or from a delta's
/// superblock, or logged) and its detached metadata (from the superblock,
/// logged, or fetched here when absent and `fetch_detached`): verified by
/// its checksum, parsed, and its signatures checked by `trust`. Returns it
/// with who signed it.
pub(crate) fn check_head(
    src: &dyn Source,
    commit: &Checksum,
    cbytes: Vec<u8>,
    mut commitmeta: Option<Vec<u8>>,
    fetch_detached: bool,
    trust: &Trust,
) -> Result<(Head, Vec<String>)> {
    if commitmeta.is_none() && fetch_detached {
        commitmeta = retry(|| src.metadata(commit, ObjType::CommitMeta))
            .with_context(|| format!("detached metadata of commit {commit}"))?;
    }
    fetch::verify_meta(commit, ObjType::Commit, &cbytes)?;
    let parsed = Commit::parse(&cbytes).with_context(|| format!("commit {commit}"))?;
    if let Some(m) = &commitmeta {
        check_dict("detached commit metadata", m)
            .with_context(|| format!("detached metadata of commit {commit}"))?;
    }
    let signers = trust::check_commit(commit, &cbytes, commitmeta.as_deref(), trust)?;
    Ok((
        Head {
            bytes: cbytes,
            parsed,
            meta: commitmeta,
        },
        signers,
    ))
}

/// Check the walked tree, store everything as the commit's stream, publish
/// the ref, record the objects in the index, and drop the resume log.
fn store(
    repo: &Repository,
    walk: &mut Walk<'_, '_>,
    commit: &Checksum,
    head: Head,
    ref_name: &str,
) -> Result<()> {
    let mut objects = std::mem::take(&mut walk.objects);
    // Refuse trees that expand beyond what can be checked out or imaged.
    super::tree::check_expansion(&head.parsed.root_tree, &mut |t| match objects
        .get(&(*t, ObjType::DirTree))
    {
        Some(Stored::Meta(d)) => DirTree::parse(d).with_context(|| format!("dirtree {t}")),
        _ => bail!("dirtree {t} is missing"),
    })
    .with_context(|| format!("commit {commit}"))?;
    let log = walk.log.take();
    objects.insert((*commit, ObjType::Commit), Stored::Meta(head.bytes));
    if let Some(m) = head.meta {
        objects.insert((*commit, ObjType::CommitMeta), Stored::Meta(m));
    }
    // The index learns the commit's objects there too.
    super::image::store_pulled(repo, commit, &mut objects, Some(ref_name))?;
    if let Some(l) = log {
        l.remove()?;
    }
    Ok(())
}
