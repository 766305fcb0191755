//! `import-tar` and `cat`.

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{progress, repo_cmds::open};
use crate::compression::decompress;
use crate::repository::validate_ref_name;
use crate::splitstream::content_type;
use crate::tarsplit;

/// Counts bytes read from the (possibly compressed) input, for progress.
struct Counting<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub fn import(repo: Option<&Path>, name: &str, file: Option<&Path>) -> Result<ExitCode> {
    validate_ref_name(name)?;
    let r = open(repo)?;
    r.ensure_writable()?;
    let (input, total, shown): (Box<dyn Read>, Option<u64>, String) = match file {
        None => (Box::new(std::io::stdin().lock()), None, "<stdin>".into()),
        Some(p) if p == Path::new("-") => {
            (Box::new(std::io::stdin().lock()), None, "<stdin>".into())
        }
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let len = f.metadata().ok().map(|m| m.len()).filter(|&l| l > 0);
            (Box::new(f), len, p.display().to_string())
        }
    };
    let bar = progress::bytes(total, "importing");
    let counted = Counting {
        inner: input,
        bar: bar.clone(),
    };
    let (_, tar) = decompress(counted).with_context(|| format!("cannot read {shown}"))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut writer = r
        .stream_writer(content_type::OCI_LAYER)?
        .parallel(threads)?;
    let summary = r
        .with_flusher(|| tarsplit::split(tar, &mut writer, |_| {}))
        .with_context(|| format!("cannot import {shown}"))?;
    let content_id = format!("oci-layer-{}", summary.diff_id());
    let id = r.commit_stream(writer, &content_id, Some(name))?;
    bar.finish_and_clear();
    writeln!(std::io::stdout(), "{id}  {content_id}").context("cannot write to stdout")?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let _ = writeln!(
            std::io::stderr(),
            "imported {shown} as {name}: {} entries, {} external objects, {} bytes",
            summary.entries,
            summary.external,
            summary.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cat NAME`: a stored stream; if NAME is no stream but `REF:/PATH`, a
/// file of any tree (stored or remote).
pub fn cat_or_path(
    repo: Option<&Path>,
    name: &str,
    remote: &super::remote_args::RemoteArgs,
) -> Result<ExitCode> {
    if let Some((r, p)) = super::image_cmds::split_ref_path(name) {
        let stream = open(repo)?
            .resolve(crate::repository::RefKind::Stream, name)
            .is_ok();
        if !stream {
            return super::image_cmds::cat_path(repo, r, p, remote);
        }
    }
    if crate::view::remote::RemoteName::parse(name)?.is_some() {
        bail!("{name}: say which file of the remote tree: {name}:/PATH");
    }
    cat(repo, name)
}

pub fn cat(repo: Option<&Path>, name: &str) -> Result<ExitCode> {
    let r = open(repo)?;
    let (_, mut stream) = r.open_stream(name)?;
    let mut out = BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    stream
        .cat(&r, &mut out)
        .with_context(|| format!("stream {name:?}"))?;
    out.flush().context("cannot write output")?;
    Ok(ExitCode::SUCCESS)
}
