//! The oracle for `composefs mkcomposefs` and `composefs dump`: the C tools of
//! composefs 1.0.8 (Debian's binary packages) and the upstream test assets,
//! installed by `scripts/c-composefs.sh` (run from `scripts/deps.sh`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `scripts/c-composefs.sh` put the C tools: `$COMPOSEFS_C_DIR`, else
/// `/var/cache/composefs-c-1.0.8`, else `~/.cache/composefs-c-1.0.8`.
/// Panics when none is there: these tests are worthless without the oracle.
pub fn dir() -> PathBuf {
    let candidates = std::env::var_os("COMPOSEFS_C_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/var/cache/composefs-c-1.0.8")])
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/composefs-c-1.0.8")));
    candidates
        .into_iter()
        .find(|d| d.join("bin/mkcomposefs").is_file() && d.join("VERSIONS").is_file())
        .expect("the C composefs 1.0.8 tools are not installed: run scripts/deps.sh (scripts/c-composefs.sh)")
}

/// The C `mkcomposefs` (1.0.8).
pub fn mkcomposefs() -> PathBuf {
    dir().join("bin/mkcomposefs")
}

/// The C `composefs-info` (1.0.8).
pub fn composefs_info() -> PathBuf {
    dir().join("bin/composefs-info")
}

/// The upstream `tests/` folder of composefs 1.0.8 (`assets/`, `test-*.sh`).
pub fn upstream_tests() -> PathBuf {
    dir().join("tests")
}

/// A `Command` for the C `mkcomposefs`, with `CFS_PARSE_STRICT` cleared.
pub fn mkcomposefs_cmd() -> Command {
    let mut c = Command::new(mkcomposefs());
    c.env_remove("CFS_PARSE_STRICT");
    c
}
