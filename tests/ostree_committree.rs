//! The lazy commit tree (`ostree::committree`) shows exactly what the
//! eager one (`ostree::tree::commit_tree`, which images are made from)
//! shows: both are written as composefs dumpfiles and compared, for the
//! bundled sample repository (two commits) pulled with the real pull.

mod common;

use std::path::Path;
use std::sync::Arc;

use composefs::ostree::commitstream::CommitStream;
use composefs::ostree::committree::CommitTree;
use composefs::ostree::resolve::stored_commit;
use composefs::ostree::tree::commit_tree;
use composefs::repository::Repository;
use composefs::tree::Tree;

fn dump(tree: &dyn Tree) -> String {
    let mut out = Vec::new();
    composefs::dumpfile::write(tree, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn lazy_and_eager_commit_trees_agree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-ostree.tar.gz");
    common::run_tool(
        "tar",
        &[
            "-xzf".as_ref(),
            fixture.as_os_str(),
            "-C".as_ref(),
            src.as_os_str(),
        ],
        dir.path(),
    );
    let repo = common::Repo::new();
    let repo_path = repo.path.clone();
    for (rref, name) in [
        (
            "afc6cb4b40926403f28238321824187cf8afc3e70b26e349c765556c34350d84",
            "v1",
        ),
        ("sample/stable", "v2"),
    ] {
        repo.ok(&[
            "ostree",
            "pull",
            src.to_str().unwrap(),
            rref,
            "--name",
            name,
        ]);
    }
    let r = Repository::open(&repo_path).unwrap();
    for name in ["v1", "v2"] {
        let c = stored_commit(&r, name).unwrap();
        let eager = commit_tree(&CommitStream::open(&r, &c).unwrap()).unwrap();
        let lazy = Arc::new(CommitTree::new(CommitStream::open(&r, &c).unwrap()).unwrap());
        let want = dump(&eager);
        assert!(
            want.lines().count() > 10,
            "sample commit {name} is too small:\n{want}"
        );
        assert_eq!(dump(&*lazy), want, "commit {name}");
        // Listing again gives the same inodes; lookups agree with listings.
        let root = lazy.root();
        let first = lazy.readdir(root).unwrap();
        assert_eq!(lazy.readdir(root).unwrap(), first);
        for e in first.iter() {
            assert_eq!(lazy.lookup(root, &e.name).unwrap(), Some(e.ino));
        }
        assert!(lazy.inode(999_999).is_err());
        // Link counts it gives without a walk equal a walk's.
        for (ino, n) in composefs::tree::link_counts(&*lazy).unwrap() {
            assert_eq!(lazy.nlink(ino).unwrap(), Some(n), "nlink of inode {ino}");
        }
        let file = lazy.resolve_path(b"/etc/hostname").unwrap().unwrap();
        assert!(lazy.readdir(file).is_err(), "readdir of a file");
    }

    // The same trees without mounting: `cat REF:PATH` and `ls REF:PATH`
    // against `ostree cat` of the source repository.
    for (name, rref) in [("v1", "sample/stable^"), ("v2", "sample/stable")] {
        for path in ["/etc/os-release", "/usr/bin/blob", "/usr/bin/hello"] {
            let ours = repo.ok(&["cat", &format!("{name}:{path}")]);
            let theirs = common::run_tool(
                "ostree",
                &[
                    format!("--repo={}", src.display()).as_ref(),
                    "cat".as_ref(),
                    rref.as_ref(),
                    path.as_ref(),
                ],
                dir.path(),
            );
            assert_eq!(ours, theirs, "cat {name}:{path}");
        }
    }
    let ls = String::from_utf8(repo.ok(&["ls", "v2:/usr/bin"])).unwrap();
    assert!(
        ls.contains("hello-1.1") && ls.contains("hi -> hello"),
        "{ls}"
    );
    let ls1 = String::from_utf8(repo.ok(&["ls", "ostree/v1", "/usr/bin"])).unwrap();
    assert!(!ls1.contains("hello-1.1"), "{ls1}");
    for bad in ["v1:/nope", "v1:/usr"] {
        let e = repo.fail(&["cat", bad]);
        assert!(e.contains("v1"), "cat {bad}: {e}");
    }
}
