//! Remotes the user configured, by name: the config file (ostree's
//! spelling, `[remote "NAME"]` sections), where it is, how it is read,
//! written and merged, and what a configured remote's trees are opened
//! with. The live view shows them as `remotes/NAME/REF/`
//! ([`super::repo`]); `mount`, `ls`, `cat`, `diff` and `show` take
//! `remotes/NAME/REF` as a name ([`resolve_name`]).
//!
//! ```text
//! [remote "fedora"]
//! url=https://example.com/repo
//! gpg-keyring=/etc/pki/fedora.gpg;/etc/pki/fedora-2.gpg
//! require-signatures=true
//!
//! [remote "quay"]
//! url=docker://quay.io/fedora/fedora
//! ```
//!
//! Keys: `url` (`http://`, `https://`, `file://`, or
//! `docker://REGISTRY/NAME`: a registry repository, its tags the refs),
//! `gpg-keyring` (repeatable, or `;`-separated), `ed25519-key`,
//! `ed25519-keyfile` (both repeatable), `require-signatures`
//! (`true`/`false`). Anything else is an error naming the file and line.
//!
//! Files: `$COMPOSEFS_REMOTES` if set, else
//! `$XDG_CONFIG_HOME/composefs/remotes.conf` (`~/.config/…`): the user's,
//! which `composefs remote add/delete` edit; and [`SYSTEM_FILE`] for
//! everyone. A name in both is the user's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::remote::{OpenOptions, RemoteName};
use crate::ostree::remote::RemoteOptions;
use crate::ostree::signature::load_keys;
use crate::ostree::trust::Trust;

/// The file every user's remotes come from (after their own).
pub const SYSTEM_FILE: &str = "/etc/composefs/remotes.conf";

/// The environment variable naming the user's file instead of the usual
/// place.
pub const ENV: &str = "COMPOSEFS_REMOTES";

/// The largest config file read.
const MAX_FILE: u64 = 1 << 20;

/// One configured remote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteConfig {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpg_keyring: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ed25519_key: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ed25519_keyfile: Vec<PathBuf>,
    pub require_signatures: bool,
    /// The file it was read from (empty when not read from one).
    #[serde(skip_serializing_if = "is_empty_path")]
    pub file: PathBuf,
}

fn is_empty_path(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// What a remote's URL serves, by its spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlKind {
    /// `http(s)://` or `file://`: an ostree or a composefs repository
    /// served as files (what it serves decides).
    Files,
    /// `docker://REGISTRY/NAME`: a registry repository.
    Registry,
}

/// A name a remote may have: letters, digits, `.`, `_`, `-`, not
/// starting with `.` or `-` (no `/`, no `..`: it is a directory of the
/// live view).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!(
            "{name:?} is not a remote name (letters, digits, '.', '_', '-'; \
             not starting with '.' or '-')"
        );
    }
    Ok(())
}

/// A URL a remote may have (see [`UrlKind`]).
pub fn url_kind(url: &str) -> Result<UrlKind> {
    if let Some(rest) = url.strip_prefix("docker://") {
        let Some((host, repo)) = rest.split_once('/') else {
            bail!("{url:?}: expected docker://REGISTRY/NAME");
        };
        if host.is_empty() || repo.is_empty() || repo.contains(['@', ':', '#']) {
            bail!(
                "{url:?}: expected docker://REGISTRY/NAME (no tag or digest: the tags are the refs)"
            );
        }
        return Ok(UrlKind::Registry);
    }
    let rest = ["http://", "https://", "file://"]
        .iter()
        .find_map(|s| url.strip_prefix(s));
    match rest {
        Some(r) if !r.is_empty() && !url.contains('#') && !url.contains(char::is_whitespace) => {
            Ok(UrlKind::Files)
        }
        _ => bail!(
            "{url:?}: a remote's URL is http://, https://, file:// (without '#') or docker://REGISTRY/NAME"
        ),
    }
}

impl RemoteConfig {
    /// What its URL serves.
    pub fn kind(&self) -> UrlKind {
        url_kind(&self.url).unwrap_or(UrlKind::Files)
    }

    /// The remote name of its tree `rref`.
    pub fn tree_name(&self, rref: &str) -> RemoteName {
        match self.kind() {
            UrlKind::Registry => RemoteName::Registry(format!("{}:{rref}", self.url)),
            UrlKind::Files => RemoteName::Url {
                url: self.url.clone(),
                rref: rref.to_string(),
            },
        }
    }

    /// The options its trees open with: its trust (keys loaded now) and
    /// `base`'s timeouts and registry access.
    pub fn open_options(&self, base: &OpenOptions) -> Result<OpenOptions> {
        let (gpg, ed25519) = load_keys(&self.gpg_keyring, &self.ed25519_key, &self.ed25519_keyfile)
            .with_context(|| format!("the keys of remote {:?}", self.name))?;
        Ok(OpenOptions {
            ostree: RemoteOptions {
                trust: Trust {
                    require: self.require_signatures,
                    gpg,
                    ed25519,
                },
                timeout: base.ostree.timeout,
            },
            oci: crate::oci::lazy::LazyOptions {
                registry: base.oci.registry.clone(),
                platform: base.oci.platform.clone(),
                raw: base.oci.raw,
                pull_plain: base.oci.pull_plain,
            },
            fetch: base.fetch.clone(),
        })
    }
}

/// Parse a config file's text (`file` names it in errors).
pub fn parse(text: &str, file: &Path) -> Result<Vec<RemoteConfig>> {
    let at = |line: usize| format!("{}:{line}", file.display());
    let mut out: Vec<RemoteConfig> = Vec::new();
    // Per section: its first line, and which single keys it has set.
    let mut started: Vec<(usize, Vec<&'static str>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[') {
            let Some(inner) = inner.strip_suffix(']') else {
                bail!("{}: expected [remote \"NAME\"]", at(n));
            };
            let Some(name) = inner
                .trim()
                .strip_prefix("remote")
                .map(str::trim)
                .and_then(|r| r.strip_prefix('"'))
                .and_then(|r| r.strip_suffix('"'))
            else {
                bail!(
                    "{}: [{inner}]: only [remote \"NAME\"] sections are known",
                    at(n)
                );
            };
            validate_name(name).with_context(|| at(n))?;
            if let Some(first) = out.iter().position(|r| r.name == name) {
                bail!(
                    "{}: remote {name:?} again (first at line {})",
                    at(n),
                    started[first].0
                );
            }
            out.push(RemoteConfig {
                name: name.to_string(),
                file: file.to_path_buf(),
                ..Default::default()
            });
            started.push((n, Vec::new()));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("{}: expected KEY=VALUE or [remote \"NAME\"]", at(n));
        };
        let (key, value) = (key.trim(), value.trim());
        let (Some(r), Some((_, set))) = (out.last_mut(), started.last_mut()) else {
            bail!("{}: {key}= outside a [remote \"NAME\"] section", at(n));
        };
        let mut once = |k: &'static str| -> Result<()> {
            if set.contains(&k) {
                bail!("{}: {k}= given twice for remote {:?}", at(n), r.name);
            }
            set.push(k);
            Ok(())
        };
        match key {
            "url" => {
                once("url")?;
                url_kind(value).with_context(|| at(n))?;
                r.url = value.to_string();
            }
            "gpg-keyring" => r.gpg_keyring.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from),
            ),
            "ed25519-key" => r.ed25519_key.push(value.to_string()),
            "ed25519-keyfile" => r.ed25519_keyfile.push(PathBuf::from(value)),
            "require-signatures" => {
                once("require-signatures")?;
                r.require_signatures = match value {
                    "true" => true,
                    "false" => false,
                    _ => bail!("{}: require-signatures={value:?}: true or false", at(n)),
                };
            }
            _ => bail!(
                "{}: unknown key {key:?} (known: url, gpg-keyring, ed25519-key, \
                 ed25519-keyfile, require-signatures)",
                at(n)
            ),
        }
    }
    for (r, (line, _)) in out.iter().zip(&started) {
        if r.url.is_empty() {
            bail!("{}: remote {:?} has no url=", at(*line), r.name);
        }
    }
    Ok(out)
}

/// A config file's text for `remotes` (what [`parse`] reads back).
pub fn render(remotes: &[RemoteConfig]) -> String {
    let mut s = String::new();
    for (i, r) in remotes.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s += &format!("[remote \"{}\"]\nurl={}\n", r.name, r.url);
        for k in &r.gpg_keyring {
            s += &format!("gpg-keyring={}\n", k.display());
        }
        for k in &r.ed25519_key {
            s += &format!("ed25519-key={k}\n");
        }
        for k in &r.ed25519_keyfile {
            s += &format!("ed25519-keyfile={}\n", k.display());
        }
        if r.require_signatures {
            s += "require-signatures=true\n";
        }
    }
    s
}

/// The user's file: `$COMPOSEFS_REMOTES`, else
/// `$XDG_CONFIG_HOME/composefs/remotes.conf`, else
/// `~/.config/composefs/remotes.conf`.
pub fn user_file() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => bail!("neither ${ENV}, $XDG_CONFIG_HOME nor $HOME is set: no remotes file"),
        },
    };
    Ok(config.join("composefs/remotes.conf"))
}

/// The remotes of one file (none when it does not exist).
pub fn load_file(path: &Path) -> Result<Vec<RemoteConfig>> {
    let Some(bytes) = crate::fsutil::read_small_file(path, MAX_FILE)? else {
        return Ok(vec![]);
    };
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))?;
    parse(&text, path)
}

/// Every configured remote by name: the user's file's over
/// [`SYSTEM_FILE`]'s (only the latter's when there is no user file to
/// look for: no `$HOME`, as for a system service).
pub fn load() -> Result<BTreeMap<String, RemoteConfig>> {
    match user_file() {
        Ok(user) => load_from(&user, Path::new(SYSTEM_FILE)),
        Err(_) => load_from(Path::new(""), Path::new(SYSTEM_FILE)),
    }
}

/// [`load`] from these two files.
pub fn load_from(user: &Path, system: &Path) -> Result<BTreeMap<String, RemoteConfig>> {
    let mut out = BTreeMap::new();
    let user = match user.as_os_str().is_empty() {
        true => vec![],
        false => load_file(user)?,
    };
    for r in load_file(system)?.into_iter().chain(user) {
        out.insert(r.name.clone(), r);
    }
    Ok(out)
}

/// Replace `path`'s contents with `remotes`, atomically (a temporary
/// file beside it, synced, renamed over it).
pub fn save_file(path: &Path, remotes: &[RemoteConfig]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(render(remotes).as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// `remotes/NAME/REF` as a remote tree's name, through `remotes`; `None`
/// for a name of another spelling.
pub fn resolve_name(
    remotes: &BTreeMap<String, RemoteConfig>,
    name: &str,
) -> Result<Option<(RemoteConfig, RemoteName)>> {
    let Some(rest) = name.strip_prefix("remotes/") else {
        return Ok(None);
    };
    let Some((remote, rref)) = rest.split_once('/').filter(|(_, r)| !r.is_empty()) else {
        bail!("{name:?}: expected remotes/NAME/REF");
    };
    let Some(r) = remotes.get(remote) else {
        bail!(
            "{name:?}: no remote {remote:?} is configured (composefs remote list; {})",
            user_file().map_or_else(|_| SYSTEM_FILE.to_string(), |p| p.display().to_string())
        );
    };
    Ok(Some((r.clone(), r.tree_name(rref))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<RemoteConfig>> {
        parse(text, Path::new("/x/remotes.conf"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", p(text).unwrap_err())
    }

    #[test]
    fn good() {
        let r = p("# comment\n\n[remote \"fedora\"]\nurl = https://h/repo\n\
                   gpg-keyring=/a.gpg;/b.gpg\ngpg-keyring=/c.gpg\n\
                   ed25519-key=AAAA\ned25519-keyfile=/k\nrequire-signatures=true\n\
                   [remote \"quay\"]\nurl=docker://quay.io/fedora/fedora\n")
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "fedora");
        assert_eq!(r[0].url, "https://h/repo");
        assert_eq!(
            r[0].gpg_keyring,
            vec![
                PathBuf::from("/a.gpg"),
                PathBuf::from("/b.gpg"),
                PathBuf::from("/c.gpg")
            ]
        );
        assert_eq!(r[0].ed25519_key, vec!["AAAA".to_string()]);
        assert!(r[0].require_signatures);
        assert_eq!(r[1].kind(), UrlKind::Registry);
        assert!(!r[1].require_signatures);
        assert_eq!(
            r[1].tree_name("40").to_string(),
            "docker://quay.io/fedora/fedora:40"
        );
        assert_eq!(r[0].tree_name("a/b").to_string(), "https://h/repo#a/b");
        // Written and read back, the same.
        assert_eq!(p(&render(&r)).unwrap(), r);
    }

    #[test]
    fn bad() {
        assert!(err("url=http://h\n").contains("/x/remotes.conf:1"));
        let e = err("[remote \"a\"]\nurl=http://h\nbogus=1\n");
        assert!(
            e.contains("/x/remotes.conf:3") && e.contains("\"bogus\""),
            "{e}"
        );
        let e = err("[remote \"a\"]\nurl=http://h\n\n[remote \"a\"]\nurl=http://i\n");
        assert!(
            e.contains(":4") && e.contains("again") && e.contains("line 1"),
            "{e}"
        );
        assert!(err("[remote \"a\"]\n").contains("no url"));
        assert!(err("[remote \"a\"]\nurl=http://h\nurl=http://i\n").contains("twice"));
        assert!(err("[remote \"a\"]\nurl=ftp://h\n").contains(":2"));
        assert!(err("[remote \"a\"]\nurl=docker://q.io/n:tag\n").contains("no tag"));
        assert!(err("[remote \"a\"]\nurl=http://h#x\n").contains(":2"));
        assert!(err("[remote \"a\"]\nurl=http://h\nrequire-signatures=yes\n").contains(":3"));
        assert!(err("[core]\n").contains("only [remote"));
        assert!(err("[remote \"a\"\n").contains(":1"));
        assert!(err("[remote \"a\"]\njunk\n").contains(":2"));
    }

    #[test]
    fn hostile_names() {
        for name in ["a/b", "..", ".", "../x", "", ".hidden", "-x", "a b", "a\"b"] {
            let e = err(&format!("[remote \"{name}\"]\nurl=http://h\n"));
            assert!(e.contains(":1"), "{name:?}: {e}");
        }
        assert!(validate_name("fedora-40.x_y").is_ok());
    }

    #[test]
    fn user_wins() {
        let d = tempfile::tempdir().unwrap();
        let (u, s) = (d.path().join("user"), d.path().join("system"));
        std::fs::write(
            &s,
            "[remote \"a\"]\nurl=http://sys\n[remote \"b\"]\nurl=http://b\n",
        )
        .unwrap();
        std::fs::write(&u, "[remote \"a\"]\nurl=http://user\n").unwrap();
        let all = load_from(&u, &s).unwrap();
        assert_eq!(all["a"].url, "http://user");
        assert_eq!(all["b"].url, "http://b");
        assert!(
            load_from(&d.path().join("none"), &d.path().join("none2"))
                .unwrap()
                .is_empty()
        );
        save_file(&u, &[]).unwrap();
        assert_eq!(load_from(&u, &s).unwrap()["a"].url, "http://sys");
    }

    #[test]
    fn names_through_the_config() {
        let r = p("[remote \"o\"]\nurl=http://h/repo\n").unwrap();
        let m: BTreeMap<_, _> = r.into_iter().map(|r| (r.name.clone(), r)).collect();
        assert!(resolve_name(&m, "ostree/x").unwrap().is_none());
        let (_, n) = resolve_name(&m, "remotes/o/a/b").unwrap().unwrap();
        assert_eq!(n.to_string(), "http://h/repo#a/b");
        assert!(resolve_name(&m, "remotes/o").is_err());
        assert!(resolve_name(&m, "remotes/o/").is_err());
        assert!(format!("{:#}", resolve_name(&m, "remotes/z/a").unwrap_err()).contains("\"z\""));
    }
}
