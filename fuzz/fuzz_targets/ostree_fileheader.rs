//! ostree archive `.filez` objects: header, deflated content through the
//! exact-length reader, checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::ostree_fileheader(data);
});
