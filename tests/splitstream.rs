//! Library-level splitstream tests: writing and reading back through a real
//! repository, the on-disk layout checked by hand, and hostile splitstreams
//! crafted byte by byte (truncations, flips, lying lengths and indices) that
//! must be refused with an error, never a panic.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use composefs::fsverity::{Algorithm, ObjectId, digest_bytes};
use composefs::repository::{Lock, Repository};
use composefs::splitstream::{FrameCoding, Piece, SplitStreamReader, content_type};

use common::pseudo_random;

/// A piece of a stream, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum P {
    Inline(Vec<u8>),
    External(ObjectId),
}

/// Walk a stream, merging adjacent inline pieces; also returns the largest
/// inline piece seen.
fn walk(r: &mut SplitStreamReader) -> anyhow::Result<(Vec<P>, usize)> {
    let mut out: Vec<P> = Vec::new();
    let mut largest = 0;
    while let Some(piece) = r.next_piece()? {
        match piece {
            Piece::Inline(b) => {
                largest = largest.max(b.len());
                if let Some(P::Inline(prev)) = out.last_mut() {
                    prev.extend_from_slice(b);
                } else {
                    out.push(P::Inline(b.to_vec()));
                }
            }
            Piece::External(id) => out.push(P::External(id)),
        }
    }
    Ok((out, largest))
}

fn new_repo(alg: Algorithm) -> (tempfile::TempDir, Repository) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&tmp.path().join("repo"), alg).unwrap();
    (tmp, repo)
}

fn object_count(repo: &Repository) -> usize {
    common::count_files(&repo.path().join("objects"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

// ---------------------------------------------------------------------------
// Round trips through the writer
// ---------------------------------------------------------------------------

#[test]
fn write_then_read_back() {
    let (_tmp, repo) = new_repo(Algorithm::Sha512);
    let big = pseudo_random(1, 10_000);
    let other = pseudo_random(2, 300);

    // A child stream to refer to by name.
    let mut child = repo.stream_writer(content_type::OCI_CONFIG).unwrap();
    child.write_inline(b"child stream").unwrap();
    let child_id = repo.commit_stream(child, "child-content", None).unwrap();

    let mut w = repo.stream_writer(content_type::OCI_LAYER).unwrap();
    w.write_inline(b"hello ").unwrap();
    w.write_inline(b"world").unwrap();
    let big_id = w.write_external(&big[..], big.len() as u64).unwrap();
    assert_eq!(big_id, digest_bytes(Algorithm::Sha512, &big));
    w.write_inline(b"|").unwrap();
    let other_id = w.write_external(&other[..], other.len() as u64).unwrap();
    w.write_object_ref(big_id, big.len() as u64).unwrap(); // the same object again
    w.write_inline(b"tail").unwrap();
    w.add_named_ref("zeta", child_id).unwrap();
    w.add_named_ref("alpha", child_id).unwrap();
    w.add_named_ref("config", other_id).unwrap();
    assert_eq!(w.size(), (11 + 10_000 + 1 + 300 + 10_000 + 4) as u64);
    let id = repo
        .commit_stream(w, "parent-content", Some("test/parent"))
        .unwrap();

    let mut want_bytes = b"hello world".to_vec();
    want_bytes.extend_from_slice(&big);
    want_bytes.push(b'|');
    want_bytes.extend_from_slice(&other);
    want_bytes.extend_from_slice(&big);
    want_bytes.extend_from_slice(b"tail");

    let mut r = repo.open_stream_object(&id).unwrap();
    assert_eq!(r.algorithm, Algorithm::Sha512);
    assert_eq!(r.content_type, content_type::OCI_LAYER);
    assert_eq!(r.stream_size, want_bytes.len() as u64);
    assert_eq!(
        r.object_refs(),
        &[big_id, other_id],
        "object refs are not de-duplicated in order of first use"
    );
    assert_eq!(r.stream_refs(), &[child_id, other_id]);
    let mut named: Vec<(String, ObjectId)> = r.named_refs().to_vec();
    named.sort();
    assert_eq!(
        named,
        vec![
            ("alpha".to_string(), child_id),
            ("config".to_string(), other_id),
            ("zeta".to_string(), child_id)
        ]
    );
    let (pieces, _) = walk(&mut r).unwrap();
    assert_eq!(
        pieces,
        vec![
            P::Inline(b"hello world".to_vec()),
            P::External(big_id),
            P::Inline(b"|".to_vec()),
            P::External(other_id),
            P::External(big_id),
            P::Inline(b"tail".to_vec()),
        ]
    );
    // A finished walk stays finished.
    assert!(r.next_piece().unwrap().is_none());

    let mut out = Vec::new();
    let (_, mut by_ref) = repo.open_stream("test/parent").unwrap();
    assert_eq!(
        by_ref.cat(&repo, &mut out).unwrap(),
        want_bytes.len() as u64
    );
    assert_eq!(out, want_bytes);
    let mut out = Vec::new();
    repo.open_stream("parent-content")
        .unwrap()
        .1
        .cat(&repo, &mut out)
        .unwrap();
    assert_eq!(out, want_bytes);
    let mut out = Vec::new();
    repo.open_stream_object(&child_id)
        .unwrap()
        .cat(&repo, &mut out)
        .unwrap();
    assert_eq!(out, b"child stream");

    // Objects: big, other, child stream, parent stream.
    assert_eq!(object_count(&repo), 4);
    let stream_file = std::fs::read(repo.object_path(&id)).unwrap();
    assert_eq!(digest_bytes(Algorithm::Sha512, &stream_file), id);
    check_layout_by_hand(
        &stream_file,
        &[big_id, other_id],
        &[child_id, other_id],
        want_bytes.len(),
    );
}

/// Decode a writer's output following the documented format, independently
/// of the reader.
fn check_layout_by_hand(f: &[u8], objects: &[ObjectId], streams: &[ObjectId], size: usize) {
    assert_eq!(&f[..11], b"SplitStream");
    assert_eq!(f[11], 0, "version");
    assert_eq!(f[14], 2, "algorithm id (sha512)");
    assert_eq!(f[15], 12, "lg_blocksize");
    let info = u64_at(f, 16) as usize..u64_at(f, 24) as usize;
    assert!(info.end - info.start >= 80);
    let i = &f[info.start..];
    let range = |k: usize| u64_at(i, k * 16) as usize..u64_at(i, k * 16 + 8) as usize;
    let (stream_refs, object_refs, stream, named) = (range(0), range(1), range(2), range(3));
    assert_eq!(u64_at(i, 64), content_type::OCI_LAYER);
    assert_eq!(u64_at(i, 72) as usize, size);
    let flat = |ids: &[ObjectId]| {
        ids.iter()
            .flat_map(|i| i.as_bytes().to_vec())
            .collect::<Vec<u8>>()
    };
    assert_eq!(
        &f[stream_refs],
        &flat(streams)[..],
        "stream refs are a flat array of digests"
    );
    assert_eq!(
        &f[object_refs],
        &flat(objects)[..],
        "object refs are a flat array of digests"
    );
    let named_text = zstd::decode_all(&f[named]).unwrap();
    let mut records: Vec<&[u8]> = named_text
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .collect();
    records.sort();
    assert_eq!(records, vec![&b"0:alpha"[..], b"0:zeta", b"1:config"]);
    assert!(named_text.ends_with(b"\0"));
    // Chunks: i64 < 0 => that many inline bytes; >= 0 => object index.
    let raw = zstd::decode_all(&f[stream]).unwrap();
    let mut at = 0;
    let mut total = 0usize;
    let mut indices = Vec::new();
    while at < raw.len() {
        let v = i64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
        at += 8;
        if v < 0 {
            at += v.unsigned_abs() as usize;
            total += v.unsigned_abs() as usize;
        } else {
            indices.push(v);
            total += if v == 0 { 10_000 } else { 300 };
        }
    }
    assert_eq!(at, raw.len());
    assert_eq!(indices, vec![0, 1, 0]);
    assert_eq!(total, size);
}

#[test]
fn long_inline_data_comes_back_in_bounded_pieces() {
    let (_tmp, repo) = new_repo(Algorithm::Sha512);
    let data = pseudo_random(3, (5 << 20) / 2 + 7);
    let mut w = repo.stream_writer(content_type::OCI_BLOB).unwrap();
    for part in data.chunks(300_001) {
        w.write_inline(part).unwrap();
    }
    let id = w.finish().unwrap();
    assert_eq!(object_count(&repo), 1, "inline data created objects");
    let mut r = repo.open_stream_object(&id).unwrap();
    let (pieces, largest) = walk(&mut r).unwrap();
    assert_eq!(pieces, vec![P::Inline(data.clone())]);
    assert!(
        largest <= 64 * 1024,
        "an inline piece of {largest} bytes was handed out"
    );
    let mut out = Vec::new();
    repo.open_stream_object(&id)
        .unwrap()
        .cat(&repo, &mut out)
        .unwrap();
    assert_eq!(out, data);
}

#[test]
fn large_external_objects_are_streamed() {
    let (_tmp, repo) = new_repo(Algorithm::Sha256);
    let data = pseudo_random(4, (5 << 20) + 123);
    let mut w = repo.stream_writer(content_type::OCI_BLOB).unwrap();
    let id = w.write_external(&data[..], data.len() as u64).unwrap();
    assert_eq!(id, digest_bytes(Algorithm::Sha256, &data));
    assert_eq!(std::fs::read(repo.object_path(&id)).unwrap(), data);
    // Same content again: no second object.
    let id2 = w.write_external(&data[..], data.len() as u64).unwrap();
    assert_eq!(id, id2);
    let sid = w.finish().unwrap();
    assert_eq!(object_count(&repo), 2);
    let mut r = repo.open_stream_object(&sid).unwrap();
    assert_eq!(r.object_refs(), &[id]);
    let (pieces, _) = walk(&mut r).unwrap();
    assert_eq!(pieces, vec![P::External(id), P::External(id)]);
    let mut out = Vec::new();
    repo.open_stream_object(&sid)
        .unwrap()
        .cat(&repo, &mut out)
        .unwrap();
    assert_eq!(out.len(), 2 * data.len());
    assert!(out[..data.len()] == data[..] && out[data.len()..] == data[..]);
}

#[test]
fn short_external_input_is_an_error_and_stores_nothing() {
    let (_tmp, repo) = new_repo(Algorithm::Sha512);
    for (have, claim) in [
        (10usize, 100u64),
        (0, 65),
        (3 << 20, 4 << 20),
        ((4 << 20) + 1, (5 << 20)),
    ] {
        let before = object_count(&repo);
        let data = pseudo_random(have as u64, have);
        let mut w = repo.stream_writer(content_type::OCI_BLOB).unwrap();
        let err = w.write_external(&data[..], claim).unwrap_err();
        let io = err
            .downcast_ref::<std::io::Error>()
            .unwrap_or_else(|| panic!("not an io::Error: {err:#}"));
        assert_eq!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof,
            "{have} of {claim} bytes: {err:#}"
        );
        drop(w);
        assert_eq!(
            object_count(&repo),
            before,
            "{have} of {claim} bytes: a partial object was stored"
        );
    }
    // A longer input: only `size` bytes are taken.
    let data = pseudo_random(5, 1000);
    let mut w = repo.stream_writer(content_type::OCI_BLOB).unwrap();
    let id = w.write_external(&data[..], 500).unwrap();
    assert_eq!(id, digest_bytes(Algorithm::Sha512, &data[..500]));
}

#[test]
fn empty_stream_and_bad_named_ref() {
    let (_tmp, repo) = new_repo(Algorithm::Sha512);
    let mut w = repo.stream_writer(0).unwrap();
    assert!(
        w.add_named_ref("bad\0name", ObjectId::zero(Algorithm::Sha512))
            .is_err()
    );
    let id = w.finish().unwrap();
    let mut r = repo.open_stream_object(&id).unwrap();
    assert_eq!(r.stream_size, 0);
    assert!(r.named_refs().is_empty() && r.object_refs().is_empty() && r.stream_refs().is_empty());
    assert!(r.next_piece().unwrap().is_none());
    let mut out = Vec::new();
    assert_eq!(
        repo.open_stream_object(&id)
            .unwrap()
            .cat(&repo, &mut out)
            .unwrap(),
        0
    );
    assert!(out.is_empty());
}

#[test]
fn gc_follows_named_stream_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("repo");
    let child_data = pseudo_random(6, 5000);
    let (child_id, child_obj, parent_id) = {
        let repo = Repository::init(&path, Algorithm::Sha512).unwrap();
        let mut c = repo.stream_writer(content_type::OCI_CONFIG).unwrap();
        let obj = c
            .write_external(&child_data[..], child_data.len() as u64)
            .unwrap();
        let child_id = repo.commit_stream(c, "child", None).unwrap();
        let mut p = repo.stream_writer(content_type::OCI_MANIFEST).unwrap();
        p.write_inline(b"manifest").unwrap();
        p.add_named_ref("config", child_id).unwrap();
        let parent_id = repo.commit_stream(p, "parent", Some("root")).unwrap();
        // An unreferenced stream with its own object.
        let mut g = repo.stream_writer(content_type::OCI_BLOB).unwrap();
        g.write_external(&pseudo_random(7, 999)[..], 999).unwrap();
        repo.commit_stream(g, "garbage", None).unwrap();
        (child_id, obj, parent_id)
    };
    let repo = Repository::open_locked(&path, Lock::Exclusive).unwrap();
    let report = composefs::maintenance::gc::gc(&repo, false).unwrap();
    assert_eq!(report.objects_removed, 2, "{report:?}");
    assert_eq!(report.objects_kept, 3, "{report:?}");
    assert_eq!(report.streams_removed, vec!["garbage".to_string()]);
    for id in [child_id, child_obj, parent_id] {
        assert!(
            repo.has_object(&id).unwrap(),
            "gc removed {id:?}, reachable through a named ref"
        );
    }
    let mut out = Vec::new();
    repo.open_stream("child")
        .unwrap()
        .1
        .cat(&repo, &mut out)
        .unwrap();
    assert_eq!(out, child_data);
    let fsck = composefs::maintenance::fsck::fsck(&repo, &|_, _| {}).unwrap();
    assert!(fsck.ok(), "{:?}", fsck.problems);
}

// ---------------------------------------------------------------------------
// Hand-crafted splitstreams
// ---------------------------------------------------------------------------

/// One chunk of the stream section.
enum C<'a> {
    Inline(&'a [u8]),
    Ext(i64),
    /// A raw chunk header value with no data after it.
    Raw(i64),
}

fn chunks(cs: &[C]) -> Vec<u8> {
    let mut v = Vec::new();
    for c in cs {
        match c {
            C::Inline(b) => {
                v.extend_from_slice(&(-(b.len() as i64)).to_le_bytes());
                v.extend_from_slice(b);
            }
            C::Ext(i) | C::Raw(i) => v.extend_from_slice(&i.to_le_bytes()),
        }
    }
    v
}

/// The pieces of a splitstream file, laid out header, info, stream refs,
/// object refs, named refs, stream (as the writer does).
#[derive(Clone)]
struct Craft {
    alg_id: u8,
    stream_refs: Vec<u8>,
    object_refs: Vec<u8>,
    named: Vec<u8>,
    stream: Vec<u8>,
    content_type: u64,
    stream_size: u64,
    info_extra: usize,
}

impl Craft {
    fn build(&self) -> Vec<u8> {
        let info_len = 80 + self.info_extra;
        let mut at = 32 + info_len as u64;
        let mut section = |len: usize| {
            let r = (at, at + len as u64);
            at += len as u64;
            r
        };
        let sr = section(self.stream_refs.len());
        let or = section(self.object_refs.len());
        let nr = section(self.named.len());
        let st = section(self.stream.len());
        let mut f = Vec::new();
        f.extend_from_slice(b"SplitStream");
        f.push(0);
        f.extend_from_slice(&[0, 0]);
        f.push(self.alg_id);
        f.push(12);
        f.extend_from_slice(&32u64.to_le_bytes());
        f.extend_from_slice(&(32 + info_len as u64).to_le_bytes());
        for v in [
            sr.0,
            sr.1,
            or.0,
            or.1,
            st.0,
            st.1,
            nr.0,
            nr.1,
            self.content_type,
            self.stream_size,
        ] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend(std::iter::repeat_n(0xAAu8, self.info_extra));
        f.extend_from_slice(&self.stream_refs);
        f.extend_from_slice(&self.object_refs);
        f.extend_from_slice(&self.named);
        f.extend_from_slice(&self.stream);
        f
    }

    /// Offset where the stream section starts.
    fn stream_start(&self) -> usize {
        32 + 80
            + self.info_extra
            + self.stream_refs.len()
            + self.object_refs.len()
            + self.named.len()
    }
}

/// A repository with two stored objects, and a valid crafted stream using them.
struct Fixture {
    _tmp: tempfile::TempDir,
    repo: Repository,
    file: PathBuf,
    x: ObjectId,
    y: ObjectId,
    x_data: Vec<u8>,
    y_data: Vec<u8>,
    good: Craft,
    good_bytes: Vec<u8>,
}

fn fixture() -> Fixture {
    let (tmp, repo) = new_repo(Algorithm::Sha512);
    let x_data = pseudo_random(10, 100);
    let y_data = pseudo_random(11, 70);
    let x = repo.store_bytes(&x_data).unwrap();
    let y = repo.store_bytes(&y_data).unwrap();
    let raw = chunks(&[
        C::Inline(b"hello "),
        C::Ext(0),
        C::Inline(b"world"),
        C::Ext(1),
        C::Ext(0),
        C::Inline(b"!"),
    ]);
    let mut refs = x.as_bytes().to_vec();
    refs.extend_from_slice(y.as_bytes());
    let good = Craft {
        alg_id: 2,
        stream_refs: y.as_bytes().to_vec(),
        object_refs: refs,
        named: zstd::bulk::compress(b"0:child\0", 3).unwrap(),
        stream: zstd::bulk::compress(&raw, 3).unwrap(),
        content_type: content_type::OCI_LAYER,
        stream_size: (6 + 100 + 5 + 70 + 100 + 1) as u64,
        info_extra: 0,
    };
    let mut good_bytes = b"hello ".to_vec();
    good_bytes.extend_from_slice(&x_data);
    good_bytes.extend_from_slice(b"world");
    good_bytes.extend_from_slice(&y_data);
    good_bytes.extend_from_slice(&x_data);
    good_bytes.push(b'!');
    let file = tmp.path().join("crafted");
    Fixture {
        _tmp: tmp,
        repo,
        file,
        x,
        y,
        x_data,
        y_data,
        good,
        good_bytes,
    }
}

/// What reading a crafted file gives: the error of the first step that
/// failed (open, walk or cat) or the reassembled bytes. A panic anywhere is
/// reported as `Err("PANIC ...")`.
fn read_crafted(fx: &Fixture, bytes: &[u8], alg: Algorithm) -> Result<Vec<u8>, String> {
    // An anonymous in-memory file per case: fast, and no ext4 flush on truncate.
    let mem = memfile(bytes);
    let open = || {
        let mut f = mem.try_clone().unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    };
    let res = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<u8>, String> {
        let mut r = SplitStreamReader::new(open(), alg).map_err(|e| format!("open: {e:#}"))?;
        let (pieces, _) = walk(&mut r).map_err(|e| format!("walk: {e:#}"))?;
        let mut r = SplitStreamReader::new(open(), alg).map_err(|e| format!("reopen: {e:#}"))?;
        let mut out = Vec::new();
        r.cat(&fx.repo, &mut out)
            .map_err(|e| format!("cat: {e:#}"))?;
        // The walk and cat agree.
        let mut walked = Vec::new();
        for p in pieces {
            match p {
                P::Inline(b) => walked.extend_from_slice(&b),
                P::External(id) => {
                    let mut f = fx
                        .repo
                        .open_object(&id)
                        .map_err(|e| format!("walk object: {e:#}"))?;
                    f.read_to_end(&mut walked).unwrap();
                }
            }
        }
        assert_eq!(walked, out, "walking and cat disagree");
        Ok(out)
    }));
    match res {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("PANIC {}", msg.unwrap_or_default()))
        }
    }
}

/// A `memfd` holding `bytes`.
fn memfile(bytes: &[u8]) -> File {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::memfd_create(c"splitstream-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(
        fd >= 0,
        "memfd_create failed: {}",
        std::io::Error::last_os_error()
    );
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(bytes).unwrap();
    f
}

fn assert_no_panic(res: &Result<Vec<u8>, String>, what: &str) {
    if let Err(e) = res {
        assert!(!e.starts_with("PANIC"), "{what}: {e}");
    }
}

fn expect_err(fx: &Fixture, bytes: &[u8], what: &str, words: &[&str]) {
    let res = read_crafted(fx, bytes, Algorithm::Sha512);
    assert_no_panic(&res, what);
    let err = res.err().unwrap_or_else(|| panic!("{what}: accepted"));
    common::assert_mentions(&err, words, what);
}

#[test]
fn crafted_stream_matches_the_reader() {
    let fx = fixture();
    let bytes = fx.good.build();
    assert_eq!(
        read_crafted(&fx, &bytes, Algorithm::Sha512).unwrap(),
        fx.good_bytes
    );
    // Through the repository as well, with the metadata intact.
    let id = fx.repo.store_bytes(&bytes).unwrap();
    let r = fx.repo.open_stream_object(&id).unwrap();
    assert_eq!(r.object_refs(), &[fx.x, fx.y]);
    assert_eq!(r.named_refs(), &[("child".to_string(), fx.y)]);
    assert_eq!(r.content_type, content_type::OCI_LAYER);
    assert_eq!((fx.x_data.len(), fx.y_data.len()), (100, 70));
    // A larger info section is accepted (readers ignore the extra).
    let mut c = fx.good.clone();
    c.info_extra = 24;
    assert_eq!(
        read_crafted(&fx, &c.build(), Algorithm::Sha512).unwrap(),
        fx.good_bytes
    );
    // So are empty named refs records and no named refs at all.
    let mut c = fx.good.clone();
    c.named = zstd::bulk::compress(b"\0\x000:child\0\0", 3).unwrap();
    assert_eq!(
        read_crafted(&fx, &c.build(), Algorithm::Sha512).unwrap(),
        fx.good_bytes
    );
    c.named.clear();
    assert_eq!(
        read_crafted(&fx, &c.build(), Algorithm::Sha512).unwrap(),
        fx.good_bytes
    );
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let fx = fixture();
    let bytes = fx.good.build();
    for len in 0..bytes.len() {
        let res = read_crafted(&fx, &bytes[..len], Algorithm::Sha512);
        assert_no_panic(
            &res,
            &format!("truncated to {len} of {} bytes", bytes.len()),
        );
        assert!(
            res.is_err(),
            "truncated to {len} of {} bytes: accepted",
            bytes.len()
        );
    }
}

/// The stream section cut short but every range consistent with the file:
/// never panic, and never hand out wrong bytes.
#[test]
fn truncated_compressed_chunks_never_give_wrong_bytes() {
    let fx = fixture();
    let full = fx.good.stream.clone();
    let raw = zstd::decode_all(&full[..]).unwrap();
    let mut accepted = Vec::new();
    for k in 0..full.len() {
        let mut c = fx.good.clone();
        c.stream = full[..k].to_vec();
        let res = read_crafted(&fx, &c.build(), Algorithm::Sha512);
        assert_no_panic(&res, &format!("zstd frame cut to {k} bytes"));
        if let Ok(b) = res {
            assert_eq!(
                b, fx.good_bytes,
                "zstd frame cut to {k} bytes gave different bytes"
            );
            accepted.push(k);
        }
    }
    // Uncompressed chunk data cut at every offset, re-compressed as a valid frame.
    for k in 0..raw.len() {
        let mut c = fx.good.clone();
        c.stream = zstd::bulk::compress(&raw[..k], 3).unwrap();
        let res = read_crafted(&fx, &c.build(), Algorithm::Sha512);
        assert_no_panic(&res, &format!("chunks cut to {k} bytes"));
        assert!(
            res.is_err(),
            "chunks cut to {k} of {} bytes: accepted",
            raw.len()
        );
    }
    assert!(
        accepted.len() <= 8,
        "many cut frames were accepted: {accepted:?}"
    );
}

#[test]
fn byte_flips_in_header_info_and_refs_never_panic() {
    let fx = fixture();
    let bytes = fx.good.build();
    let end = fx.good.stream_start();
    let mut accepted = 0;
    for at in 0..end {
        for mask in [0x01u8, 0x10, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[at] ^= mask;
            let res = read_crafted(&fx, &b, Algorithm::Sha512);
            assert_no_panic(&res, &format!("byte {at} ^ {mask:#x}"));
            if let Ok(out) = res {
                // Header and refs hold no content: if accepted, the content is intact.
                assert_eq!(
                    out, fx.good_bytes,
                    "byte {at} ^ {mask:#x} changed the content silently"
                );
                accepted += 1;
            }
        }
    }
    assert!(
        accepted > 0,
        "even flips in unused fields (flags, content type) were refused"
    );
    // Every bit of the flags, content type and stream refs is ignored by cat.
    for at in [12usize, 13, 32 + 64, 32 + 65, 112, 112 + 63] {
        let mut b = bytes.clone();
        b[at] ^= 0xff;
        assert_eq!(
            read_crafted(&fx, &b, Algorithm::Sha512).unwrap(),
            fx.good_bytes,
            "byte {at}"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let fx = fixture();
    let bytes = fx.good.build();
    let noise = pseudo_random(99, 4 * 3000);
    for case in 0..3000 {
        let r = &noise[case * 4..case * 4 + 4];
        let mut b = bytes.clone();
        let flips = 1 + (r[0] % 4) as usize;
        for i in 0..flips {
            let at =
                (u16::from_le_bytes([r[1], r[2].wrapping_add(i as u8 * 31)]) as usize) % b.len();
            b[at] ^= r[3] | 1;
        }
        let res = read_crafted(&fx, &b, Algorithm::Sha512);
        assert_no_panic(&res, &format!("random case {case}"));
    }
    // Whole files of noise, with and without a valid header in front.
    for case in 0..200u64 {
        let n = (case as usize * 37) % 600;
        let junk = pseudo_random(5000 + case, n);
        assert_no_panic(
            &read_crafted(&fx, &junk, Algorithm::Sha512),
            &format!("noise {case}"),
        );
        let mut b = bytes[..32].to_vec();
        b.extend_from_slice(&junk);
        assert_no_panic(
            &read_crafted(&fx, &b, Algorithm::Sha512),
            &format!("header + noise {case}"),
        );
        let mut b = bytes[..fx.good.stream_start()].to_vec();
        b.extend_from_slice(&junk);
        assert_no_panic(
            &read_crafted(&fx, &b, Algorithm::Sha512),
            &format!("valid prefix + noise {case}"),
        );
    }
}

#[test]
fn inline_chunk_longer_than_the_stream_is_refused() {
    let fx = fixture();
    let payload = vec![7u8; 100];
    for (what, cs, size) in [
        (
            "one chunk of 100 in a 10-byte stream",
            vec![C::Inline(&payload)],
            10u64,
        ),
        (
            "two chunks of 6 in a 10-byte stream",
            vec![C::Inline(&payload[..6]), C::Inline(&payload[..6])],
            10,
        ),
        ("i64::MIN inline length", vec![C::Raw(i64::MIN)], 1 << 40),
        ("-(2^62) inline length", vec![C::Raw(-(1i64 << 62))], 1000),
        (
            "inline length with no stream size",
            vec![C::Inline(&payload[..1])],
            0,
        ),
    ] {
        let mut c = fx.good.clone();
        c.stream = zstd::bulk::compress(&chunks(&cs), 3).unwrap();
        c.stream_size = size;
        let words: &[&str] = if size == 1 << 40 {
            &["truncated", "exceeds"]
        } else {
            &["exceeds"]
        };
        expect_err(&fx, &c.build(), what, words);
    }
    // An inline chunk whose data is missing.
    let mut c = fx.good.clone();
    let mut raw = chunks(&[C::Raw(-50)]);
    raw.extend_from_slice(&[1u8; 20]);
    c.stream = zstd::bulk::compress(&raw, 3).unwrap();
    c.stream_size = 50;
    expect_err(
        &fx,
        &c.build(),
        "inline chunk of 50 with 20 bytes",
        &["truncated", "ends"],
    );
    // A chunk header cut short.
    let mut c = fx.good.clone();
    c.stream = zstd::bulk::compress(&[0xff, 0xff, 0xff], 3).unwrap();
    expect_err(&fx, &c.build(), "3-byte chunk header", &["chunk header"]);
}

#[test]
fn object_index_out_of_range_is_refused() {
    let fx = fixture();
    for (what, idx, refs) in [
        ("index 2 of 2", 2i64, 2usize),
        ("index 0 of none", 0, 0),
        ("index i64::MAX", i64::MAX, 2),
        ("index 2^32", 1 << 32, 2),
    ] {
        let mut c = fx.good.clone();
        c.object_refs.truncate(refs * 64);
        c.stream = zstd::bulk::compress(&chunks(&[C::Inline(b"x"), C::Ext(idx)]), 3).unwrap();
        expect_err(&fx, &c.build(), what, &["object #", "corrupt"]);
    }
    // A valid index to an object that is not in the repository: cat fails, walk does not.
    let mut c = fx.good.clone();
    c.object_refs = ObjectId::zero(Algorithm::Sha512).as_bytes().to_vec();
    c.stream = zstd::bulk::compress(&chunks(&[C::Ext(0)]), 3).unwrap();
    c.stream_size = 10;
    expect_err(&fx, &c.build(), "missing object", &["cannot open object"]);
    // An object whose size differs from what the stream records.
    let mut c = fx.good.clone();
    c.stream_size += 1;
    expect_err(
        &fx,
        &c.build(),
        "stream size off by one",
        &["reassembled", "records"],
    );
}

#[test]
fn bad_headers_and_sections_are_refused() {
    let fx = fixture();
    let good = fx.good.build();
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let len = good.len() as u64;
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("bad magic", patch(0, b"SplitStreaX"), &["magic"]),
        ("version 1", patch(11, &[1]), &["version"]),
        ("algorithm 0", patch(14, &[0]), &["algorithm"]),
        ("algorithm 3", patch(14, &[3]), &["algorithm"]),
        (
            "algorithm sha256 in a sha512 repository",
            patch(14, &[1]),
            &["sha256"],
        ),
        ("block size 2^13", patch(15, &[13]), &["block size"]),
        (
            "info start after end",
            patch(16, &200u64.to_le_bytes()),
            &["info"],
        ),
        (
            "info end past the file",
            patch(24, &(len + 1).to_le_bytes()),
            &["info"],
        ),
        (
            "info of 79 bytes",
            patch(24, &(32u64 + 79).to_le_bytes()),
            &["info"],
        ),
        (
            "info range u64::MAX",
            patch(24, &u64::MAX.to_le_bytes()),
            &["info"],
        ),
        (
            "stream refs end past the file",
            patch(32 + 8, &(len + 64).to_le_bytes()),
            &["stream refs"],
        ),
        (
            "stream refs not a digest multiple",
            patch(32 + 8, &(112u64 + 63).to_le_bytes()),
            &["multiple"],
        ),
        (
            "object refs inverted",
            patch(32 + 16, &u64::MAX.to_le_bytes()),
            &["object refs"],
        ),
        (
            "stream section past the file",
            patch(32 + 40, &u64::MAX.to_le_bytes()),
            &["stream"],
        ),
        (
            "named refs inverted",
            patch(32 + 48, &(len).to_le_bytes()),
            &["named refs"],
        ),
    ];
    for (what, bytes, words) in cases {
        expect_err(&fx, &bytes, what, words);
    }
    // A sha256 stream read with sha512 and the other way round.
    let mut c = fx.good.clone();
    c.alg_id = 1;
    expect_err(
        &fx,
        &c.build(),
        "sha256 stream in a sha512 repository",
        &["sha256"],
    );
    let res = read_crafted(&fx, &good, Algorithm::Sha256);
    assert_no_panic(&res, "sha512 stream read as sha256");
    assert!(res.is_err(), "a sha512 stream was read as sha256");
}

#[test]
fn bad_named_refs_are_refused() {
    let fx = fixture();
    for (what, text, words) in [
        (
            "index past the stream refs",
            &b"1:child\0"[..],
            &["points past"][..],
        ),
        ("no colon", b"child\0", &["no ':'"]),
        ("bad index", b"x:child\0", &["bad index"]),
        ("negative index", b"-1:child\0", &["bad index"]),
        (
            "huge index",
            b"99999999999999999999999:child\0",
            &["bad index"],
        ),
        ("not UTF-8", b"0:\xff\xfe\0", &["UTF-8"]),
    ] {
        let mut c = fx.good.clone();
        c.named = zstd::bulk::compress(text, 3).unwrap();
        expect_err(&fx, &c.build(), what, words);
    }
    let mut c = fx.good.clone();
    c.named = b"this is not zstd".to_vec();
    expect_err(&fx, &c.build(), "named refs not zstd", &["named refs"]);
    let mut c = fx.good.clone();
    let full = c.named.clone();
    c.named = full[..full.len() - 2].to_vec();
    expect_err(
        &fx,
        &c.build(),
        "named refs frame cut short",
        &["named refs"],
    );
    let mut c = fx.good.clone();
    c.stream = b"this is not zstd either".to_vec();
    expect_err(&fx, &c.build(), "stream not zstd", &["decompress"]);
}

#[test]
fn reader_opens_a_plain_file() {
    // A splitstream file outside any repository can be opened directly.
    let fx = fixture();
    let bytes = fx.good.build();
    let p: &Path = &fx.file;
    std::fs::write(p, &bytes).unwrap();
    let r = SplitStreamReader::new(File::open(p).unwrap(), Algorithm::Sha512).unwrap();
    assert_eq!(r.stream_size, fx.good.stream_size);
    assert_eq!(r.stream_refs(), &[fx.y]);
}

/// Parallel storage must not change a single byte: the same sequence of
/// inline and external writes gives the same stream object, with and without
/// worker threads, including duplicates, empty objects and content too large
/// for the workers.
#[test]
fn parallel_writer_is_byte_identical_to_sequential() {
    let (_tmp, repo) = new_repo(Algorithm::Sha256);
    let mut pieces: Vec<(bool, Vec<u8>)> = Vec::new();
    for i in 0..300u64 {
        pieces.push((false, pseudo_random(i, (i as usize * 37) % 700)));
        let len = match i % 7 {
            0 => 0,
            1 => 5 << 20, // over the in-memory limit: stored on the caller's thread
            _ => (i as usize * 4099) % 200_000,
        };
        pieces.push((true, pseudo_random(i % 50, len))); // seeds repeat: duplicates
    }
    let write = |threads: usize| {
        let mut w = repo
            .stream_writer(content_type::OCI_LAYER)
            .unwrap()
            .parallel(threads)
            .unwrap();
        for (external, data) in &pieces {
            if *external {
                w.queue_external(&data[..], data.len() as u64).unwrap();
            } else {
                w.write_inline(data).unwrap();
            }
        }
        w.finish().unwrap()
    };
    let sequential = write(0);
    let parallel = write(2);
    assert_eq!(sequential, parallel);
    let mut r = repo.open_stream_object(&parallel).unwrap();
    let mut out = Vec::new();
    r.cat(&repo, &mut out).unwrap();
    let want: Vec<u8> = pieces.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    assert!(out == want, "reassembled stream differs");
}

// ---------------------------------------------------------------------------
// Framed splitstreams: independent frames plus a table in a skippable frame
// ---------------------------------------------------------------------------

/// A framed stream of `frames` frames, each a few inline pieces and an
/// object; returns its id, the objects and the expected bytes.
fn framed_stream(
    repo: &Repository,
    frames: usize,
    coding: FrameCoding,
) -> (ObjectId, Vec<ObjectId>, Vec<u8>) {
    let mut w = repo
        .stream_writer(content_type::OCI_BLOB)
        .unwrap()
        .framed(coding)
        .unwrap();
    let mut want = Vec::new();
    let mut ids = Vec::new();
    for i in 0..frames {
        let text = format!("frame {i} says hello; ").repeat(i + 1);
        w.write_inline(text.as_bytes()).unwrap();
        want.extend_from_slice(text.as_bytes());
        let content = pseudo_random(i as u64 + 10, 200 + i);
        ids.push(
            w.write_external(&content[..], content.len() as u64)
                .unwrap(),
        );
        want.extend_from_slice(&content);
        w.write_inline(b"|").unwrap();
        want.push(b'|');
        assert!(w.frame_size() > 0);
        w.end_frame().unwrap();
        assert_eq!(w.frame_size(), 0);
        w.end_frame().unwrap(); // an empty frame is not written
    }
    let id = repo.commit_stream(w, "framed", None).unwrap();
    (id, ids, want)
}

#[test]
fn framed_stream_reads_whole_and_frame_by_frame() {
    for coding in [FrameCoding::Zstd, FrameCoding::Stored] {
        framed_stream_reads(coding);
    }
}

fn framed_stream_reads(coding: FrameCoding) {
    let (_tmp, repo) = new_repo(Algorithm::Sha256);
    let (id, ids, want) = framed_stream(&repo, 5, coding);

    // Front to back, as any reader: the skippable table frame is skipped.
    let mut out = Vec::new();
    repo.open_stream_object(&id)
        .unwrap()
        .cat(&repo, &mut out)
        .unwrap();
    assert_eq!(out, want);
    // zstd's own tool agrees the stream section is valid zstd (frames +
    // one skippable frame).
    let f = std::fs::read(repo.object_path(&id)).unwrap();
    let info = u64_at(&f, 16) as usize;
    let (s0, s1) = (
        u64_at(&f, info + 32) as usize,
        u64_at(&f, info + 40) as usize,
    );
    let mut zstd = std::process::Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    zstd.stdin.take().unwrap().write_all(&f[s0..s1]).unwrap();
    let o = zstd.wait_with_output().unwrap();
    assert!(o.status.success(), "zstd -d refused the framed stream");
    assert!(!o.stdout.is_empty());

    // Frame by frame, in any order.
    let frames = repo
        .open_stream_object(&id)
        .unwrap()
        .into_frames()
        .unwrap()
        .ok()
        .expect("a framed stream has frames");
    assert_eq!(frames.table().len(), 5);
    let mut inline_total = 0;
    for i in (0..5).rev() {
        let d = frames.read(i).unwrap();
        let text = format!("frame {i} says hello; ").repeat(i + 1);
        let mut expect = text.into_bytes();
        let at = expect.len() as u64;
        expect.push(b'|');
        assert_eq!(d.to_inline(), expect);
        assert_eq!(d.inline(0, expect.len()), Some(&expect[..]), "{coding:?}");
        // Across the external object: two chunks joined.
        assert_eq!(
            d.inline(at as usize - 2, 3),
            Some(&expect[at as usize - 2..])
        );
        assert_eq!(d.inline(0, expect.len() + 1), None);
        assert_eq!(d.externals().collect::<Vec<_>>(), vec![(at, ids[i])]);
        assert_eq!(d.external_at(at), Some(ids[i]));
        assert_eq!(d.external_at(at + 1), None);
        let e = frames.table()[i];
        assert_eq!(frames.frame_of(e.inline_offset), Some(i));
        inline_total += d.inline_len() as u64;
    }
    assert_eq!(frames.inline_len(), inline_total);
    assert_eq!(frames.frame_of(inline_total), None);

    // An unframed stream has no frames: the reader comes back intact.
    let mut w = repo.stream_writer(content_type::OCI_BLOB).unwrap();
    w.write_inline(b"plain").unwrap();
    let plain = repo.commit_stream(w, "plain", None).unwrap();
    let mut r = repo
        .open_stream_object(&plain)
        .unwrap()
        .into_frames()
        .unwrap()
        .err()
        .expect("not framed");
    let mut out = Vec::new();
    r.cat(&repo, &mut out).unwrap();
    assert_eq!(out, b"plain");
}

#[test]
fn damaged_frame_tables_and_frames_are_errors() {
    for coding in [FrameCoding::Zstd, FrameCoding::Stored] {
        damaged_frames(coding);
    }
}

fn damaged_frames(coding: FrameCoding) {
    let (_tmp, repo) = new_repo(Algorithm::Sha256);
    let (id, _, _) = framed_stream(&repo, 3, coding);
    let good = std::fs::read(repo.object_path(&id)).unwrap();
    let info = u64_at(&good, 16) as usize;
    let s1 = u64_at(&good, info + 40) as usize;
    // Table layout from the end: footer (16), 3 entries (96), header (8).
    let table = s1 - 16 - 96 - 8;
    let open = |bytes: &[u8]| -> Result<Vec<Vec<u8>>, String> {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut f = memfile(bytes);
            f.seek(SeekFrom::Start(0)).unwrap();
            let r = SplitStreamReader::new(f, Algorithm::Sha256).map_err(|e| format!("{e:#}"))?;
            let frames = match r.into_frames().map_err(|e| format!("{e:#}"))? {
                Ok(f) => f,
                Err(_) => return Err("not framed".to_string()),
            };
            (0..frames.table().len())
                .map(|i| {
                    frames
                        .read(i)
                        .map(|d| d.to_inline())
                        .map_err(|e| format!("{e:#}"))
                })
                .collect()
        }));
        r.unwrap_or_else(|_| panic!("framed reading panicked"))
    };
    assert_eq!(open(&good).unwrap().len(), 3);
    let cases: Vec<(&str, usize, u8, &str)> = vec![
        ("footer magic", s1 - 1, b'X', "not framed"),
        ("version", s1 - 12, 9, "version"),
        ("count", s1 - 16, 200, "does not fit"),
        ("skippable magic", table, 1, "skippable"),
        (
            "an entry's compressed offset",
            table + 8 + 32,
            1,
            "inconsistent",
        ),
        (
            "the first entry's compressed length",
            table + 8 + 8,
            1,
            "inconsistent",
        ),
        (
            "the last entry's compressed length",
            table + 8 + 64 + 8,
            1,
            "cover",
        ),
        ("an entry's raw length", table + 8 + 12, 0xff, "decompress"),
        (
            "the last entry's inline length",
            table + 8 + 64 + 24,
            1,
            "does not hold",
        ),
        (
            "an entry's object count",
            table + 8 + 28,
            3,
            "does not hold",
        ),
    ];
    for (what, at, v, words) in cases {
        let mut b = good.clone();
        b[at] = b[at].wrapping_add(v);
        let err = open(&b).expect_err(what);
        assert!(err.contains(words), "{what}: {err}");
    }
    // A flipped byte inside a frame: an error from that frame, never
    // wrong bytes.
    let s0 = u64_at(&good, info + 32) as usize;
    for at in s0 + 4..table {
        let mut b = good.clone();
        b[at] ^= 0x55;
        if let Ok(frames) = open(&b) {
            assert_eq!(
                frames,
                open(&good).unwrap(),
                "flip at {at} gave other bytes"
            );
        }
    }
}
