//! ostree static delta parts: `LEN` (u32 LE), a superblock, then a part
//! file, decompressed (none or xz) and its operations run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_delta_part(data);
});
