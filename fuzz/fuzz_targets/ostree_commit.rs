//! ostree `.commit` objects (strict normal-form parse, metadata lookups).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_commit(data);
});
