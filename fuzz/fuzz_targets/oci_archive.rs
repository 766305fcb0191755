//! `oci-archive` and `docker-archive` tars: indexed in place, the manifest
//! resolved, the config blob read and parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::oci_archive(data);
});
