//! Strict reading of GVariant containers, enough for static deltas: a
//! structure or array is split into the byte slices of its members, so
//! that embedded objects (the commit in a superblock, the xattr lists of a
//! part) keep their exact bytes.
//!
//! Only data in normal form is accepted: framing offsets as wide as the
//! container's size requires, in order and in bounds, zero padding, no
//! bytes left over. Anything else is an error, never a default value.

use anyhow::{Result, bail};

/// How a structure member is laid out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member {
    align: usize,
    fixed: Option<usize>,
}

/// A fixed-size member (`y`, `u`, `t`, …) of `size` bytes.
pub(crate) const fn fixed(size: usize, align: usize) -> Member {
    Member {
        align,
        fixed: Some(size),
    }
}

/// A variable-size member (`ay`, `a{sv}`, a structure containing one…).
pub(crate) const fn var(align: usize) -> Member {
    Member { align, fixed: None }
}

/// Width of the framing offsets of a container of `len` bytes.
fn offset_size(len: usize) -> usize {
    if len == 0 {
        0
    } else if len <= 0xff {
        1
    } else if len <= 0xffff {
        2
    } else if len <= 0xffff_ffff {
        4
    } else {
        8
    }
}

fn read_offset(b: &[u8]) -> usize {
    let mut v: u64 = 0;
    for (i, x) in b.iter().enumerate() {
        v |= u64::from(*x) << (8 * i);
    }
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn align_up(pos: usize, align: usize) -> usize {
    pos.div_ceil(align) * align
}

fn check_padding(what: &str, pad: &[u8]) -> Result<()> {
    if pad.iter().any(|&b| b != 0) {
        bail!("{what}: non-zero alignment padding (not in GVariant normal form)");
    }
    Ok(())
}

/// Split a structure into its members' bytes.
pub(crate) fn structure<'a>(
    what: &str,
    data: &'a [u8],
    members: &[Member],
) -> Result<Vec<&'a [u8]>> {
    let Some(last) = members.len().checked_sub(1) else {
        bail!("{what}: empty structure type");
    };
    let n_frames = members[..last].iter().filter(|m| m.fixed.is_none()).count();
    let osz = offset_size(data.len());
    let Some(body_end) = data.len().checked_sub(osz * n_frames) else {
        bail!("{what}: truncated ({} bytes)", data.len());
    };
    let mut out = Vec::with_capacity(members.len());
    let mut pos = 0usize;
    let mut frame = 0usize;
    for (i, m) in members.iter().enumerate() {
        let start = align_up(pos, m.align);
        if start > body_end {
            bail!("{what}: truncated at member {i}");
        }
        check_padding(what, &data[pos..start])?;
        let end = match m.fixed {
            Some(size) => start.saturating_add(size),
            None if i == last => body_end,
            None => {
                frame += 1;
                let at = data.len() - osz * frame;
                read_offset(&data[at..at + osz])
            }
        };
        if end < start || end > body_end {
            bail!("{what}: member {i} spans {start}..{end}, outside the {body_end} bytes of data");
        }
        out.push(&data[start..end]);
        pos = end;
    }
    if pos != body_end {
        bail!(
            "{what}: {} stray bytes after the last member",
            body_end - pos
        );
    }
    Ok(out)
}

/// Split an array of variable-size elements (aligned to `align`).
pub(crate) fn var_array<'a>(what: &str, data: &'a [u8], align: usize) -> Result<Vec<&'a [u8]>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let osz = offset_size(data.len());
    let len = data.len();
    if len < osz {
        bail!("{what}: truncated array");
    }
    let table = read_offset(&data[len - osz..]);
    if table > len - osz {
        bail!("{what}: array offset table starts at {table}, past the {len} bytes of data");
    }
    let table_len = len - table;
    if !table_len.is_multiple_of(osz) {
        bail!("{what}: array offset table of {table_len} bytes is not a multiple of {osz}");
    }
    let n = table_len / osz;
    let mut out = Vec::with_capacity(n);
    let mut pos = 0usize;
    for i in 0..n {
        let at = table + i * osz;
        let end = read_offset(&data[at..at + osz]);
        let start = align_up(pos, align);
        if end > table || start > end {
            bail!(
                "{what}: array element {i} spans {start}..{end}, outside the {table} bytes of data"
            );
        }
        check_padding(what, &data[pos..start])?;
        out.push(&data[start..end]);
        pos = end;
    }
    Ok(out)
}

/// Split an array of `size`-byte fixed-size elements.
pub(crate) fn fixed_array<'a>(what: &str, data: &'a [u8], size: usize) -> Result<Vec<&'a [u8]>> {
    if size == 0 || !data.len().is_multiple_of(size) {
        bail!(
            "{what}: {} bytes is not a whole number of {size}-byte elements",
            data.len()
        );
    }
    Ok(data.chunks_exact(size).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::variant::{V, u32be, u64be};

    #[test]
    fn structure_round_trip() {
        let v = V::Tuple(vec![
            V::Bytes(b"abc"),
            u64be(7),
            V::Bytes(b""),
            V::Bytes(b"xyz"),
        ])
        .to_bytes();
        let m = structure("t", &v, &[var(1), fixed(8, 8), var(1), var(1)]).unwrap();
        assert_eq!(m[0], b"abc");
        assert_eq!(m[1], 7u64.to_be_bytes());
        assert_eq!(m[2], b"");
        assert_eq!(m[3], b"xyz");
    }

    #[test]
    fn structure_rejects_bad_framing() {
        let v = V::Tuple(vec![V::Bytes(b"abc"), u64be(7), V::Bytes(b"xyz")]).to_bytes();
        let members = [var(1), fixed(8, 8), var(1)];
        assert!(structure("t", &v, &members).is_ok());
        // non-zero padding between "abc" and the u64
        let mut bad = v.clone();
        bad[4] = 1;
        assert!(structure("t", &bad, &members).is_err());
        // framing offset past the data
        let mut bad = v.clone();
        *bad.last_mut().unwrap() = 200;
        assert!(structure("t", &bad, &members).is_err());
        // truncated
        for n in 0..v.len() {
            let _ = structure("t", &v[..n], &members);
        }
        assert!(structure("t", &[], &members).is_err());
    }

    #[test]
    fn arrays() {
        let v = V::Array(vec![V::Bytes(b"a"), V::Bytes(b""), V::Bytes(b"bcd")], 1).to_bytes();
        let a = var_array("a", &v, 1).unwrap();
        assert_eq!(a, vec![&b"a"[..], b"", b"bcd"]);
        assert!(var_array("a", &[], 1).unwrap().is_empty());
        let mut bad = v.clone();
        *bad.last_mut().unwrap() = 0xf0;
        assert!(var_array("a", &bad, 1).is_err());
        // offsets going backwards
        let bad = [b'a', b'b', 2, 1, 2];
        assert!(var_array("a", &bad, 1).is_err());
        for n in 0..v.len() {
            let _ = var_array("a", &v[..n], 1);
        }
        let f = V::Tuple(vec![u32be(1), u32be(2), u32be(3)]).to_bytes();
        assert_eq!(fixed_array("f", &f, 12).unwrap().len(), 1);
        assert!(fixed_array("f", &f[..11], 12).is_err());
    }
}
