//! PAX extended headers: the records that override the next member's
//! path, link target, size, owner, mtime and device numbers, and carry its
//! xattrs (`SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::show::display_bytes;
use crate::tarheader::pax_records;
use crate::tree::Timespec;

/// A PAX time: `[-]SECONDS[.FRACTION]`, the fraction cut to nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    let sec: i64 = int.parse().ok()?;
    let mut nsec: u32 = 0;
    for i in 0..9 {
        let d = frac.as_bytes().get(i).map_or(0, |b| b - b'0');
        nsec = nsec * 10 + u32::from(d);
    }
    if !neg {
        return Some(Timespec { sec, nsec });
    }
    Some(if nsec == 0 {
        Timespec { sec: -sec, nsec: 0 }
    } else {
        Timespec {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        }
    })
}

/// libarchive's `%XX` encoding of xattr names (a `%` not followed by two
/// hex digits stands for itself, as libarchive decodes it).
fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// What PAX extended headers say about the next entry.
#[derive(Debug, Default)]
pub(super) struct Pax {
    pub(super) path: Option<Vec<u8>>,
    pub(super) linkpath: Option<Vec<u8>>,
    pub(super) size: Option<u64>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) mtime: Option<Timespec>,
    pub(super) devmajor: Option<u32>,
    pub(super) devminor: Option<u32>,
    pub(super) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Pax {
    /// Take in one extended header's records (later records win).
    pub(super) fn apply(&mut self, data: &[u8]) -> Result<()> {
        fn decimal<T: std::str::FromStr>(key: &[u8], v: &[u8]) -> Result<T> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .with_context(|| {
                    format!(
                        "PAX record {} has a bad value {:?}",
                        display_bytes(key),
                        display_bytes(v)
                    )
                })
        }
        let opt = |v: &[u8]| (!v.is_empty()).then(|| v.to_vec());
        for (k, v) in pax_records(data)? {
            match k {
                b"path" => self.path = opt(v),
                b"linkpath" => self.linkpath = opt(v),
                // Parsed as `tarsplit` does: it laid the stream out by it.
                b"size" => self.size = Some(decimal(k, v)?),
                b"uid" => self.uid = Some(decimal(k, v)?),
                b"gid" => self.gid = Some(decimal(k, v)?),
                b"SCHILY.devmajor" => self.devmajor = Some(decimal(k, v)?),
                b"SCHILY.devminor" => self.devminor = Some(decimal(k, v)?),
                b"mtime" => {
                    self.mtime = Some(parse_pax_time(v).with_context(|| {
                        format!("PAX record mtime has a bad value {:?}", display_bytes(v))
                    })?)
                }
                _ if k.starts_with(b"SCHILY.xattr.") => {
                    self.xattrs
                        .insert(k[b"SCHILY.xattr.".len()..].to_vec(), v.to_vec());
                }
                _ if k.starts_with(b"LIBARCHIVE.xattr.") => {
                    use base64::Engine;
                    let name = url_decode(&k[b"LIBARCHIVE.xattr.".len()..]);
                    let value = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
                        .decode(v)
                        .with_context(|| {
                            format!(
                                "PAX record {} is not base64: {:?}",
                                display_bytes(k),
                                display_bytes(v)
                            )
                        })?;
                    self.xattrs.insert(name, value);
                }
                _ if k.starts_with(b"GNU.sparse.") => {
                    bail!("sparse files are not supported")
                }
                _ => {} // uname, gname, atime, ctime, comment, charset, …
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes());
        assert_eq!(
            t("1700000000"),
            Some(Timespec {
                sec: 1700000000,
                nsec: 0
            })
        );
        assert_eq!(
            t("1700000000.123456789"),
            Some(Timespec {
                sec: 1700000000,
                nsec: 123456789
            })
        );
        assert_eq!(
            t("1.5"),
            Some(Timespec {
                sec: 1,
                nsec: 500000000
            })
        );
        assert_eq!(
            t("1.1234567899999"),
            Some(Timespec {
                sec: 1,
                nsec: 123456789
            })
        );
        assert_eq!(
            t("-1.25"),
            Some(Timespec {
                sec: -2,
                nsec: 750000000
            })
        );
        assert_eq!(t("-3"), Some(Timespec { sec: -3, nsec: 0 }));
        assert_eq!(t(""), None);
        assert_eq!(t(".5"), None);
        assert_eq!(t("1.x"), None);
        assert_eq!(t("+1"), None);
        assert_eq!(t("99999999999999999999"), None);
    }

    #[test]
    fn pax_headers() {
        let rec = |k: &str, v: &[u8]| {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut n = body.len() + 2;
            while format!("{n} ").len() + body.len() != n {
                n += 1;
            }
            [format!("{n} ").into_bytes(), body].concat()
        };
        let mut p = Pax::default();
        let data = [
            rec("path", b"some/path"),
            rec("uid", b"100000"),
            rec("gid", b"4294967295"),
            rec("mtime", b"5.000000001"),
            rec("uname", b"ignored"),
            rec("SCHILY.xattr.user.a", b"raw\0value\n"),
            rec("LIBARCHIVE.xattr.user.b%3Dc", b"aGVsbG8"),
            rec("LIBARCHIVE.xattr.user.d", b"aGk="),
            rec("SCHILY.xattr.user.d", b"later wins"),
        ]
        .concat();
        p.apply(&data).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"some/path"[..]));
        assert_eq!(p.uid, Some(100000));
        assert_eq!(p.gid, Some(u32::MAX));
        assert_eq!(p.mtime, Some(Timespec { sec: 5, nsec: 1 }));
        let x: Vec<_> = p
            .xattrs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            x,
            vec![
                (&b"user.a"[..], &b"raw\0value\n"[..]),
                (b"user.b=c", b"hello"),
                (b"user.d", b"later wins"),
            ]
        );
        assert!(Pax::default().apply(&rec("uid", b"4294967296")).is_err());
        assert!(Pax::default().apply(&rec("size", b"-1")).is_err());
        assert!(
            Pax::default()
                .apply(&rec("GNU.sparse.map", b"0,1"))
                .is_err()
        );
        assert!(
            Pax::default()
                .apply(&rec("LIBARCHIVE.xattr.user.x", b"***"))
                .is_err()
        );
        // An empty path record reverts to the header's name.
        let mut p = Pax::default();
        p.apply(&[rec("path", b"x"), rec("path", b"")].concat())
            .unwrap();
        assert_eq!(p.path, None);
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode(b"user.a%20b"), b"user.a b");
        assert_eq!(url_decode(b"%41%7a"), b"Az");
        assert_eq!(url_decode(b"100%"), b"100%");
        assert_eq!(url_decode(b"%4"), b"%4");
        assert_eq!(url_decode(b"%zz"), b"%zz");
    }
}
