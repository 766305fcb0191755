//! The `composefs` command line: argument parsing and plumbing only. Each
//! command group lives in its own file and calls into the library.

mod diff_cmds;
mod fetch_cmds;
mod fuse_cmds;
mod image_cmds;
mod manual_cmds;
mod measure;
mod oci_cmds;
mod ostree_cmds;
mod progress;
mod remote_args;
mod remote_cmds;
mod repo_cmds;
mod show_cmds;
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

    /// Say more on standard error: -v what is fetched, from where and what
    /// is reused; -vv each object and request; -vvv everything ($RUST_LOG,
    /// when set, decides instead)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Print errors only, no warnings
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository (as `cfsctl init` does; either tool opens it)
    Init {
        /// fs-verity hash algorithm for object names
        #[arg(long, default_value = "sha512", value_name = "sha256|sha512")]
        hash: Algorithm,
        /// The algorithm as cfsctl spells it (fsverity-sha256-12 or
        /// fsverity-sha512-12); overrides --hash
        #[arg(long, value_name = "ID", value_parser = parse_meta_algorithm, conflicts_with = "hash")]
        algorithm: Option<Algorithm>,
        /// Objects need no fs-verity: none is enabled on meta.json (as
        /// cfsctl's --insecure); without it, fs-verity where the filesystem has it
        #[arg(long)]
        insecure: bool,
        /// EROFS format version of the repository's images: 0 and 1 as C
        /// mkcomposefs (default and --min-version=1), 2 composefs-rs's legacy format
        #[arg(long, default_value_t = 1, value_name = "0|1|2",
              value_parser = clap::value_parser!(u32).range(0..=2))]
        erofs_version: u32,
        /// The repository directory (default: --repo, $COMPOSEFS_REPO, ...)
        path: Option<PathBuf>,
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
    /// Write a stored stream (e.g. an imported tar) to standard output, byte
    /// for byte; or, as `REF:PATH`, a file of an image or ostree commit
    Cat {
        /// Stream ref, content id or digest; or REF:/PATH (REF: an image, a
        /// stored ostree commit or OCI image, or a remote tree: URL#REF,
        /// docker://REGISTRY/NAME[:TAG|@DIGEST])
        name: String,
        #[command(flatten)]
        remote: remote_args::RemoteArgs,
    },
    /// List refs and what they point to, or delete some (`--delete`)
    Refs {
        /// Delete these refs (as listed: `streams/refs/NAME`,
        /// `images/refs/NAME`; or `ostree/NAME`, or an image ref's name);
        /// `gc` then frees what only they reached
        #[arg(long, value_name = "REF", num_args = 1..)]
        delete: Vec<String>,
        /// Print a JSON array, one object per ref: `ref` (as listed),
        /// `kind` (stream|image), `name`, `entry`, `object` (hex; null when
        /// broken), `error` (why it is broken, else null)
        #[arg(long, conflicts_with = "delete")]
        json: bool,
    },
    /// Delete every object and stream no ref reaches
    Gc {
        /// Only report what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Verify every object, stream and ref; exits non-zero on any problem
    Fsck,
    /// Build a composefs image from a directory or dumpfile (the C tool's interface)
    Mkcomposefs(image_cmds::MkcomposefsArgs),
    /// Import a directory: file contents become objects, the tree a stored
    /// image in the repository's EROFS format (as `cfsctl create-image`)
    CreateImage {
        #[command(flatten)]
        read: image_cmds::DirReadArgs,
        /// Ref to create under images/refs/
        #[arg(long)]
        name: Option<String>,
        /// Ref to create under images/refs/ (as cfsctl takes it)
        #[arg(value_name = "NAME", conflicts_with = "name")]
        image_name: Option<String>,
    },
    /// Print the image id `create-image DIR` would give, storing nothing
    /// (as `cfsctl compute-id`; no repository needed)
    ComputeId {
        #[command(flatten)]
        read: image_cmds::DirReadArgs,
        /// Digest algorithm (default: the repository's if there is one, else sha512)
        #[arg(long, value_name = "sha256|sha512")]
        hash: Option<Algorithm>,
    },
    /// Print an image (file path or stored image) as a composefs-dump(5) text
    Dump {
        /// Image file, image ref, or image digest
        image: String,
    },
    /// List a directory of an image or a stored ostree commit like `ls -l`
    Ls {
        /// Image file, image ref or digest, stored ostree commit or OCI
        /// image, remote tree (URL#REF, docker://…); or REF:/PATH
        image: String,
        /// Path inside the image (default /)
        path: Option<String>,
        #[command(flatten)]
        remote: remote_args::RemoteArgs,
    },
    /// Compare two trees (stored or local directories): changed paths,
    /// `--stat`, `--json`, `--content`; exit 0 equal, 1 different, 2 trouble
    Diff(diff_cmds::DiffArgs),
    /// Mount a stored tree read-only, or the whole repository live: through
    /// FUSE (default) or the kernel
    Mount(fuse_cmds::MountArgs),
    /// Pull ostree commits, list them, build images of them
    #[command(subcommand)]
    Ostree(ostree_cmds::OstreeCommand),
    /// Pull OCI images (registries, layouts, archives), list, inspect, image them
    #[command(subcommand)]
    Oci(oci_cmds::OciCommand),
    /// Fetch a stored tree (image, OCI image, ostree commit, stream) from a
    /// composefs repository served as plain files over HTTP(S) or file://
    Fetch(fetch_cmds::FetchArgs),
    /// Configured remotes (a config file in ostree's spelling): add, list,
    /// delete; their trees are remotes/NAME/REF
    #[command(subcommand)]
    Remote(remote_cmds::RemoteCommand),
    /// Unmount a mount made by `composefs mount` (kernel or FUSE)
    Umount { mountpoint: PathBuf },
    /// Summarise a stored tree (ostree commit, OCI image, composefs image):
    /// names, sizes, counts, and what its kind records
    Show(show_cmds::ShowArgs),
    /// Print a shell completion script (e.g. `composefs completions bash >
    /// /usr/share/bash-completion/completions/composefs`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write manual pages: composefs.1 and one composefs-COMMAND.1 per
    /// command (e.g. `composefs man /usr/local/share/man/man1`)
    Man {
        /// Directory to write into (created if missing)
        dir: PathBuf,
    },
}

/// Invoked as `mkcomposefs` (through a symlink): the C tool's command line.
#[derive(Parser, Debug)]
#[command(
    name = "mkcomposefs",
    version,
    about = "Build a composefs image (composefs's mkcomposefs)"
)]
struct MkcomposefsCli {
    #[command(flatten)]
    args: image_cmds::MkcomposefsArgs,
}

/// Parse arguments, run, print any error; the process exit code.
pub fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let invoked_as = std::path::Path::new(&argv0)
        .file_name()
        .unwrap_or_default()
        .to_owned();
    let result = if invoked_as == "mkcomposefs" {
        let args = MkcomposefsCli::parse().args;
        crate::logging::init(crate::logging::Verbosity::Normal);
        image_cmds::mkcomposefs(args)
    } else {
        let cli = Cli::parse();
        crate::logging::init(crate::logging::Verbosity::from_flags(
            cli.quiet,
            cli.verbose,
        ));
        run(cli)
    };
    match result {
        Ok(code) => code,
        // Output piped into `head` and the like: the reader left, which is
        // no error of ours (as a C tool dies quietly of SIGPIPE).
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("composefs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let repo = cli.repo.as_deref();
    match cli.command {
        Command::Init {
            hash,
            algorithm,
            insecure,
            erofs_version,
            path,
        } => repo_cmds::init(
            path.as_deref().or(repo),
            &crate::repository::InitOptions {
                algorithm: algorithm.unwrap_or(hash),
                insecure,
                erofs_version,
            },
        ),
        Command::Measure { hash, files } => measure::run(hash, &files),
        Command::ImportTar { name, file } => tar_cmds::import(repo, &name, file.as_deref()),
        Command::Cat { name, remote } => tar_cmds::cat_or_path(repo, &name, &remote),
        Command::Refs { delete, json } if delete.is_empty() => repo_cmds::refs(repo, json),
        Command::Refs { delete, .. } => repo_cmds::delete_refs(repo, &delete),
        Command::Gc { dry_run } => repo_cmds::gc(repo, dry_run),
        Command::Fsck => repo_cmds::fsck(repo),
        Command::Mkcomposefs(a) => image_cmds::mkcomposefs(a),
        Command::CreateImage {
            read,
            name,
            image_name,
        } => image_cmds::create_image(repo, &read, name.or(image_name).as_deref()),
        Command::ComputeId { read, hash } => image_cmds::compute_id(repo, &read, hash),
        Command::Dump { image } => image_cmds::dump(repo, &image),
        Command::Ls {
            image,
            path,
            remote,
        } => image_cmds::ls(repo, &image, path.as_deref(), &remote),
        Command::Mount(args) => fuse_cmds::mount(repo, &args),
        Command::Diff(args) => diff_cmds::run(repo, &args),
        Command::Umount { mountpoint } => image_cmds::umount(&mountpoint),
        Command::Ostree(cmd) => ostree_cmds::run(repo, cmd),
        Command::Oci(cmd) => oci_cmds::run(repo, cmd),
        Command::Fetch(args) => fetch_cmds::run(repo, &args),
        Command::Remote(cmd) => remote_cmds::run(cmd),
        Command::Show(args) => show_cmds::show(repo, &args),
        Command::Completions { shell } => manual_cmds::completions(shell),
        Command::Man { dir } => manual_cmds::man(&dir),
    }
}

/// `fsverity-sha512-12` (as `meta.json` and `cfsctl init --algorithm` spell it).
fn parse_meta_algorithm(s: &str) -> std::result::Result<Algorithm, String> {
    Algorithm::from_meta_name(s)
        .ok_or_else(|| format!("{s:?}: expected fsverity-sha256-12 or fsverity-sha512-12"))
}

/// A positive number of seconds (fractions allowed), for `--timeout`.
fn parse_seconds(s: &str) -> std::result::Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 86_400.0 => {
            Ok(std::time::Duration::from_secs_f64(v))
        }
        _ => Err(format!(
            "{s:?}: expected seconds, more than 0 and at most 86400"
        )),
    }
}
