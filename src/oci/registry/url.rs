//! The URLs a registry client handles: origins (what decides where our
//! `Authorization` may go), `Location` redirects resolved, query values
//! encoded, and URLs shown in messages without their query.

/// Query-component encoding: everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `(scheme, authority, rest)` of an absolute URL.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// `scheme://host[:port]`, lowercased, default port dropped, userinfo
/// dropped: what decides where our Authorization may go.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, authority, _) = split_url(url)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, a)| a)
        .to_ascii_lowercase();
    if authority.is_empty() {
        return None;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

/// A `Location` resolved against the URL that answered it.
pub fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    if let Some((scheme, _)) = location.split_once("://")
        && !scheme.contains(['/', '?', '#'])
    {
        return origin_of(location).map(|_| location.to_string());
    }
    let (scheme, authority, rest) = split_url(base)?;
    if location.starts_with("//") {
        return Some(format!("{scheme}:{location}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// A URL for messages: without its query (pre-signed blob URLs carry
/// credentials there).
pub(super) fn redact(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            origin_of("HTTPS://Quay.IO:443/v2/").as_deref(),
            Some("https://quay.io")
        );
        assert_eq!(origin_of("http://h:80").as_deref(), Some("http://h"));
        assert_eq!(
            origin_of("http://u:p@h:5000/x").as_deref(),
            Some("http://h:5000")
        );
        assert_eq!(origin_of("ftp://h/"), None);
        assert_ne!(origin_of("http://h:5000/"), origin_of("http://h:5001/"));
        assert_ne!(origin_of("http://h/"), origin_of("https://h/"));

        let base = "http://r:5000/v2/a/b/blobs/sha256:x?q=1";
        assert_eq!(
            resolve_location(base, "https://s3/x?sig=1").unwrap(),
            "https://s3/x?sig=1"
        );
        assert_eq!(resolve_location(base, "//cdn/x").unwrap(), "http://cdn/x");
        assert_eq!(
            resolve_location(base, "/other").unwrap(),
            "http://r:5000/other"
        );
        assert_eq!(
            resolve_location(base, "y").unwrap(),
            "http://r:5000/v2/a/b/blobs/y"
        );
        assert_eq!(resolve_location(base, "ftp://x/"), None);
        assert_eq!(resolve_location(base, ""), None);

        assert_eq!(
            redact("https://s3/x?X-Amz-Signature=secret"),
            "https://s3/x"
        );
        assert_eq!(
            percent_encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(percent_encode("a.b-c_d~"), "a.b-c_d~");
    }
}
