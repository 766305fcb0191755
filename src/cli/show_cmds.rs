//! `composefs show REF` and `composefs ostree log NAME`: argument plumbing
//! around [`crate::inspect`], text for people or JSON for scripts.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::repo_cmds::open;
use crate::inspect::log::{self, LogEnd, LogEntry};
use crate::inspect::summary::{Keys, summarize, summarize_remote};
use crate::view::Source;
use crate::view::remote::RemoteName;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A stored ostree commit (ref, checksum, unique prefix, ostree/NAME,
    /// commits/CHECKSUM), a composefs image (ref, digest, images/NAME), a
    /// pulled OCI image (NAME, oci/NAME); or a remote tree (URL#REF,
    /// docker://REGISTRY/NAME[:TAG|@DIGEST])
    name: String,
    /// Print JSON instead of `key: value` lines
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: super::remote_args::RemoteArgs,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// A stored commit: name (as pulled), checksum or unique prefix
    name: String,
    /// Show at most N commits
    #[arg(short = 'n', long = "max-count", value_name = "N")]
    max_count: Option<usize>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Show what changed from each commit's parent (when it is stored),
    /// per top-level directory
    #[arg(long)]
    stat: bool,
}

pub fn show(repo: Option<&Path>, a: &ShowArgs) -> Result<ExitCode> {
    let (gpg, ed25519) = a.remote.trust.keys()?;
    let keys = Keys { gpg, ed25519 };
    let r = open(repo)?;
    let s = match RemoteName::parse(&a.name)? {
        Some(name) => {
            let opened = crate::view::remote::open(&r, &name, &a.remote.options()?)?;
            summarize_remote(&r, &opened, &keys).with_context(|| format!("{name}"))?
        }
        None => summarize(&r, &a.name, &keys)?,
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &s).context("cannot write to stdout")?;
        writeln!(out).context("cannot write to stdout")?;
    } else {
        out.write_all(s.to_text().as_bytes())
            .context("cannot write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct JsonLog {
    commits: Vec<LogEntry>,
    end: LogEnd,
}

pub fn ostree_log(repo: Option<&Path>, a: &LogArgs) -> Result<ExitCode> {
    let r = open(repo)?;
    let start = match crate::view::resolve(&r, &a.name)? {
        Source::Commit(c) => c,
        Source::Image(_) => bail!("{:?} names a composefs image, not an ostree commit", a.name),
        Source::Oci(_) | Source::OciRaw(_) => {
            bail!("{:?} names an OCI image, not an ostree commit", a.name)
        }
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let (commits, end) = log::collect(&r, &start, a.max_count, a.stat)?;
        serde_json::to_writer_pretty(&mut out, &JsonLog { commits, end })
            .context("cannot write to stdout")?;
        writeln!(out).context("cannot write to stdout")?;
        return Ok(ExitCode::SUCCESS);
    }
    let end = log::walk(&r, &start, a.max_count, a.stat, |e| {
        out.write_all(e.to_text().as_bytes())
            .context("cannot write to stdout")
    })?;
    if let Some(l) = end.to_text() {
        writeln!(out, "{l}").context("cannot write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}
