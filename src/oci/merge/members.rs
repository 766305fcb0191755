//! A layer's tar members read into entries: the header fields, as PAX
//! and GNU long-name records override them, checked against what a
//! composefs image can hold; a regular file's content kept as inline
//! bytes or its object.

use anyhow::{Context, Result, bail};

use super::pax::Pax;
use super::tar_stream::TarReader;
use super::{EntryKind, MAX_META_RECORD, check_symlink_target, check_xattr};
use crate::show::display_bytes;
use crate::splitstream::{SplitStreamReader, content_type};
use crate::tarheader::{
    BLOCK, cstr, header_name, numeric_u32, numeric_u64, padding, parse_numeric, verify_checksum,
};
use crate::tree::{Inode, Kind, Stat, Timespec, Xattr, mode};

/// Read a layer's members in order and hand each to `apply` with its
/// path (PAX `path`, GNU long name or the header's): a new inode, or a
/// hardlink to an earlier path. Errors, `apply`'s included, name the member
/// and the byte its header starts at.
pub(super) fn for_each_member(
    stream: SplitStreamReader,
    mut apply: impl FnMut(&[u8], EntryKind) -> Result<()>,
) -> Result<()> {
    if stream.content_type != content_type::OCI_LAYER {
        bail!(
            "the stream holds {}, not a tar layer",
            crate::splitstream::content_type_name(stream.content_type)
        );
    }
    let mut tar = TarReader::new(stream);
    let mut pax = Pax::default();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    // An extended header or long name/link record waits for its member.
    let mut pending = false;
    loop {
        let at = tar.offset;
        let Some(block) = tar.block()? else {
            // Ending at a member boundary without the end-of-archive blocks
            // is a complete archive (as `crate::tarsplit` takes it).
            if pending {
                bail!(
                    "tar ends at byte {at} after an extended header, before its member: truncated"
                );
            }
            return Ok(());
        };
        if block.iter().all(|&b| b == 0) {
            // End of archive; whatever follows is padding.
            return Ok(());
        }
        verify_checksum(&block, at)?;
        let typeflag = block[156];
        let header_size = numeric_u64(&block[124..136], "size")
            .with_context(|| format!("tar header at byte {at}"))?;
        if let b'x' | b'g' | b'L' | b'K' = typeflag {
            let what = || {
                let kind = match typeflag {
                    b'x' => "PAX extended header",
                    b'g' => "PAX global header",
                    b'L' => "GNU long name record",
                    _ => "GNU long link record",
                };
                format!("{kind} at byte {at}")
            };
            if header_size > MAX_META_RECORD {
                bail!(
                    "{} claims {header_size} bytes; refusing more than {MAX_META_RECORD}",
                    what()
                );
            }
            let data = tar.read(header_size).with_context(what)?;
            tar.skip_padding(padding(header_size)).with_context(what)?;
            match typeflag {
                b'x' => pax.apply(&data).with_context(what)?,
                b'L' => long_name = Some(cstr(&data).to_vec()),
                b'K' => long_link = Some(cstr(&data).to_vec()),
                _ => {} // global headers: ignored
            }
            pending |= typeflag != b'g';
            continue;
        }
        pending = false;
        let pax = std::mem::take(&mut pax);
        let long_name = long_name.take();
        let long_link = long_link.take();
        let path = pax
            .path
            .clone()
            .or(long_name)
            .unwrap_or_else(|| header_name(&block));
        let ctx = || {
            format!(
                "tar entry \"{}\" (header at byte {at})",
                crate::show::short_path(&path)
            )
        };
        let link = pax
            .linkpath
            .clone()
            .or(long_link)
            .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
        let what = read_entry(&mut tar, &block, header_size, pax, &path, link).with_context(ctx)?;
        apply(&path, what).with_context(ctx)?;
    }
}

/// Read one member's header fields and data (its content if a regular
/// file, skipped otherwise, padding included).
fn read_entry(
    tar: &mut TarReader,
    block: &[u8; BLOCK],
    header_size: u64,
    pax: Pax,
    path: &[u8],
    link: Vec<u8>,
) -> Result<EntryKind> {
    let typeflag = block[156];
    let size = pax.size.unwrap_or(header_size);
    let padded = size
        .checked_add(padding(size))
        .with_context(|| format!("impossible size {size}"))?;
    let kind = match typeflag {
        b'0' | 0 | b'7' => {
            let data = tar.content(size)?;
            tar.skip_padding(padded - size)?;
            // Pre-POSIX archives mark directories by a trailing slash.
            if typeflag == 0 && path.ends_with(b"/") {
                Kind::Directory
            } else {
                Kind::Regular(data)
            }
        }
        b'S' => bail!("sparse files are not supported"),
        b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => {
            tar.skip(size)?;
            tar.skip_padding(padded - size)?;
            match typeflag {
                b'1' => {
                    if link.is_empty() {
                        bail!("hardlink without a target");
                    }
                    return Ok(EntryKind::Hardlink(link));
                }
                b'2' => {
                    check_symlink_target(&link)?;
                    Kind::Symlink(link)
                }
                b'3' | b'4' => {
                    let major = match pax.devmajor {
                        Some(v) => v,
                        None => numeric_u32(&block[329..337], "device major")?,
                    };
                    let minor = match pax.devminor {
                        Some(v) => v,
                        None => numeric_u32(&block[337..345], "device minor")?,
                    };
                    let rdev = rustix::fs::makedev(major, minor);
                    if typeflag == b'3' {
                        Kind::CharDevice { rdev }
                    } else {
                        Kind::BlockDevice { rdev }
                    }
                }
                b'5' => Kind::Directory,
                _ => Kind::Fifo,
            }
        }
        t => bail!(
            "unsupported tar entry type {:?}",
            display_bytes(std::slice::from_ref(&t))
        ),
    };
    let perms = (numeric_u64(&block[100..108], "mode")? & u64::from(mode::PERMS)) as u32;
    let uid = match pax.uid {
        Some(v) => v,
        None => numeric_u32(&block[108..116], "uid")?,
    };
    let gid = match pax.gid {
        Some(v) => v,
        None => numeric_u32(&block[116..124], "gid")?,
    };
    let mtime = match pax.mtime {
        Some(t) => t,
        None => Timespec {
            sec: parse_numeric(&block[136..148]).with_context(|| {
                format!("bad mtime field {:?}", display_bytes(&block[136..148]))
            })?,
            nsec: 0,
        },
    };
    let mut xattrs: Vec<Xattr> = Vec::with_capacity(pax.xattrs.len());
    for (name, value) in pax.xattrs {
        check_xattr(&name, &value)?;
        xattrs.push((name, value));
    }
    Ok(EntryKind::Inode(Inode {
        stat: Stat {
            perms,
            uid,
            gid,
            mtime,
        },
        kind,
        xattrs,
    }))
}
