//! The OCI distribution-spec (registry API v2) client: manifests by tag or
//! digest, blobs streamed, token (Bearer) and Basic authentication with the
//! credentials podman, skopeo and docker store, redirects to blob storage,
//! retries of transient failures.
//!
//! One [`Registry`] talks to one repository. It holds one `ureq` agent
//! (connections are kept alive and reused) and the authorization it
//! negotiated, and can be shared by the threads that download layers.
//!
//! Security notes:
//! - our `Authorization` header only goes to the registry's own origin
//!   (scheme, host and port); blob storage a registry redirects to never
//!   sees it;
//! - nothing is trusted: a manifest asked for by digest is checked here,
//!   blobs are checked by the pull while it reads them (a body longer or
//!   shorter than the descriptor's size is an error here);
//! - repository names, tags and digests are validated before they become
//!   part of a URL.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;

use super::reference::is_tag;
use super::source::{Fetched, ImageSource};
use super::spec::{self, Digest, MANIFEST_TYPES};

/// The largest manifest or index we accept (the distribution spec lets
/// registries refuse more than 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// The largest token-endpoint answer we read.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// How much of an error body we read, and how much of it we show.
const ERROR_BODY_READ: u64 = 4096;
const ERROR_BODY_SHOWN: usize = 200;
/// Backoff between attempts: 200 ms, 400 ms, 800 ms… up to 10 s (or what
/// `Retry-After` asks, up to a minute).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The host Docker Hub's API is served from.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Plain HTTP even for a remote host.
    pub insecure: bool,
    /// The credentials file (containers-auth.json / docker config.json
    /// format) instead of the usual places.
    pub auth_file: Option<PathBuf>,
    /// Connect timeout, and how long any single read (response headers, a
    /// chunk of a body) may wait. A stalled server fails the request.
    pub timeout: Duration,
    /// How many times a transient failure (connection error, timeout, 408,
    /// 429, 5xx) is retried before any byte of a body is handed out.
    pub retries: u32,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: false,
            auth_file: None,
            timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

/// One repository of one registry, e.g. `docker.io` + `library/debian`.
pub struct Registry {
    /// The host as named (`docker.io`, `127.0.0.1:5000`), for messages.
    host: String,
    repository: String,
    /// `scheme://api-host`, the prefix of every URL.
    base: String,
    /// The normalized origin of `base`: the only one that gets our
    /// `Authorization`.
    origin: String,
    agent: ureq::Agent,
    /// `base64(user:password)` for this registry, if any was found.
    credentials: Option<String>,
    /// The credential files consulted (for messages).
    auth_files: Vec<PathBuf>,
    /// The `Authorization` value negotiated so far (a bearer token, or
    /// Basic credentials after a Basic challenge), sent with every request.
    authorization: Mutex<Option<String>>,
    retries: u32,
}

// Parallel layer downloads share one Registry.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
};

type Response = ureq::http::Response<ureq::Body>;

/// Why one attempt failed: worth another (after an optional delay the
/// server asked for), or not.
enum Failure {
    Retry(anyhow::Error, Option<Duration>),
    Fatal(anyhow::Error),
}

type Attempt<T> = std::result::Result<T, Failure>;

impl Registry {
    /// A client for `repository` on `host` (`host[:port]`, without a
    /// scheme). Validates the names and reads the credentials; does not
    /// touch the network.
    pub fn new(host: &str, repository: &str, opts: &RegistryOptions) -> Result<Registry> {
        validate_host(host)?;
        let docker_hub = is_docker_hub(host);
        // Docker Hub's official images live under `library/`.
        let repository = if docker_hub && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        validate_repository(&repository)?;
        if opts.timeout.is_zero() {
            bail!("the registry timeout must be positive");
        }

        let api_host = if docker_hub {
            DOCKER_HUB_API.to_string()
        } else {
            host.to_string()
        };
        let scheme = if opts.insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        };
        let base = format!("{scheme}://{api_host}");
        let origin = origin_of(&base).with_context(|| format!("bad registry host {host:?}"))?;

        let (credentials, auth_files) =
            load_credentials(opts.auth_file.as_deref(), host, &repository)?;

        let t = Some(opts.timeout);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed by hand, to control where our
            // Authorization goes.
            .max_redirects(0)
            .timeout_resolve(t)
            .timeout_connect(t)
            .timeout_send_request(t)
            .timeout_recv_response(t)
            .timeout_per_read(t)
            .timeout_per_write(t)
            .timeout_recv_body(None)
            .max_idle_connections_per_host(64)
            // Blobs are compressed already; a transparently decoded body
            // would not match its digest.
            .accept_encoding("identity")
            .user_agent(concat!("composefs/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();

        Ok(Registry {
            host: host.to_string(),
            repository,
            base,
            origin,
            agent,
            credentials,
            auth_files,
            authorization: Mutex::new(None),
            retries: opts.retries,
        })
    }

    /// The repository, as used in URLs (`library/debian`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.base.split_once("://").map_or("https", |(s, _)| s)
    }

    /// `docker://host/repo: <msg>`.
    fn error(&self, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: {msg}", self.describe())
    }

    fn cached_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_authorization(&self, value: String) {
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    /// GET `path` of the registry, then `then` on the 2xx response, with
    /// retries of transient failures of either (`then` must not hand out
    /// any byte before it returns).
    fn get<T>(
        &self,
        path: &str,
        accept: Option<&str>,
        what: &str,
        mut then: impl FnMut(Response) -> Attempt<T>,
    ) -> Result<T> {
        let url = format!("{}{}", self.base, path);
        let mut attempt = 0u32;
        loop {
            match self.try_get(&url, accept, what).and_then(&mut then) {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e, after)) => {
                    if attempt >= self.retries {
                        if attempt == 0 {
                            return Err(e);
                        }
                        return Err(anyhow!("{e:#} (gave up after {} attempts)", attempt + 1));
                    }
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << attempt.min(16))
                        .min(MAX_BACKOFF);
                    std::thread::sleep(after.map_or(backoff, |a| a.max(backoff)));
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt: the request with what authorization we have, the
    /// challenge answered if the registry asks, the status judged.
    fn try_get(&self, url: &str, accept: Option<&str>, what: &str) -> Attempt<Response> {
        let cached = self.cached_authorization();
        let auth = cached.as_deref().map(|v| (self.origin.as_str(), v));
        let (mut resp, mut at) = self.follow(url, accept, auth, what)?;
        if resp.status().as_u16() == 401 && origin_of(&at).as_deref() == Some(self.origin.as_str())
        {
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            if !challenges.is_empty() {
                let value = self.answer(&challenges, what)?;
                self.set_authorization(value.clone());
                (resp, at) = self.follow(url, accept, Some((&self.origin, &value)), what)?;
            }
        }
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(resp),
            404 => {
                let detail = error_detail(resp);
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                Err(Failure::Fatal(self.error(format!("no {what}{detail}"))))
            }
            s if crate::net::is_transient_status(s) => {
                let after = retry_after(&resp);
                Err(Failure::Retry(
                    self.error(format!("{what}: {}", status_message(resp, &at))),
                    after,
                ))
            }
            _ => {
                let hint = if status == 401 {
                    match &self.credentials {
                        Some(_) => format!(
                            " (with the credentials for {} found in {})",
                            self.host,
                            self.files()
                        ),
                        None => format!(" (no credentials for {} in {})", self.host, self.files()),
                    }
                } else {
                    String::new()
                };
                Err(Failure::Fatal(self.error(format!(
                    "{what}: {}{hint}",
                    status_message(resp, &at)
                ))))
            }
        }
    }

    fn files(&self) -> String {
        if self.auth_files.is_empty() {
            return "any credentials file (none of $REGISTRY_AUTH_FILE, \
                    $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, \
                    ~/.docker/config.json exists; see --authfile)"
                .to_string();
        }
        self.auth_files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// GET `url`, following redirects. `auth` (origin, header value) is
    /// sent only to URLs of that origin. Returns the final response and
    /// its URL.
    fn follow(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: Option<(&str, &str)>,
        what: &str,
    ) -> Attempt<(Response, String)> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url);
            if let Some(accept) = accept {
                req = req.header("Accept", accept);
            }
            if let Some((origin, value)) = auth
                && origin_of(&url).as_deref() == Some(origin)
            {
                req = req.header("Authorization", value);
            }
            let resp = req
                .call()
                .map_err(|e| self.transport_failure(what, &url, e))?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        Failure::Fatal(self.error(format!(
                            "{what}: GET {}: HTTP {status} without a Location",
                            redact(&url)
                        )))
                    })?;
                url = resolve_location(&url, location).ok_or_else(|| {
                    Failure::Fatal(self.error(format!(
                        "{what}: GET {}: cannot follow a redirect to {location:?}",
                        redact(&url)
                    )))
                })?;
                continue;
            }
            return Ok((resp, url));
        }
        Err(Failure::Fatal(self.error(format!(
            "{what}: more than {MAX_REDIRECTS} redirects"
        ))))
    }

    fn transport_failure(&self, what: &str, url: &str, e: ureq::Error) -> Failure {
        let err = self.error(format!("{what}: GET {}: {e}", redact(url)));
        match e {
            ureq::Error::Timeout(_)
            | ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::BodyStalled
            | ureq::Error::Protocol(_) => Failure::Retry(err, None),
            _ => Failure::Fatal(err),
        }
    }

    /// The `Authorization` value that answers the registry's challenges.
    fn answer(&self, challenges: &[Challenge], what: &str) -> Attempt<String> {
        if let Some(c) = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        {
            let Some(realm) = c.param("realm") else {
                return Err(Failure::Fatal(
                    self.error(format!("{what}: a Bearer challenge without a realm")),
                ));
            };
            let default_scope = format!("repository:{}:pull", self.repository);
            let scope = c.param("scope").unwrap_or(&default_scope);
            let token = self.fetch_token(realm, c.param("service"), scope, what)?;
            return Ok(format!("Bearer {token}"));
        }
        if challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
        {
            return match &self.credentials {
                Some(creds) => Ok(format!("Basic {creds}")),
                None => Err(Failure::Fatal(self.error(format!(
                    "{what}: the registry requires a login, and there are no credentials for {} in {}",
                    self.host,
                    self.files()
                )))),
            };
        }
        let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(Failure::Fatal(self.error(format!(
            "{what}: unsupported authentication scheme {}",
            schemes.join(", ")
        ))))
    }

    /// A token from a Bearer challenge's realm (with our Basic credentials
    /// when we have some, anonymous otherwise).
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        what: &str,
    ) -> Attempt<String> {
        let Some(realm_origin) = origin_of(realm) else {
            return Err(Failure::Fatal(self.error(format!(
                "{what}: the token realm {realm:?} is not an http(s) URL"
            ))));
        };
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(service) = service {
            url.push(sep);
            url.push_str("service=");
            url.push_str(&percent_encode(service));
            sep = '&';
        }
        for s in scope.split_whitespace() {
            url.push(sep);
            url.push_str("scope=");
            url.push_str(&percent_encode(s));
            sep = '&';
        }
        let basic = self.credentials.as_ref().map(|c| format!("Basic {c}"));
        let token_what = format!("{what}: token for {scope:?}");
        let (resp, at) = self.follow(
            &url,
            Some("application/json"),
            basic.as_deref().map(|b| (realm_origin.as_str(), b)),
            &token_what,
        )?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            s if crate::net::is_transient_status(s) => {
                let after = retry_after(&resp);
                return Err(Failure::Retry(
                    self.error(format!("{token_what}: {}", status_message(resp, &at))),
                    after,
                ));
            }
            _ => {
                let hint = match (&self.credentials, status) {
                    (Some(_), 401 | 403) => {
                        format!(" (credentials from {} refused?)", self.files())
                    }
                    _ => String::new(),
                };
                return Err(Failure::Fatal(self.error(format!(
                    "{token_what}: {}{hint}",
                    status_message(resp, &at)
                ))));
            }
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_with_config()
            .reader()
            .take(MAX_TOKEN_RESPONSE)
            .read_to_end(&mut body)
            .map_err(|e| Failure::Retry(self.error(format!("{token_what}: {e}")), None))?;

        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Failure::Fatal(self.error(format!(
                "{token_what}: malformed answer from {}: {e}",
                redact(&at)
            )))
        })?;
        match parsed.token.or(parsed.access_token) {
            Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(t),
            _ => Err(Failure::Fatal(self.error(format!(
                "{token_what}: {} answered without a usable token",
                redact(&at)
            )))),
        }
    }
}

impl ImageSource for Registry {
    fn manifest(&self, reference: &str) -> Result<Fetched> {
        let digest = if reference.contains(':') {
            Some(
                Digest::parse(reference)
                    .map_err(|e| self.error(format!("manifest reference {reference:?}: {e}")))?,
            )
        } else if is_tag(reference) {
            None
        } else {
            return Err(self.error(format!(
                "malformed manifest reference {reference:?} (a tag or sha256:<hex>)"
            )));
        };
        let what = format!("manifest {reference}");
        let accept = MANIFEST_TYPES.join(", ");
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let too_big = |n: String| {
            Failure::Fatal(self.error(format!(
                "{what}: larger than {MAX_MANIFEST_SIZE} bytes ({n})"
            )))
        };
        let (bytes, content_type) = self.get(&path, Some(&accept), &what, |resp| {
            if content_length(&resp).is_some_and(|n| n > MAX_MANIFEST_SIZE as u64) {
                return Err(too_big(format!(
                    "{} bytes announced",
                    content_length(&resp).unwrap_or(0)
                )));
            }
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            let mut buf = Vec::new();
            resp.into_body()
                .into_with_config()
                .reader()
                .take(MAX_MANIFEST_SIZE as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Retry(self.error(format!("{what}: reading: {e}")), None))?;
            if buf.len() > MAX_MANIFEST_SIZE {
                return Err(too_big("more was sent".to_string()));
            }
            Ok((buf, content_type))
        })?;

        if let Some(digest) = &digest {
            let actual = Digest::of(&bytes);
            if &actual != digest {
                return Err(self.error(format!(
                    "{what}: digest mismatch: the registry sent a document whose digest is {actual}"
                )));
            }
        }
        let media_type = media_type_of(&content_type, &bytes).ok_or_else(|| {
            self.error(format!(
                "{what}: no media type (Content-Type {content_type:?}, none in the document)"
            ))
        })?;
        Ok(Fetched { bytes, media_type })
    }

    fn blob(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + Send + '_>> {
        let what = format!("blob {digest}");
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let reader = self.get(&path, None, &what, |resp| {
            if let Some(n) = content_length(&resp)
                && n != size
            {
                return Err(Failure::Fatal(self.error(format!(
                    "{what}: the registry announces {n} bytes, the descriptor {size}"
                ))));
            }
            Ok(resp.into_body().into_with_config().reader())
        })?;
        Ok(Box::new(BlobReader {
            inner: reader,
            size,
            remaining: size,
            what: self.error(what).to_string(),
        }))
    }

    fn describe(&self) -> String {
        format!("docker://{}/{}", self.host, self.repository)
    }
}

/// A blob's body: exactly `size` bytes, errors say which blob.
struct BlobReader {
    inner: ureq::BodyReader<'static>,
    size: u64,
    remaining: u64,
    what: String,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        if buf.is_empty() {
            return Ok(0);
        }
        // Network trouble: the pull may start the blob again.
        let wrap = |e: Error, what: &str| {
            Error::new(e.kind(), crate::net::Transient(format!("{what}: {e}")))
        };
        if self.remaining == 0 {
            let mut extra = [0u8; 1];
            return match self.inner.read(&mut extra) {
                Ok(0) => Ok(0),
                Ok(_) => Err(Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: longer than its {} bytes", self.what, self.size),
                )),
                Err(e) => Err(wrap(e, &self.what)),
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..n]) {
            Ok(0) => Err(Error::new(
                ErrorKind::UnexpectedEof,
                crate::net::Transient(format!(
                    "{}: the body ended after {} of {} bytes",
                    self.what,
                    self.size - self.remaining,
                    self.size
                )),
            )),
            Ok(k) => {
                self.remaining -= k as u64;
                Ok(k)
            }
            Err(e) => Err(wrap(e, &self.what)),
        }
    }
}

fn content_length(resp: &Response) -> Option<u64> {
    if resp.headers().contains_key("content-encoding") {
        return None;
    }
    resp.headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Retry-After: <seconds>`, capped.
fn retry_after(resp: &Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// `HTTP 403 Forbidden: DENIED: …` (and where, when it was not the URL
/// asked for).
fn status_message(resp: Response, at: &str) -> String {
    let status = resp.status();
    let reason = status.canonical_reason().unwrap_or("");
    let detail = error_detail(resp);
    let mut msg = format!("HTTP {}", status.as_u16());
    if !reason.is_empty() {
        msg.push(' ');
        msg.push_str(reason);
    }
    if !detail.is_empty() {
        msg.push_str(": ");
        msg.push_str(&detail);
    }
    msg.push_str(&format!(" (GET {})", redact(at)));
    msg
}

/// The start of an error body: the registry's `{"errors":[{code,
/// message}]}` as `CODE: message`, else the first bytes of the text.
fn error_detail(resp: Response) -> String {
    let mut buf = Vec::new();
    let _ = resp
        .into_body()
        .into_with_config()
        .reader()
        .take(ERROR_BODY_READ)
        .read_to_end(&mut buf);
    summarize_error_body(&buf)
}

pub fn summarize_error_body(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let text = match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| match (&e.code, &e.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => "?".to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_SHOWN)]).into_owned(),
    };
    // Printable, one line, bounded: it is the server's text in our message.
    let mut out = String::new();
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > ERROR_BODY_SHOWN {
        out = out.chars().take(ERROR_BODY_SHOWN).collect::<String>() + "…";
    }
    out
}

/// The media type of a manifest: the Content-Type, unless it is missing
/// or generic; then the document's own ([`spec::document_media_type`]).
pub fn media_type_of(content_type: &str, bytes: &[u8]) -> Option<String> {
    if !matches!(
        content_type,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    ) {
        return Some(content_type.to_string());
    }
    spec::document_media_type(bytes)
}

fn is_docker_hub(host: &str) -> bool {
    ["docker.io", "index.docker.io", DOCKER_HUB_API]
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h))
}

/// The host name without the port (`[::1]` keeps its brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    }
}

/// Hosts spoken to over plain HTTP without being told.
fn is_loopback(host: &str) -> bool {
    let name = host_name(host);
    name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost") || name == "[::1]"
}

fn validate_host(host: &str) -> Result<()> {
    if host.contains("://") {
        bail!("registry host {host:?}: give the host without a scheme");
    }
    let ok = !host.is_empty()
        && host.len() <= 255
        && !host.starts_with(['.', '-', ':'])
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    if !ok {
        bail!("malformed registry host {host:?} (host[:port])");
    }
    if let Some(port) = host
        .strip_prefix(host_name(host))
        .and_then(|p| p.strip_prefix(':'))
        && port.parse::<u16>().is_err()
    {
        bail!("malformed registry host {host:?}: bad port {port:?}");
    }
    Ok(())
}

/// The distribution spec's repository grammar: path components of
/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes, separated by `/`.
pub fn validate_repository(name: &str) -> Result<()> {
    fn component_ok(c: &str) -> bool {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    }
    if name.is_empty() || name.len() > 255 || !name.split('/').all(component_ok) {
        bail!(
            "invalid repository name {name:?}: lowercase letters and digits, joined by '.', '_', '__' or '-', in '/'-separated components"
        );
    }
    Ok(())
}

/// One authentication challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    /// Names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `Bearer realm="…",service="…",scope="a,b"`, possibly several challenges
/// in one header (`Basic realm="x", Bearer realm="y"`). Quoted values may
/// hold commas and backslash escapes.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let is_sep = |c: u8| c == b',' || c.is_ascii_whitespace();
    let mut out: Vec<Challenge> = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && is_sep(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !is_sep(b[i]) && b[i] != b'=' {
            i += 1;
        }
        let token = &header[start..i];
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' {
            // name=value (or a token68's padding when the name is empty).
            i = j + 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < b.len() {
                    match b[i] {
                        b'\\' if i + 1 < b.len() => {
                            v.push(b[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        c => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                String::from_utf8_lossy(&v).into_owned()
            } else {
                let vs = i;
                while i < b.len() && !is_sep(b[i]) {
                    i += 1;
                }
                header[vs..i].to_string()
            };
            if !token.is_empty()
                && let Some(c) = out.last_mut()
            {
                c.params.push((token.to_ascii_lowercase(), value));
            }
        } else if !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_string(),
                params: Vec::new(),
            });
        }
    }
    out
}

/// Query-component encoding: everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `(scheme, authority, rest)` of an absolute URL.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// `scheme://host[:port]`, lowercased, default port dropped, userinfo
/// dropped: what decides where our Authorization may go.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, authority, _) = split_url(url)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, a)| a)
        .to_ascii_lowercase();
    if authority.is_empty() {
        return None;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

/// A `Location` resolved against the URL that answered it.
pub fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    if let Some((scheme, _)) = location.split_once("://")
        && !scheme.contains(['/', '?', '#'])
    {
        return origin_of(location).map(|_| location.to_string());
    }
    let (scheme, authority, rest) = split_url(base)?;
    if location.starts_with("//") {
        return Some(format!("{scheme}:{location}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// A URL for messages: without its query (pre-signed blob URLs carry
/// credentials there).
fn redact(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    /// Registry (host, or a key like those of `auths`) → credential
    /// helper name: `docker-credential-<name>` is asked.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    /// The credential helper for every registry without a `credHelpers`
    /// entry (docker's `credsStore`).
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The credential files to look at, in order: `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config`),
/// `~/.docker/config.json`.
fn auth_file_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        c.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        c.push(PathBuf::from(p).join("containers/auth.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(p) => c.push(PathBuf::from(p).join("containers/auth.json")),
        None => c.extend(
            home.as_ref()
                .map(|h| h.join(".config/containers/auth.json")),
        ),
    }
    c.extend(home.map(|h| h.join(".docker/config.json")));
    c
}

/// The credentials for `host`/`repository` and the files consulted.
fn load_credentials(
    given: Option<&std::path::Path>,
    host: &str,
    repository: &str,
) -> Result<(Option<String>, Vec<PathBuf>)> {
    // A given file is the only one; otherwise the first of the usual
    // places that has credentials for this registry (containers-auth.json(5)).
    let files: Vec<PathBuf> = match given {
        Some(p) => {
            if !p.exists() {
                bail!("the credentials file {} does not exist", p.display());
            }
            vec![p.to_path_buf()]
        }
        None => auth_file_candidates()
            .into_iter()
            .filter(|p| p.is_file())
            .collect(),
    };
    let mut consulted = Vec::new();
    for file in files {
        let text = std::fs::read(&file)
            .with_context(|| format!("cannot read the credentials file {}", file.display()))?;
        let parsed: AuthFile = serde_json::from_slice(&text)
            .with_context(|| format!("malformed credentials file {}", file.display()))?;
        let creds = file_credentials(&parsed, host, repository)
            .with_context(|| format!("credentials file {}", file.display()))?;
        consulted.push(file);
        if creds.is_some() {
            return Ok((creds, consulted));
        }
    }
    Ok((None, consulted))
}

/// The credentials `file` gives for `host`/`repository`, as docker
/// decides: a `credHelpers` entry for the registry, else `credsStore`,
/// else the `auths` entries.
fn file_credentials(file: &AuthFile, host: &str, repository: &str) -> Result<Option<String>> {
    let want = if is_docker_hub(host) {
        "docker.io".to_string()
    } else {
        host.to_ascii_lowercase()
    };
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| auth_key(k).0 == want)
        .map(|(_, v)| v)
        .or(file.creds_store.as_ref())
        .filter(|h| !h.is_empty());
    match helper {
        Some(h) => helper_credentials(h, host),
        None => find_credentials(file, host, repository),
    }
}

/// Ask the credential helper `docker-credential-NAME get` for `host`
/// (docker-credential-helpers' protocol: the server on stdin, JSON with
/// `Username` and `Secret` on stdout; "not found" is no credentials).
fn helper_credentials(name: &str, host: &str) -> Result<Option<String>> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("bad credential helper name {name:?}");
    }
    let program = format!("docker-credential-{name}");
    // Docker Hub's credentials are stored under its legacy URL.
    let server = if is_docker_hub(host) {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    };
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the credential helper {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        // A helper that exits without reading is judged by its output.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("credential helper {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        let msg = if stdout.trim().is_empty() {
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        } else {
            stdout.trim().to_string()
        };
        bail!("credential helper {program} failed for {server}: {msg}");
    }
    #[derive(Deserialize)]
    struct HelperReply {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let reply: HelperReply = serde_json::from_str(stdout.trim())
        .with_context(|| format!("credential helper {program}: malformed answer"))?;
    if reply.username == "<token>" {
        bail!("credential helper {program} gave an identity token for {server}: not supported");
    }
    if reply.username.is_empty() && reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(
        format!("{}:{}", reply.username, reply.secret).as_bytes(),
    )))
}

/// The host (Docker Hub's aliases as `docker.io`) and namespace a key of
/// `auths` names. URL keys (`https://index.docker.io/v1/`) name a host.
fn auth_key(key: &str) -> (String, String) {
    let (is_url, rest) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(r) => (true, r),
        None => (false, key),
    };
    let rest = rest.trim_end_matches('/');
    let (h, p) = rest.split_once('/').unwrap_or((rest, ""));
    let h = if is_docker_hub(h) {
        "docker.io".to_string()
    } else {
        h.to_ascii_lowercase()
    };
    (h, if is_url { String::new() } else { p.to_string() })
}

/// The most specific entry of `auths` for `host`/`repository`, as
/// `base64(user:password)`.
fn find_credentials(file: &AuthFile, host: &str, repository: &str) -> Result<Option<String>> {
    let want = if is_docker_hub(host) {
        "docker.io".to_string()
    } else {
        host.to_ascii_lowercase()
    };
    let mut best: Option<(usize, &str, &str)> = None;
    for (key, entry) in &file.auths {
        let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
            continue;
        };
        let (h, path) = auth_key(key);
        if h != want {
            continue;
        }
        let matches = path.is_empty()
            || repository == path
            || repository
                .strip_prefix(path.as_str())
                .is_some_and(|r| r.starts_with('/'));
        if matches && best.is_none_or(|(len, _, _)| path.len() > len) {
            best = Some((path.len(), key, auth));
        }
    }
    let Some((_, key, auth)) = best else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    match decoded {
        Some(d) if d.contains(':') => Ok(Some(
            base64::engine::general_purpose::STANDARD.encode(d.as_bytes()),
        )),
        _ => bail!("the auth of {key:?} is not base64(user:password)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.to_string(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenges(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#
            ),
            vec![ch(
                "Bearer",
                &[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:library/debian:pull"),
                ]
            )]
        );
        // Commas inside quotes, spaces around separators, escapes, case.
        assert_eq!(
            parse_challenges(
                r#"bearer Realm = "http://h/t?a=1,b=2" , scope="repository:a/b:pull,push", service=plain, x="q\"uote""#
            ),
            vec![ch(
                "bearer",
                &[
                    ("realm", "http://h/t?a=1,b=2"),
                    ("scope", "repository:a/b:pull,push"),
                    ("service", "plain"),
                    ("x", "q\"uote"),
                ]
            )]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![ch("Basic", &[("realm", "Registry Realm")])]
        );
        // Several challenges in one header.
        assert_eq!(
            parse_challenges(r#"Basic realm="a, b", Bearer realm="https://t/",service="s""#),
            vec![
                ch("Basic", &[("realm", "a, b")]),
                ch("Bearer", &[("realm", "https://t/"), ("service", "s")])
            ]
        );
        // Token68, a bare scheme, garbage: no panic, sensible output.
        assert_eq!(
            parse_challenges("Negotiate abc=="),
            vec![ch("Negotiate", &[("abc", "=")])]
        );
        assert_eq!(parse_challenges("Basic"), vec![ch("Basic", &[])]);
        assert_eq!(parse_challenges(""), vec![]);
        assert_eq!(parse_challenges("=,=\""), vec![]);
        assert_eq!(
            parse_challenges(r#"Bearer realm="unterminated"#),
            vec![ch("Bearer", &[("realm", "unterminated")])]
        );
        let c = &parse_challenges(r#"Bearer realm="r",service="s""#)[0];
        assert_eq!(c.param("realm"), Some("r"));
        assert_eq!(c.param("scope"), None);
    }

    #[test]
    fn repository_names() {
        for ok in [
            "library/debian",
            "a",
            "test/img",
            "a.b_c__d-e---f/g0/9",
            "org/sub/deep/name",
            "fedora/fedora-bootc",
        ] {
            validate_repository(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "Library/debian",
            "a//b",
            "/a",
            "a/",
            "a/../b",
            "..",
            "a/.b",
            "a-/b",
            "a___b",
            "a._b",
            "a b",
            "a:b",
            "a/b?c",
            "a%2fb",
            "ü",
        ] {
            let e = validate_repository(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid repository name"),
                "{bad}: {e}"
            );
        }
        assert!(validate_repository(&"a".repeat(256)).is_err());
    }

    #[test]
    fn hosts_and_schemes() {
        // An explicit credentials file: independent of the machine's own.
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        let hub_creds = base64::engine::general_purpose::STANDARD.encode("hub:pw");
        std::fs::write(
            &auth,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{hub_creds}"}}}}}}"#),
        )
        .unwrap();
        let o = RegistryOptions {
            auth_file: Some(auth.clone()),
            ..Default::default()
        };
        for (host, scheme) in [
            ("127.0.0.1:5000", "http"),
            ("127.0.0.1", "http"),
            ("localhost:1", "http"),
            ("[::1]:5000", "http"),
            ("quay.io", "https"),
            ("example.com:5000", "https"),
            ("127.0.0.2:5000", "https"),
        ] {
            assert_eq!(
                Registry::new(host, "a/b", &o).unwrap().scheme(),
                scheme,
                "{host}"
            );
        }
        let insecure = RegistryOptions {
            insecure: true,
            ..o.clone()
        };
        assert_eq!(
            Registry::new("quay.io", "a/b", &insecure).unwrap().scheme(),
            "http"
        );

        let hub = Registry::new("docker.io", "debian", &o).unwrap();
        assert_eq!(hub.base, "https://registry-1.docker.io");
        assert_eq!(hub.repository(), "library/debian");
        assert_eq!(hub.describe(), "docker://docker.io/library/debian");
        assert_eq!(hub.credentials.as_deref(), Some(hub_creds.as_str()));
        assert_eq!(hub.auth_files, std::slice::from_ref(&auth));
        assert_eq!(
            Registry::new("quay.io", "a/b", &o).unwrap().credentials,
            None
        );
        assert_eq!(
            Registry::new("index.docker.io", "org/x", &o).unwrap().base,
            "https://registry-1.docker.io"
        );
        for bad in [
            "",
            "https://quay.io",
            "quay.io/x",
            "a b",
            "h:port",
            "h:99999",
            "-h",
        ] {
            assert!(Registry::new(bad, "a/b", &o).is_err(), "{bad}");
        }
        assert!(Registry::new("quay.io", "A/b", &o).is_err());
        let zero = RegistryOptions {
            timeout: Duration::ZERO,
            ..o.clone()
        };
        assert!(Registry::new("quay.io", "a/b", &zero).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            origin_of("HTTPS://Quay.IO:443/v2/").as_deref(),
            Some("https://quay.io")
        );
        assert_eq!(origin_of("http://h:80").as_deref(), Some("http://h"));
        assert_eq!(
            origin_of("http://u:p@h:5000/x").as_deref(),
            Some("http://h:5000")
        );
        assert_eq!(origin_of("ftp://h/"), None);
        assert_ne!(origin_of("http://h:5000/"), origin_of("http://h:5001/"));
        assert_ne!(origin_of("http://h/"), origin_of("https://h/"));

        let base = "http://r:5000/v2/a/b/blobs/sha256:x?q=1";
        assert_eq!(
            resolve_location(base, "https://s3/x?sig=1").unwrap(),
            "https://s3/x?sig=1"
        );
        assert_eq!(resolve_location(base, "//cdn/x").unwrap(), "http://cdn/x");
        assert_eq!(
            resolve_location(base, "/other").unwrap(),
            "http://r:5000/other"
        );
        assert_eq!(
            resolve_location(base, "y").unwrap(),
            "http://r:5000/v2/a/b/blobs/y"
        );
        assert_eq!(resolve_location(base, "ftp://x/"), None);
        assert_eq!(resolve_location(base, ""), None);

        assert_eq!(
            redact("https://s3/x?X-Amz-Signature=secret"),
            "https://s3/x"
        );
        assert_eq!(
            percent_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(percent_encode("a.b-c_d~"), "a.b-c_d~");
    }

    #[test]
    fn credentials() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let file: AuthFile = serde_json::from_value(serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:1")},
                "quay.io": {"auth": b64("quay:2")},
                "quay.io/org": {"auth": b64("org:3")},
                "quay.io/org/special": {"auth": b64("special:4")},
                "http://127.0.0.1:5000/v1/": {"auth": b64("local:5")},
                "empty.io": {"auth": ""},
                "bad.io": {"auth": "!!!"},
            },
            "credsStore": "ignored"
        }))
        .unwrap();
        let get = |h: &str, r: &str| find_credentials(&file, h, r).unwrap();
        assert_eq!(get("docker.io", "library/debian"), Some(b64("hub:1")));
        assert_eq!(get("index.docker.io", "x/y"), Some(b64("hub:1")));
        assert_eq!(get("quay.io", "other/x"), Some(b64("quay:2")));
        assert_eq!(get("quay.io", "org/x"), Some(b64("org:3")));
        assert_eq!(get("quay.io", "orgx/x"), Some(b64("quay:2")));
        assert_eq!(get("quay.io", "org/special"), Some(b64("special:4")));
        assert_eq!(get("quay.io", "org/special/sub"), Some(b64("special:4")));
        assert_eq!(get("127.0.0.1:5000", "a"), Some(b64("local:5")));
        assert_eq!(get("127.0.0.1:5001", "a"), None);
        assert_eq!(get("empty.io", "a"), None);
        assert_eq!(get("ghcr.io", "a"), None);
        assert!(find_credentials(&file, "bad.io", "a").is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            summarize_error_body(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#
            ),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(
            summarize_error_body(br#"{"errors":[{"code":"A"},{"message":"b"}]}"#),
            "A; b"
        );
        assert_eq!(
            summarize_error_body(b"<html>\n  <b>oops</b>\x1b[31m"),
            "<html> <b>oops</b> [31m"
        );
        let long = summarize_error_body(&[b'x'; 5000]);
        assert_eq!(long.len(), ERROR_BODY_SHOWN);
        assert_eq!(summarize_error_body(b""), "");
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type_of(spec::OCI_MANIFEST, b"").unwrap(),
            spec::OCI_MANIFEST
        );
        assert_eq!(
            media_type_of(
                "application/json",
                br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            )
            .unwrap(),
            spec::OCI_INDEX
        );
        assert_eq!(
            media_type_of("", br#"{"manifests":[]}"#).unwrap(),
            spec::OCI_INDEX
        );
        assert_eq!(
            media_type_of("", br#"{"layers":[]}"#).unwrap(),
            spec::OCI_MANIFEST
        );
        assert_eq!(media_type_of("", b"{}"), None);
        assert_eq!(media_type_of("", b"not json"), None);
    }
}
