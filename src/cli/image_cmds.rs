//! Image commands: mkcomposefs, create-image, dump, ls, mount, umount.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::repo_cmds::open;
use crate::erofs::reader::ErofsImage;
use crate::erofs::writer::{FormatVersion, WriteOptions, write_image_with};
use crate::fsverity::{self, Algorithm};
use crate::importdir::{ContentSink, tree_from_directory, tree_from_directory_with};
use crate::mount::{MountOptions, mount_image, unmount};
use crate::tree::container::XattrFilter;
use crate::tree::dirsource::DirOptions;
use crate::tree::{FileData, Ino, Kind, Tree, mode};

/// `mkcomposefs` options, spelled as the C tool spells them.
#[derive(Args, Debug, Clone)]
pub struct MkcomposefsArgs {
    /// SOURCE is a composefs-dump(5) file (`-` for standard input)
    #[arg(long)]
    from_file: bool,
    /// Lowest image format version to write (0 or 1)
    #[arg(long, value_name = "N")]
    min_version: Option<u32>,
    /// Highest format version to upgrade to when needed (default 1)
    #[arg(long, value_name = "N")]
    max_version: Option<u32>,
    /// Print the image's fs-verity digest (sha256)
    #[arg(long)]
    print_digest: bool,
    /// Print the digest and write no image (no IMAGE argument)
    #[arg(long)]
    print_digest_only: bool,
    /// Copy file contents into DIR/XX/<digest> (sha256 fs-verity names)
    #[arg(long, value_name = "DIR")]
    digest_store: Option<PathBuf>,
    /// Set every mtime to 0
    #[arg(long)]
    use_epoch: bool,
    /// Leave out extended attributes
    #[arg(long)]
    skip_xattrs: bool,
    /// Keep only user.* extended attributes
    #[arg(long)]
    user_xattrs: bool,
    /// Leave out character and block devices
    #[arg(long)]
    skip_devices: bool,
    /// Worker threads for digests (default: all cores)
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// A directory, or with --from-file a dumpfile
    source: PathBuf,
    /// Where to write the image (`-` for standard output)
    image: Option<PathBuf>,
}

pub(crate) fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Write `tree` as a composefs image (format `min_version`), store it
/// (with the ref `images/refs/NAME` when named) and print its id.
pub(crate) fn store_tree_image(
    r: &crate::repository::Repository,
    tree: &dyn crate::tree::Tree,
    image_name: Option<&str>,
    min_version: u32,
) -> Result<ExitCode> {
    let (image, _) = image_file(
        tree,
        &WriteOptions::version(version(min_version, "--min-version")?),
    )?;
    let id = r.commit_image(image, image_name)?;
    writeln!(std::io::stdout(), "{id}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Write `tree` as an image into an unnamed temporary file, rather than
/// memory (an image takes about 50 bytes per inode: a wide tree's image
/// would take as much memory as the tree itself); returns it to be read
/// from the start, and its size.
fn image_file(
    tree: &dyn crate::tree::Tree,
    opts: &WriteOptions,
) -> Result<(std::io::BufReader<File>, u64)> {
    let mut image = tempfile::tempfile().context("cannot create a temporary file")?;
    let info = write_image_with(tree, opts, &mut image)?;
    image
        .seek(std::io::SeekFrom::Start(0))
        .context("cannot read the image back")?;
    Ok((std::io::BufReader::new(image), info.size))
}

pub(crate) fn version(n: u32, what: &str) -> Result<FormatVersion> {
    FormatVersion::from_number(n).with_context(|| format!("unsupported {what} {n} (0 or 1)"))
}

pub fn mkcomposefs(a: MkcomposefsArgs) -> Result<ExitCode> {
    let min = version(a.min_version.unwrap_or(0), "--min-version")?;
    let max = version(
        a.max_version.unwrap_or(1).max(min.number()),
        "--max-version",
    )?;
    match (&a.image, a.print_digest_only) {
        (None, false) => bail!("no destination image given (or use --print-digest-only)"),
        (Some(_), true) => bail!("cannot give a destination image with --print-digest-only"),
        _ => {}
    }
    let tree: Box<dyn Tree> = if a.from_file {
        // Read line by line: a dumpfile of a deep tree is mostly paths
        // (100 MB for one 10,000 directories deep), none of it kept.
        let input: Box<dyn std::io::BufRead> = if a.source == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            let f = File::open(&a.source)
                .with_context(|| format!("cannot read {}", a.source.display()))?;
            Box::new(std::io::BufReader::with_capacity(1 << 16, f))
        };
        // As the C tool: its strict mode when CFS_PARSE_STRICT is set.
        let opts = crate::dumpfile::ParseOptions {
            strict: std::env::var_os("CFS_PARSE_STRICT").is_some(),
        };
        Box::new(
            crate::dumpfile::parse_reader(input, opts)
                .with_context(|| format!("dumpfile {}", a.source.display()))?,
        )
    } else {
        let opts = DirOptions {
            skip_xattrs: a.skip_xattrs,
            user_xattrs_only: a.user_xattrs,
            skip_devices: a.skip_devices,
            use_epoch: a.use_epoch,
            // C mkcomposefs 1.0.8 gives every path its own inode (nlink 1):
            // its image of a real root filesystem is the one to match.
            ignore_hardlinks: true,
        };
        let sink = match &a.digest_store {
            Some(dir) => ContentSink::DigestStore(dir.clone()),
            None => ContentSink::DigestOnly(Algorithm::Sha256),
        };
        Box::new(tree_from_directory(&a.source, &opts, &sink, threads(a.threads))?.0)
    };
    let opts = WriteOptions {
        min_version: min,
        max_version: max,
    };
    let (mut image, _) = image_file(tree.as_ref(), &opts)?;
    if let Some(out) = &a.image {
        if out == Path::new("-") {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("standard output is a terminal; refusing to write an image to it");
            }
            std::io::copy(&mut image, &mut stdout.lock())
                .context("cannot write image to standard output")?;
        } else {
            write_file(out, &mut image)?;
        }
        image
            .seek(std::io::SeekFrom::Start(0))
            .context("cannot read the image back")?;
    }
    if a.print_digest || a.print_digest_only {
        let (digest, _) = fsverity::digest_reader(Algorithm::Sha256, &mut image)
            .context("cannot read the image back")?;
        writeln!(std::io::stdout(), "{digest}").context("cannot write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Write the image as the C tool does (`fopen(IMAGE, "w")`): through
/// symlinks, into fifos and devices, new files with 0666 less the umask.
fn write_file(path: &Path, data: &mut impl std::io::Read) -> Result<()> {
    let mut f = File::create(path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    std::io::copy(data, &mut f).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// How `create-image` and `compute-id` read a directory (cfsctl's options).
#[derive(Args, Debug, Clone)]
pub struct DirReadArgs {
    /// The directory
    dir: PathBuf,
    /// Read the directory as it is. Without it (as cfsctl): the root takes
    /// /usr's mode, owner, mtime and xattrs, /run is emptied, and only the
    /// xattrs --xattrs allows are kept; a directory without usr/ is read
    /// as it is (cfsctl refuses it)
    #[arg(long)]
    no_propagate_usr_to_root: bool,
    /// Which xattrs to keep when not --no-propagate-usr-to-root
    #[arg(long, value_enum, default_value = "allowlist-only")]
    xattrs: XattrFilter,
    /// EROFS format version: 0 and 1 as C mkcomposefs (default and
    /// --min-version=1), 2 composefs-rs's legacy format (default:
    /// create-image the repository's, compute-id 1, as cfsctl)
    #[arg(long, value_name = "0|1|2", value_parser = clap::value_parser!(u32).range(0..=2))]
    erofs_version: Option<u32>,
    /// Write the image as `mkcomposefs --min-version=N` does (C's rules:
    /// version 0 upgraded to 1 when the tree has whiteouts), not as cfsctl
    #[arg(long, value_name = "0|1", conflicts_with = "erofs_version",
          value_parser = clap::value_parser!(u32).range(0..=1))]
    min_version: Option<u32>,
}

/// Read the directory as cfsctl would (see [`DirReadArgs`]).
fn read_dir_tree(
    a: &DirReadArgs,
    sink: &ContentSink<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(crate::tree::MemTree, crate::importdir::ImportStats)> {
    let (mut tree, stats) = tree_from_directory_with(
        &a.dir,
        &DirOptions::default(),
        sink,
        threads(None),
        progress,
    )?;
    crate::importdir::reject_sockets(&tree)
        .with_context(|| format!("cannot import {}", a.dir.display()))?;
    if !a.no_propagate_usr_to_root {
        crate::tree::container::transform(&mut tree, a.xattrs)
            .with_context(|| format!("{}", a.dir.display()))?;
    }
    Ok((tree, stats))
}

pub fn create_image(repo: Option<&Path>, a: &DirReadArgs, name: Option<&str>) -> Result<ExitCode> {
    let r = open(repo)?;
    r.ensure_writable()?;
    if let Some(n) = name {
        crate::repository::validate_ref_name(n)?;
    }
    let erofs_version = a.erofs_version.unwrap_or(r.erofs_version());
    // Bytes of file content stored, as they go (hidden off a terminal).
    let bar = super::progress::bytes(None, "importing");
    let (tree, stats) = read_dir_tree(a, &ContentSink::Repository(&r), &|n| bar.inc(n))?;
    bar.finish_and_clear();
    let id = match a.min_version {
        Some(min) => {
            let (image, _) = image_file(
                &tree,
                &WriteOptions::version(version(min, "--min-version")?),
            )?;
            r.commit_image(image, name)?
        }
        None => crate::erofs::store_image(&r, &tree, erofs_version, name)?,
    };
    writeln!(std::io::stdout(), "{id}").context("cannot write to stdout")?;
    if std::io::stderr().is_terminal() {
        let _ = writeln!(
            std::io::stderr(),
            "imported {}: {} files, {} stored as objects ({})",
            a.dir.display(),
            stats.files,
            stats.external,
            crate::show::human_bytes(stats.bytes),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `compute-id DIR`: the image id, nothing stored. The algorithm: `--hash`,
/// else the repository's when there is one (a damaged one is an error),
/// else sha512; the format:
/// `--erofs-version`, else 1 (cfsctl ignores the repository's here too).
pub fn compute_id(
    repo: Option<&Path>,
    a: &DirReadArgs,
    hash: Option<Algorithm>,
) -> Result<ExitCode> {
    let alg = match hash {
        Some(h) => h,
        None => crate::repository::default_path(repo)
            .ok()
            .map(|p| crate::repository::Repository::try_open(&p))
            .transpose()?
            .flatten()
            .map_or(Algorithm::Sha512, |r| r.algorithm()),
    };
    let (tree, _) = read_dir_tree(a, &ContentSink::DigestOnly(alg), &|_| {})?;
    let mut image = tempfile::tempfile().context("cannot create a temporary file")?;
    match a.min_version {
        Some(min) => {
            write_image_with(
                &tree,
                &WriteOptions::version(version(min, "--min-version")?),
                &mut image,
            )?;
        }
        None => {
            crate::erofs::write_image_version(&tree, a.erofs_version.unwrap_or(1), &mut image)?;
        }
    }
    image
        .seek(std::io::SeekFrom::Start(0))
        .context("cannot read the image back")?;
    let (id, _) = fsverity::digest_reader(alg, std::io::BufReader::new(image))
        .context("cannot read the image back")?;
    writeln!(std::io::stdout(), "{id}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// An image named on the command line: a file path, else a repository image.
/// An image file, or any stored tree by any name `mount` takes.
fn load_tree(repo: Option<&Path>, name: &str) -> Result<std::sync::Arc<dyn Tree>> {
    let p = Path::new(name);
    if p.is_file() {
        let image = ErofsImage::open(p).with_context(|| format!("image {}", p.display()))?;
        return Ok(std::sync::Arc::new(image));
    }
    let r = open(repo)?;
    crate::view::open_tree(&r, name)
}

pub fn dump(repo: Option<&Path>, name: &str) -> Result<ExitCode> {
    let tree = load_tree(repo, name)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    // NLINK as stored, as composefs-info prints it (a dumpfile's declared
    // NLINK lands in the image unchanged).
    let opts = crate::dumpfile::WriteOptions {
        stored_nlink: true,
        ..Default::default()
    };
    crate::dumpfile::write_with(&*tree, &mut out, &opts)?;
    out.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn perms_string(st_mode: u32) -> String {
    let t = match st_mode & mode::S_IFMT {
        mode::S_IFDIR => 'd',
        mode::S_IFLNK => 'l',
        mode::S_IFCHR => 'c',
        mode::S_IFBLK => 'b',
        mode::S_IFIFO => 'p',
        mode::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::from(t);
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (st_mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (st_mode & special != 0, x) {
            (true, true) => lower,
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `YYYY-MM-DD HH:MM` in UTC (days-from-civil, no time zone database).
pub(crate) fn format_time(sec: i64) -> String {
    let (y, m, d, hh, mm, _) = crate::show::utc_from_unix(sec);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// One `ls -l` line. `dir_size`: a directory's size as its source stores
/// it (an image does; other trees show 4096, as the FUSE view does).
fn ls_line(
    tree: &dyn Tree,
    dir_size: &dyn Fn(Ino) -> Result<u64>,
    ino: Ino,
    name: &[u8],
    nlink: u64,
) -> Result<String> {
    let inode = tree.inode(ino)?;
    let size = match &inode.kind {
        Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => {
            format!(
                "{}, {}",
                rustix::fs::major(*rdev as _),
                rustix::fs::minor(*rdev as _)
            )
        }
        Kind::Directory => dir_size(ino)?.to_string(),
        _ => inode.size().to_string(),
    };
    let mut line = format!(
        "{} {:>3} {:>5} {:>5} {:>10} {} {}",
        perms_string(inode.st_mode()),
        nlink,
        inode.stat.uid,
        inode.stat.gid,
        size,
        format_time(inode.stat.mtime.sec),
        crate::show::display_bytes(name)
    );
    if let Kind::Symlink(target) = &inode.kind {
        line.push_str(" -> ");
        line.push_str(&crate::show::display_bytes(target));
    }
    Ok(line)
}

/// A directory's size as the tree's source stores it.
type DirSize = dyn Fn(Ino) -> Result<u64>;

/// Split `REF:PATH` (PATH starting with `/`); `None` if there is no such
/// colon. In a remote name (`URL#REF:PATH`, `docker://…:PATH`) the colon
/// is looked for after the URL.
pub(crate) fn split_ref_path(arg: &str) -> Option<(&str, &str)> {
    let from = crate::view::remote::path_search_start(arg);
    let i = from + arg[from..].find(":/")?;
    Some((&arg[..i], &arg[i + 1..]))
}

/// `ls [-l]` of a path in an image (file, ref or digest) or a stored ostree
/// commit; `name` may be `REF:PATH`.
pub fn ls(
    repo: Option<&Path>,
    name: &str,
    path: Option<&str>,
    remote: &super::remote_args::RemoteArgs,
) -> Result<ExitCode> {
    let (name, path) = match (split_ref_path(name), path) {
        (Some((n, p)), None) if !Path::new(name).exists() => (n, p),
        (_, p) => (name, p.unwrap_or("/")),
    };
    // An image file, else what the name means in the repository; images
    // show their directories' stored sizes.
    let image = if let Some(rn) = crate::view::remote::RemoteName::parse(name)? {
        let r = open(repo)?;
        let opened = crate::view::remote::open(&r, &rn, &remote.options()?)?;
        use crate::view::remote::{RemoteKind, Served};
        match opened.kind {
            // The image's own directory sizes (its metadata is stored here).
            RemoteKind::Composefs(Served::Image(id)) => {
                let img = ErofsImage::from_file(r.open_object(&id)?)
                    .with_context(|| format!("image {name:?}"))?;
                let img = Arc::new(img);
                let sizes: Box<DirSize> = Box::new(move |i| Ok(img.raw_inode(i)?.size));
                return ls_tree(opened.tree, sizes, name, path);
            }
            _ => Err(opened.tree),
        }
    } else if Path::new(name).is_file() {
        Ok(ErofsImage::open(Path::new(name)).with_context(|| format!("image {name}"))?)
    } else {
        let r = open(repo)?;
        match crate::view::resolve(&r, name)? {
            crate::view::Source::Image(id) => Ok(ErofsImage::from_file(r.open_object(&id)?)
                .with_context(|| format!("image {name:?}"))?),
            source => Err(source.load(&r).with_context(|| format!("{name:?}"))?),
        }
    };
    let (tree, dir_size): (Arc<dyn Tree>, Box<DirSize>) = match image {
        Ok(img) => {
            let img = Arc::new(img);
            let sizes = img.clone();
            (img, Box::new(move |i| Ok(sizes.raw_inode(i)?.size)))
        }
        Err(tree) => (tree, Box::new(|_| Ok(4096))),
    };
    ls_tree(tree, dir_size, name, path)
}

/// `ls` of `path` in `tree` (named `name`), directories sized by `dir_size`.
fn ls_tree(
    tree: Arc<dyn Tree>,
    dir_size: Box<DirSize>,
    name: &str,
    path: &str,
) -> Result<ExitCode> {
    let ino = tree
        .resolve_path(path.as_bytes())?
        .with_context(|| format!("{path}: no such file or directory in {name}"))?;
    let nlink = |i: Ino| -> Result<u64> {
        Ok(match tree.nlink(i)? {
            Some(n) => n,
            None => crate::tree::link_counts(tree.as_ref())?
                .get(&i)
                .copied()
                .unwrap_or(1),
        })
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    if tree.inode(ino)?.kind.is_dir() {
        for e in tree.readdir(ino)?.iter() {
            writeln!(
                out,
                "{}",
                ls_line(tree.as_ref(), &*dir_size, e.ino, &e.name, nlink(e.ino)?)?
            )?;
        }
    } else {
        writeln!(
            out,
            "{}",
            ls_line(tree.as_ref(), &*dir_size, ino, path.as_bytes(), nlink(ino)?)?
        )?;
    }
    out.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `cat REF:PATH`: a file's content from any tree (an image, a stored
/// ostree commit or OCI image, a remote tree), without mounting.
pub fn cat_path(
    repo: Option<&Path>,
    name: &str,
    path: &str,
    remote: &super::remote_args::RemoteArgs,
) -> Result<ExitCode> {
    let r = open(repo)?;
    let tree = crate::view::open_any(&r, name, &remote.options()?)?;
    let ino = tree
        .resolve_path(path.as_bytes())?
        .with_context(|| format!("{path}: no such file or directory in {name}"))?;
    let inode = tree.inode(ino)?;
    let mut out = std::io::stdout().lock();
    match &inode.kind {
        Kind::Regular(FileData::Inline(b)) => out.write_all(b)?,
        Kind::Regular(FileData::External { .. }) => {
            let id = tree
                .content_object(ino)
                .with_context(|| format!("{name}:{path}"))?
                .with_context(|| {
                    format!("{name}:{path}: the image does not say where its content is")
                })?;
            let mut f = r
                .open_object(&id)
                .with_context(|| format!("{name}:{path}: object {id}"))?;
            std::io::copy(&mut f, &mut out).with_context(|| format!("{name}:{path}"))?;
        }
        Kind::Directory => bail!("{name}:{path} is a directory"),
        _ => bail!("{name}:{path} is not a regular file"),
    }
    out.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

pub fn mount(repo: Option<&Path>, name: &str, target: &Path) -> Result<ExitCode> {
    let r = open(repo)?;
    let image = kernel_image(&r, name)?;
    let objects = std::fs::canonicalize(r.path().join("objects"))
        .with_context(|| format!("cannot resolve {}/objects", r.path().display()))?;
    mount_image(
        &image,
        &objects,
        target,
        MountOptions {
            require_verity: r.verity(),
            loop_device: false,
        },
    )
    .with_context(|| format!("cannot mount image {name:?} at {}", target.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The EROFS image a kernel mount of `name` (any name `mount` takes)
/// uses: a stored image as it is; for any other stored tree (an ostree
/// commit, an OCI image) its image in the repository's format, written now
/// to an unnamed temporary file (stored nowhere; the mount keeps it).
fn kernel_image(r: &crate::repository::Repository, name: &str) -> Result<File> {
    use crate::view::Source;
    let source = crate::view::resolve(r, name)?;
    if let Source::Image(id) = source {
        return r
            .open_object(&id)
            .with_context(|| format!("image {name:?}"));
    }
    let tree = source.load(r).with_context(|| format!("{name:?}"))?;
    crate::erofs::image_tempfile(&*tree, r.erofs_version())
        .with_context(|| format!("cannot write the image of {name:?}"))
}

/// Unmount a kernel or FUSE mount. A user may not unmount a FUSE mount
/// with umount(2): `fusermount3 -u` does it for them.
pub fn umount(target: &Path) -> Result<ExitCode> {
    let err = match unmount(target) {
        Ok(()) => return Ok(ExitCode::SUCCESS),
        Err(e) => e,
    };
    if !rustix::process::geteuid().is_root() {
        let ok = std::process::Command::new(crate::fuse::fusermount::BIN)
            .arg("-u")
            .arg(target)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(ExitCode::SUCCESS);
        }
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(perms_string(0o104755), "-rwsr-xr-x");
        assert_eq!(perms_string(0o41777), "drwxrwxrwt");
        assert_eq!(perms_string(0o120777), "lrwxrwxrwx");
        assert_eq!(perms_string(0o102644), "-rw-r-Sr--");
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(format_time(-86_400), "1969-12-31 00:00");
    }
}
