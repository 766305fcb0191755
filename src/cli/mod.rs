//! The `composefs` command line: argument parsing and plumbing only. Each
//! command group lives in its own file and calls into the library.

mod measure;
mod progress;
mod repo_cmds;
mod tar_cmds;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::fsverity::Algorithm;

#[derive(Parser, Debug)]
#[command(
    name = "composefs",
    version,
    about = "Content-addressed storage for ostree commits and OCI images"
)]
pub struct Cli {
    /// Repository directory (default: $COMPOSEFS_REPO, else /sysroot/composefs
    /// for root and ~/.var/lib/composefs for users)
    #[arg(long, global = true, value_name = "DIR")]
    repo: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository
    Init {
        /// fs-verity hash algorithm for object names
        #[arg(long, default_value = "sha512", value_name = "sha256|sha512")]
        hash: Algorithm,
    },
    /// Print the fs-verity digest of files (as `fsverity digest` computes it)
    Measure {
        #[arg(long, default_value = "sha512", value_name = "sha256|sha512")]
        hash: Algorithm,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Import a tar archive (plain, gzip or zstd) as a splitstream under streams/refs/NAME
    ImportTar {
        /// Ref name to create (e.g. `images/base`)
        name: String,
        /// The tar file; `-` or nothing reads standard input
        file: Option<PathBuf>,
    },
    /// Write a stored stream (e.g. an imported tar) to standard output, byte for byte
    Cat {
        /// Ref name, stream content id, or stream object digest
        name: String,
    },
    /// List refs and what they point to
    Refs,
    /// Delete every object and stream no ref reaches
    Gc {
        /// Only report what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Verify every object, stream and ref; exits non-zero on any problem
    Fsck,
}

/// Parse arguments, run, print any error; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("composefs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let repo = cli.repo.as_deref();
    match cli.command {
        Command::Init { hash } => repo_cmds::init(repo, hash),
        Command::Measure { hash, files } => measure::run(hash, &files),
        Command::ImportTar { name, file } => tar_cmds::import(repo, &name, file.as_deref()),
        Command::Cat { name } => tar_cmds::cat(repo, &name),
        Command::Refs => repo_cmds::refs(repo),
        Command::Gc { dry_run } => repo_cmds::gc(repo, dry_run),
        Command::Fsck => repo_cmds::fsck(repo),
    }
}
