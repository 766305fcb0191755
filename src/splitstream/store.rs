//! Splitstreams as repository citizens: publishing and opening them by name
//! (`streams/<content-id>`, `streams/refs/<name>`).
//!
//! These are methods on [`Repository`], but this `impl Repository` block
//! lives here, in `splitstream`, not in `repository`: the store knows no
//! splitstream (it only links entries and refs to objects), while the
//! stream writer and reader are built on the store. Keeping them methods
//! keeps every caller's `repo.open_stream(..)` as it was.

use anyhow::{Context, Result};

use super::{SplitStreamReader, SplitStreamWriter};
use crate::fsverity::ObjectId;
use crate::repository::refs::Resolved;
use crate::repository::{RefKind, Repository, validate_ref_name};

impl Repository {
    /// Start a new splitstream in this repository.
    pub fn stream_writer(&self, content_type: u64) -> Result<SplitStreamWriter<'_>> {
        SplitStreamWriter::new(self, content_type)
    }

    /// Finish `writer`, name the result `streams/<content_id>` and, if given,
    /// point `streams/refs/<ref_name>` at it. Everything the ref depends on
    /// is synced to disk (one `syncfs`) before the ref appears.
    pub fn commit_stream(
        &self,
        writer: SplitStreamWriter<'_>,
        content_id: &str,
        ref_name: Option<&str>,
    ) -> Result<ObjectId> {
        if let Some(name) = ref_name {
            validate_ref_name(name)?;
        }
        let id = writer
            .finish()
            .with_context(|| format!("cannot store stream {content_id}"))?;
        self.link_entry(RefKind::Stream, content_id, &id)?;
        if let Some(name) = ref_name {
            self.sync()?;
            self.set_ref(RefKind::Stream, name, content_id)?;
        }
        Ok(id)
    }

    /// Open the splitstream stored as object `id`. A stream that does not
    /// read is a [`crate::splitstream::Error`] under context naming it
    /// (`splitstream::Error::find` tells damaged from unsupported).
    pub fn open_stream_object(&self, id: &ObjectId) -> Result<SplitStreamReader> {
        let f = self.open_object(id)?;
        SplitStreamReader::new(f, self.algorithm()).with_context(|| format!("stream object {id}"))
    }

    /// Open a stream by ref, content id or digest.
    pub fn open_stream(&self, name: &str) -> Result<(Resolved, SplitStreamReader)> {
        let resolved = self.resolve(RefKind::Stream, name)?;
        let reader = self
            .open_stream_object(&resolved.id)
            .with_context(|| format!("stream {name:?}"))?;
        Ok((resolved, reader))
    }
}
