//! A composefs repository served as plain files: over HTTP(S) by any
//! static server, or a local directory (`file://`). One `ureq` agent is
//! shared by all workers, so connections are kept alive and reused;
//! failures worth another try are marked [`Transient`].

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Where the files come from.
#[derive(Clone)]
pub enum Remote {
    Http { base: String, agent: ureq::Agent },
    Dir(PathBuf),
}

/// A body being read: a response or a local file.
pub type Body = Box<dyn Read + Send>;

impl Remote {
    /// `url`: `http://`, `https://` or `file://` (a plain absolute path
    /// is taken as a directory too). `timeout` bounds connecting and every
    /// read instead of the defaults.
    pub fn new(url: &str, timeout: Option<Duration>) -> Result<Remote> {
        if url.starts_with("http://") || url.starts_with("https://") {
            if timeout.is_some_and(|t| t.is_zero()) {
                bail!("the HTTP timeout must be positive");
            }
            let agent: ureq::Agent = crate::net::http_agent(timeout);
            Ok(Remote::Http {
                base: url.trim_end_matches('/').to_string(),
                agent,
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("{url:?}: a file:// URL needs an absolute path (file:///DIR)");
            }
            Ok(Remote::Dir(PathBuf::from(percent_decode(path))))
        } else if url.starts_with('/') {
            Ok(Remote::Dir(PathBuf::from(url)))
        } else {
            bail!("{url:?}: expected an http://, https:// or file:// URL");
        }
    }

    /// Where `path` (relative to the repository, `/`-separated, each
    /// component a file name as stored) is, for messages.
    pub fn url(&self, path: &str) -> String {
        match self {
            Remote::Http { base, .. } => format!("{base}/{}", encode_path(path)),
            Remote::Dir(d) => format!("file://{}", d.join(path).display()),
        }
    }

    /// Open `path` for reading; `None` when the server has no such file.
    pub fn open(&self, path: &str) -> Result<Option<Body>> {
        let url = self.url(path);
        match self {
            Remote::Http { agent, .. } => Ok(crate::net::get(agent, &url)?
                .map(|body| Box::new(crate::net::body_reader(body, url)) as Body)),
            Remote::Dir(d) => {
                let p = d.join(path);
                tracing::debug!("reading {}", p.display());
                match std::fs::File::open(&p) {
                    Ok(f) => Ok(Some(Box::new(f))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("cannot open {}", p.display())),
                }
            }
        }
    }
}

impl Remote {
    /// The whole of small file `path` (at most `limit` bytes), tried
    /// again on transient failures; `None` when the server has no such
    /// file.
    pub fn read_small(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        crate::net::retry(|| {
            let Some(body) = self.open(path)? else {
                return Ok(None);
            };
            let mut v = Vec::new();
            body.take(limit + 1)
                .read_to_end(&mut v)
                .with_context(|| format!("cannot read {}", self.url(path)))?;
            if v.len() as u64 > limit {
                bail!("{} is larger than {limit} bytes", self.url(path));
            }
            Ok(Some(v))
        })
    }
}

/// A repository path as a URL path: every byte but unreserved ones (and
/// `/` between components) percent-encoded, so that a file named
/// `a%2Fb` (an encoded ref) is asked for as `a%252Fb`.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/@+=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` sequences of a `file://` URL's path decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_for_urls_and_decoded_from_file_urls() {
        assert_eq!(
            encode_path("streams/refs/oci/localhost%2Fapp:1"),
            "streams/refs/oci/localhost%252Fapp:1"
        );
        assert_eq!(encode_path("objects/ab/cd"), "objects/ab/cd");
        assert_eq!(encode_path("a b"), "a%20b");
        assert_eq!(percent_decode("/tmp/a%20b/%2"), "/tmp/a b/%2");
    }
}
