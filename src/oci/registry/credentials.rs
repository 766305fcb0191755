//! Registry credentials, found as podman, skopeo and docker find them:
//! the credential files (containers-auth.json / docker config.json) in
//! their usual places or the one given, their `auths` entries (the most
//! specific for the repository), and the credential helpers they name
//! (`credHelpers`, `credsStore`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde::Deserialize;

use super::Registry;
use super::names::is_docker_hub;

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    /// Registry (host, or a key like those of `auths`) → credential
    /// helper name: `docker-credential-<name>` is asked.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    /// The credential helper for every registry without a `credHelpers`
    /// entry (docker's `credsStore`).
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The credential files to look at, in order: `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config`),
/// `~/.docker/config.json`.
fn auth_file_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        c.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        c.push(PathBuf::from(p).join("containers/auth.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(p) => c.push(PathBuf::from(p).join("containers/auth.json")),
        None => c.extend(
            home.as_ref()
                .map(|h| h.join(".config/containers/auth.json")),
        ),
    }
    c.extend(home.map(|h| h.join(".docker/config.json")));
    c
}

/// The credentials for `host`/`repository` and the files consulted.
pub(super) fn load_credentials(
    given: Option<&Path>,
    host: &str,
    repository: &str,
) -> Result<(Option<String>, Vec<PathBuf>)> {
    // A given file is the only one; otherwise the first of the usual
    // places that has credentials for this registry (containers-auth.json(5)).
    let files: Vec<PathBuf> = match given {
        Some(p) => {
            if !p.exists() {
                bail!("the credentials file {} does not exist", p.display());
            }
            vec![p.to_path_buf()]
        }
        None => auth_file_candidates()
            .into_iter()
            .filter(|p| p.is_file())
            .collect(),
    };
    let mut consulted = Vec::new();
    for file in files {
        let text = std::fs::read(&file)
            .with_context(|| format!("cannot read the credentials file {}", file.display()))?;
        let parsed: AuthFile = serde_json::from_slice(&text)
            .with_context(|| format!("malformed credentials file {}", file.display()))?;
        let creds = file_credentials(&parsed, host, repository)
            .with_context(|| format!("credentials file {}", file.display()))?;
        consulted.push(file);
        if creds.is_some() {
            return Ok((creds, consulted));
        }
    }
    Ok((None, consulted))
}

/// The credentials `file` gives for `host`/`repository`, as docker
/// decides: a `credHelpers` entry for the registry, else `credsStore`,
/// else the `auths` entries.
fn file_credentials(file: &AuthFile, host: &str, repository: &str) -> Result<Option<String>> {
    let want = if is_docker_hub(host) {
        "docker.io".to_string()
    } else {
        host.to_ascii_lowercase()
    };
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| auth_key(k).0 == want)
        .map(|(_, v)| v)
        .or(file.creds_store.as_ref())
        .filter(|h| !h.is_empty());
    match helper {
        Some(h) => helper_credentials(h, host),
        None => find_credentials(file, host, repository),
    }
}

/// Ask the credential helper `docker-credential-NAME get` for `host`
/// (docker-credential-helpers' protocol: the server on stdin, JSON with
/// `Username` and `Secret` on stdout; "not found" is no credentials).
fn helper_credentials(name: &str, host: &str) -> Result<Option<String>> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("bad credential helper name {name:?}");
    }
    let program = format!("docker-credential-{name}");
    // Docker Hub's credentials are stored under its legacy URL.
    let server = if is_docker_hub(host) {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    };
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the credential helper {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        // A helper that exits without reading is judged by its output.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("credential helper {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        let msg = if stdout.trim().is_empty() {
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        } else {
            stdout.trim().to_string()
        };
        bail!("credential helper {program} failed for {server}: {msg}");
    }
    #[derive(Deserialize)]
    struct HelperReply {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let reply: HelperReply = serde_json::from_str(stdout.trim())
        .with_context(|| format!("credential helper {program}: malformed answer"))?;
    if reply.username == "<token>" {
        bail!("credential helper {program} gave an identity token for {server}: not supported");
    }
    if reply.username.is_empty() && reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(
        format!("{}:{}", reply.username, reply.secret).as_bytes(),
    )))
}

/// The host (Docker Hub's aliases as `docker.io`) and namespace a key of
/// `auths` names. URL keys (`https://index.docker.io/v1/`) name a host.
fn auth_key(key: &str) -> (String, String) {
    let (is_url, rest) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(r) => (true, r),
        None => (false, key),
    };
    let rest = rest.trim_end_matches('/');
    let (h, p) = rest.split_once('/').unwrap_or((rest, ""));
    let h = if is_docker_hub(h) {
        "docker.io".to_string()
    } else {
        h.to_ascii_lowercase()
    };
    (h, if is_url { String::new() } else { p.to_string() })
}

/// The most specific entry of `auths` for `host`/`repository`, as
/// `base64(user:password)`.
fn find_credentials(file: &AuthFile, host: &str, repository: &str) -> Result<Option<String>> {
    let want = if is_docker_hub(host) {
        "docker.io".to_string()
    } else {
        host.to_ascii_lowercase()
    };
    let mut best: Option<(usize, &str, &str)> = None;
    for (key, entry) in &file.auths {
        let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
            continue;
        };
        let (h, path) = auth_key(key);
        if h != want {
            continue;
        }
        let matches = path.is_empty()
            || repository == path
            || repository
                .strip_prefix(path.as_str())
                .is_some_and(|r| r.starts_with('/'));
        if matches && best.is_none_or(|(len, _, _)| path.len() > len) {
            best = Some((path.len(), key, auth));
        }
    }
    let Some((_, key, auth)) = best else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    match decoded {
        Some(d) if d.contains(':') => Ok(Some(
            base64::engine::general_purpose::STANDARD.encode(d.as_bytes()),
        )),
        _ => bail!("the auth of {key:?} is not base64(user:password)"),
    }
}

impl Registry {
    /// The credential files consulted, for messages (or where none was).
    pub(super) fn files(&self) -> String {
        if self.auth_files.is_empty() {
            return "any credentials file (none of $REGISTRY_AUTH_FILE, \
                    $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, \
                    ~/.docker/config.json exists; see --authfile)"
                .to_string();
        }
        self.auth_files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let file: AuthFile = serde_json::from_value(serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:1")},
                "quay.io": {"auth": b64("quay:2")},
                "quay.io/org": {"auth": b64("org:3")},
                "quay.io/org/special": {"auth": b64("special:4")},
                "http://127.0.0.1:5000/v1/": {"auth": b64("local:5")},
                "empty.io": {"auth": ""},
                "bad.io": {"auth": "!!!"},
            },
            "credsStore": "ignored"
        }))
        .unwrap();
        let get = |h: &str, r: &str| find_credentials(&file, h, r).unwrap();
        assert_eq!(get("docker.io", "library/debian"), Some(b64("hub:1")));
        assert_eq!(get("index.docker.io", "x/y"), Some(b64("hub:1")));
        assert_eq!(get("quay.io", "other/x"), Some(b64("quay:2")));
        assert_eq!(get("quay.io", "org/x"), Some(b64("org:3")));
        assert_eq!(get("quay.io", "orgx/x"), Some(b64("quay:2")));
        assert_eq!(get("quay.io", "org/special"), Some(b64("special:4")));
        assert_eq!(get("quay.io", "org/special/sub"), Some(b64("special:4")));
        assert_eq!(get("127.0.0.1:5000", "a"), Some(b64("local:5")));
        assert_eq!(get("127.0.0.1:5001", "a"), None);
        assert_eq!(get("empty.io", "a"), None);
        assert_eq!(get("ghcr.io", "a"), None);
        assert!(find_credentials(&file, "bad.io", "a").is_err());
    }
}
