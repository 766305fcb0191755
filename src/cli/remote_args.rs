//! Options shared by the commands that take remote names (`mount`, `ls`,
//! `cat`, `diff`, `show`: `URL#REF`, `docker://…`), and the trust options
//! `ostree pull` takes too, with the one place their keys are loaded.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::oci::lazy::LazyOptions;
use crate::oci::registry::RegistryOptions;
use crate::ostree::remote::RemoteOptions;
use crate::ostree::signature::{Ed25519Keys, Keyring, load_keys};
use crate::ostree::trust::Trust;
use crate::view::remote::OpenOptions;

/// Which keys ostree commits' signatures are checked with.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Trust the OpenPGP keys in FILE (armored or binary; repeatable)
    #[arg(long, value_name = "FILE")]
    pub gpg_keyring: Vec<PathBuf>,
    /// Trust this ed25519 public key (base64; repeatable)
    #[arg(long, value_name = "KEY")]
    pub ed25519_key: Vec<String>,
    /// Trust the ed25519 public keys in FILE (one base64 key per line)
    #[arg(long, value_name = "FILE")]
    pub ed25519_keyfile: Vec<PathBuf>,
    /// Fail unless the commit carries a good signature from a trusted key
    #[arg(long)]
    pub require_signatures: bool,
}

impl TrustArgs {
    /// The keys given, loaded.
    pub fn keys(&self) -> Result<(Option<Keyring>, Option<Ed25519Keys>)> {
        load_keys(&self.gpg_keyring, &self.ed25519_key, &self.ed25519_keyfile)
    }

    /// The policy: the keys, and whether a signature is required.
    pub fn trust(&self) -> Result<Trust> {
        let (gpg, ed25519) = self.keys()?;
        Ok(Trust {
            require: self.require_signatures,
            gpg,
            ed25519,
        })
    }
}

/// How remote trees are reached and trusted.
#[derive(Args, Debug, Clone, Default)]
#[command(
    next_help_heading = "Remote trees (URL#REF, docker://REGISTRY/NAME[:TAG|@DIGEST], remotes/NAME/REF)"
)]
pub struct RemoteArgs {
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Give up on a connection or a read after SECONDS (then retry);
    /// default 30 to connect, 60 per read (registries: 30)
    #[arg(long, value_name = "SECONDS", value_parser = super::parse_seconds)]
    pub timeout: Option<Duration>,
    /// Registries: plain HTTP (always for 127.0.0.1 and localhost)
    #[arg(long)]
    pub insecure: bool,
    /// Registries: the credentials file (default as for `oci pull`)
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Registries: os/arch[/variant] to pick from a multi-platform image
    /// (default: this machine's)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Registries: an image whose layers have no table of contents (plain
    /// gzip or zstd) is pulled whole (as `oci pull`, under its default
    /// name) and shown from the repository, instead of refused
    #[arg(long)]
    pub pull: bool,
}

impl RemoteArgs {
    /// The options remote trees are opened with (keys loaded now).
    pub fn options(&self) -> Result<OpenOptions> {
        let registry = RegistryOptions::default();
        Ok(OpenOptions {
            ostree: RemoteOptions {
                trust: self.trust.trust()?,
                timeout: self.timeout,
            },
            oci: LazyOptions {
                registry: RegistryOptions {
                    insecure: self.insecure,
                    auth_file: self.authfile.clone(),
                    timeout: self.timeout.unwrap_or(registry.timeout),
                    ..registry
                },
                platform: self
                    .platform
                    .as_deref()
                    .map(crate::oci::pull::parse_platform)
                    .transpose()?,
                pull_plain: self.pull,
                ..Default::default()
            },
            fetch: crate::fetch::FetchOptions {
                timeout: self.timeout,
                ..Default::default()
            },
        })
    }
}
