//! Stored ostree commit streams (composefs-rs's format): the 32-byte
//! commit checksum expected, then the stream content.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_commit_stream(data);
});
