//! Read-ahead of a directory's files once one of them is read (the FUSE
//! view's `Prefetch`): a walk reading every file of a 100,000-file tree
//! gets every byte right while the daemon stays within its bounds: peak
//! RSS and open descriptors, sampled between reads, and its read-ahead
//! thread really ran.

use std::path::Path;

use super::common::Repo;
use super::{Mounted, daemons_for, require_root};

const FILES: usize = 100_000;
const PER_DIR: usize = 1_000;

fn content(i: usize) -> Vec<u8> {
    // Over the 64-byte inline limit, and distinct: one object per file.
    format!("{i:08}\n").repeat(12).into_bytes()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn reading_a_100k_file_tree_stays_bounded() {
    require_root();
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    for d in 0..FILES / PER_DIR {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in d * PER_DIR..(d + 1) * PER_DIR {
            std::fs::write(dir.join(format!("f{i:06}")), content(i)).unwrap();
        }
    }
    repo.ok(&["create-image", src.to_str().unwrap(), "--name", "t"]);
    std::fs::remove_dir_all(&src).unwrap();
    let mnt = repo.scratch().join("mnt");
    let m = Mounted::fuse(&repo, "images/t", &mnt);
    let pids = daemons_for(&mnt);
    assert_eq!(pids.len(), 1, "daemons for {}: {pids:?}", mnt.display());
    let pid = pids[0];
    let mut max_fds = open_fds(pid);
    let mut read = 0usize;
    for d in 0..FILES / PER_DIR {
        let dir = mnt.join(format!("d{d:03}"));
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names.len(), PER_DIR, "{}", dir.display());
        for (k, name) in names.iter().enumerate() {
            let i = d * PER_DIR + k;
            let got = std::fs::read(dir.join(name)).unwrap();
            assert!(
                got == content(i),
                "{}: wrong content",
                Path::new(name).display()
            );
            read += 1;
            if read.is_multiple_of(500) {
                max_fds = max_fds.max(open_fds(pid));
            }
        }
    }
    let hwm_mib = status_kib(pid, "VmHWM:") / 1024;
    let names = thread_names(pid);
    eprintln!(
        "prefetch: {read} files read, daemon peak {hwm_mib} MiB, at most {max_fds} descriptors, threads {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "prefetch"),
        "the read-ahead thread never ran: {names:?}"
    );
    // The object cache's open files, the read-ahead's one, FUSE's and the
    // standard ones.
    assert!(max_fds <= 1100, "the daemon had {max_fds} descriptors open");
    // 100,000 distinct objects: the tree itself takes most of it (58 MiB
    // measured without read-ahead, 59 with).
    assert!(hwm_mib <= 80, "the daemon's peak RSS was {hwm_mib} MiB");
    m.umount(&repo);
}
