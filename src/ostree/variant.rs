//! GVariant serialisation for the handful of types ostree uses. Reading is
//! done with the `gvariant` crate; writing is ours, so that what we write
//! (and what we compare inputs with to check normal form) follows the
//! specification byte for byte: alignment padding, framing offsets sized
//! by the container, offsets reversed in structures.
//!
//! Integers are given as raw bytes: ostree stores them big-endian inside
//! the (little-endian) format, so callers pass `to_be_bytes()`.

/// A value to serialise.
pub enum V<'a> {
    /// A fixed-size value given as bytes, with its alignment (`y`, `u`, `t`).
    Fixed(Vec<u8>, usize),
    /// `s`: the bytes, then a NUL.
    Str(&'a [u8]),
    /// `ay`.
    Bytes(&'a [u8]),
    /// Already-serialised bytes of a variable-size type with this alignment
    /// (e.g. an `a{sv}` kept as read).
    Raw(&'a [u8], usize),
    /// A structure.
    Tuple(Vec<V<'a>>),
    /// An array of variable-size elements with alignment `align`.
    Array(Vec<V<'a>>, usize),
    /// `v`: a value with its type string (e.g. `"aay"`).
    Variant(Box<V<'a>>, &'static str),
}

/// An `a{sv}` dictionary from (key, value, value type) entries, in order.
pub fn dict<'a>(entries: Vec<(&'a str, V<'a>, &'static str)>) -> V<'a> {
    V::Array(
        entries
            .into_iter()
            .map(|(k, v, t)| V::Tuple(vec![V::Str(k.as_bytes()), V::Variant(Box::new(v), t)]))
            .collect(),
        8,
    )
}

/// `aay` from byte strings.
pub fn bytes_list<'a>(items: &'a [Vec<u8>]) -> V<'a> {
    V::Array(items.iter().map(|b| V::Bytes(b)).collect(), 1)
}

pub fn u32be(v: u32) -> V<'static> {
    V::Fixed(v.to_be_bytes().to_vec(), 4)
}

pub fn u64be(v: u64) -> V<'static> {
    V::Fixed(v.to_be_bytes().to_vec(), 8)
}

impl V<'_> {
    fn align(&self) -> usize {
        match self {
            V::Fixed(_, a) | V::Raw(_, a) | V::Array(_, a) => *a,
            V::Variant(..) => 8,
            V::Str(_) | V::Bytes(_) => 1,
            V::Tuple(items) => items.iter().map(V::align).max().unwrap_or(1),
        }
    }

    fn is_fixed(&self) -> bool {
        match self {
            V::Fixed(..) => true,
            V::Tuple(items) => items.iter().all(V::is_fixed),
            _ => false,
        }
    }

    /// Serialise into a new buffer (whose start is taken as aligned).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            V::Fixed(b, _) => out.extend_from_slice(b),
            V::Str(s) => {
                out.extend_from_slice(s);
                out.push(0);
            }
            V::Bytes(b) | V::Raw(b, _) => out.extend_from_slice(b),
            V::Variant(v, ty) => {
                v.write(out);
                out.push(0);
                out.extend_from_slice(ty.as_bytes());
            }
            V::Tuple(items) => {
                let start = out.len();
                let mut offsets = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    pad(out, start, item.align());
                    item.write(out);
                    if !item.is_fixed() && i + 1 != items.len() {
                        offsets.push(out.len() - start);
                    }
                }
                if self.is_fixed() {
                    if items.is_empty() {
                        out.push(0);
                    } else {
                        pad(out, start, self.align());
                    }
                } else {
                    offsets.reverse();
                    write_offsets(out, start, &offsets);
                }
            }
            V::Array(items, align) => {
                let start = out.len();
                let mut offsets = Vec::with_capacity(items.len());
                for item in items {
                    pad(out, start, *align);
                    item.write(out);
                    offsets.push(out.len() - start);
                }
                write_offsets(out, start, &offsets);
            }
        }
    }
}

fn pad(out: &mut Vec<u8>, start: usize, align: usize) {
    while !(out.len() - start).is_multiple_of(align) {
        out.push(0);
    }
}

/// Append framing offsets, each as wide as the container's total size needs.
fn write_offsets(out: &mut Vec<u8>, start: usize, offsets: &[usize]) {
    let body = out.len() - start;
    let n = offsets.len();
    let width = if body == 0 && n == 0 {
        0
    } else if body + n <= 0xff {
        1
    } else if body + 2 * n <= 0xffff {
        2
    } else if body + 4 * n <= 0xffff_ffff {
        4
    } else {
        8
    };
    for &o in offsets {
        out.extend_from_slice(&(o as u64).to_le_bytes()[..width]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gvariant::{Marker, Structure, gv};

    #[test]
    fn matches_the_gvariant_crate() {
        let names: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("name-{i}"), vec![i as u8; 32]))
            .collect();
        let v = V::Tuple(vec![
            V::Array(
                names
                    .iter()
                    .map(|(n, c)| V::Tuple(vec![V::Str(n.as_bytes()), V::Bytes(c)]))
                    .collect(),
                1,
            ),
            V::Array(vec![], 1),
        ]);
        let bytes = v.to_bytes();
        let parsed = gv!("(a(say)a(sayay))").from_bytes(&bytes);
        let (files, dirs) = parsed.to_tuple();
        assert_eq!(files.len(), 300);
        assert_eq!(dirs.len(), 0);
        let (n, c) = files[299].to_tuple();
        assert_eq!(n.to_str(), "name-299");
        assert_eq!(c.len(), 32);

        let h = V::Tuple(vec![
            u64be(7),
            u32be(1),
            u32be(2),
            u32be(0o100644),
            u32be(0),
            V::Str(b""),
            V::Array(
                vec![V::Tuple(vec![V::Bytes(b"user.x\0"), V::Bytes(b"v")])],
                1,
            ),
        ])
        .to_bytes();
        let sigs = vec![vec![1u8; 64], vec![2u8; 64]];
        let d = dict(vec![
            ("ostree.sign.ed25519", bytes_list(&sigs), "aay"),
            ("version", V::Str(b"1.0"), "s"),
        ])
        .to_bytes();
        assert_eq!(
            crate::ostree::objects::meta_bytes_list(&d, "ostree.sign.ed25519").unwrap(),
            sigs
        );
        assert_eq!(
            crate::ostree::objects::meta_string(&d, "version").as_deref(),
            Some("1.0")
        );
        let p = gv!("(tuuuusa(ayay))").from_bytes(&h);
        let (size, uid, ..) = p.to_tuple();
        assert_eq!(u64::from_be(*size), 7);
        assert_eq!(u32::from_be(*uid), 1);
    }
}
