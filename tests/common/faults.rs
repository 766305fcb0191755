//! A fault-injecting HTTP proxy for tests: it forwards each request to a
//! real server on 127.0.0.1 (one request per connection, `Connection:
//! close` both ways) and, as a plan decides per request, answers with an
//! error status instead, cuts the body short, drops the connection,
//! stalls, flips a byte of the body, or leaves out the request's `Range`
//! header (a server without range support).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and its answer unchanged.
    Pass,
    /// Answer this status with an empty body; the server never sees it.
    Status(u16),
    /// The answer's head and this many bytes of its body, then a reset.
    Reset(usize),
    /// The answer's head and this many bytes of its body, then a clean
    /// close (the body is shorter than its Content-Length).
    Truncate(usize),
    /// The answer's head and this many bytes of its body, then nothing
    /// until the client gives up (or the proxy stops).
    Stall(usize),
    /// The whole answer with one bit of the body's byte at this offset
    /// flipped (of its last byte if the body is shorter).
    Flip(usize),
    /// The request forwarded without its `Range` header: the server
    /// answers 200 with the whole body, as one without range support.
    NoRange,
}

/// One request the proxy saw: method, path and what it did.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The request's `Range` header, if it had one.
    pub range: Option<String>,
    pub fault: Fault,
}

pub struct FaultProxy {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

type Plan = dyn Fn(&str, &str, usize) -> Fault + Send + Sync;

impl FaultProxy {
    /// Proxy to `127.0.0.1:upstream`. `plan(method, path, n)` decides the
    /// fault for the `n`th request (from 1) of that method and path.
    pub fn start(
        upstream: u16,
        plan: impl Fn(&str, &str, usize) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let plan: Arc<Plan> = Arc::new(plan);
        let counts = Arc::new(Mutex::new(HashMap::<(String, String), usize>::new()));
        {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, stop, plan, counts) = (
                        Arc::clone(&seen),
                        Arc::clone(&stop),
                        Arc::clone(&plan),
                        Arc::clone(&counts),
                    );
                    std::thread::spawn(move || {
                        let _ = handle(conn, upstream, &*plan, &counts, &seen, &stop);
                    });
                }
            });
        }
        FaultProxy { port, seen, stop }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Forget what was seen so far (counts for the plan go on).
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The head (through the blank line) and whatever followed it.
fn read_head(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((buf, rest));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed inside the head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `head` with any Connection/Keep-Alive header replaced by `Connection:
/// close` (and without its Range header if `no_range`).
fn close_head(head: &[u8], no_range: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:")
            || lower.starts_with("keep-alive:")
            || (no_range && lower.starts_with("range:"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn handle(
    mut client: TcpStream,
    upstream: u16,
    plan: &Plan,
    counts: &Mutex<HashMap<(String, String), usize>>,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let (head, mut body) = read_head(&mut client)?;
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let n = {
        let mut c = counts.lock().unwrap();
        let e = c.entry((method.clone(), path.clone())).or_insert(0);
        *e += 1;
        *e
    };
    let fault = plan(&method, &path, n);
    let range = String::from_utf8_lossy(&head).lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("range")
            .then(|| value.trim().to_string())
    });
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range,
        fault,
    });
    if let Fault::Status(code) = fault {
        let reply =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        client.write_all(reply.as_bytes())?;
        return client.shutdown(Shutdown::Both);
    }
    // A request body (pushes do not go through the proxy; be complete anyway).
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if let Some(len) = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while body.len() < len {
            let mut chunk = vec![0u8; len - body.len()];
            let k = client.read(&mut chunk)?;
            if k == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..k]);
        }
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&close_head(&head, fault == Fault::NoRange))?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4);
    let (rhead, rbody) = answer.split_at(split);
    let rhead = close_head(rhead, false);
    match fault {
        Fault::Pass | Fault::Status(_) | Fault::NoRange => {
            client.write_all(&rhead)?;
            client.write_all(rbody)?;
        }
        Fault::Flip(at) => {
            let mut b = rbody.to_vec();
            let at = at.min(b.len().saturating_sub(1));
            if let Some(x) = b.get_mut(at) {
                *x ^= 0x10;
            }
            client.write_all(&rhead)?;
            client.write_all(&b)?;
        }
        Fault::Truncate(k) | Fault::Reset(k) | Fault::Stall(k) => {
            client.write_all(&rhead)?;
            client.write_all(&rbody[..k.min(rbody.len())])?;
            client.flush()?;
            match fault {
                Fault::Reset(_) => {
                    // SO_LINGER 0: close with a reset, not a FIN.
                    let _ = rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO));
                    drop(client);
                    return Ok(());
                }
                Fault::Stall(_) => {
                    // Until the client gives up (a read returns 0 or fails)
                    // or the proxy stops.
                    client.set_read_timeout(Some(Duration::from_millis(200)))?;
                    let mut b = [0u8; 1];
                    loop {
                        match client.read(&mut b) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ => {}
            }
        }
    }
    client.shutdown(Shutdown::Both)
}
