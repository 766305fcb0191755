//! ostree static deltas: parsing a delta's superblock and applying its
//! parts.
//!
//! A static delta from commit `FROM` (or from nothing: a "scratch" delta)
//! to commit `TO` lives under `deltas/…` (see [`delta_dir`]): a
//! `superblock` and numbered parts `0`, `1`, … (or parts stored inside the
//! superblock's metadata, for `--inline` deltas).
//!
//! The superblock is the GVariant
//! `(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))`: metadata,
//! timestamp (big-endian), from (empty for scratch), to, the `TO` commit
//! object itself, an (always empty) list of deltas to apply first, the part
//! headers (version, SHA-256 of the part file, part size, uncompressed
//! size, then 33 bytes per object: type + checksum) and the "fallback"
//! objects the delta does not carry (to be fetched one by one). A signed
//! superblock wraps it as `(taya{sv})`: the magic `OSTSGNDT`, the superblock
//! bytes, signatures.
//!
//! The integers of the part headers and fallbacks are in the byte order of
//! the machine that generated the delta, recorded as `ostree.endianness`
//! (`l` or `B`) in the metadata; for old deltas without it ostree guesses,
//! and so do we (see [`Endianness`]).
//!
//! A part file is one byte of compression type (`0`: none, `x`: xz) then
//! the GVariant `(a(uuu)aa(ayay)ayay)`: a table of (uid, gid, mode), a table
//! of xattr lists, a blob of raw data and the operations; see
//! [`apply_part`].

mod apply;
mod frame;

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use gvariant::{Marker, Structure, gv};

pub use self::apply::{
    DeltaSink, MAX_DELTA_FILE_SIZE, PART_MAX_PAYLOAD_SIZE, PartStats, apply_part, apply_payload,
    decompress_part, part_payload_limit,
};
use self::frame::{fixed, var};
use super::checksum::{Checksum, ObjType, delta_dir};
use super::objects::{Commit, check_dict};

/// The only part format version there is (`OSTREE_DELTAPART_VERSION`).
pub const DELTAPART_VERSION: u32 = 0;

/// First 8 bytes of a signed superblock (`OSTREE_STATIC_DELTA_SIGNED_MAGIC`).
pub const SIGNED_MAGIC: &[u8; 8] = b"OSTSGNDT";

/// Byte order of the integers in the part headers and fallback entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endianness {
    Little,
    Big,
}

/// A parsed delta superblock.
#[derive(Clone, Debug)]
pub struct Superblock {
    /// The metadata dictionary `a{sv}` as stored (inline parts included).
    pub metadata: Vec<u8>,
    /// Seconds since the epoch when the delta was generated.
    pub timestamp: u64,
    /// `None` for a scratch delta.
    pub from: Option<Checksum>,
    pub to: Checksum,
    /// The exact bytes of the `to` commit object (its SHA-256 is `to`).
    pub commit: Vec<u8>,
    pub parts: Vec<PartMeta>,
    pub fallbacks: Vec<Fallback>,
    /// Detached metadata of the `to` commit (`a{sv}`), if the delta ships it.
    pub detached_metadata: Option<Vec<u8>>,
    /// Byte order of the part headers (as recorded, or guessed for old
    /// deltas).
    pub endianness: Endianness,
    /// For a signed superblock: its signatures dictionary `a{sv}`
    /// (`ostree.sign.<type>` → signatures over the inner superblock bytes,
    /// see [`unwrap_signed`]). Not verified here.
    pub signatures: Option<Vec<u8>>,
}

/// The header of one part, from the superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartMeta {
    /// Position in the superblock: the part is `deltas/…/<index>`.
    pub index: u32,
    pub version: u32,
    /// SHA-256 of the part file (compression byte included).
    pub checksum: Checksum,
    /// Size of the part file.
    pub size: u64,
    /// Total size of the objects the part produces, as declared.
    pub uncompressed_size: u64,
    /// The objects the part produces, in order.
    pub objects: Vec<(ObjType, Checksum)>,
    /// The part file itself, when stored inside the superblock (`--inline`).
    pub inline: Option<Vec<u8>>,
}

/// An object the delta does not carry, to be fetched individually.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub objtype: ObjType,
    pub checksum: Checksum,
    /// Size of the object as stored in an archive repository.
    pub compressed_size: u64,
    /// Size of its content.
    pub uncompressed_size: u64,
}

impl Superblock {
    /// `deltas/…` directory of this delta.
    pub fn dir(&self) -> String {
        delta_dir(self.from.as_ref(), &self.to)
    }

    /// Path of part `index` of this delta.
    pub fn part_path(&self, index: u32) -> String {
        part_path(self.from.as_ref(), &self.to, index)
    }

    /// The commit object, parsed.
    pub fn parsed_commit(&self) -> Result<Commit> {
        Commit::parse(&self.commit)
    }
}

/// Path of the superblock of the delta `from` → `to`.
pub fn superblock_path(from: Option<&Checksum>, to: &Checksum) -> String {
    format!("{}/superblock", delta_dir(from, to))
}

/// Path of part `index` of the delta `from` → `to` (also the metadata key
/// of an inline part).
pub fn part_path(from: Option<&Checksum>, to: &Checksum, index: u32) -> String {
    format!("{}/{index}", delta_dir(from, to))
}

/// A signed superblock, split.
#[derive(Clone, Copy, Debug)]
pub struct SignedSuperblock<'a> {
    /// The superblock proper: the bytes the signatures sign.
    pub superblock: &'a [u8],
    /// The signatures dictionary `a{sv}`.
    pub signatures: &'a [u8],
}

/// If `data` is a signed superblock `(taya{sv})`, split it.
pub fn unwrap_signed(data: &[u8]) -> Result<Option<SignedSuperblock<'_>>> {
    if !data.starts_with(SIGNED_MAGIC) {
        return Ok(None);
    }
    let m = frame::structure(
        "signed delta superblock",
        data,
        &[fixed(8, 8), var(1), var(8)],
    )?;
    check_dict("delta signatures", m[2])?;
    Ok(Some(SignedSuperblock {
        superblock: m[1],
        signatures: m[2],
    }))
}

/// Key → (value type string, value bytes).
type DictEntries = HashMap<String, (Vec<u8>, Vec<u8>)>;

/// Value types and bytes of the entries of an `a{sv}` (already checked to
/// be in normal form) whose key `wanted` accepts. A key given twice is an
/// error.
fn dict_entries(what: &str, dict: &[u8], wanted: impl Fn(&str) -> bool) -> Result<DictEntries> {
    let mut out = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for e in &*gv!("a{sv}").from_bytes(dict) {
        let (k, v) = e.to_tuple();
        let k = k.to_str();
        if !seen.insert(k.to_string()) {
            bail!("{what}: key {k:?} appears twice");
        }
        if wanted(k) {
            let (ty, data) = v.split();
            out.insert(k.to_string(), (ty.to_vec(), data.to_vec()));
        }
    }
    Ok(out)
}

fn be_or_le_u32(b: &[u8], e: Endianness) -> u32 {
    let a: [u8; 4] = b.try_into().expect("framed as 4 bytes");
    match e {
        Endianness::Little => u32::from_le_bytes(a),
        Endianness::Big => u32::from_be_bytes(a),
    }
}

fn be_or_le_u64(b: &[u8], e: Endianness) -> u64 {
    let a: [u8; 8] = b.try_into().expect("framed as 8 bytes");
    match e {
        Endianness::Little => u64::from_le_bytes(a),
        Endianness::Big => u64::from_be_bytes(a),
    }
}

const PART_MEMBERS: [frame::Member; 5] = [fixed(4, 4), var(1), fixed(8, 8), fixed(8, 8), var(1)];
const FALLBACK_MEMBERS: [frame::Member; 4] = [fixed(1, 1), var(1), fixed(8, 8), fixed(8, 8)];

/// ostree's guess for deltas that do not record their byte order
/// (`_ostree_delta_get_endianness`): read as little-endian, a part bigger
/// than 1.2× its uncompressed size, or objects averaging more than 4 GiB,
/// mean the numbers were written big-endian.
fn guess_endianness(parts: &[&[u8]]) -> Result<Endianness> {
    let (mut total_size, mut total_objects) = (0u128, 0u128);
    for (i, p) in parts.iter().enumerate() {
        let m = frame::structure(&format!("delta part header {i}"), p, &PART_MEMBERS)?;
        let size = be_or_le_u64(m[2], Endianness::Little);
        let usize_ = be_or_le_u64(m[3], Endianness::Little);
        total_size += u128::from(size);
        total_objects += (m[4].len() / 33) as u128;
        if size > usize_ && (size as f64) / (usize_ as f64) > 1.2 {
            return Ok(Endianness::Big);
        }
    }
    if total_objects > 0 && total_size / total_objects > u128::from(u32::MAX) {
        return Ok(Endianness::Big);
    }
    Ok(Endianness::Little)
}

fn objtype(n: u8) -> Result<ObjType> {
    ObjType::from_u8(n).with_context(|| format!("invalid object type {n}"))
}

/// Parse a superblock (plain or signed). Checks that the embedded commit
/// is a valid commit whose SHA-256 is the `to` checksum, and that every
/// part and fallback entry is well formed; inline parts are attached to
/// their [`PartMeta`].
pub fn parse_superblock(data: &[u8]) -> Result<Superblock> {
    let (inner, signatures) = match unwrap_signed(data)? {
        Some(s) => (s.superblock, Some(s.signatures.to_vec())),
        None => (data, None),
    };
    let m = frame::structure(
        "delta superblock",
        inner,
        &[
            var(8),
            fixed(8, 8),
            var(1),
            var(1),
            var(8),
            var(1),
            var(8),
            var(8),
        ],
    )?;
    let metadata = m[0];
    check_dict("delta superblock metadata", metadata)?;
    let timestamp = u64::from_be_bytes(m[1].try_into().expect("framed as 8 bytes"));
    let from = match m[2].len() {
        0 => None,
        _ => Some(Checksum::from_bytes(m[2]).context("delta superblock 'from' checksum")?),
    };
    let to = Checksum::from_bytes(m[3]).context("delta superblock 'to' checksum")?;
    let dir = delta_dir(from.as_ref(), &to);
    let entries = dict_entries("delta superblock metadata", metadata, |k| {
        k == "ostree.endianness"
            || k.strip_prefix(dir.as_str())
                .is_some_and(|r| r.starts_with('/'))
    })?;
    let commit = m[4];
    let actual = Checksum::of(commit);
    if actual != to {
        bail!("delta superblock: the commit it carries is {actual}, not the target {to}");
    }
    Commit::parse(commit).with_context(|| format!("delta superblock: commit {to}"))?;
    if !m[5].is_empty() {
        bail!(
            "delta superblock: lists deltas to apply first, which ostree never generates nor supports"
        );
    }

    let part_headers = frame::var_array("delta part headers", m[6], 8)?;
    let endianness = match entries.get("ostree.endianness") {
        Some((ty, v)) if ty == b"y" && v.len() == 1 => match v[0] {
            b'l' => Endianness::Little,
            b'B' => Endianness::Big,
            other => bail!("delta superblock: invalid ostree.endianness {other:#04x}"),
        },
        Some((ty, _)) => bail!(
            "delta superblock: ostree.endianness of type {:?}, not a byte",
            String::from_utf8_lossy(ty)
        ),
        None => guess_endianness(&part_headers)?,
    };

    let mut parts = Vec::with_capacity(part_headers.len());
    for (i, p) in part_headers.iter().enumerate() {
        let index = u32::try_from(i).context("too many delta parts")?;
        let what = format!("delta part header {i}");
        let f = frame::structure(&what, p, &PART_MEMBERS)?;
        let version = be_or_le_u32(f[0], endianness);
        if version > DELTAPART_VERSION {
            bail!(
                "delta part {i} has version {version}; only version {DELTAPART_VERSION} is known"
            );
        }
        let checksum = Checksum::from_bytes(f[1]).with_context(|| format!("{what}: checksum"))?;
        let size = be_or_le_u64(f[2], endianness);
        let uncompressed_size = be_or_le_u64(f[3], endianness);
        let objects = frame::fixed_array(&format!("{what}: objects"), f[4], 33)?
            .into_iter()
            .map(|o| {
                let t = objtype(o[0])?;
                Ok((t, Checksum::from_bytes(&o[1..])?))
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("{what}: objects"))?;
        let key = part_path(from.as_ref(), &to, index);
        let inline = match entries.get(&key) {
            None => None,
            Some((ty, v)) if ty == b"(yay)" && !v.is_empty() => Some(v.clone()),
            Some((ty, _)) => bail!(
                "delta superblock: inline part {i} of type {:?}, not a non-empty (yay)",
                String::from_utf8_lossy(ty)
            ),
        };
        parts.push(PartMeta {
            index,
            version,
            checksum,
            size,
            uncompressed_size,
            objects,
            inline,
        });
    }

    let mut fallbacks = Vec::new();
    for (i, fb) in frame::var_array("delta fallbacks", m[7], 8)?
        .iter()
        .enumerate()
    {
        let what = format!("delta fallback entry {i}");
        let f = frame::structure(&what, fb, &FALLBACK_MEMBERS)?;
        fallbacks.push(Fallback {
            objtype: objtype(f[0][0]).with_context(|| what.clone())?,
            checksum: Checksum::from_bytes(f[1]).with_context(|| what.clone())?,
            compressed_size: be_or_le_u64(f[2], endianness),
            uncompressed_size: be_or_le_u64(f[3], endianness),
        });
    }

    let detached_key = format!("{dir}/commitmeta");
    let detached_metadata = match entries.get(&detached_key) {
        None => None,
        Some((ty, v)) if ty == b"a{sv}" => {
            check_dict("detached commit metadata in delta superblock", v)?;
            Some(v.clone())
        }
        Some((ty, _)) => bail!(
            "delta superblock: detached metadata of type {:?}, not a{{sv}}",
            String::from_utf8_lossy(ty)
        ),
    };

    Ok(Superblock {
        metadata: metadata.to_vec(),
        timestamp,
        from,
        to,
        commit: commit.to_vec(),
        parts,
        fallbacks,
        detached_metadata,
        endianness,
        signatures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::variant::{V, dict, u64be};

    fn commit_bytes() -> Vec<u8> {
        V::Tuple(vec![
            V::Raw(&[], 8),
            V::Bytes(&[]),
            V::Raw(&[], 1),
            V::Str(b"subject"),
            V::Str(b""),
            u64be(1_700_000_000),
            V::Bytes(&[1; 32]),
            V::Bytes(&[2; 32]),
        ])
        .to_bytes()
    }

    struct Sb {
        endianness: Option<u8>,
        recursive: Vec<u8>,
        to: Option<Checksum>,
        version: u32,
        objects: Vec<u8>,
        inline: Option<(&'static str, Vec<u8>)>,
        big: bool,
    }

    impl Default for Sb {
        fn default() -> Self {
            let mut objects = vec![ObjType::DirTree as u8];
            objects.extend([3; 32]);
            Sb {
                endianness: Some(b'l'),
                recursive: vec![],
                to: None,
                version: 0,
                objects,
                inline: None,
                big: false,
            }
        }
    }

    impl Sb {
        fn build(&self) -> Vec<u8> {
            let commit = commit_bytes();
            let to = self.to.unwrap_or_else(|| Checksum::of(&commit));
            let e64 = |v: u64| {
                if self.big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            };
            let e32 = |v: u32| {
                if self.big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            };
            let mut entries = Vec::new();
            let endian = self.endianness.map(|c| [c]);
            if let Some(c) = &endian {
                entries.push(("ostree.endianness", V::Fixed(c.to_vec(), 1), "y"));
            }
            let key;
            if let Some((ty, data)) = &self.inline {
                key = part_path(None, &to, 0);
                entries.push((key.as_str(), V::Raw(data, 1), *ty));
            }
            let meta = dict(entries).to_bytes();
            V::Tuple(vec![
                V::Raw(&meta, 8),
                u64be(1234),
                V::Bytes(&[]),
                V::Bytes(&to.0),
                V::Raw(&commit, 8),
                V::Bytes(&self.recursive),
                V::Array(
                    vec![V::Tuple(vec![
                        V::Fixed(e32(self.version).to_vec(), 4),
                        V::Bytes(&[5; 32]),
                        V::Fixed(e64(100).to_vec(), 8),
                        V::Fixed(e64(200).to_vec(), 8),
                        V::Bytes(&self.objects),
                    ])],
                    8,
                ),
                V::Array(
                    vec![V::Tuple(vec![
                        V::Fixed(vec![1], 1),
                        V::Bytes(&[6; 32]),
                        V::Fixed(e64(300).to_vec(), 8),
                        V::Fixed(e64(400).to_vec(), 8),
                    ])],
                    8,
                ),
            ])
            .to_bytes()
        }
    }

    #[test]
    fn paths() {
        let to = Checksum([0xff; 32]);
        let from = Checksum([0; 32]);
        assert_eq!(
            superblock_path(None, &to),
            format!("{}/superblock", delta_dir(None, &to))
        );
        assert_eq!(
            part_path(Some(&from), &to, 12),
            format!("{}/12", delta_dir(Some(&from), &to))
        );
        assert!(part_path(None, &to, 0).starts_with("deltas/__/"));
    }

    #[test]
    fn parses_a_crafted_superblock() {
        for big in [false, true] {
            for endianness in [Some(if big { b'B' } else { b'l' }), None] {
                let sb = parse_superblock(
                    &Sb {
                        big,
                        endianness,
                        ..Default::default()
                    }
                    .build(),
                )
                .unwrap();
                assert_eq!(
                    sb.endianness,
                    if big {
                        Endianness::Big
                    } else {
                        Endianness::Little
                    }
                );
                assert_eq!(sb.timestamp, 1234);
                assert_eq!(sb.from, None);
                assert_eq!(sb.to, Checksum::of(&commit_bytes()));
                assert_eq!(sb.commit, commit_bytes());
                assert_eq!(sb.parts.len(), 1);
                let p = &sb.parts[0];
                assert_eq!(
                    (p.index, p.version, p.size, p.uncompressed_size),
                    (0, 0, 100, 200)
                );
                assert_eq!(p.checksum, Checksum([5; 32]));
                assert_eq!(p.objects, vec![(ObjType::DirTree, Checksum([3; 32]))]);
                assert_eq!(p.inline, None);
                assert_eq!(
                    sb.fallbacks,
                    vec![Fallback {
                        objtype: ObjType::File,
                        checksum: Checksum([6; 32]),
                        compressed_size: 300,
                        uncompressed_size: 400,
                    }]
                );
            }
        }
        let sb = parse_superblock(
            &Sb {
                inline: Some(("(yay)", b"x123".to_vec())),
                ..Default::default()
            }
            .build(),
        )
        .unwrap();
        assert_eq!(sb.parts[0].inline.as_deref(), Some(&b"x123"[..]));
    }

    #[test]
    fn rejects_bad_superblocks() {
        let cases = [
            (
                Sb {
                    endianness: Some(b'x'),
                    ..Default::default()
                },
                "ostree.endianness",
            ),
            (
                Sb {
                    recursive: vec![0; 64],
                    ..Default::default()
                },
                "apply first",
            ),
            (
                Sb {
                    to: Some(Checksum([7; 32])),
                    ..Default::default()
                },
                "not the target",
            ),
            (
                Sb {
                    version: 1,
                    ..Default::default()
                },
                "version 1",
            ),
            (
                Sb {
                    objects: vec![2; 34],
                    ..Default::default()
                },
                "33-byte",
            ),
            (
                Sb {
                    objects: vec![0; 33],
                    ..Default::default()
                },
                "invalid object type 0",
            ),
            (
                Sb {
                    inline: Some(("ay", b"x123".to_vec())),
                    ..Default::default()
                },
                "inline part 0",
            ),
            (
                Sb {
                    inline: Some(("(yay)", vec![])),
                    ..Default::default()
                },
                "inline part 0",
            ),
        ];
        for (sb, want) in cases {
            let e = format!("{:#}", parse_superblock(&sb.build()).unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
        }
        let good = Sb::default().build();
        for n in 0..good.len() {
            assert!(parse_superblock(&good[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn signed_wrapper() {
        let inner = Sb::default().build();
        let sigs = dict(vec![("ostree.sign.ed25519", V::Str(b"x"), "s")]).to_bytes();
        let signed = V::Tuple(vec![
            V::Fixed(SIGNED_MAGIC.to_vec(), 8),
            V::Bytes(&inner),
            V::Raw(&sigs, 8),
        ])
        .to_bytes();
        let s = unwrap_signed(&signed).unwrap().unwrap();
        assert_eq!(s.superblock, &inner[..]);
        let sb = parse_superblock(&signed).unwrap();
        assert_eq!(sb.signatures.as_deref(), Some(&sigs[..]));
        assert!(unwrap_signed(&inner).unwrap().is_none());
        assert!(parse_superblock(&signed[..signed.len() - 1]).is_err());
    }
}
