//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and for the
//! regression tests of what they found (`tests/fuzz_regressions.rs`).
//!
//! Each function feeds one input to the code the tool runs on data from
//! outside (a registry, an ostree remote, an image or dumpfile someone
//! handed us), the way the tool runs it, and does a bounded amount of
//! work. None of them may panic, hang or allocate without bound, whatever
//! the input: that is what the fuzzers check. A few also check properties
//! that must hold for every input the parsers accept (a split tar
//! reassembles to the same bytes, an image we write reads back); those are
//! assertions, so a violation is a finding too.
//!
//! The functions return the result of the main parse (so a regression test
//! can assert that a hostile input is refused); the secondary paths they
//! also run have their errors ignored.
//!
//! Not a stable API: it exists for the fuzzers and changes with them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::dumpfile;
use crate::erofs::reader::ErofsImage;
use crate::erofs::writer::{FormatVersion, image_to_vec};
use crate::fsverity::{Algorithm, ObjectId};
use crate::oci::merge;
use crate::oci::registry;
use crate::oci::source::{Fetched, ImageSource};
use crate::oci::spec::{self, Digest, ImageConfig, Index, Manifest, Platform};
use crate::ostree::checksum::{Checksum, ObjType};
use crate::ostree::delta::{self, DeltaSink, PartMeta, PartStats};
use crate::ostree::objects::{self, Commit, DirMeta, DirTree, FileHeader};
use crate::ostree::signature::{self, Ed25519Keys, Keyring};
use crate::ostree::source::filez_object;
use crate::ostree::summary::{self, Summary};
use crate::repository::Repository;
use crate::splitstream::{Piece, SplitStreamReader, content_type};
use crate::tarsplit;
use crate::tree::{Kind, Tree};

// ---------------------------------------------------------------------------
// Scratch space
// ---------------------------------------------------------------------------

/// Where fuzzers keep their scratch repositories: `$COMPOSEFS_FUZZ_TMPDIR`,
/// else `/dev/shm` (tmpfs: no disk writes), else the temporary directory.
fn scratch_parent() -> PathBuf {
    if let Some(d) = std::env::var_os("COMPOSEFS_FUZZ_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && rustix::fs::access(shm, rustix::fs::Access::WRITE_OK).is_ok() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// This process's scratch directory, removed at exit (libFuzzer ends with
/// `exit()`, which runs `atexit` handlers; a crash leaves it behind, and
/// `scripts/fuzz.sh` removes its whole `$COMPOSEFS_FUZZ_TMPDIR`).
fn scratch_dir() -> Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static MAKING: Mutex<()> = Mutex::new(());
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    let _one_at_a_time = lock(&MAKING);
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    let parent = scratch_parent();
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("composefs-fuzz-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?
        .keep();
    let dir = DIR.get_or_init(|| dir);
    extern "C" fn remove_scratch() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    // SAFETY: registering a plain `extern "C" fn` with no arguments.
    unsafe { libc::atexit(remove_scratch) };
    Ok(dir)
}

/// A scratch repository, created on first use and recreated after
/// [`RECYCLE`] uses (fuzzed inputs leave objects behind, in tmpfs).
struct ScratchRepo {
    repo: Option<Repository>,
    uses: u64,
    generation: u64,
    name: &'static str,
    algorithm: Algorithm,
}

const RECYCLE: u64 = 5_000;

impl ScratchRepo {
    const fn new(name: &'static str, algorithm: Algorithm) -> Self {
        ScratchRepo {
            repo: None,
            uses: 0,
            generation: 0,
            name,
            algorithm,
        }
    }

    /// The repository and its generation (a new one after each recycling).
    fn get(&mut self) -> Result<(&Repository, u64)> {
        self.uses += 1;
        if self.uses > RECYCLE
            && let Some(r) = self.repo.take()
        {
            let path = r.path().to_path_buf();
            drop(r);
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            self.uses = 1;
        }
        if self.repo.is_none() {
            self.generation += 1;
            let path = scratch_dir()?.join(format!("{}-{}", self.name, self.generation));
            self.repo = Some(Repository::init(&path, self.algorithm)?);
        }
        Ok((self.repo.as_ref().expect("just made"), self.generation))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An anonymous in-memory file holding `data` (readers that want a
/// `File` get one without touching a disk).
fn memfile(data: &[u8]) -> Result<File> {
    let fd = rustix::fs::memfd_create("composefs-fuzz", rustix::fs::MemfdFlags::CLOEXEC)
        .context("memfd_create")?;
    let mut f = File::from(fd);
    f.write_all(data).context("writing a memfd")?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(0)).context("seeking a memfd")?;
    Ok(f)
}

// ---------------------------------------------------------------------------
// Splitstreams
// ---------------------------------------------------------------------------

/// Repositories (one per algorithm) holding the objects of the base tar
/// (see [`set_base_tar`]), so that splitstreams made from it reassemble.
struct StreamFixture {
    sha256: ScratchRepo,
    sha512: ScratchRepo,
    /// The base tar's layer stream in each repository, by algorithm and
    /// generation (see [`base_layer`]).
    base_layer: BTreeMap<u64, ObjectId>,
}

static BASE_TAR: OnceLock<Vec<u8>> = OnceLock::new();
static STREAMS: Mutex<StreamFixture> = Mutex::new(StreamFixture {
    sha256: ScratchRepo::new("streams-sha256", Algorithm::Sha256),
    sha512: ScratchRepo::new("streams-sha512", Algorithm::Sha512),
    base_layer: BTreeMap::new(),
});

/// The tar whose file contents the fixture repositories hold (the seed
/// splitstreams of the `splitstream` target were made from it by
/// `composefs import-tar`), and the lower layer the `tarsplit` target
/// merges fuzzed layers onto. Only the first call counts.
pub fn set_base_tar(tar: &[u8]) {
    let _ = BASE_TAR.set(tar.to_vec());
}

/// Split the base tar into `repo` (whose generation is `generation`), once
/// per repository: its objects and its layer stream.
fn base_layer(
    repo: &Repository,
    generation: u64,
    cache: &mut BTreeMap<u64, ObjectId>,
    key: u64,
) -> Result<Option<ObjectId>> {
    let Some(tar) = BASE_TAR.get() else {
        return Ok(None);
    };
    let k = key << 32 | generation;
    if let Some(id) = cache.get(&k) {
        return Ok(Some(*id));
    }
    let mut w = repo.stream_writer(content_type::OCI_LAYER)?;
    tarsplit::split(&tar[..], &mut w, |_| {}).context("the base tar does not split")?;
    let id = w.finish()?;
    cache.insert(k, id);
    Ok(Some(id))
}

/// A splitstream as found in a repository: opened and validated, walked
/// chunk by chunk (as `merge` and the OCI readers do), and reassembled
/// (as `composefs cat` does) against a repository holding the objects of
/// the base tar (see [`set_base_tar`]). The algorithm is the one the
/// header names (sha512 unless it says sha256). Then the same for the
/// input as the decompressed chunk stream of a well-formed container (see
/// [`wrap_chunks`]), which is also merged as an OCI layer. Returns the
/// number of inline bytes the walk saw, of the input as a splitstream,
/// else as a chunk stream (reassembly also fails for objects the fixture
/// lacks, so the walk decides).
pub fn splitstream(data: &[u8]) -> Result<u64> {
    let algorithm = match data.get(14) {
        Some(1) => Algorithm::Sha256,
        _ => Algorithm::Sha512,
    };
    let raw = walk_stream(data, algorithm);
    if raw.is_ok() {
        let _ = reassemble(data, algorithm, false);
    }
    let _ = read_frames(data, algorithm);
    let wrapped = wrap_chunks(data).map(|w| {
        let walked = walk_stream(&w, Algorithm::Sha512);
        if walked.is_ok() {
            let _ = reassemble(&w, Algorithm::Sha512, true);
        }
        walked
    });
    match (raw, wrapped) {
        (Err(_), Some(Ok(n))) => Ok(n),
        (raw, _) => raw,
    }
}

/// Open a splitstream as a framed one (its frame table, then every
/// frame); the number of inline bytes.
fn read_frames(data: &[u8], algorithm: Algorithm) -> Result<u64> {
    let r = SplitStreamReader::new(memfile(data)?, algorithm)?;
    let Ok(frames) = r.into_frames()? else {
        return Ok(0);
    };
    let mut inline = 0u64;
    for i in 0..frames.table().len() {
        let f = frames.read(i)?;
        let all = f.to_inline();
        assert_eq!(f.inline(0, all.len()), Some(&all[..]));
        inline += f.inline_len() as u64;
    }
    Ok(inline)
}

/// Open a splitstream and walk its chunks (no object is opened); the
/// number of inline bytes.
fn walk_stream(data: &[u8], algorithm: Algorithm) -> Result<u64> {
    let mut r = SplitStreamReader::new(memfile(data)?, algorithm)?;
    let _ = (r.object_refs().len(), r.stream_refs().len());
    let _ = r.named_refs().len();
    let mut inline = 0u64;
    while let Some(p) = r.next_piece()? {
        if let Piece::Inline(b) = p {
            inline += b.len() as u64;
        }
    }
    Ok(inline)
}

/// A well-formed sha512 splitstream whose decompressed chunk stream is
/// `data[8..]` and whose recorded size is `data[..8]` (little-endian),
/// referring to the base tar's objects (and a few that do not exist) and,
/// by name, to two streams. Mutating a real splitstream mostly breaks its
/// zstd frame; this lets the fuzzer reach the chunk walk and reassembly
/// with any chunk sequence.
fn wrap_chunks(data: &[u8]) -> Option<Vec<u8>> {
    use crate::splitstream::{Header, Info};
    const HEADER_SIZE: u64 = 32;
    const INFO_SIZE: u64 = 80;
    let (size, chunks) = data.split_first_chunk::<8>()?;
    let stream_size = u64::from_le_bytes(*size);
    let compressed = zstd::bulk::compress(chunks, 1).ok()?;
    let alg = Algorithm::Sha512;
    let objects = wrap_objects();
    let streams = [ObjectId::zero(alg), objects[0]];
    let named = zstd::bulk::compress(b"0:first\x001:second\0", 1).ok()?;
    let mut body = Vec::new();
    let mut at = HEADER_SIZE + INFO_SIZE;
    let mut section = |bytes: &[u8]| {
        let r = at..at + bytes.len() as u64;
        at += bytes.len() as u64;
        body.extend_from_slice(bytes);
        r
    };
    let stream_refs: Vec<u8> = streams.iter().flat_map(|i| i.as_bytes().to_vec()).collect();
    let object_refs: Vec<u8> = objects.iter().flat_map(|i| i.as_bytes().to_vec()).collect();
    let info = Info {
        stream_refs: section(&stream_refs),
        object_refs: section(&object_refs),
        named_refs: section(&named),
        stream: section(&compressed),
        content_type: content_type::OCI_LAYER,
        stream_size,
    };
    let header = Header {
        algorithm: alg,
        lg_blocksize: Algorithm::LG_BLOCKSIZE,
        info: HEADER_SIZE..HEADER_SIZE + INFO_SIZE,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&info.encode());
    out.extend_from_slice(&body);
    Some(out)
}

/// The object refs of [`wrap_chunks`]: the base tar's external contents
/// (in the fixture repository), then two objects that are not.
fn wrap_objects() -> &'static [ObjectId] {
    static IDS: OnceLock<Vec<ObjectId>> = OnceLock::new();
    IDS.get_or_init(|| {
        let alg = Algorithm::Sha512;
        let mut ids = Vec::new();
        if let Some(tar) = BASE_TAR.get() {
            let mut ar = tar::Archive::new(&tar[..]);
            if let Ok(entries) = ar.entries() {
                for mut e in entries.flatten() {
                    if e.header().entry_type().is_file() && e.size() > tarsplit::INLINE_MAX {
                        let mut content = Vec::new();
                        if e.read_to_end(&mut content).is_ok() {
                            ids.push(crate::fsverity::digest_bytes(alg, &content));
                        }
                    }
                }
            }
        }
        ids.push(ObjectId::zero(alg));
        ids.push(crate::fsverity::digest_bytes(alg, b"not in the repository"));
        ids
    })
}

/// Reassemble a splitstream against the fixture repository of its
/// algorithm; with `merge`, also store it there and merge it as a layer.
fn reassemble(data: &[u8], algorithm: Algorithm, merge: bool) -> Result<u64> {
    let mut fx = lock(&STREAMS);
    let StreamFixture {
        sha256,
        sha512,
        base_layer: cache,
    } = &mut *fx;
    let (scratch, key) = match algorithm {
        Algorithm::Sha256 => (sha256, 256),
        Algorithm::Sha512 => (sha512, 512),
    };
    let (repo, generation) = scratch.get()?;
    base_layer(repo, generation, cache, key)?;
    if merge {
        let id = repo.store_bytes(data)?;
        if let Ok(tree) = merge::merge(repo, &[id]) {
            consume_tree(&tree, 1 << 20);
        }
    }
    let mut r = SplitStreamReader::new(memfile(data)?, algorithm)?;
    r.cat(repo, &mut io::sink())
}

// ---------------------------------------------------------------------------
// Tar splitting and layer merging
// ---------------------------------------------------------------------------

/// `data` with the checksum of every tar header it can find recomputed
/// (walking headers and sizes as a tar reader does, roughly); `None` when
/// nothing changed. A fuzzer mutating a header almost never fixes its
/// checksum too, so without this every mutated header is refused at once
/// and what lies behind the checksum check is never reached; the targets
/// run both the input as given (the checksum check) and this.
pub fn fix_tar_checksums(data: &[u8]) -> Option<Vec<u8>> {
    use crate::tarheader::BLOCK;
    let mut out = data.to_vec();
    let mut at = 0usize;
    let mut changed = false;
    while at + BLOCK <= out.len() {
        let block = &mut out[at..at + BLOCK];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let sum = crate::tarheader::checksum((&*block).try_into().expect("one block"));
        let field = format!("{sum:06o}\0 ");
        if block[148..156] != *field.as_bytes() {
            block[148..156].copy_from_slice(field.as_bytes());
            changed = true;
        }
        let size = crate::tarheader::parse_numeric(&block[124..136])
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let padded = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
        let Some(next) = usize::try_from(padded)
            .ok()
            .and_then(|p| (at + BLOCK).checked_add(p))
        else {
            break;
        };
        at = next;
    }
    changed.then_some(out)
}

static TARS: Mutex<(ScratchRepo, BTreeMap<u64, ObjectId>)> =
    Mutex::new((ScratchRepo::new("tars", Algorithm::Sha512), BTreeMap::new()));

/// A layer tar (plain, gzip or zstd), as `composefs import-tar` and `oci
/// pull` take it: decompressed, split into a splitstream in a scratch
/// repository; when that succeeds, the stream must reassemble to exactly
/// the tar, and it is merged as an OCI layer alone and on top of the base
/// tar's layer (see [`set_base_tar`]), and the merged tree is walked and
/// written as an EROFS image and a dumpfile, as `create-image` does for an
/// OCI image. Returns the split's outcome. The same again for the input
/// with its tar checksums recomputed (see [`fix_tar_checksums`]), when
/// that differs.
pub fn tarsplit(data: &[u8]) -> Result<tarsplit::TarSummary> {
    let r = split_and_merge(data);
    if let Some(fixed) = fix_tar_checksums(data) {
        let _ = split_and_merge(&fixed);
    }
    r
}

fn split_and_merge(data: &[u8]) -> Result<tarsplit::TarSummary> {
    // As `import-tar` and `oci pull` take layers: gzip or zstd detected
    // by magic and decoded (here into memory, at most 16 MiB of it).
    const MAX_DECODED: u64 = 16 << 20;
    let (_, decoded) = crate::compression::decompress(data)?;
    let mut tar = Vec::new();
    decoded
        .take(MAX_DECODED + 1)
        .read_to_end(&mut tar)
        .context("cannot decompress")?;
    if tar.len() as u64 > MAX_DECODED {
        bail!("decompresses to more than {MAX_DECODED} bytes");
    }
    let data = &tar[..];
    let mut guard = lock(&TARS);
    let (scratch, cache) = &mut *guard;
    let (repo, generation) = scratch.get()?;
    let base = base_layer(repo, generation, cache, 0)?;

    let mut w = repo.stream_writer(content_type::OCI_LAYER)?;
    let summary = tarsplit::split(data, &mut w, |_| {})?;
    let id = w.finish()?;

    // Byte-exact: what was split comes back.
    let mut back = Vec::with_capacity(data.len());
    let mut r = repo.open_stream_object(&id)?;
    let n = r
        .cat(repo, &mut back)
        .expect("a stream tarsplit wrote must reassemble");
    assert_eq!(n, data.len() as u64, "reassembled length");
    assert!(back == data, "a split tar must reassemble byte for byte");
    assert_eq!(summary.size, data.len() as u64, "TarSummary::size");

    let mut layers = vec![id];
    if let Ok(tree) = merge::merge(repo, &layers) {
        consume_tree(&tree, 1 << 20);
    }
    if let Some(b) = base {
        layers.insert(0, b);
        if let Ok(tree) = merge::merge(repo, &layers) {
            consume_tree(&tree, 1 << 20);
        }
    }
    Ok(summary)
}

/// Use a tree the way the views do: walk it through [`Tree`] (at most
/// `limit` names), look names up, and write it as a dumpfile and an EROFS
/// image.
fn consume_tree(tree: &dyn Tree, limit: u64) {
    let _ = walk_tree(tree, limit);
    let _ = dumpfile::write(tree, &mut io::sink());
    let _ = image_to_vec(tree, FormatVersion::V1);
}

/// Walk every directory reachable from the root, as a careless consumer
/// would (no visited set: the tree must prevent loops), loading every
/// inode and looking a few names up; stop after `limit` names. Returns the
/// number of names seen.
fn walk_tree(tree: &dyn Tree, limit: u64) -> Result<u64> {
    let mut seen = 0u64;
    let root = tree.root();
    tree.inode(root)?;
    let _ = tree.nlink(root)?;
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let entries = tree.readdir(d)?;
        for (i, e) in entries.iter().enumerate() {
            seen += 1;
            if seen > limit {
                bail!("more than {limit} names");
            }
            let inode = tree.inode(e.ino)?;
            let _ = tree.nlink(e.ino)?;
            if let Kind::Regular(data) = &inode.kind {
                let _ = data.size();
            }
            if i < 4 {
                let found = tree.lookup(d, &e.name)?;
                assert_eq!(found, Some(e.ino), "lookup of a listed name");
            }
            if inode.kind.is_dir() {
                stack.push(e.ino);
            }
        }
        let _ = tree.lookup(d, b"\xffno such name")?;
    }
    let _ = tree.resolve_path(b"/a/../b/./c/");
    Ok(seen)
}

// ---------------------------------------------------------------------------
// EROFS images and dumpfiles
// ---------------------------------------------------------------------------

/// A composefs EROFS image, as `mount`, `ls`, `dump` and `gc` read one:
/// opened, walked through the [`Tree`] interface (bounded: every name
/// takes at least 12 bytes of the image, and each directory can be listed
/// once per walk), checked, its object references collected, dumped, and
/// rewritten. Returns the number of names the walk saw.
pub fn erofs(data: &[u8]) -> Result<u64> {
    let limit = data.len() as u64 / 12 + 16;
    let image = ErofsImage::new(data.to_vec())?;
    let names = walk_tree(&image, limit);
    let _ = image.check();
    let _ = image.referenced_objects();
    let _ = image.walk(|img, raw| {
        let _ = img.raw_xattrs(raw);
        if raw.is_dir() {
            let _ = img.raw_dirents(raw);
        }
        Ok(())
    });
    let _ = dumpfile::write(&image, &mut io::sink());
    let _ = image_to_vec(&image, FormatVersion::V0);
    names
}

/// A dumpfile, as `mkcomposefs` and `create-image --from-dump` read one:
/// parsed into a tree; when that succeeds, written back as a dumpfile
/// (which must parse again and write the same text: the canonical form is
/// a fixed point) and as EROFS images of both format versions (which, when
/// the writer accepts the tree, must open and pass [`ErofsImage::check`]).
pub fn dumpfile(data: &[u8]) -> Result<()> {
    let tree = dumpfile::parse(data)?;
    let _ = walk_tree(&tree, u64::MAX);
    let mut once = Vec::new();
    dumpfile::write(&tree, &mut once).expect("a parsed dumpfile must write");
    let again = dumpfile::parse(&once).unwrap_or_else(|e| {
        panic!(
            "our own dumpfile does not parse: {e:#}\n{}",
            String::from_utf8_lossy(&once)
        )
    });
    let mut twice = Vec::new();
    dumpfile::write(&again, &mut twice).expect("a parsed dumpfile must write");
    assert!(
        once == twice,
        "dumpfile canonical form is not a fixed point:\n{}\n---\n{}",
        String::from_utf8_lossy(&once),
        String::from_utf8_lossy(&twice)
    );
    for v in [FormatVersion::V0, FormatVersion::V1] {
        if let Ok(img) = image_to_vec(&tree, v) {
            let image = ErofsImage::new(img)
                .unwrap_or_else(|e| panic!("an image we wrote ({v:?}) does not open: {e:#}"));
            image
                .check()
                .unwrap_or_else(|e| panic!("an image we wrote ({v:?}) fails its check: {e:#}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// ostree objects
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// OCI
// ---------------------------------------------------------------------------

/// An image source that serves one document for every manifest request.
struct OneDocument(Vec<u8>);

impl ImageSource for OneDocument {
    fn manifest(&self, _reference: &str) -> Result<Fetched> {
        Ok(Fetched {
            media_type: spec::document_media_type(&self.0)
                .unwrap_or_else(|| spec::OCI_MANIFEST.to_string()),
            bytes: self.0.clone(),
        })
    }

    fn blob(&self, digest: &Digest, _size: u64) -> Result<Box<dyn Read + Send + '_>> {
        bail!("no blob {digest}")
    }

    fn describe(&self) -> String {
        "fuzz".to_string()
    }
}

/// An OCI (or Docker) JSON document as a pull gets one: its media type
/// guessed, resolved as the reference's manifest (through an index, by
/// platform) the way `oci pull` does, and parsed as a manifest, an index
/// and an image config with the spec types (layer media types and
/// digests checked as a pull checks them). `Ok` when one of the three
/// spec types accepts it.
pub fn oci_json(data: &[u8]) -> Result<()> {
    let _ = spec::document_media_type(data);
    let platform = Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
    };
    let _ = crate::oci::pull::resolve_manifest(&OneDocument(data.to_vec()), "", &platform);
    let mut accepted = Err(anyhow::anyhow!(
        "neither an image manifest, nor an index, nor an image config"
    ));
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        accepted = Ok(());
        for l in &m.layers {
            let _ = spec::layer_compression(&l.media_type);
            let _ = crate::oci::pull::layer_id(&l.digest);
        }
        let _ = serde_json::to_vec(&m).expect("a parsed manifest serialises");
    }
    if let Ok(i) = serde_json::from_slice::<Index>(data) {
        accepted = Ok(());
        for d in &i.manifests {
            let _ = spec::is_index(&d.media_type);
            let _ = d.annotations.as_ref().map(|a| a.len());
        }
    }
    if let Ok(c) = serde_json::from_slice::<ImageConfig>(data) {
        accepted = Ok(());
        for d in &c.rootfs.diff_ids {
            assert!(
                Digest::parse(d.as_str()).is_ok(),
                "a parsed digest reparses"
            );
        }
    }
    accepted
}

/// An `oci-archive` or `docker-archive` tar, as `oci pull` opens one: its
/// members indexed in place, `index.json` or `manifest.json` and the image
/// config read, the manifest resolved (by platform, through indexes) and
/// its config blob fetched and parsed. `Ok` when either kind opens. The
/// same again with the tar checksums recomputed (see
/// [`fix_tar_checksums`]), when that differs.
pub fn oci_archive(data: &[u8]) -> Result<()> {
    let r = open_archive(data);
    if let Some(fixed) = fix_tar_checksums(data) {
        let _ = open_archive(&fixed);
    }
    r
}

fn open_archive(data: &[u8]) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = memfile(data)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    let platform = Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
    };
    let use_source = |src: &dyn ImageSource| {
        let Ok((_, _, m)) = crate::oci::pull::resolve_manifest(src, "", &platform) else {
            return;
        };
        let _ = src.describe();
        if m.config.size <= 1 << 20
            && let Ok(r) = src.blob(&m.config.digest, m.config.size)
        {
            let mut config = Vec::new();
            if r.take(1 << 20).read_to_end(&mut config).is_ok() {
                let _ = serde_json::from_slice::<ImageConfig>(&config);
            }
        }
    };
    let layout = crate::oci::layout::Layout::archive(&path, None);
    if let Ok(l) = &layout {
        use_source(l);
    }
    let docker = crate::oci::layout::DockerArchive::open(&path);
    if let Ok(d) = &docker {
        use_source(d);
    }
    drop(f);
    match (layout, docker) {
        (Err(e), Err(_)) => Err(e),
        _ => Ok(()),
    }
}

/// What a registry sends besides documents: `WWW-Authenticate`
/// challenges (parsed, the Bearer one chosen, its realm checked and the
/// token URL built as the registry client does), `Location` redirects
/// resolved against a URL, error bodies summarised, and the media type
/// guessed from a `Content-Type`. The input is the header value (lossy
/// UTF-8). Returns the token URL when a Bearer challenge gives one.
pub fn auth_challenge(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let _ = registry::resolve_location("https://registry.example:5000/v2/a/b/manifests/t", &text);
    let _ = registry::origin_of(&text);
    let _ = registry::summarize_error_body(data);
    let _ = registry::media_type_of(&text, data);
    let challenges = registry::parse_challenges(&text);
    let url = token_url(&challenges, "library/fuzz");
    if let Some(u) = &url {
        assert!(
            registry::origin_of(u).is_some(),
            "a token URL must have an http(s) origin"
        );
    }
    url
}

/// The token URL the registry client (`Registry::answer` and
/// `fetch_token`) requests for these challenges: the first Bearer
/// challenge's realm (an http(s) URL), with `service` and each `scope`
/// (default: pull access to `repository`) as query parameters.
fn token_url(challenges: &[registry::Challenge], repository: &str) -> Option<String> {
    let c = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))?;
    let realm = c.param("realm")?;
    registry::origin_of(realm)?;
    let default_scope = format!("repository:{repository}:pull");
    let scope = c.param("scope").unwrap_or(&default_scope);
    let mut url = realm.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    if let Some(service) = c.param("service") {
        url.push(sep);
        url.push_str("service=");
        url.push_str(&registry::percent_encode(service));
        sep = '&';
    }
    for s in scope.split_whitespace() {
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&registry::percent_encode(s));
        sep = '&';
    }
    Some(url)
}
