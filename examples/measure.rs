//! Userspace fs-verity digest of files, like `composefs measure`:
//! `cargo run --release --example measure -- [--hash sha256|sha512] FILE...`
//! prints `<hex>  <file>` per file. Used by `benches/digest.sh` as a fallback.

use std::fs::File;
use std::process::ExitCode;

use composefs::fsverity::{Algorithm, digest_reader};

fn main() -> ExitCode {
    let mut alg = Algorithm::Sha256;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = if arg == "--hash" {
            args.next()
        } else {
            arg.strip_prefix("--hash=").map(str::to_owned)
        };
        match (arg.starts_with("--hash"), value) {
            (true, Some(v)) => match v.parse() {
                Ok(a) => alg = a,
                Err(e) => {
                    eprintln!("measure: {e}");
                    return ExitCode::from(2);
                }
            },
            (true, None) => {
                eprintln!("measure: --hash needs a value");
                return ExitCode::from(2);
            }
            (false, _) => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("usage: measure [--hash sha256|sha512] FILE...");
        return ExitCode::from(2);
    }
    let mut status = ExitCode::SUCCESS;
    for path in files {
        match File::open(&path).and_then(|f| digest_reader(alg, f)) {
            Ok((id, _len)) => println!("{id}  {path}"),
            Err(e) => {
                eprintln!("measure: {path}: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
