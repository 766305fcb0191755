//! Snapshots of a mounted tree for comparing mounts with each other and
//! with checkouts: everything `stat`, `readlink`, `read` and the xattr
//! calls show of every path, and which paths are one inode.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// None for directories (each filesystem sizes them its own way).
    pub size: Option<u64>,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub rdev: u64,
    pub target: Option<Vec<u8>>,
    pub content: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

pub struct Snapshot {
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Paths grouped by inode number (only groups of two or more).
    pub hardlinks: BTreeSet<Vec<Vec<u8>>>,
}

pub fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut names[..])
        .unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).unwrap();
        // The size-0 query first, then exactly that much.
        let cpath = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings; a null buffer of size 0 asks for the size.
        let size =
            unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        assert!(
            size >= 0,
            "getxattr size {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        let size = size as usize;
        let mut v = vec![0u8; size];
        let got = rustix::fs::lgetxattr(p, cname.as_c_str(), &mut v[..])
            .unwrap_or_else(|e| panic!("getxattr {}: {e}", p.display()));
        assert_eq!(got, size);
        out.insert(name.to_vec(), v);
    }
    out
}

pub fn snapshot(root: &Path, with_mtime: bool) -> Snapshot {
    let mut entries = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut paths = vec![root.to_path_buf()];
    super::walk(root, &mut |p| paths.push(p.to_path_buf()));
    for p in paths {
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let e = Entry {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: (!ft.is_dir()).then_some(m.size()),
            nlink: m.nlink(),
            mtime: if with_mtime {
                (m.mtime(), m.mtime_nsec())
            } else {
                (0, 0)
            },
            rdev: m.rdev(),
            target: ft
                .is_symlink()
                .then(|| std::fs::read_link(&p).unwrap().into_os_string().into_vec()),
            content: ft
                .is_file()
                .then(|| std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))),
            xattrs: xattrs(&p),
        };
        if !ft.is_dir() {
            by_ino.entry(m.ino()).or_default().push(rel.clone());
        }
        entries.insert(rel, e);
    }
    let hardlinks = by_ino
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Snapshot { entries, hardlinks }
}

pub fn assert_same(a: &Snapshot, b: &Snapshot, what: &str) {
    let ka: BTreeSet<_> = a.entries.keys().collect();
    let kb: BTreeSet<_> = b.entries.keys().collect();
    let only_a: Vec<_> = ka
        .difference(&kb)
        .map(|k| String::from_utf8_lossy(k))
        .collect();
    let only_b: Vec<_> = kb
        .difference(&ka)
        .map(|k| String::from_utf8_lossy(k))
        .collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}: paths differ: only in the first {only_a:?}, only in the second {only_b:?}"
    );
    let mut bad = Vec::new();
    for (k, ea) in &a.entries {
        let eb = &b.entries[k];
        if ea != eb {
            let mut ea = ea.clone();
            let mut eb = eb.clone();
            if ea.content != eb.content {
                bad.push(format!("{}: contents differ", String::from_utf8_lossy(k)));
            }
            ea.content = None;
            eb.content = None;
            if ea != eb {
                bad.push(format!(
                    "{}:\n  {ea:?}\n  {eb:?}",
                    String::from_utf8_lossy(k)
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: entries differ:\n{}",
        bad.join("\n")
    );
    assert_eq!(a.hardlinks, b.hardlinks, "{what}: hardlink groups differ");
}
