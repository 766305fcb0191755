//! Merging an image's layers: stored tar splitstreams → one filesystem tree.
//!
//! [`merge`] walks each layer's splitstream (as [`crate::tarsplit`] wrote
//! it: headers, PAX and GNU long-name records and padding inline, a large
//! regular file's content as one object) and applies the layers in order,
//! lowest first, with the OCI image-spec "Applying Changesets" semantics
//! that umoci and containers/storage implement. File content is never read:
//! a file stored as an object becomes [`FileData::object`], a small one
//! keeps its inline bytes.
//!
//! Tar: ustar (name with prefix), GNU (long names `L`, long links `K`,
//! base-256 numbers) and PAX (`path`, `linkpath`, `size`, `uid`, `gid`,
//! `mtime` with fractions, `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`,
//! `SCHILY.devmajor`/`devminor`; global headers ignored). Entry types:
//! regular (`0`, NUL, `7`), hardlink, symlink, character and block devices,
//! directory, fifo; anything else (sparse files included) is refused.
//!
//! Layers:
//! - Paths lose a leading `./` or `/`; `.` and `..` are resolved
//!   lexically, and a `..` that would leave the root is an error. The empty
//!   path (`./`) is the root: a directory entry there sets its metadata.
//!   Missing parents are created (mode 0755, owner 0:0, mtime 0); a parent
//!   that is not a directory (symlinks are never followed) is an error.
//!   Names must pass [`check_name`]; paths are at most [`MAX_ENTRY_PATH`].
//! - `.wh.NAME` removes `NAME`, and `.wh..wh..opq` everything in its
//!   directory, as lower layers left it: what the same layer puts there,
//!   before or after the marker, stays (whiteouts apply to lower layers
//!   only). Whiteouts never appear in the result; a whiteout of a name that
//!   does not exist is no error. Other `.wh..wh.*` names (aufs metadata)
//!   are skipped, with everything under them; any other `.wh.` name used
//!   as a directory is an error.
//! - A non-directory replaces whatever was at its path (a directory with
//!   its whole subtree); a directory over a directory replaces only its
//!   metadata and keeps the children; a directory over anything else
//!   replaces it.
//! - A hardlink names an existing non-directory of the merged tree so far
//!   (this layer or a lower one); both names then share one inode. A later
//!   entry replacing one of the names leaves the other with the old inode.
//!
//! The result is compacted: only inodes reachable from the root remain,
//! numbered from 0 (the root).

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hashbrown::{DefaultHashBuilder, HashSet};

use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::show::display_bytes;
use crate::splitstream::{Piece, SplitStreamReader, content_type};
use crate::tarheader::{
    BLOCK, checksum_ok, cstr, header_name, numeric_u32, numeric_u64, padding, parse_numeric,
    pax_records,
};
use crate::tree::{
    FileData, Ino, Inode, Kind, MemTree, MemTreeBuilder, Stat, Timespec, Xattr, check_name, mode,
};

/// PAX, global PAX and GNU long-name/long-link records are read into
/// memory; larger ones are refused (as [`crate::tarsplit`] does).
pub const MAX_META_RECORD: u64 = 16 << 20;
/// Longest path (after normalisation) an entry may have: 1 MiB (a path
/// 500,000 directories deep), far beyond `PATH_MAX`, which does not apply
/// to an image: the kernel and FUSE walk it one name at a time. Bounds the
/// work per entry (it is linear in the path's length).
pub const MAX_ENTRY_PATH: usize = 1 << 20;
/// Longest symlink target (`PATH_MAX` less the NUL).
const MAX_SYMLINK_TARGET: usize = 4095;
/// Longest xattr name and value a composefs image can hold.
const MAX_XATTR_NAME: usize = 255;
const MAX_XATTR_VALUE: usize = 65535;
/// Inodes the merge may create over all layers (replaced ones included):
/// bounds memory for a hostile stream (every entry can create thousands of
/// implicit parent directories).
pub const MAX_INODES: usize = 16 << 20;
/// Memory the merged tree may take, roughly (inodes, names, xattrs, small
/// contents; what a replaced entry took is not given back). A root
/// filesystem of 100,000 files needs about 30 MiB, a directory of
/// 1,000,000 alike empty files about 80 MiB; without this bound a
/// hostile stream of deep paths could ask for gigabytes within
/// [`MAX_INODES`].
pub const MAX_TREE_BYTES: usize = 1 << 30;
/// What one directory entry costs beyond its name: a [`Child`] in a hash
/// table at least 7/16 full, with its control byte.
const ENTRY_OVERHEAD: usize = 40;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

/// Merge the layers `layers` (object ids of stored tar splitstreams, lowest
/// layer first) into one tree. Reads only the streams, never file objects.
/// Errors name the layer (`layer I of N`, counting from 1) and the entry.
pub fn merge(repo: &Repository, layers: &[ObjectId]) -> Result<MemTree> {
    apply_layers(repo, layers)?.build()
}

fn apply_layers(repo: &Repository, layers: &[ObjectId]) -> Result<Merger> {
    let mut m = Merger::new();
    for (i, id) in layers.iter().enumerate() {
        let what = || format!("layer {} of {} ({id})", i + 1, layers.len());
        let stream = repo.open_stream_object(id).with_context(what)?;
        apply_layer(&mut m, stream, i).with_context(what)?;
    }
    Ok(m)
}

/// A PAX time: `[-]SECONDS[.FRACTION]`, the fraction cut to nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    let sec: i64 = int.parse().ok()?;
    let mut nsec: u32 = 0;
    for i in 0..9 {
        let d = frac.as_bytes().get(i).map_or(0, |b| b - b'0');
        nsec = nsec * 10 + u32::from(d);
    }
    if !neg {
        return Some(Timespec { sec, nsec });
    }
    Some(if nsec == 0 {
        Timespec { sec: -sec, nsec: 0 }
    } else {
        Timespec {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        }
    })
}

/// libarchive's `%XX` encoding of xattr names (a `%` not followed by two
/// hex digits stands for itself, as libarchive decodes it).
fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// What PAX extended headers say about the next entry.
#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<Timespec>,
    devmajor: Option<u32>,
    devminor: Option<u32>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Pax {
    /// Take in one extended header's records (later records win).
    fn apply(&mut self, data: &[u8]) -> Result<()> {
        fn decimal<T: std::str::FromStr>(key: &[u8], v: &[u8]) -> Result<T> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .with_context(|| {
                    format!(
                        "PAX record {} has a bad value {:?}",
                        display_bytes(key),
                        display_bytes(v)
                    )
                })
        }
        let opt = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        for (k, v) in pax_records(data)? {
            match k {
                b"path" => self.path = opt(v),
                b"linkpath" => self.linkpath = opt(v),
                // Parsed as `tarsplit` does: it laid the stream out by it.
                b"size" => self.size = Some(decimal(k, v)?),
                b"uid" => self.uid = Some(decimal(k, v)?),
                b"gid" => self.gid = Some(decimal(k, v)?),
                b"SCHILY.devmajor" => self.devmajor = Some(decimal(k, v)?),
                b"SCHILY.devminor" => self.devminor = Some(decimal(k, v)?),
                b"mtime" => {
                    self.mtime = Some(parse_pax_time(v).with_context(|| {
                        format!("PAX record mtime has a bad value {:?}", display_bytes(v))
                    })?)
                }
                _ if k.starts_with(b"SCHILY.xattr.") => {
                    self.xattrs
                        .insert(k[b"SCHILY.xattr.".len()..].to_vec(), v.to_vec());
                }
                _ if k.starts_with(b"LIBARCHIVE.xattr.") => {
                    use base64::Engine;
                    let name = url_decode(&k[b"LIBARCHIVE.xattr.".len()..]);
                    let value = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
                        .decode(v)
                        .with_context(|| {
                            format!(
                                "PAX record {} is not base64: {:?}",
                                display_bytes(k),
                                display_bytes(v)
                            )
                        })?;
                    self.xattrs.insert(name, value);
                }
                _ if k.starts_with(b"GNU.sparse.") => {
                    bail!("sparse files are not supported")
                }
                _ => {} // uname, gname, atime, ctime, comment, charset, …
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Reading a tar splitstream
// ---------------------------------------------------------------------------

enum Fill {
    Inline,
    External(ObjectId),
    End,
}

/// The tar bytes of a splitstream, inline pieces buffered so that headers
/// and records may straddle them.
struct TarReader {
    stream: SplitStreamReader,
    buf: Vec<u8>,
    pos: usize,
    /// Tar bytes consumed so far (an object counts as its content's size).
    offset: u64,
}

impl TarReader {
    fn new(stream: SplitStreamReader) -> Self {
        TarReader {
            stream,
            buf: Vec::new(),
            pos: 0,
            offset: 0,
        }
    }

    /// Load the next piece; the buffer must be used up.
    fn fill(&mut self) -> Result<Fill> {
        debug_assert_eq!(self.pos, self.buf.len());
        Ok(match self.stream.next_piece()? {
            None => Fill::End,
            Some(Piece::Inline(b)) => {
                self.buf.clear();
                self.buf.extend_from_slice(b);
                self.pos = 0;
                Fill::Inline
            }
            Some(Piece::External(id)) => Fill::External(id),
        })
    }

    /// The next run of at most `max` (> 0) inline bytes; `None` at the end
    /// of the stream. An object here is an error: only a regular file's
    /// content may be one.
    fn inline(&mut self, max: u64) -> Result<Option<&[u8]>> {
        while self.pos == self.buf.len() {
            match self.fill()? {
                Fill::End => return Ok(None),
                Fill::Inline => {}
                Fill::External(id) => bail!(
                    "the stream splices in object {id} at tar byte {}, where only headers, \
                     padding or small data belong: corrupt",
                    self.offset
                ),
            }
        }
        let start = self.pos;
        let n = (self.buf.len() - start).min(usize::try_from(max).unwrap_or(usize::MAX));
        self.pos += n;
        self.offset += n as u64;
        Ok(Some(&self.buf[start..start + n]))
    }

    /// The next 512-byte block; `None` if the stream ends right here.
    fn block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.inline((BLOCK - got) as u64)? {
                None if got == 0 => return Ok(None),
                None => bail!(
                    "tar ends at byte {}, inside the header that starts at byte {}: truncated",
                    self.offset,
                    self.offset - got as u64
                ),
                Some(s) => {
                    block[got..got + s.len()].copy_from_slice(s);
                    got += s.len();
                }
            }
        }
        Ok(Some(block))
    }

    /// Exactly `n` inline bytes (the caller bounds `n`).
    fn read(&mut self, n: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let Some(s) = self.inline(left)? else {
                bail!(
                    "tar ends at byte {}, inside an extended header record: truncated",
                    self.offset
                );
            };
            out.extend_from_slice(s);
            left -= s.len() as u64;
        }
        Ok(out)
    }

    /// Skip `n` inline bytes.
    fn skip(&mut self, n: u64) -> Result<()> {
        let mut left = n;
        while left > 0 {
            let Some(s) = self.inline(left)? else {
                bail!(
                    "tar ends at byte {}, inside an entry's data: truncated",
                    self.offset
                );
            };
            left -= s.len() as u64;
        }
        Ok(())
    }

    /// Skip up to `n` bytes of padding: the stream may end inside it, the
    /// last member's padding short or missing (as `crate::tarsplit` takes
    /// it); the next [`Self::block`] then finds the end.
    fn skip_padding(&mut self, n: u64) -> Result<()> {
        let mut left = n;
        while left > 0 {
            let Some(s) = self.inline(left)? else {
                break;
            };
            left -= s.len() as u64;
        }
        Ok(())
    }

    /// A regular file's `size` bytes of content: inline bytes, or one
    /// object holding all of it.
    fn content(&mut self, size: u64) -> Result<FileData> {
        let mut data = Vec::new();
        let mut left = size;
        while left > 0 {
            if self.pos == self.buf.len() {
                match self.fill()? {
                    Fill::End => bail!(
                        "tar ends at byte {}, inside a file's content: truncated",
                        self.offset
                    ),
                    Fill::Inline => continue,
                    Fill::External(id) => {
                        if left != size {
                            bail!(
                                "a file's content is partly inline and partly object {id}: corrupt"
                            );
                        }
                        self.offset += size;
                        return Ok(FileData::object(id, size));
                    }
                }
            }
            let n = (self.buf.len() - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            data.extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            left -= n as u64;
        }
        Ok(FileData::Inline(data))
    }
}

/// What one archive member makes at its path.
#[derive(Debug)]
enum EntryKind {
    /// A new inode.
    Inode(Inode),
    /// Another name for the inode at this path.
    Hardlink(Vec<u8>),
}

fn apply_layer(m: &mut Merger, stream: SplitStreamReader, layer: usize) -> Result<()> {
    if stream.content_type != content_type::OCI_LAYER {
        bail!(
            "the stream holds {}, not a tar layer",
            crate::splitstream::content_type_name(stream.content_type)
        );
    }
    let mut tar = TarReader::new(stream);
    let mut pax = Pax::default();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    // An extended header or long name/link record waits for its member.
    let mut pending = false;
    loop {
        let at = tar.offset;
        let Some(block) = tar.block()? else {
            // Ending at a member boundary without the end-of-archive blocks
            // is a complete archive (as `crate::tarsplit` takes it).
            if pending {
                bail!(
                    "tar ends at byte {at} after an extended header, before its member: truncated"
                );
            }
            return Ok(());
        };
        if block.iter().all(|&b| b == 0) {
            // End of archive; whatever follows is padding.
            return Ok(());
        }
        if !checksum_ok(&block) {
            bail!("tar header at byte {at} has a bad checksum: corrupt");
        }
        let typeflag = block[156];
        let header_size = numeric_u64(&block[124..136], "size")
            .with_context(|| format!("tar header at byte {at}"))?;
        if let b'x' | b'g' | b'L' | b'K' = typeflag {
            let what = || {
                let kind = match typeflag {
                    b'x' => "PAX extended header",
                    b'g' => "PAX global header",
                    b'L' => "GNU long name record",
                    _ => "GNU long link record",
                };
                format!("{kind} at byte {at}")
            };
            if header_size > MAX_META_RECORD {
                bail!(
                    "{} claims {header_size} bytes; refusing more than {MAX_META_RECORD}",
                    what()
                );
            }
            let data = tar.read(header_size).with_context(what)?;
            tar.skip_padding(padding(header_size)).with_context(what)?;
            match typeflag {
                b'x' => pax.apply(&data).with_context(what)?,
                b'L' => long_name = Some(cstr(&data).to_vec()),
                b'K' => long_link = Some(cstr(&data).to_vec()),
                _ => {} // global headers: ignored
            }
            pending |= typeflag != b'g';
            continue;
        }
        pending = false;
        let pax = std::mem::take(&mut pax);
        let long_name = long_name.take();
        let long_link = long_link.take();
        let path = pax
            .path
            .clone()
            .or(long_name)
            .unwrap_or_else(|| header_name(&block));
        let ctx = || {
            format!(
                "tar entry \"{}\" (header at byte {at})",
                crate::show::short_path(&path)
            )
        };
        let link = pax
            .linkpath
            .clone()
            .or(long_link)
            .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
        let what = read_entry(&mut tar, &block, header_size, pax, &path, link).with_context(ctx)?;
        m.apply(&path, what, layer).with_context(ctx)?;
    }
}

/// Read one member's header fields and data (its content if a regular
/// file, skipped otherwise, padding included).
fn read_entry(
    tar: &mut TarReader,
    block: &[u8; BLOCK],
    header_size: u64,
    pax: Pax,
    path: &[u8],
    link: Vec<u8>,
) -> Result<EntryKind> {
    let typeflag = block[156];
    let size = pax.size.unwrap_or(header_size);
    let padded = size
        .checked_add(padding(size))
        .with_context(|| format!("impossible size {size}"))?;
    let kind = match typeflag {
        b'0' | 0 | b'7' => {
            let data = tar.content(size)?;
            tar.skip_padding(padded - size)?;
            // Pre-POSIX archives mark directories by a trailing slash.
            if typeflag == 0 && path.ends_with(b"/") {
                Kind::Directory
            } else {
                Kind::Regular(data)
            }
        }
        b'S' => bail!("sparse files are not supported"),
        b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => {
            tar.skip(size)?;
            tar.skip_padding(padded - size)?;
            match typeflag {
                b'1' => {
                    if link.is_empty() {
                        bail!("hardlink without a target");
                    }
                    return Ok(EntryKind::Hardlink(link));
                }
                b'2' => {
                    if link.is_empty() || link.len() > MAX_SYMLINK_TARGET {
                        bail!(
                            "symlink target of {} bytes (must be 1 to {MAX_SYMLINK_TARGET})",
                            link.len()
                        );
                    }
                    if link.contains(&0) {
                        bail!("symlink target contains NUL");
                    }
                    Kind::Symlink(link)
                }
                b'3' | b'4' => {
                    let major = match pax.devmajor {
                        Some(v) => v,
                        None => numeric_u32(&block[329..337], "device major")?,
                    };
                    let minor = match pax.devminor {
                        Some(v) => v,
                        None => numeric_u32(&block[337..345], "device minor")?,
                    };
                    let rdev = rustix::fs::makedev(major, minor);
                    if typeflag == b'3' {
                        Kind::CharDevice { rdev }
                    } else {
                        Kind::BlockDevice { rdev }
                    }
                }
                b'5' => Kind::Directory,
                _ => Kind::Fifo,
            }
        }
        t => bail!(
            "unsupported tar entry type {:?}",
            display_bytes(std::slice::from_ref(&t))
        ),
    };
    let perms = (numeric_u64(&block[100..108], "mode")? & u64::from(mode::PERMS)) as u32;
    let uid = match pax.uid {
        Some(v) => v,
        None => numeric_u32(&block[108..116], "uid")?,
    };
    let gid = match pax.gid {
        Some(v) => v,
        None => numeric_u32(&block[116..124], "gid")?,
    };
    let mtime = match pax.mtime {
        Some(t) => t,
        None => Timespec {
            sec: parse_numeric(&block[136..148]).with_context(|| {
                format!("bad mtime field {:?}", display_bytes(&block[136..148]))
            })?,
            nsec: 0,
        },
    };
    let mut xattrs: Vec<Xattr> = Vec::with_capacity(pax.xattrs.len());
    for (name, value) in pax.xattrs {
        if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
            bail!(
                "bad xattr name {:?} (empty, longer than {MAX_XATTR_NAME} bytes or with NUL)",
                display_bytes(&name)
            );
        }
        if value.len() > MAX_XATTR_VALUE {
            bail!(
                "xattr {} has {} bytes, more than a composefs image can hold ({MAX_XATTR_VALUE})",
                display_bytes(&name),
                value.len()
            );
        }
        xattrs.push((name, value));
    }
    Ok(EntryKind::Inode(Inode {
        stat: Stat {
            perms,
            uid,
            gid,
            mtime,
        },
        kind,
        xattrs,
    }))
}

// ---------------------------------------------------------------------------
// Applying entries
// ---------------------------------------------------------------------------

/// `raw` as path components: leading `/` and `./` dropped, `.` skipped,
/// `..` resolved lexically. Empty for the root.
fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    bail!("the path leads out of the image root through \"..\"");
                }
            }
            _ => {
                check_name(c)?;
                out.push(c);
            }
        }
    }
    let len = out
        .iter()
        .map(|c| c.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    if len > MAX_ENTRY_PATH {
        bail!("the path is {len} bytes long, more than {MAX_ENTRY_PATH}");
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> String {
    display_bytes(&comps.join(&b'/'))
}

/// A directory entry under construction: its name (kept in
/// [`Merger::names`]), the node it names and the layer that last created,
/// replaced or added something beneath it. 16 bytes.
#[derive(Clone, Copy, Debug)]
struct Child {
    /// Where the name starts in [`Merger::names`].
    name: u32,
    /// The name's length ([`check_name`] allows at most 255 bytes).
    len: u8,
    node: u32,
    layer: u32,
}

/// A directory's entries, found by name: a hash table of 16-byte
/// [`Child`]ren whose names live in the arena (no allocation per name).
type Children = hashbrown::HashTable<Child>;

/// One inode of the merge: 16 bytes, plus the children table of a
/// non-empty directory.
#[derive(Debug)]
struct Node {
    /// Shared by every node with equal metadata ([`Merger::intern`]): in
    /// a typical layer most directories, and many small files, are alike.
    inode: Arc<Inode>,
    /// `None` unless a directory with entries.
    children: Option<Box<Children>>,
}

/// The merged tree so far. Node 0 is the root.
///
/// Memory per entry (see also `docs/resource-bounds.md`): a 16-byte
/// [`Node`], a 16-byte [`Child`] in its directory's table (about 20 to 40
/// bytes with the table's slack), the name once in the arena, and the
/// inode itself unless an equal one exists. Nothing is freed before the
/// end: a replaced or whited-out entry keeps its node and its name (and
/// its charge against [`MAX_TREE_BYTES`]).
#[derive(Debug)]
struct Merger {
    nodes: Vec<Node>,
    /// Every name put in a directory, back to back; [`Child::name`]
    /// indexes it.
    names: Vec<u8>,
    hasher: DefaultHashBuilder,
    /// The distinct inodes so far.
    inodes: HashSet<Arc<Inode>>,
    /// Memory taken so far, roughly, and the most allowed
    /// ([`MAX_TREE_BYTES`]).
    bytes: usize,
    budget: usize,
}

const ROOT: usize = 0;

/// What one distinct inode costs beyond its heap data: the `Arc` and its
/// place in [`Merger::inodes`].
const INODE_OVERHEAD: usize = std::mem::size_of::<Inode>() + 16 + 24;
/// What a node costs: its slot in [`Merger::nodes`], with the vector's
/// growth slack.
const NODE_OVERHEAD: usize = 2 * std::mem::size_of::<Node>();
/// What a directory's first entry costs beyond [`ENTRY_OVERHEAD`]: the
/// boxed table and its smallest allocation.
const TABLE_OVERHEAD: usize = 160;

fn implicit_dir() -> Inode {
    Inode {
        stat: Stat {
            perms: 0o755,
            ..Stat::default()
        },
        kind: Kind::Directory,
        xattrs: vec![],
    }
}

fn name_of<'a>(names: &'a [u8], c: &Child) -> &'a [u8] {
    &names[c.name as usize..c.name as usize + usize::from(c.len)]
}

impl Merger {
    fn new() -> Self {
        let mut m = Merger {
            nodes: Vec::new(),
            names: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            inodes: HashSet::new(),
            bytes: 0,
            budget: MAX_TREE_BYTES,
        };
        let root = m.intern(implicit_dir());
        m.nodes.push(Node {
            inode: root,
            children: None,
        });
        m
    }

    /// Count `n` more bytes against [`MAX_TREE_BYTES`].
    fn charge(&mut self, n: usize) -> Result<()> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.budget {
            bail!(
                "the merged tree would take more than {} MiB of memory",
                self.budget >> 20
            );
        }
        Ok(())
    }

    /// The shared copy of `inode` (uncharged: [`Self::add`] charges).
    fn intern(&mut self, inode: Inode) -> Arc<Inode> {
        if let Some(i) = self.inodes.get(&inode) {
            return i.clone();
        }
        let i = Arc::new(inode);
        self.inodes.insert(i.clone());
        i
    }

    fn add(&mut self, inode: Inode) -> Result<usize> {
        if self.nodes.len() >= MAX_INODES {
            bail!("the layers create more than {MAX_INODES} inodes");
        }
        let mut cost = NODE_OVERHEAD;
        if !self.inodes.contains(&inode) {
            cost += INODE_OVERHEAD
                + match &inode.kind {
                    Kind::Regular(FileData::Inline(v)) => v.len(),
                    Kind::Regular(FileData::External { redirect, .. }) => {
                        redirect.as_ref().map_or(0, Vec::len)
                    }
                    Kind::Symlink(t) => t.len(),
                    _ => 0,
                }
                + inode
                    .xattrs
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 48)
                    .sum::<usize>();
        }
        self.charge(cost)?;
        let inode = self.intern(inode);
        self.nodes.push(Node {
            inode,
            children: None,
        });
        Ok(self.nodes.len() - 1)
    }

    fn is_dir(&self, node: usize) -> bool {
        self.nodes[node].inode.kind.is_dir()
    }

    /// The entry `name` of directory `dir`.
    fn child(&self, dir: usize, name: &[u8]) -> Option<Child> {
        let t = self.nodes[dir].children.as_deref()?;
        t.find(self.hasher.hash_one(name), |c| {
            name_of(&self.names, c) == name
        })
        .copied()
    }

    /// Remove the entry `name` of directory `dir`.
    fn remove_child(&mut self, dir: usize, name: &[u8]) -> Option<Child> {
        let hash = self.hasher.hash_one(name);
        let names = &self.names;
        let t = self.nodes[dir].children.as_deref_mut()?;
        t.find_entry(hash, |c| name_of(names, c) == name)
            .ok()
            .map(|e| e.remove().0)
    }

    /// Name `node` as `name` in `dir` (touched by `layer`); returns what
    /// the name named before. A new name is charged and stored.
    fn set_child(
        &mut self,
        dir: usize,
        name: &[u8],
        node: usize,
        layer: usize,
    ) -> Result<Option<Child>> {
        let hash = self.hasher.hash_one(name);
        let (node, layer) = (node as u32, layer as u32);
        {
            let names = &self.names;
            if let Some(c) = self.nodes[dir]
                .children
                .as_deref_mut()
                .and_then(|t| t.find_mut(hash, |c| name_of(names, c) == name))
            {
                let old = *c;
                c.node = node;
                c.layer = layer;
                return Ok(Some(old));
            }
        }
        let len = u8::try_from(name.len()).context("a name longer than 255 bytes")?;
        let mut cost = name.len() + ENTRY_OVERHEAD;
        if self.nodes[dir].children.is_none() {
            cost += TABLE_OVERHEAD;
        }
        self.charge(cost)?;
        let start = u32::try_from(self.names.len())
            .ok()
            .filter(|s| s.checked_add(u32::from(len)).is_some())
            .context("the merged tree's names take more than 4 GiB")?;
        self.names.extend_from_slice(name);
        let c = Child {
            name: start,
            len,
            node,
            layer,
        };
        let (names, hasher) = (&self.names, &self.hasher);
        self.nodes[dir]
            .children
            .get_or_insert_with(Default::default)
            .insert_unique(hash, c, |c| hasher.hash_one(name_of(names, c)));
        Ok(None)
    }

    /// The directory at `comps`, creating missing ones, each marked as
    /// touched by `layer`.
    fn make_dirs(&mut self, comps: &[&[u8]], layer: usize) -> Result<usize> {
        let mut cur = ROOT;
        for (i, &c) in comps.iter().enumerate() {
            let next = match self.child(cur, c) {
                Some(child) => {
                    self.set_child(cur, c, child.node as usize, layer)?;
                    child.node as usize
                }
                None => {
                    let n = self.add(implicit_dir())?;
                    self.set_child(cur, c, n, layer)?;
                    n
                }
            };
            if !self.is_dir(next) {
                bail!(
                    "\"{}\" is not a directory (symlinks inside the image are not followed)",
                    join(&comps[..=i])
                );
            }
            cur = next;
        }
        Ok(cur)
    }

    /// The node at `comps`, if there is one; a non-directory on the way is
    /// an error.
    fn find(&self, comps: &[&[u8]]) -> Result<Option<usize>> {
        let mut cur = ROOT;
        for (i, &c) in comps.iter().enumerate() {
            if !self.is_dir(cur) {
                bail!(
                    "\"{}\" is not a directory (symlinks inside the image are not followed)",
                    join(&comps[..i])
                );
            }
            match self.child(cur, c) {
                Some(child) => cur = child.node as usize,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Forget the children of an unlinked directory, recursively (a
    /// directory has one name, so nothing else reaches them through it).
    fn drop_subtree(&mut self, node: usize) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if let Some(children) = self.nodes[n].children.take() {
                stack.extend(children.iter().map(|c| c.node as usize));
            }
        }
    }

    /// Name `node` as `name` in `dir`, dropping what was there.
    fn put(&mut self, dir: usize, name: &[u8], node: usize, layer: usize) -> Result<()> {
        if let Some(old) = self.set_child(dir, name, node, layer)?
            && old.node as usize != node
        {
            self.drop_subtree(old.node as usize);
        }
        Ok(())
    }

    /// Remove from `dir`, recursively, everything not touched by `layer`.
    fn clear_lower(&mut self, dir: usize, layer: usize) {
        let layer = layer as u32;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Some(mut children) = self.nodes[d].children.take() else {
                continue;
            };
            let mut dropped = Vec::new();
            children.retain(|c| {
                if c.layer != layer {
                    dropped.push(c.node as usize);
                    false
                } else {
                    if self.nodes[c.node as usize].inode.kind.is_dir() {
                        stack.push(c.node as usize);
                    }
                    true
                }
            });
            self.nodes[d].children = Some(children);
            for n in dropped {
                self.drop_subtree(n);
            }
        }
    }

    /// Apply one member of layer `layer` at `path`.
    fn apply(&mut self, path: &[u8], what: EntryKind, layer: usize) -> Result<()> {
        let comps = normalize(path)?;
        let Some((&name, parents)) = comps.split_last() else {
            return match what {
                EntryKind::Inode(inode) if inode.kind.is_dir() => {
                    self.charge(INODE_OVERHEAD)?;
                    self.nodes[ROOT].inode = self.intern(inode);
                    Ok(())
                }
                _ => bail!("the image root must be a directory"),
            };
        };
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parents, name, layer);
        }
        for p in parents {
            if p.starts_with(WHITEOUT_META_PREFIX) {
                return Ok(()); // inside aufs metadata: skipped
            }
            if p.starts_with(WHITEOUT_PREFIX) {
                bail!("a whiteout name is used as a directory");
            }
        }
        let inode = match what {
            EntryKind::Hardlink(target) => {
                let node = self
                    .hardlink_target(&target)
                    .with_context(|| format!("hardlink to \"{}\"", display_bytes(&target)))?;
                let dir = self.make_dirs(parents, layer)?;
                return self.put(dir, name, node, layer);
            }
            EntryKind::Inode(inode) => inode,
        };
        let dir = self.make_dirs(parents, layer)?;
        if inode.kind.is_dir()
            && let Some(c) = self.child(dir, name)
            && self.is_dir(c.node as usize)
        {
            self.set_child(dir, name, c.node as usize, layer)?;
            self.charge(INODE_OVERHEAD)?;
            self.nodes[c.node as usize].inode = self.intern(inode);
            return Ok(());
        }
        let node = self.add(inode)?;
        self.put(dir, name, node, layer)
    }

    fn hardlink_target(&self, target: &[u8]) -> Result<usize> {
        let comps = normalize(target)?;
        if comps.is_empty() {
            bail!("the target is the root directory");
        }
        match self.find(&comps)? {
            None => bail!("the target does not exist (in this layer before the link, or below)"),
            Some(n) if self.is_dir(n) => bail!("the target is a directory"),
            Some(n) => Ok(n),
        }
    }

    /// `.wh.NAME` or `.wh..wh..opq` (`name`) in directory `parents`.
    fn whiteout(&mut self, parents: &[&[u8]], name: &[u8], layer: usize) -> Result<()> {
        if parents.iter().any(|p| p.starts_with(WHITEOUT_PREFIX)) {
            return Ok(()); // names nothing the tree can hold
        }
        if name != WHITEOUT_OPAQUE && name.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(()); // aufs metadata
        }
        let Some(dir) = self.find(parents)? else {
            return Ok(());
        };
        if !self.is_dir(dir) {
            bail!(
                "\"{}\" is not a directory (symlinks inside the image are not followed)",
                join(parents)
            );
        }
        if name == WHITEOUT_OPAQUE {
            self.clear_lower(dir, layer);
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        check_name(hidden).context("bad whiteout")?;
        match self.child(dir, hidden) {
            Some(c) if c.layer != layer as u32 => {
                self.remove_child(dir, hidden);
                self.drop_subtree(c.node as usize);
            }
            // The same layer made it: a whiteout hides lower layers only,
            // so only what they left beneath it goes.
            Some(c) if self.is_dir(c.node as usize) => self.clear_lower(c.node as usize, layer),
            _ => {}
        }
        Ok(())
    }

    /// The tree reachable from the root, inodes renumbered densely (depth
    /// first, each directory's entries in name order). The merge's tables
    /// are freed directory by directory as the tree is built.
    fn build(mut self) -> Result<MemTree> {
        let mut b = MemTreeBuilder::new();
        let root = b.add_shared(self.nodes[ROOT].inode.clone());
        self.inodes = HashSet::new();
        // The tree's number of each node placed so far (hardlinks).
        let mut placed: Vec<u32> = vec![u32::MAX; self.nodes.len()];
        let mut stack = vec![(ROOT, root)];
        let mut entries: Vec<Child> = Vec::new();
        while let Some((node, ino)) = stack.pop() {
            let Some(children) = self.nodes[node].children.take() else {
                continue;
            };
            entries.clear();
            entries.extend(children.iter().copied());
            drop(children);
            let names = &self.names;
            entries.sort_unstable_by(|a, b| name_of(names, a).cmp(name_of(names, b)));
            let mut subdirs = Vec::new();
            for c in &entries {
                let n = c.node as usize;
                let child = match placed[n] {
                    u32::MAX => {
                        let inode = self.nodes[n].inode.clone();
                        let is_dir = inode.kind.is_dir();
                        let i = b.add_shared(inode);
                        placed[n] = u32::try_from(i).context("too many inodes")?;
                        if is_dir {
                            subdirs.push((n, i));
                        }
                        i
                    }
                    i => Ino::from(i),
                };
                b.link(ino, name_of(names, c), child)?;
            }
            stack.extend(subdirs.into_iter().rev());
        }
        b.build(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_implicit_directories_hit_the_memory_bound() {
        let mut m = Merger::new();
        m.budget = 64 << 20;
        let file = || {
            EntryKind::Inode(Inode {
                stat: Stat::default(),
                kind: Kind::Regular(FileData::Inline(vec![])),
                xattrs: vec![],
            })
        };
        // 2,000 components per path, each entry under a fresh top
        // directory: ~2,000 implicit directories per 4 KiB entry.
        let deep = b"d/".repeat(2000);
        let mut err = None;
        for i in 0..1000 {
            let path = [format!("top{i}/").as_bytes(), &deep[..], b"f"].concat();
            if let Err(e) = m.apply(&path, file(), 0) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("the bound was never hit");
        assert!(
            err.to_string().contains("more than 64 MiB of memory"),
            "{err:#}"
        );
        assert!(m.bytes <= (64 << 20) + 4096, "{}", m.bytes);
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes());
        assert_eq!(
            t("1700000000"),
            Some(Timespec {
                sec: 1700000000,
                nsec: 0
            })
        );
        assert_eq!(
            t("1700000000.123456789"),
            Some(Timespec {
                sec: 1700000000,
                nsec: 123456789
            })
        );
        assert_eq!(
            t("1.5"),
            Some(Timespec {
                sec: 1,
                nsec: 500000000
            })
        );
        assert_eq!(
            t("1.1234567899999"),
            Some(Timespec {
                sec: 1,
                nsec: 123456789
            })
        );
        assert_eq!(
            t("-1.25"),
            Some(Timespec {
                sec: -2,
                nsec: 750000000
            })
        );
        assert_eq!(t("-3"), Some(Timespec { sec: -3, nsec: 0 }));
        assert_eq!(t(""), None);
        assert_eq!(t(".5"), None);
        assert_eq!(t("1.x"), None);
        assert_eq!(t("+1"), None);
        assert_eq!(t("99999999999999999999"), None);
    }

    #[test]
    fn pax_headers() {
        let rec = |k: &str, v: &[u8]| {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut n = body.len() + 2;
            while format!("{n} ").len() + body.len() != n {
                n += 1;
            }
            [format!("{n} ").into_bytes(), body].concat()
        };
        let mut p = Pax::default();
        let data = [
            rec("path", b"some/path"),
            rec("uid", b"100000"),
            rec("gid", b"4294967295"),
            rec("mtime", b"5.000000001"),
            rec("uname", b"ignored"),
            rec("SCHILY.xattr.user.a", b"raw\0value\n"),
            rec("LIBARCHIVE.xattr.user.b%3Dc", b"aGVsbG8"),
            rec("LIBARCHIVE.xattr.user.d", b"aGk="),
            rec("SCHILY.xattr.user.d", b"later wins"),
        ]
        .concat();
        p.apply(&data).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"some/path"[..]));
        assert_eq!(p.uid, Some(100000));
        assert_eq!(p.gid, Some(u32::MAX));
        assert_eq!(p.mtime, Some(Timespec { sec: 5, nsec: 1 }));
        let x: Vec<_> = p
            .xattrs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            x,
            vec![
                (&b"user.a"[..], &b"raw\0value\n"[..]),
                (b"user.b=c", b"hello"),
                (b"user.d", b"later wins"),
            ]
        );
        assert!(Pax::default().apply(&rec("uid", b"4294967296")).is_err());
        assert!(Pax::default().apply(&rec("size", b"-1")).is_err());
        assert!(
            Pax::default()
                .apply(&rec("GNU.sparse.map", b"0,1"))
                .is_err()
        );
        assert!(
            Pax::default()
                .apply(&rec("LIBARCHIVE.xattr.user.x", b"***"))
                .is_err()
        );
        // An empty path record reverts to the header's name.
        let mut p = Pax::default();
        p.apply(&[rec("path", b"x"), rec("path", b"")].concat())
            .unwrap();
        assert_eq!(p.path, None);
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode(b"user.a%20b"), b"user.a b");
        assert_eq!(url_decode(b"%41%7a"), b"Az");
        assert_eq!(url_decode(b"100%"), b"100%");
        assert_eq!(url_decode(b"%4"), b"%4");
        assert_eq!(url_decode(b"%zz"), b"%zz");
    }

    #[test]
    fn path_normalisation() {
        let n = |p: &str| {
            normalize(p.as_bytes()).map(|v| v.iter().map(|c| display_bytes(c)).collect::<Vec<_>>())
        };
        assert_eq!(n("./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(n("/a//./b").unwrap(), ["a", "b"]);
        assert_eq!(n("./").unwrap(), Vec::<String>::new());
        assert_eq!(n("").unwrap(), Vec::<String>::new());
        assert_eq!(n("a/../b").unwrap(), ["b"]);
        assert!(n("..").is_err());
        assert!(n("a/../../b").is_err());
        assert!(n(&"x".repeat(256)).is_err());
        assert!(normalize(b"a\0b").is_err());
        // Longer than PATH_MAX is fine; longer than MAX_ENTRY_PATH is not.
        let long = vec!["y".repeat(200); MAX_ENTRY_PATH / 201 + 1].join("/");
        assert!(n(&long).is_err());
        let ok = vec!["y".repeat(200); MAX_ENTRY_PATH / 201].join("/");
        assert!(n(&ok).is_ok());
    }

    fn file(data: &[u8]) -> EntryKind {
        EntryKind::Inode(Inode {
            stat: Stat {
                perms: 0o644,
                ..Stat::default()
            },
            kind: Kind::Regular(FileData::Inline(data.to_vec())),
            xattrs: vec![],
        })
    }

    fn dir(perms: u32) -> EntryKind {
        EntryKind::Inode(Inode {
            stat: Stat {
                perms,
                ..Stat::default()
            },
            kind: Kind::Directory,
            xattrs: vec![],
        })
    }

    fn apply(m: &mut Merger, layer: usize, path: &str, what: EntryKind) -> Result<()> {
        m.apply(path.as_bytes(), what, layer)
    }

    fn listing(m: Merger) -> Vec<String> {
        use crate::tree::Tree;
        let t = m.build().unwrap();
        let mut out = Vec::new();
        let mut stack = vec![(t.root(), String::new())];
        while let Some((d, p)) = stack.pop() {
            for e in t.readdir(d).unwrap().iter() {
                let path = format!("{p}/{}", display_bytes(&e.name));
                if t.inode(e.ino).unwrap().kind.is_dir() {
                    stack.push((e.ino, path.clone()));
                    out.push(format!("{path}/"));
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn opaque_and_whiteouts_apply_to_lower_layers_only() {
        for marker_first in [true, false] {
            let mut m = Merger::new();
            apply(&mut m, 0, "d/", dir(0o755)).unwrap();
            apply(&mut m, 0, "d/old", file(b"1")).unwrap();
            apply(&mut m, 0, "d/sub/deep", file(b"1")).unwrap();
            apply(&mut m, 0, "w/x", file(b"1")).unwrap();
            apply(&mut m, 0, "w/y", file(b"1")).unwrap();
            if marker_first {
                apply(&mut m, 1, "d/.wh..wh..opq", file(b"")).unwrap();
                apply(&mut m, 1, "w/.wh.x", file(b"")).unwrap();
            }
            apply(&mut m, 1, "d/new", file(b"2")).unwrap();
            apply(&mut m, 1, "d/sub/fresh", file(b"2")).unwrap();
            apply(&mut m, 1, "w/x", file(b"2")).unwrap();
            if !marker_first {
                apply(&mut m, 1, "d/.wh..wh..opq", file(b"")).unwrap();
                apply(&mut m, 1, "w/.wh.x", file(b"")).unwrap();
            }
            apply(&mut m, 1, "w/.wh.nothing", file(b"")).unwrap();
            apply(&mut m, 1, "nodir/.wh.nothing", file(b"")).unwrap();
            assert_eq!(
                listing(m),
                [
                    "/d/",
                    "/d/new",
                    "/d/sub/",
                    "/d/sub/fresh",
                    "/w/",
                    "/w/x",
                    "/w/y"
                ],
                "marker first: {marker_first}"
            );
        }
    }

    #[test]
    fn replacement_rules() {
        let mut m = Merger::new();
        apply(&mut m, 0, "a/", dir(0o700)).unwrap();
        apply(&mut m, 0, "a/child", file(b"")).unwrap();
        apply(&mut m, 0, "f", file(b"")).unwrap();
        apply(&mut m, 0, "g/h", file(b"")).unwrap();
        apply(&mut m, 1, "a", dir(0o711)).unwrap(); // keeps children
        apply(&mut m, 1, "f/", dir(0o755)).unwrap(); // file → dir
        apply(&mut m, 1, "g", file(b"x")).unwrap(); // dir → file
        apply(&mut m, 1, "aufs/.wh..wh.plnk/x", file(b"")).unwrap();
        apply(&mut m, 1, ".wh..wh.plnk/x", file(b"")).unwrap();
        assert!(apply(&mut m, 1, "g/sub", file(b"")).is_err());
        assert!(apply(&mut m, 1, ".wh.x/y", file(b"")).is_err());
        assert!(apply(&mut m, 1, "../x", file(b"")).is_err());
        assert!(apply(&mut m, 1, ".", file(b"")).is_err());
        assert!(apply(&mut m, 1, "a/hl", EntryKind::Hardlink(b"a".to_vec())).is_err());
        assert!(apply(&mut m, 1, "a/hl", EntryKind::Hardlink(b"nope".to_vec())).is_err());
        apply(&mut m, 1, "./", dir(0o700)).unwrap();
        assert_eq!(m.nodes[ROOT].inode.stat.perms, 0o700);
        assert_eq!(listing(m), ["/a/", "/a/child", "/f/", "/g"]);
    }
}
