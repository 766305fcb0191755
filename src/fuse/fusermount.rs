//! Mounting through `fusermount3`, the setuid helper of the FUSE project:
//! it opens `/dev/fuse`, mounts, and hands the descriptor back over a
//! socket (`_FUSE_COMMFD`, one `SCM_RIGHTS` message). With `auto_unmount`
//! it then waits on that socket and unmounts once it closes, that is,
//! once the daemon is gone, however it went.
//!
//! This is how ordinary users mount, and how root's mounts get cleaned up
//! after a daemon that was killed.

use std::io::{IoSliceMut, Read, Seek};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

pub const BIN: &str = "fusermount3";

/// Whether `fusermount3` is on `PATH`.
pub fn available() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(BIN).is_file())
}

/// A mount made by `fusermount3`: the FUSE descriptor, and the socket
/// whose closing (when this is dropped, or the process ends) makes the
/// helper unmount.
pub struct Mount {
    pub fd: OwnedFd,
    _socket: UnixStream,
    _helper: Child,
}

/// Mount FUSE at `mp` with `options` (comma-separated, as for
/// `fusermount3 -o`; `auto_unmount` is added).
pub fn mount(mp: &Path, options: &str) -> Result<Mount> {
    let (ours, theirs) = UnixStream::pair().context("cannot create a socket pair")?;
    // The helper outlives the mount command: it must hold no pipe of our
    // caller's. Its complaints go to a scratch file read on failure.
    let mut errors = tempfile::tempfile().context("cannot create a scratch file")?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(BIN);
    cmd.arg("-o")
        .arg(format!("{options},auto_unmount"))
        .arg("--")
        .arg(mp)
        .env("_FUSE_COMMFD", fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            errors
                .try_clone()
                .context("cannot duplicate a descriptor")?,
        );
    // SAFETY: between fork and exec only the async-signal-safe fcntl runs,
    // clearing close-on-exec on the helper's end of the socket.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut helper = cmd.spawn().with_context(|| format!("cannot run {BIN}"))?;
    drop(theirs);

    match receive_fd(&ours) {
        Ok(fd) => Ok(Mount {
            fd,
            _socket: ours,
            _helper: helper,
        }),
        Err(e) => {
            drop(ours);
            let status = helper.wait().ok();
            let mut text = String::new();
            let _ = errors.rewind();
            let _ = errors.read_to_string(&mut text);
            let text = text.trim();
            if text.is_empty() {
                Err(e).with_context(|| format!("{BIN} failed ({status:?})"))
            } else {
                bail!("{BIN}: {}", text.trim_start_matches(&format!("{BIN}: ")))
            }
        }
    }
}

/// The descriptor the helper sends.
fn receive_fd(sock: &UnixStream) -> Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.context("no answer from fusermount3")?,
        }
    };
    if msg.bytes == 0 {
        bail!("fusermount3 closed the socket without mounting");
    }
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    bail!("fusermount3 sent no descriptor")
}
