//! Remote names: trees looked at where they are, their file contents
//! fetched into the repository when first read (`mount`, `ls`, `cat`,
//! `diff`, `show`). Two spellings:
//!
//! - `URL#REF`, URL `http://…`, `https://…` or `file:///DIR`: a repository
//!   served as plain files, told apart by what it serves. `URL/config`: an
//!   ostree repository, REF a ref, checksum or unique prefix
//!   ([`crate::ostree::remote`]). `URL/meta.json`: a composefs repository,
//!   REF a name as `composefs fetch` takes it (`ostree/NAME`,
//!   `images/NAME`, `oci/NAME`, `streams/refs/NAME`,
//!   `streams/CONTENT-ID`; [`crate::fetch::lazy`]).
//! - `docker://REGISTRY/NAME[:TAG|@DIGEST]`: an image in a registry, read
//!   lazily ([`crate::oci::lazy`]). (`oci pull` spells the images it pulls
//!   the same way.)
//! - `remotes/NAME/REF`: the tree REF of the remote NAME the user
//!   configured ([`super::remotes`]): its URL and its trust from the
//!   config file (the command's own trust flags do not apply to it).
//!
//! Anything else is a local name ([`super::resolve`]).

use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::Source;
use crate::fetch::FetchOptions;
use crate::fetch::lazy::{LazyTree, fetch_metadata};
use crate::fetch::remote::Remote;
use crate::fetch::walk::Kind as ObjectKind;
use crate::fsverity::ObjectId;
use crate::oci::lazy::LazyOptions;
use crate::ostree::checksum::Checksum;
use crate::ostree::committree::CommitTree;
use crate::ostree::remote::RemoteOptions;
use crate::repository::Repository;
use crate::repository::meta::Meta;
use crate::splitstream::content_type;
use crate::tree::Tree;

/// What a remote name names, before anything is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteName {
    /// `URL#REF`: a repository served as plain files (ostree or composefs:
    /// what it serves decides).
    Url { url: String, rref: String },
    /// `docker://REGISTRY/NAME[:TAG|@DIGEST]`, as written.
    Registry(String),
    /// `remotes/NAME/REF`: through the config ([`super::remotes`]).
    Configured { remote: String, rref: String },
}

const SPELLINGS: &str = "remote trees are named URL#REF (URL http://, https:// or file://) \
                         or docker://REGISTRY/NAME[:TAG|@DIGEST]";

impl RemoteName {
    /// `Ok(None)` for a local name; an error for a name that looks
    /// remote but is not one of the spellings.
    pub fn parse(name: &str) -> Result<Option<RemoteName>> {
        if let Some(rest) = name.strip_prefix("remotes/") {
            let Some((remote, rref)) = rest.split_once('/').filter(|(_, r)| !r.is_empty()) else {
                bail!("{name:?}: expected remotes/NAME/REF (a configured remote's tree)");
            };
            super::remotes::validate_name(remote).with_context(|| format!("{name:?}"))?;
            return Ok(Some(RemoteName::Configured {
                remote: remote.to_string(),
                rref: rref.to_string(),
            }));
        }
        if let Some(rest) = name.strip_prefix("docker://") {
            if rest.is_empty() || rest.starts_with('/') || rest.contains('#') {
                bail!("{name:?}: expected docker://REGISTRY/NAME[:TAG|@DIGEST]");
            }
            return Ok(Some(RemoteName::Registry(name.to_string())));
        }
        let Some((scheme, rest)) = name.split_once("://") else {
            return Ok(None);
        };
        let is_scheme = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !is_scheme {
            return Ok(None);
        }
        if !matches!(scheme, "http" | "https" | "file") {
            bail!("{name:?}: {scheme}:// is not a known kind of URL; {SPELLINGS}");
        }
        let Some((url, rref)) = name.split_once('#') else {
            bail!("{name:?}: say which tree of the repository: URL#REF");
        };
        if rest.starts_with('#') {
            bail!("{name:?}: no URL before '#'");
        }
        if rref.is_empty() {
            bail!(
                "{name:?}: nothing after '#': say which tree (URL#REF: an ostree ref or \
                 checksum; of a composefs repository, a name such as ostree/NAME or images/NAME)"
            );
        }
        Ok(Some(RemoteName::Url {
            url: url.to_string(),
            rref: rref.to_string(),
        }))
    }
}

impl std::fmt::Display for RemoteName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteName::Url { url, rref } => write!(f, "{url}#{rref}"),
            RemoteName::Registry(r) => f.write_str(r),
            RemoteName::Configured { remote, rref } => write!(f, "remotes/{remote}/{rref}"),
        }
    }
}

/// Where a path after a name (`NAME:/PATH`) may start in `arg`: after
/// the `#` of `URL#REF`, after `docker://`, else anywhere.
pub fn path_search_start(arg: &str) -> usize {
    if arg.starts_with("docker://") {
        return "docker://".len();
    }
    match (arg.find("://"), arg.find('#')) {
        (Some(s), Some(h)) if s < h => h,
        _ => 0,
    }
}

/// How remote trees are opened.
#[derive(Default)]
pub struct OpenOptions {
    /// Remote ostree commits: trust and timeouts.
    pub ostree: RemoteOptions,
    /// Registry images: access, credentials, timeouts.
    pub oci: LazyOptions,
    /// Composefs repositories: parallel fetches and timeouts.
    pub fetch: FetchOptions,
}

/// What a composefs repository's name led to (the root object's kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// A composefs image, by its object.
    Image(ObjectId),
    /// An ostree commit, by its checksum and its stream's object.
    Commit { commit: Checksum, stream: ObjectId },
    /// An OCI image, by its manifest stream.
    Oci(ObjectId),
}

/// What kind of tree a remote name turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteKind {
    /// A tree of a composefs repository (its metadata stored here).
    Composefs(Served),
    /// A commit of an ostree repository.
    OstreeCommit(crate::ostree::Checksum),
    /// An image in a registry.
    RegistryImage,
}

/// A remote tree, opened.
pub struct Opened {
    pub tree: Arc<dyn Tree>,
    pub kind: RemoteKind,
}

/// What a repository URL serves.
pub(crate) enum Serves {
    Ostree,
    Composefs(Meta),
}

/// A remote tree stores what it fetches: the repository must take
/// writes (features this tool writes, and a directory it may write to).
pub fn ensure_writable(repo: &Repository) -> Result<()> {
    let why = || {
        format!(
            "a remote tree stores what it fetches in the repository, and {} cannot be written",
            repo.path().display()
        )
    };
    repo.ensure_writable().with_context(why)?;
    rustix::fs::accessat(
        repo.objects_dir(),
        ".",
        rustix::fs::Access::WRITE_OK,
        rustix::fs::AtFlags::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(why)
}

/// Open the remote tree `name` in `repo` (which stores what is fetched).
pub fn open(repo: &Repository, name: &RemoteName, opts: &OpenOptions) -> Result<Opened> {
    ensure_writable(repo)?;
    open_inner(repo, name, opts).with_context(|| format!("cannot open {name}"))
}

/// The tree `rref` of the configured remote `remote`, opened with its
/// trust and `base`'s timeouts and access.
pub fn open_configured(
    repo: &Repository,
    remote: &super::remotes::RemoteConfig,
    rref: &str,
    base: &OpenOptions,
) -> Result<Opened> {
    ensure_writable(repo)?;
    let opts = remote.open_options(base)?;
    let name = remote.tree_name(rref);
    open_inner(repo, &name, &opts)
        .with_context(|| format!("cannot open remotes/{}/{rref} ({name})", remote.name))
}

fn open_inner(repo: &Repository, name: &RemoteName, opts: &OpenOptions) -> Result<Opened> {
    match name {
        RemoteName::Configured { remote, rref } => {
            let all = super::remotes::load()?;
            let Some((cfg, inner)) =
                super::remotes::resolve_name(&all, &format!("remotes/{remote}/{rref}"))?
            else {
                bail!("remotes/{remote}/{rref}: not a configured remote's name");
            };
            open_inner(repo, &inner, &cfg.open_options(opts)?)
        }
        RemoteName::Registry(reference) => {
            let tree = match crate::oci::lazy::open_tree(repo, reference, &opts.oci) {
                Ok(t) => t,
                // Asked to: an image that cannot be read lazily is pulled.
                Err(e) if opts.oci.pull_plain && crate::oci::lazy::is_not_lazy(&e) => {
                    let id = crate::oci::lazy::pull_whole(repo, reference, &opts.oci)?;
                    let source = if opts.oci.raw {
                        super::Source::OciRaw(id)
                    } else {
                        super::Source::Oci(id)
                    };
                    source.load(repo)?
                }
                Err(e) => return Err(e),
            };
            Ok(Opened {
                tree,
                kind: RemoteKind::RegistryImage,
            })
        }
        RemoteName::Url { url, rref } => {
            let remote = Remote::new(url, opts.fetch.timeout)?;
            match probe(&remote, url)? {
                Serves::Ostree => {
                    let (commit, tree) =
                        crate::ostree::remote::open_commit(repo, url, rref, &opts.ostree)?;
                    Ok(Opened {
                        tree,
                        kind: RemoteKind::OstreeCommit(commit),
                    })
                }
                Serves::Composefs(meta) => {
                    let checked = meta.check().with_context(|| remote.url("meta.json"))?;
                    if checked.algorithm != repo.algorithm() {
                        bail!(
                            "{url} is a {} repository and this one is {}: their objects cannot be shared",
                            checked.algorithm.meta_name(),
                            repo.algorithm().meta_name()
                        );
                    }
                    open_composefs(repo, remote, url, rref, &opts.fetch)
                }
            }
        }
    }
}

/// GET `URL/meta.json`, else `URL/config`.
pub(crate) fn probe(remote: &Remote, url: &str) -> Result<Serves> {
    let read = |path: &str| remote.read_small(path, 1 << 20);
    if let Some(bytes) = read("meta.json")? {
        let meta = Meta::parse(&bytes).with_context(|| {
            format!(
                "{} is not a composefs repository's meta.json",
                remote.url("meta.json")
            )
        })?;
        return Ok(Serves::Composefs(meta));
    }
    if read("config")?.is_some() {
        return Ok(Serves::Ostree);
    }
    bail!(
        "{url} serves neither {} (an ostree repository) nor {} (a composefs repository)",
        remote.url("config"),
        remote.url("meta.json")
    )
}

/// A tree of a composefs repository: its metadata fetched, the tree built
/// from the objects (no entry names them), contents fetched when read.
fn open_composefs(
    repo: &Repository,
    remote: Remote,
    url: &str,
    rref: &str,
    opts: &FetchOptions,
) -> Result<Opened> {
    let m = fetch_metadata(repo, &remote, rref, opts)?;
    let id = m.id;
    let (inner, served): (Arc<dyn Tree>, Served) = match (m.kind, m.content_type) {
        (ObjectKind::Image, _) => (Source::Image(id).load(repo)?, Served::Image(id)),
        (ObjectKind::Stream, Some(crate::ostree::shared::CONTENT_TYPE)) => {
            let t = CommitTree::open_stream_object(repo, &id)?;
            let commit = t.commit();
            (Arc::new(t), Served::Commit { commit, stream: id })
        }
        (ObjectKind::Stream, Some(content_type::OCI_MANIFEST)) => {
            (Source::Oci(id).load(repo)?, Served::Oci(id))
        }
        (ObjectKind::Stream, t) => bail!(
            "{}: a stream of content type {}, not a tree (an image, an ostree commit or an OCI image)",
            m.url,
            t.map_or_else(|| "?".into(), crate::splitstream::content_type_name)
        ),
    };
    let tree = LazyTree::new(inner, repo, remote, format!("{url}#{rref}"))?;
    Ok(Opened {
        tree: Arc::new(tree),
        kind: RemoteKind::Composefs(served),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(RemoteName::parse("ostree/main").unwrap(), None);
        assert_eq!(RemoteName::parse("oci/localhost/app:1").unwrap(), None);
        assert_eq!(
            RemoteName::parse("http://h/r#ostree/x").unwrap(),
            Some(RemoteName::Url {
                url: "http://h/r".into(),
                rref: "ostree/x".into()
            })
        );
        assert_eq!(
            RemoteName::parse("file:///srv/repo#main").unwrap(),
            Some(RemoteName::Url {
                url: "file:///srv/repo".into(),
                rref: "main".into()
            })
        );
        assert_eq!(
            RemoteName::parse("docker://localhost:5000/app:1").unwrap(),
            Some(RemoteName::Registry("docker://localhost:5000/app:1".into()))
        );
        let err = |n: &str| format!("{:#}", RemoteName::parse(n).unwrap_err());
        assert!(err("http://h/r#").contains("nothing after '#'"));
        assert!(err("http://h/r").contains("URL#REF"));
        assert!(err("ftp://x#y").contains("ftp://"));
        assert!(err("http://#y").contains("no URL"));
        assert!(err("docker://").contains("docker://REGISTRY"));
    }

    #[test]
    fn paths_after_names() {
        fn split(a: &str) -> Option<(&str, &str)> {
            let i = path_search_start(a);
            a[i..].find(":/").map(|j| (&a[..i + j], &a[i + j + 1..]))
        }
        assert_eq!(
            split("http://h:80/r#ostree/x:/etc/a"),
            Some(("http://h:80/r#ostree/x", "/etc/a"))
        );
        assert_eq!(
            split("docker://localhost:5000/app:1:/usr"),
            Some(("docker://localhost:5000/app:1", "/usr"))
        );
        assert_eq!(split("main:/etc"), Some(("main", "/etc")));
        assert_eq!(split("http://h/r#main"), None);
    }
}
