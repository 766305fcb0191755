//! Resuming interrupted pulls: while a pull runs, every verified object
//! it stores is appended to `ostree/partial/<commit>`; a later pull of the
//! same commit starts from what the log holds (file contents whose objects
//! are gone, e.g. after a `gc`, are fetched again). The log is removed
//! when the pull completes. A torn last record is ignored.
//!
//! Record: type u8, checksum[32], u32 length, payload. Payload of metadata:
//! its bytes; of a file: u32 header length, header, u64 size, then
//! 0 + inline content or 1 + object id (digest bytes).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::checksum::{Checksum, ObjType};
use super::commitstream::{Content, Entry, Stored};
use crate::fsverity::ObjectId;
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
    let alg = repo.algorithm();
    while p.len() >= 37 {
        let Some(t) = ObjType::from_u8(p[0]) else {
            break;
        };
        let c = Checksum(p[1..33].try_into().expect("32"));
        let len = u32::from_le_bytes(p[33..37].try_into().expect("4")) as usize;
        let Some(payload) = p.get(37..37 + len) else {
            break;
        };
        p = &p[37 + len..];
        let stored = if t == ObjType::File {
            let Some(parsed) = (|| {
                let hl = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
                let header = payload.get(4..4 + hl)?.to_vec();
                let size = u64::from_le_bytes(payload.get(4 + hl..12 + hl)?.try_into().ok()?);
                let rest = payload.get(12 + hl..)?;
                let content = match rest.first()? {
                    0 => Content::Inline(rest[1..].to_vec()),
                    1 => Content::External(ObjectId::from_bytes(alg, &rest[1..])?),
                    _ => return None,
                };
                Some(Stored::File {
                    header,
                    size,
                    content,
                })
            })() else {
                break;
            };
            parsed
        } else {
            Stored::Meta(payload.to_vec())
        };
        out.push(((c, t), stored));
    }
    out
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

/// Remove a log; one already gone (discarded by another pull) is fine.
fn remove_if_present(p: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}
