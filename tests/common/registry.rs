//! A real OCI registry for tests: Debian's `docker-registry` on
//! 127.0.0.1, on a free port, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RegistryProcess {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RegistryProcess {
    /// The registry's log (requests, with `access_log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Where it keeps blobs: `<storage>/docker/registry/v2/blobs/sha256/XX/HEX/data`.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// How many blob GETs the access log shows.
    pub fn blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RegistryProcess {
    /// `skopeo copy` of `src` (any transport skopeo reads, e.g.
    /// `oci:DIR:TAG`) to `NAME` in this registry, layers compressed as
    /// `format` (`gzip`, `zstd`, `zstd:chunked`).
    pub fn push(&self, src: &str, name: &str, format: &str) {
        let dst = format!("docker://127.0.0.1:{}/{name}", self.port);
        let args = [
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            format,
            src,
            &dst,
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        super::run_tool("skopeo", &args, std::path::Path::new("/"));
    }
}

/// Start a registry; `access_log` records every request in [`RegistryProcess::log`].
pub fn start_registry(access_log: bool) -> RegistryProcess {
    start(access_log, None)
}

/// Start a registry that wants HTTP Basic credentials `user`/`password`
/// (its htpasswd access controller; the bcrypt hash made by Python's crypt).
pub fn start_registry_with_password(user: &str, password: &str) -> RegistryProcess {
    start(false, Some((user, password)))
}

fn start(access_log: bool, password: Option<(&str, &str)>) -> RegistryProcess {
    let mut last_log = String::new();
    // A free port can be taken between our probe and the registry's bind:
    // try a few.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            !access_log,
            dir.path().join("storage").display()
        );
        if let Some((user, pw)) = password {
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                    pw,
                ])
                .output()
                .expect("python3");
            assert!(out.status.success(), "bcrypt: {out:?}");
            let hash = String::from_utf8(out.stdout).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{}\n", hash.trim())).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let mut reg = RegistryProcess { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        loop {
            if let Ok(Some(status)) = reg.child.try_wait() {
                last_log = reg.log();
                eprintln!("docker-registry exited ({status}): {last_log}");
                break;
            }
            if let Ok(r) = agent.get(&format!("http://127.0.0.1:{port}/v2/")).call()
                && (r.status().as_u16() == 200
                    || (password.is_some() && r.status().as_u16() == 401))
            {
                return reg;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("cannot start docker-registry: {last_log}");
}
