//! One GET over HTTP for the registry client: redirects followed by hand
//! (our `Authorization` only goes to the origin it is meant for),
//! transport failures and "come back later" statuses marked transient
//! ([`crate::net`]'s rules), and the bits of a response read for
//! messages: its length, `Retry-After`, its status and error body.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;

use super::Registry;
use super::url::{origin_of, redact, resolve_location};

pub(super) type Response = ureq::http::Response<ureq::Body>;

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// How much of an error body we read, and how much of it we show.
const ERROR_BODY_READ: u64 = 4096;
const ERROR_BODY_SHOWN: usize = 200;

impl Registry {
    /// GET `url` with `headers` (`Accept`, `Range`: sent to every hop),
    /// following redirects. `auth` (origin, header value) is sent only to
    /// URLs of that origin. Returns the final response and its URL.
    pub(super) fn follow(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<(&str, &str)>,
        what: &str,
    ) -> anyhow::Result<(Response, String)> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url);
            for (name, value) in headers {
                req = req.header(*name, *value);
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
                        self.error(format!(
                            "{what}: GET {}: HTTP {status} without a Location",
                            redact(&url)
                        ))
                    })?;
                url = resolve_location(&url, location).ok_or_else(|| {
                    self.error(format!(
                        "{what}: GET {}: cannot follow a redirect to {location:?}",
                        redact(&url)
                    ))
                })?;
                continue;
            }
            return Ok((resp, url));
        }
        Err(self.error(format!("{what}: more than {MAX_REDIRECTS} redirects")))
    }

    fn transport_failure(&self, what: &str, url: &str, e: ureq::Error) -> anyhow::Error {
        let msg = format!("{what}: GET {}: {e}", redact(url));
        if crate::net::is_transient_transport(&e) {
            self.transient(msg, None)
        } else {
            self.error(msg)
        }
    }

    /// The failure of an answer with a transient status (see
    /// [`crate::net::is_transient_status`]): worth another try, after
    /// the pause the server asked for.
    pub(super) fn come_back_later(&self, what: &str, resp: Response, at: &str) -> anyhow::Error {
        let after = retry_after(&resp);
        self.transient(format!("{what}: {}", status_message(resp, at)), after)
    }
}

/// `Content-Length`, unless the body is encoded (then it says nothing
/// about the bytes we read).
pub(super) fn content_length(resp: &Response) -> Option<u64> {
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

/// `Retry-After: <seconds>` ([`crate::net`] caps it).
fn retry_after(resp: &Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// `HTTP 403 Forbidden: DENIED: …` (and where, when it was not the URL
/// asked for).
pub(super) fn status_message(resp: Response, at: &str) -> String {
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
pub(super) fn error_detail(resp: Response) -> String {
    let mut buf = Vec::new();
    let _ = resp
        .into_body()
        .into_with_config()
        .reader()
        .take(ERROR_BODY_READ)
        .read_to_end(&mut buf);
    summarize_error_body(&buf)
}

/// An error body for a message: the registry's errors as `CODE: message`
/// (joined by `; `), else the start of the text; one printable line, at
/// most `ERROR_BODY_SHOWN` characters.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
