//! `composefs fetch URL NAME`: a stored tree from a composefs repository
//! served as plain files (HTTP(S) or `file://`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::repo_cmds::open;
use crate::fetch::{Counters, FetchOptions, fetch_with};
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
    let counters = Counters::default();
    let done = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        if std::io::stderr().is_terminal() {
            s.spawn(|| progress(&counters, &done));
        }
        let r = fetch_with(&r, &a.url, &a.name, &opts, &counters);
        done.store(true, Ordering::Relaxed);
        r
    })
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

/// A bar of objects (done of those wanted so far: the walk finds more as
/// it reads each level) and bytes, on stderr, until `done`.
fn progress(c: &Counters, done: &AtomicBool) {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "fetch [{bar:30}] {pos}/{len} objects, {msg} {elapsed}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(10));
    while !done.load(Ordering::Relaxed) {
        let fetched = c.fetched.load(Ordering::Relaxed);
        let reused = c.reused.load(Ordering::Relaxed);
        bar.set_length(c.wanted.load(Ordering::Relaxed).max(fetched + reused));
        bar.set_position(fetched + reused);
        bar.set_message(human_bytes(c.bytes.load(Ordering::Relaxed)));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bar.finish_and_clear();
}
