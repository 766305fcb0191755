//! `composefs diff A B`: argument plumbing for [`crate::diff`]. Names are
//! resolved with [`crate::view::resolve`] (ostree commits, images, OCI
//! images) or read as local directories; the output formats come from
//! [`crate::diff::format`] and [`crate::diff::DiffStat`]. Exit status as
//! diff(1): 0 equal, 1 different, 2 trouble.

use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::repo_cmds::open;
use crate::diff::content;
use crate::diff::format::{self, JsonWriter};
use crate::diff::text;
use crate::diff::{Change, DiffOptions, DiffStat, LocalDir, Side, diff_sides};
use crate::repository::Repository;
use crate::tree::{Inode, Kind, Tree};
use crate::view::remote::{OpenOptions, RemoteName};

/// Contents larger than this are not line-diffed (`Files … differ`).
const TEXT_LIMIT: u64 = 8 << 20;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// First tree: ostree commit (ref, checksum, prefix, ostree/NAME,
    /// commits/C), image (ref, digest, images/NAME), OCI image (oci/NAME),
    /// a remote tree (URL#REF, docker://REGISTRY/NAME[:TAG|@DIGEST]), or a
    /// local directory (an existing directory, or a path starting with /
    /// or ./)
    a: String,
    /// Second tree (same forms)
    b: String,
    /// Per top-level directory: paths added, deleted, modified, bytes added and removed
    #[arg(long, conflicts_with_all = ["json", "name_status"])]
    stat: bool,
    /// One JSON document with every change and its details
    #[arg(long, conflicts_with = "name_status")]
    json: bool,
    /// One line per changed path: A, D, M or T, a tab, the path (the default)
    #[arg(long)]
    name_status: bool,
    /// After the list, unified diffs of changed regular files (3 lines of context)
    #[arg(long, conflicts_with = "json")]
    content: bool,
    /// Compare modification times too (ignored by default)
    #[arg(long)]
    mtime: bool,
    /// Do not compare hardlink structure (never compared against an ostree commit)
    #[arg(long)]
    no_hardlinks: bool,
    #[command(flatten)]
    remote: super::remote_args::RemoteArgs,
    /// Only these paths and what is below them (after `--`)
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<OsString>,
}

/// A side as loaded.
enum Loaded {
    Local(LocalDir),
    Stored(Arc<dyn Tree>),
}

impl Loaded {
    fn side(&self) -> Side<'_> {
        match self {
            Loaded::Local(l) => l.side(),
            Loaded::Stored(t) => Side::tree(t.as_ref()),
        }
    }
}

/// A local directory: an existing directory, or a path spelled as one.
fn is_local(name: &str) -> bool {
    name.starts_with('/')
        || name.starts_with("./")
        || name.starts_with("../")
        || name == "."
        || name == ".."
        || Path::new(name).is_dir()
}

/// What a name stands for, before anything is read.
enum Named {
    Local,
    Stored(crate::view::Source),
    Remote(RemoteName),
}

fn identify(repo: Option<&Repository>, name: &str) -> Result<Named> {
    if let Some(n) = RemoteName::parse(name)? {
        return Ok(Named::Remote(n));
    }
    if is_local(name) {
        return Ok(Named::Local);
    }
    let r = repo.context("no repository")?;
    Ok(Named::Stored(crate::view::resolve(r, name)?))
}

/// Whether loading `n` is quick: a stored commit or image opens lazily
/// (a mapping and a table), a directory is scanned, an OCI image's
/// layers are read, a remote tree's metadata fetched.
fn opens_lazily(n: &Named) -> bool {
    use crate::view::Source;
    matches!(n, Named::Stored(Source::Commit(_) | Source::Image(_)))
}

fn load(
    repo: Option<&Repository>,
    name: &str,
    named: Named,
    remote: Option<&OpenOptions>,
) -> Result<Loaded> {
    match named {
        Named::Local => Ok(Loaded::Local(LocalDir::read(Path::new(name))?)),
        Named::Remote(n) => {
            let r = repo.context("no repository")?;
            let opts = remote.context("no options for remote trees")?;
            Ok(Loaded::Stored(crate::view::remote::open(r, &n, opts)?.tree))
        }
        Named::Stored(source) => {
            let r = repo.context("no repository")?;
            Ok(Loaded::Stored(
                source.load(r).with_context(|| format!("{name:?}"))?,
            ))
        }
    }
}

pub fn run(repo: Option<&Path>, args: &DiffArgs) -> Result<ExitCode> {
    let mut changed = false;
    match diff(repo, args, &mut changed) {
        Ok(()) => Ok(ExitCode::from(u8::from(changed))),
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            // The reader went away (`| head`): what was found stands.
            Ok(ExitCode::from(if changed { 1 } else { 2 }))
        }
        Err(e) => {
            eprintln!("composefs: error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn diff(repo_path: Option<&Path>, args: &DiffArgs, changed: &mut bool) -> Result<()> {
    let repo = if is_local(&args.a) && is_local(&args.b) {
        None
    } else {
        Some(open(repo_path)?)
    };
    let na =
        identify(repo.as_ref(), &args.a).with_context(|| format!("first tree {:?}", args.a))?;
    let nb =
        identify(repo.as_ref(), &args.b).with_context(|| format!("second tree {:?}", args.b))?;
    let opts = if matches!(na, Named::Remote(_)) || matches!(nb, Named::Remote(_)) {
        Some(args.remote.options()?)
    } else {
        None
    };
    let opts = opts.as_ref();
    // Sides that take reading (a directory scan, OCI layers) load at once
    // on two threads; stored commits and images open in a moment, less
    // than a thread costs.
    let (a, b) = if opens_lazily(&na) && opens_lazily(&nb) {
        (
            load(repo.as_ref(), &args.a, na, opts),
            load(repo.as_ref(), &args.b, nb, opts),
        )
    } else {
        std::thread::scope(|s| {
            let second = s.spawn(|| load(repo.as_ref(), &args.b, nb, opts));
            let a = load(repo.as_ref(), &args.a, na, opts);
            let b = second
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("loading the second tree panicked")));
            (a, b)
        })
    };
    let a = a.with_context(|| format!("first tree {:?}", args.a))?;
    let b = b.with_context(|| format!("second tree {:?}", args.b))?;
    let opts = DiffOptions {
        mtime: args.mtime,
        ignore_hardlinks: args.no_hardlinks,
        paths: args.paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
    };
    let (sa, sb) = (a.side(), b.side());
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut stat = DiffStat::new();
    let mut patches: Vec<Change> = Vec::new();
    let mut json = if args.json {
        Some(JsonWriter::start(&mut out, &args.a, &args.b)?)
    } else {
        None
    };
    diff_sides(repo.as_ref(), sa, sb, &opts, &mut |c| {
        *changed = true;
        if let Some(j) = json.as_mut() {
            j.change(&mut out, &c)?;
        } else if args.stat {
            stat.add(&c);
        } else {
            format::write_name_status(&mut out, &c)?;
        }
        if args.content && format::has_patch(&c) {
            patches.push(c);
        }
        Ok(())
    })?;
    if let Some(j) = json {
        j.finish(&mut out)?;
    }
    if args.stat {
        write!(out, "{stat}")?;
    }
    for c in &patches {
        write_patch(&mut out, repo.as_ref(), &sa, &sb, c)
            .with_context(|| format!("content of {}", crate::show::display_bytes(&c.path)))?;
    }
    out.flush().context("cannot write to stdout")?;
    Ok(())
}

/// A regular file's inode and number, when the side has one.
fn regular(i: &Option<Arc<Inode>>, ino: Option<u64>) -> Option<(&Inode, u64)> {
    match (i.as_deref(), ino) {
        (Some(n), Some(ino)) if matches!(n.kind, Kind::Regular(_)) => Some((n, ino)),
        _ => None,
    }
}

fn bytes_of(
    repo: Option<&Repository>,
    side: &Side<'_>,
    f: Option<(&Inode, u64)>,
) -> Result<Option<Vec<u8>>> {
    let Some((inode, ino)) = f else {
        return Ok(Some(Vec::new()));
    };
    let Kind::Regular(data) = &inode.kind else {
        return Ok(Some(Vec::new()));
    };
    content::read_file(repo, side, ino, data, TEXT_LIMIT)
}

/// One file's patch: `diff --git` header, then hunks, or a line saying
/// binary or large files differ.
fn write_patch(
    out: &mut dyn Write,
    repo: Option<&Repository>,
    sa: &Side<'_>,
    sb: &Side<'_>,
    c: &Change,
) -> Result<()> {
    let old = regular(&c.old, c.old_ino);
    let new = regular(&c.new, c.new_ino);
    format::write_patch_header(out, c, old.map(|o| o.0), new.map(|n| n.0))?;
    let (has_old, has_new) = (old.is_some(), new.is_some());
    let x = bytes_of(repo, sa, old)?;
    let y = bytes_of(repo, sb, new)?;
    let (Some(x), Some(y)) = (x, y) else {
        format::write_binary(out, c, has_old, has_new, "Files")?;
        return Ok(());
    };
    if text::is_binary(&x) || text::is_binary(&y) {
        format::write_binary(out, c, has_old, has_new, "Binary files")?;
        return Ok(());
    }
    let mut hunks = Vec::new();
    if text::write_hunks(&mut hunks, &x, &y)? {
        format::write_file_names(out, c, has_old, has_new)?;
        out.write_all(&hunks)?;
    }
    Ok(())
}
