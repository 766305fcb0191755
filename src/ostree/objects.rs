//! The GVariant objects of an ostree repository: commits, dirtrees,
//! dirmetas and file headers, parsed strictly and serialised exactly as
//! ostree does, and the file checksum ostree defines (header + content).
//!
//! Every parser checks that its input is in GVariant normal form (the bytes
//! re-serialise to themselves): data of the wrong type, or bytes a
//! lenient reader would quietly read as defaults, are errors.

use anyhow::{Context, Result, bail};
use gvariant::{Marker, Structure, gv};
use sha2::{Digest, Sha256};

use super::checksum::Checksum;
use super::variant::{V, u32be, u64be};
use crate::tree::mode;

/// Largest metadata object we accept (ostree's `OSTREE_MAX_METADATA_SIZE`).
pub const MAX_METADATA_SIZE: usize = 10 << 20;
/// Longest symlink target we accept (Linux `PATH_MAX`).
pub const MAX_SYMLINK_TARGET: usize = 4096;

/// An xattr as ostree stores it: the name without its trailing NUL, the value.
pub type Xattr = (Vec<u8>, Vec<u8>);

fn check_normal(what: &str, data: &[u8], reserialised: &[u8]) -> Result<()> {
    if data != reserialised {
        bail!("not a valid {what} (bytes are not a {what} GVariant in normal form)");
    }
    Ok(())
}

fn read_xattrs<'a, I, T>(arr: I) -> Result<Vec<Xattr>>
where
    I: IntoIterator<Item = &'a T>,
    T: Structure<'a, RefTuple = (&'a [u8], &'a [u8])> + 'a + ?Sized,
{
    let mut out = Vec::new();
    for x in arr {
        let (name, value) = x.to_tuple();
        let name: &[u8] = name;
        let Some((0, n)) = name.split_last() else {
            bail!(
                "xattr name {:?} is not NUL-terminated",
                String::from_utf8_lossy(name)
            );
        };
        if n.is_empty() || n.contains(&0) {
            bail!("invalid xattr name {:?}", String::from_utf8_lossy(n));
        }
        out.push((n.to_vec(), value.to_vec()));
    }
    Ok(out)
}

/// Names with their NUL terminator, as ostree stores them.
fn xattr_names(x: &[Xattr]) -> Vec<Vec<u8>> {
    x.iter()
        .map(|(n, _)| {
            let mut name = n.clone();
            name.push(0);
            name
        })
        .collect()
}

fn xattrs_value<'a>(x: &'a [Xattr], names: &'a [Vec<u8>]) -> V<'a> {
    V::Array(
        x.iter()
            .zip(names)
            .map(|((_, v), n)| V::Tuple(vec![V::Bytes(n), V::Bytes(v)]))
            .collect(),
        1,
    )
}

/// Serialise `a(ayay)` xattrs the way ostree does (names NUL-terminated).
pub fn serialize_xattrs(x: &[Xattr]) -> Vec<u8> {
    let names = xattr_names(x);
    xattrs_value(x, &names).to_bytes()
}

/// Parse a standalone `a(ayay)` (bare-split-xattrs `.file-xattrs` objects).
pub fn parse_xattrs(data: &[u8]) -> Result<Vec<Xattr>> {
    let arr = gv!("a(ayay)").from_bytes(data);
    let x = read_xattrs(&*arr)?;
    check_normal("xattr list", data, &serialize_xattrs(&x))?;
    Ok(x)
}

/// A commit object `(a{sv}aya(say)sstayay)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The metadata dictionary, serialised `a{sv}`.
    pub metadata: Vec<u8>,
    pub parent: Option<Checksum>,
    pub subject: String,
    pub body: String,
    /// Seconds since the epoch.
    pub timestamp: u64,
    pub root_tree: Checksum,
    pub root_meta: Checksum,
}

impl Commit {
    pub fn parse(data: &[u8]) -> Result<Commit> {
        if data.len() > MAX_METADATA_SIZE {
            bail!(
                "commit of {} bytes is larger than the {} byte limit",
                data.len(),
                MAX_METADATA_SIZE
            );
        }
        let c = gv!("(a{sv}aya(say)sstayay)").from_bytes(data);
        let (meta, parent, related, subject, body, ts, tree, dmeta) = c.to_tuple();
        let parent: &[u8] = parent;
        let metadata = gv!("a{sv}").serialize_to_vec(
            meta.into_iter()
                .map(|e| e.to_tuple())
                .collect::<Vec<_>>()
                .iter(),
        );
        let related = gv!("a(say)").serialize_to_vec(
            related
                .into_iter()
                .map(|e| e.to_tuple())
                .collect::<Vec<_>>()
                .iter(),
        );
        let commit = Commit {
            metadata,
            parent: if parent.is_empty() {
                None
            } else {
                Some(Checksum::from_bytes(parent).context("commit parent")?)
            },
            subject: subject.to_str().to_string(),
            body: body.to_str().to_string(),
            timestamp: u64::from_be(*ts),
            root_tree: Checksum::from_bytes(tree).context("commit root dirtree")?,
            root_meta: Checksum::from_bytes(dmeta).context("commit root dirmeta")?,
        };
        let again = V::Tuple(vec![
            V::Raw(&commit.metadata, 8),
            V::Bytes(parent),
            V::Raw(&related, 1),
            V::Str(subject.as_bytes_non_conformant()),
            V::Str(body.as_bytes_non_conformant()),
            u64be(commit.timestamp),
            V::Bytes(tree),
            V::Bytes(dmeta),
        ])
        .to_bytes();
        check_normal("commit", data, &again)?;
        Ok(commit)
    }

    /// A string entry of the metadata (e.g. `version`).
    pub fn meta_string(&self, key: &str) -> Option<String> {
        meta_string(&self.metadata, key)
    }
}

/// Look up a string value in a serialised `a{sv}`.
pub fn meta_string(dict: &[u8], key: &str) -> Option<String> {
    for e in &*gv!("a{sv}").from_bytes(dict) {
        let (k, v) = e.to_tuple();
        if k.to_str() == key {
            return v.get(gv!("s")).map(|s| s.to_str().to_string());
        }
    }
    None
}

/// Look up an `ay` array of `aay` in a serialised `a{sv}` (signatures).
pub fn meta_bytes_list(dict: &[u8], key: &str) -> Option<Vec<Vec<u8>>> {
    for e in &*gv!("a{sv}").from_bytes(dict) {
        let (k, v) = e.to_tuple();
        if k.to_str() == key {
            return v
                .get(gv!("aay"))
                .map(|l| l.into_iter().map(|b| b.to_vec()).collect());
        }
    }
    None
}

/// Look up a `u64` (`t`, stored big-endian by ostree) in a serialised `a{sv}`.
pub fn meta_u64_be(dict: &[u8], key: &str) -> Option<u64> {
    for e in &*gv!("a{sv}").from_bytes(dict) {
        let (k, v) = e.to_tuple();
        if k.to_str() == key {
            return v.get(gv!("t")).map(|t| u64::from_be(*t));
        }
    }
    None
}

/// Is `dict` a valid serialised `a{sv}` in normal form?
pub fn check_dict(what: &str, dict: &[u8]) -> Result<()> {
    let d = gv!("a{sv}").from_bytes(dict);
    let again = gv!("a{sv}").serialize_to_vec(
        d.into_iter()
            .map(|e| e.to_tuple())
            .collect::<Vec<_>>()
            .iter(),
    );
    check_normal(what, dict, &again)
}

/// A directory entry name as ostree allows it: not empty, not `.` or `..`,
/// no `/` or NUL.
pub fn check_entry_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        bail!(
            "invalid file name {:?} in dirtree",
            String::from_utf8_lossy(name)
        );
    }
    Ok(())
}

/// A dirtree object `(a(say)a(sayay))`: files (name, file checksum) and
/// subdirectories (name, dirtree, dirmeta), each sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirTree {
    pub files: Vec<(String, Checksum)>,
    pub dirs: Vec<(String, Checksum, Checksum)>,
}

/// A dirtree read in place ([`DirTree::parse_in_place`]): files (name,
/// offset of the file checksum) and subdirectories (name, offsets of the
/// dirtree and dirmeta checksums), offsets into the dirtree's bytes.
#[derive(Debug)]
pub struct DirTreeEntries<'a> {
    pub files: Vec<(&'a [u8], usize)>,
    pub dirs: Vec<(&'a [u8], usize, usize)>,
    /// Files and subdirectories are each in strictly increasing name
    /// order (as ostree writes them): one merge lists them all sorted.
    pub sorted: bool,
}

/// Size of the framing offsets of a GVariant container of `len` bytes.
fn gv_offset_size(len: usize) -> usize {
    match len {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    }
}

/// The framing offset at `data[at..at + size]`.
fn gv_offset(data: &[u8], at: usize, size: usize) -> usize {
    let b = &data[at..at + size];
    match size {
        1 => usize::from(b[0]),
        2 => usize::from(u16::from_le_bytes([b[0], b[1]])),
        4 => u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize,
        _ => usize::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(usize::MAX),
    }
}

/// A GVariant tuple of alignment 1 at `r` whose first `n` (≤ 2) members
/// are variable-sized and not last: their end offsets (in member order,
/// as absolute positions, non-decreasing) and where the last member ends
/// (the start of the framing offsets). `None` if malformed.
fn gv_frame(data: &[u8], r: std::ops::Range<usize>, n: usize) -> Option<([usize; 2], usize)> {
    let size = gv_offset_size(r.len());
    let tail = r.end.checked_sub(n * size)?;
    if tail < r.start {
        return None;
    }
    let mut ends = [0usize; 2];
    let mut prev = r.start;
    for (k, end) in ends.iter_mut().enumerate().take(n) {
        // Stored in reverse: the first member's offset comes last.
        let e = r
            .start
            .checked_add(gv_offset(data, r.end - (k + 1) * size, size))?;
        if e < prev || e > tail {
            return None;
        }
        *end = e;
        prev = e;
    }
    Some((ends, tail))
}

/// The elements of a GVariant array of variable-sized, alignment-1
/// elements at `r`: how many, and each one's range. `None` if malformed.
fn gv_array(
    data: &[u8],
    r: std::ops::Range<usize>,
) -> Option<(usize, impl Iterator<Item = std::ops::Range<usize>> + '_)> {
    let (start, len) = (r.start, r.len());
    let (table, count, size) = if len == 0 {
        (start, 0, 1)
    } else {
        let size = gv_offset_size(len);
        let last = gv_offset(data, r.end.checked_sub(size)?, size);
        if last > len || !(len - last).is_multiple_of(size) {
            return None;
        }
        (start + last, (len - last) / size, size)
    };
    // Every end offset checked up front: non-decreasing, inside the
    // elements.
    let mut prev = start;
    for k in 0..count {
        let e = start.checked_add(gv_offset(data, table + k * size, size))?;
        if e < prev || e > table {
            return None;
        }
        prev = e;
    }
    if count > 0 && prev != table {
        return None;
    }
    let ranges = (0..count).scan(start, move |at, k| {
        let e = start + gv_offset(data, table + k * size, size);
        let r = *at..e;
        *at = e;
        Some(r)
    });
    Some((count, ranges))
}

/// A GVariant string at `r`: its bytes without the one trailing NUL.
fn gv_string(data: &[u8], r: std::ops::Range<usize>) -> Option<&[u8]> {
    match data.get(r)? {
        [name @ .., 0] => Some(name),
        _ => None,
    }
}

fn check_dirtree_size(data: &[u8]) -> Result<()> {
    if data.len() > MAX_METADATA_SIZE {
        bail!(
            "dirtree of {} bytes is larger than the {} byte limit",
            data.len(),
            MAX_METADATA_SIZE
        );
    }
    Ok(())
}

impl DirTree {
    /// How many subdirectories a dirtree names, without decoding it (for
    /// link counts; [`Self::parse`] checks it when it is listed).
    pub fn count_dirs(data: &[u8]) -> Result<usize> {
        check_dirtree_size(data)?;
        let v = gv!("(a(say)a(sayay))").from_bytes(data);
        let (_, dirs) = v.to_tuple();
        Ok(dirs.len())
    }

    /// Parse a dirtree from outside: every name checked, no duplicates,
    /// and in GVariant normal form (the bytes are what the parsed value
    /// serialises to, so its checksum names one tree only).
    pub fn parse(data: &[u8]) -> Result<DirTree> {
        Self::parse_inner(data, true)
    }

    /// Parse a dirtree read back from a stored commit, which was parsed
    /// with [`Self::parse`] and checksummed when it was pulled: names are
    /// still checked (a damaged repository must not yield `..`), the
    /// normal-form round trip (a re-serialisation: a quarter of a
    /// `composefs diff`'s instructions) is skipped.
    pub fn parse_stored(data: &[u8]) -> Result<DirTree> {
        Self::parse_inner(data, false)
    }

    fn parse_inner(data: &[u8], normal_form: bool) -> Result<DirTree> {
        check_dirtree_size(data)?;
        let v = gv!("(a(say)a(sayay))").from_bytes(data);
        let (files, dirs) = v.to_tuple();
        let mut t = DirTree::default();
        for f in files {
            let (name, csum) = f.to_tuple();
            let raw = name.as_bytes_non_conformant();
            check_entry_name(raw)?;
            let n = std::str::from_utf8(raw).with_context(|| {
                format!("file name {:?} is not UTF-8", String::from_utf8_lossy(raw))
            })?;
            let c = Checksum::from_bytes(csum).with_context(|| format!("file {n:?}"))?;
            t.files.push((n.to_string(), c));
        }
        for d in dirs {
            let (name, tree, meta) = d.to_tuple();
            let raw = name.as_bytes_non_conformant();
            check_entry_name(raw)?;
            let n = std::str::from_utf8(raw).with_context(|| {
                format!(
                    "directory name {:?} is not UTF-8",
                    String::from_utf8_lossy(raw)
                )
            })?;
            let tc = Checksum::from_bytes(tree).with_context(|| format!("directory {n:?}"))?;
            let mc = Checksum::from_bytes(meta).with_context(|| format!("directory {n:?}"))?;
            t.dirs.push((n.to_string(), tc, mc));
        }
        if normal_form {
            check_normal("dirtree", data, &t.serialize())?;
        }
        let mut names: Vec<&str> = t
            .files
            .iter()
            .map(|f| f.0.as_str())
            .chain(t.dirs.iter().map(|d| d.0.as_str()))
            .collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("dirtree names {:?} twice", w[0]);
        }
        Ok(t)
    }

    /// Read a stored dirtree in place: names as slices of `data`, and
    /// where in `data` each checksum sits (a directory's dirmeta checksum
    /// right after its dirtree checksum). Nothing is copied: a listing that
    /// only compares checksums reads them from the dirtree when it needs
    /// them. The GVariant framing is read directly and strictly (what it
    /// accepts is in normal form; the fuzz target checks it against
    /// [`Self::parse`]); names are checked as by [`Self::parse_stored`].
    pub fn parse_in_place(data: &[u8]) -> Result<DirTreeEntries<'_>> {
        check_dirtree_size(data)?;
        let malformed = || anyhow::anyhow!("dirtree is malformed");
        let name_of = |raw: &'_ [u8]| -> Result<()> {
            // The common case in one pass: ASCII without '/' or NUL.
            let plain = raw.iter().all(|&b| b != 0 && b != b'/' && b.is_ascii())
                && !matches!(raw, b"" | b"." | b"..");
            if !plain {
                check_entry_name(raw)?;
                std::str::from_utf8(raw).with_context(|| {
                    format!("name {:?} is not UTF-8", String::from_utf8_lossy(raw))
                })?;
            }
            Ok(())
        };
        // `(a(say)a(sayay))`: the files array ends where the tuple's one
        // framing offset says; the directories array runs up to it.
        let (ends, tail) = gv_frame(data, 0..data.len(), 1).ok_or_else(malformed)?;
        let (files, dirs) = (0..ends[0], ends[0]..tail);
        let (nf, files) = gv_array(data, files).ok_or_else(malformed)?;
        let (nd, dirs) = gv_array(data, dirs).ok_or_else(malformed)?;
        let mut t = DirTreeEntries {
            files: Vec::with_capacity(nf),
            dirs: Vec::with_capacity(nd),
            sorted: false,
        };
        for e in files {
            // `(say)`: the name's end in one framing offset; the checksum after.
            let (ends, tail) = gv_frame(data, e.clone(), 1).ok_or_else(malformed)?;
            let name = gv_string(data, e.start..ends[0]).ok_or_else(malformed)?;
            if tail - ends[0] != 32 {
                bail!(
                    "{:?}: checksum of {} bytes",
                    String::from_utf8_lossy(name),
                    tail - ends[0]
                );
            }
            name_of(name)?;
            t.files.push((name, ends[0]));
        }
        for e in dirs {
            // `(sayay)`: two framing offsets (the name's end, the dirtree
            // checksum's end), the dirmeta checksum after.
            let (ends, tail) = gv_frame(data, e.clone(), 2).ok_or_else(malformed)?;
            let name = gv_string(data, e.start..ends[0]).ok_or_else(malformed)?;
            if ends[1] - ends[0] != 32 || tail - ends[1] != 32 {
                bail!(
                    "{:?}: checksum of the wrong size",
                    String::from_utf8_lossy(name)
                );
            }
            name_of(name)?;
            t.dirs.push((name, ends[0], ends[1]));
        }
        t.sorted = t.files.windows(2).all(|w| w[0].0 < w[1].0)
            && t.dirs.windows(2).all(|w| w[0].0 < w[1].0);
        let twice = if t.sorted {
            // Two sorted runs: a name in both is met by one merge.
            let (mut i, mut j) = (0, 0);
            let mut twice = None;
            while let (Some(f), Some(d)) = (t.files.get(i), t.dirs.get(j)) {
                match f.0.cmp(d.0) {
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                    std::cmp::Ordering::Equal => {
                        twice = Some(f.0);
                        break;
                    }
                }
            }
            twice
        } else {
            let mut names: Vec<&[u8]> = t
                .files
                .iter()
                .map(|f| f.0)
                .chain(t.dirs.iter().map(|d| d.0))
                .collect();
            names.sort_unstable();
            names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
        };
        if let Some(n) = twice {
            bail!("dirtree names {:?} twice", String::from_utf8_lossy(n));
        }
        Ok(t)
    }

    pub fn serialize(&self) -> Vec<u8> {
        V::Tuple(vec![
            V::Array(
                self.files
                    .iter()
                    .map(|(n, c)| V::Tuple(vec![V::Str(n.as_bytes()), V::Bytes(&c.0)]))
                    .collect(),
                1,
            ),
            V::Array(
                self.dirs
                    .iter()
                    .map(|(n, t, m)| {
                        V::Tuple(vec![V::Str(n.as_bytes()), V::Bytes(&t.0), V::Bytes(&m.0)])
                    })
                    .collect(),
                1,
            ),
        ])
        .to_bytes()
    }
}

/// A dirmeta object `(uuua(ayay))`: owner, mode (with `S_IFDIR`), xattrs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirMeta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub xattrs: Vec<Xattr>,
}

impl DirMeta {
    pub fn parse(data: &[u8]) -> Result<DirMeta> {
        Self::parse_inner(data, true)
    }

    /// Parse a dirmeta read back from a stored commit (checked and
    /// checksummed when pulled): the normal-form round trip is skipped,
    /// as in [`DirTree::parse_stored`].
    pub fn parse_stored(data: &[u8]) -> Result<DirMeta> {
        Self::parse_inner(data, false)
    }

    fn parse_inner(data: &[u8], normal_form: bool) -> Result<DirMeta> {
        let (uid, gid, mode, xattrs) = parse_uuua_inner(data, "dirmeta", normal_form)?;
        if mode & mode::S_IFMT != mode::S_IFDIR {
            bail!("dirmeta mode {mode:o} is not a directory");
        }
        Ok(DirMeta {
            uid,
            gid,
            mode,
            xattrs,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        serialize_uuua(self.uid, self.gid, self.mode, &self.xattrs)
    }
}

/// `(uuua(ayay))` with big-endian integers: dirmeta and the bare-user
/// `user.ostreemeta` xattr.
pub fn parse_uuua(data: &[u8], what: &str) -> Result<(u32, u32, u32, Vec<Xattr>)> {
    parse_uuua_inner(data, what, true)
}

fn parse_uuua_inner(
    data: &[u8],
    what: &str,
    normal_form: bool,
) -> Result<(u32, u32, u32, Vec<Xattr>)> {
    if data.len() > MAX_METADATA_SIZE {
        bail!(
            "{what} of {} bytes is larger than the {} byte limit",
            data.len(),
            MAX_METADATA_SIZE
        );
    }
    let v = gv!("(uuua(ayay))").from_bytes(data);
    let (uid, gid, mode, xattrs) = v.to_tuple();
    let x = read_xattrs(xattrs)?;
    let r = (
        u32::from_be(*uid),
        u32::from_be(*gid),
        u32::from_be(*mode),
        x,
    );
    if normal_form {
        check_normal(what, data, &serialize_uuua(r.0, r.1, r.2, &r.3))?;
    }
    Ok(r)
}

pub fn serialize_uuua(uid: u32, gid: u32, mode: u32, xattrs: &[Xattr]) -> Vec<u8> {
    let names = xattr_names(xattrs);
    V::Tuple(vec![
        u32be(uid),
        u32be(gid),
        u32be(mode),
        xattrs_value(xattrs, &names),
    ])
    .to_bytes()
}

/// What ostree records of a file besides its content: `(tuuuusa(ayay))`
/// in archive repositories (`size` first), `(uuuusa(ayay))` when
/// checksumming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub rdev: u32,
    pub symlink: String,
    pub xattrs: Vec<Xattr>,
}

impl FileHeader {
    /// Check what ostree allows: a regular file or a symlink with a sane
    /// target; no devices.
    pub fn validate(&self) -> Result<()> {
        match self.mode & mode::S_IFMT {
            mode::S_IFREG => {
                if !self.symlink.is_empty() {
                    bail!("regular file has a symlink target");
                }
            }
            mode::S_IFLNK => {
                if self.symlink.is_empty() {
                    bail!("symlink with an empty target");
                }
                if self.symlink.len() > MAX_SYMLINK_TARGET {
                    bail!(
                        "symlink target of {} bytes (limit {MAX_SYMLINK_TARGET})",
                        self.symlink.len()
                    );
                }
                if self.symlink.contains('\0') {
                    bail!("symlink target contains NUL");
                }
                if self.size != 0 {
                    bail!("symlink with {} bytes of content", self.size);
                }
            }
            other => bail!(
                "file mode {:o} is neither a regular file nor a symlink",
                other | (self.mode & 0o7777)
            ),
        }
        if self.rdev != 0 {
            bail!("file has a device number ({})", self.rdev);
        }
        Ok(())
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & mode::S_IFMT == mode::S_IFLNK
    }

    /// Parse the archive header `(tuuuusa(ayay))`.
    pub fn parse_archive(data: &[u8]) -> Result<FileHeader> {
        Self::parse_archive_inner(data, true)
    }

    /// Parse an archive header read back from a stored commit (checked
    /// and checksummed when pulled): the normal-form round trip is
    /// skipped, as in [`DirTree::parse_stored`]; the values are still
    /// validated.
    pub fn parse_archive_stored(data: &[u8]) -> Result<FileHeader> {
        Self::parse_archive_inner(data, false)
    }

    fn parse_archive_inner(data: &[u8], normal_form: bool) -> Result<FileHeader> {
        if data.len() > MAX_METADATA_SIZE {
            bail!("file header of {} bytes is too large", data.len());
        }
        let v = gv!("(tuuuusa(ayay))").from_bytes(data);
        let (size, uid, gid, mode, rdev, symlink, xattrs) = v.to_tuple();
        let raw = symlink.as_bytes_non_conformant();
        let target = std::str::from_utf8(raw).context("symlink target is not UTF-8")?;
        let h = FileHeader {
            size: u64::from_be(*size),
            uid: u32::from_be(*uid),
            gid: u32::from_be(*gid),
            mode: u32::from_be(*mode),
            rdev: u32::from_be(*rdev),
            symlink: target.to_string(),
            xattrs: read_xattrs(xattrs)?,
        };
        if normal_form {
            check_normal("file header", data, &h.serialize_archive())?;
        }
        h.validate()?;
        Ok(h)
    }

    pub fn serialize_archive(&self) -> Vec<u8> {
        let names = xattr_names(&self.xattrs);
        V::Tuple(vec![
            u64be(self.size),
            u32be(self.uid),
            u32be(self.gid),
            u32be(self.mode),
            u32be(self.rdev),
            V::Str(self.symlink.as_bytes()),
            xattrs_value(&self.xattrs, &names),
        ])
        .to_bytes()
    }

    /// The bytes ostree hashes before the content: the `(uuuusa(ayay))`
    /// header, prefixed with its length (u32 big-endian) and 4 zero bytes.
    pub fn checksum_prefix(&self) -> Vec<u8> {
        let names = xattr_names(&self.xattrs);
        let v = V::Tuple(vec![
            u32be(self.uid),
            u32be(self.gid),
            u32be(self.mode),
            u32be(self.rdev),
            V::Str(self.symlink.as_bytes()),
            xattrs_value(&self.xattrs, &names),
        ])
        .to_bytes();
        let mut out = Vec::with_capacity(8 + v.len());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&v);
        out
    }

    /// A hasher primed with the header; feed it the content and finish
    /// with [`finish_checksum`].
    pub fn checksum_hasher(&self) -> Sha256 {
        let mut h = Sha256::new();
        h.update(self.checksum_prefix());
        h
    }

    /// ostree's checksum of this file with `content`.
    pub fn checksum(&self, content: &[u8]) -> Checksum {
        let mut h = self.checksum_hasher();
        h.update(content);
        finish_checksum(h)
    }
}

pub fn finish_checksum(h: Sha256) -> Checksum {
    Checksum(h.finalize().into())
}

/// Split an archive-mode `.filez` prefix: u32 big-endian header length,
/// 4 bytes of padding, the header. Returns the header and the offset of
/// the deflated content.
pub fn split_filez_header(data: &[u8]) -> Result<(FileHeader, usize)> {
    if data.len() < 8 {
        bail!("truncated .filez object ({} bytes)", data.len());
    }
    let len = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_METADATA_SIZE {
        bail!(".filez header length {len} is absurd");
    }
    let Some(hdr) = data.get(8..8 + len) else {
        bail!(
            "truncated .filez object: header of {len} bytes, {} available",
            data.len() - 8
        );
    };
    let h = FileHeader::parse_archive(hdr).context("bad .filez header")?;
    Ok((h, 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FileHeader {
        FileHeader {
            size: 5,
            uid: 1000,
            gid: 100,
            mode: mode::S_IFREG | 0o644,
            rdev: 0,
            symlink: String::new(),
            xattrs: vec![(b"user.a".to_vec(), b"1".to_vec())],
        }
    }

    #[test]
    fn file_header_round_trip() {
        let h = header();
        let b = h.serialize_archive();
        assert_eq!(FileHeader::parse_archive(&b).unwrap(), h);
        let mut bad = b.clone();
        bad.push(0);
        assert!(FileHeader::parse_archive(&bad).is_err());
    }

    #[test]
    fn dirtree_round_trip_and_hostile_names() {
        let t = DirTree {
            files: vec![("a".into(), Checksum([1; 32]))],
            dirs: vec![("d".into(), Checksum([2; 32]), Checksum([3; 32]))],
        };
        assert_eq!(DirTree::parse(&t.serialize()).unwrap(), t);
        for bad in ["", ".", "..", "a/b"] {
            let t = DirTree {
                files: vec![(bad.into(), Checksum([1; 32]))],
                dirs: vec![],
            };
            assert!(DirTree::parse(&t.serialize()).is_err(), "{bad:?}");
        }
        // a dirmeta is not a dirtree
        let m = DirMeta {
            uid: 0,
            gid: 0,
            mode: mode::S_IFDIR | 0o755,
            xattrs: vec![],
        };
        assert!(DirTree::parse(&m.serialize()).is_err());
    }

    /// What `parse_in_place` reads, as names and checksums.
    fn in_place(data: &[u8]) -> Result<DirTree> {
        let e = DirTree::parse_in_place(data)?;
        let c = |at: usize| Checksum(data[at..at + 32].try_into().unwrap());
        Ok(DirTree {
            files: e
                .files
                .iter()
                .map(|(n, at)| (String::from_utf8(n.to_vec()).unwrap(), c(*at)))
                .collect(),
            dirs: e
                .dirs
                .iter()
                .map(|(n, t, m)| (String::from_utf8(n.to_vec()).unwrap(), c(*t), c(*m)))
                .collect(),
        })
    }

    #[test]
    fn dirtrees_read_in_place_as_parsed() {
        // Sizes across every framing-offset width (1, 2 and 4 bytes), and
        // names of every length up to 255.
        for (files, dirs) in [(0, 0), (1, 0), (0, 1), (2, 1), (3, 3), (40, 30), (900, 200)] {
            let name = |i: usize| format!("{i}-{}", "n".repeat(i * 7 % 250));
            let t = DirTree {
                files: (0..files)
                    .map(|i| (name(i), Checksum::of(&i.to_le_bytes())))
                    .collect(),
                dirs: (0..dirs)
                    .map(|i| {
                        (
                            format!("d{}", name(i)),
                            Checksum::of(&((i + 1) << 20).to_le_bytes()),
                            Checksum::of(&((i + 1) << 40).to_le_bytes()),
                        )
                    })
                    .collect(),
            };
            let data = t.serialize();
            assert_eq!(in_place(&data).unwrap(), t, "{files} files, {dirs} dirs");
            assert_eq!(DirTree::parse(&data).unwrap(), t);
            let sorted = DirTree::parse_in_place(&data).unwrap().sorted;
            assert_eq!(sorted, files < 10 && dirs < 10, "{files} {dirs}");
            // Cut short or with a byte changed: an error or what the
            // strict parser reads, never a panic or other names.
            if data.len() < 3000 {
                for k in 0..data.len() {
                    if let Ok(got) = in_place(&data[..k]) {
                        assert_eq!(Some(got), DirTree::parse(&data[..k]).ok(), "cut at {k}");
                    }
                    let mut bad = data.clone();
                    bad[k] ^= 0x41;
                    match (in_place(&bad), DirTree::parse(&bad)) {
                        (Ok(got), Ok(want)) => assert_eq!(got, want, "flip at {k}"),
                        (Ok(_), Err(_)) | (Err(_), _) => {}
                    }
                }
            }
        }
        // Hostile names are refused as by the strict parser.
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            let t = DirTree {
                files: vec![(bad.to_string(), Checksum([1; 32]))],
                dirs: vec![],
            };
            assert!(DirTree::parse_in_place(&t.serialize()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dirmeta_round_trip() {
        let m = DirMeta {
            uid: 1,
            gid: 2,
            mode: mode::S_IFDIR | 0o755,
            xattrs: vec![(b"security.x".to_vec(), vec![0, 1, 2])],
        };
        assert_eq!(DirMeta::parse(&m.serialize()).unwrap(), m);
    }
}
