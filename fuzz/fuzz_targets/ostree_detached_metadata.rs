//! ostree detached metadata (`.commitmeta`, `summary.sig`): normal form,
//! then every OpenPGP and ed25519 signature verified over a real signed
//! commit with its keys.
#![no_main]

use std::sync::OnceLock;

use composefs::fuzz_api::{SignedCommit, ostree_detached_metadata};
use libfuzzer_sys::fuzz_target;

fn signed() -> &'static SignedCommit {
    static S: OnceLock<SignedCommit> = OnceLock::new();
    S.get_or_init(|| {
        SignedCommit::new(
            include_bytes!("../fixtures/signed.commit"),
            include_bytes!("../fixtures/signing-keys.asc"),
            include_str!("../fixtures/ed25519.pub"),
        )
        .expect("fuzz/fixtures hold a commit and its keys")
    })
}

fuzz_target!(
    init: {
        signed();
    },
    |data: &[u8]| {
        let _ = ostree_detached_metadata(data, signed());
    }
);
