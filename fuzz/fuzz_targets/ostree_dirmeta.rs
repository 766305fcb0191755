//! ostree `.dirmeta` objects, `user.ostreemeta` values and
//! bare-split-xattrs lists.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_dirmeta(data);
});
