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

/// Start a registry; `access_log` records every request in [`RegistryProcess::log`].
pub fn start_registry(access_log: bool) -> RegistryProcess {
    let mut last_log = String::new();
    // A free port can be taken between our probe and the registry's bind:
    // try a few.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                !access_log,
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
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
                && r.status().as_u16() == 200
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
