//! A tree into dump lines, as `composefs-info dump` prints the image C
//! `mkcomposefs` would write from it: [`write`] and [`write_with`].

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::{Result, bail};

use super::dir_size::{erofs_dir_size, tree_lookup};
use super::escape::{Escape, escape_into};
use super::xattr_order::{
    WHITEOUT_MARKERS, WHITEOUTS_DIR_MARKERS, XattrOrder, count_whiteout_markers, count_xattrs,
    ordered_xattrs,
};
use crate::tree::{DirEntry, FileData, Ino, Kind, Tree};

/// What to print as a directory's SIZE.
#[derive(Clone, Copy)]
pub enum DirSize<'a> {
    /// The size the C `mkcomposefs` gives the directory in a composefs EROFS
    /// image (format version 0 or 1), i.e. what `composefs-info dump`
    /// prints: see [`erofs_dir_size`].
    Erofs,
    /// Always 0 (a tree that never was an image).
    Zero,
    /// Ask the caller (e.g. an image reader that knows the stored size).
    Custom(&'a dyn Fn(Ino, &[DirEntry]) -> Result<u64>),
}

/// Options for [`write_with`].
#[derive(Clone, Copy)]
pub struct WriteOptions<'a> {
    pub dir_size: DirSize<'a>,
    pub xattr_order: XattrOrder,
    /// Print a non-directory's NLINK as the tree stores it ([`Tree::nlink`],
    /// e.g. an image's `i_nlink`, which C `mkcomposefs` takes from a
    /// dumpfile's declared NLINK) rather than its number of names, as
    /// `composefs-info dump` does for an image.
    pub stored_nlink: bool,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        WriteOptions {
            dir_size: DirSize::Erofs,
            xattr_order: XattrOrder::Erofs,
            stored_nlink: false,
        }
    }
}

/// Write `tree` as a dumpfile in canonical form (see [`write_with`]).
pub fn write(tree: &dyn Tree, out: &mut impl Write) -> Result<()> {
    write_with(tree, out, &WriteOptions::default())
}

/// Write `tree` as a dumpfile.
///
/// Lines come in depth-first pre-order with each directory's entries sorted
/// by name bytes (the C dump walks the image that way). The first name met
/// for a multiply-linked inode gets the full line; later names are hardlink
/// lines: `@` before the MODE, PAYLOAD the first name's path, every other
/// field (size, nlink, content, digest, xattrs...) repeated from the target,
/// exactly like `composefs-info dump`. NLINK is derived from the tree:
/// 2 + subdirectories for a directory, the number of names otherwise.
/// SIZE is the content size for regular files, the target length for
/// symlinks, 0 for devices, fifos and sockets, and per `opts.dir_size` for
/// directories. RDEV is printed for devices only (0 otherwise). PAYLOAD is
/// a symlink's target or a non-empty external file's redirect; CONTENT the
/// bytes of a non-empty inline file; DIGEST a non-empty external file's
/// digest (an empty file has no backing object in an image, so none of
/// these is printed for it).
///
/// With the default options the text equals what `composefs-info dump`
/// prints for the image the C `mkcomposefs` (1.0.x, format 0 or 1) writes
/// from the same tree; checked against all the golden images. One
/// transformation of the C writer is not undone by its reader and so is not
/// reproduced here: a directory holding a whiteout (a 0/0 character device)
/// gets `trusted.overlay.opaque=x` and `user.overlay.opaque=x` in the image.
/// A tree read back from such an image carries them, so its dump matches.
pub fn write_with(tree: &dyn Tree, out: &mut impl Write, opts: &WriteOptions) -> Result<()> {
    let root = tree.root();

    // Pass 1: count names per inode, find the directories, check for loops,
    // and gather xattr use counts for the shared-xattr order.
    let mut names: HashMap<Ino, u32> = HashMap::new();
    let mut seen_dirs: HashSet<Ino> = HashSet::new();
    let mut xattr_uses: HashMap<(Vec<u8>, Vec<u8>), u64> = HashMap::new();
    let want_uses = opts.xattr_order == XattrOrder::Erofs;
    let mut whiteout_dirs: HashSet<Ino> = HashSet::new();
    let mut stack = vec![root];
    seen_dirs.insert(root);
    let root_inode = tree.inode(root)?;
    if !root_inode.kind.is_dir() {
        bail!("the root of the tree is not a directory");
    }
    if want_uses {
        count_xattrs(&mut xattr_uses, &root_inode);
    }
    while let Some(dir) = stack.pop() {
        for e in tree.readdir(dir)?.iter() {
            let inode = tree.inode(e.ino)?;
            if inode.kind.is_dir() {
                if !seen_dirs.insert(e.ino) {
                    bail!(
                        "directory inode {} is reachable twice (a directory hardlink or a loop)",
                        e.ino
                    );
                }
                stack.push(e.ino);
            } else {
                let n = names.entry(e.ino).or_insert(0);
                *n = n.saturating_add(1);
                if *n > 1 {
                    continue;
                }
            }
            if want_uses {
                count_xattrs(&mut xattr_uses, &inode);
                if matches!(inode.kind, Kind::CharDevice { rdev: 0 }) {
                    count_whiteout_markers(&mut xattr_uses, &WHITEOUT_MARKERS);
                    whiteout_dirs.insert(dir);
                }
            }
        }
    }
    if want_uses {
        // The C writer marks every whiteout's directory, and those marks
        // count towards sharing too.
        for _ in &whiteout_dirs {
            count_whiteout_markers(&mut xattr_uses, &WHITEOUTS_DIR_MARKERS);
        }
        // The 256 whiteouts added to the root copy its security.selinux.
        if let Some(v) = root_inode.xattr(b"security.selinux") {
            let root_entries = tree.readdir(root)?;
            let added = (0..256u32)
                .filter(|i| {
                    let n = format!("{i:02x}");
                    tree_lookup(&root_entries, n.as_bytes()).is_none()
                })
                .count() as u64;
            *xattr_uses
                .entry((b"security.selinux".to_vec(), v.to_vec()))
                .or_insert(0) += added;
        }
    }

    // Pass 2: print, depth first, in name order. One path buffer, and a
    // frame per directory on the current path (its listing, the next entry,
    // its path's length): memory is the deepest path and the listings
    // along it, not a path per pending entry (which for a tree 10,000 deep
    // with a few files per level would be gigabytes).
    let mut w = BufWriter::new(out);
    let mut first_path: HashMap<Ino, Vec<u8>> = HashMap::new();
    let mut line = Vec::new();
    let mut path: Vec<u8> = Vec::new();
    let mut frames: Vec<(Arc<[DirEntry]>, usize, usize)> = Vec::new();
    let mut next = Some(root);
    loop {
        let ino = match next.take() {
            Some(ino) => ino,
            None => {
                let Some((entries, pos, len)) = frames.last_mut() else {
                    break;
                };
                let Some(e) = entries.get(*pos) else {
                    frames.pop();
                    continue;
                };
                *pos += 1;
                path.truncate(*len);
                path.push(b'/');
                path.extend_from_slice(&e.name);
                e.ino
            }
        };
        let inode = tree.inode(ino)?;
        line.clear();
        let shown_path: &[u8] = if path.is_empty() { b"/" } else { &path };
        escape_into(&mut line, shown_path, Escape::Standard);

        let mut hardlink_to: Option<Vec<u8>> = None;
        let (size, nlink) = if inode.kind.is_dir() {
            let entries = tree.readdir(ino)?;
            let subdirs = entries
                .iter()
                .map(|e| tree.inode(e.ino).map(|i| i.kind.is_dir()))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .filter(|&d| d)
                .count();
            let size = match opts.dir_size {
                DirSize::Erofs => erofs_dir_size(&entries, ino == root),
                DirSize::Zero => 0,
                DirSize::Custom(f) => f(ino, &entries)?,
            };
            // Its entries come next, in name order.
            frames.push((entries, 0, path.len()));
            (size, 2 + subdirs as u64)
        } else {
            let n = names.get(&ino).copied().unwrap_or(1);
            if n > 1 {
                match first_path.get(&ino) {
                    Some(p) => hardlink_to = Some(p.clone()),
                    None => {
                        first_path.insert(ino, path.clone());
                    }
                }
            }
            let nlink = match opts.stored_nlink {
                true => tree.nlink(ino)?.unwrap_or(u64::from(n)),
                false => u64::from(n),
            };
            (inode.size(), nlink)
        };

        let rdev = match inode.kind {
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => rdev,
            _ => 0,
        };
        write!(
            line,
            " {} {}{:o} {} {} {} {} {}.{} ",
            size,
            if hardlink_to.is_some() { "@" } else { "" },
            inode.st_mode(),
            nlink,
            inode.stat.uid,
            inode.stat.gid,
            rdev,
            inode.stat.mtime.sec,
            inode.stat.mtime.nsec
        )?;
        let payload: Option<&[u8]> = match (&hardlink_to, &inode.kind) {
            (Some(p), _) => Some(p),
            (None, Kind::Symlink(t)) => Some(t),
            // An empty file has no backing object in an image.
            (None, Kind::Regular(FileData::External { redirect, size, .. })) if *size > 0 => {
                redirect.as_deref()
            }
            _ => None,
        };
        optional_field(&mut line, payload);
        line.push(b' ');
        let content = match &inode.kind {
            Kind::Regular(FileData::Inline(c)) if !c.is_empty() => Some(c.as_slice()),
            _ => None,
        };
        optional_field(&mut line, content);
        line.push(b' ');
        match &inode.kind {
            Kind::Regular(FileData::External {
                digest: Some(d),
                size,
                ..
            }) if *size > 0 => line.extend_from_slice(d.to_hex().as_bytes()),
            _ => line.push(b'-'),
        }
        for (k, v) in ordered_xattrs(&inode, opts.xattr_order, &xattr_uses) {
            line.push(b' ');
            escape_into(&mut line, k, Escape::Equal);
            line.push(b'=');
            escape_into(&mut line, v, Escape::Equal);
        }
        line.push(b'\n');
        w.write_all(&line)?;
    }
    w.flush()?;
    Ok(())
}

fn optional_field(line: &mut Vec<u8>, val: Option<&[u8]>) {
    match val {
        Some(v) => escape_into(line, v, Escape::LoneDash),
        None => line.push(b'-'),
    }
}
