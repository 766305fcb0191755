//! A remote ostree repository (archive mode) served as static files over
//! HTTP(S). One `ureq` agent is shared by all workers, so connections are
//! kept alive and reused; transient failures are marked for retry.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::checksum::{Checksum, ObjType, object_path};
use super::source::{FileObject, RepoMode, Source, filez_object, mode_from_config};
use crate::net::{Transient, retry};

pub struct HttpSource {
    base: String,
    agent: ureq::Agent,
    mode: RepoMode,
}

impl HttpSource {
    /// `timeout`, when given, bounds connecting and every read instead of
    /// the defaults.
    pub fn new(url: &str, timeout: Option<Duration>) -> Result<HttpSource> {
        if timeout.is_some_and(|t| t.is_zero()) {
            bail!("the HTTP timeout must be positive");
        }
        let agent: ureq::Agent = crate::net::http_agent(timeout);
        let mut s = HttpSource {
            base: url.trim_end_matches('/').to_string(),
            agent,
            mode: RepoMode::Archive,
        };
        let config = retry(|| s.read("config", 1 << 20))
            .with_context(|| format!("cannot read the config of {url}"))?;
        if let Some(text) = config {
            let mode = mode_from_config(&String::from_utf8_lossy(&text))?;
            if mode != RepoMode::Archive {
                bail!(
                    "{url} is a {mode:?} repository; only archive repositories can be pulled over HTTP"
                );
            }
            s.mode = mode;
        } else {
            bail!("{url} is not an ostree repository (no config)");
        }
        Ok(s)
    }

    /// The URL of object (`csum`, `objtype`), for requests and messages.
    pub fn object_url(&self, csum: &Checksum, objtype: ObjType) -> String {
        format!("{}/{}", self.base, object_path(csum, objtype))
    }

    /// The first `n` bytes of file object `csum`'s `.filez` (one `Range`
    /// request; nothing more is read) and whether they are the whole
    /// object. Unverified: the caller checks what it uses.
    pub fn file_prefix(&self, csum: &Checksum, n: u64) -> Result<(Vec<u8>, bool)> {
        let url = self.object_url(csum, ObjType::File);
        let (body, total) = crate::net::get_prefix(&self.agent, &url, n)
            .with_context(|| format!("file object {csum}"))?
            .with_context(|| format!("file object {csum}: {url} not found"))?;
        let mut buf = Vec::new();
        crate::net::body_reader(body, url.clone())
            .take(n + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("file object {csum}"))?;
        let got = buf.len() as u64;
        let whole = match total {
            // A part: exactly what was asked for, or the whole if smaller.
            Some(t) => {
                if got != t.min(n) {
                    return Err(Transient(format!(
                        "file object {csum}: {url} sent {got} bytes of a part of {}",
                        t.min(n)
                    ))
                    .into());
                }
                got == t
            }
            // The whole object (ranges ignored): as much as was read.
            None => got <= n,
        };
        buf.truncate(n as usize);
        Ok((buf, whole))
    }

    /// GET `path`; `None` on 404/410.
    fn get(&self, path: &str) -> Result<Option<ureq::Body>> {
        crate::net::get(&self.agent, &format!("{}/{}", self.base, path))
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn mode(&self) -> RepoMode {
        self.mode
    }

    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(body) = self.get(path)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        body.into_with_config()
            .limit(limit)
            .reader()
            .read_to_end(&mut buf)
            .map_err(|e| {
                let over = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<ureq::Error>())
                    .is_some_and(|u| matches!(u, ureq::Error::BodyExceedsLimit(_)));
                if over {
                    anyhow::anyhow!("{}/{path} is larger than {limit} bytes", self.base)
                } else {
                    Transient(format!("reading {}/{path}: {e}", self.base)).into()
                }
            })?;
        Ok(Some(buf))
    }

    fn file(&self, csum: &Checksum) -> Result<FileObject> {
        let path = object_path(csum, ObjType::File);
        let body = self
            .get(&path)
            .with_context(|| format!("file object {csum}"))?
            .with_context(|| format!("file object {csum}: {}/{path} not found", self.base))?;
        let reader = crate::net::body_reader(body, format!("{}/{path}", self.base));
        filez_object(Box::new(reader), &format!("file object {csum}"))
    }
}
