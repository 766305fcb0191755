//! `composefs ostree …`: pull, ls-remote, list, log, create-image.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::image_cmds::format_time;
use super::repo_cmds::{open, write_json};
use crate::inspect::iso_utc;
use crate::ostree::commitstream::CommitStream;
use crate::ostree::objects::Commit;
use crate::ostree::pull::{PullOptions, Stats, pull};
use crate::ostree::{Checksum, ObjType, resolve, tree};
use crate::repository::{RefKind, Repository};
use crate::show::human_bytes;

#[derive(Subcommand, Debug)]
pub enum OstreeCommand {
    /// Pull a commit from an ostree repository (local path, file://, http(s)://)
    Pull(PullArgs),
    /// List the refs of an ostree repository with commit, timestamp and version
    LsRemote {
        /// Local path or URL of the ostree repository
        source: String,
        /// Print a JSON array, one object per ref: `ref`, `commit`,
        /// `timestamp` (seconds), `date` (RFC 3339 UTC), `version` (null
        /// when unknown)
        #[arg(long)]
        json: bool,
    },
    /// List the stored ostree commits with their names
    List {
        /// Print a JSON array, one object per stored name: `name`,
        /// `commit`, `timestamp` (seconds), `date` (RFC 3339 UTC), `version`
        /// (null when the commit has none), `subject`
        #[arg(long)]
        json: bool,
    },
    /// Show a stored commit and its ancestors, as far as they are stored
    Log(super::show_cmds::LogArgs),
    /// Build the composefs image of a stored commit (its tree as `ostree checkout`
    /// shows it) in the repository's EROFS format and record it on the commit
    /// (as cfsctl does); prints its id
    CreateImage {
        /// Name (as pulled) or commit checksum
        name: String,
        /// Also name the image images/refs/N
        #[arg(long, value_name = "N")]
        image_name: Option<String>,
        /// Write this image format version (0 or 1) instead of the
        /// repository's, with xattr names as a kernel mount looks them up
        /// (composefs-rs's image keeps ostree's trailing NUL on them); such
        /// an image is stored but not recorded on the commit
        #[arg(long, value_name = "N")]
        min_version: Option<u32>,
    },
    /// Print the id of the composefs image of a stored commit (in the
    /// repository's EROFS format), storing nothing
    ComputeId {
        /// Name (as pulled) or commit checksum
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Local path, file:// or http(s):// URL of the ostree repository
    source: String,
    /// Ref (`main`, `heads/main`, `origin:main`, `refs/…`), commit checksum or unique prefix
    #[arg(name = "REF")]
    rref: String,
    /// Store as streams/refs/ostree/NAME (default: the ref as given)
    #[arg(long)]
    name: Option<String>,
    /// A stored commit to use as the static delta base
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// Never use static deltas
    #[arg(long)]
    no_deltas: bool,
    /// Parallel transfers (default: 8 for HTTP, 3 per CPU for local: reads overlap)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    #[command(flatten)]
    trust: super::remote_args::TrustArgs,
    /// HTTP: give up on a connection or read after SECONDS (then retry);
    /// default 30 to connect, 60 per read
    #[arg(long, value_name = "SECONDS", value_parser = super::parse_seconds)]
    timeout: Option<std::time::Duration>,
}

pub fn run(repo: Option<&Path>, cmd: OstreeCommand) -> Result<ExitCode> {
    match cmd {
        OstreeCommand::Pull(a) => pull_cmd(repo, a),
        OstreeCommand::LsRemote { source, json } => ls_remote(&source, json),
        OstreeCommand::List { json } => list(repo, json),
        OstreeCommand::Log(a) => super::show_cmds::ostree_log(repo, &a),
        OstreeCommand::CreateImage {
            name,
            image_name,
            min_version,
        } => create_image(repo, &name, image_name.as_deref(), min_version),
        OstreeCommand::ComputeId { name } => compute_id(repo, &name),
    }
}

/// Draw bars from `stats` on stderr until `done`.
fn progress_thread(stats: &Stats, done: &std::sync::atomic::AtomicBool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    let objects = multi.add(
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {pos}/{len} objects, eta {eta} {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        ),
    );
    let bytes = multi.add(
        ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(
                "{prefix:>8} {bytes} at {bytes_per_sec}, elapsed {elapsed}",
            )
            .expect("template"),
        ),
    );
    bytes.set_prefix("data");
    while !done.load(Ordering::Relaxed) {
        let total = stats.objects_total.load(Ordering::Relaxed);
        let d = stats.objects_done.load(Ordering::Relaxed);
        objects.set_length(total.max(d));
        objects.set_position(d);
        objects.set_prefix(*stats.phase.lock().expect("stats"));
        let delta = stats.delta.lock().expect("stats").clone();
        objects.set_message(format!(
            "(fetched {}, reused {}{})",
            stats.fetched.load(Ordering::Relaxed),
            stats.reused.load(Ordering::Relaxed),
            delta.map(|d| format!(", delta {d}")).unwrap_or_default()
        ));
        bytes.set_position(stats.bytes.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    objects.finish_and_clear();
    bytes.finish_and_clear();
}

fn pull_cmd(repo: Option<&Path>, a: PullArgs) -> Result<ExitCode> {
    let r = open(repo)?;
    let is_http = a.source.starts_with("http://") || a.source.starts_with("https://");
    let jobs = a.jobs.unwrap_or_else(|| {
        if is_http {
            8
        } else {
            (3 * super::image_cmds::threads(None)).clamp(4, 32)
        }
    });
    let opts = PullOptions {
        name: a.name.clone(),
        base: a.base.clone(),
        no_deltas: a.no_deltas,
        jobs,
        trust: a.trust.trust()?,
        timeout: a.timeout,
    };
    let stats = Stats::default();
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let report = std::thread::scope(|s| {
        if std::io::stderr().is_terminal() {
            s.spawn(|| progress_thread(&stats, &done));
        }
        let r = pull(&r, &a.source, &a.rref, &opts, &stats);
        done.store(true, Ordering::Relaxed);
        r
    })
    .with_context(|| format!("cannot pull {} from {}", a.rref, a.source))?;
    let mut err = std::io::stderr();
    for s in &report.signers {
        let _ = writeln!(err, "good signature: {s}");
    }
    writeln!(
        std::io::stdout(),
        "{} ostree/{}: fetched {} objects ({}), reused {}, delta: {}, {:.2}s{}",
        report.commit,
        report.name,
        report.fetched,
        human_bytes(report.bytes),
        report.reused,
        report.delta.as_deref().unwrap_or("none"),
        start.elapsed().as_secs_f64(),
        if report.already_stored {
            " (already stored)"
        } else {
            ""
        }
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// A commit time as the listings print it: `2024-05-01T10:00Z`, or `-`.
fn text_time(t: Option<u64>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| format_time(t as i64).replace(' ', "T") + "Z",
    )
}

/// One ref as `ls-remote --json` prints it.
#[derive(serde::Serialize)]
struct RemoteRefJson {
    r#ref: String,
    commit: String,
    /// Seconds since the epoch; `None` when the commit is not there.
    timestamp: Option<u64>,
    /// The timestamp, RFC 3339 UTC.
    date: Option<String>,
    version: Option<String>,
}

fn ls_remote(spec: &str, json: bool) -> Result<ExitCode> {
    let src = crate::ostree::open_source(spec)?;
    let (summary, refs) = crate::ostree::summary::remote_refs(src.as_ref(), spec)?;
    let mut out = std::io::stdout().lock();
    let mut listed = Vec::new();
    for (name, c) in refs {
        // The summary usually has both: no commit fetch then.
        let known = summary
            .as_ref()
            .and_then(|s| s.refs.get(&name))
            .filter(|r| r.commit == c)
            .and_then(|r| Some((r.timestamp?, r.version.clone()?)));
        let (timestamp, version) = match known {
            Some((t, v)) => (Some(t), Some(v)),
            None => {
                let data = crate::net::retry(|| src.metadata(&c, ObjType::Commit))
                    .with_context(|| format!("commit {c} of ref {name}"))?;
                match data.as_deref().map(Commit::parse) {
                    Some(Ok(commit)) if Checksum::of(data.as_deref().unwrap_or_default()) == c => {
                        (Some(commit.timestamp), commit.meta_string("version"))
                    }
                    Some(_) => anyhow::bail!("commit {c} of ref {name} is corrupt"),
                    None => (None, None),
                }
            }
        };
        if json {
            listed.push(RemoteRefJson {
                r#ref: name,
                commit: c.to_string(),
                timestamp,
                date: timestamp.map(iso_utc),
                version,
            });
        } else {
            let ts = text_time(timestamp);
            let ver = version.as_deref().unwrap_or("-");
            writeln!(out, "{name} {c} {ts} {ver}").context("cannot write to stdout")?;
        }
    }
    if json {
        write_json(&mut out, &listed)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Names under streams/refs/ostree/ with the commit each names.
fn stored_names(r: &Repository) -> Result<Vec<(String, Checksum)>> {
    let mut out = Vec::new();
    for (name, entry) in r.list_refs(RefKind::Stream)? {
        if let Some(n) = name.strip_prefix("ostree/")
            && let Some(hex) = entry.strip_prefix("ostree-commit-")
        {
            out.push((
                crate::ostree::shared::decode_ref_name(n),
                Checksum::from_hex(hex)?,
            ));
        }
    }
    Ok(out)
}

fn load_commit(r: &Repository, c: &Checksum) -> Result<(CommitStream, Commit)> {
    let s = CommitStream::open(r, c)?;
    let bytes = s
        .metadata(c, ObjType::Commit)?
        .with_context(|| format!("stored commit {c} lacks its commit object"))?;
    let commit = Commit::parse(bytes).with_context(|| format!("commit {c}"))?;
    Ok((s, commit))
}

/// One stored commit as `list --json` prints it.
#[derive(serde::Serialize)]
struct StoredJson {
    name: String,
    commit: String,
    /// Seconds since the epoch.
    timestamp: u64,
    /// The timestamp, RFC 3339 UTC.
    date: String,
    version: Option<String>,
    subject: String,
}

fn list(repo: Option<&Path>, json: bool) -> Result<ExitCode> {
    let r = open(repo)?;
    let mut out = std::io::stdout().lock();
    let mut listed = Vec::new();
    for (name, c) in stored_names(&r)? {
        let (_, commit) = load_commit(&r, &c)?;
        let version = commit.meta_string("version");
        if json {
            listed.push(StoredJson {
                name,
                commit: c.to_string(),
                timestamp: commit.timestamp,
                date: iso_utc(commit.timestamp),
                version,
                subject: commit.subject,
            });
        } else {
            let ts = text_time(Some(commit.timestamp));
            let ver = version.as_deref().unwrap_or("-");
            writeln!(out, "{name} {c} {ts} {ver} {}", commit.subject)
                .context("cannot write to stdout")?;
        }
    }
    if json {
        write_json(&mut out, &listed)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn create_image(
    repo: Option<&Path>,
    name: &str,
    image_name: Option<&str>,
    min_version: Option<u32>,
) -> Result<ExitCode> {
    let r = open(repo)?;
    r.ensure_writable()?;
    if let Some(n) = image_name {
        crate::repository::validate_ref_name(n)?;
    }
    let c = resolve::stored_commit(&r, name)?;
    if let Some(v) = min_version {
        let s = CommitStream::open(&r, &c)?;
        let t = tree::commit_tree(&s)?;
        return super::image_cmds::store_tree_image(&r, &t, image_name, v);
    }
    let id = crate::ostree::image::ensure(&r, &c, image_name)?;
    writeln!(std::io::stdout(), "{id}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn compute_id(repo: Option<&Path>, name: &str) -> Result<ExitCode> {
    let r = open(repo)?;
    let c = resolve::stored_commit(&r, name)?;
    let s = CommitStream::open(&r, &c)?;
    let id = crate::ostree::image::compute_id(&r, &s)?;
    writeln!(std::io::stdout(), "{id}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
