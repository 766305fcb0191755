//! Writing splitstreams.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail};

use super::format::{HEADER_SIZE, Header, INFO_SIZE, Info};
use super::frames::{self, FrameCoding, FrameEntry, MAX_FRAME_RAW};
use super::reftable::RefTable;
use crate::fsverity::{Algorithm, ObjectId};
use crate::repository::Repository;
use crate::repository::pool::{StorePool, Ticket};

/// Inline bytes between two external chunks form one chunk, whatever its
/// size, as composefs-rs writes it (the chunk's bytes are part of the shared
/// format). Past this many bytes a run is spooled to a temporary file, so
/// memory stays bounded. Framed streams (our own) cut chunks at this size.
const MAX_INLINE_BUFFER: usize = 1 << 20;
/// External content up to this size is digested in memory first, so content
/// already in the repository is never written again.
const BUFFERED_EXTERNAL: u64 = 4 << 20;
/// zstd's default level (3), spelled as composefs-rs spells it.
const ZSTD_LEVEL: i32 = 0;
/// Object content and inline bytes waiting for worker threads, at most (bounds memory).
pub const MAX_IN_FLIGHT: u64 = 16 << 20;
/// Chunks waiting for worker threads, at most (bounds memory for many tiny objects).
pub const MAX_QUEUED: usize = 4096;

/// Builds one splitstream. Inline bytes are compressed into a temporary file
/// as they arrive; external content goes straight into the object store.
/// Memory use is bounded whatever the stream's size.
pub struct SplitStreamWriter<'r> {
    repo: &'r Repository,
    content_type: u64,
    stream: Sink,
    inline: Vec<u8>,
    /// The start of the current inline run, when it outgrew [`MAX_INLINE_BUFFER`].
    spill: Option<Spill>,
    object_refs: RefTable,
    stream_refs: Vec<ObjectId>,
    stream_index: HashMap<ObjectId, usize>,
    named_refs: BTreeMap<String, usize>,
    size: u64,
    /// Set by [`SplitStreamWriter::parallel`]: objects stored on workers.
    pool: Option<StorePool>,
    /// Chunks waiting for an earlier object's id, in stream order.
    queue: VecDeque<Queued>,
    /// Bytes of object content submitted but not yet consumed.
    in_flight: u64,
    /// Returned buffers, for reuse.
    spare: Vec<Vec<u8>>,
}

/// A chunk that cannot be emitted until the objects before it are stored.
enum Queued {
    Inline(Vec<u8>),
    Object { ticket: Ticket, size: u64 },
    Stored { id: ObjectId, size: u64 },
}

impl<'r> SplitStreamWriter<'r> {
    pub fn new(repo: &'r Repository, content_type: u64) -> Result<Self> {
        repo.ensure_writable()?;
        let tmp = temp_file(repo)?;
        let stream = Sink::Stream(
            zstd::stream::write::Encoder::new(
                BufWriter::with_capacity(256 * 1024, tmp),
                ZSTD_LEVEL,
            )
            .context("cannot start zstd compression")?,
        );
        Ok(SplitStreamWriter {
            repo,
            content_type,
            stream,
            inline: Vec::new(),
            spill: None,
            object_refs: RefTable::new(temp_file(repo)?, repo.algorithm().digest_len()),
            stream_refs: Vec::new(),
            stream_index: HashMap::new(),
            named_refs: BTreeMap::new(),
            size: 0,
            pool: None,
            queue: VecDeque::new(),
            in_flight: 0,
            spare: Vec::new(),
        })
    }

    /// Store external content on `threads` worker threads (digest and write
    /// overlap with the caller's parsing). Memory stays bounded: at most
    /// [`MAX_IN_FLIGHT`] bytes of content wait for workers.
    pub fn parallel(mut self, threads: usize) -> Result<Self> {
        if threads > 0 {
            self.pool = Some(StorePool::new(self.repo, threads)?);
        }
        Ok(self)
    }

    /// Write the stream as independent zstd frames, compressed or stored
    /// (`coding`), cut where the caller says ([`Self::end_frame`]), with a
    /// table of them at the end (see [`super::frames`]): a reader can then
    /// read any frame on its own. Readers that know nothing of frames read
    /// the stream as before. Call before writing anything.
    pub fn framed(mut self, coding: FrameCoding) -> Result<Self> {
        if self.size != 0 {
            bail!("a splitstream can only be made framed before anything is written");
        }
        if let Sink::Stream(_) = self.stream {
            // The unused zstd stream and its (empty) file are dropped.
            self.stream = Sink::Framed(Framed {
                out: BufWriter::with_capacity(256 * 1024, temp_file(self.repo)?),
                raw: Vec::new(),
                coding,
                compressor: {
                    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                        .context("cannot start zstd compression")?;
                    // Each frame carries its checksum: a damaged frame is an
                    // error, never other bytes.
                    c.include_checksum(true)
                        .context("cannot start zstd compression")?;
                    c
                },
                table: Vec::new(),
                compressed: 0,
                inline_at: 0,
                frame_inline: 0,
                frame_externals: 0,
            });
        }
        Ok(self)
    }

    /// Bytes in the frame being built (a framed stream; 0 otherwise),
    /// counting inline bytes not yet emitted.
    pub fn frame_size(&self) -> usize {
        match &self.stream {
            Sink::Framed(f) => f.raw.len() + self.inline.len(),
            _ => 0,
        }
    }

    /// End the current frame of a framed stream here (no-op otherwise, or
    /// when the frame is empty). Everything written so far is emitted
    /// first, so a frame always ends on a chunk boundary.
    pub fn end_frame(&mut self) -> Result<()> {
        if !matches!(self.stream, Sink::Framed(_)) {
            return Ok(());
        }
        self.pump(true)?;
        self.flush_inline()?;
        if let Sink::Framed(f) = &mut self.stream {
            f.end_frame()?;
        }
        Ok(())
    }

    pub fn repository(&self) -> &'r Repository {
        self.repo
    }

    /// Bytes of the reassembled stream so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append bytes stored in the splitstream itself.
    pub fn write_inline(&mut self, data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        if self.queue.is_empty() {
            return self.emit_inline(data);
        }
        self.in_flight += data.len() as u64;
        match self.queue.back_mut() {
            Some(Queued::Inline(v)) => v.extend_from_slice(data),
            _ => self.queue.push_back(Queued::Inline(data.to_vec())),
        }
        self.pump(false)
    }

    fn emit_inline(&mut self, data: &[u8]) -> Result<()> {
        self.inline.extend_from_slice(data);
        if self.inline.len() >= MAX_INLINE_BUFFER {
            if matches!(self.stream, Sink::Framed(_)) {
                self.flush_inline()?;
            } else {
                self.spill_inline()?;
            }
        }
        Ok(())
    }

    /// Move the buffered inline bytes to the end of the spool file.
    fn spill_inline(&mut self) -> Result<()> {
        if self.spill.is_none() {
            self.spill = Some(Spill {
                file: BufWriter::new(temp_file(self.repo)?),
                len: 0,
            });
        }
        let spill = self.spill.as_mut().expect("spill file just made");
        spill
            .file
            .write_all(&self.inline)
            .context("cannot spool inline splitstream bytes")?;
        spill.len += self.inline.len() as u64;
        self.inline.clear();
        Ok(())
    }

    fn flush_inline(&mut self) -> Result<()> {
        let spilled = self.spill.as_ref().map_or(0, |s| s.len);
        if self.inline.is_empty() && spilled == 0 {
            return Ok(());
        }
        let len = (spilled + self.inline.len() as u64) as i64;
        self.stream
            .put(&(-len).to_le_bytes())
            .context("cannot write splitstream")?;
        if let Some(spill) = self.spill.as_mut().filter(|s| s.len > 0) {
            spill
                .file
                .flush()
                .context("cannot spool inline splitstream bytes")?;
            let f = spill.file.get_mut();
            f.seek(SeekFrom::Start(0))
                .context("cannot read spooled splitstream bytes")?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut left = spill.len;
            while left > 0 {
                let n = buf.len().min(left as usize);
                f.read_exact(&mut buf[..n])
                    .context("cannot read spooled splitstream bytes")?;
                self.stream
                    .put(&buf[..n])
                    .context("cannot write splitstream")?;
                left -= n as u64;
            }
            f.seek(SeekFrom::Start(0))
                .context("cannot reuse the splitstream spool file")?;
            f.set_len(0)
                .context("cannot reuse the splitstream spool file")?;
            spill.len = 0;
        }
        self.stream
            .put(&self.inline)
            .context("cannot write splitstream")?;
        if let Sink::Framed(f) = &mut self.stream {
            f.frame_inline += self.inline.len() as u64;
        }
        self.inline.clear();
        Ok(())
    }

    fn object_ref_index(&mut self, id: ObjectId) -> Result<usize> {
        self.object_refs
            .index_of(&id)
            .context("cannot record an object ref")
    }

    /// Record object `id` in the object-ref table without splicing it into
    /// the stream (composefs-rs ostree commit streams refer to file content
    /// by this index from inline data); returns its index.
    pub fn add_object_ref(&mut self, id: ObjectId) -> Result<usize> {
        self.object_ref_index(id)
    }

    /// Append a reference to an object already in the repository, whose
    /// content (`size` bytes) is spliced in at this point.
    pub fn write_object_ref(&mut self, id: ObjectId, size: u64) -> Result<()> {
        self.size += size;
        if self.queue.is_empty() {
            self.emit_object_ref(id)
        } else {
            self.queue.push_back(Queued::Stored { id, size });
            Ok(())
        }
    }

    fn emit_object_ref(&mut self, id: ObjectId) -> Result<()> {
        self.flush_inline()?;
        let idx = self.object_ref_index(id)? as i64;
        if let Sink::Framed(f) = &mut self.stream {
            f.frame_externals += 1;
        }
        self.stream
            .put(&idx.to_le_bytes())
            .context("cannot write splitstream")
    }

    /// Emit queued chunks from the front while their objects are stored;
    /// with `wait`, block until the queue is empty. Also blocks while more
    /// than [`MAX_IN_FLIGHT`] bytes are outstanding.
    fn pump(&mut self, wait: bool) -> Result<()> {
        while let Some(front) = self.queue.front() {
            let block = wait || self.in_flight > MAX_IN_FLIGHT || self.queue.len() > MAX_QUEUED;
            let (id, size, buf) = match front {
                Queued::Inline(_) => {
                    if let Some(Queued::Inline(data)) = self.queue.pop_front() {
                        self.in_flight -= data.len() as u64;
                        self.emit_inline(&data)?;
                    }
                    continue;
                }
                Queued::Stored { id, size } => (*id, *size, None),
                Queued::Object { ticket, size } => {
                    let reply = if block {
                        Some(ticket.take())
                    } else {
                        ticket.try_take()
                    };
                    let Some(reply) = reply else { return Ok(()) };
                    let (id, buf) = reply?;
                    (id, *size, Some(buf))
                }
            };
            self.queue.pop_front();
            if let Some(buf) = buf {
                self.in_flight -= size;
                self.recycle(buf);
            }
            self.emit_object_ref(id)?;
        }
        Ok(())
    }

    /// Store exactly `size` bytes from `r` as an object and splice it in
    /// here; returns the object's id. An input that ends early is an
    /// `UnexpectedEof` error.
    pub fn write_external(&mut self, r: impl Read, size: u64) -> Result<ObjectId> {
        let mut limited = r.take(size);
        let id = if size > BUFFERED_EXTERNAL {
            let mut w = self.repo.object_writer()?;
            let n = io::copy(&mut limited, &mut w)?;
            if n < size {
                return Err(short_read(n, size));
            }
            w.finish()?.0
        } else {
            let buf = self.read_buffer(&mut limited, size)?;
            let id = self.repo.store_bytes(&buf)?;
            self.recycle(buf);
            id
        };
        self.write_object_ref(id, size)?;
        Ok(id)
    }

    /// Like [`Self::write_external`], but with [`Self::parallel`] workers the
    /// object is digested and stored in the background (its id is not
    /// returned). Content over 4 MiB is still stored on the calling thread.
    pub fn queue_external(&mut self, r: impl Read, size: u64) -> Result<()> {
        if self.pool.is_none() || size > BUFFERED_EXTERNAL {
            return self.write_external(r, size).map(drop);
        }
        let buf = self.read_buffer(&mut r.take(size), size)?;
        let ticket = self.pool.as_ref().expect("checked above").submit(buf);
        self.size += size;
        self.in_flight += size;
        self.queue.push_back(Queued::Object { ticket, size });
        self.pump(false)
    }

    /// Keep a few buffers for reuse; large or surplus ones are freed, so
    /// memory does not grow with the number of objects.
    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 8 && buf.capacity() <= 1 << 20 {
            self.spare.push(buf);
        }
    }

    /// Read exactly `size` bytes into a (recycled) buffer.
    fn read_buffer(&mut self, r: &mut impl Read, size: u64) -> Result<Vec<u8>> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(size as usize);
        r.read_to_end(&mut buf)?;
        if (buf.len() as u64) < size {
            return Err(short_read(buf.len() as u64, size));
        }
        Ok(buf)
    }

    /// Record that this stream refers to another stream (by its object id)
    /// under `name`. GC follows these.
    pub fn add_named_ref(&mut self, name: &str, stream: ObjectId) -> Result<()> {
        if name.contains('\0') {
            bail!("named ref {name:?} contains a NUL byte");
        }
        let idx = *self.stream_index.entry(stream).or_insert_with(|| {
            self.stream_refs.push(stream);
            self.stream_refs.len() - 1
        });
        self.named_refs.insert(name.to_string(), idx);
        Ok(())
    }

    /// Write the splitstream into the object store; returns its object id.
    pub fn finish(mut self) -> Result<ObjectId> {
        self.pump(true)?;
        self.pool.take();
        self.flush_inline()?;
        let alg = self.repo.algorithm();
        let out = match std::mem::replace(&mut self.stream, Sink::Done) {
            Sink::Stream(enc) => enc.finish().context("cannot finish zstd stream")?,
            Sink::Framed(mut f) => {
                f.end_frame()?;
                f.write_table()?;
                f.out
            }
            Sink::Done => bail!("splitstream writer used after an error"),
        };
        let mut tmp = out
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write splitstream")?;
        let stream_len = tmp.stream_position().context("cannot write splitstream")?;
        tmp.seek(SeekFrom::Start(0))
            .context("cannot rewind splitstream")?;

        let named = encode_named_refs(&self.named_refs)?;
        let refs_bytes = |v: &[ObjectId]| -> Vec<u8> {
            v.iter().flat_map(|id| id.as_bytes().to_vec()).collect()
        };
        let stream_refs = refs_bytes(&self.stream_refs);
        let object_refs_len = self.object_refs.byte_len();

        let mut at = (HEADER_SIZE + INFO_SIZE) as u64;
        let mut section = |len: usize| {
            let r = at..at + len as u64;
            at += len as u64;
            r
        };
        let info = Info {
            stream_refs: section(stream_refs.len()),
            object_refs: section(object_refs_len as usize),
            named_refs: section(named.len()),
            stream: section(stream_len as usize),
            content_type: self.content_type,
            stream_size: self.size,
        };
        let header = Header {
            algorithm: alg,
            lg_blocksize: Algorithm::LG_BLOCKSIZE,
            info: HEADER_SIZE as u64..(HEADER_SIZE + INFO_SIZE) as u64,
        };
        let mut w = self.repo.object_writer()?;
        let object_refs = &mut self.object_refs;
        let mut write = |w: &mut crate::repository::ObjectWriter<'_>| -> io::Result<()> {
            w.write_all(&header.encode())?;
            w.write_all(&info.encode())?;
            w.write_all(&stream_refs)?;
            object_refs.copy_to(w)?;
            w.write_all(&named)?;
            io::copy(&mut tmp, w)?;
            Ok(())
        };
        write(&mut w).context("cannot write splitstream object")?;
        Ok(w.finish()?.0)
    }
}

/// An unnamed temporary file beside the objects (the same file system, so
/// the finished stream links into place).
fn temp_file(repo: &Repository) -> Result<File> {
    tempfile::tempfile_in(repo.path().join("objects")).with_context(|| {
        format!(
            "cannot create a temporary file in {}/objects",
            repo.path().display()
        )
    })
}

/// Inline bytes of one long run, spooled to disk until the run ends.
struct Spill {
    file: BufWriter<File>,
    len: u64,
}

/// Where the compressed chunk sequence goes.
enum Sink {
    /// One zstd stream (every splitstream but framed ones).
    Stream(zstd::stream::write::Encoder<'static, BufWriter<File>>),
    /// Independent frames and a table of them (see [`super::frames`]).
    Framed(Framed),
    /// Taken apart by `finish` (or `framed`).
    Done,
}

impl Sink {
    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stream(enc) => enc.write_all(data),
            Sink::Framed(f) => {
                f.raw.extend_from_slice(data);
                Ok(())
            }
            Sink::Done => Err(io::Error::other("splitstream writer used after an error")),
        }
    }
}

/// A framed stream being written: the raw chunk bytes of the current
/// frame, the frames done so far.
struct Framed {
    out: BufWriter<File>,
    raw: Vec<u8>,
    coding: FrameCoding,
    compressor: zstd::bulk::Compressor<'static>,
    table: Vec<FrameEntry>,
    /// Compressed bytes written so far.
    compressed: u64,
    /// Inline bytes before the current frame.
    inline_at: u64,
    frame_inline: u64,
    frame_externals: u32,
}

impl Framed {
    fn end_frame(&mut self) -> Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        if self.raw.len() > MAX_FRAME_RAW {
            bail!(
                "a splitstream frame of {} bytes is over the {MAX_FRAME_RAW}-byte limit",
                self.raw.len()
            );
        }
        let packed = match self.coding {
            FrameCoding::Zstd => self
                .compressor
                .compress(&self.raw)
                .context("cannot compress a splitstream frame")?,
            FrameCoding::Stored => frames::stored_frame(&self.raw),
        };
        self.out
            .write_all(&packed)
            .context("cannot write splitstream")?;
        self.table.push(FrameEntry {
            compressed_offset: self.compressed,
            compressed_len: packed.len() as u32,
            raw_len: self.raw.len() as u32,
            inline_offset: self.inline_at,
            inline_len: self.frame_inline as u32,
            externals: self.frame_externals,
        });
        self.compressed += packed.len() as u64;
        self.inline_at += self.frame_inline;
        self.frame_inline = 0;
        self.frame_externals = 0;
        self.raw.clear();
        Ok(())
    }

    fn write_table(&mut self) -> Result<()> {
        let table = frames::encode_table(&self.table);
        self.out
            .write_all(&table)
            .context("cannot write splitstream frame table")
    }
}

fn short_read(got: u64, want: u64) -> anyhow::Error {
    anyhow::Error::new(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("input ended after {got} of {want} bytes"),
    ))
}

/// `"<index>:<name>\0"` records sorted by name, in one zstd frame written
/// by the streaming encoder (no content size in the frame header), also when
/// there are none: the bytes composefs-rs writes.
fn encode_named_refs(refs: &BTreeMap<String, usize>) -> Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)
        .context("cannot compress named refs")?;
    for (name, idx) in refs {
        write!(enc, "{idx}:{name}\0").context("cannot compress named refs")?;
    }
    enc.finish().context("cannot compress named refs")
}
