//! Hostile input: damaged images for the reader (truncated, bytes flipped,
//! directory loops) and impossible trees for the writer. Everything must
//! end in an error or a result, never a panic, and in bounded time.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use composefs::dumpfile;
use composefs::erofs::format::{self, Dirent};
use composefs::erofs::reader::ErofsImage;
use composefs::erofs::writer::{FormatVersion, image_to_vec};
use composefs::tree::{DirEntry, FileData, Ino, Inode, Kind, Stat, Tree};

use common::GOLDEN_FIXTURES as FIXTURES;

fn golden(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/erofs")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Walk like a careless consumer would: no visited set, no depth limit
/// (explicit stack, so our own stack cannot overflow). Returns the number
/// of names seen; the reader must make this terminate.
fn naive_walk(tree: &dyn Tree, limit: u64) -> Result<u64> {
    let mut seen = 0u64;
    let mut stack = vec![tree.root()];
    tree.inode(tree.root())?;
    while let Some(d) = stack.pop() {
        for e in tree.readdir(d)?.iter() {
            seen += 1;
            assert!(seen <= limit, "walk did not terminate within {limit} names");
            let inode = tree.inode(e.ino)?;
            if inode.kind.is_dir() {
                stack.push(e.ino);
            }
        }
    }
    Ok(seen)
}

/// Everything a consumer may do with an image. Returns whether the image
/// opened and the careless walk succeeded.
fn exercise(img: Vec<u8>) -> bool {
    let start = Instant::now();
    // Every listed name takes at least 13 bytes of the image, and each
    // directory can be listed once per walk.
    let limit = img.len() as u64 / 12 + 16;
    let Ok(image) = ErofsImage::new(img) else {
        return false;
    };
    let ok = naive_walk(&image, limit).is_ok();
    let _ = image.check();
    let _ = image.referenced_objects();
    let _ = image.walk(|img, raw| {
        let _ = img.raw_xattrs(raw);
        if raw.is_dir() {
            let _ = img.raw_dirents(raw);
        }
        Ok(())
    });
    let mut sink = Vec::new();
    let _ = dumpfile::write(&image, &mut sink);
    // The writer reading a damaged lazy tree.
    let _ = image_to_vec(&image, FormatVersion::V0);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "one damaged image took {:?}",
        start.elapsed()
    );
    ok
}

#[test]
fn golden_images_pass_the_exercise() {
    for name in FIXTURES {
        for tag in ["v0", "v1"] {
            assert!(
                exercise(golden(&format!("{name}.{tag}.img"))),
                "{name}.{tag}"
            );
        }
    }
}

#[test]
fn truncated_images_error_without_panicking() {
    let mut cases = 0;
    for name in FIXTURES {
        let img = golden(&format!("{name}.v0.img"));
        let step = if img.len() > 32768 { 61 } else { 7 };
        let mut lens: Vec<usize> = (0..1300.min(img.len())).collect();
        lens.extend((1300..img.len()).step_by(step));
        lens.push(img.len() - 1);
        for len in lens {
            let accepted = exercise(img[..len].to_vec());
            cases += 1;
            // Without the inode table nothing can be read.
            if len < 1152 + 32 {
                assert!(!accepted, "{name} cut to {len} bytes was accepted");
            }
        }
    }
    assert!(cases > 10_000);
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn flipped_bytes_error_without_panicking() {
    let images: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|n| golden(&format!("{n}.v1.img")))
        .collect();
    let mut rng = Rng(0x5eed_c0de_f00d_1234);
    let mut opened = 0;
    for case in 0..4000 {
        let mut img = images[case % images.len()].clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            // Mostly the metadata (header, superblock, inodes, xattrs);
            // sometimes anywhere.
            let span = if rng.below(5) == 0 {
                img.len()
            } else {
                img.len().min(16384)
            };
            let at = rng.below(span);
            match rng.below(4) {
                0 => img[at] ^= 1 << rng.below(8),
                1 => img[at] = 0xff,
                2 => img[at] = 0,
                _ => img[at] = rng.next() as u8,
            }
        }
        if exercise(img) {
            opened += 1;
        }
    }
    // Most single flips land in padding or names: many images still read.
    assert!(opened > 100, "only {opened} damaged images could be walked");
}

/// The byte offset of the dirent named `name` in directory `dir`.
fn dirent_offset(img: &ErofsImage, dir: u64, name: &[u8]) -> usize {
    let raw = img.raw_inode(dir).unwrap();
    let mut regions = Vec::new();
    let nblocks = raw.size.div_ceil(4096);
    if raw.layout == format::LAYOUT_FLAT_INLINE {
        for b in 0..nblocks - 1 {
            regions.push(((u64::from(raw.u) + b) * 4096, 4096));
        }
        regions.push((raw.inline_offset(), raw.size % 4096));
    } else {
        for b in 0..nblocks {
            regions.push(((u64::from(raw.u) + b) * 4096, 4096));
        }
    }
    let data = img.data();
    for (start, len) in regions {
        let block = &data[start as usize..(start + len) as usize];
        let n = usize::from(Dirent::decode(block).unwrap().nameoff) / 12;
        for i in 0..n {
            let d = Dirent::decode(&block[i * 12..]).unwrap();
            let end = if i + 1 < n {
                usize::from(Dirent::decode(&block[(i + 1) * 12..]).unwrap().nameoff)
            } else {
                block.len()
            };
            let mut nm = &block[usize::from(d.nameoff)..end];
            if let Some(z) = nm.iter().position(|&b| b == 0) {
                nm = &nm[..z];
            }
            if nm == name {
                return start as usize + i * 12;
            }
        }
    }
    panic!(
        "no entry {:?} in directory {dir}",
        String::from_utf8_lossy(name)
    );
}

fn set_nid(img: &mut [u8], dirent_at: usize, nid: u64) {
    img[dirent_at..dirent_at + 8].copy_from_slice(&nid.to_le_bytes());
}

#[test]
fn directory_loops_are_detected() {
    let base = golden("deep.v0.img");
    let image = ErofsImage::new(base.clone()).unwrap();
    let root = image.root();
    let l0 = image.lookup(root, b"level0").unwrap().unwrap();
    let l1 = image.lookup(l0, b"level1").unwrap().unwrap();
    let l2 = image.lookup(l1, b"level2").unwrap().unwrap();
    let at_l2 = dirent_offset(&image, l1, b"level2");

    // level1/level2 -> level0 (an ancestor), -> level1 (itself), -> root.
    for (target, what) in [(l0, "an ancestor"), (l1, "itself"), (root, "the root")] {
        let mut img = base.clone();
        set_nid(&mut img, at_l2, target);
        let image = ErofsImage::new(img.clone()).unwrap();
        let started = Instant::now();
        let err = naive_walk(&image, 100_000).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            format!("{err:#}").contains("loop") || format!("{err:#}").contains("appears in"),
            "loop to {what}: unexpected error {err:#}"
        );
        // The other consumers terminate too.
        assert!(dumpfile::write(&image, &mut Vec::new()).is_err());
        assert!(image_to_vec(&image, FormatVersion::V0).is_err());
        assert!(image.check().is_err());
        // The raw walk visits every inode once and so terminates fine.
        image.referenced_objects().unwrap();
        exercise(img);
    }

    // A directory under two names (a directory hardlink): level0/level1
    // also as /00... no: point the root's `level0` sibling entry, the
    // stub `00`, at level2.
    let mut img = base.clone();
    let at_00 = dirent_offset(&image, root, b"00");
    set_nid(&mut img, at_00, l2);
    let image = ErofsImage::new(img).unwrap();
    let err = naive_walk(&image, 100_000).unwrap_err();
    assert!(format!("{err:#}").contains("appears in"), "{err:#}");

    // A directory listed before it was reached is refused.
    let image = ErofsImage::new(base).unwrap();
    assert!(image.readdir(l2).is_err());
}

// ---------------------------------------------------------------------------
// The writer against trees the format cannot hold.
// ---------------------------------------------------------------------------

/// A tree that checks nothing.
#[derive(Default)]
struct RawTree {
    inodes: HashMap<Ino, Arc<Inode>>,
    dirs: HashMap<Ino, Vec<DirEntry>>,
}

impl RawTree {
    fn new() -> Self {
        let mut t = RawTree::default();
        t.inodes.insert(0, Arc::new(inode(Kind::Directory)));
        t.dirs.insert(0, vec![]);
        t
    }
    fn add(&mut self, dir: Ino, name: &[u8], ino: Ino, node: Option<Inode>) {
        if let Some(n) = node {
            if n.kind.is_dir() {
                self.dirs.entry(ino).or_default();
            }
            self.inodes.insert(ino, Arc::new(n));
        }
        self.dirs.get_mut(&dir).unwrap().push(DirEntry {
            name: name.to_vec(),
            ino,
        });
    }
}

impl Tree for RawTree {
    fn root(&self) -> Ino {
        0
    }
    fn inode(&self, ino: Ino) -> Result<Arc<Inode>> {
        self.inodes
            .get(&ino)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no inode {ino}"))
    }
    fn readdir(&self, dir: Ino) -> Result<Arc<[DirEntry]>> {
        Ok(self
            .dirs
            .get(&dir)
            .ok_or_else(|| anyhow::anyhow!("not a directory"))?
            .clone()
            .into())
    }
}

fn inode(kind: Kind) -> Inode {
    Inode {
        stat: Stat {
            perms: 0o755,
            ..Default::default()
        },
        kind,
        xattrs: vec![],
    }
}

fn writer_error(t: &RawTree) -> String {
    match image_to_vec(t, FormatVersion::V0) {
        Ok(_) => panic!("the writer accepted an impossible tree"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn writer_refuses_what_the_format_cannot_hold() {
    let reg = || inode(Kind::Regular(FileData::Inline(b"x".to_vec())));

    // Directory cycles and directory hardlinks in a lazy tree.
    let mut t = RawTree::new();
    t.add(0, b"a", 1, Some(inode(Kind::Directory)));
    t.add(1, b"b", 2, Some(inode(Kind::Directory)));
    t.add(2, b"up", 1, None);
    assert!(writer_error(&t).contains("reachable twice"));
    let mut t = RawTree::new();
    t.add(0, b"a", 1, Some(inode(Kind::Directory)));
    t.add(1, b"root", 0, None);
    assert!(writer_error(&t).contains("reachable twice"));

    // Names.
    for bad in [&[b'n'; 256][..], b"a/b", b"a\0b", b".", b"..", b""] {
        let mut t = RawTree::new();
        t.add(0, bad, 1, Some(reg()));
        writer_error(&t);
    }
    let mut t = RawTree::new();
    t.add(0, b"same", 1, Some(reg()));
    t.add(0, b"same", 2, Some(reg()));
    assert!(writer_error(&t).contains("twice"));

    // Xattrs.
    let mut big = reg();
    big.xattrs = vec![(b"user.big".to_vec(), vec![0; 65536])];
    let mut t = RawTree::new();
    t.add(0, b"f", 1, Some(big));
    assert!(writer_error(&t).contains("65535"));
    let mut long = reg();
    long.xattrs = vec![([b"user.".to_vec(), vec![b'k'; 256]].concat(), vec![])];
    let mut t = RawTree::new();
    t.add(0, b"f", 1, Some(long));
    writer_error(&t);
    // 250 bytes of suffix fit, but not once escaped to trusted.overlay.overlay.*.
    let mut esc = reg();
    esc.xattrs = vec![(
        [b"trusted.overlay.".to_vec(), vec![b'k'; 242]].concat(),
        vec![],
    )];
    let mut t = RawTree::new();
    t.add(0, b"f", 1, Some(esc));
    assert!(writer_error(&t).contains("too long"));
    let mut many = reg();
    many.xattrs = (0..300)
        .map(|i| (format!("user.{i:04}").into_bytes(), vec![b'v'; 1000]))
        .collect();
    let mut t = RawTree::new();
    t.add(0, b"f", 1, Some(many));
    assert!(writer_error(&t).contains("xattrs do not fit"));

    // Device numbers, symlinks, huge external files.
    for kind in [
        Kind::CharDevice { rdev: 1 << 32 },
        Kind::BlockDevice { rdev: u64::MAX },
        Kind::Symlink(vec![]),
        Kind::Symlink(vec![b'a'; 4096]),
        Kind::Symlink(b"a\0b".to_vec()),
        Kind::Regular(FileData::External {
            size: 1 << 60,
            redirect: None,
            digest: None,
        }),
    ] {
        let mut t = RawTree::new();
        t.add(0, b"x", 1, Some(inode(kind)));
        writer_error(&t);
    }

    // Broken lazy trees: a missing inode, a non-directory root.
    let mut t = RawTree::new();
    t.dirs.get_mut(&0).unwrap().push(DirEntry {
        name: b"ghost".to_vec(),
        ino: 99,
    });
    assert!(writer_error(&t).contains("no inode 99"));
    let mut t = RawTree::new();
    t.inodes.insert(0, Arc::new(reg()));
    assert!(writer_error(&t).contains("not a directory"));
}
