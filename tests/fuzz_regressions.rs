//! What the fuzzers (`fuzz/`, see docs/fuzzing.md) found, kept as tests:
//! each input under `tests/fixtures/fuzz/<target>/` goes through the same
//! code path as its fuzz target (`composefs::fuzz_api`) and must be
//! refused with an error, never a panic or a hang. And the seeds the
//! fuzzers start from (`fuzz/corpus/<target>/`, real files made by the
//! real tools) must be accepted: a harness that refuses its own seeds
//! fuzzes nothing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use composefs::fuzz_api::{self, SignedCommit};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The files of a directory, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn base_tar() {
    fuzz_api::set_base_tar(&read(&root().join("fuzz/fixtures/base.tar")));
}

fn signed() -> &'static SignedCommit {
    static S: OnceLock<SignedCommit> = OnceLock::new();
    S.get_or_init(|| {
        let f = root().join("fuzz/fixtures");
        SignedCommit::new(
            &read(&f.join("signed.commit")),
            &read(&f.join("signing-keys.asc")),
            &String::from_utf8(read(&f.join("ed25519.pub"))).unwrap(),
        )
        .unwrap()
    })
}

/// Run `data` through the harness of `target`: `Ok` if the main parse
/// accepted it.
fn run(target: &str, data: &[u8]) -> Result<(), String> {
    let e = |e: anyhow::Error| format!("{e:#}");
    match target {
        "splitstream" => {
            base_tar();
            fuzz_api::splitstream(data).map(drop).map_err(e)
        }
        "tarsplit" => {
            base_tar();
            fuzz_api::tarsplit(data).map(drop).map_err(e)
        }
        "erofs" => fuzz_api::erofs(data).map(drop).map_err(e),
        "dumpfile" => fuzz_api::dumpfile(data).map_err(e),
        "ostree_commit" => fuzz_api::ostree_commit(data).map(drop).map_err(e),
        "ostree_dirtree" => fuzz_api::ostree_dirtree(data).map(drop).map_err(e),
        "ostree_dirmeta" => fuzz_api::ostree_dirmeta(data).map(drop).map_err(e),
        "ostree_commit_stream" => fuzz_api::ostree_commit_stream(data).map_err(e),
        "ostree_fileheader" => fuzz_api::ostree_fileheader(data).map(drop).map_err(e),
        "ostree_summary" => fuzz_api::ostree_summary(data).map(drop).map_err(e),
        "ostree_delta_superblock" => fuzz_api::ostree_delta_superblock(data).map(drop).map_err(e),
        "ostree_delta_part" => fuzz_api::ostree_delta_part(data).map(drop).map_err(e),
        "ostree_detached_metadata" => fuzz_api::ostree_detached_metadata(data, signed())
            .map(drop)
            .map_err(e),
        "oci_json" => fuzz_api::oci_json(data).map_err(e),
        "oci_archive" => fuzz_api::oci_archive(data).map_err(e),
        "auth_challenge" => fuzz_api::auth_challenge(data)
            .map(drop)
            .ok_or_else(|| "no token URL".to_string()),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Every finding under tests/fixtures/fuzz/<target>/ is refused, quickly.
#[test]
fn findings_are_refused() {
    let mut n = 0;
    for dir in files_or_dirs(&root().join("tests/fixtures/fuzz")) {
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        for f in files(&dir) {
            let data = read(&f);
            let start = Instant::now();
            let r = run(&target, &data);
            assert!(
                r.is_err(),
                "{}: accepted, but this input must be refused",
                f.display()
            );
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{}: took {:?}",
                f.display(),
                start.elapsed()
            );
            n += 1;
        }
    }
    eprintln!("{n} findings refused");
}

fn files_or_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The seeds the fuzzers start from pass their harness's main parse (the
/// few seeds that are deliberately something else are named here).
#[test]
fn seeds_are_accepted() {
    // Seeds that are not what the main parse takes: registry responses
    // other than a Bearer challenge, `docker save`'s manifest.json,
    // delta index files (an a{sv}, not a summary).
    let not_main = [
        "auth_challenge/distribution-basic",
        "auth_challenge/error-body",
        "oci_json/docker-archive-manifest.json",
    ];
    let not_main_prefix = ["auth_challenge/location", "ostree_summary/delta-index-"];
    let mut failures = Vec::new();
    let mut n = 0;
    for dir in files_or_dirs(&root().join("fuzz/corpus")) {
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        for f in files(&dir) {
            let name = format!("{target}/{}", f.file_name().unwrap().to_str().unwrap());
            if not_main.contains(&name.as_str())
                || not_main_prefix.iter().any(|p| name.starts_with(p))
            {
                continue;
            }
            n += 1;
            if let Err(e) = run(&target, &read(&f)) {
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(n > 40, "only {n} seeds found under fuzz/corpus");
    assert!(
        failures.is_empty(),
        "seeds refused:\n{}",
        failures.join("\n")
    );
}

/// The detached-metadata fixture is real: its seed carries a good OpenPGP
/// and a good ed25519 signature over the fixture commit (so the fuzzer
/// starts from signatures that verify).
#[test]
fn detached_metadata_seed_verifies() {
    let seed = read(&root().join("fuzz/corpus/ostree_detached_metadata/signed.commitmeta"));
    assert_eq!(
        fuzz_api::ostree_detached_metadata(&seed, signed()).unwrap(),
        2
    );
}
