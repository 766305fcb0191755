//! The network rules the two clients share (ostree repositories over HTTP,
//! OCI registries): which failures are worth another try, how many tries,
//! and how long to wait between them. Sources mark a failure worth retrying
//! as [`Transient`] (or [`RetryAfter`], when the server said how long to
//! wait); the pulls wrap each request (or each whole object or blob, whose
//! download may be cut short) in [`retry`], or in [`retry_times`] when the
//! user chose the number of tries.

use std::time::Duration;

/// A failure worth retrying: a connection refused or reset, a timeout, a
/// body cut short, a server that says "later" ([`is_transient_status`]).
/// Readers put it inside the `io::Error`s they return.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// A [`Transient`] failure whose server said when to come back
/// (`Retry-After`): the next try waits at least `after` (at most
/// [`MAX_ASKED_PAUSE`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RetryAfter {
    pub message: String,
    pub after: Duration,
}

/// The first `E` in `e`'s chain: directly, or inside an `io::Error` (whose
/// `source()` skips the error it wraps).
fn find<E: std::error::Error + 'static>(e: &anyhow::Error) -> Option<&E> {
    e.chain().find_map(|c| {
        c.downcast_ref::<E>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<E>())
        })
    })
}

/// Whether `e` is [`Transient`] or [`RetryAfter`], or carries one:
/// directly, or inside an `io::Error`.
pub fn is_transient(e: &anyhow::Error) -> bool {
    find::<Transient>(e).is_some() || find::<RetryAfter>(e).is_some()
}

/// The pause the server asked for, when `e` carries a [`RetryAfter`].
fn asked_pause(e: &anyhow::Error) -> Option<Duration> {
    find::<RetryAfter>(e).map(|r| r.after.min(MAX_ASKED_PAUSE))
}

/// HTTP statuses that ask to come back later: request timeout, too early,
/// too many requests, and server errors.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

/// Whether a request that failed before any answer is worth another try:
/// a timeout, a connection refused, reset or cut, a host not found (yet),
/// a garbled answer. Not: a bad URL, a TLS certificate refused, a body
/// over its limit.
pub fn is_transient_transport(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Timeout(_)
            | ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::BodyStalled
            | ureq::Error::Protocol(_)
    )
}

/// Default connect and read timeouts of the HTTP clients: a stalled server
/// fails the request (and it is retried), it never hangs a pull or fetch.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP agent of the ostree client and of `fetch`: statuses are
/// answers, not errors; connections kept alive (many per host, for parallel
/// requests); `timeout` bounds connecting and each read instead of the
/// defaults; no bound on a whole body (a large one takes what it takes).
pub fn http_agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(timeout.unwrap_or(CONNECT_TIMEOUT)))
        .timeout_send_request(Some(timeout.unwrap_or(READ_TIMEOUT)))
        .timeout_recv_response(Some(timeout.unwrap_or(READ_TIMEOUT)))
        .timeout_recv_body(None)
        .timeout_per_read(Some(timeout.unwrap_or(READ_TIMEOUT)))
        .max_idle_connections_per_host(64)
        .user_agent(concat!("composefs/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// GET `url` with the clients' shared rules: the body of a 2xx answer;
/// `None` for 404 and 410 (absent is an answer); a transport failure or
/// status worth another try marked [`Transient`]; any other status an error
/// naming the URL.
pub fn get(agent: &ureq::Agent, url: &str) -> anyhow::Result<Option<ureq::Body>> {
    tracing::debug!("GET {url}");
    Ok(answer(url, agent.get(url).call())?.map(|r| r.into_body()))
}

/// [`get`] of the first `n` (> 0) bytes of `url` (a `Range` request): the
/// body, and the whole resource's size when the server sent a part (206,
/// from `Content-Range`). A server that ignores ranges sends everything
/// (200, no size): the caller reads what it wants of it.
pub fn get_prefix(
    agent: &ureq::Agent,
    url: &str,
    n: u64,
) -> anyhow::Result<Option<(ureq::Body, Option<u64>)>> {
    tracing::debug!("GET {url} (first {n} bytes)");
    let range = format!("bytes=0-{}", n.max(1) - 1);
    let Some(resp) = answer(url, agent.get(url).header("Range", &range).call())? else {
        return Ok(None);
    };
    let total = match resp.status().as_u16() {
        206 => {
            let cr = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // `bytes 0-N/TOTAL`
            let total = cr
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('/'))
                .and_then(|(_, t)| t.trim().parse::<u64>().ok());
            match total {
                Some(t) => Some(t),
                None => anyhow::bail!("GET {url}: a partial answer with Content-Range {cr:?}"),
            }
        }
        _ => None,
    };
    Ok(Some((resp.into_body(), total)))
}

/// A request's answer under the rules of [`get`].
fn answer(
    url: &str,
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<Option<ureq::http::Response<ureq::Body>>> {
    let resp = match r {
        Ok(r) => r,
        Err(e) if is_transient_transport(&e) => {
            return Err(Transient(format!("GET {url}: {e}")).into());
        }
        Err(e) => anyhow::bail!("GET {url}: {e}"),
    };
    match resp.status().as_u16() {
        200..=299 => Ok(Some(resp)),
        404 | 410 => Ok(None),
        s if is_transient_status(s) => Err(Transient(format!("GET {url}: HTTP {s}")).into()),
        s => anyhow::bail!("GET {url}: HTTP {s}"),
    }
}

/// A response body read whole (no size limit), its read failures (a body
/// cut short, a stalled read) marked [`Transient`] and naming `url`;
/// malformed data (`InvalidData`) stays an ordinary error.
pub fn body_reader(body: ureq::Body, url: String) -> impl std::io::Read + Send {
    TransientReader {
        inner: body.into_with_config().limit(u64::MAX).reader(),
        url,
    }
}

struct TransientReader<R> {
    inner: R,
    url: String,
}

impl<R: std::io::Read> std::io::Read for TransientReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                e
            } else {
                std::io::Error::other(Transient(format!("reading {}: {e}", self.url)))
            }
        })
    }
}

/// Tries in all, the first included.
pub const ATTEMPTS: u32 = 5;
/// The pause after the first failure; each later one is three times longer
/// (0.1, 0.3, 0.9, 2.7 s), up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries of our own choosing.
pub const MAX_PAUSE: Duration = Duration::from_secs(10);
/// The longest pause a server may ask for ([`RetryAfter`]).
pub const MAX_ASKED_PAUSE: Duration = Duration::from_secs(60);

/// `f`, tried again (up to [`ATTEMPTS`] in all, with growing pauses) while
/// it fails with a [`Transient`] error; any other result is returned as is.
pub fn retry<T>(f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    retry_times(ATTEMPTS, f)
}

/// [`retry`] with `attempts` tries in all (at least one). The last failure
/// is returned as is: still transient when the tries ran out (see
/// [`give_up`]).
pub fn retry_times<T>(
    attempts: u32,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if attempt < attempts && is_transient(&e) => {
                attempt += 1;
                let wait = asked_pause(&e).map_or(pause, |a| a.max(pause));
                tracing::info!("{e:#}; try {attempt} of {attempts} in {wait:?}");
                std::thread::sleep(wait);
                pause = pause.saturating_mul(3).min(MAX_PAUSE);
            }
            r => return r,
        }
    }
}

/// What [`retry_times`]`(attempts, …)` returned, made final: a transient
/// failure (the tries ran out) becomes a plain error with the same message
/// and, after more than one try, "(gave up after N attempts)", so that an
/// enclosing [`retry`] does not start the tries over. Other errors are
/// returned as they are.
pub fn give_up(e: anyhow::Error, attempts: u32) -> anyhow::Error {
    if !is_transient(&e) {
        e
    } else if attempts <= 1 {
        anyhow::anyhow!("{e:#}")
    } else {
        anyhow::anyhow!("{e:#} (gave up after {attempts} attempts)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_retried_and_others_are_not() {
        let mut calls = 0;
        let r: anyhow::Result<u32> = retry(|| {
            calls += 1;
            if calls < 3 {
                Err(std::io::Error::other(Transient("reset".into())).into())
            } else {
                Ok(7)
            }
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: anyhow::Result<()> = retry(|| {
            calls += 1;
            anyhow::bail!("checksum mismatch")
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        assert!(is_transient_status(425) && is_transient_status(503));
        assert!(!is_transient_status(404) && !is_transient_status(401));
    }

    #[test]
    fn tries_are_counted_and_the_last_failure_made_final() {
        let mut calls = 0;
        let r: anyhow::Result<()> = retry_times(2, || {
            calls += 1;
            Err(RetryAfter {
                message: "HTTP 503".into(),
                after: Duration::from_millis(1),
            }
            .into())
        });
        assert_eq!(calls, 2);
        let e = r.unwrap_err();
        assert!(is_transient(&e));
        let e = give_up(e, 2);
        assert!(!is_transient(&e));
        assert_eq!(e.to_string(), "HTTP 503 (gave up after 2 attempts)");

        let mut calls = 0;
        let r: anyhow::Result<()> = retry_times(1, || {
            calls += 1;
            Err(Transient("reset".into()).into())
        });
        assert_eq!(calls, 1);
        let e = give_up(r.unwrap_err(), 1);
        assert!(!is_transient(&e));
        assert_eq!(e.to_string(), "reset");
        let e = give_up(anyhow::anyhow!("denied"), 3);
        assert_eq!(e.to_string(), "denied");
    }
}
