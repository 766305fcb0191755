//! `composefs fetch URL NAME`: a stored tree from a composefs repository
//! served as plain files (HTTP(S) or `file://`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::repo_cmds::open;
use crate::fetch::{FetchOptions, fetch};
use crate::show::human_bytes;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The repository: `http://…`, `https://…` (its directory served as
    /// plain files, e.g. by nginx) or `file:///DIR`
    pub url: String,
    /// What to fetch: `images/NAME`, `oci/NAME`, `ostree/NAME` (as `mount`
    /// names them), `streams/refs/NAME` or `streams/CONTENT-ID`
    pub name: String,
    /// Objects fetched at once
    #[arg(long, default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Seconds to wait to connect and for each read (default 30 and 60);
    /// a request that stalls is retried
    #[arg(long, value_name = "SECONDS", value_parser = super::parse_seconds)]
    pub timeout: Option<std::time::Duration>,
}

pub fn run(repo: Option<&Path>, a: &FetchArgs) -> Result<ExitCode> {
    let r = open(repo)?;
    let start = Instant::now();
    let opts = FetchOptions {
        jobs: a.jobs as usize,
        timeout: a.timeout,
    };
    let report = fetch(&r, &a.url, &a.name, &opts)
        .with_context(|| format!("cannot fetch {} from {}", a.name, a.url))?;
    writeln!(
        std::io::stdout(),
        "{} {}: fetched {} objects ({}), reused {}, {:.2}s",
        report.entry,
        report.name,
        report.fetched,
        human_bytes(report.bytes),
        report.reused,
        start.elapsed().as_secs_f64()
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
