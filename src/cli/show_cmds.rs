//! `composefs show REF` and `composefs ostree log NAME`: argument plumbing
//! around [`crate::inspect`], text for people or JSON for scripts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::repo_cmds::open;
use crate::inspect::log::{self, LogEnd, LogEntry};
use crate::inspect::summary::{Keys, summarize};
use crate::view::Source;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A stored ostree commit (ref, checksum, unique prefix, ostree/NAME,
    /// commits/CHECKSUM), a composefs image (ref, digest, images/NAME) or
    /// a pulled OCI image (NAME, oci/NAME)
    name: String,
    /// Print JSON instead of `key: value` lines
    #[arg(long)]
    json: bool,
    /// Check an ostree commit's OpenPGP signatures with the keys in FILE
    /// (armored or binary; repeatable)
    #[arg(long, value_name = "FILE")]
    gpg_keyring: Vec<PathBuf>,
    /// Check an ostree commit's ed25519 signatures with this public key
    /// (base64; repeatable)
    #[arg(long, value_name = "KEY")]
    ed25519_key: Vec<String>,
    /// Check an ostree commit's ed25519 signatures with the public keys in
    /// FILE (one base64 key per line)
    #[arg(long, value_name = "FILE")]
    ed25519_keyfile: Vec<PathBuf>,
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

fn keys(a: &ShowArgs) -> Result<Keys> {
    let (gpg, ed25519) =
        crate::ostree::signature::load_keys(&a.gpg_keyring, &a.ed25519_key, &a.ed25519_keyfile)?;
    Ok(Keys { gpg, ed25519 })
}

pub fn show(repo: Option<&Path>, a: &ShowArgs) -> Result<ExitCode> {
    let keys = keys(a)?;
    let r = open(repo)?;
    let s = summarize(&r, &a.name, &keys)?;
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
