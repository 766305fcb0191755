//! Splitstreams: open and validate, walk the chunks, reassemble against a
//! repository holding the base tar's objects.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        composefs::fuzz_api::set_base_tar(include_bytes!("../fixtures/base.tar"));
    },
    |data: &[u8]| {
        let _ = composefs::fuzz_api::splitstream(data);
    }
);
