//! The distribution-spec client (`composefs::oci::registry`) against a real
//! `docker-registry` holding an image built offline with umoci and pushed
//! with skopeo, and against small in-test HTTP servers for what a plain
//! registry cannot show: token and Basic authentication, redirects to
//! another host, retries, stalls, hostile answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use base64::Engine as _;
use common::registry::{free_port, start_registry};
use composefs::oci::registry::{Registry, RegistryOptions};
use composefs::oci::source::ImageSource;
use composefs::oci::spec::{self, Digest, MANIFEST_TYPES, Manifest};
use sha2::Digest as _;

// ---------------------------------------------------------------------------
// Helpers

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// An auth file with the given `auths` entries (none: anonymous, whatever
/// the machine's own credential files say).
fn auth_file(dir: &Path, entries: &[(&str, &str)]) -> std::path::PathBuf {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!({ "auth": b64(v) })))
        .collect();
    let path = dir.join(format!("auth-{}.json", entries.len()));
    std::fs::write(&path, serde_json::json!({ "auths": auths }).to_string()).unwrap();
    path
}

fn options(auth: &Path) -> RegistryOptions {
    RegistryOptions {
        auth_file: Some(auth.to_path_buf()),
        timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn read_blob(reg: &Registry, digest: &Digest, size: u64) -> anyhow::Result<Vec<u8>> {
    let mut r = reg.blob(digest, size)?;
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

fn blob_err(reg: &Registry, digest: &Digest, size: u64) -> String {
    match read_blob(reg, digest, size) {
        Ok(_) => panic!("blob {digest} unexpectedly readable"),
        Err(e) => format!("{e:#}"),
    }
}

fn manifest_err(reg: &Registry, reference: &str) -> String {
    match reg.manifest(reference) {
        Ok(_) => panic!("manifest {reference} unexpectedly fetched"),
        Err(e) => format!("{e:#}"),
    }
}

/// Streams a blob in 64 KiB reads, returning its sha256 and length.
fn stream_digest(reg: &Registry, digest: &Digest, size: u64) -> (Digest, u64) {
    let mut r = reg.blob(digest, size).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let d = Digest::parse(&format!("sha256:{}", hex::encode(h.finalize()))).unwrap();
    (d, n)
}

// ---------------------------------------------------------------------------
// A real registry: tests/common/registry.rs

/// A small deterministic, incompressible byte stream.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Builds `test/img:t` offline (umoci, one layer with a few files) and
/// pushes it with skopeo.
fn push_image(dir: &Path, port: u16) {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:t", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc/app")).unwrap();
    std::fs::write(
        rootfs.join("etc/app/hello.txt"),
        "hello from the registry test\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/app/big.bin"),
        noise(3 << 20, 0x9e3779b97f4a7c15),
    )
    .unwrap();
    std::os::unix::fs::symlink("app/hello.txt", rootfs.join("etc/hello")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{image}"))
        .arg(format!("docker://127.0.0.1:{port}/test/img:t")));
}

#[test]
fn real_registry() {
    let reg_proc = start_registry(false);
    let port = reg_proc.port;
    let dir = tempfile::tempdir().unwrap();
    push_image(dir.path(), port);
    let auth = auth_file(dir.path(), &[]);
    let host = format!("127.0.0.1:{port}");
    let reg = Registry::new(&host, "test/img", &options(&auth)).unwrap();
    assert_eq!(reg.describe(), format!("docker://{host}/test/img"));

    // By tag.
    let by_tag = reg.manifest("t").unwrap();
    assert_eq!(by_tag.media_type, spec::OCI_MANIFEST);
    let manifest: Manifest = serde_json::from_slice(&by_tag.bytes).unwrap();
    assert_eq!(manifest.layers.len(), 1);

    // By digest: the same document, checked.
    let digest = Digest::of(&by_tag.bytes);
    let by_digest = reg.manifest(digest.as_str()).unwrap();
    assert_eq!(by_digest.bytes, by_tag.bytes);
    assert_eq!(by_digest.media_type, spec::OCI_MANIFEST);

    // Config and layer, streamed, from several threads at once.
    let blobs: Vec<_> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .collect();
    std::thread::scope(|s| {
        for _ in 0..3 {
            for d in &blobs {
                let reg = &reg;
                s.spawn(move || {
                    let (got, len) = stream_digest(reg, &d.digest, d.size);
                    assert_eq!(got, d.digest);
                    assert_eq!(len, d.size);
                });
            }
        }
    });
    assert!(
        manifest.layers[0].size > 1 << 20,
        "the layer is the incompressible file"
    );
    let config: spec::ImageConfig = serde_json::from_slice(
        &read_blob(&reg, &manifest.config.digest, manifest.config.size).unwrap(),
    )
    .unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), 1);

    // A size that disagrees with what the registry serves.
    let e = blob_err(&reg, &manifest.config.digest, manifest.config.size + 1);
    assert!(e.contains(manifest.config.digest.as_str()), "{e}");

    // What is missing, named.
    let e = manifest_err(&reg, "nope");
    assert!(
        e.starts_with(&format!("docker://{host}/test/img: no manifest nope")),
        "{e}"
    );
    assert!(e.contains("MANIFEST_UNKNOWN"), "{e}");
    let missing = Digest::of(b"not here");
    let e = blob_err(&reg, &missing, 8);
    assert!(
        e.starts_with(&format!("docker://{host}/test/img: no blob {missing}")),
        "{e}"
    );
    let e = manifest_err(&reg, missing.as_str());
    assert!(e.contains(&format!("no manifest {missing}")), "{e}");
    let other = Registry::new(&host, "test/absent", &options(&auth)).unwrap();
    let e = manifest_err(&other, "t");
    assert!(
        e.starts_with(&format!("docker://{host}/test/absent: no manifest t")),
        "{e}"
    );

    // Malformed references never reach the registry.
    for bad in ["../../x", "sha256:abc", "md5:00", "", "a b"] {
        let e = manifest_err(&reg, bad);
        assert!(e.contains("docker://"), "{e}");
    }

    drop(reg_proc);
}

// ---------------------------------------------------------------------------
// In-test HTTP servers

#[derive(Clone, Debug)]
struct Req {
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a server answers: raw bytes, then either close or hold the
/// connection open without another byte.
struct Reply {
    bytes: Vec<u8>,
    hang: bool,
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut r = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    let mut has_length = false;
    for (n, v) in headers {
        has_length |= n.eq_ignore_ascii_case("content-length");
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has_length {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    Reply { bytes, hang: false }
}

/// A body without Content-Length: it ends when the connection closes.
fn reply_until_close(body: &[u8]) -> Reply {
    let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    bytes.extend_from_slice(body);
    Reply { bytes, hang: false }
}

fn hang(bytes: &[u8]) -> Reply {
    Reply {
        bytes: bytes.to_vec(),
        hang: true,
    }
}

type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

struct Server {
    port: u16,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

/// Serves each request with `handler(request, how many came before)`, one
/// request per connection. The accept thread lives as long as the test
/// process (its listener only ever sees our own connections).
fn serve(handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Arc<Mutex<Vec<Req>>> = Arc::default();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let handler: Arc<Handler> = Arc::new(handler);
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (log, held, handler) = (log2.clone(), held.clone(), handler.clone());
            std::thread::spawn(move || {
                let _ = handle(stream, &log, &held, &*handler);
            });
        }
    });
    Server { port, log }
}

fn handle(
    mut stream: TcpStream,
    log: &Mutex<Vec<Req>>,
    held: &Mutex<Vec<TcpStream>>,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 {
            break;
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = Req { path, headers };
    let nth = {
        let mut log = log.lock().unwrap();
        log.push(req.clone());
        log.len() - 1
    };
    let r = handler(&req, nth);
    stream.write_all(&r.bytes)?;
    stream.flush()?;
    if r.hang {
        held.lock().unwrap().push(stream);
    }
    Ok(())
}

/// A small manifest whose config is `config`.
fn manifest_for(config: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": spec::OCI_MANIFEST,
        "config": {
            "mediaType": spec::OCI_CONFIG,
            "digest": Digest::of(config).as_str(),
            "size": config.len(),
        },
        "layers": [],
    }))
    .unwrap()
}

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

/// The Bearer flow: challenge, token endpoint, retried request, cached
/// token; a redirect to another host gets no Authorization.
fn bearer_flow(token_field: &str, credentials: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = serve(|_, _| reply(200, &[("Content-Type", "application/octet-stream")], CONFIG));
    let storage_host = storage.host();
    let manifest = manifest_for(CONFIG);
    let config_digest = Digest::of(CONFIG);
    let token = format!("tok-{token_field}");
    let expected_basic = credentials.map(|c| format!("Basic {}", b64(c)));
    // The realm names the server's own port, known only once it listens.
    let port_cell: Arc<Mutex<u16>> = Arc::default();
    let port_for_handler = port_cell.clone();
    let registry = {
        let expected_basic = expected_basic.clone();
        let (manifest, token, token_field, config_digest) = (
            manifest.clone(),
            token.clone(),
            token_field.to_string(),
            config_digest.clone(),
        );
        serve(move |req, _| {
            let port = *port_for_handler.lock().unwrap();
            if req.path.starts_with("/token?") {
                if req.header("authorization") != expected_basic.as_deref() {
                    return reply(401, &[], b"bad credentials");
                }
                let body = serde_json::json!({ token_field.as_str(): token, "expires_in": 300 });
                return reply(
                    200,
                    &[("Content-Type", "application/json")],
                    body.to_string().as_bytes(),
                );
            }
            if req.header("authorization") != Some(&format!("Bearer {token}")) {
                let challenge = format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="s",scope="repository:test/img:pull""#
                );
                return reply(
                    401,
                    &[
                        ("WWW-Authenticate", &challenge),
                        ("Content-Type", "application/json"),
                    ],
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                );
            }
            if req.path == "/v2/test/img/manifests/t" {
                return reply(
                    200,
                    &[(
                        "Content-Type",
                        "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
                    )],
                    &manifest,
                );
            }
            if req.path == format!("/v2/test/img/blobs/{config_digest}") {
                let to = format!("http://{storage_host}/bucket/cfg?X-Signature=secret");
                return reply(307, &[("Location", &to)], b"");
            }
            reply(404, &[], b"")
        })
    };
    *port_cell.lock().unwrap() = registry.port;

    let auth = match credentials {
        Some(c) => auth_file(dir.path(), &[(&registry.host(), c)]),
        None => auth_file(dir.path(), &[]),
    };
    let reg = Registry::new(&registry.host(), "test/img", &options(&auth)).unwrap();
    let m = reg.manifest("t").unwrap();
    assert_eq!(m.bytes, manifest);
    assert_eq!(m.media_type, spec::OCI_MANIFEST, "parameters stripped");
    assert_eq!(
        read_blob(&reg, &config_digest, CONFIG.len() as u64).unwrap(),
        CONFIG
    );
    // Again: the token is cached.
    reg.manifest("t").unwrap();

    let log = registry.requests();
    let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v2/test/img/manifests/t",
            "/token?service=s&scope=repository%3Atest%2Fimg%3Apull",
            "/v2/test/img/manifests/t",
            &format!("/v2/test/img/blobs/{config_digest}"),
            "/v2/test/img/manifests/t",
        ]
    );
    assert_eq!(log[0].header("authorization"), None);
    assert_eq!(log[1].header("authorization"), expected_basic.as_deref());
    let bearer = format!("Bearer {token}");
    for r in &log[2..] {
        assert_eq!(r.header("authorization"), Some(bearer.as_str()));
    }
    let accept = log[0].header("accept").unwrap();
    for t in MANIFEST_TYPES {
        assert!(accept.contains(t), "Accept: {accept} lacks {t}");
    }
    // The blob store got the request, and not our token.
    let s = storage.requests();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].path, "/bucket/cfg?X-Signature=secret");
    assert_eq!(s[0].header("authorization"), None);
}

#[test]
fn bearer_anonymous_token() {
    bearer_flow("token", None);
}

#[test]
fn bearer_token_with_credentials() {
    bearer_flow("access_token", Some("alice:s3cret"));
}

#[test]
fn basic_auth_from_auth_file() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(CONFIG);
    let good = format!("Basic {}", b64("bob:pw:with:colons"));
    let m2 = manifest.clone();
    let server = serve(move |req, _| {
        if req.header("authorization") == Some(good.as_str()) {
            reply(200, &[("Content-Type", spec::OCI_MANIFEST)], &m2)
        } else {
            reply(
                401,
                &[("WWW-Authenticate", r#"Basic realm="Registry, private""#)],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}"#,
            )
        }
    });
    let host = server.host();

    // Credentials stored under a URL key.
    let auth = auth_file(
        dir.path(),
        &[
            (&format!("http://{host}/v1/"), "bob:pw:with:colons"),
            ("other.io", "x:y"),
        ],
    );
    let reg = Registry::new(&host, "test/img", &options(&auth)).unwrap();
    assert_eq!(reg.manifest("t").unwrap().bytes, manifest);
    assert_eq!(reg.manifest("t").unwrap().bytes, manifest);
    let log = server.requests();
    assert_eq!(log.len(), 3, "challenge once, then Basic straight away");
    assert_eq!(log[0].header("authorization"), None);
    assert!(log[1].header("authorization").is_some());
    assert!(log[2].header("authorization").is_some());

    // Wrong credentials: the registry's answer, and where they came from.
    let wrong = auth_file(dir.path(), &[(&host, "bob:nope")]);
    let reg = Registry::new(&host, "test/img", &options(&wrong)).unwrap();
    let e = manifest_err(&reg, "t");
    assert!(
        e.contains("HTTP 401") && e.contains("UNAUTHORIZED: who are you"),
        "{e}"
    );
    assert!(e.contains(&wrong.display().to_string()), "{e}");

    // None: said so.
    let none = auth_file(dir.path(), &[]);
    let reg = Registry::new(&host, "test/img", &options(&none)).unwrap();
    let e = manifest_err(&reg, "t");
    assert!(e.contains(&format!("no credentials for {host}")), "{e}");

    // A named auth file that does not exist is an error.
    let missing = RegistryOptions {
        auth_file: Some(dir.path().join("absent.json")),
        ..Default::default()
    };
    assert!(Registry::new(&host, "test/img", &missing).is_err());
}

#[test]
fn transient_errors_are_retried() {
    let manifest = manifest_for(CONFIG);
    let m2 = manifest.clone();
    let flaky = serve(move |_, n| match n {
        0 => reply(
            500,
            &[],
            br#"{"errors":[{"code":"UNKNOWN","message":"boom"}]}"#,
        ),
        1 => reply(429, &[], b"slow down"),
        2 => reply(503, &[], b""),
        _ => reply(200, &[("Content-Type", spec::OCI_MANIFEST)], &m2),
    });
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path(), &[]);
    let reg = Registry::new(&flaky.host(), "test/img", &options(&auth)).unwrap();
    assert_eq!(reg.manifest("t").unwrap().bytes, manifest);
    assert_eq!(flaky.requests().len(), 4);

    // Always failing: given up after the retries, the last answer shown.
    let broken = serve(|_, _| {
        reply(
            500,
            &[],
            br#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#,
        )
    });
    let opts = RegistryOptions {
        retries: 1,
        ..options(&auth)
    };
    let reg = Registry::new(&broken.host(), "test/img", &opts).unwrap();
    let e = manifest_err(&reg, "t");
    assert!(e.contains("HTTP 500"), "{e}");
    assert!(e.contains("UNKNOWN: disk on fire"), "{e}");
    assert!(e.contains("gave up after 2 attempts"), "{e}");
    assert!(e.contains("manifest t"), "{e}");
    assert_eq!(broken.requests().len(), 2);

    // Not transient: not retried.
    let denied = serve(|_, _| {
        reply(
            403,
            &[],
            br#"{"errors":[{"code":"DENIED","message":"go away"}]}"#,
        )
    });
    let reg = Registry::new(&denied.host(), "test/img", &options(&auth)).unwrap();
    let e = blob_err(&reg, &Digest::of(b"x"), 1);
    assert!(
        e.contains("HTTP 403") && e.contains("DENIED: go away"),
        "{e}"
    );
    assert!(e.contains(Digest::of(b"x").as_str()), "{e}");
    assert_eq!(denied.requests().len(), 1);

    // A connection refused is retried too, then reported.
    let port = free_port();
    let reg = Registry::new(&format!("127.0.0.1:{port}"), "test/img", &opts).unwrap();
    let e = manifest_err(&reg, "t");
    assert!(e.contains("gave up after 2 attempts"), "{e}");
}

#[test]
fn stalled_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path(), &[]);
    let opts = RegistryOptions {
        timeout: Duration::from_secs(2),
        retries: 0,
        ..options(&auth)
    };

    // Accepts, never answers.
    let silent = serve(|_, _| hang(b""));
    let reg = Registry::new(&silent.host(), "test/img", &opts).unwrap();
    let start = Instant::now();
    let e = manifest_err(&reg, "t");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(e.contains("timeout"), "{e}");
    assert!(e.contains("manifest t"), "{e}");

    // Answers a blob's headers and a few bytes, then stalls: the reader
    // fails (after the body was handed out, nothing is retried).
    let digest = Digest::of(&[7u8; 100]);
    let stalling = serve(|_, _| hang(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"));
    let reg = Registry::new(&stalling.host(), "test/img", &opts).unwrap();
    let start = Instant::now();
    let mut r = reg.blob(&digest, 100).unwrap();
    let mut buf = Vec::new();
    let e = r.read_to_end(&mut buf).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(8));
    assert_eq!(buf, b"0123456789");
    assert!(e.to_string().contains(digest.as_str()), "{e}");
}

#[test]
fn hostile_answers() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path(), &[]);
    let opts = options(&auth);
    let manifest = manifest_for(CONFIG);
    let good = Digest::of(&manifest);
    let m2 = manifest.clone();
    // Serves the same document for any reference.
    let server = serve(move |req, _| {
        if req.path.contains("/manifests/") {
            reply(200, &[("Content-Type", "application/json")], &m2)
        } else if req.path.contains("/blobs/") {
            // Longer than any size asked, without announcing a length.
            reply_until_close(&[1u8; 64])
        } else {
            reply(404, &[], b"")
        }
    });
    let reg = Registry::new(&server.host(), "test/img", &opts).unwrap();
    let ok = reg.manifest(good.as_str()).unwrap();
    assert_eq!(
        ok.media_type,
        spec::OCI_MANIFEST,
        "from the document's mediaType"
    );

    // Asked by digest, served something else.
    let wrong = Digest::of(b"another document");
    let e = manifest_err(&reg, wrong.as_str());
    assert!(
        e.contains(wrong.as_str()) && e.contains(good.as_str()),
        "{e}"
    );

    // A blob body longer than its descriptor.
    let d = Digest::of(&[1u8; 10]);
    let e = blob_err(&reg, &d, 10);
    assert!(e.contains("longer than") && e.contains(d.as_str()), "{e}");
    // Shorter.
    let e = blob_err(&reg, &d, 100);
    assert!(e.contains("ended after 64 of 100"), "{e}");

    // An oversized manifest.
    let huge = serve(|_, _| {
        reply(
            200,
            &[("Content-Type", spec::OCI_MANIFEST)],
            &vec![b' '; 5 << 20],
        )
    });
    let reg = Registry::new(&huge.host(), "test/img", &opts).unwrap();
    let e = manifest_err(&reg, "t");
    assert!(e.contains("larger than"), "{e}");

    // Redirect loops end.
    let looping = serve(|req, _| reply(302, &[("Location", &req.path)], b""));
    let reg = Registry::new(&looping.host(), "test/img", &opts).unwrap();
    let e = manifest_err(&reg, "t");
    assert!(e.contains("redirects"), "{e}");

    // A 401 without a usable challenge.
    let odd = serve(|_, _| reply(401, &[("WWW-Authenticate", "Negotiate")], b""));
    let reg = Registry::new(&odd.host(), "test/img", &opts).unwrap();
    let e = manifest_err(&reg, "t");
    assert!(e.contains("Negotiate"), "{e}");
}
