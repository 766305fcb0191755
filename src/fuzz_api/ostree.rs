//! The ostree targets: commit, dirtree, dirmeta and file objects, stored
//! commit streams, summaries, static deltas and detached metadata.

use std::io::{self, Read};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::delta::{self, DeltaSink, PartMeta, PartStats};
use crate::ostree::objects::{self, Commit, DirMeta, DirTree, FileHeader};
use crate::ostree::signature::{self, Ed25519Keys, Keyring};
use crate::ostree::source::filez_object;
use crate::ostree::summary::{self, Summary};

/// A `.commit` object as a pull receives it: parsed strictly (normal
/// form), its metadata read as `log`/`show` and signature checks do.
pub fn ostree_commit(data: &[u8]) -> Result<Commit> {
    let c = Commit::parse(data)?;
    let _ = c.meta_string("version");
    objects::check_dict("commit metadata", &c.metadata)
        .expect("a parsed commit's metadata is a normal-form a{sv}");
    let _ = objects::meta_bytes_list(&c.metadata, "ostree.ref-binding");
    let _ = objects::meta_u64_be(&c.metadata, "ostree.commit.timestamp");
    let _ = (c.parent.map(|p| p.to_hex()), c.root_tree, c.root_meta);
    Ok(c)
}

/// A `.dirtree` object: parsed strictly; what parses must serialise back
/// to the same bytes.
pub fn ostree_dirtree(data: &[u8]) -> Result<DirTree> {
    let n = DirTree::count_dirs(data);
    // Read in place (as a stored commit's listings are): what the strict
    // parser accepts, it reads alike.
    let in_place = DirTree::parse_in_place(data).map(|e| {
        let c = |at: usize| data[at..at + 32].to_vec();
        let files: Vec<_> = e.files.iter().map(|(n, at)| (n.to_vec(), c(*at))).collect();
        let dirs: Vec<_> = (e.dirs.iter())
            .map(|(n, t, m)| (n.to_vec(), c(*t), c(*m)))
            .collect();
        (files, dirs)
    });
    let t = DirTree::parse(data)?;
    let want = (
        (t.files.iter())
            .map(|(n, c)| (n.as_bytes().to_vec(), c.0.to_vec()))
            .collect::<Vec<_>>(),
        (t.dirs.iter())
            .map(|(n, a, b)| (n.as_bytes().to_vec(), a.0.to_vec(), b.0.to_vec()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        in_place.as_ref().ok(),
        Some(&want),
        "parse_in_place reads what parse does"
    );
    assert_eq!(
        t.serialize(),
        data,
        "a parsed dirtree re-serialises exactly"
    );
    if let Ok(n) = n {
        assert_eq!(n, t.dirs.len(), "count_dirs agrees with parse");
    }
    Ok(t)
}

/// A `.dirmeta` object; the same bytes also as a bare-user
/// `user.ostreemeta` value `(uuua(ayay))` and as a bare-split-xattrs
/// `a(ayay)` list.
pub fn ostree_dirmeta(data: &[u8]) -> Result<DirMeta> {
    let _ = objects::parse_uuua(data, "user.ostreemeta");
    let _ = objects::parse_xattrs(data);
    let m = DirMeta::parse(data)?;
    assert_eq!(
        m.serialize(),
        data,
        "a parsed dirmeta re-serialises exactly"
    );
    Ok(m)
}

/// The content of a stored ostree commit stream (composefs-rs's format,
/// `ostree::shared`): the first 32 bytes name the commit expected, the
/// rest is the stream content; two object refs are available.
pub fn ostree_commit_stream(data: &[u8]) -> Result<()> {
    let Some((c, rest)) = data.split_first_chunk::<32>() else {
        return Ok(());
    };
    let alg = crate::fsverity::Algorithm::Sha256;
    let refs = [
        crate::fsverity::digest_bytes(alg, b"a"),
        crate::fsverity::digest_bytes(alg, b"b"),
    ];
    let objects = crate::ostree::shared::parse(rest, &refs, &Checksum(*c))?;
    // What parses is a commit whose tree a lookup index can be built of.
    let s = crate::ostree::commitstream::CommitStream::from_objects(&objects, Checksum(*c))?;
    let _ = crate::ostree::tree::commit_tree(&s);
    Ok(())
}

/// An archive-mode `.filez` object as a pull streams it: header length,
/// header `(tuuuusa(ayay))`, then raw-deflate content read through the
/// exact-length reader (at most 64 MiB of it), and the file checksum
/// computed. Also the bytes as a bare header.
pub fn ostree_fileheader(data: &[u8]) -> Result<(FileHeader, u64)> {
    if let Ok(h) = FileHeader::parse_archive(data) {
        assert_eq!(h.serialize_archive(), data, "a parsed header re-serialises");
        let _ = h.checksum(b"");
    }
    let _ = objects::split_filez_header(data);
    let obj = filez_object(Box::new(io::Cursor::new(data.to_vec())), "fuzz")?;
    let mut hasher = obj.header.checksum_hasher();
    let mut content = obj.content.into_reader().take(64 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("file content"),
        };
        sha2::Digest::update(&mut hasher, &buf[..k]);
        n += k as u64;
    }
    let _ = objects::finish_checksum(hasher);
    Ok((obj.header, n))
}

/// A `summary` file as a pull reads it, and the same bytes as a
/// `delta-indexes/` file.
pub fn ostree_summary(data: &[u8]) -> Result<Summary> {
    let _ = summary::parse_delta_index(data);
    let s = Summary::parse(data)?;
    for r in s.refs.values() {
        let _ = summary::delta_index_path(&r.commit);
    }
    Ok(s)
}

/// A delta sink that checks nothing and keeps nothing; read sources are
/// 256 KiB of zeros (a bspatch against them runs to the end).
#[derive(Default)]
struct NullSink {
    objects: u64,
}

impl DeltaSink for NullSink {
    fn metadata(&mut self, objtype: ObjType, _checksum: Checksum, data: Vec<u8>) -> Result<()> {
        self.objects += 1;
        match objtype {
            ObjType::DirTree => DirTree::parse(&data).map(drop),
            ObjType::DirMeta => DirMeta::parse(&data).map(drop),
            ObjType::Commit => Commit::parse(&data).map(drop),
            _ => Ok(()),
        }
    }

    fn file(&mut self, _checksum: Checksum, header: FileHeader, content: &[u8]) -> Result<()> {
        self.objects += 1;
        let _ = header.checksum(content);
        Ok(())
    }

    fn read_source(&mut self, _checksum: Checksum) -> Result<Vec<u8>> {
        Ok(vec![0u8; 256 << 10])
    }
}

/// A static delta superblock (plain or signed) as a pull reads it: parsed
/// and checked, its commit parsed, and its inline parts (`--inline`
/// deltas) verified, decompressed and run.
pub fn ostree_delta_superblock(data: &[u8]) -> Result<delta::Superblock> {
    let _ = delta::unwrap_signed(data);
    let sb = delta::parse_superblock(data)?;
    sb.parsed_commit()
        .expect("parse_superblock checked the commit");
    let _ = (sb.dir(), sb.part_path(0));
    for p in &sb.parts {
        let _ = delta::part_payload_limit(p);
        if let Some(raw) = &p.inline {
            let _ = delta::apply_part(p, raw, &mut NullSink::default());
        }
    }
    Ok(sb)
}

/// A static delta part. The input is `LEN` (u32, little-endian), a
/// superblock of `LEN` bytes, then a part file: the part's header is the
/// superblock's part 0 (made to match the part file's size and checksum,
/// which the pull checks first), the part is decompressed and its
/// operations run. For seeds, concatenate a real superblock and its part 0.
pub fn ostree_delta_part(data: &[u8]) -> Result<PartStats> {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        bail!("too short");
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        bail!("superblock length past the end");
    }
    let (sb, raw) = rest.split_at(len);
    let sb = delta::parse_superblock(sb)?;
    let Some(first) = sb.parts.first() else {
        bail!("the superblock has no parts");
    };
    let meta = PartMeta {
        size: raw.len() as u64,
        checksum: Checksum::of(raw),
        inline: None,
        ..first.clone()
    };
    let payload = delta::decompress_part(&meta, raw)?;
    delta::apply_payload(&meta, &payload, &mut NullSink::default())
}

/// What the detached metadata of [`ostree_detached_metadata`] is checked
/// against: a commit object and the keys that signed it.
pub struct SignedCommit {
    pub commit: Vec<u8>,
    pub keyring: Keyring,
    pub ed25519: Ed25519Keys,
}

impl SignedCommit {
    /// `commit`: the commit object's bytes; `gpg_keys`: OpenPGP public
    /// keys (armored or binary); `ed25519`: base64 public keys, one a line.
    pub fn new(commit: &[u8], gpg_keys: &[u8], ed25519: &str) -> Result<SignedCommit> {
        Ok(SignedCommit {
            commit: commit.to_vec(),
            keyring: Keyring::from_bytes(gpg_keys)?,
            ed25519: Ed25519Keys::parse_list(ed25519)?,
        })
    }
}

/// Detached metadata (`.commitmeta`, `summary.sig`) as a pull checks it:
/// normal form, then every OpenPGP and ed25519 signature verified over
/// `signed.commit` with `signed`'s keys (expiry judged at a fixed time,
/// so runs are reproducible). Returns how many signatures were good.
pub fn ostree_detached_metadata(data: &[u8], signed: &SignedCommit) -> Result<usize> {
    objects::check_dict("detached metadata", data)?;
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let g = signature::verify_gpg_at(&signed.commit, Some(data), &signed.keyring, now);
    let e = signature::verify_ed25519(&signed.commit, Some(data), &signed.ed25519);
    let _ = (g.is_unsigned(), g.require_good("fuzz").is_ok());
    let _ = (e.is_unsigned(), e.require_good("fuzz").is_ok());
    Ok(g.good.len() + e.good.len())
}
