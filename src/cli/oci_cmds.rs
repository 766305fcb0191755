//! `composefs oci …`: pull, list, inspect, image and remove OCI images.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::repo_cmds::{open, write_json};
use crate::oci::layout::{DockerArchive, Layout};
use crate::oci::pull::{host_platform, parse_platform, pull};
use crate::oci::reference::ImageRef;
use crate::oci::source::ImageSource;
use crate::oci::store::{StoredImage, list};
use crate::repository::RefKind;
use crate::show::human_bytes;

#[derive(Subcommand, Debug)]
pub enum OciCommand {
    /// Pull an image: docker://[registry/]name[:tag|@digest] (or without
    /// docker://), oci:DIR[:name], oci-archive:FILE[:name],
    /// docker-archive:FILE[:name[:tag]|:@index] (split at the first ':',
    /// as skopeo does)
    Pull {
        image: String,
        /// Store as oci/NAME (default: registry/repository:tag, or the
        /// layout's or archive's name and tag)
        #[arg(long)]
        name: Option<String>,
        /// os/arch[/variant] to pick from a multi-platform image (default:
        /// this machine's)
        #[arg(long)]
        platform: Option<String>,
        /// Plain HTTP (always for 127.0.0.1 and localhost)
        #[arg(long)]
        insecure: bool,
        /// Registry credentials (default: $REGISTRY_AUTH_FILE,
        /// $XDG_RUNTIME_DIR/containers/auth.json,
        /// ~/.config/containers/auth.json, ~/.docker/config.json; their
        /// credHelpers/credsStore helpers are asked)
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
        /// Give up on a connection or a read after SECONDS (then retry)
        #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = super::parse_seconds)]
        timeout: std::time::Duration,
        /// Retries of a transient failure (connection error, timeout, 408,
        /// 429, 5xx) per request
        #[arg(long, value_name = "N", default_value_t = 3)]
        retries: u32,
    },
    /// List pulled images: name, manifest digest, size, created, layers
    Images {
        /// Print a JSON array, one object per image: `name`,
        /// `manifest_digest`, `size` (bytes), `created`, `layer_count`,
        /// `architecture`, `os`, `error` (why the image cannot be read:
        /// then only `name` is set)
        #[arg(long)]
        json: bool,
    },
    /// Print a pulled image as `cfsctl oci inspect` does: JSON with the
    /// manifest and config (as stored, as strings), referrers and the linked
    /// composefs image; or only the raw manifest or config
    Inspect {
        name: String,
        /// Only the config JSON, as stored
        #[arg(long, conflicts_with = "manifest")]
        config: bool,
        /// Only the manifest JSON, as stored
        #[arg(long)]
        manifest: bool,
    },
    /// Store the composefs image of a pulled image (its layers merged, with
    /// composefs-rs's OCI transform) in the repository's EROFS format, link
    /// it from the image's config (as `oci pull` does), and print its id
    CreateImage {
        name: String,
        /// Also name it images/refs/N
        #[arg(long, value_name = "N")]
        image_name: Option<String>,
    },
    /// Print the id of the composefs image `create-image` would store (as
    /// `cfsctl oci compute-id`), storing nothing
    ComputeId { name: String },
    /// Forget pulled images (their ref; `gc` frees what only they used)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub fn run(repo: Option<&Path>, cmd: OciCommand) -> Result<ExitCode> {
    match cmd {
        OciCommand::Pull {
            image,
            name,
            platform,
            insecure,
            authfile,
            timeout,
            retries,
        } => {
            let opts = crate::oci::registry::RegistryOptions {
                insecure,
                auth_file: authfile,
                timeout,
                retries,
            };
            pull_cmd(repo, &image, name.as_deref(), platform.as_deref(), opts)
        }
        OciCommand::Images { json } => images(repo, json),
        OciCommand::Inspect {
            name,
            manifest,
            config,
        } => inspect(repo, &name, manifest, config),
        OciCommand::CreateImage { name, image_name } => {
            create_image(repo, &name, image_name.as_deref())
        }
        OciCommand::ComputeId { name } => compute_id(repo, &name),
        OciCommand::Rm { names } => rm(repo, &names),
    }
}

/// The source a reference names, and the tag or digest to ask it for.
fn open_source(
    r: &ImageRef,
    opts: &crate::oci::registry::RegistryOptions,
) -> Result<(Box<dyn ImageSource>, String)> {
    Ok(match r {
        ImageRef::Layout { dir, tag } => {
            (Box::new(Layout::dir(dir, tag.as_deref())?), String::new())
        }
        ImageRef::OciArchive { file, tag } => (
            Box::new(Layout::archive(file, tag.as_deref())?),
            String::new(),
        ),
        ImageRef::DockerArchive { file, image } => (
            Box::new(DockerArchive::open_image(file, image.as_deref())?),
            String::new(),
        ),
        ImageRef::Registry {
            host,
            repository,
            reference,
        } => (
            Box::new(crate::oci::registry::Registry::new(host, repository, opts)?),
            reference.clone(),
        ),
    })
}

/// On a terminal: a bar per layer being downloaded (bytes, rate, ETA)
/// above one for the whole pull; nothing otherwise.
struct Bars {
    multi: indicatif::MultiProgress,
    total: indicatif::ProgressBar,
    layers: std::sync::Mutex<std::collections::HashMap<usize, indicatif::ProgressBar>>,
}

impl Bars {
    fn new(what: &str) -> Bars {
        let total = super::progress::bytes(Some(0), what);
        let multi = indicatif::MultiProgress::new();
        if total.is_hidden() {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let total = multi.add(total);
        Bars {
            multi,
            total,
            layers: Default::default(),
        }
    }

    fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl crate::oci::pull::PullProgress for Bars {
    fn total(&self, bytes: u64) {
        self.total.set_length(bytes);
    }
    fn layer_start(&self, index: usize, digest: &crate::oci::spec::Digest, size: u64) {
        if self.total.is_hidden() {
            return;
        }
        let hex = digest.as_str().trim_start_matches("sha256:");
        let bar = super::progress::bytes(
            Some(size),
            &format!("  layer {} {}", index + 1, &hex[..hex.len().min(12)]),
        );
        let bar = self.multi.insert_before(&self.total, bar);
        if let Ok(mut l) = self.layers.lock()
            && let Some(old) = l.insert(index, bar)
        {
            // Started again: what it had downloaded does not count.
            self.total
                .set_position(self.total.position().saturating_sub(old.position()));
            old.finish_and_clear();
            self.multi.remove(&old);
        }
    }
    fn bytes(&self, index: usize, n: u64) {
        self.total.inc(n);
        if let Ok(l) = self.layers.lock()
            && let Some(b) = l.get(&index)
        {
            b.inc(n);
        }
    }
    fn layer_done(&self, index: usize) {
        if let Ok(mut l) = self.layers.lock()
            && let Some(b) = l.remove(&index)
        {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
    }
}

fn pull_cmd(
    repo: Option<&Path>,
    image: &str,
    name: Option<&str>,
    platform: Option<&str>,
    opts: crate::oci::registry::RegistryOptions,
) -> Result<ExitCode> {
    let r = open(repo)?;
    let iref = ImageRef::parse(image)?;
    let name = name.map_or_else(|| iref.default_name(), str::to_string);
    let platform = match platform {
        Some(p) => parse_platform(p)?,
        None => host_platform(),
    };
    let (src, reference) = open_source(&iref, &opts)?;
    let bar = Bars::new(&format!("pulling {iref}"));
    let t0 = Instant::now();
    let report = pull(&r, src.as_ref(), &reference, &name, &platform, &bar)
        .with_context(|| format!("cannot pull {iref}"))?;
    bar.finish();
    writeln!(
        std::io::stdout(),
        "{} oci/{}: fetched {} layers ({}), reused {}, {:.2}s",
        report.manifest,
        report.name,
        report.layers_fetched,
        human_bytes(report.bytes),
        report.layers_reused,
        t0.elapsed().as_secs_f64()
    )
    .context("cannot write to stdout")?;
    match &report.image {
        Ok(id) => writeln!(std::io::stdout(), "composefs image {id}"),
        Err(why) => writeln!(std::io::stdout(), "no composefs image: {why}"),
    }
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// One image as `images --json` prints it (the fields cfsctl's
/// `oci images --json` has too are named as it names them).
#[derive(serde::Serialize, Default)]
struct ImageJson {
    name: String,
    manifest_digest: Option<String>,
    /// Bytes: the sum of the (compressed) layer sizes the manifest gives.
    size: Option<u64>,
    /// As the config records it (RFC 3339).
    created: Option<String>,
    layer_count: Option<usize>,
    architecture: Option<String>,
    os: Option<String>,
    /// Why the image cannot be read.
    error: Option<String>,
}

fn images(repo: Option<&Path>, json: bool) -> Result<ExitCode> {
    let r = open(repo)?;
    let mut out = std::io::stdout().lock();
    let mut listed = Vec::new();
    for (name, img) in list(&r)? {
        match (img, json) {
            (Ok(i), false) => writeln!(
                out,
                "{name}\t{}\t{}\t{}\t{} layers",
                i.manifest_digest,
                human_bytes(i.size()),
                i.config.created.as_deref().unwrap_or("-"),
                i.layers.len()
            )?,
            (Err(e), false) => writeln!(out, "{name}\t(broken: {e:#})")?,
            (Ok(i), true) => listed.push(ImageJson {
                name,
                manifest_digest: Some(i.manifest_digest.to_string()),
                size: Some(i.size()),
                layer_count: Some(i.layers.len()),
                architecture: Some(i.config.architecture),
                os: Some(i.config.os),
                created: i.config.created,
                error: None,
            }),
            (Err(e), true) => listed.push(ImageJson {
                name,
                error: Some(format!("{e:#}")),
                ..ImageJson::default()
            }),
        }
    }
    if json {
        write_json(&mut out, &listed)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `cfsctl oci inspect`'s JSON, field for field.
#[derive(serde::Serialize)]
struct InspectReply {
    manifest: String,
    config: String,
    referrers: Vec<String>,
    composefs_erofs: Option<String>,
    composefs_boot_erofs: Option<String>,
}

fn inspect(repo: Option<&Path>, name: &str, manifest: bool, config: bool) -> Result<ExitCode> {
    let r = open(repo)?;
    let img = StoredImage::open(&r, name)?;
    let mut out = std::io::stdout().lock();
    if manifest || config {
        out.write_all(if manifest {
            &img.manifest_bytes
        } else {
            &img.config_bytes
        })?;
    } else {
        let text = |b: &[u8], what: &str| {
            String::from_utf8(b.to_vec()).with_context(|| format!("the {what} is not UTF-8"))
        };
        let version = r.erofs_version();
        let boot_key = if version == 2 {
            "composefs.image.boot"
        } else {
            "composefs.image.boot.v1"
        };
        let reply = InspectReply {
            manifest: text(&img.manifest_bytes, "manifest")?,
            config: text(&img.config_bytes, "config")?,
            referrers: Vec::new(),
            composefs_erofs: img
                .image(if version == 2 { 2 } else { 1 })
                .map(|id| id.to_hex()),
            composefs_boot_erofs: img
                .images
                .iter()
                .find(|(k, _)| k == boot_key)
                .map(|(_, id)| id.to_hex()),
        };
        serde_json::to_writer_pretty(&mut out, &reply)?;
    }
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

fn create_image(repo: Option<&Path>, name: &str, image_name: Option<&str>) -> Result<ExitCode> {
    let r = open(repo)?;
    r.ensure_writable()?;
    if let Some(n) = image_name {
        crate::repository::validate_ref_name(n)?;
    }
    let img = StoredImage::open(&r, name)?;
    let c = crate::oci::image::commit(&r, &img, image_name)
        .with_context(|| format!("OCI image {name:?}"))?;
    if let Some(w) = &c.untransformed {
        tracing::warn!("{w}");
    }
    let id = c.id;
    // A name stored as older versions did (nested directories) moves to
    // the spelling composefs-rs reads.
    if let Some((old, entry)) = crate::oci::tags::lookup(&r, name)?
        && old != crate::oci::tags::ref_name(name)?
    {
        r.sync()?;
        crate::oci::tags::set(&r, name, &entry)?;
    }
    writeln!(std::io::stdout(), "{id}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn compute_id(repo: Option<&Path>, name: &str) -> Result<ExitCode> {
    let r = open(repo)?;
    let img = StoredImage::open(&r, name)?;
    let (id, why) = crate::oci::image::compute(&r, &img, r.erofs_version())
        .with_context(|| format!("OCI image {name:?}"))?;
    if let Some(w) = why {
        tracing::warn!("{w}");
    }
    writeln!(std::io::stdout(), "{id}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn rm(repo: Option<&Path>, names: &[String]) -> Result<ExitCode> {
    let r = open(repo)?;
    let mut refs = Vec::new();
    for n in names {
        match crate::oci::tags::lookup(&r, n)? {
            Some((rf, _)) => refs.push(rf),
            None => bail!("no OCI image named {n:?} (see `composefs oci images`)"),
        }
    }
    for rf in refs {
        r.remove_ref(RefKind::Stream, &rf)?;
    }
    Ok(ExitCode::SUCCESS)
}
