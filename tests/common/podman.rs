//! podman with all of its state in a temporary directory: images in
//! `TMP/root` (the vfs driver: no overlay mounts, works anywhere root
//! does), run state in `TMP/run`, libpod's own state and network config
//! below `TMP` too, no events. The machine's default storage is never
//! touched. (Rootful podman 4.3 still makes the empty directory
//! `/run/containers/networks`, netavark's run directory, which no option
//! moves.)

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        super::require_tool("podman");
        Podman {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The directory holding all of this podman's state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman GLOBAL-OPTIONS` with this instance's state, to add a
    /// command to.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("net"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .env("TMPDIR", d.join("tmp"))
            .current_dir(d);
        cmd
    }

    /// `podman ARGS`, required to succeed; stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Vec<u8> {
        std::fs::create_dir_all(self.dir.path().join("tmp")).unwrap();
        let mut cmd = self.command();
        cmd.args(args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `podman import TAR NAME`: the image id.
    pub fn import(&self, tar: &Path, name: &str) -> String {
        let out = self.ok(&[
            OsStr::new("import"),
            OsStr::new("--quiet"),
            tar.as_os_str(),
            OsStr::new(name),
        ]);
        String::from_utf8(out).unwrap().trim().to_string()
    }

    /// `podman save --format FORMAT -o OUT NAME…` (`oci-archive`,
    /// `docker-archive`, `oci-dir`, `docker-dir`; more than one image:
    /// `--multi-image-archive`, docker-archive only); returns OUT.
    pub fn save(&self, names: &[&str], format: &str, out: &Path) -> PathBuf {
        let mut args = vec![
            OsStr::new("save"),
            OsStr::new("--quiet"),
            OsStr::new("--format"),
            OsStr::new(format),
            OsStr::new("-o"),
            out.as_os_str(),
        ];
        if names.len() > 1 {
            args.push(OsStr::new("--multi-image-archive"));
        }
        args.extend(names.iter().map(OsStr::new));
        self.ok(&args);
        out.to_path_buf()
    }

    /// `podman push --tls-verify=false [OPTIONS] NAME DEST`.
    pub fn push(&self, name: &str, dest: &str, options: &[&str]) {
        let mut args = vec!["push", "--quiet", "--tls-verify=false"];
        args.extend_from_slice(options);
        args.extend([name, dest]);
        self.ok(&args);
    }

    /// `podman build -t NAME CONTEXT` (the Containerfile in CONTEXT); the
    /// image id. Without `RUN` instructions no container runtime runs.
    pub fn build(&self, context: &Path, name: &str) -> String {
        let out = self.ok(&[
            OsStr::new("build"),
            OsStr::new("--quiet"),
            OsStr::new("-t"),
            OsStr::new(name),
            context.as_os_str(),
        ]);
        String::from_utf8(out).unwrap().trim().to_string()
    }
}
