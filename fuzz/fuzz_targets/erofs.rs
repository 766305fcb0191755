//! composefs EROFS images: open, walk through the `Tree` interface, check,
//! collect object references, dump, rewrite.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::erofs(data);
});
