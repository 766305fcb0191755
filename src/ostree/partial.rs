//! Resuming interrupted pulls: while a pull runs, every verified object
//! it stores is appended to `ostree/partial/<commit>`; a later pull of the
//! same commit starts from what the log holds (file contents whose objects
//! are gone, e.g. after a `gc`, are fetched again). The log is removed
//! when the pull completes. A torn last record is ignored.
//!
//! A remote commit opened as a lazy tree ([`crate::ostree::remote`]) logs
//! what it fetches to the same file through a [`SharedLog`]: without the
//! pull's lock (a mount lives for days and must not keep a pull of the
//! same commit from resuming), each record in one `write(2)` on an
//! `O_APPEND` descriptor, so that records of concurrent writers (a mount,
//! another mount, a pull, whose buffer holds whole records too) follow each
//! other whole. A pull resumes from everything logged, whoever logged it.
//!
//! Record: type u8, checksum[32], u32 length, payload. Payload of metadata:
//! its bytes; of a file: u32 header length, header, u64 size, then
//! 0 + inline content or 1 + object id (digest bytes).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::checksum::{Checksum, ObjType};
use super::commitstream::{Content, Entry, Stored};
use crate::fsverity::{Algorithm, ObjectId};
use crate::repository::Repository;

pub struct PartialLog {
    path: PathBuf,
    out: BufWriter<File>,
}

fn path(repo: &Repository, commit: &Checksum) -> PathBuf {
    repo.path()
        .join("ostree")
        .join("partial")
        .join(commit.to_hex())
}

fn encode(c: &Checksum, t: ObjType, s: &Stored) -> Vec<u8> {
    let mut payload = Vec::new();
    match s {
        Stored::Meta(b) => payload.extend_from_slice(b),
        Stored::File {
            header,
            size,
            content,
        } => {
            payload.extend_from_slice(&(header.len() as u32).to_le_bytes());
            payload.extend_from_slice(header);
            payload.extend_from_slice(&size.to_le_bytes());
            match content {
                Content::Inline(b) => {
                    payload.push(0);
                    payload.extend_from_slice(b);
                }
                Content::External(id) => {
                    payload.push(1);
                    payload.extend_from_slice(id.as_bytes());
                }
            }
        }
    }
    let mut rec = Vec::with_capacity(37 + payload.len());
    rec.push(t as u8);
    rec.extend_from_slice(&c.0);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&payload);
    rec
}

fn decode(repo: &Repository, data: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut p = data;
    while let Some((e, used)) = decode_one(repo.algorithm(), p) {
        out.push(e);
        p = &p[used..];
    }
    out
}

/// The record at the start of `p` and its length; `None` if torn or not
/// a record.
fn decode_one(alg: Algorithm, p: &[u8]) -> Option<(Entry, usize)> {
    let (t, c, len) = record_head(p)?;
    let payload = p.get(HEAD..HEAD + len)?;
    let stored = if t == ObjType::File {
        let hl = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        let header = payload.get(4..4 + hl)?.to_vec();
        let size = u64::from_le_bytes(payload.get(4 + hl..12 + hl)?.try_into().ok()?);
        let rest = payload.get(12 + hl..)?;
        let content = match rest.first()? {
            0 => Content::Inline(rest[1..].to_vec()),
            1 => Content::External(ObjectId::from_bytes(alg, &rest[1..])?),
            _ => return None,
        };
        Stored::File {
            header,
            size,
            content,
        }
    } else {
        Stored::Meta(payload.to_vec())
    };
    Some((((c, t), stored), HEAD + len))
}

/// Bytes before a record's payload: type, checksum, payload length.
const HEAD: usize = 37;

/// A record's type, checksum and payload length, from its first bytes.
fn record_head(p: &[u8]) -> Option<(ObjType, Checksum, usize)> {
    let h = p.get(..HEAD)?;
    let t = ObjType::from_u8(h[0])?;
    let c = Checksum(h[1..33].try_into().expect("32"));
    let len = u32::from_le_bytes(h[33..37].try_into().expect("4")) as usize;
    Some((t, c, len))
}

impl PartialLog {
    /// Open (or create) the log of `commit`, returning what it already
    /// holds. `None` when another pull of the same commit holds it.
    pub fn open(repo: &Repository, commit: &Checksum) -> Result<Option<(PartialLog, Vec<Entry>)>> {
        let p = path(repo, commit);
        let dir = p.parent().expect("has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        if rustix::fs::flock(
            f.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .is_err()
        {
            return Ok(None);
        }
        let mut data = Vec::new();
        f.read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", p.display()))?;
        let entries = decode(repo, &data);
        Ok(Some((
            PartialLog {
                path: p,
                out: BufWriter::with_capacity(64 * 1024, f),
            },
            entries,
        )))
    }

    pub fn record(&mut self, c: &Checksum, t: ObjType, s: &Stored) -> Result<()> {
        self.out
            .write_all(&encode(c, t, s))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// The pull completed: the log is no longer needed.
    pub fn remove(self) -> Result<()> {
        drop(self.out);
        remove_if_present(&self.path)
    }

    /// Forget the log of `commit`, which is stored: a pull killed after
    /// naming its stream never removed it. A log another pull holds is
    /// left to that pull.
    pub fn discard(repo: &Repository, commit: &Checksum) -> Result<()> {
        let p = path(repo, commit);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", p.display())),
        };
        if rustix::fs::flock(
            f.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .is_err()
        {
            return Ok(());
        }
        remove_if_present(&p)
    }
}

/// Where a record sits in a log: its offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub len: u32,
}

/// A logged object and where its record is.
pub type Logged = ((Checksum, ObjType), Position);

/// A commit's log appended to without its lock, read back by position
/// (see the module comment). What a remote tree fetched is both its
/// cache (read again by position while the tree lives, and by the next
/// tree of the same commit) and what a pull resumes from.
pub struct SharedLog {
    path: PathBuf,
    file: File,
    alg: Algorithm,
    /// Held across a write and the look at where it went.
    append: Mutex<()>,
}

impl SharedLog {
    /// Open (or create) the log of `commit`, with the position of every
    /// whole record it holds (the last of a torn tail left out).
    pub fn open(repo: &Repository, commit: &Checksum) -> Result<(SharedLog, Vec<Logged>)> {
        let p = path(repo, commit);
        let dir = p.parent().expect("has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        let positions = scan(&file).with_context(|| format!("cannot read {}", p.display()))?;
        Ok((
            SharedLog {
                path: p,
                file,
                alg: repo.algorithm(),
                append: Mutex::new(()),
            },
            positions,
        ))
    }

    /// Append a record in one write; returns where it went.
    pub fn append(&self, c: &Checksum, t: ObjType, s: &Stored) -> Result<Position> {
        let rec = encode(c, t, s);
        let len = u32::try_from(rec.len()).context("record too large")?;
        let what = || format!("cannot write {}", self.path.display());
        let _g = self.append.lock().unwrap_or_else(|e| e.into_inner());
        (&self.file).write_all(&rec).with_context(what)?;
        // O_APPEND: this descriptor's offset is now the end of what it
        // wrote, whatever other writers appended before.
        let end = (&self.file).stream_position().with_context(what)?;
        Ok(Position {
            offset: end - u64::from(len),
            len,
        })
    }

    /// The record at `pos`: `None` if it is not one (a damaged log).
    pub fn read(&self, pos: Position) -> Result<Option<Entry>> {
        let mut buf = vec![0u8; pos.len as usize];
        self.file
            .read_exact_at(&mut buf, pos.offset)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(decode_one(self.alg, &buf)
            .filter(|(_, used)| *used == buf.len())
            .map(|(e, _)| e))
    }
}

/// The positions of a log's whole records, from its start.
fn scan(file: &File) -> std::io::Result<Vec<Logged>> {
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(64 * 1024, file);
    r.rewind()?;
    let mut out = Vec::new();
    let mut offset = 0u64;
    while size - offset >= HEAD as u64 {
        let mut head = [0u8; HEAD];
        r.read_exact(&mut head)?;
        let Some((t, c, len)) = record_head(&head) else {
            break;
        };
        let total = (HEAD + len) as u64;
        let Ok(total32) = u32::try_from(total) else {
            break;
        };
        if offset + total > size {
            break;
        }
        out.push((
            (c, t),
            Position {
                offset,
                len: total32,
            },
        ));
        r.seek_relative(len as i64)?;
        offset += total;
    }
    Ok(out)
}

/// Remove a log; one already gone (discarded by another pull) is fine.
fn remove_if_present(p: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: u8) -> Stored {
        Stored::Meta(vec![n; 100 + n as usize])
    }

    #[test]
    fn shared_appends_read_back_and_a_pull_resumes_from_them() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(&tmp.path().join("repo"), Algorithm::Sha256).unwrap();
        let commit = Checksum([7; 32]);
        let (a, found) = SharedLog::open(&repo, &commit).unwrap();
        assert!(found.is_empty());
        let (b, _) = SharedLog::open(&repo, &commit).unwrap();
        let file = Stored::File {
            header: vec![1, 2, 3],
            size: 2,
            content: Content::Inline(vec![9, 9]),
        };
        // Two descriptors appending from several threads: whole records.
        let positions: Vec<(Checksum, ObjType, Stored, Position)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8u8)
                .map(|k| {
                    let (log, file) = (if k % 2 == 0 { &a } else { &b }, file.clone());
                    s.spawn(move || {
                        (0..50u8)
                            .map(|i| {
                                let mut c = Checksum([0; 32]);
                                (c.0[0], c.0[1]) = (k, i);
                                let (t, st) = match i % 3 {
                                    0 => (ObjType::File, file.clone()),
                                    _ => (ObjType::DirTree, meta(i)),
                                };
                                let pos = log.append(&c, t, &st).unwrap();
                                (c, t, st, pos)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        for (c, t, st, pos) in &positions {
            assert_eq!(a.read(*pos).unwrap(), Some(((*c, *t), st.clone())));
        }
        // A torn record at the end is left out.
        (&b.file)
            .write_all(&encode(&commit, ObjType::DirTree, &meta(3))[..20])
            .unwrap();
        let (_, found) = SharedLog::open(&repo, &commit).unwrap();
        assert_eq!(found.len(), 400);
        let mut want: Vec<_> = positions
            .iter()
            .map(|(c, t, _, p)| ((*c, *t), *p))
            .collect();
        want.sort_by_key(|(_, p)| p.offset);
        assert_eq!(found, want);
        // What a pull resumes from: all of it.
        let (_, entries) = PartialLog::open(&repo, &commit).unwrap().unwrap();
        assert_eq!(entries.len(), 400);
        // Not a record at a position: `None`.
        let bad = Position {
            offset: want[0].1.offset + 1,
            len: want[0].1.len,
        };
        assert_eq!(a.read(bad).unwrap(), None);
    }
}
