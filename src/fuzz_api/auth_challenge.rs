//! The `auth_challenge` target: what a registry sends besides documents
//! (challenges, redirects, error bodies, content types).

use crate::oci::registry;

/// What a registry sends besides documents: `WWW-Authenticate`
/// challenges (parsed, the Bearer one chosen, its realm checked and the
/// token URL built as the registry client does), `Location` redirects
/// resolved against a URL, error bodies summarised, and the media type
/// guessed from a `Content-Type`. The input is the header value (lossy
/// UTF-8). Returns the token URL when a Bearer challenge gives one.
pub fn auth_challenge(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let _ = registry::resolve_location("https://registry.example:5000/v2/a/b/manifests/t", &text);
    let _ = registry::origin_of(&text);
    let _ = registry::summarize_error_body(data);
    let _ = registry::media_type_of(&text, data);
    let challenges = registry::parse_challenges(&text);
    let url = token_url(&challenges, "library/fuzz");
    if let Some(u) = &url {
        assert!(
            registry::origin_of(u).is_some(),
            "a token URL must have an http(s) origin"
        );
    }
    url
}

/// The token URL the registry client (`Registry::answer` and
/// `fetch_token`) requests for these challenges: the first Bearer
/// challenge's realm (an http(s) URL), with `service` and each `scope`
/// (default: pull access to `repository`) as query parameters.
fn token_url(challenges: &[registry::Challenge], repository: &str) -> Option<String> {
    let c = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))?;
    let realm = c.param("realm")?;
    registry::origin_of(realm)?;
    let default_scope = format!("repository:{repository}:pull");
    let scope = c.param("scope").unwrap_or(&default_scope);
    let mut url = realm.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    if let Some(service) = c.param("service") {
        url.push(sep);
        url.push_str("service=");
        url.push_str(&registry::percent_encode(service));
        sep = '&';
    }
    for s in scope.split_whitespace() {
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&registry::percent_encode(s));
        sep = '&';
    }
    Some(url)
}
