//! Authentication with a registry: the challenges of its
//! `WWW-Authenticate` header parsed and answered, with a Bearer token from
//! the challenge's realm (asked with our Basic credentials when we have
//! some, anonymously otherwise) or with Basic credentials.

use std::io::Read;

use anyhow::Result;
use serde::Deserialize;

use super::Registry;
use super::http::status_message;
use super::url::{origin_of, percent_encode, redact};

/// The largest token-endpoint answer we read.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// One authentication challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    /// Names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `Bearer realm="…",service="…",scope="a,b"`, possibly several challenges
/// in one header (`Basic realm="x", Bearer realm="y"`). Quoted values may
/// hold commas and backslash escapes.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let is_sep = |c: u8| c == b',' || c.is_ascii_whitespace();
    let mut out: Vec<Challenge> = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && is_sep(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !is_sep(b[i]) && b[i] != b'=' {
            i += 1;
        }
        let token = &header[start..i];
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' {
            // name=value (or a token68's padding when the name is empty).
            i = j + 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < b.len() {
                    match b[i] {
                        b'\\' if i + 1 < b.len() => {
                            v.push(b[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        c => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                String::from_utf8_lossy(&v).into_owned()
            } else {
                let vs = i;
                while i < b.len() && !is_sep(b[i]) {
                    i += 1;
                }
                header[vs..i].to_string()
            };
            if !token.is_empty()
                && let Some(c) = out.last_mut()
            {
                c.params.push((token.to_ascii_lowercase(), value));
            }
        } else if !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_string(),
                params: Vec::new(),
            });
        }
    }
    out
}

/// The URL a token is asked from: the realm with the `service` and each
/// `scope` as query parameters.
fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut url = realm.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        url.push(sep);
        url.push_str("service=");
        url.push_str(&percent_encode(service));
        sep = '&';
    }
    for s in scope.split_whitespace() {
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&percent_encode(s));
        sep = '&';
    }
    url
}

impl Registry {
    /// The `Authorization` value that answers the registry's challenges.
    pub(super) fn answer(&self, challenges: &[Challenge], what: &str) -> Result<String> {
        if let Some(c) = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        {
            let Some(realm) = c.param("realm") else {
                return Err(self.error(format!("{what}: a Bearer challenge without a realm")));
            };
            let default_scope = format!("repository:{}:pull", self.repository);
            let scope = c.param("scope").unwrap_or(&default_scope);
            let token = self.fetch_token(realm, c.param("service"), scope, what)?;
            return Ok(format!("Bearer {token}"));
        }
        if challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
        {
            return match &self.credentials {
                Some(creds) => Ok(format!("Basic {creds}")),
                None => Err(self.error(format!(
                    "{what}: the registry requires a login, and there are no credentials for {} in {}",
                    self.host,
                    self.files()
                ))),
            };
        }
        let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(self.error(format!(
            "{what}: unsupported authentication scheme {}",
            schemes.join(", ")
        )))
    }

    /// A token from a Bearer challenge's realm (with our Basic credentials
    /// when we have some, anonymous otherwise).
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        what: &str,
    ) -> Result<String> {
        let Some(realm_origin) = origin_of(realm) else {
            return Err(self.error(format!(
                "{what}: the token realm {realm:?} is not an http(s) URL"
            )));
        };
        let url = token_url(realm, service, scope);
        let basic = self.credentials.as_ref().map(|c| format!("Basic {c}"));
        let token_what = format!("{what}: token for {scope:?}");
        let (resp, at) = self.follow(
            &url,
            &[("Accept", "application/json")],
            basic.as_deref().map(|b| (realm_origin.as_str(), b)),
            &token_what,
        )?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            s if crate::net::is_transient_status(s) => {
                return Err(self.come_back_later(&token_what, resp, &at));
            }
            _ => {
                let hint = match (&self.credentials, status) {
                    (Some(_), 401 | 403) => {
                        format!(" (credentials from {} refused?)", self.files())
                    }
                    _ => String::new(),
                };
                return Err(
                    self.error(format!("{token_what}: {}{hint}", status_message(resp, &at)))
                );
            }
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_with_config()
            .reader()
            .take(MAX_TOKEN_RESPONSE)
            .read_to_end(&mut body)
            .map_err(|e| self.transient(format!("{token_what}: {e}"), None))?;

        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            self.error(format!(
                "{token_what}: malformed answer from {}: {e}",
                redact(&at)
            ))
        })?;
        match parsed.token.or(parsed.access_token) {
            Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(t),
            _ => Err(self.error(format!(
                "{token_what}: {} answered without a usable token",
                redact(&at)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.to_string(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenges(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#
            ),
            vec![ch(
                "Bearer",
                &[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:library/debian:pull"),
                ]
            )]
        );
        // Commas inside quotes, spaces around separators, escapes, case.
        assert_eq!(
            parse_challenges(
                r#"bearer Realm = "http://h/t?a=1,b=2" , scope="repository:a/b:pull,push", service=plain, x="q\"uote""#
            ),
            vec![ch(
                "bearer",
                &[
                    ("realm", "http://h/t?a=1,b=2"),
                    ("scope", "repository:a/b:pull,push"),
                    ("service", "plain"),
                    ("x", "q\"uote"),
                ]
            )]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![ch("Basic", &[("realm", "Registry Realm")])]
        );
        // Several challenges in one header.
        assert_eq!(
            parse_challenges(r#"Basic realm="a, b", Bearer realm="https://t/",service="s""#),
            vec![
                ch("Basic", &[("realm", "a, b")]),
                ch("Bearer", &[("realm", "https://t/"), ("service", "s")])
            ]
        );
        // Token68, a bare scheme, garbage: no panic, sensible output.
        assert_eq!(
            parse_challenges("Negotiate abc=="),
            vec![ch("Negotiate", &[("abc", "=")])]
        );
        assert_eq!(parse_challenges("Basic"), vec![ch("Basic", &[])]);
        assert_eq!(parse_challenges(""), vec![]);
        assert_eq!(parse_challenges("=,=\""), vec![]);
        assert_eq!(
            parse_challenges(r#"Bearer realm="unterminated"#),
            vec![ch("Bearer", &[("realm", "unterminated")])]
        );
        let c = &parse_challenges(r#"Bearer realm="r",service="s""#)[0];
        assert_eq!(c.param("realm"), Some("r"));
        assert_eq!(c.param("scope"), None);
    }
}
