//! ostree `.dirtree` objects (parse, count, exact re-serialisation).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_dirtree(data);
});
