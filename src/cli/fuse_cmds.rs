//! `composefs mount`: the FUSE view of one stored tree or of the whole
//! repository (`--all`), or a kernel mount of an image (`--kernel`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::repo_cmds::open;
use crate::fuse::cache::{DEFAULT_CACHE_BYTES, parse_size};
use crate::fuse::{FsOptions, MountOptions, TreeFs, serve, serve_later};
use crate::tree::Tree;
use crate::view::remote::RemoteName;
use crate::view::{RepoView, open_tree};

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Mount with the kernel: EROFS under overlayfs, objects as the data layer
    /// (stored images only)
    #[arg(long, conflicts_with_all = ["foreground", "allow_other", "all", "cache_size", "verify", "log", "passthrough"])]
    pub kernel: bool,
    /// The whole repository, live: /ostree/<ref>, /images/<ref>,
    /// /oci/<name>, /commits/<checksum>, /remotes/<remote>/<ref> (the
    /// configured remotes; the default when no REF is given)
    #[arg(long)]
    pub all: bool,
    /// FUSE: serve in this process until unmounted instead of as a daemon
    #[arg(long)]
    pub foreground: bool,
    /// FUSE: let users other than the mounting one see the mount
    #[arg(long)]
    pub allow_other: bool,
    /// FUSE: memory for decoded inodes and directories (e.g. 64M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub cache_size: Option<usize>,
    /// FUSE: append the daemon's messages (such as reads that failed, with
    /// the object) to this file
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// FUSE: let the kernel read object-backed files directly (FUSE
    /// passthrough: root, kernel 6.9+; falls back to reads through the
    /// daemon)
    #[arg(long)]
    pub passthrough: bool,
    /// FUSE: digest each object on first open (repositories without
    /// fs-verity; with it, the kernel checks every open anyway)
    #[arg(long)]
    pub verify: bool,
    /// `[REF] MOUNTPOINT`: REF is `ostree/NAME`, a stored ostree commit
    /// (name, checksum or prefix), an image ref or digest, a pulled OCI
    /// image; or a remote tree, read in place and its contents fetched
    /// when read: `URL#REF` (an ostree or composefs repository over
    /// http(s):// or file://), `docker://REGISTRY/NAME[:TAG|@DIGEST]`,
    /// `remotes/NAME/REF` (a configured remote: `composefs remote`)
    #[arg(value_name = "[REF] MOUNTPOINT", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub remote: super::remote_args::RemoteArgs,
}

/// Request threads of a remote tree's daemon: a file waiting for the
/// network holds one, the others go on serving.
const REMOTE_THREADS: usize = 8;

pub fn mount(repo: Option<&Path>, a: &MountArgs) -> Result<ExitCode> {
    let (name, target) = match a.args.as_slice() {
        [mp] => (None, PathBuf::from(mp)),
        [name, mp] => (Some(name.as_str()), PathBuf::from(mp)),
        _ => bail!("expected [REF] MOUNTPOINT"),
    };
    if a.all && name.is_some() {
        bail!("--all mounts the whole repository: give only a mount point");
    }
    let remote = name.map(RemoteName::parse).transpose()?.flatten();
    if a.kernel
        && let Some(n) = &remote
    {
        bail!(
            "--kernel mounts stored trees: {n} is a remote one (mount it through FUSE, \
             or fetch or pull it first)"
        );
    }
    if a.kernel {
        let Some(name) = name else {
            bail!("--kernel mounts one image: give REF and MOUNTPOINT");
        };
        return super::image_cmds::mount(repo, name, &target);
    }
    // Check the mount point first: a typo there should not cost a tree load.
    if !target.is_dir() {
        bail!(
            "mount point {} does not exist or is not a directory",
            target.display()
        );
    }
    // By an absolute path: the daemon runs from `/`, and the whole
    // repository's view reads refs by path.
    let path = crate::repository::default_path(repo)?;
    let path =
        std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let r = open(Some(&path))?;
    let mut fs_opts = FsOptions {
        cache_bytes: a.cache_size.unwrap_or(DEFAULT_CACHE_BYTES),
        verify: a.verify,
        passthrough: a.passthrough,
        ..FsOptions::default()
    };
    if let Some(n) = remote {
        return mount_remote(r, n, fs_opts, &target, a);
    }
    let mut threads = MountOptions::default().threads;
    let (tree, what): (Arc<dyn Tree>, String) = match name {
        Some(name) => (open_tree(&r, name)?, format!("{name:?}")),
        None => {
            // A gc may remove the objects of a tree that is still open:
            // open files keep their objects open.
            fs_opts.no_open = false;
            let remotes = crate::view::remotes::load()?;
            if !remotes.is_empty() {
                // A remote tree waiting for the network holds a thread.
                threads = threads.max(REMOTE_THREADS);
            }
            (
                Arc::new(RepoView::with_remotes(&r, remotes, a.remote.options()?)?),
                format!("repository {}", r.path().display()),
            )
        }
    };
    // The daemon lives long: it must not hold gc off (a gc then removes
    // only what no ref reaches, and open files keep their objects).
    r.unlock()?;
    let fs = TreeFs::new(tree, r, &fs_opts).with_context(|| format!("cannot serve {what}"))?;
    log_mounting(&what, &target, &fs_opts);
    let opts = MountOptions {
        foreground: a.foreground,
        allow_other: a.allow_other,
        log: a.log.clone(),
        threads,
    };
    serve(fs, &target, &opts)
        .with_context(|| format!("cannot mount {what} at {}", target.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Mount a remote tree: opened by the daemon (after its fork: opening it
/// fetches, perhaps on threads), with more request threads than a stored
/// tree gets.
fn mount_remote(
    r: crate::repository::Repository,
    name: RemoteName,
    fs_opts: FsOptions,
    target: &Path,
    a: &MountArgs,
) -> Result<ExitCode> {
    // Up front, before anything is fetched: what is fetched is stored.
    crate::view::remote::ensure_writable(&r)?;
    let opts = a.remote.options()?;
    let what = name.to_string();
    log_mounting(&what, target, &fs_opts);
    let make = move || -> Result<TreeFs> {
        let tree = crate::view::remote::open(&r, &name, &opts)?.tree;
        // As for a stored tree: the daemon holds no lock.
        r.unlock()?;
        TreeFs::new(tree, r, &fs_opts).with_context(|| format!("cannot serve {name}"))
    };
    let opts = MountOptions {
        foreground: a.foreground,
        allow_other: a.allow_other,
        log: a.log.clone(),
        threads: REMOTE_THREADS,
    };
    serve_later(Box::new(make), target, &opts)
        .with_context(|| format!("cannot mount {what} at {}", target.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The daemon's first log line: what is mounted where, and how.
fn log_mounting(what: &str, target: &Path, fs_opts: &FsOptions) {
    tracing::info!(
        "mounting {what} at {} (cache {}, verify {}, passthrough {})",
        target.display(),
        crate::show::human_bytes(fs_opts.cache_bytes as u64),
        fs_opts.verify,
        fs_opts.passthrough
    );
}
