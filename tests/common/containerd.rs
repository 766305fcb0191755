//! A containerd daemon of a test's own (its root, state and socket in a
//! temporary directory, the CRI plugin off), killed when dropped, and
//! `ctr-remote` (stargz-snapshotter's ctr, which converts images to
//! eStargz and to its own zstd:chunked) talking to it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{require_tool, run_tool};

pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    pub fn start() -> Containerd {
        require_tool("containerd");
        require_tool("ctr-remote");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n",
                d.join("root").display(),
                d.join("state").display(),
                d.join("sock").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package containerd) must be installed");
        let mut c = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!(
                    "containerd exited ({status}): {}",
                    std::fs::read_to_string(c.dir.path().join("log")).unwrap_or_default()
                );
            }
            let ok = Command::new("ctr-remote")
                .arg("-a")
                .arg(c.dir.path().join("sock"))
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return c;
            }
            assert!(Instant::now() < deadline, "containerd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr-remote -a SOCKET ARGS…`, which must succeed; its stdout.
    pub fn ctr(&self, args: &[&str]) -> Vec<u8> {
        let sock = self.dir.path().join("sock");
        let mut all: Vec<&OsStr> = vec![OsStr::new("-a"), sock.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        run_tool("ctr-remote", &all, Path::new("/"))
    }
}
