//! OCI and Docker JSON documents: media type guess, manifest resolution
//! through indexes, manifest/index/config parsing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::oci_json(data);
});
