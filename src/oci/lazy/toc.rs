//! A layer's table of contents as zstd:chunked and eStargz write it (one
//! JSON model: containers/storage's `FileMetadata` and stargz's
//! `TOCEntry` share their field names), and its entries fed to the OCI
//! merge: metadata checked, each regular file's content located (the
//! compressed byte range of its frames or gzip members, the bytes to skip
//! after decompressing, its size and sha256).
//!
//! Entry types: `dir`, `reg`, `symlink`, `hardlink`, `char`, `block`,
//! `fifo`, and `chunk` (a further piece of the `reg` before it: its bytes
//! follow the previous piece's in the decompressed stream, so a file is
//! read as one range). The compressed range of a file starts at its
//! `offset` and ends at its `endOffset` (zstd:chunked) or, without one
//! (eStargz), where the next data entry with an `offset` and no
//! `innerOffset` starts (the table's own offset after the last), as
//! stargz's reader computes it. `innerOffset` (eStargz): decompressed
//! bytes to skip first.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde::Deserialize;

use crate::oci::merge::EntryMerge;
use crate::show::display_bytes;
use crate::tree::{FileData, Inode, Kind, Stat, Timespec, mode};

/// Largest regular file a table may describe (1 TiB): more is taken as a
/// hostile table, not a file.
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// The table as both formats write it.
#[derive(Deserialize, Debug)]
pub(super) struct Toc {
    #[serde(default)]
    pub version: i64,
    #[serde(default)]
    pub entries: Vec<Entry>,
}

/// One entry; absent fields are zero or empty (Go's `omitempty`).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct Entry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(rename = "linkName")]
    pub link_name: String,
    pub mode: i64,
    pub size: i64,
    pub uid: i64,
    pub gid: i64,
    pub modtime: Option<String>,
    #[serde(rename = "devMajor")]
    pub dev_major: i64,
    #[serde(rename = "devMinor")]
    pub dev_minor: i64,
    /// Values base64 (zstd:chunked writes strings, eStargz byte slices:
    /// both encode to base64 in JSON).
    pub xattrs: BTreeMap<String, String>,
    pub digest: String,
    pub offset: i64,
    #[serde(rename = "endOffset")]
    pub end_offset: i64,
    #[serde(rename = "innerOffset")]
    pub inner_offset: i64,
}

/// How a layer's file contents are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// zstd frames (zstd:chunked).
    Zstd,
    /// gzip members (eStargz).
    Gzip,
}

/// Where one regular file's content is, and what it must digest to.
#[derive(Clone, Debug)]
pub(super) struct FileSource {
    /// Index of the layer (in the manifest's order).
    pub layer: usize,
    /// The entry's name, for messages.
    pub name: String,
    /// Compressed bytes `start..end` of the layer blob.
    pub start: u64,
    pub end: u64,
    /// Decompressed bytes to skip before the content.
    pub skip: u64,
    pub size: u64,
    /// sha256 of the content.
    pub sha256: [u8; 32],
}

/// What a layer's table is read with.
pub(super) struct LayerInfo {
    pub index: usize,
    pub compression: Compression,
    /// The blob's size: every range must lie within it.
    pub blob_size: u64,
    /// Where the table (or its frame) starts: file data ends before it.
    pub toc_offset: u64,
    /// Entries to leave out (eStargz's own metadata files).
    pub skip_names: &'static [&'static str],
}

/// Parse a table's JSON.
pub(super) fn parse(json: &[u8]) -> Result<Toc> {
    let toc: Toc =
        serde_json::from_slice(json).context("the table of contents is not valid JSON")?;
    if toc.version != 1 {
        bail!(
            "table of contents version {} (only version 1 is known)",
            toc.version
        );
    }
    Ok(toc)
}

/// `sha256:<64 hex>` as bytes.
pub(super) fn parse_sha256(s: &str) -> Result<[u8; 32]> {
    let hex = s
        .strip_prefix("sha256:")
        .with_context(|| format!("digest {s:?} is not sha256:<hex>"))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out)
        .map_err(|_| anyhow::anyhow!("digest {s:?} is not sha256:<64 hex digits>"))?;
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        bail!("digest {s:?} is not lowercase hex");
    }
    Ok(out)
}

/// Feed layer `info.index`'s entries to `merge`; regular files with
/// content get an [`FileSource`] pushed on `files`, and their inode
/// names it by its index (see [`source_key`]).
pub(super) fn apply_layer(
    merge: &mut EntryMerge,
    toc: &Toc,
    info: &LayerInfo,
    files: &mut Vec<FileSource>,
) -> Result<()> {
    let entries = &toc.entries;
    let next = next_offsets(entries, info.toc_offset);
    let mut i = 0;
    while i < entries.len() {
        let e = &entries[i];
        let ctx = || format!("entry {i} \"{}\"", display_bytes(e.name.as_bytes()));
        if e.kind == "chunk" {
            bail!("{}: a chunk without a regular file before it", ctx());
        }
        // The chunks that follow a regular file are its pieces.
        let mut last = i;
        while last + 1 < entries.len() && entries[last + 1].kind == "chunk" {
            last += 1;
        }
        if last != i && e.kind != "reg" {
            bail!("{}: chunks follow a {:?} entry", ctx(), e.kind);
        }
        let bare = e.name.trim_start_matches("./").trim_start_matches('/');
        let skip = info.skip_names.contains(&bare);
        if !skip {
            apply_entry(merge, e, info, next[last], files).with_context(ctx)?;
        }
        i = last + 1;
    }
    Ok(())
}

/// For each data entry (`reg`, `chunk`), the offset of the next one that
/// starts a compressed stream of its own (`offset` set, no
/// `innerOffset`), or `end` after the last: where its compressed bytes
/// end at the latest (stargz's rule).
fn next_offsets(entries: &[Entry], end: u64) -> Vec<u64> {
    let mut out = vec![0; entries.len()];
    let mut last = end;
    for (i, e) in entries.iter().enumerate().rev() {
        if e.kind == "reg" || e.kind == "chunk" {
            out[i] = last;
        }
        if e.offset > 0 && e.inner_offset == 0 {
            last = e.offset as u64;
        }
    }
    out
}

fn apply_entry(
    merge: &mut EntryMerge,
    e: &Entry,
    info: &LayerInfo,
    next: u64,
    files: &mut Vec<FileSource>,
) -> Result<()> {
    let name = e.name.as_bytes();
    if e.kind == "hardlink" {
        return merge.hardlink(info.index, name, e.link_name.as_bytes());
    }
    let kind = match e.kind.as_str() {
        "dir" => Kind::Directory,
        "reg" => Kind::Regular(regular(e, info, next, files)?),
        "symlink" => Kind::Symlink(e.link_name.as_bytes().to_vec()),
        "char" | "block" => {
            let major = u32::try_from(e.dev_major).context("bad device major number")?;
            let minor = u32::try_from(e.dev_minor).context("bad device minor number")?;
            let rdev = rustix::fs::makedev(major, minor);
            if e.kind == "char" {
                Kind::CharDevice { rdev }
            } else {
                Kind::BlockDevice { rdev }
            }
        }
        "fifo" => Kind::Fifo,
        other => bail!("unsupported entry type {other:?}"),
    };
    let mut xattrs = Vec::with_capacity(e.xattrs.len());
    for (k, v) in &e.xattrs {
        let value = base64::engine::general_purpose::STANDARD
            .decode(v)
            .with_context(|| format!("xattr {k:?}: its value is not base64"))?;
        xattrs.push((k.as_bytes().to_vec(), value));
    }
    let inode = Inode {
        stat: Stat {
            perms: (e.mode as u64 & u64::from(mode::PERMS)) as u32,
            uid: u32::try_from(e.uid).with_context(|| format!("bad uid {}", e.uid))?,
            gid: u32::try_from(e.gid).with_context(|| format!("bad gid {}", e.gid))?,
            mtime: match &e.modtime {
                Some(t) => parse_time(t)?,
                None => Timespec::default(),
            },
        },
        kind,
        xattrs,
    };
    merge.inode(info.index, name, inode)
}

/// A regular file's data: empty inline, or located in the blob (its
/// compressed bytes end at `endOffset`, else at `next`).
fn regular(
    e: &Entry,
    info: &LayerInfo,
    next: u64,
    files: &mut Vec<FileSource>,
) -> Result<FileData> {
    let size = u64::try_from(e.size)
        .ok()
        .filter(|&s| s <= MAX_FILE_SIZE)
        .with_context(|| format!("file size {} (at most {MAX_FILE_SIZE})", e.size))?;
    if size == 0 {
        return Ok(FileData::Inline(Vec::new()));
    }
    let sha256 = parse_sha256(&e.digest).context("the file's content digest")?;
    let start = u64::try_from(e.offset).unwrap_or(0);
    let end = match e.end_offset {
        n if n > 0 => n as u64,
        _ => next,
    };
    if start == 0 || start >= end || end > info.blob_size {
        bail!(
            "content at bytes {}..{end} of a blob of {} (not a range within it)",
            e.offset,
            info.blob_size
        );
    }
    let skip = u64::try_from(e.inner_offset).context("negative innerOffset")?;
    let index = files.len();
    files.push(FileSource {
        layer: info.index,
        name: e.name.clone(),
        start,
        end,
        skip,
        size,
        sha256,
    });
    Ok(FileData::External {
        size,
        redirect: Some(source_key(index)),
        digest: None,
    })
}

/// How a merged inode names its [`FileSource`] until the tree is built:
/// `\0lazy` and the index, in the `redirect` field (no real redirect
/// starts with NUL). Replaced by nothing once read ([`key_source`]).
pub(super) fn source_key(index: usize) -> Vec<u8> {
    let mut k = b"\0lazy".to_vec();
    k.extend_from_slice(&(index as u64).to_le_bytes());
    k
}

/// The index [`source_key`] wrote, if `redirect` is one.
pub(super) fn key_source(redirect: &[u8]) -> Option<usize> {
    let rest = redirect.strip_prefix(b"\0lazy")?;
    Some(u64::from_le_bytes(rest.try_into().ok()?) as usize)
}

/// RFC 3339 (`2024-01-02T03:04:05.123456789Z`, or with `+HH:MM`) as a
/// Unix time. Go's zero time (year 1) is no time: 0, as the Unix epoch.
pub(super) fn parse_time(s: &str) -> Result<Timespec> {
    let bad = || anyhow::anyhow!("modification time {s:?} is not an RFC 3339 time");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut nsec = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let v: u32 = frac[..digits].parse().map_err(|_| bad())?;
        nsec = v * 10u32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let d = |c: &u8| -> Result<i64> {
                if c.is_ascii_digit() {
                    Ok(i64::from(c - b'0'))
                } else {
                    Err(bad())
                }
            };
            let secs = (d(h1)? * 10 + d(h2)?) * 3600 + (d(m1)? * 10 + d(m2)?) * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return Err(bad()),
    };
    if year == 1 && month == 1 && day == 1 && hour == 0 && min == 0 && sec == 0 && nsec == 0 {
        return Ok(Timespec::default());
    }
    let days = days_from_civil(year, month, day);
    Ok(Timespec {
        sec: days * 86400 + hour * 3600 + min * 60 + sec - offset,
        nsec,
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = |s: &str| parse_time(s).unwrap();
        assert_eq!(t("1970-01-01T00:00:00Z"), Timespec { sec: 0, nsec: 0 });
        assert_eq!(
            t("2020-09-13T12:26:40Z"),
            Timespec {
                sec: 1_600_000_000,
                nsec: 0
            }
        );
        assert_eq!(
            t("2020-09-13T14:26:40.5+02:00"),
            Timespec {
                sec: 1_600_000_000,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            t("2020-09-13T12:26:40.000000001Z"),
            Timespec {
                sec: 1_600_000_000,
                nsec: 1
            }
        );
        assert_eq!(t("1969-12-31T23:59:59Z").sec, -1);
        assert_eq!(t("0001-01-01T00:00:00Z"), Timespec::default());
        for bad in [
            "",
            "2020-09-13",
            "2020-09-13T12:26:40",
            "2020-13-13T12:26:40Z",
            "2020-09-13T12:26:40.Z",
            "2020-09-13T12:26:40.1234567891Z",
            "2020-09-13T12:26:40+0200",
            "2020-09-1xT12:26:40Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        let h = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(
            parse_sha256(&format!("sha256:{h}")).unwrap().to_vec(),
            hex::decode(h).unwrap()
        );
        assert!(parse_sha256(h).is_err());
        assert!(parse_sha256("sha512:00").is_err());
        assert!(parse_sha256(&format!("sha256:{}", h.to_uppercase())).is_err());
        assert!(parse_sha256(&format!("sha256:{h}0")).is_err());
    }

    #[test]
    fn keys() {
        for i in [0usize, 1, 1 << 40] {
            assert_eq!(key_source(&source_key(i)), Some(i));
        }
        assert_eq!(key_source(b"ab/cdef"), None);
    }

    fn entry(kind: &str, name: &str) -> Entry {
        Entry {
            kind: kind.into(),
            name: name.into(),
            mode: 0o644,
            ..Entry::default()
        }
    }

    fn info() -> LayerInfo {
        LayerInfo {
            index: 0,
            compression: Compression::Zstd,
            blob_size: 10_000,
            toc_offset: 9_000,
            skip_names: &[],
        }
    }

    fn apply(entries: Vec<Entry>) -> Result<Vec<FileSource>> {
        let mut m = EntryMerge::new();
        let mut files = Vec::new();
        apply_layer(
            &mut m,
            &Toc {
                version: 1,
                entries,
            },
            &info(),
            &mut files,
        )?;
        m.build()?;
        Ok(files)
    }

    #[test]
    fn ranges() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let mut a = entry("reg", "./a");
        a.size = 10;
        a.digest = d.clone();
        a.offset = 100;
        a.end_offset = 150;
        let mut b = entry("reg", "b");
        b.size = 300;
        b.digest = d.clone();
        b.offset = 200;
        let mut c1 = entry("chunk", "b");
        c1.offset = 260;
        let mut c = entry("reg", "c");
        c.size = 5;
        c.digest = d.clone();
        c.offset = 200;
        c.inner_offset = 300;
        let mut last = entry("reg", "d");
        last.size = 1;
        last.digest = d.clone();
        last.offset = 400;
        let files = apply(vec![entry("dir", "./"), a, b, c1, c, last]).unwrap();
        let r: Vec<_> = files.iter().map(|f| (f.start, f.end, f.skip)).collect();
        // b ends where d starts (c shares b's last stream), d at the table.
        assert_eq!(
            r,
            [
                (100, 150, 0),
                (200, 400, 0),
                (200, 400, 300),
                (400, 9000, 0)
            ]
        );

        let hostile = |f: &dyn Fn(&mut Entry)| {
            let mut e = entry("reg", "x");
            e.size = 1;
            e.digest = d.clone();
            e.offset = 100;
            f(&mut e);
            format!("{:#}", apply(vec![e]).unwrap_err())
        };
        assert!(hostile(&|e| e.size = -1).contains("file size"));
        assert!(hostile(&|e| e.size = 1 << 50).contains("file size"));
        assert!(hostile(&|e| e.digest.clear()).contains("digest"));
        assert!(hostile(&|e| e.offset = 0).contains("not a range"));
        assert!(hostile(&|e| e.end_offset = 20_000).contains("not a range"));
        assert!(hostile(&|e| e.end_offset = 50).contains("not a range"));
        assert!(hostile(&|e| e.name = "../x".into()).contains("entry 0"));
        assert!(hostile(&|e| e.kind = "socket".into()).contains("unsupported"));
        assert!(hostile(&|e| e.uid = -1).contains("uid"));
        assert!(apply(vec![entry("chunk", "x")]).is_err());
    }
}
