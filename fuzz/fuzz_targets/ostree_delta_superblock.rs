//! ostree static delta superblocks (plain and signed), with their inline
//! parts decompressed and run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_delta_superblock(data);
});
