//! `composefs remote add/list/delete`: the user's remotes file
//! ([`crate::view::remotes`]), edited as `ostree remote …` edits
//! ostree's.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::remote_args::TrustArgs;
use super::repo_cmds::write_json;
use crate::view::remotes::{self, RemoteConfig};

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Add a remote to your remotes file: its trees appear under
    /// remotes/NAME/ in `mount --all` and as names remotes/NAME/REF
    Add {
        /// Name (letters, digits, '.', '_', '-')
        name: String,
        /// http(s):// or file:// (an ostree or composefs repository), or
        /// docker://REGISTRY/NAME (a registry repository: its tags are the refs)
        url: String,
        /// Replace a remote of that name
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// List the configured remotes (yours, then the system's)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a remote from your remotes file
    Delete { name: String },
}

pub fn run(cmd: RemoteCommand) -> Result<ExitCode> {
    match cmd {
        RemoteCommand::Add {
            name,
            url,
            force,
            trust,
        } => add(&name, &url, force, &trust),
        RemoteCommand::List { json } => list(json),
        RemoteCommand::Delete { name } => delete(&name),
    }
}

/// A key file named relative to here, made absolute: the config is read
/// from anywhere.
fn absolute(p: &PathBuf) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}", p.display()))
}

fn add(name: &str, url: &str, force: bool, trust: &TrustArgs) -> Result<ExitCode> {
    remotes::validate_name(name)?;
    remotes::url_kind(url)?;
    // The keys must load now, not at the first mount.
    trust.keys()?;
    let file = remotes::user_file()?;
    let mut all = remotes::load_file(&file)?;
    if let Some(i) = all.iter().position(|r| r.name == name) {
        if !force {
            bail!(
                "remote {name:?} exists already in {} (--force replaces it)",
                file.display()
            );
        }
        all.remove(i);
    }
    all.push(RemoteConfig {
        name: name.to_string(),
        url: url.to_string(),
        gpg_keyring: trust
            .gpg_keyring
            .iter()
            .map(absolute)
            .collect::<Result<_>>()?,
        ed25519_key: trust.ed25519_key.clone(),
        ed25519_keyfile: trust
            .ed25519_keyfile
            .iter()
            .map(absolute)
            .collect::<Result<_>>()?,
        require_signatures: trust.require_signatures,
        file: PathBuf::new(),
    });
    remotes::save_file(&file, &all)?;
    Ok(ExitCode::SUCCESS)
}

fn list(json: bool) -> Result<ExitCode> {
    let all = remotes::load()?;
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<&RemoteConfig> = all.values().collect();
        write_json(&mut out, &v)?;
    } else {
        for r in all.values() {
            writeln!(out, "{} {}", r.name, r.url).context("cannot write to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(name: &str) -> Result<ExitCode> {
    let file = remotes::user_file()?;
    let mut all = remotes::load_file(&file)?;
    let Some(i) = all.iter().position(|r| r.name == name) else {
        if remotes::load()?.contains_key(name) {
            bail!(
                "remote {name:?} is configured in {}, not in your {}",
                remotes::SYSTEM_FILE,
                file.display()
            );
        }
        bail!("no remote {name:?} in {}", file.display());
    };
    all.remove(i);
    remotes::save_file(&file, &all)?;
    Ok(ExitCode::SUCCESS)
}
