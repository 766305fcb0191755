//! `composefs completions SHELL` and `composefs man DIR`: shell completions
//! and manual pages, both generated from the same clap definitions as the
//! parser, so they never drift from it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Cli;

/// Print the completion script for `shell` on standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "composefs", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Write `composefs.1` and one `composefs-COMMAND[-SUBCOMMAND].1` per
/// command into `dir` (created if missing); print the paths written.
pub fn man(dir: &Path) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    let mut out = std::io::stdout().lock();
    for p in written {
        writeln!(out, "{}", p.display()).context("cannot write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_pages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    let page = clap_mangen::Man::new(cmd.clone()).date(env!("CARGO_PKG_VERSION"));
    let path = page
        .generate_to(dir)
        .with_context(|| format!("cannot write a manual page into {}", dir.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
