//! Applying a static delta part: checking and decompressing the part file,
//! then running its operations.
//!
//! The payload `(a(uuu)aa(ayay)ayay)` holds a table of `(uid, gid, mode)`
//! (big-endian), a table of xattr lists, a blob of raw data and the
//! operations: one opcode byte each, followed by arguments as varints
//! (LEB128, at most 10 bytes):
//!
//! - `S` open-splice-and-close: the next object, whole from the blob. For
//!   a metadata object: `size, offset`. For a file: `mode index, xattrs
//!   index, size, offset`; the bytes are the content of a regular file or
//!   the target of a symlink.
//! - `o` open: the next object, a regular file: `mode index, xattrs index,
//!   size`; its content comes from the `w` or `B` operations that follow.
//! - `w` write: `size, offset`: append `size` bytes to the open file, from
//!   the read source at `offset` if one is set, else from the blob.
//! - `r` set-read-source: `offset` of a 32-byte checksum in the blob: the
//!   content of that file object (which the client already has, from the
//!   `from` commit) becomes the read source.
//! - `R` unset-read-source.
//! - `c` close: the open file is complete.
//! - `B` bspatch: `offset, size` of a bsdiff patch (Matthew Endsley's
//!   format: no header, control triples of 8-byte sign-magnitude
//!   little-endian integers each followed by its diff and extra bytes),
//!   applied to the read source; the result is the whole content of the
//!   open file.
//!
//! `S` and `c` also drop the read source, as ostree does.

use std::borrow::Cow;
use std::io::Read;

use anyhow::{Context, Result, anyhow, bail};

use super::PartMeta;
use super::frame::{self, var};
use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::objects::{FileHeader, MAX_METADATA_SIZE, Xattr, parse_xattrs};
use crate::tree::mode;

/// Largest decompressed part payload we accept, whatever the part declares
/// (ostree's `OSTREE_STATIC_DELTA_PART_MAX_USIZE_BYTES`).
pub const PART_MAX_PAYLOAD_SIZE: u64 = 512 << 20;

/// Largest file a part may produce (the content is held in memory).
pub const MAX_DELTA_FILE_SIZE: u64 = 2 << 30;

/// Memory the xz decoder may use (presets up to 9 need 65 MiB).
const XZ_MEMLIMIT: u64 = 256 << 20;

/// Where the objects a part produces go, and where the content of the
/// files it is a delta against comes from.
pub trait DeltaSink {
    /// A metadata object (dirtree, dirmeta, commit…) produced by the
    /// part. The caller verifies its checksum.
    fn metadata(&mut self, objtype: ObjType, checksum: Checksum, data: Vec<u8>) -> Result<()>;
    /// A file object: header (uid/gid/mode/xattrs/symlink target, `size` =
    /// content length) and content. The caller verifies its checksum.
    fn file(&mut self, checksum: Checksum, header: FileHeader, content: &[u8]) -> Result<()>;
    /// Content of a file object the client already holds (`set-read-source`,
    /// for writes and bspatch against the `from` commit).
    fn read_source(&mut self, checksum: Checksum) -> Result<Vec<u8>>;
}

/// How many operations of each kind a part ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartStats {
    pub open_splice_and_close: u64,
    pub open: u64,
    pub write: u64,
    pub set_read_source: u64,
    pub unset_read_source: u64,
    pub close: u64,
    pub bspatch: u64,
    /// Bytes `write` copied from read sources.
    pub bytes_from_source: u64,
}

/// Most bytes the decompressed payload of `meta` may have: its declared
/// uncompressed size plus generous room for the tables, operations and
/// symlink targets usize does not count (as ostree computes it), never more
/// than [`PART_MAX_PAYLOAD_SIZE`].
pub fn part_payload_limit(meta: &PartMeta) -> u64 {
    let usize_ = meta.uncompressed_size;
    let n = meta.objects.len() as u64;
    usize_
        .saturating_mul(2)
        .saturating_add(4096)
        .saturating_add(n.saturating_mul(256 + (64 << 10)))
        .saturating_add(usize_ / 32)
        .min(PART_MAX_PAYLOAD_SIZE)
}

/// Check a part file against its header (size, SHA-256) and return its
/// payload, decompressed.
pub fn decompress_part<'a>(meta: &PartMeta, raw: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    let i = meta.index;
    if raw.len() as u64 != meta.size {
        bail!(
            "delta part {i}: {} bytes, the superblock says {}",
            raw.len(),
            meta.size
        );
    }
    let actual = Checksum::of(raw);
    if actual != meta.checksum {
        bail!(
            "delta part {i}: checksum mismatch (expected {}, got {actual})",
            meta.checksum
        );
    }
    let Some((&kind, body)) = raw.split_first() else {
        bail!("delta part {i}: empty");
    };
    let limit = part_payload_limit(meta);
    match kind {
        0 => {
            if body.len() as u64 > limit {
                bail!(
                    "delta part {i}: payload of {} bytes exceeds the {limit} byte limit",
                    body.len()
                );
            }
            Ok(Cow::Borrowed(body))
        }
        b'x' => {
            let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                .map_err(|e| anyhow!("delta part {i}: xz decoder: {e}"))?;
            let mut dec = liblzma::bufread::XzDecoder::new_stream(body, stream);
            let mut out = Vec::new();
            (&mut dec)
                .take(limit.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|e| anyhow!("delta part {i}: bad xz data: {e}"))?;
            if out.len() as u64 > limit {
                bail!("delta part {i}: decompresses to more than the {limit} byte limit");
            }
            if dec.total_in() != body.len() as u64 {
                bail!(
                    "delta part {i}: {} bytes after the end of the xz stream",
                    body.len() as u64 - dec.total_in()
                );
            }
            Ok(Cow::Owned(out))
        }
        other => bail!("delta part {i}: unknown compression type {other:#04x}"),
    }
}

/// Verify the part file `raw` (size and SHA-256 from `meta`), decompress it
/// and run its operations, giving every object to `sink` in order. Every
/// object `meta` lists must be produced, once and in that order.
pub fn apply_part(meta: &PartMeta, raw: &[u8], sink: &mut dyn DeltaSink) -> Result<PartStats> {
    let payload = decompress_part(meta, raw)?;
    apply_payload(meta, &payload, sink)
}

/// Run the operations of an already decompressed part payload
/// `(a(uuu)aa(ayay)ayay)` (as [`decompress_part`] returns it).
pub fn apply_payload(
    meta: &PartMeta,
    payload: &[u8],
    sink: &mut dyn DeltaSink,
) -> Result<PartStats> {
    let i = meta.index;
    let m = frame::structure(
        &format!("delta part {i} payload"),
        payload,
        &[var(4), var(1), var(1), var(1)],
    )?;
    let modes = frame::fixed_array(&format!("delta part {i} modes"), m[0], 12)?
        .into_iter()
        .map(|c| {
            let u = |k: usize| u32::from_be_bytes(c[k..k + 4].try_into().expect("4 bytes"));
            (u(0), u(4), u(8))
        })
        .collect();
    let xattrs = frame::var_array(&format!("delta part {i} xattrs"), m[1], 1)?
        .into_iter()
        .enumerate()
        .map(|(n, x)| parse_xattrs(x).with_context(|| format!("delta part {i}: xattr list {n}")))
        .collect::<Result<Vec<_>>>()?;
    let mut exec = Exec {
        meta,
        blob: m[2],
        ops: m[3],
        pos: 0,
        modes,
        xattrs,
        next_object: 0,
        current: None,
        open: None,
        source: None,
        produced: 0,
        stats: PartStats::default(),
        sink,
    };
    exec.run()?;
    Ok(exec.stats)
}

/// A file being assembled by `o` … `c`.
struct OpenFile {
    checksum: Checksum,
    header: FileHeader,
    content: Vec<u8>,
}

struct Exec<'a, 's> {
    meta: &'a PartMeta,
    blob: &'a [u8],
    ops: &'a [u8],
    pos: usize,
    modes: Vec<(u32, u32, u32)>,
    xattrs: Vec<Vec<Xattr>>,
    next_object: usize,
    /// The object the last `S` or `o` started, for messages.
    current: Option<(ObjType, Checksum)>,
    open: Option<OpenFile>,
    source: Option<(Checksum, Vec<u8>)>,
    /// Bytes of objects produced so far (regular file content and metadata;
    /// symlinks count 0), bounded by the declared uncompressed size.
    produced: u64,
    stats: PartStats,
    sink: &'s mut dyn DeltaSink,
}

/// `len` bytes of `data` at `offset`, or an error.
fn sub<'d>(what: &str, data: &'d [u8], offset: u64, len: u64) -> Result<&'d [u8]> {
    let end = offset.checked_add(len);
    match end {
        Some(end) if end <= data.len() as u64 => Ok(&data[offset as usize..end as usize]),
        _ => bail!(
            "{what}: {len} bytes at offset {offset} are outside its {} bytes",
            data.len()
        ),
    }
}

/// Read a varint (LEB128: 7 bits a byte, least significant first, high bit
/// set on all but the last byte; at most 10 bytes) at `*pos`.
fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v: u64 = 0;
    for k in 0..10 {
        let Some(&b) = data.get(*pos) else {
            bail!("truncated varint argument");
        };
        *pos += 1;
        if k == 9 && b > 1 {
            bail!("varint argument overflows 64 bits");
        }
        v |= u64::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    // (not reached: the tenth byte either ends the varint or is rejected)
    bail!("varint argument longer than 10 bytes")
}

fn op_name(op: u8) -> &'static str {
    match op {
        b'S' => "open-splice-and-close",
        b'o' => "open",
        b'w' => "write",
        b'r' => "set-read-source",
        b'R' => "unset-read-source",
        b'c' => "close",
        b'B' => "bspatch",
        _ => "unknown",
    }
}

impl Exec<'_, '_> {
    fn run(&mut self) -> Result<()> {
        while let Some(&op) = self.ops.get(self.pos) {
            let at = self.pos;
            self.pos += 1;
            if let Err(e) = self.step(op) {
                let obj = match self.current {
                    Some((t, c)) => format!(", object {} {c}", t.name()),
                    None => String::new(),
                };
                return Err(e.context(format!(
                    "delta part {}: operation {:?} ({}) at byte {at} of the operations{obj}",
                    self.meta.index,
                    char::from(op),
                    op_name(op)
                )));
            }
        }
        let i = self.meta.index;
        if let Some(f) = &self.open {
            bail!(
                "delta part {i}: operations end with file {} still open",
                f.checksum
            );
        }
        if self.next_object != self.meta.objects.len() {
            bail!(
                "delta part {i}: lists {} objects but its operations produce {}",
                self.meta.objects.len(),
                self.next_object
            );
        }
        Ok(())
    }

    fn varint(&mut self) -> Result<u64> {
        read_varint(self.ops, &mut self.pos)
    }

    fn next_object(&mut self) -> Result<(ObjType, Checksum)> {
        if self.open.is_some() {
            bail!("an object is already open");
        }
        let Some(&o) = self.meta.objects.get(self.next_object) else {
            bail!(
                "the part lists only {} objects, operations produce more",
                self.meta.objects.len()
            );
        };
        self.next_object += 1;
        self.current = Some(o);
        Ok(o)
    }

    fn account(&mut self, n: u64) -> Result<()> {
        self.produced = self.produced.saturating_add(n);
        if self.produced > self.meta.uncompressed_size {
            bail!(
                "the part produces more than its declared {} bytes",
                self.meta.uncompressed_size
            );
        }
        Ok(())
    }

    /// A file header from the mode and xattr table indices that follow.
    fn content_header(&mut self) -> Result<FileHeader> {
        let mi = self.varint()?;
        let xi = self.varint()?;
        let Some(&(uid, gid, mode)) = usize::try_from(mi).ok().and_then(|i| self.modes.get(i))
        else {
            bail!("mode index {mi} out of range ({} modes)", self.modes.len());
        };
        let Some(xattrs) = usize::try_from(xi).ok().and_then(|i| self.xattrs.get(i)) else {
            bail!(
                "xattrs index {xi} out of range ({} xattr lists)",
                self.xattrs.len()
            );
        };
        Ok(FileHeader {
            size: 0,
            uid,
            gid,
            mode,
            rdev: 0,
            symlink: String::new(),
            xattrs: xattrs.clone(),
        })
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            b'S' => self.open_splice_and_close(),
            b'o' => self.open(),
            b'w' => self.write(),
            b'r' => {
                let offset = self.varint()?;
                let csum = Checksum::from_bytes(sub("blob", self.blob, offset, 32)?)?;
                let content = self
                    .sink
                    .read_source(csum)
                    .with_context(|| format!("reading source object {csum}"))?;
                self.source = Some((csum, content));
                self.stats.set_read_source += 1;
                Ok(())
            }
            b'R' => {
                self.source = None;
                self.stats.unset_read_source += 1;
                Ok(())
            }
            b'c' => self.close(),
            b'B' => self.bspatch(),
            other => bail!("unknown opcode {other:#04x}"),
        }
    }

    fn open_splice_and_close(&mut self) -> Result<()> {
        let (objtype, checksum) = self.next_object()?;
        if objtype != ObjType::File {
            if !objtype.is_meta() {
                bail!("a delta part cannot carry a {} object", objtype.name());
            }
            let size = self.varint()?;
            let offset = self.varint()?;
            if size > MAX_METADATA_SIZE as u64 {
                bail!("metadata object of {size} bytes (limit {MAX_METADATA_SIZE})");
            }
            let data = sub("blob", self.blob, offset, size)?.to_vec();
            self.account(size)?;
            self.sink.metadata(objtype, checksum, data)?;
        } else {
            let mut header = self.content_header()?;
            let size = self.varint()?;
            let offset = self.varint()?;
            let bytes = sub("blob", self.blob, offset, size)?;
            let content: &[u8] = if header.mode & mode::S_IFMT == mode::S_IFLNK {
                header.symlink = std::str::from_utf8(bytes)
                    .context("symlink target is not UTF-8")?
                    .to_string();
                &[]
            } else {
                if size > MAX_DELTA_FILE_SIZE {
                    bail!("file of {size} bytes (limit {MAX_DELTA_FILE_SIZE})");
                }
                self.account(size)?;
                header.size = size;
                bytes
            };
            header.validate()?;
            self.sink.file(checksum, header, content)?;
        }
        self.source = None;
        self.stats.open_splice_and_close += 1;
        Ok(())
    }

    fn open(&mut self) -> Result<()> {
        let (objtype, checksum) = self.next_object()?;
        if objtype != ObjType::File {
            bail!("cannot open a {} object for writing", objtype.name());
        }
        let mut header = self.content_header()?;
        let size = self.varint()?;
        if header.mode & mode::S_IFMT != mode::S_IFREG {
            bail!(
                "mode {:o} is not a regular file; only regular files can be opened",
                header.mode
            );
        }
        if size > MAX_DELTA_FILE_SIZE {
            bail!("file of {size} bytes (limit {MAX_DELTA_FILE_SIZE})");
        }
        self.account(size)?;
        header.size = size;
        header.validate()?;
        self.open = Some(OpenFile {
            checksum,
            header,
            content: Vec::with_capacity(size.min(1 << 20) as usize),
        });
        self.stats.open += 1;
        Ok(())
    }

    fn write(&mut self) -> Result<()> {
        let size = self.varint()?;
        let offset = self.varint()?;
        let Some(f) = self.open.as_mut() else {
            bail!("no file is open");
        };
        let remaining = f.header.size - f.content.len() as u64;
        if size > remaining {
            bail!(
                "writes {size} bytes, past the {} bytes the file declares",
                f.header.size
            );
        }
        let bytes = match &self.source {
            Some((c, s)) => {
                self.stats.bytes_from_source += size;
                sub(&format!("read source {c}"), s, offset, size)?
            }
            None => sub("blob", self.blob, offset, size)?,
        };
        f.content.extend_from_slice(bytes);
        self.stats.write += 1;
        Ok(())
    }

    fn bspatch(&mut self) -> Result<()> {
        let offset = self.varint()?;
        let len = self.varint()?;
        let patch = sub("blob", self.blob, offset, len)?;
        let Some(f) = self.open.as_mut() else {
            bail!("no file is open");
        };
        let Some((src_csum, src)) = &self.source else {
            bail!("no read source is set");
        };
        if !f.content.is_empty() {
            bail!(
                "bspatch after {} bytes were already written",
                f.content.len()
            );
        }
        let mut out = Vec::new();
        bsdiff::patch(src, &mut &patch[..], &mut out)
            .map_err(|e| anyhow!("bad bsdiff patch against {src_csum}: {e}"))?;
        if out.len() as u64 != f.header.size {
            bail!(
                "bsdiff patch produces {} bytes, the file declares {}",
                out.len(),
                f.header.size
            );
        }
        f.content = out;
        self.stats.bspatch += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let Some(f) = self.open.take() else {
            bail!("no file is open");
        };
        if f.content.len() as u64 != f.header.size {
            bail!(
                "file closed after {} of its {} bytes",
                f.content.len(),
                f.header.size
            );
        }
        self.sink.file(f.checksum, f.header, &f.content)?;
        self.source = None;
        self.stats.close += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ostree::objects::{DirMeta, serialize_xattrs};
    use crate::ostree::variant::V;

    #[derive(Default)]
    struct MemSink {
        sources: HashMap<Checksum, Vec<u8>>,
        meta: Vec<(ObjType, Checksum, Vec<u8>)>,
        files: Vec<(Checksum, FileHeader, Vec<u8>)>,
    }

    impl DeltaSink for MemSink {
        fn metadata(&mut self, objtype: ObjType, checksum: Checksum, data: Vec<u8>) -> Result<()> {
            if Checksum::of(&data) != checksum {
                bail!("metadata checksum mismatch");
            }
            self.meta.push((objtype, checksum, data));
            Ok(())
        }
        fn file(&mut self, checksum: Checksum, header: FileHeader, content: &[u8]) -> Result<()> {
            if header.checksum(content) != checksum {
                bail!("file checksum mismatch");
            }
            self.files.push((checksum, header, content.to_vec()));
            Ok(())
        }
        fn read_source(&mut self, checksum: Checksum) -> Result<Vec<u8>> {
            self.sources
                .get(&checksum)
                .cloned()
                .with_context(|| format!("no object {checksum}"))
        }
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// Operations: an opcode followed by varint arguments.
    fn op(code: u8, args: &[u64]) -> Vec<u8> {
        let mut out = vec![code];
        for &a in args {
            out.extend(varint(a));
        }
        out
    }

    fn payload(
        modes: &[(u32, u32, u32)],
        xattrs: &[Vec<Xattr>],
        blob: &[u8],
        ops: &[u8],
    ) -> Vec<u8> {
        let modes: Vec<u8> = modes
            .iter()
            .flat_map(|&(u, g, m)| [u.to_be_bytes(), g.to_be_bytes(), m.to_be_bytes()].concat())
            .collect();
        let xattrs: Vec<Vec<u8>> = xattrs.iter().map(|x| serialize_xattrs(x)).collect();
        V::Tuple(vec![
            V::Raw(&modes, 4),
            V::Array(xattrs.iter().map(|x| V::Raw(x, 1)).collect(), 1),
            V::Bytes(blob),
            V::Bytes(ops),
        ])
        .to_bytes()
    }

    fn part(objects: Vec<(ObjType, Checksum)>, payload: &[u8], xz: bool) -> (PartMeta, Vec<u8>) {
        let raw = if xz {
            let mut r = vec![b'x'];
            r.extend(liblzma::encode_all(payload, 6).unwrap());
            r
        } else {
            let mut r = vec![0];
            r.extend_from_slice(payload);
            r
        };
        let meta = PartMeta {
            index: 3,
            version: 0,
            checksum: Checksum::of(&raw),
            size: raw.len() as u64,
            uncompressed_size: 10 << 20,
            objects,
            inline: None,
        };
        (meta, raw)
    }

    fn reg(mode: u32, xattrs: Vec<Xattr>, content: &[u8]) -> (FileHeader, Checksum) {
        let h = FileHeader {
            size: content.len() as u64,
            uid: 1,
            gid: 2,
            mode: mode::S_IFREG | mode,
            rdev: 0,
            symlink: String::new(),
            xattrs,
        };
        let c = h.checksum(content);
        (h, c)
    }

    #[test]
    fn varints() {
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let b = varint(v);
            let mut pos = 0;
            assert_eq!(read_varint(&b, &mut pos).unwrap(), v);
            assert_eq!(pos, b.len());
            for cut in 0..b.len() {
                assert!(read_varint(&b[..cut], &mut 0).is_err());
            }
        }
        // non-minimal encodings are accepted, as ostree does
        assert_eq!(read_varint(&[0x81, 0x80, 0x00], &mut 0).unwrap(), 1);
        // more than 64 bits
        assert!(
            read_varint(
                &[0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>(),
                &mut 0
            )
            .is_err()
        );
        assert!(read_varint(&[0x80; 11], &mut 0).is_err());
    }

    #[test]
    fn splice_metadata_files_and_symlinks() {
        let dirmeta = DirMeta {
            uid: 0,
            gid: 0,
            mode: mode::S_IFDIR | 0o755,
            xattrs: vec![],
        }
        .serialize();
        let xa = vec![(b"user.a".to_vec(), b"1".to_vec())];
        let (fh, fc) = reg(0o640, xa.clone(), b"content");
        let lh = FileHeader {
            size: 0,
            uid: 1,
            gid: 2,
            mode: mode::S_IFLNK | 0o777,
            rdev: 0,
            symlink: "target".into(),
            xattrs: vec![],
        };
        let lc = lh.checksum(b"");
        let (eh, ec) = reg(0o644, vec![], b"");
        let mut blob = dirmeta.clone();
        blob.extend_from_slice(b"contenttarget");
        let d = dirmeta.len() as u64;
        let ops = [
            op(b'S', &[d, 0]),
            op(b'S', &[0, 1, 7, d]),
            op(b'S', &[1, 0, 6, d + 7]),
            op(b'S', &[2, 0, 0, 0]),
        ]
        .concat();
        let modes = [
            (1, 2, mode::S_IFREG | 0o640),
            (1, 2, mode::S_IFLNK | 0o777),
            (1, 2, mode::S_IFREG | 0o644),
        ];
        let objects = vec![
            (ObjType::DirMeta, Checksum::of(&dirmeta)),
            (ObjType::File, fc),
            (ObjType::File, lc),
            (ObjType::File, ec),
        ];
        for xz in [false, true] {
            let p = payload(&modes, &[vec![], xa.clone()], &blob, &ops);
            let (meta, raw) = part(objects.clone(), &p, xz);
            let mut sink = MemSink::default();
            let stats = apply_part(&meta, &raw, &mut sink).unwrap();
            assert_eq!(stats.open_splice_and_close, 4);
            assert_eq!(
                sink.meta,
                vec![(ObjType::DirMeta, Checksum::of(&dirmeta), dirmeta.clone())]
            );
            assert_eq!(sink.files[0], (fc, fh.clone(), b"content".to_vec()));
            assert_eq!(sink.files[1], (lc, lh.clone(), vec![]));
            assert_eq!(sink.files[2], (ec, eh.clone(), vec![]));
        }
    }

    #[test]
    fn bspatch_and_rollsum_writes() {
        let old: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut new = old.clone();
        for i in (0..new.len()).step_by(1000) {
            new[i] ^= 0x5a;
        }
        new.extend_from_slice(b"tail");
        let mut patch = Vec::new();
        bsdiff::diff(&old, &new, &mut patch).unwrap();
        let src = Checksum([9; 32]);
        let (_, newc) = reg(0o644, vec![], &new);
        // rollsum-style: blob bytes, then source ranges, then blob again
        let mut rolled = b"head".to_vec();
        rolled.extend_from_slice(&old[100..5000]);
        rolled.extend_from_slice(b"mid");
        rolled.extend_from_slice(&old[0..10]);
        let (_, rollc) = reg(0o644, vec![], &rolled);

        let mut blob = src.0.to_vec();
        let patch_at = blob.len() as u64;
        blob.extend_from_slice(&patch);
        let lit = blob.len() as u64;
        blob.extend_from_slice(b"headmid");
        let ops = [
            op(b'r', &[0]),
            op(b'o', &[0, 0, new.len() as u64]),
            op(b'B', &[patch_at, patch.len() as u64]),
            op(b'c', &[]),
            op(b'R', &[]),
            op(b'o', &[0, 0, rolled.len() as u64]),
            op(b'w', &[4, lit]),
            op(b'r', &[0]),
            op(b'w', &[4900, 100]),
            op(b'R', &[]),
            op(b'w', &[3, lit + 4]),
            op(b'r', &[0]),
            op(b'w', &[10, 0]),
            op(b'c', &[]),
        ]
        .concat();
        let p = payload(&[(1, 2, mode::S_IFREG | 0o644)], &[vec![]], &blob, &ops);
        let (meta, raw) = part(
            vec![(ObjType::File, newc), (ObjType::File, rollc)],
            &p,
            true,
        );
        let mut sink = MemSink::default();
        sink.sources.insert(src, old.clone());
        let stats = apply_part(&meta, &raw, &mut sink).unwrap();
        assert_eq!(stats.bspatch, 1);
        assert_eq!(stats.bytes_from_source, 4910);
        assert_eq!(sink.files[0].2, new);
        assert_eq!(sink.files[1].2, rolled);

        // the same patch against the wrong source fails the checksum, a
        // damaged patch is an error
        let mut sink = MemSink::default();
        sink.sources.insert(src, old[1..].to_vec());
        assert!(apply_part(&meta, &raw, &mut sink).is_err());
        for cut in [1, 10, 24, patch.len() / 2, patch.len() - 1] {
            let ops = [
                op(b'r', &[0]),
                op(b'o', &[0, 0, new.len() as u64]),
                op(b'B', &[patch_at, cut as u64]),
                op(b'c', &[]),
            ]
            .concat();
            let p = payload(&[(1, 2, mode::S_IFREG | 0o644)], &[vec![]], &blob, &ops);
            let (meta, raw) = part(vec![(ObjType::File, newc)], &p, false);
            let mut sink = MemSink::default();
            sink.sources.insert(src, old.clone());
            let e = format!("{:#}", apply_part(&meta, &raw, &mut sink).unwrap_err());
            assert!(e.contains("bspatch") && e.contains(&newc.to_hex()), "{e}");
        }
    }

    #[test]
    fn limits() {
        let (_, c) = reg(0o644, vec![], b"hello");
        let p = payload(
            &[(1, 2, mode::S_IFREG | 0o644)],
            &[vec![]],
            b"hello",
            &op(b'S', &[0, 0, 5, 0]),
        );
        let (mut meta, raw) = part(vec![(ObjType::File, c)], &p, false);
        apply_part(&meta, &raw, &mut MemSink::default()).unwrap();
        // produces more than declared
        meta.uncompressed_size = 4;
        let e = format!(
            "{:#}",
            apply_part(&meta, &raw, &mut MemSink::default()).unwrap_err()
        );
        assert!(e.contains("more than its declared"), "{e}");

        // a metadata object over the limit
        let ops = op(b'S', &[MAX_METADATA_SIZE as u64 + 1, 0]);
        let p = payload(&[], &[], b"", &ops);
        let (meta, raw) = part(vec![(ObjType::DirTree, c)], &p, false);
        let e = format!(
            "{:#}",
            apply_part(&meta, &raw, &mut MemSink::default()).unwrap_err()
        );
        assert!(e.contains("limit"), "{e}");
        // objects that cannot be in a part
        let (meta, raw) = part(
            vec![(ObjType::FileXattrs, c)],
            &payload(&[], &[], b"", &op(b'S', &[0, 0])),
            false,
        );
        assert!(apply_part(&meta, &raw, &mut MemSink::default()).is_err());

        // an xz bomb: a megabyte of zeros declared as nothing
        let (mut meta, raw) = part(vec![], &vec![0u8; 1 << 20], true);
        meta.uncompressed_size = 0;
        let e = format!(
            "{:#}",
            apply_part(&meta, &raw, &mut MemSink::default()).unwrap_err()
        );
        assert!(e.contains("more than the 4096 byte limit"), "{e}");
        // uncompressed, likewise
        let (mut meta, raw) = part(vec![], &vec![0u8; 5000], false);
        meta.uncompressed_size = 0;
        assert!(apply_part(&meta, &raw, &mut MemSink::default()).is_err());
        assert_eq!(
            part_payload_limit(&PartMeta {
                uncompressed_size: u64::MAX,
                ..meta
            }),
            PART_MAX_PAYLOAD_SIZE
        );
    }

    #[test]
    fn truncated_and_damaged_parts() {
        let (_, c) = reg(0o644, vec![], b"hello");
        let p = payload(
            &[(1, 2, mode::S_IFREG | 0o644)],
            &[vec![]],
            b"hello",
            &op(b'S', &[0, 0, 5, 0]),
        );
        let (meta, raw) = part(vec![(ObjType::File, c)], &p, true);
        for n in 0..raw.len() {
            let r = &raw[..n];
            let m = PartMeta {
                checksum: Checksum::of(r),
                size: n as u64,
                ..meta.clone()
            };
            assert!(apply_part(&m, r, &mut MemSink::default()).is_err(), "{n}");
        }
        let (meta, raw) = part(vec![(ObjType::File, c)], &p, false);
        for n in 0..raw.len() {
            let r = &raw[..n];
            let m = PartMeta {
                checksum: Checksum::of(r),
                size: n as u64,
                ..meta.clone()
            };
            assert!(apply_part(&m, r, &mut MemSink::default()).is_err(), "{n}");
            for flip in [1u8, 0x80] {
                let mut r = raw.clone();
                r[n] ^= flip;
                let m = PartMeta {
                    checksum: Checksum::of(&r),
                    ..meta.clone()
                };
                let _ = apply_part(&m, &r, &mut MemSink::default());
            }
        }
        let mut bad = raw.clone();
        bad[3] ^= 1;
        let e = format!(
            "{:#}",
            apply_part(&meta, &bad, &mut MemSink::default()).unwrap_err()
        );
        assert!(e.contains("delta part 3: checksum mismatch"), "{e}");
    }
}
