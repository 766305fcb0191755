//! Dump lines into a tree, as C `mkcomposefs --from-file` reads them
//! (`tree_from_dump_line`): [`parse`], [`parse_with`] and [`parse_reader`].

use std::collections::HashMap;

use anyhow::{Context, Result, bail};

use super::escape::{unescape, unescape_optional};
use super::fields::{
    c_string, parse_c_number, parse_digest, parse_mtime, parse_xattr, split_path, split_target,
};
use super::links::{self, Names, PathEntry, PendingLink};
use super::{MAX_INLINE_CONTENT, MAX_SYMLINK_TARGET};
use crate::show::short_path;
use crate::tree::{FileData, Ino, Inode, Kind, MemTree, MemTreeBuilder, Stat, mode};

/// Space the xattrs of one file may take, as the C library counts it
/// (`LCFS_INODE_EXTERNAL_XATTR_MAX`): a 12-byte header, then per xattr
/// 7 bytes plus its name and value ([`xattr_cost`]).
const MAX_XATTR_SPACE: usize = u16::MAX as usize / 2;
const XATTR_HEADER: usize = 12;

fn xattr_cost(name: &[u8], value: &[u8]) -> usize {
    7 + name.len() + value.len()
}

/// The parser's state. Names are found by `(directory, name)`, never by
/// whole path, and the directories of the previous line's path are kept,
/// so a line costs time linear in its length plus one lookup per
/// component not shared with the line before: a dumpfile 10,000
/// directories deep (100 MB of paths) parses in linear time, with memory
/// for the tree, one line and one path of directories.
struct Parser {
    opts: ParseOptions,
    b: MemTreeBuilder,
    root: Option<Ino>,
    /// `(directory, name)` → what the name is.
    names: Names,
    links: Vec<PendingLink>,
    /// The previous line's parent directories: `(name, inode)` per
    /// component below the root.
    dirs: Vec<(Vec<u8>, Ino)>,
    /// NLINK as each non-directory's own line declares it.
    declared_nlink: HashMap<Ino, u32>,
}

/// How strictly to read a dumpfile.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseOptions {
    /// The C parser's strict mode (`CFS_PARSE_STRICT` set): the text must
    /// end with a newline, a symlink's SIZE must be its target's length and
    /// it has no CONTENT, and only devices have a non-zero RDEV.
    pub strict: bool,
}

/// Parse a dumpfile into a tree, as C `mkcomposefs --from-file` reads it
/// by default (see [`parse_with`]).
pub fn parse(text: &[u8]) -> Result<MemTree> {
    parse_with(text, ParseOptions::default())
}

/// Parse a dumpfile into a tree.
///
/// What the C parser (`tree_from_dump_line`) accepts is accepted, and read
/// the same way:
/// - the first line is the root `/` (a directory), parents come before
///   their children; leading and doubled slashes in a path are skipped;
/// - fields missing at the end of a line are empty;
/// - numbers are C `strtoull` numbers (a sign, saturation); UID, GID and
///   NLINK keep their low 32 bits, MODE its low 16, MTIME nanoseconds 32;
/// - paths, symlink targets, backing paths and xattr names end at an
///   escaped NUL (C strings);
/// - hardlink lines (`@MODE`) use only PATH, MODE and PAYLOAD (the target,
///   which may come later or be a hardlink itself); the inode keeps the
///   place of its own line and its declared NLINK
///   ([`LinkHint`](crate::tree::LinkHint));
/// - a regular file with CONTENT is inline (its length must equal SIZE),
///   without it and SIZE 0 empty, else external with PAYLOAD as its
///   backing path and DIGEST; other kinds ignore PAYLOAD (symlinks: their
///   target), CONTENT and DIGEST, and only devices keep RDEV;
/// - a repeated xattr replaces the earlier value.
///
/// Refused although the C tool writes an image: an MTIME whose nanoseconds
/// (32 bits of them) are 10^9 or more, a hardlink to a
/// directory or the root (the image would have a directory loop), a
/// regular file of 2^63 bytes or more (C writes it without data), an
/// external file whose DIGEST does not start with 64 hex digits (C writes
/// uninitialised bytes).
/// Accepted although the C tool refuses: empty lines, one trailing space.
pub fn parse_with(text: &[u8], opts: ParseOptions) -> Result<MemTree> {
    let mut p = Parser::new(opts);
    let mut lines = text.split(|&c| c == b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if opts.strict && lines.peek().is_none() {
            bail!(
                "dumpfile line {}: no newline at the end (strict mode)",
                i + 1
            );
        }
        p.line(line, i + 1)
            .with_context(|| format!("dumpfile line {}", i + 1))?;
    }
    p.finish()
}

/// [`parse_with`] from a reader, one line at a time: memory for the tree
/// and the longest line, not for the whole text.
pub fn parse_reader(r: impl std::io::BufRead, opts: ParseOptions) -> Result<MemTree> {
    let mut r = r;
    let mut p = Parser::new(opts);
    let mut line = Vec::new();
    let mut lineno = 0usize;
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading dumpfile line {}", lineno + 1))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let text = match line.strip_suffix(b"\n") {
            Some(t) => t,
            None if opts.strict => {
                bail!("dumpfile line {lineno}: no newline at the end (strict mode)")
            }
            None => &line,
        };
        if text.is_empty() {
            continue;
        }
        p.line(text, lineno)
            .with_context(|| format!("dumpfile line {lineno}"))?;
    }
    p.finish()
}

impl Parser {
    fn new(opts: ParseOptions) -> Parser {
        Parser {
            opts,
            b: MemTreeBuilder::new(),
            root: None,
            names: HashMap::new(),
            links: Vec::new(),
            dirs: Vec::new(),
            declared_nlink: HashMap::new(),
        }
    }

    /// The directory at `comps` (components below the root), reusing the
    /// previous line's directories as far as the paths agree. `path` is
    /// for messages.
    fn directory(&mut self, comps: &[&[u8]], path: &[u8]) -> Result<Ino> {
        let root = self.root.context("no root directory")?;
        let same = self
            .dirs
            .iter()
            .zip(comps)
            .take_while(|((n, _), c)| n.as_slice() == **c)
            .count();
        self.dirs.truncate(same);
        for &c in &comps[same..] {
            let dir = self.dirs.last().map_or(root, |d| d.1);
            let ino = match self.names.get(&(dir, c.to_vec())) {
                None => bail!(
                    "parent directory of {:?} is not listed before it",
                    short_path(path)
                ),
                Some(PathEntry::Link(_)) => {
                    bail!(
                        "parent of {:?} is a hardlink, not a directory",
                        short_path(path)
                    )
                }
                Some(PathEntry::Inode(ino)) => *ino,
            };
            if !self.b.get(ino).is_some_and(|i| i.kind.is_dir()) {
                bail!("parent of {:?} is not a directory", short_path(path));
            }
            self.dirs.push((c.to_vec(), ino));
        }
        Ok(self.dirs.last().map_or(root, |d| d.1))
    }

    fn line(&mut self, line: &[u8], lineno: usize) -> Result<()> {
        let line = line.strip_suffix(b" ").unwrap_or(line);
        // Fields missing at the end are empty, as the C parser reads them.
        let mut it = line.split(|&c| c == b' ');
        let mut f: [&[u8]; 11] = [&[]; 11];
        for slot in f.iter_mut() {
            *slot = it.next().unwrap_or_default();
        }
        let [
            path_f,
            size_f,
            mode_f,
            nlink_f,
            uid_f,
            gid_f,
            rdev_f,
            mtime_f,
            payload_f,
            content_f,
            digest_f,
        ] = f;

        let path = c_string(unescape(path_f).context("PATH")?);
        let comps = split_path(&path)?;

        let (is_link, mode_f) = match mode_f.strip_prefix(b"@") {
            Some(m) => (true, m),
            None => (false, mode_f),
        };
        // `st_mode` is 32 bits in the C tool and 16 in the image.
        let st_mode = parse_c_number(mode_f, 8, "MODE")? as u32;
        let fmt = st_mode & mode::S_IFMT;
        if !mode::is_known_type(fmt) {
            bail!("unknown file type {fmt:o} in MODE {st_mode:o}");
        }

        if comps.is_empty() {
            if fmt != mode::S_IFDIR {
                bail!("the root / must be a directory (mode {st_mode:o})");
            }
            if is_link {
                bail!("the root cannot be a hardlink");
            }
            if self.root.is_some() {
                bail!("a second root / entry");
            }
        } else if self.root.is_none() {
            bail!(
                "{:?} comes before the root directory / (the first entry must be /)",
                short_path(&path)
            );
        }

        // Find the parent directory and check the name is new.
        let (parent, name) = match comps.split_last() {
            None => (None, Vec::new()),
            Some((&last, parents)) => {
                let parent = self.directory(parents, &path)?;
                if self.names.contains_key(&(parent, last.to_vec())) {
                    bail!("{:?} is listed twice", short_path(&path));
                }
                (Some(parent), last.to_vec())
            }
        };

        if is_link {
            if fmt == mode::S_IFDIR {
                bail!("directories cannot be hardlinked");
            }
            let target = unescape_optional(payload_f)
                .context("PAYLOAD")?
                .map(c_string)
                .with_context(|| format!("hardlink {:?} has no target path", short_path(&path)))?;
            let tcomps = split_target(&target)?;
            if tcomps.is_empty() {
                bail!(
                    "hardlink {:?} points at the root directory",
                    short_path(&path)
                );
            }
            let target = tcomps.join(&b'/');
            let idx = self.links.len();
            let parent = parent.expect("non-root");
            self.names
                .insert((parent, name.clone()), PathEntry::Link(idx));
            self.links.push(PendingLink {
                line: lineno,
                parent,
                name,
                target,
                shown: short_path(&path),
            });
            return Ok(());
        }

        let size = parse_c_number(size_f, 10, "SIZE")?;
        let nlink = parse_c_number(nlink_f, 10, "NLINK")? as u32;
        let uid = parse_c_number(uid_f, 10, "UID")? as u32;
        let gid = parse_c_number(gid_f, 10, "GID")? as u32;
        let rdev = parse_c_number(rdev_f, 10, "RDEV")?;
        let mtime = parse_mtime(mtime_f)?;
        let payload = unescape_optional(payload_f)
            .context("PAYLOAD")?
            .map(c_string);
        let content = unescape_optional(content_f).context("CONTENT")?;
        let digest = unescape_optional(digest_f).context("DIGEST")?;
        if let Some(c) = &content
            && c.len() as u64 != size
        {
            bail!("CONTENT has {} bytes but SIZE is {size}", c.len());
        }
        let is_device = matches!(fmt, mode::S_IFCHR | mode::S_IFBLK);
        if self.opts.strict && !is_device && rdev != 0 {
            bail!("RDEV {rdev} on a file that is not a device (strict mode)");
        }

        let kind = match fmt {
            mode::S_IFREG => match content {
                Some(c) => {
                    if c.len() > MAX_INLINE_CONTENT {
                        bail!(
                            "CONTENT of {} bytes is more than {MAX_INLINE_CONTENT}",
                            c.len()
                        );
                    }
                    Kind::Regular(FileData::Inline(c))
                }
                None if size == 0 => Kind::Regular(FileData::Inline(Vec::new())),
                None => {
                    if size > i64::MAX as u64 {
                        bail!("SIZE {size} is too large for a file");
                    }
                    let digest = match digest {
                        // 128 hex digits are a sha512 digest (our dumps and
                        // composefs-rs's of sha512 repositories); C reads any
                        // longer DIGEST as its first 64 digits, and so do we.
                        Some(d) if d.len() > 64 && d.len() != 128 => Some(parse_digest(&d[..64])?),
                        Some(d) => Some(parse_digest(&d)?),
                        None => None,
                    };
                    Kind::Regular(FileData::External {
                        size,
                        redirect: payload.filter(|p| !p.is_empty()),
                        digest,
                    })
                }
            },
            mode::S_IFLNK => {
                let target = payload.context("symlink without a target (PAYLOAD is -)")?;
                if target.is_empty() {
                    bail!("symlink with an empty target");
                }
                if target.len() > MAX_SYMLINK_TARGET {
                    bail!(
                        "symlink target of {} bytes is longer than {MAX_SYMLINK_TARGET}",
                        target.len()
                    );
                }
                if self.opts.strict && size != target.len() as u64 {
                    bail!(
                        "symlink SIZE {size} is not its target's length {} (strict mode)",
                        target.len()
                    );
                }
                if self.opts.strict && content.is_some_and(|c| !c.is_empty()) {
                    bail!("a symlink cannot have CONTENT (strict mode)");
                }
                Kind::Symlink(target)
            }
            mode::S_IFDIR => Kind::Directory,
            mode::S_IFCHR => Kind::CharDevice { rdev },
            mode::S_IFBLK => Kind::BlockDevice { rdev },
            mode::S_IFIFO => Kind::Fifo,
            _ => Kind::Socket,
        };

        // The C parser refuses a line whose xattrs take more than 64 KiB.
        let rest_len = line
            .len()
            .saturating_sub(f.iter().map(|x| x.len() + 1).sum::<usize>());
        if rest_len > usize::from(u16::MAX) {
            bail!("too many xattrs ({rest_len} bytes of them)");
        }
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut xattr_size = 0usize;
        for (n, x) in it.enumerate() {
            let (key, value) = parse_xattr(x).with_context(|| format!("xattr {}", n + 1))?;
            // A repeated name replaces the earlier value.
            if let Some(old) = xattrs.iter().position(|(k, _)| *k == key) {
                let (k, v) = xattrs.remove(old);
                xattr_size -= xattr_cost(&k, &v);
            }
            xattr_size += xattr_cost(&key, &value);
            if XATTR_HEADER + xattr_size > MAX_XATTR_SPACE {
                bail!(
                    "xattr {:?}: the xattrs of one file take more than {MAX_XATTR_SPACE} bytes",
                    short_path(&key)
                );
            }
            xattrs.push((key, value));
        }
        xattrs.sort();

        let ino = self.b.add(Inode {
            stat: Stat {
                perms: st_mode & mode::PERMS,
                uid,
                gid,
                mtime,
            },
            kind,
            xattrs,
        });
        if fmt != mode::S_IFDIR {
            self.declared_nlink.insert(ino, nlink);
        }
        match parent {
            None => self.root = Some(ino),
            Some(dir) => {
                self.b.link(dir, &name, ino)?;
                self.names.insert((dir, name), PathEntry::Inode(ino));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<MemTree> {
        let root = self
            .root
            .context("dumpfile has no entries (the root directory / is missing)")?;
        links::resolve(self.b, root, &self.names, &self.links, self.declared_nlink)
    }
}
