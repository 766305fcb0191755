//! Read-only loop devices, for kernels that cannot mount an EROFS file directly.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device; it detaches itself (autoclear) once the last
/// user — this handle or a mount — lets go.
pub struct LoopDevice {
    path: String,
    _dev: File,
}

impl LoopDevice {
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Attach `image` read-only to a free loop device.
pub fn attach_read_only(image: &File) -> Result<LoopDevice> {
    let ctl = File::open("/dev/loop-control").context("cannot open /dev/loop-control")?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("LOOP_CTL_GET_FREE");
    }
    let path = format!("/dev/loop{n}");
    let dev = OpenOptions::new()
        .read(true)
        .open(&path)
        .with_context(|| format!("cannot open {path}"))?;
    // SAFETY: all-zero is a valid LoopInfo64 (plain integers and byte arrays).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    let config = LoopConfig {
        fd: image.as_fd().as_raw_fd() as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config`
    // matches field for field; it lives across the call.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            &config as *const LoopConfig,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("LOOP_CONFIGURE on {path}"));
    }
    Ok(LoopDevice { path, _dev: dev })
}
