//! ostree `summary` files and `delta-indexes/` files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_summary(data);
});
