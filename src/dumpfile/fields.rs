//! Reading one field of a dump line: C numbers, MTIME, DIGEST, the C
//! strings of paths and names, PATH and hardlink target components, and
//! one `KEY=VALUE` xattr with its limits.

use anyhow::{Context, Result, anyhow, bail};

use super::escape::unescape;
use super::{MAX_XATTR_NAME, MAX_XATTR_VALUE};
use crate::fsverity::{Algorithm, ObjectId};
use crate::show::short_path;
use crate::tree::{Timespec, check_name};

/// A number as C `strtoull` reads it (what `mkcomposefs` uses): optional
/// leading white space and sign, at least one digit of `base`, nothing
/// after; a `-` negates modulo 2^64 and a value past 2^64 - 1 saturates.
pub(super) fn parse_c_number(field: &[u8], base: u32, what: &str) -> Result<u64> {
    let s = field.trim_ascii_start();
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        bail!("empty or invalid {what} {:?}", short_path(field));
    }
    let mut v: u64 = 0;
    let mut saturated = false;
    for &c in digits {
        let d = (c as char)
            .to_digit(base)
            .with_context(|| format!("invalid {what} {:?}: not a number", short_path(field)))?;
        match v
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(n) => v = n,
            None => saturated = true,
        }
    }
    Ok(if saturated {
        u64::MAX
    } else if neg {
        0u64.wrapping_sub(v)
    } else {
        v
    })
}

pub(super) fn parse_mtime(field: &[u8]) -> Result<Timespec> {
    // As the C parser: seconds up to the first '.', nanoseconds after it,
    // each a C number; stored as `time_t` and a 32-bit field.
    let dot = field
        .iter()
        .position(|&c| c == b'.')
        .with_context(|| format!("invalid MTIME {:?}: expected SEC.NSEC", short_path(field)))?;
    let sec = parse_c_number(&field[..dot], 10, "MTIME seconds")? as i64;
    let nsec = parse_c_number(&field[dot + 1..], 10, "MTIME nanoseconds")? as u32;
    // C would write this too, an invalid time no reader takes back.
    if nsec >= 1_000_000_000 {
        bail!("MTIME nanoseconds {nsec} is not below 1000000000");
    }
    Ok(Timespec { sec, nsec })
}

pub(super) fn parse_digest(field: &[u8]) -> Result<ObjectId> {
    let s = std::str::from_utf8(field).map_err(|_| anyhow!("DIGEST is not hex"))?;
    let alg = match s.len() {
        64 => Algorithm::Sha256,
        128 => Algorithm::Sha512,
        n => bail!("DIGEST has {n} characters; expected 64 (sha256) or 128 (sha512) hex digits"),
    };
    ObjectId::from_hex(alg, s).with_context(|| format!("DIGEST {:?} is not hex", short_path(field)))
}

/// The bytes before the first NUL: the C tool keeps paths, symlink
/// targets, backing paths and xattr names as C strings, so an escaped
/// `\x00` ends them.
pub(super) fn c_string(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = v.iter().position(|&c| c == 0) {
        v.truncate(nul);
    }
    v
}

/// The components of a line's PATH, as the C parser finds them: `/` alone
/// is the root (no components); otherwise leading and repeated slashes
/// are skipped (`//a` is `/a`, and a path without a leading slash is below
/// the root too) but the last component must be a name (`/a/` is not).
pub(super) fn split_path(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path == b"/" {
        return Ok(Vec::new());
    }
    let mut comps: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
    let last = comps.pop().unwrap_or_default();
    comps.retain(|c| !c.is_empty());
    comps.push(last);
    for comp in &comps {
        check_name(comp).with_context(|| format!("bad path {:?}", short_path(path)))?;
    }
    Ok(comps)
}

/// The components of a hardlink's target (C `lookup_path`): empty
/// components anywhere are skipped, so `/a//b/` names `/a/b`.
pub(super) fn split_target(path: &[u8]) -> Result<Vec<&[u8]>> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .map(|comp| {
            check_name(comp)
                .with_context(|| format!("bad hardlink target {:?}", short_path(path)))?;
            Ok(comp)
        })
        .collect()
}

pub(super) fn parse_xattr(field: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    if field.is_empty() {
        bail!("empty xattr field (two spaces in a row?)");
    }
    let (k, v) = match field.iter().position(|&c| c == b'=') {
        Some(eq) => (&field[..eq], &field[eq + 1..]),
        None => bail!(
            "xattr {:?} has no '=' (write an empty value as NAME=)",
            String::from_utf8_lossy(field)
        ),
    };
    // A C string: an escaped NUL ends the name.
    let key = c_string(unescape(k).context("xattr name")?);
    if key.is_empty() {
        bail!("empty xattr name");
    }
    if key.len() > MAX_XATTR_NAME {
        bail!(
            "xattr name of {} bytes is longer than {MAX_XATTR_NAME}",
            key.len()
        );
    }
    let value = unescape(v).with_context(|| format!("value of xattr {:?}", short_path(&key)))?;
    if value.len() > MAX_XATTR_VALUE {
        bail!(
            "value of xattr {:?} has {} bytes, more than {MAX_XATTR_VALUE}",
            short_path(&key),
            value.len()
        );
    }
    Ok((key, value))
}
