//! The base tar: the fixture whose file contents the scratch repositories
//! of the stream targets hold, split into each repository once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{Context, Result};

use crate::fsverity::ObjectId;
use crate::repository::Repository;
use crate::splitstream::content_type;
use crate::tarsplit;

/// The tar [`set_base_tar`] was given, if it was called.
pub(super) static BASE_TAR: OnceLock<Vec<u8>> = OnceLock::new();

/// The tar whose file contents the fixture repositories hold (the seed
/// splitstreams of the `splitstream` target were made from it by
/// `composefs import-tar`), and the lower layer the `tarsplit` target
/// merges fuzzed layers onto. Only the first call counts.
pub fn set_base_tar(tar: &[u8]) {
    let _ = BASE_TAR.set(tar.to_vec());
}

/// Split the base tar into `repo` (whose generation is `generation`), once
/// per repository: its objects and its layer stream.
pub(super) fn base_layer(
    repo: &Repository,
    generation: u64,
    cache: &mut BTreeMap<u64, ObjectId>,
    key: u64,
) -> Result<Option<ObjectId>> {
    let Some(tar) = BASE_TAR.get() else {
        return Ok(None);
    };
    let k = key << 32 | generation;
    if let Some(id) = cache.get(&k) {
        return Ok(Some(*id));
    }
    let mut w = repo.stream_writer(content_type::OCI_LAYER)?;
    tarsplit::split(&tar[..], &mut w, |_| {}).context("the base tar does not split")?;
    let id = w.finish()?;
    cache.insert(k, id);
    Ok(Some(id))
}
