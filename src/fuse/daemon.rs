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
use super::fusermount;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Serve in this process until unmounted (else fork a daemon).
    pub foreground: bool,
    /// Let other users than the mounting one in (`allow_other`).
    pub allow_other: bool,
    /// Request-handling threads.
    pub threads: usize,
    /// Where a background daemon writes its messages (failed reads name
    /// their object there). Without it they are kept only when standard
    /// error is a regular file.
    pub log: Option<PathBuf>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            foreground: false,
            allow_other: false,
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 8),
            log: None,
        }
    }
}

const READY: &[u8] = b"OK\n";
/// What a daemon that makes its filesystem itself says once it has.
const LOADED: &[u8] = b"LOADED\n";

/// A filesystem to serve: made already, or made by the daemon itself
/// after the fork ([`serve_later`]).
enum Serving {
    Ready(Box<TreeFs>),
    Later(Box<dyn FnOnce() -> Result<TreeFs> + Send>),
}

/// How long `mount` waits for its daemon to report.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Wait until `r` is readable (data or end of file), at most `timeout`
/// (`None`: as long as it takes).
fn wait_readable(r: &impl std::os::fd::AsRawFd, timeout: Option<std::time::Duration>) -> bool {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let ms = match deadline {
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            None => -1,
        };
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return true;
        }
        if rc == 0 {
            return false;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return true;
        }
    }
}

fn fuse_config(opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("composefs".into()),
        MountOption::Subtype("composefs".into()),
        MountOption::RO,
        // A view for looking inside images, not for running them: setuid
        // bits and device nodes show in `stat` but take no effect.
        MountOption::NoSuid,
        MountOption::NoDev,
        // Nothing to record on a read-only view: reads skip the atime
        // checks altogether.
        MountOption::NoAtime,
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
    serve_inner(Serving::Ready(Box::new(fs)), mountpoint, opts)
}

/// [`serve`] a filesystem that `make` makes in the daemon, after the
/// fork: for a tree whose opening may start threads (a remote tree
/// fetching its metadata), which a forked child of a multi-threaded
/// process could not safely run. The caller waits while it is made (its
/// fetches have their own timeouts), then for the mount as [`serve`]
/// does; an error making it is the caller's error.
pub fn serve_later(
    make: Box<dyn FnOnce() -> Result<TreeFs> + Send>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<()> {
    serve_inner(Serving::Later(make), mountpoint, opts)
}

fn serve_inner(fs: Serving, mountpoint: &Path, opts: &MountOptions) -> Result<()> {
    let mp = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !mp.is_dir() {
        bail!("mount point {} is not a directory", mp.display());
    }
    raise_fd_limit();
    let log = match &opts.log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?,
        ),
        None => None,
    };
    if opts.foreground {
        if let Some(f) = &log {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto standard error.
            unsafe {
                libc::dup2(f.as_raw_fd(), 2);
            }
        }
        let fs = match fs {
            Serving::Ready(fs) => *fs,
            Serving::Later(make) => make()?,
        };
        return mount_and_run(fs, &mp, opts, &mut None, None);
    }
    let later = matches!(fs, Serving::Later(_));

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
        let mut ready = Some(writer);
        // Made in the caller's directory (relative paths as given).
        let fs = match fs {
            Serving::Ready(fs) => Ok(*fs),
            Serving::Later(make) => make().and_then(|fs| {
                // The caller gone (interrupted meanwhile): no mount.
                ready
                    .as_mut()
                    .expect("not taken yet")
                    .write_all(LOADED)
                    .context("the command that started the mount daemon is gone")?;
                Ok(fs)
            }),
        };
        let _ = std::env::set_current_dir("/");
        let code = match fs.and_then(|fs| mount_and_run(fs, &mp, opts, &mut ready, log)) {
            Ok(()) => 0,
            Err(e) => {
                let msg = format!("{e:#}");
                match ready.take() {
                    Some(mut w) => {
                        let _ = w.write_all(msg.as_bytes());
                    }
                    None => tracing::error!("mount daemon for {}: {msg}", mp.display()),
                }
                1
            }
        };
        std::process::exit(code);
    }
    drop(writer);
    drop(fs);
    let mut msg = Vec::new();
    if later {
        // The tree is being made: as long as its fetches take.
        while msg.len() < LOADED.len() && LOADED.starts_with(&msg) {
            wait_readable(&reader, None);
            let mut b = [0u8; 64];
            match reader.read(&mut b[..LOADED.len() - msg.len()]) {
                Ok(0) => break,
                Ok(n) => msg.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if msg == LOADED {
            msg.clear();
        }
    }
    let read = if !msg.is_empty() {
        // The daemon's error, as far as it came: the rest follows.
        reader.read_to_end(&mut msg)
    } else if wait_readable(&reader, Some(READY_TIMEOUT)) {
        reader.read_to_end(&mut msg)
    } else {
        // Stuck (in mount(2) on a hung filesystem, say): never hang the
        // caller.
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
        bail!(
            "the mount daemon was not ready after {} s; stopped it",
            READY_TIMEOUT.as_secs()
        );
    };
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

/// The `fusermount3 -o` options matching [`fuse_config`].
fn fusermount_options(opts: &MountOptions) -> String {
    let mut o = String::from(
        "ro,nosuid,nodev,noatime,default_permissions,fsname=composefs,subtype=composefs",
    );
    if opts.allow_other {
        o.push_str(",allow_other");
    }
    o
}

fn mount_and_run(
    fs: TreeFs,
    mp: &Path,
    opts: &MountOptions,
    ready: &mut Option<PipeWriter>,
    log: Option<std::fs::File>,
) -> Result<()> {
    let mut config = fuse_config(opts);
    let notifier = fs.notifier_slot();
    // Through fusermount3 when it is there: it mounts for users, and it
    // unmounts when the daemon dies, however it dies (`auto_unmount`).
    // Its mount must outlive `session`, hence declared first.
    let helper;
    let via_helper = fusermount::available();
    let mut session = if via_helper {
        helper = fusermount::mount(mp, &fusermount_options(opts))
            .with_context(|| format!("cannot mount FUSE at {}", mp.display()))?;
        let fd = helper
            .fd
            .try_clone()
            .context("cannot duplicate the FUSE descriptor")?;
        // Extra request channels are opened on /dev/fuse, which users
        // may not open: let them share the one descriptor.
        config.clone_fd &= std::fs::File::open("/dev/fuse").is_ok();
        let acl = config.acl;
        Session::from_fd(fs, fd, acl, config)
            .with_context(|| format!("cannot serve FUSE at {}", mp.display()))?
    } else {
        Session::new(fs, mp, &config)
            .with_context(|| format!("cannot mount FUSE at {}", mp.display()))?
    };
    let _ = notifier.set(session.notifier());
    // Signals go to one thread that unmounts; the request threads that
    // `run` starts inherit the mask.
    let set = block_signals()?;
    let unmounter = session.unmount_callable();
    let mp_owned = mp.to_path_buf();
    std::thread::Builder::new()
        .name("composefs-signals".into())
        .spawn(move || wait_and_unmount(set, unmounter, mp_owned, via_helper))
        .context("cannot start the signal thread")?;
    if let Some(mut w) = ready.take() {
        w.write_all(READY)
            .context("cannot tell the parent the mount is ready")?;
        drop(w);
        detach_stdio(log.as_ref());
    }
    // A log file wants times on its lines; a terminal and the journal not.
    crate::logging::set_timestamps(log.is_some() || opts.log.is_some());
    tracing::info!(
        "serving {} (pid {}, {})",
        mp.display(),
        std::process::id(),
        if via_helper {
            "through fusermount3"
        } else {
            "mounted directly"
        }
    );
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

fn wait_and_unmount(
    set: libc::sigset_t,
    mut unmounter: fuser::SessionUnmounter,
    mp: PathBuf,
    via_helper: bool,
) {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised signal set.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        tracing::warn!("sigwait failed; the daemon will not unmount on signals");
        return;
    }
    if via_helper {
        // The session does not own a mount made by fusermount3.
        lazy_unmount(&mp);
    } else if let Err(e) = unmounter.unmount() {
        tracing::warn!("cannot unmount {} ({e}); detaching it lazily", mp.display());
        lazy_unmount(&mp);
    }
}

/// Detach the mount now, whatever still uses it (`umount -l`); through
/// `fusermount3 -u -z` for users.
pub fn lazy_unmount(mp: &Path) {
    if rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH).is_ok() {
        return;
    }
    let _ = Command::new(crate::fuse::fusermount::BIN)
        .arg("-u")
        .arg("-z")
        .arg(mp)
        .status();
}

/// After the mount is ready, a daemon lets go of the terminal or pipes it
/// was started with (a caller reading our output to its end would wait for
/// the daemon otherwise). Standard error stays when it is a regular file,
/// as a log.
fn detach_stdio(log: Option<&std::fs::File>) {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    use std::os::fd::AsRawFd;
    if let Some(f) = log {
        // SAFETY: dup2 onto standard error.
        unsafe {
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
    // Standard error stays when it is a file (a log, or redirected by the
    // caller) or the journal (systemd names it in JOURNAL_STREAM as
    // DEV:INODE).
    // SAFETY: fstat into a local struct.
    let keep_stderr = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(2, &mut st) == 0
            && (st.st_mode & libc::S_IFMT == libc::S_IFREG
                || is_journal_stream(st.st_dev as u64, st.st_ino as u64))
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

/// Whether `JOURNAL_STREAM` names the file (device, inode) as the journal.
fn is_journal_stream(dev: u64, ino: u64) -> bool {
    std::env::var("JOURNAL_STREAM")
        .ok()
        .and_then(|v| {
            let (d, i) = v.split_once(':')?;
            Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
        })
        .is_some_and(|named| named == (dev, ino))
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
