//! Registry responses: `WWW-Authenticate` challenges and the token URL,
//! `Location` redirects, error bodies, media types.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = composefs::fuzz_api::auth_challenge(data);
});
