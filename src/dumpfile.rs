//! composefs-dump(5): the text form of a composefs tree, both directions.
//!
//! One line per name, eleven space-separated fixed fields and then the
//! extended attributes:
//!
//! ```text
//! PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [KEY=VALUE]...
//! ```
//!
//! Rules (taken from the C tools: `tools/mkcomposefs.c` `tree_from_dump_line`
//! and `unescape_string` for reading, `tools/composefs-info.c` `dump_node` and
//! `print_escaped` for writing):
//!
//! - Escapes: `\\`, `\n`, `\r`, `\t` and `\xHH`. The writer escapes `\`,
//!   newline, CR and tab with the short forms and every other byte outside
//!   `0x21..=0x7e` (space included) as `\xHH` (lowercase hex); `=` is escaped
//!   only inside xattr names and values.
//! - `-` alone means "not set" in PAYLOAD, CONTENT and DIGEST; a payload or
//!   content that *is* a single `-` is written `\x2d`. Paths and xattrs are
//!   never optional, so `-` is literal there.
//! - MODE is octal `st_mode`; a leading `@` marks a hardlink, whose PAYLOAD is
//!   the path of another name of the same inode (all its other fields are
//!   ignored when reading). Hardlinks are resolved after the whole file is
//!   read, so the target may come later; chains are followed.
//! - MTIME is `SEC.NSEC` (not a decimal fraction: `1.1` is one second and one
//!   nanosecond).
//! - PAYLOAD is a symlink's target or a regular file's backing path
//!   (`trusted.overlay.redirect` without the leading `/`); CONTENT is a small
//!   file's inline bytes (its length must equal SIZE); DIGEST is the
//!   fs-verity digest of a regular file's content (64 hex digits for sha256,
//!   128 for sha512).
//!
//! The writer produces what `composefs-info dump` prints for the image the
//! C `mkcomposefs` would build from the same tree (see [`write_with`] for the
//! details and the knobs).

use crate::show::short_path;
use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use crate::fsverity::{Algorithm, ObjectId};
use crate::tree::{
    DirEntry, FileData, Ino, Inode, Kind, MemTree, MemTreeBuilder, Stat, Timespec, Tree,
    check_name, mode,
};

/// Longest symlink target accepted (the kernel's `PATH_MAX` less the NUL).
pub const MAX_SYMLINK_TARGET: usize = 4095;
/// Longest xattr name (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value the C library accepts (`UINT16_MAX`).
pub const MAX_XATTR_VALUE: usize = 65535;
/// Largest inline CONTENT the C parser takes (`LCFS_INLINE_CONTENT_MAX`).
pub const MAX_INLINE_CONTENT: usize = 5000;
/// Space the xattrs of one file may take, as the C library counts it
/// (`LCFS_INODE_EXTERNAL_XATTR_MAX`): a 12-byte header, then per xattr
/// 7 bytes plus its name and value ([`xattr_cost`]).
const MAX_XATTR_SPACE: usize = u16::MAX as usize / 2;
const XATTR_HEADER: usize = 12;

fn xattr_cost(name: &[u8], value: &[u8]) -> usize {
    7 + name.len() + value.len()
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

/// Which escaping a field gets (the C tool's `ESCAPE_*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Paths.
    Standard,
    /// Payload and content: a lone `-` is escaped as `\x2d`.
    LoneDash,
    /// Xattr names and values: `=` is escaped too.
    Equal,
}

/// Append `val` escaped for a dump field.
pub fn escape_into(out: &mut Vec<u8>, val: &[u8], how: Escape) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if how == Escape::LoneDash && val == b"-" {
        out.extend_from_slice(b"\\x2d");
        return;
    }
    for &c in val {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'=' if how == Escape::Equal => out.extend_from_slice(b"\\x3d"),
            0x21..=0x7e => out.push(c),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[(c >> 4) as usize],
                HEX[(c & 15) as usize],
            ]),
        }
    }
}

/// `val` escaped for a dump field.
pub fn escape(val: &[u8], how: Escape) -> Vec<u8> {
    let mut v = Vec::with_capacity(val.len());
    escape_into(&mut v, val, how);
    v
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Undo [`escape`]: accepts `\\ \n \r \t \xHH` (either hex case); any other
/// escape, a trailing `\` or short hex is an error. Never longer than the input.
pub fn unescape(field: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let c = field[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = field.get(i) else {
            bail!("backslash at the end of a field");
        };
        i += 1;
        match e {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'x' => {
                let (Some(&h), Some(&l)) = (field.get(i), field.get(i + 1)) else {
                    bail!("\\x escape without two hex digits");
                };
                let (Some(h), Some(l)) = (hexval(h), hexval(l)) else {
                    bail!(
                        "invalid hex digits {:?} in \\x escape",
                        String::from_utf8_lossy(&field[i..i + 2])
                    );
                };
                out.push(h << 4 | l);
                i += 2;
            }
            other => bail!(
                "unsupported escape \\{}",
                char::from(other).escape_default()
            ),
        }
    }
    Ok(out)
}

/// An optional field: `-` is `None`.
fn unescape_optional(field: &[u8]) -> Result<Option<Vec<u8>>> {
    if field == b"-" {
        Ok(None)
    } else {
        unescape(field).map(Some)
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// A number as C `strtoull` reads it (what `mkcomposefs` uses): optional
/// leading white space and sign, at least one digit of `base`, nothing
/// after; a `-` negates modulo 2^64 and a value past 2^64 - 1 saturates.
fn parse_c_number(field: &[u8], base: u32, what: &str) -> Result<u64> {
    let s = field.trim_ascii_start();
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        bail!("empty or invalid {what} {:?}", short_path(field));
    }
    let mut v: u64 = 0;
    let mut saturated = false;
    for &c in digits {
        let d = (c as char)
            .to_digit(base)
            .with_context(|| format!("invalid {what} {:?}: not a number", short_path(field)))?;
        match v
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(n) => v = n,
            None => saturated = true,
        }
    }
    Ok(if saturated {
        u64::MAX
    } else if neg {
        0u64.wrapping_sub(v)
    } else {
        v
    })
}

fn parse_mtime(field: &[u8]) -> Result<Timespec> {
    // As the C parser: seconds up to the first '.', nanoseconds after it,
    // each a C number; stored as `time_t` and a 32-bit field.
    let dot = field
        .iter()
        .position(|&c| c == b'.')
        .with_context(|| format!("invalid MTIME {:?}: expected SEC.NSEC", short_path(field)))?;
    let sec = parse_c_number(&field[..dot], 10, "MTIME seconds")? as i64;
    let nsec = parse_c_number(&field[dot + 1..], 10, "MTIME nanoseconds")? as u32;
    // C would write this too, an invalid time no reader takes back.
    if nsec >= 1_000_000_000 {
        bail!("MTIME nanoseconds {nsec} is not below 1000000000");
    }
    Ok(Timespec { sec, nsec })
}

fn parse_digest(field: &[u8]) -> Result<ObjectId> {
    let s = std::str::from_utf8(field).map_err(|_| anyhow!("DIGEST is not hex"))?;
    let alg = match s.len() {
        64 => Algorithm::Sha256,
        128 => Algorithm::Sha512,
        n => bail!("DIGEST has {n} characters; expected 64 (sha256) or 128 (sha512) hex digits"),
    };
    ObjectId::from_hex(alg, s).with_context(|| format!("DIGEST {:?} is not hex", short_path(field)))
}

/// The bytes before the first NUL: the C tool keeps paths, symlink
/// targets, backing paths and xattr names as C strings, so an escaped
/// `\x00` ends them.
fn c_string(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = v.iter().position(|&c| c == 0) {
        v.truncate(nul);
    }
    v
}

/// The components of a line's PATH, as the C parser finds them: `/` alone
/// is the root (no components); otherwise leading and repeated slashes
/// are skipped (`//a` is `/a`, and a path without a leading slash is below
/// the root too) but the last component must be a name (`/a/` is not).
fn split_path(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path == b"/" {
        return Ok(Vec::new());
    }
    let mut comps: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
    let last = comps.pop().unwrap_or_default();
    comps.retain(|c| !c.is_empty());
    comps.push(last);
    for comp in &comps {
        check_name(comp).with_context(|| format!("bad path {:?}", short_path(path)))?;
    }
    Ok(comps)
}

/// The components of a hardlink's target (C `lookup_path`): empty
/// components anywhere are skipped, so `/a//b/` names `/a/b`.
fn split_target(path: &[u8]) -> Result<Vec<&[u8]>> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .map(|comp| {
            check_name(comp)
                .with_context(|| format!("bad hardlink target {:?}", short_path(path)))?;
            Ok(comp)
        })
        .collect()
}

enum PathEntry {
    Inode(Ino),
    /// Index into `Parser::links`.
    Link(usize),
}

struct PendingLink {
    line: usize,
    parent: Ino,
    name: Vec<u8>,
    /// Normalised target: components joined by `/`, no leading slash.
    target: Vec<u8>,
    /// The hardlink's own path, shortened, for messages.
    shown: String,
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
    names: HashMap<(Ino, Vec<u8>), PathEntry>,
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
///   place of its own line and its declared NLINK ([`LinkHint`]);
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

/// A path for messages: short even 10,000 directories deep.
fn show_path(p: &[u8]) -> String {
    crate::show::short_path(p)
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
                    show_path(path)
                ),
                Some(PathEntry::Link(_)) => {
                    bail!(
                        "parent of {:?} is a hardlink, not a directory",
                        show_path(path)
                    )
                }
                Some(PathEntry::Inode(ino)) => *ino,
            };
            if !self.b.get(ino).is_some_and(|i| i.kind.is_dir()) {
                bail!("parent of {:?} is not a directory", show_path(path));
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
                show_path(&path)
            );
        }

        // Find the parent directory and check the name is new.
        let (parent, name) = match comps.split_last() {
            None => (None, Vec::new()),
            Some((&last, parents)) => {
                let parent = self.directory(parents, &path)?;
                if self.names.contains_key(&(parent, last.to_vec())) {
                    bail!("{:?} is listed twice", show_path(&path));
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
                .with_context(|| format!("hardlink {:?} has no target path", show_path(&path)))?;
            let tcomps = split_target(&target)?;
            if tcomps.is_empty() {
                bail!(
                    "hardlink {:?} points at the root directory",
                    show_path(&path)
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
                shown: show_path(&path),
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

    /// What the normalised path `target` (components joined by `/`) names,
    /// and the directory holding that name: its parents must be
    /// directories.
    fn lookup(&self, root: Ino, target: &[u8]) -> Option<(Ino, &PathEntry)> {
        let mut comps = target.split(|&c| c == b'/');
        let last = comps.next_back()?;
        let mut dir = root;
        for c in comps {
            match self.names.get(&(dir, c.to_vec()))? {
                PathEntry::Inode(ino) => dir = *ino,
                PathEntry::Link(_) => return None,
            }
        }
        self.names.get(&(dir, last.to_vec())).map(|e| (dir, e))
    }

    fn finish(mut self) -> Result<MemTree> {
        let root = self
            .root
            .context("dumpfile has no entries (the root directory / is missing)")?;
        // Inode → (its own line's directory and name, number of names).
        let mut linked: HashMap<Ino, (Ino, Vec<u8>, u32)> = HashMap::new();
        for i in 0..self.links.len() {
            let l = &self.links[i];
            let ctx = || format!("dumpfile line {}: hardlink {:?}", l.line, l.shown);
            let mut target = &l.target;
            let mut steps = 0;
            let (dir, ino) = loop {
                match self.lookup(root, target) {
                    None => {
                        return Err(anyhow!("target {:?} does not exist", show_path(target)))
                            .with_context(ctx);
                    }
                    Some((dir, PathEntry::Inode(ino))) => break (dir, *ino),
                    Some((_, PathEntry::Link(j))) => {
                        steps += 1;
                        if steps > self.links.len() {
                            return Err(anyhow!("hardlinks form a loop")).with_context(ctx);
                        }
                        target = &self.links[*j].target;
                    }
                }
            };
            if self.b.get(ino).is_some_and(|i| i.kind.is_dir()) {
                return Err(anyhow!("target {:?} is a directory", show_path(target)))
                    .with_context(ctx);
            }
            let own_name = target.rsplit(|&c| c == b'/').next().unwrap_or_default();
            linked
                .entry(ino)
                .or_insert_with(|| (dir, own_name.to_vec(), 1))
                .2 += 1;
            let (parent, name) = (l.parent, l.name.clone());
            self.b.link(parent, &name, ino).with_context(ctx)?;
        }
        // What the C tool writes differently from the names alone: a
        // hardlinked inode sits at its own line's name (not the first in
        // order), and every non-directory has the NLINK its line declares.
        for (ino, declared) in std::mem::take(&mut self.declared_nlink) {
            let names = linked.get(&ino).map_or(1, |l| l.2);
            if declared != names {
                self.b.link_hint(ino).nlink = Some(declared);
            }
        }
        for (ino, (dir, name, _)) in linked {
            self.b.link_hint(ino).primary = Some((dir, name));
        }
        self.b.build(root)
    }
}

fn parse_xattr(field: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    if field.is_empty() {
        bail!("empty xattr field (two spaces in a row?)");
    }
    let (k, v) = match field.iter().position(|&c| c == b'=') {
        Some(eq) => (&field[..eq], &field[eq + 1..]),
        None => bail!(
            "xattr {:?} has no '=' (write an empty value as NAME=)",
            String::from_utf8_lossy(field)
        ),
    };
    // A C string: an escaped NUL ends the name.
    let key = c_string(unescape(k).context("xattr name")?);
    if key.is_empty() {
        bail!("empty xattr name");
    }
    if key.len() > MAX_XATTR_NAME {
        bail!(
            "xattr name of {} bytes is longer than {MAX_XATTR_NAME}",
            key.len()
        );
    }
    let value = unescape(v).with_context(|| format!("value of xattr {:?}", short_path(&key)))?;
    if value.len() > MAX_XATTR_VALUE {
        bail!(
            "value of xattr {:?} has {} bytes, more than {MAX_XATTR_VALUE}",
            short_path(&key),
            value.len()
        );
    }
    Ok((key, value))
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// What to print as a directory's SIZE.
#[derive(Clone, Copy)]
pub enum DirSize<'a> {
    /// The size the C `mkcomposefs` gives the directory in a composefs EROFS
    /// image (format version 0 or 1), i.e. what `composefs-info dump`
    /// prints: see [`erofs_dir_size`].
    Erofs,
    /// Always 0 (a tree that never was an image).
    Zero,
    /// Ask the caller (e.g. an image reader that knows the stored size).
    Custom(&'a dyn Fn(Ino, &[DirEntry]) -> Result<u64>),
}

/// Order of the xattrs on a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrOrder {
    /// The order `composefs-info dump` prints for an image the C
    /// `mkcomposefs` built from this tree: the xattrs stored in the inode
    /// first, then the shared ones (used by more than one inode), each group
    /// sorted by stored name (`trusted.overlay.*` is stored escaped as
    /// `trusted.overlay.overlay.*`).
    Erofs,
    /// Sorted by name.
    ByName,
}

/// Options for [`write_with`].
#[derive(Clone, Copy)]
pub struct WriteOptions<'a> {
    pub dir_size: DirSize<'a>,
    pub xattr_order: XattrOrder,
    /// Print a non-directory's NLINK as the tree stores it ([`Tree::nlink`],
    /// e.g. an image's `i_nlink`, which C `mkcomposefs` takes from a
    /// dumpfile's declared NLINK) rather than its number of names, as
    /// `composefs-info dump` does for an image.
    pub stored_nlink: bool,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        WriteOptions {
            dir_size: DirSize::Erofs,
            xattr_order: XattrOrder::Erofs,
            stored_nlink: false,
        }
    }
}

/// Write `tree` as a dumpfile in canonical form (see [`write_with`]).
pub fn write(tree: &dyn Tree, out: &mut impl Write) -> Result<()> {
    write_with(tree, out, &WriteOptions::default())
}

/// The EROFS directory size the C writer computes (`compute_erofs_dir_size`
/// in `libcomposefs/lcfs-writer-erofs.c`): the entries `.`, `..` and the
/// children (for the root also the 256 whiteouts `00`..`ff` that format
/// versions 0 and 1 add, unless a child has that name), sorted by name, each
/// taking 12 bytes plus its name, packed into 4096-byte blocks; a last block
/// of more than 2048 bytes is stored as a full block, a smaller one inline.
/// (The C writer can also push an inline tail out into a block when the
/// inode's own metadata is larger than a block, i.e. with kilobytes of
/// inline xattrs; that layout-dependent case is not modelled.)
pub fn erofs_dir_size(entries: &[DirEntry], is_root: bool) -> u64 {
    const BLK: usize = 4096;
    const DIRENT: usize = 12;
    let mut names: Vec<&[u8]> = Vec::with_capacity(entries.len() + 2);
    names.push(b".");
    names.push(b"..");
    names.extend(entries.iter().map(|e| e.name.as_slice()));
    let mut hex = Vec::new();
    if is_root {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for i in 0..256usize {
            let n = [HEX[i >> 4], HEX[i & 15]];
            if tree_lookup(entries, &n).is_none() {
                hex.push(n);
            }
        }
    }
    names.extend(hex.iter().map(|n| &n[..]));
    names.sort_unstable();
    let (mut blocks, mut used) = (0u64, 0usize);
    for n in names {
        let len = DIRENT + n.len();
        if used + len > BLK {
            blocks += 1;
            used = 0;
        }
        used += len;
    }
    if used > BLK / 2 {
        blocks += 1;
        used = 0;
    }
    blocks * BLK as u64 + used as u64
}

const TRUSTED_OVERLAY: &[u8] = b"trusted.overlay.";
const TRUSTED_OVERLAY_ESCAPED: &[u8] = b"trusted.overlay.overlay.";
/// `EROFS_XATTR_LONG_PREFIX`: at most this many shared xattrs per inode.
const MAX_SHARED_PER_INODE: usize = 0x80;

/// The name an xattr is stored under in a composefs image.
fn stored_xattr_name(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match name.strip_prefix(TRUSTED_OVERLAY) {
        Some(rest) => {
            let mut v = TRUSTED_OVERLAY_ESCAPED.to_vec();
            v.extend_from_slice(rest);
            v.into()
        }
        None => name.into(),
    }
}

/// Write `tree` as a dumpfile.
///
/// Lines come in depth-first pre-order with each directory's entries sorted
/// by name bytes (the C dump walks the image that way). The first name met
/// for a multiply-linked inode gets the full line; later names are hardlink
/// lines: `@` before the MODE, PAYLOAD the first name's path, every other
/// field (size, nlink, content, digest, xattrs...) repeated from the target,
/// exactly like `composefs-info dump`. NLINK is derived from the tree:
/// 2 + subdirectories for a directory, the number of names otherwise.
/// SIZE is the content size for regular files, the target length for
/// symlinks, 0 for devices, fifos and sockets, and per `opts.dir_size` for
/// directories. RDEV is printed for devices only (0 otherwise). PAYLOAD is
/// a symlink's target or a non-empty external file's redirect; CONTENT the
/// bytes of a non-empty inline file; DIGEST a non-empty external file's
/// digest (an empty file has no backing object in an image, so none of
/// these is printed for it).
///
/// With the default options the text equals what `composefs-info dump`
/// prints for the image the C `mkcomposefs` (1.0.x, format 0 or 1) writes
/// from the same tree; checked against all the golden images. One
/// transformation of the C writer is not undone by its reader and so is not
/// reproduced here: a directory holding a whiteout (a 0/0 character device)
/// gets `trusted.overlay.opaque=x` and `user.overlay.opaque=x` in the image.
/// A tree read back from such an image carries them, so its dump matches.
pub fn write_with(tree: &dyn Tree, out: &mut impl Write, opts: &WriteOptions) -> Result<()> {
    let root = tree.root();

    // Pass 1: count names per inode, find the directories, check for loops,
    // and gather xattr use counts for the shared-xattr order.
    let mut names: HashMap<Ino, u32> = HashMap::new();
    let mut seen_dirs: HashSet<Ino> = HashSet::new();
    let mut xattr_uses: HashMap<(Vec<u8>, Vec<u8>), u64> = HashMap::new();
    let want_uses = opts.xattr_order == XattrOrder::Erofs;
    let mut whiteout_dirs: HashSet<Ino> = HashSet::new();
    let mut stack = vec![root];
    seen_dirs.insert(root);
    let root_inode = tree.inode(root)?;
    if !root_inode.kind.is_dir() {
        bail!("the root of the tree is not a directory");
    }
    if want_uses {
        count_xattrs(&mut xattr_uses, &root_inode);
    }
    while let Some(dir) = stack.pop() {
        for e in tree.readdir(dir)?.iter() {
            let inode = tree.inode(e.ino)?;
            if inode.kind.is_dir() {
                if !seen_dirs.insert(e.ino) {
                    bail!(
                        "directory inode {} is reachable twice (a directory hardlink or a loop)",
                        e.ino
                    );
                }
                stack.push(e.ino);
            } else {
                let n = names.entry(e.ino).or_insert(0);
                *n = n.saturating_add(1);
                if *n > 1 {
                    continue;
                }
            }
            if want_uses {
                count_xattrs(&mut xattr_uses, &inode);
                if matches!(inode.kind, Kind::CharDevice { rdev: 0 }) {
                    count_whiteout_markers(&mut xattr_uses, &WHITEOUT_MARKERS);
                    whiteout_dirs.insert(dir);
                }
            }
        }
    }
    if want_uses {
        // The C writer marks every whiteout's directory, and those marks
        // count towards sharing too.
        for _ in &whiteout_dirs {
            count_whiteout_markers(&mut xattr_uses, &WHITEOUTS_DIR_MARKERS);
        }
        // The 256 whiteouts added to the root copy its security.selinux.
        if let Some(v) = root_inode.xattr(b"security.selinux") {
            let root_entries = tree.readdir(root)?;
            let added = (0..256u32)
                .filter(|i| {
                    let n = format!("{i:02x}");
                    tree_lookup(&root_entries, n.as_bytes()).is_none()
                })
                .count() as u64;
            *xattr_uses
                .entry((b"security.selinux".to_vec(), v.to_vec()))
                .or_insert(0) += added;
        }
    }

    // Pass 2: print, depth first, in name order. One path buffer, and a
    // frame per directory on the current path (its listing, the next entry,
    // its path's length): memory is the deepest path and the listings
    // along it, not a path per pending entry (which for a tree 10,000 deep
    // with a few files per level would be gigabytes).
    let mut w = BufWriter::new(out);
    let mut first_path: HashMap<Ino, Vec<u8>> = HashMap::new();
    let mut line = Vec::new();
    let mut path: Vec<u8> = Vec::new();
    let mut frames: Vec<(Arc<[DirEntry]>, usize, usize)> = Vec::new();
    let mut next = Some(root);
    loop {
        let ino = match next.take() {
            Some(ino) => ino,
            None => {
                let Some((entries, pos, len)) = frames.last_mut() else {
                    break;
                };
                let Some(e) = entries.get(*pos) else {
                    frames.pop();
                    continue;
                };
                *pos += 1;
                path.truncate(*len);
                path.push(b'/');
                path.extend_from_slice(&e.name);
                e.ino
            }
        };
        let inode = tree.inode(ino)?;
        line.clear();
        let shown_path: &[u8] = if path.is_empty() { b"/" } else { &path };
        escape_into(&mut line, shown_path, Escape::Standard);

        let mut hardlink_to: Option<Vec<u8>> = None;
        let (size, nlink) = if inode.kind.is_dir() {
            let entries = tree.readdir(ino)?;
            let subdirs = entries
                .iter()
                .map(|e| tree.inode(e.ino).map(|i| i.kind.is_dir()))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .filter(|&d| d)
                .count();
            let size = match opts.dir_size {
                DirSize::Erofs => erofs_dir_size(&entries, ino == root),
                DirSize::Zero => 0,
                DirSize::Custom(f) => f(ino, &entries)?,
            };
            // Its entries come next, in name order.
            frames.push((entries, 0, path.len()));
            (size, 2 + subdirs as u64)
        } else {
            let n = names.get(&ino).copied().unwrap_or(1);
            if n > 1 {
                match first_path.get(&ino) {
                    Some(p) => hardlink_to = Some(p.clone()),
                    None => {
                        first_path.insert(ino, path.clone());
                    }
                }
            }
            let nlink = match opts.stored_nlink {
                true => tree.nlink(ino)?.unwrap_or(u64::from(n)),
                false => u64::from(n),
            };
            (inode.size(), nlink)
        };

        let rdev = match inode.kind {
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => rdev,
            _ => 0,
        };
        write!(
            line,
            " {} {}{:o} {} {} {} {} {}.{} ",
            size,
            if hardlink_to.is_some() { "@" } else { "" },
            inode.st_mode(),
            nlink,
            inode.stat.uid,
            inode.stat.gid,
            rdev,
            inode.stat.mtime.sec,
            inode.stat.mtime.nsec
        )?;
        let payload: Option<&[u8]> = match (&hardlink_to, &inode.kind) {
            (Some(p), _) => Some(p),
            (None, Kind::Symlink(t)) => Some(t),
            // An empty file has no backing object in an image.
            (None, Kind::Regular(FileData::External { redirect, size, .. })) if *size > 0 => {
                redirect.as_deref()
            }
            _ => None,
        };
        optional_field(&mut line, payload);
        line.push(b' ');
        let content = match &inode.kind {
            Kind::Regular(FileData::Inline(c)) if !c.is_empty() => Some(c.as_slice()),
            _ => None,
        };
        optional_field(&mut line, content);
        line.push(b' ');
        match &inode.kind {
            Kind::Regular(FileData::External {
                digest: Some(d),
                size,
                ..
            }) if *size > 0 => line.extend_from_slice(d.to_hex().as_bytes()),
            _ => line.push(b'-'),
        }
        for (k, v) in ordered_xattrs(&inode, opts.xattr_order, &xattr_uses) {
            line.push(b' ');
            escape_into(&mut line, k, Escape::Equal);
            line.push(b'=');
            escape_into(&mut line, v, Escape::Equal);
        }
        line.push(b'\n');
        w.write_all(&line)?;
    }
    w.flush()?;
    Ok(())
}

fn tree_lookup(entries: &[DirEntry], name: &[u8]) -> Option<Ino> {
    entries
        .binary_search_by(|e| e.name.as_slice().cmp(name))
        .ok()
        .map(|i| entries[i].ino)
}

fn optional_field(line: &mut Vec<u8>, val: Option<&[u8]>) {
    match val {
        Some(v) => escape_into(line, v, Escape::LoneDash),
        None => line.push(b'-'),
    }
}

fn count_xattrs(uses: &mut HashMap<(Vec<u8>, Vec<u8>), u64>, inode: &Arc<Inode>) {
    for (k, v) in &inode.xattrs {
        *uses
            .entry((stored_xattr_name(k).into_owned(), v.clone()))
            .or_insert(0) += 1;
    }
}

/// What the C writer adds (stored names, empty values) to each whiteout
/// (a character device 0:0, written as a regular file) and to each
/// directory holding one: they are not in the tree (the reader hides them),
/// yet they make an equal xattr of the tree's shared.
const WHITEOUT_MARKERS: [&[u8]; 2] = [
    b"trusted.overlay.overlay.whiteout",
    b"user.overlay.whiteout",
];
const WHITEOUTS_DIR_MARKERS: [&[u8]; 2] = [
    b"trusted.overlay.overlay.whiteouts",
    b"user.overlay.whiteouts",
];

fn count_whiteout_markers(uses: &mut HashMap<(Vec<u8>, Vec<u8>), u64>, names: &[&[u8]]) {
    for n in names {
        *uses.entry((n.to_vec(), Vec::new())).or_insert(0) += 1;
    }
}

fn ordered_xattrs<'i>(
    inode: &'i Inode,
    order: XattrOrder,
    uses: &HashMap<(Vec<u8>, Vec<u8>), u64>,
) -> Vec<(&'i [u8], &'i [u8])> {
    // (stored name, name, value)
    type Entry<'i> = (std::borrow::Cow<'i, [u8]>, &'i [u8], &'i [u8]);
    let mut xs: Vec<Entry<'i>> = inode
        .xattrs
        .iter()
        .map(|(k, v)| (stored_xattr_name(k), k.as_slice(), v.as_slice()))
        .collect();
    match order {
        XattrOrder::ByName => {
            xs.sort_by(|a, b| a.1.cmp(b.1));
            xs.into_iter().map(|(_, k, v)| (k, v)).collect()
        }
        XattrOrder::Erofs => {
            xs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut inline = Vec::new();
            let mut shared = Vec::new();
            for (stored, k, v) in xs {
                let n = uses
                    .get(&(stored.into_owned(), v.to_vec()))
                    .copied()
                    .unwrap_or(1);
                if n > 1 && shared.len() < MAX_SHARED_PER_INODE {
                    shared.push((k, v));
                } else {
                    inline.push((k, v));
                }
            }
            inline.extend(shared);
            inline
        }
    }
}
