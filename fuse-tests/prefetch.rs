//! Read-ahead of a directory's files once one of them is read (the FUSE
//! view's `Prefetch`): a walk reading every file of a 100,000-file tree
//! gets every byte right while the daemon stays within its bounds: peak
//! RSS and open descriptors, sampled between reads, and its read-ahead
//! thread really ran; and that what it reads ahead is in the page cache
//! before the reader asks for it.

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

/// Bytes of `path` in the page cache, counted by util-linux's `fincore`
/// (it maps the file and asks `mincore`: nothing is read, and opening a
/// file of the view sends the daemon no request).
fn cached_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "fincore {}: {out:?}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore {}: {out:?}", path.display()))
}

/// Reading a directory's first file puts the others into the kernel's
/// page cache for the view before anyone reads them (the read-ahead's
/// `FUSE_NOTIFY_STORE`), with the right bytes; a directory only listed
/// is left alone; and the read-ahead thread sleeps once done.
#[test]
fn a_read_directory_is_cached_ahead_and_a_listed_one_is_not() {
    require_root();
    super::common::require_tool("fincore");
    const N: usize = 48;
    const SIZE: usize = 64 * 1024;
    let data = |d: &str, i: usize| -> Vec<u8> {
        format!("{d}{i:04}").bytes().cycle().take(SIZE).collect()
    };
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    for d in ["read", "listed"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        for i in 0..N {
            std::fs::write(src.join(d).join(format!("f{i:02}")), data(d, i)).unwrap();
        }
    }
    repo.ok(&["create-image", src.to_str().unwrap(), "--name", "t"]);
    let mnt = repo.scratch().join("mnt");
    let m = Mounted::fuse(&repo, "images/t", &mnt);
    // Both listed first (no content read yet: no walk under way), then
    // one file of the first read.
    for d in ["read", "listed"] {
        assert_eq!(std::fs::read_dir(mnt.join(d)).unwrap().count(), N);
    }
    assert_eq!(
        std::fs::read(mnt.join("read/f00")).unwrap(),
        data("read", 0)
    );
    let rest = |d: &str| -> u64 {
        (1..N)
            .map(|i| cached_bytes(&mnt.join(d).join(format!("f{i:02}"))))
            .sum()
    };
    let want = ((N - 1) * SIZE) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut got = rest("read");
    while got < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        got = rest("read");
    }
    assert_eq!(
        got, want,
        "the files after the one read were not all put into the page cache ahead"
    );
    assert_eq!(rest("listed"), 0, "a directory only listed was read ahead");
    // Its work done, the read-ahead thread sleeps, and stays asleep while
    // the mount only serves what is cached.
    let pids = daemons_for(&mnt);
    assert_eq!(pids.len(), 1, "daemons for {}: {pids:?}", mnt.display());
    let helper = std::fs::read_dir(format!("/proc/{}/task", pids[0]))
        .unwrap()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "prefetch")
        })
        .expect("no read-ahead thread")
        .path();
    // State and CPU ticks (user + system) from /proc/PID/task/TID/stat.
    let stat = || -> (String, u64) {
        let s = std::fs::read_to_string(helper.join("stat")).unwrap();
        let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
        (
            f[0].to_string(),
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap(),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stat().0 != "S" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (state, ticks) = stat();
    assert_eq!(state, "S", "the read-ahead thread does not sleep once done");
    for i in 0..N {
        assert_eq!(
            std::fs::read(mnt.join("read").join(format!("f{i:02}"))).unwrap(),
            data("read", i),
            "read/f{i:02}"
        );
    }
    assert_eq!(
        stat(),
        ("S".to_string(), ticks),
        "the read-ahead thread worked while the mount served cached files"
    );
    m.umount(&repo);
}
