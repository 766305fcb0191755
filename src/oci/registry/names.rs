//! Registry hosts and repository names: both validated before they
//! become part of a URL; Docker Hub's aliases; the hosts spoken to over
//! plain HTTP without being told.

use anyhow::{Result, bail};

/// The host Docker Hub's API is served from.
pub(super) const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Whether `host` is one of Docker Hub's names.
pub(super) fn is_docker_hub(host: &str) -> bool {
    ["docker.io", "index.docker.io", DOCKER_HUB_API]
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h))
}

/// The host name without the port (`[::1]` keeps its brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    }
}

/// Hosts spoken to over plain HTTP without being told.
pub(super) fn is_loopback(host: &str) -> bool {
    let name = host_name(host);
    name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost") || name == "[::1]"
}

/// `host[:port]`, without a scheme or a path.
pub(super) fn validate_host(host: &str) -> Result<()> {
    if host.contains("://") {
        bail!("registry host {host:?}: give the host without a scheme");
    }
    let ok = !host.is_empty()
        && host.len() <= 255
        && !host.starts_with(['.', '-', ':'])
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    if !ok {
        bail!("malformed registry host {host:?} (host[:port])");
    }
    if let Some(port) = host
        .strip_prefix(host_name(host))
        .and_then(|p| p.strip_prefix(':'))
        && port.parse::<u16>().is_err()
    {
        bail!("malformed registry host {host:?}: bad port {port:?}");
    }
    Ok(())
}

/// The distribution spec's repository grammar: path components of
/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes, separated by `/`.
pub fn validate_repository(name: &str) -> Result<()> {
    fn component_ok(c: &str) -> bool {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    }
    if name.is_empty() || name.len() > 255 || !name.split('/').all(component_ok) {
        bail!(
            "invalid repository name {name:?}: lowercase letters and digits, joined by '.', '_', '__' or '-', in '/'-separated components"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "library/debian",
            "a",
            "test/img",
            "a.b_c__d-e---f/g0/9",
            "org/sub/deep/name",
            "fedora/fedora-bootc",
        ] {
            validate_repository(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "Library/debian",
            "a//b",
            "/a",
            "a/",
            "a/../b",
            "..",
            "a/.b",
            "a-/b",
            "a___b",
            "a._b",
            "a b",
            "a:b",
            "a/b?c",
            "a%2fb",
            "ü",
        ] {
            let e = validate_repository(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid repository name"),
                "{bad}: {e}"
            );
        }
        assert!(validate_repository(&"a".repeat(256)).is_err());
    }
}
