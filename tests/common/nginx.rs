//! nginx serving a directory on 127.0.0.1 for tests: a private
//! configuration under a temporary directory (`daemon off`, its own pid,
//! error and access logs, temp paths), a free port, an access log the test
//! reads (one `METHOD URI STATUS BYTES` line per request), stopped on drop
//! (or on demand, and started again on the same port).
//!
//! The log is read settled: every request answered before it is read is in
//! it. nginx writes a request's line just after sending its answer, so a
//! client can see the answer before the line is written; with one worker
//! process, a request sent after that answer is logged after it. So each
//! read first sends a request of its own (`/.settle-N`, left out of what is
//! returned) and waits for its line.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of the requests [`Nginx::requests`] settles the log with.
const SETTLE: &str = "/.settle-";

/// A running nginx (the master process, a child of the test).
pub struct Nginx {
    child: Child,
    pub port: u16,
    /// The access log.
    pub log: PathBuf,
    dir: tempfile::TempDir,
}

/// One access-log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// As asked for (not decoded).
    pub path: String,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

impl Nginx {
    /// Serve `root` (its symlinks followed) until dropped.
    pub fn serve(root: &Path) -> Nginx {
        super::require_tool("nginx");
        let dir = tempfile::Builder::new().prefix("nginx").tempdir().unwrap();
        let d = dir.path();
        let log = d.join("access.log");
        // A port that was free a moment ago; taken meanwhile, try another.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = d.join("nginx.conf");
            let mut f = std::fs::File::create(&conf).unwrap();
            write!(
                f,
                "daemon off;\n\
                 master_process on;\n\
                 worker_processes 1;\n\
                 user root root;\n\
                 pid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 \x20 log_format plain '$request_method $request_uri $status $body_bytes_sent';\n\
                 \x20 access_log {d}/access.log plain;\n\
                 \x20 default_type application/octet-stream;\n\
                 \x20 sendfile on; keepalive_requests 100000;\n\
                 \x20 client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
                 \x20 uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                 \x20 server {{ listen 127.0.0.1:{port}; root {root}; }}\n\
                 }}\n",
                d = d.display(),
                root = root.display(),
            )
            .unwrap();
            drop(f);
            if let Some(child) = launch(d, &conf, port) {
                return Nginx {
                    child,
                    port,
                    log,
                    dir,
                };
            }
        }
        panic!(
            "nginx did not start; error log:\n{}",
            std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
        );
    }

    /// Stop serving (the master and its workers exit): connections are
    /// refused until [`Nginx::resume`]. The port, the log and the
    /// configuration stay.
    pub fn stop(&mut self) {
        terminate(&mut self.child);
    }

    /// Serve again on the same port after [`Nginx::stop`].
    pub fn resume(&mut self) {
        let d = self.dir.path();
        self.child = launch(d, &d.join("nginx.conf"), self.port).unwrap_or_else(|| {
            panic!(
                "nginx did not start again on port {}; error log:\n{}",
                self.port,
                self.error_log()
            )
        });
    }

    /// `http://127.0.0.1:PORT/SUB`.
    pub fn url(&self, sub: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, sub)
    }

    /// Every request answered so far (see the module comment), in the
    /// order logged.
    pub fn requests(&self) -> Vec<Request> {
        self.settle();
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some(Request {
                    method: w.next()?.to_string(),
                    path: w.next()?.to_string(),
                    status: w.next()?.parse().ok()?,
                    bytes: w.next()?.parse().ok()?,
                })
            })
            .filter(|r| !r.path.starts_with(SETTLE))
            .collect()
    }

    /// Send a request of our own and wait until the log shows it (nothing
    /// to wait for when nginx is stopped).
    fn settle(&self) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = format!(
            "{SETTLE}{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return;
        };
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
        let line = format!(" {path} ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(&line)
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not log {path} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// How many requests are logged now (for [`Nginx::requests_since`]).
    pub fn mark(&self) -> usize {
        self.requests().len()
    }

    pub fn requests_since(&self, mark: usize) -> Vec<Request> {
        self.requests().into_iter().skip(mark).collect()
    }

    /// The error log (for messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Start nginx with configuration `conf` (in `dir`) and wait until it
/// accepts connections on `port`; `None` if it exits first or takes more
/// than 10 s (the port taken meanwhile, say).
fn launch(dir: &Path, conf: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM: the master stops its workers and exits (killed after 5 s).
fn terminate(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
