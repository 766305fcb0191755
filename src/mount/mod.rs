//! Kernel mounts of composefs images: the EROFS image (file-backed, or on a
//! loop device where the kernel cannot mount a file) under a read-only
//! overlayfs whose data-only lower layer is the repository's `objects/`.
//!
//! Uses the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`), so
//! the EROFS mount never appears in the mount table: the overlay holds it.

mod loopdev;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags, fsconfig_create,
    fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
};

/// How to mount.
#[derive(Clone, Copy, Debug, Default)]
pub struct MountOptions {
    /// Make overlayfs require fs-verity digests on every data file
    /// (`verity=require`); only possible where the kernel has fs-verity.
    pub require_verity: bool,
    /// Put the image on a loop device even where the kernel can mount the
    /// file directly (the path older kernels take; kept testable).
    pub loop_device: bool,
}

/// Mount the EROFS image read-only, detached; returns the mount fd.
/// Kernels without file-backed EROFS refuse a regular file as the source
/// (`ENOTBLK`): the image then goes on a read-only loop device.
fn mount_erofs(image: &File, force_loop: bool) -> Result<OwnedFd> {
    let hint =
        "cannot mount the EROFS image (is it a valid composefs image? is EROFS in this kernel?)";
    if !force_loop {
        match erofs_from_source(&crate::fsutil::proc_self_fd(image)) {
            Ok(m) => return Ok(m),
            Err(Errno::NOTBLK) => {}
            Err(e) => return Err(e).context(hint),
        }
    }
    let dev =
        loopdev::attach_read_only(image).context("cannot attach the image to a loop device")?;
    // The loop device detaches itself (autoclear) when the mount lets go.
    erofs_from_source(dev.path()).context(hint)
}

fn erofs_from_source(source: &str) -> rustix::io::Result<OwnedFd> {
    let fs = fsopen("erofs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&fs, "source", source)?;
    fsconfig_set_flag(&fs, "ro")?;
    fsconfig_create(&fs)?;
    fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )
}

/// Mount `image` at `target` with `objects` as the data layer.
pub fn mount_image(image: &File, objects: &Path, target: &Path, opts: MountOptions) -> Result<()> {
    let erofs = mount_erofs(image, opts.loop_device)?;
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .context("fsopen(overlay): is overlayfs in this kernel?")?;
    let lower = format!(
        "{}::{}",
        crate::fsutil::proc_self_fd(&erofs),
        objects.display()
    );
    if objects
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(|b| matches!(b, b':' | b',' | b'\\'))
    {
        bail!(
            "objects directory {} contains ':', ',' or '\\', which overlayfs options cannot carry",
            objects.display()
        );
    }
    for (key, value) in [
        ("metacopy", "on"),
        ("redirect_dir", "on"),
        ("lowerdir", lower.as_str()),
    ] {
        fsconfig_set_string(&fs, key, value)
            .with_context(|| format!("fsconfig(overlay {key}={value})"))?;
    }
    if opts.require_verity {
        fsconfig_set_string(&fs, "verity", "require")
            .context("fsconfig(overlay verity=require)")?;
    }
    fsconfig_create(&fs).context("cannot create the overlay mount")?;
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )
    .context("fsmount(overlay)")?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .with_context(|| format!("cannot attach the mount at {}", target.display()))?;
    Ok(())
}

/// Unmount whatever is mounted at `target`.
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::empty())
        .with_context(|| format!("cannot unmount {}", target.display()))
}
