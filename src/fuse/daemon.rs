//! Mounting and serving: in the foreground, or forked into a daemon whose
//! parent returns only once the mount is ready (or with the daemon's error).
//!
//! The background protocol: before forking, the parent opens a pipe; the
//! child mounts, writes `OK\n` (or the error text) and closes its end; the
//! parent reads to end of file. A child that dies before writing leaves an
//! empty pipe, which the parent reports with the child's exit status, so
//! the parent never waits on a dead daemon.

use std::io::{PipeWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use fuser::{Config, MountOption, Session, SessionACL};

use super::fs::TreeFs;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Serve in this process until unmounted (else fork a daemon).
    pub foreground: bool,
    /// Let other users than the mounting one in (`allow_other`).
    pub allow_other: bool,
    /// Request-handling threads.
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            foreground: false,
            allow_other: false,
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 8),
        }
    }
}

const READY: &[u8] = b"OK\n";

fn fuse_config(opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("composefs".into()),
        MountOption::Subtype("composefs".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = opts.threads > 1;
    config
}

/// Mount `fs` at `mountpoint` and serve it until it is unmounted (by
/// `umount`, `composefs umount`, `fusermount3 -u`, or a SIGINT, SIGTERM or
/// SIGHUP to the daemon). Without `foreground`, returns as soon as the
/// mount is ready, the daemon serving on in the background.
pub fn serve(fs: TreeFs, mountpoint: &Path, opts: &MountOptions) -> Result<()> {
    let mp = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !mp.is_dir() {
        bail!("mount point {} is not a directory", mp.display());
    }
    raise_fd_limit();
    let config = fuse_config(opts);
    if opts.foreground {
        return mount_and_run(fs, &mp, &config, &mut None);
    }

    let (mut reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the process is single-threaded here (nothing before the mount
    // starts threads), so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot fork the mount daemon");
    }
    if pid == 0 {
        drop(reader);
        // SAFETY: plain system calls.
        unsafe {
            libc::setsid();
        }
        let _ = std::env::set_current_dir("/");
        let mut ready = Some(writer);
        let code = match mount_and_run(fs, &mp, &config, &mut ready) {
            Ok(()) => 0,
            Err(e) => {
                let msg = format!("{e:#}");
                match ready.take() {
                    Some(mut w) => {
                        let _ = w.write_all(msg.as_bytes());
                    }
                    None => eprintln!("composefs: mount daemon for {}: {msg}", mp.display()),
                }
                1
            }
        };
        std::process::exit(code);
    }
    drop(writer);
    drop(fs);
    let mut msg = Vec::new();
    let read = reader.read_to_end(&mut msg);
    if read.is_ok() && msg == READY {
        return Ok(());
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
    }
    if msg.is_empty() {
        bail!(
            "the mount daemon exited before the mount was ready ({})",
            describe_status(status)
        );
    }
    bail!("{}", String::from_utf8_lossy(&msg).trim_end());
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

fn mount_and_run(
    fs: TreeFs,
    mp: &Path,
    config: &Config,
    ready: &mut Option<PipeWriter>,
) -> Result<()> {
    let mut session = Session::new(fs, mp, config)
        .with_context(|| format!("cannot mount FUSE at {}", mp.display()))?;
    // Signals go to one thread that unmounts; the request threads that
    // `run` starts inherit the mask.
    let set = block_signals()?;
    let unmounter = session.unmount_callable();
    let mp_owned = mp.to_path_buf();
    std::thread::Builder::new()
        .name("composefs-signals".into())
        .spawn(move || wait_and_unmount(set, unmounter, mp_owned))
        .context("cannot start the signal thread")?;
    if let Some(mut w) = ready.take() {
        w.write_all(READY)
            .context("cannot tell the parent the mount is ready")?;
        drop(w);
        detach_stdio();
    }
    session
        .run()
        .with_context(|| format!("serving {}", mp.display()))
}

fn block_signals() -> Result<libc::sigset_t> {
    // SAFETY: sigset manipulation on a local, then pthread_sigmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!(
                "cannot block signals: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok(set)
    }
}

fn wait_and_unmount(set: libc::sigset_t, mut unmounter: fuser::SessionUnmounter, mp: PathBuf) {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised signal set.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        eprintln!("composefs: sigwait failed; the daemon will not unmount on signals");
        return;
    }
    if let Err(e) = unmounter.unmount() {
        eprintln!(
            "composefs: cannot unmount {} ({e}); detaching it lazily",
            mp.display()
        );
        lazy_unmount(&mp);
    }
}

/// Detach the mount now, whatever still uses it (`umount -l`); through
/// `fusermount3 -u -z` for users.
pub fn lazy_unmount(mp: &Path) {
    if rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH).is_ok() {
        return;
    }
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mp)
        .status();
}

/// After the mount is ready, a daemon lets go of the terminal or pipes it
/// was started with (a caller reading our output to its end would wait for
/// the daemon otherwise). Standard error stays when it is a regular file,
/// as a log.
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: fstat into a local struct.
    let keep_stderr = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(2, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    };
    // SAFETY: dup2 onto the standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        if !keep_stderr {
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

/// Open object files count against RLIMIT_NOFILE: take the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
