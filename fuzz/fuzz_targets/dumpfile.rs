//! composefs-dump(5) text: parse, write back (a fixed point), write EROFS
//! images of both versions and read them back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::dumpfile(data);
});
