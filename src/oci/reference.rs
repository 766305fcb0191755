//! Image references in the transports skopeo and podman users type:
//! `docker://[registry/]name[:tag|@digest]` (also without `docker://`),
//! `oci:DIR[:name]`, `oci-archive:FILE[:name]`, `docker-archive:FILE`.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::spec::Digest;

/// Docker Hub, as docker and podman spell it.
pub const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    Registry {
        /// `host[:port]`.
        host: String,
        /// `library/debian`, `org/app`.
        repository: String,
        /// A tag or a digest (`sha256:…`).
        reference: String,
    },
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    DockerArchive {
        file: PathBuf,
        /// Which image of the archive: a name (`name[:tag]`, as in its
        /// `RepoTags`) or `@N`, the N-th (from 0), as skopeo takes them.
        image: Option<String>,
    },
}

/// `docker-archive:FILE[:name[:tag]|:@N]`, split as skopeo splits it: at
/// the first `:` when what follows names an image; otherwise the whole is
/// the file.
fn file_and_image(s: &str) -> (PathBuf, Option<String>) {
    if let Some((f, i)) = s.split_once(':')
        && !f.is_empty()
    {
        let index = i
            .strip_prefix('@')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if index || ImageRef::parse_docker(i).is_ok() {
            return (PathBuf::from(f), Some(i.to_string()));
        }
    }
    (PathBuf::from(s), None)
}

/// Whether `a` and `b` name the same image once Docker's defaults are
/// applied (`debian` = `docker.io/library/debian:latest`), as skopeo
/// matches a `docker-archive` image to its `RepoTags`.
pub fn same_docker_name(a: &str, b: &str) -> bool {
    match (ImageRef::parse_docker(a), ImageRef::parse_docker(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (distribution spec).
pub fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `host/repository:tag` or `host/repository@digest`.
fn repo_ref(host: &str, repository: &str, reference: &str) -> String {
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    format!("{host}/{repository}{sep}{reference}")
}

/// An image name in a layout's index (`org.opencontainers.image.ref.name`,
/// image-spec annotations): `component ("/" component)*`, a component
/// being `alphanum (separator alphanum)*` with separators `-._:@+` or
/// `--`. podman and skopeo write full names there (`localhost/app:1`).
pub fn is_ref_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|c| {
            let b = c.as_bytes();
            let mut i = 0;
            loop {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                if i == start {
                    return false;
                }
                if i == b.len() {
                    return true;
                }
                i += if b[i..].starts_with(b"--") {
                    2
                } else if matches!(b[i], b'-' | b'.' | b'_' | b':' | b'@' | b'+') {
                    1
                } else {
                    return false;
                };
            }
        })
}

/// `PATH[:name]`, split as skopeo and podman split it: at the first `:`,
/// when what follows is an image name (`oci-archive:img.tar:localhost/app:1`
/// names the image `localhost/app:1`, as `podman save` records it).
/// Otherwise the part after the last `:` is a tag if it looks like one,
/// and without either the whole is the path.
fn path_and_tag(s: &str) -> (PathBuf, Option<String>) {
    if let Some((p, t)) = s.split_once(':')
        && !p.is_empty()
        && (is_tag(t) || is_ref_name(t))
    {
        return (PathBuf::from(p), Some(t.to_string()));
    }
    match s.rsplit_once(':') {
        Some((p, t)) if !p.is_empty() && is_tag(t) => (PathBuf::from(p), Some(t.to_string())),
        _ => (PathBuf::from(s), None),
    }
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = path_and_tag(rest);
            return Ok(ImageRef::Layout { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = path_and_tag(rest);
            return Ok(ImageRef::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                bail!("{s:?}: docker-archive needs a file");
            }
            let (file, image) = file_and_image(rest);
            if image
                .as_deref()
                .is_some_and(|i| i.contains('@') && !i.starts_with('@'))
            {
                bail!(
                    "{s:?}: an image in a docker-archive is named by name[:tag] or @INDEX, not by digest"
                );
            }
            return Ok(ImageRef::DockerArchive { file, image });
        }
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        if let Some((transport, _)) = rest.split_once(':')
            && !transport.contains(['/', '.'])
            && matches!(
                transport,
                "containers-storage" | "dir" | "docker-daemon" | "ostree" | "sif"
            )
        {
            bail!(
                "{s:?}: the {transport} transport is not supported (use docker://, oci:, oci-archive: or docker-archive:)"
            );
        }
        Self::parse_docker(rest).map_err(|e| e.context(format!("image reference {s:?}")))
    }

    /// `[registry/]name[:tag][@digest]` with Docker Hub's defaults.
    fn parse_docker(s: &str) -> Result<ImageRef> {
        if s.is_empty() {
            bail!("empty image name");
        }
        // `name[:tag]` then `@digest`; the digest wins over a tag, as in
        // docker. A `:` after the last `/` starts the tag (before it, a port).
        let (named, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?.to_string())),
            None => (s, None),
        };
        let last = named.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match named[last..].rfind(':') {
            Some(i) => {
                let tag = &named[last + i + 1..];
                if !is_tag(tag) {
                    bail!("malformed tag {tag:?}");
                }
                (&named[..last + i], Some(tag.to_string()))
            }
            None => (named, None),
        };
        let reference = digest.or(tag).unwrap_or_else(|| "latest".to_string());
        let (host, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if host == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || !repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
            })
        {
            bail!(
                "malformed repository name {repository:?} (lowercase letters, digits, '.', '_', '-', '/')"
            );
        }
        Ok(ImageRef::Registry {
            host,
            repository,
            reference,
        })
    }

    /// The name an image is stored under unless the user gives one:
    /// `host/repository:tag` (or `@digest`) for registries, the tag or the
    /// file name for layouts and archives.
    pub fn default_name(&self) -> String {
        let stem = |p: &PathBuf| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into())
        };
        match self {
            ImageRef::Registry {
                host,
                repository,
                reference,
            } => repo_ref(host, repository, reference),
            ImageRef::Layout { dir, tag } => match tag {
                Some(t) => format!("{}:{t}", stem(dir)),
                None => stem(dir),
            },
            ImageRef::OciArchive { file, tag } => match tag {
                Some(t) => format!("{}:{t}", stem(file)),
                None => stem(file),
            },
            ImageRef::DockerArchive { file, image } => match image {
                Some(i) => format!("{}:{i}", stem(file)),
                None => stem(file),
            },
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Registry {
                host,
                repository,
                reference,
            } => write!(f, "docker://{}", repo_ref(host, repository, reference)),
            ImageRef::Layout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
            ImageRef::OciArchive { file, tag } => {
                write!(f, "oci-archive:{}", file.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
            ImageRef::DockerArchive { file, image } => {
                write!(f, "docker-archive:{}", file.display())?;
                image.as_ref().map_or(Ok(()), |i| write!(f, ":{i}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> (String, String, String) {
        match ImageRef::parse(s).unwrap() {
            ImageRef::Registry {
                host,
                repository,
                reference,
            } => (host, repository, reference),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn docker_defaults() {
        let t = |h: &str, r: &str, x: &str| (h.to_string(), r.to_string(), x.to_string());
        assert_eq!(reg("debian"), t("docker.io", "library/debian", "latest"));
        assert_eq!(
            reg("docker://debian:12"),
            t("docker.io", "library/debian", "12")
        );
        assert_eq!(reg("user/app:1.0"), t("docker.io", "user/app", "1.0"));
        assert_eq!(reg("quay.io/org/app"), t("quay.io", "org/app", "latest"));
        assert_eq!(
            reg("docker://127.0.0.1:5000/test/img:t"),
            t("127.0.0.1:5000", "test/img", "t")
        );
        assert_eq!(reg("localhost/img"), t("localhost", "img", "latest"));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            reg(&format!("debian@{d}")),
            t("docker.io", "library/debian", d)
        );
        assert_eq!(
            reg(&format!("debian:12@{d}")),
            t("docker.io", "library/debian", d)
        );
        assert_eq!(
            reg(&format!("127.0.0.1:5000/img@{d}")),
            t("127.0.0.1:5000", "img", d)
        );
        for bad in [
            "",
            "Debian",
            "debian:",
            "debian@sha256:xyz",
            "a//b",
            "dir:/tmp/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn layouts_and_archives() {
        assert_eq!(
            ImageRef::parse("oci:/tmp/l:v1").unwrap(),
            ImageRef::Layout {
                dir: "/tmp/l".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/tmp/l").unwrap(),
            ImageRef::Layout {
                dir: "/tmp/l".into(),
                tag: None
            }
        );
        assert_eq!(
            ImageRef::parse("oci-archive:x.tar:latest").unwrap(),
            ImageRef::OciArchive {
                file: "x.tar".into(),
                tag: Some("latest".into())
            }
        );
        // As skopeo splits them: at the first colon, the rest an image
        // name as podman writes it in an index.
        assert_eq!(
            ImageRef::parse("oci-archive:x.tar:localhost/app:1").unwrap(),
            ImageRef::OciArchive {
                file: "x.tar".into(),
                tag: Some("localhost/app:1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/tmp/l:quay.io/org/app:v1.2-3").unwrap(),
            ImageRef::Layout {
                dir: "/tmp/l".into(),
                tag: Some("quay.io/org/app:v1.2-3".into())
            }
        );
        // A path with a colon, what follows it no image name: the tag
        // after the last colon.
        assert_eq!(
            ImageRef::parse("oci:/tmp/a:b c/l:v1").unwrap(),
            ImageRef::Layout {
                dir: "/tmp/a:b c/l".into(),
                tag: Some("v1".into())
            }
        );
        for good in ["a", "v1.0", "localhost/app:1", "a--b", "x@y+z", "A_b"] {
            assert!(is_ref_name(good), "{good:?}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "-a", "a-", "a:", "a b", "a---b", "_a",
        ] {
            assert!(!is_ref_name(bad), "{bad:?}");
        }
        assert_eq!(
            ImageRef::parse("docker-archive:/a/b.tar").unwrap(),
            ImageRef::DockerArchive {
                file: "/a/b.tar".into(),
                image: None
            }
        );
        for (typed, image) in [
            ("docker-archive:b.tar:localhost/app:1", "localhost/app:1"),
            ("docker-archive:b.tar:debian", "debian"),
            ("docker-archive:b.tar:@1", "@1"),
        ] {
            assert_eq!(
                ImageRef::parse(typed).unwrap(),
                ImageRef::DockerArchive {
                    file: "b.tar".into(),
                    image: Some(image.into())
                }
            );
        }
        assert_eq!(
            ImageRef::parse("docker-archive:a:B C.tar").unwrap(),
            ImageRef::DockerArchive {
                file: "a:B C.tar".into(),
                image: None
            }
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(ImageRef::parse(&format!("docker-archive:b.tar:app@{d}")).is_err());
        assert!(same_docker_name(
            "debian",
            "docker.io/library/debian:latest"
        ));
        assert!(same_docker_name("localhost/app:1", "localhost/app:1"));
        assert!(!same_docker_name("localhost/app:1", "localhost/app:2"));
        assert_eq!(
            ImageRef::parse("oci:/tmp/l:v1").unwrap().default_name(),
            "l:v1"
        );
        assert_eq!(
            ImageRef::parse("debian:12").unwrap().default_name(),
            "docker.io/library/debian:12"
        );
    }
}
