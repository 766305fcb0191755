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
//!
//! Here: the client ([`Registry`], [`RegistryOptions`]) and what it
//! fetches. Below it: `request` (a request, authorized and retried by
//! [`crate::net`]'s rules), `auth` (challenges answered, tokens),
//! `credentials` (auth files, credential helpers), `http` (one GET:
//! redirects, status and error bodies), `blob` (a blob's body), `names`
//! (hosts, repository names), `url` (origins, redirects).

mod auth;
mod blob;
mod credentials;
mod http;
mod names;
mod request;
mod url;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::reference::is_tag;
use super::source::{Fetched, ImageSource};
use super::spec::{self, Digest, MANIFEST_TYPES};
use blob::BlobReader;
use http::content_length;
use names::{DOCKER_HUB_API, is_docker_hub, is_loopback, validate_host};

pub use auth::{Challenge, parse_challenges};
pub use http::summarize_error_body;
pub use names::validate_repository;
pub use url::{origin_of, percent_encode, resolve_location};

/// The largest manifest or index we accept (the distribution spec lets
/// registries refuse more than 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// How a [`Registry`] connects: scheme, credentials, patience.
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
            credentials::load_credentials(opts.auth_file.as_deref(), host, &repository)?;

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

    /// `docker://host/repo: <msg>`, marked worth another try
    /// ([`crate::net::Transient`]; [`crate::net::RetryAfter`] when the
    /// server said when).
    fn transient(&self, msg: impl std::fmt::Display, after: Option<Duration>) -> anyhow::Error {
        let message = format!("{}: {msg}", self.describe());
        match after {
            Some(after) => crate::net::RetryAfter { message, after }.into(),
            None => crate::net::Transient(message).into(),
        }
    }
}

/// Largest tag listing read (`/v2/NAME/tags/list`).
pub const MAX_TAGS_SIZE: u64 = 4 << 20;

impl Registry {
    /// The repository's tags (`GET /v2/NAME/tags/list`), sorted; those
    /// that are not valid tags are left out. Only the first page a
    /// registry sends is read (registries page only when asked to).
    pub fn tags(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let what = "tag list";
        let path = format!("/v2/{}/tags/list", self.repository);
        let bytes = self.get(&path, &[("Accept", "application/json")], what, |resp| {
            let mut buf = Vec::new();
            resp.into_body()
                .into_with_config()
                .reader()
                .take(MAX_TAGS_SIZE + 1)
                .read_to_end(&mut buf)
                .map_err(|e| self.transient(format!("{what}: reading: {e}"), None))?;
            if buf.len() as u64 > MAX_TAGS_SIZE {
                return Err(self.error(format!("{what}: larger than {MAX_TAGS_SIZE} bytes")));
            }
            Ok(buf)
        })?;
        let list: TagList = serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("{what}: not a tag list: {e}")))?;
        let mut tags: Vec<String> = list
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter(|t| is_tag(t))
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
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
            self.error(format!(
                "{what}: larger than {MAX_MANIFEST_SIZE} bytes ({n})"
            ))
        };
        let (bytes, content_type) = self.get(&path, &[("Accept", &accept)], &what, |resp| {
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
                .map_err(|e| self.transient(format!("{what}: reading: {e}"), None))?;
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
        let reader = self.get(&path, &[], &what, |resp| {
            if let Some(n) = content_length(&resp)
                && n != size
            {
                return Err(self.error(format!(
                    "{what}: the registry announces {n} bytes, the descriptor {size}"
                )));
            }
            Ok(resp.into_body().into_with_config().reader())
        })?;
        Ok(Box::new(BlobReader::new(
            reader,
            size,
            self.error(what).to_string(),
        )))
    }

    fn describe(&self) -> String {
        format!("docker://{}/{}", self.host, self.repository)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

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
