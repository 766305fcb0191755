//! The escaping of dump fields (C `print_escaped` and `unescape_string`):
//! [`escape`] for writing, [`unescape`] for reading.

use anyhow::{Result, bail};

/// Which escaping a field gets (the C tool's `ESCAPE_*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Paths.
    Standard,
    /// Payload and content: a lone `-` is escaped as `\x2d`.
    LoneDash,
    /// Xattr names and values: `=` is escaped too.
    Equal,
}

/// Append `val` escaped for a dump field.
pub fn escape_into(out: &mut Vec<u8>, val: &[u8], how: Escape) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if how == Escape::LoneDash && val == b"-" {
        out.extend_from_slice(b"\\x2d");
        return;
    }
    for &c in val {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'=' if how == Escape::Equal => out.extend_from_slice(b"\\x3d"),
            0x21..=0x7e => out.push(c),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[(c >> 4) as usize],
                HEX[(c & 15) as usize],
            ]),
        }
    }
}

/// `val` escaped for a dump field.
pub fn escape(val: &[u8], how: Escape) -> Vec<u8> {
    let mut v = Vec::with_capacity(val.len());
    escape_into(&mut v, val, how);
    v
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Undo [`escape`]: accepts `\\ \n \r \t \xHH` (either hex case); any other
/// escape, a trailing `\` or short hex is an error. Never longer than the input.
pub fn unescape(field: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let c = field[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = field.get(i) else {
            bail!("backslash at the end of a field");
        };
        i += 1;
        match e {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'x' => {
                let (Some(&h), Some(&l)) = (field.get(i), field.get(i + 1)) else {
                    bail!("\\x escape without two hex digits");
                };
                let (Some(h), Some(l)) = (hexval(h), hexval(l)) else {
                    bail!(
                        "invalid hex digits {:?} in \\x escape",
                        String::from_utf8_lossy(&field[i..i + 2])
                    );
                };
                out.push(h << 4 | l);
                i += 2;
            }
            other => bail!(
                "unsupported escape \\{}",
                char::from(other).escape_default()
            ),
        }
    }
    Ok(out)
}

/// An optional field: `-` is `None`.
pub(super) fn unescape_optional(field: &[u8]) -> Result<Option<Vec<u8>>> {
    if field == b"-" {
        Ok(None)
    } else {
        unescape(field).map(Some)
    }
}
