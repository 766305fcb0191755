//! Layer tars: split into a splitstream (which must reassemble byte for
//! byte), merge as an OCI layer alone and over the base layer, write the
//! merged tree as an image and a dumpfile.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        composefs::fuzz_api::set_base_tar(include_bytes!("../fixtures/base.tar"));
    },
    |data: &[u8]| {
        let _ = composefs::fuzz_api::tarsplit(data);
    }
);
