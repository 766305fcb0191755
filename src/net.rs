//! The network rules the two clients share (ostree repositories over HTTP,
//! OCI registries): which failures are worth another try, how many tries,
//! and how long to wait between them. Sources mark a failure worth retrying
//! as [`Transient`]; the pulls wrap each request (or each whole object or
//! blob, whose download may be cut short) in [`retry`].

use std::time::Duration;

/// A failure worth retrying: a connection refused or reset, a timeout, a
/// body cut short, a server that says "later" ([`is_transient_status`]).
/// Readers put it inside the `io::Error`s they return.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// Whether `e` is [`Transient`], or carries one: directly, or inside an
/// `io::Error` (whose `source()` skips the error it wraps).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Transient>().is_some()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<Transient>().is_some())
    })
}

/// HTTP statuses that ask to come back later: request timeout, too early,
/// too many requests, and server errors.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

/// Tries in all, the first included.
pub const ATTEMPTS: u32 = 5;
/// The pause after the first failure; each later one is three times longer
/// (0.1, 0.3, 0.9, 2.7 s).
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// `f`, tried again (up to [`ATTEMPTS`] in all, with growing pauses) while
/// it fails with a [`Transient`] error; any other result is returned as is.
pub fn retry<T>(mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                attempt += 1;
                std::thread::sleep(pause);
                pause *= 3;
            }
            r => return r,
        }
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
}
