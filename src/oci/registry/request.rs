//! A request to the registry: sent with the authorization negotiated so
//! far, a challenge answered when the registry asks for another, the
//! status judged, and the whole retried (a fresh request each time) by
//! [`crate::net`]'s rules while it fails in a transient way.

use anyhow::Result;

use super::Registry;
use super::auth::{Challenge, parse_challenges};
use super::http::{Response, error_detail, status_message};
use super::url::origin_of;
use crate::net;

impl Registry {
    /// GET `path` of the registry (with `headers`: `Accept`, `Range`),
    /// then `then` on the 2xx response, with
    /// retries of transient failures of either (`then` must not hand out
    /// any byte before it returns): `--retries` more tries at most, after
    /// which the last failure is final ([`net::give_up`]).
    pub(super) fn get<T>(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        what: &str,
        mut then: impl FnMut(Response) -> Result<T>,
    ) -> Result<T> {
        let url = format!("{}{}", self.base, path);
        let attempts = self.retries.saturating_add(1);
        net::retry_times(attempts, || then(self.try_get(&url, headers, what)?))
            .map_err(|e| net::give_up(e, attempts))
    }

    /// One attempt: the request with what authorization we have, the
    /// challenge answered if the registry asks, the status judged.
    fn try_get(&self, url: &str, headers: &[(&str, &str)], what: &str) -> Result<Response> {
        tracing::debug!("GET {} ({what})", super::url::redact(url));
        let cached = self.cached_authorization();
        let auth = cached.as_deref().map(|v| (self.origin.as_str(), v));
        let (mut resp, mut at) = self.follow(url, headers, auth, what)?;
        if resp.status().as_u16() == 401 && origin_of(&at).as_deref() == Some(self.origin.as_str())
        {
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            if !challenges.is_empty() {
                let value = self.answer(&challenges, what)?;
                self.set_authorization(value.clone());
                (resp, at) = self.follow(url, headers, Some((&self.origin, &value)), what)?;
            }
        }
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(resp),
            404 => {
                let detail = error_detail(resp);
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                Err(self.error(format!("no {what}{detail}")))
            }
            s if net::is_transient_status(s) => Err(self.come_back_later(what, resp, &at)),
            _ => {
                let hint = if status == 401 {
                    match &self.credentials {
                        Some(_) => format!(
                            " (with the credentials for {} found in {})",
                            self.host,
                            self.files()
                        ),
                        None => format!(" (no credentials for {} in {})", self.host, self.files()),
                    }
                } else {
                    String::new()
                };
                Err(self.error(format!("{what}: {}{hint}", status_message(resp, &at))))
            }
        }
    }
}
