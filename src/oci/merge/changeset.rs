//! The OCI changeset rules: what one layer entry does to the merged tree.
//! Paths are normalised and checked; a whiteout (`.wh.NAME`) or opaque
//! marker (`.wh..wh..opq`) removes what lower layers left; a hardlink names
//! an existing non-directory; anything else replaces what was at its path,
//! except a directory over a directory, which keeps its entries.

use anyhow::{Context, Result, bail};

use super::merged_tree::{Merger, ROOT, join};
use super::{EntryKind, MAX_ENTRY_PATH};
use crate::show::display_bytes;
use crate::tree::check_name;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

/// `raw` as path components: leading `/` and `./` dropped, `.` skipped,
/// `..` resolved lexically. Empty for the root.
fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    bail!("the path leads out of the image root through \"..\"");
                }
            }
            _ => {
                check_name(c)?;
                out.push(c);
            }
        }
    }
    let len = out
        .iter()
        .map(|c| c.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    if len > MAX_ENTRY_PATH {
        bail!("the path is {len} bytes long, more than {MAX_ENTRY_PATH}");
    }
    Ok(out)
}

impl Merger {
    /// Apply one member of layer `layer` at `path`.
    pub(super) fn apply(&mut self, path: &[u8], what: EntryKind, layer: usize) -> Result<()> {
        let comps = normalize(path)?;
        let Some((&name, parents)) = comps.split_last() else {
            return match what {
                EntryKind::Inode(inode) if inode.kind.is_dir() => self.set_inode(ROOT, inode),
                _ => bail!("the image root must be a directory"),
            };
        };
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parents, name, layer);
        }
        for p in parents {
            if p.starts_with(WHITEOUT_META_PREFIX) {
                return Ok(()); // inside aufs metadata: skipped
            }
            if p.starts_with(WHITEOUT_PREFIX) {
                bail!("a whiteout name is used as a directory");
            }
        }
        let inode = match what {
            EntryKind::Hardlink(target) => {
                let node = self
                    .hardlink_target(&target)
                    .with_context(|| format!("hardlink to \"{}\"", display_bytes(&target)))?;
                let dir = self.make_dirs(parents, layer)?;
                return self.put(dir, name, node, layer);
            }
            EntryKind::Inode(inode) => inode,
        };
        let dir = self.make_dirs(parents, layer)?;
        if inode.kind.is_dir()
            && let Some(c) = self.child(dir, name)
            && self.is_dir(c.node as usize)
        {
            self.set_child(dir, name, c.node as usize, layer)?;
            return self.set_inode(c.node as usize, inode);
        }
        let node = self.add(inode)?;
        self.put(dir, name, node, layer)
    }

    fn hardlink_target(&self, target: &[u8]) -> Result<usize> {
        let comps = normalize(target)?;
        if comps.is_empty() {
            bail!("the target is the root directory");
        }
        match self.find(&comps)? {
            None => bail!("the target does not exist (in this layer before the link, or below)"),
            Some(n) if self.is_dir(n) => bail!("the target is a directory"),
            Some(n) => Ok(n),
        }
    }

    /// `.wh.NAME` or `.wh..wh..opq` (`name`) in directory `parents`.
    fn whiteout(&mut self, parents: &[&[u8]], name: &[u8], layer: usize) -> Result<()> {
        if parents.iter().any(|p| p.starts_with(WHITEOUT_PREFIX)) {
            return Ok(()); // names nothing the tree can hold
        }
        if name != WHITEOUT_OPAQUE && name.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(()); // aufs metadata
        }
        let Some(dir) = self.find(parents)? else {
            return Ok(());
        };
        if !self.is_dir(dir) {
            bail!(
                "\"{}\" is not a directory (symlinks inside the image are not followed)",
                join(parents)
            );
        }
        if name == WHITEOUT_OPAQUE {
            self.clear_lower(dir, layer);
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        check_name(hidden).context("bad whiteout")?;
        match self.child(dir, hidden) {
            Some(c) if c.layer != layer as u32 => {
                self.remove_child(dir, hidden);
                self.drop_subtree(c.node as usize);
            }
            // The same layer made it: a whiteout hides lower layers only,
            // so only what they left beneath it goes.
            Some(c) if self.is_dir(c.node as usize) => self.clear_lower(c.node as usize, layer),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{FileData, Inode, Kind, Stat};

    #[test]
    fn deep_implicit_directories_hit_the_memory_bound() {
        let mut m = Merger::new();
        m.budget = 64 << 20;
        let file = || {
            EntryKind::Inode(Inode {
                stat: Stat::default(),
                kind: Kind::Regular(FileData::Inline(vec![])),
                xattrs: vec![],
            })
        };
        // 2,000 components per path, each entry under a fresh top
        // directory: ~2,000 implicit directories per 4 KiB entry.
        let deep = b"d/".repeat(2000);
        let mut err = None;
        for i in 0..1000 {
            let path = [format!("top{i}/").as_bytes(), &deep[..], b"f"].concat();
            if let Err(e) = m.apply(&path, file(), 0) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("the bound was never hit");
        assert!(
            err.to_string().contains("more than 64 MiB of memory"),
            "{err:#}"
        );
        assert!(m.bytes <= (64 << 20) + 4096, "{}", m.bytes);
    }

    #[test]
    fn path_normalisation() {
        let n = |p: &str| {
            normalize(p.as_bytes()).map(|v| v.iter().map(|c| display_bytes(c)).collect::<Vec<_>>())
        };
        assert_eq!(n("./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(n("/a//./b").unwrap(), ["a", "b"]);
        assert_eq!(n("./").unwrap(), Vec::<String>::new());
        assert_eq!(n("").unwrap(), Vec::<String>::new());
        assert_eq!(n("a/../b").unwrap(), ["b"]);
        assert!(n("..").is_err());
        assert!(n("a/../../b").is_err());
        assert!(n(&"x".repeat(256)).is_err());
        assert!(normalize(b"a\0b").is_err());
        // Longer than PATH_MAX is fine; longer than MAX_ENTRY_PATH is not.
        let long = vec!["y".repeat(200); MAX_ENTRY_PATH / 201 + 1].join("/");
        assert!(n(&long).is_err());
        let ok = vec!["y".repeat(200); MAX_ENTRY_PATH / 201].join("/");
        assert!(n(&ok).is_ok());
    }

    fn file(data: &[u8]) -> EntryKind {
        EntryKind::Inode(Inode {
            stat: Stat {
                perms: 0o644,
                ..Stat::default()
            },
            kind: Kind::Regular(FileData::Inline(data.to_vec())),
            xattrs: vec![],
        })
    }

    fn dir(perms: u32) -> EntryKind {
        EntryKind::Inode(Inode {
            stat: Stat {
                perms,
                ..Stat::default()
            },
            kind: Kind::Directory,
            xattrs: vec![],
        })
    }

    fn apply(m: &mut Merger, layer: usize, path: &str, what: EntryKind) -> Result<()> {
        m.apply(path.as_bytes(), what, layer)
    }

    fn listing(m: Merger) -> Vec<String> {
        use crate::tree::Tree;
        let t = m.build().unwrap();
        let mut out = Vec::new();
        let mut stack = vec![(t.root(), String::new())];
        while let Some((d, p)) = stack.pop() {
            for e in t.readdir(d).unwrap().iter() {
                let path = format!("{p}/{}", display_bytes(&e.name));
                if t.inode(e.ino).unwrap().kind.is_dir() {
                    stack.push((e.ino, path.clone()));
                    out.push(format!("{path}/"));
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn opaque_and_whiteouts_apply_to_lower_layers_only() {
        for marker_first in [true, false] {
            let mut m = Merger::new();
            apply(&mut m, 0, "d/", dir(0o755)).unwrap();
            apply(&mut m, 0, "d/old", file(b"1")).unwrap();
            apply(&mut m, 0, "d/sub/deep", file(b"1")).unwrap();
            apply(&mut m, 0, "w/x", file(b"1")).unwrap();
            apply(&mut m, 0, "w/y", file(b"1")).unwrap();
            if marker_first {
                apply(&mut m, 1, "d/.wh..wh..opq", file(b"")).unwrap();
                apply(&mut m, 1, "w/.wh.x", file(b"")).unwrap();
            }
            apply(&mut m, 1, "d/new", file(b"2")).unwrap();
            apply(&mut m, 1, "d/sub/fresh", file(b"2")).unwrap();
            apply(&mut m, 1, "w/x", file(b"2")).unwrap();
            if !marker_first {
                apply(&mut m, 1, "d/.wh..wh..opq", file(b"")).unwrap();
                apply(&mut m, 1, "w/.wh.x", file(b"")).unwrap();
            }
            apply(&mut m, 1, "w/.wh.nothing", file(b"")).unwrap();
            apply(&mut m, 1, "nodir/.wh.nothing", file(b"")).unwrap();
            assert_eq!(
                listing(m),
                [
                    "/d/",
                    "/d/new",
                    "/d/sub/",
                    "/d/sub/fresh",
                    "/w/",
                    "/w/x",
                    "/w/y"
                ],
                "marker first: {marker_first}"
            );
        }
    }

    #[test]
    fn replacement_rules() {
        let mut m = Merger::new();
        apply(&mut m, 0, "a/", dir(0o700)).unwrap();
        apply(&mut m, 0, "a/child", file(b"")).unwrap();
        apply(&mut m, 0, "f", file(b"")).unwrap();
        apply(&mut m, 0, "g/h", file(b"")).unwrap();
        apply(&mut m, 1, "a", dir(0o711)).unwrap(); // keeps children
        apply(&mut m, 1, "f/", dir(0o755)).unwrap(); // file → dir
        apply(&mut m, 1, "g", file(b"x")).unwrap(); // dir → file
        apply(&mut m, 1, "aufs/.wh..wh.plnk/x", file(b"")).unwrap();
        apply(&mut m, 1, ".wh..wh.plnk/x", file(b"")).unwrap();
        assert!(apply(&mut m, 1, "g/sub", file(b"")).is_err());
        assert!(apply(&mut m, 1, ".wh.x/y", file(b"")).is_err());
        assert!(apply(&mut m, 1, "../x", file(b"")).is_err());
        assert!(apply(&mut m, 1, ".", file(b"")).is_err());
        assert!(apply(&mut m, 1, "a/hl", EntryKind::Hardlink(b"a".to_vec())).is_err());
        assert!(apply(&mut m, 1, "a/hl", EntryKind::Hardlink(b"nope".to_vec())).is_err());
        apply(&mut m, 1, "./", dir(0o700)).unwrap();
        assert_eq!(m.nodes[ROOT].inode.stat.perms, 0o700);
        assert_eq!(listing(m), ["/a/", "/a/child", "/f/", "/g"]);
    }
}
