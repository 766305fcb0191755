//! FUSE tests: mount stored trees through `/dev/fuse` and compare them with
//! an independent oracle. The FUSE view itself arrives with the `mount`
//! command; this target exists so CI runs it from the start.

use std::os::unix::fs::FileTypeExt;

/// CI runs as root with `/dev/fuse`; every FUSE test depends on it.
#[test]
fn dev_fuse_is_a_character_device() {
    let meta = std::fs::metadata("/dev/fuse").expect("/dev/fuse is missing: FUSE tests cannot run");
    assert!(
        meta.file_type().is_char_device(),
        "/dev/fuse is not a character device"
    );
}
