//! Tar header blocks, as the producers in the field write them: POSIX ustar
//! (a name prefix), GNU (base-256 numbers, negative ones too; `ustar  `
//! magic, whose prefix bytes hold other fields) and PAX records. The one
//! parser of them for the tar splitter ([`crate::tarsplit`]), the OCI layer
//! merge ([`crate::oci::merge`]) and the fuzz targets. What fails to
//! parse is an [`Error`] saying which way.

use crate::show::display_bytes;

/// A tar block: headers are one, content is padded to a whole number.
pub const BLOCK: usize = 512;

/// Why a tar header or PAX record does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends inside a header: `got` of its 512 bytes, which start
    /// at byte `at` of the archive.
    #[error(
        "tar ends at byte {}, inside the header that starts at byte {at}: truncated",
        .at.saturating_add(*.got as u64)
    )]
    TruncatedHeader { at: u64, got: usize },
    /// The header's checksum field does not match its bytes (`stored` is
    /// `None` when the field is no number at all).
    #[error("tar header at byte {at} has a bad checksum: corrupt or not a tar")]
    BadChecksum {
        at: u64,
        stored: Option<i64>,
        computed: i64,
    },
    /// A numeric field that is no tar number, or (`parsed`) one out of
    /// range for the field.
    #[error("bad {field} field {:?}{}", display_bytes(.value), out_of_range(.parsed))]
    BadNumeric {
        field: String,
        value: Vec<u8>,
        parsed: Option<i64>,
    },
    /// A PAX record that does not parse; `offset` is where it starts in
    /// the extended header's data.
    #[error("PAX record at offset {offset} {problem}")]
    BadPax { offset: usize, problem: PaxProblem },
}

/// What is wrong with a PAX record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaxProblem {
    #[error("has no length")]
    NoLength,
    #[error("has a bad length")]
    BadLength,
    #[error("length {0} does not fit the record")]
    LengthDoesNotFit(usize),
    #[error("has no '='")]
    NoEquals,
}

fn out_of_range(parsed: &Option<i64>) -> String {
    parsed.map_or(String::new(), |v| format!(" ({v} is out of range)"))
}

/// A tar numeric field: octal (leading spaces allowed, ended by NUL or
/// space, empty = 0) or base-256 (high bit of the first byte set; the next
/// bit is the sign), as GNU tar and star write large or negative values.
pub fn parse_numeric(field: &[u8]) -> Option<i64> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &b) in field.iter().enumerate() {
            let mut c = b ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return None;
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 != 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let v = u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()?;
    i64::try_from(v).ok()
}

/// A numeric field (named `what` in errors) that must fit `T`.
fn numeric<T: TryFrom<i64>>(field: &[u8], what: &str) -> Result<T, Error> {
    let parsed = parse_numeric(field);
    parsed
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| Error::BadNumeric {
            field: what.to_string(),
            value: field.to_vec(),
            parsed,
        })
}

pub fn numeric_u64(field: &[u8], what: &str) -> Result<u64, Error> {
    numeric(field, what)
}

pub fn numeric_u32(field: &[u8], what: &str) -> Result<u32, Error> {
    numeric(field, what)
}

/// Check the header checksum (the sum of all bytes with the checksum field
/// read as spaces, unsigned or, historically, signed); the error names the
/// header's offset `at`.
pub fn verify_checksum(block: &[u8; BLOCK], at: u64) -> Result<(), Error> {
    let stored = parse_numeric(&block[148..156]);
    let computed = checksum(block);
    let signed: i64 = checksum_bytes(block).map(|b| i64::from(b as i8)).sum();
    match stored {
        Some(s) if s == computed || s == signed => Ok(()),
        _ => Err(Error::BadChecksum {
            at,
            stored,
            computed,
        }),
    }
}

/// The checksum a writer stores: the unsigned sum of the header's bytes,
/// its checksum field read as spaces.
pub fn checksum(block: &[u8; BLOCK]) -> i64 {
    checksum_bytes(block).map(i64::from).sum()
}

/// The header's bytes with its checksum field as spaces.
fn checksum_bytes(block: &[u8; BLOCK]) -> impl Iterator<Item = u8> + '_ {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { b' ' } else { b })
}

/// A NUL-terminated (or full-width) string field.
pub fn cstr(field: &[u8]) -> &[u8] {
    &field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())]
}

/// The member name as the header spells it: POSIX ustar joins the prefix
/// field; GNU headers (magic `ustar `) use those bytes for other things.
pub fn header_name(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = cstr(&block[0..100]);
    if &block[257..263] == b"ustar\0" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            return p;
        }
    }
    name.to_vec()
}

/// Zero bytes after `size` bytes of content, to the end of its last block.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A PAX record: key and value.
pub type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Records of a PAX extended header: `"<len> <key>=<value>\n"`.
pub fn pax_records(data: &[u8]) -> Result<Vec<PaxRecord<'_>>, Error> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let bad = |problem| Error::BadPax {
            offset: data.len() - rest.len(),
            problem,
        };
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad(PaxProblem::NoLength))?;
        let len: usize = Some(&rest[..sp])
            .filter(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(PaxProblem::BadLength))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad(PaxProblem::LengthDoesNotFit(len)));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad(PaxProblem::NoEquals))?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"     12 "), Some(0o12));
        assert_eq!(parse_numeric(b"00000000001"), Some(1));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b""), Some(0));
        assert_eq!(parse_numeric(b"9"), None);
        assert_eq!(parse_numeric(b"12x4"), None);
        // base-256, positive
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0x7b]), Some(123));
        // base-256, negative (two's complement)
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        assert_eq!(
            parse_numeric(&[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe
            ]),
            Some(-2)
        );
        // overflow
        assert_eq!(
            parse_numeric(&[0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(numeric_u32(b"0001750\0", "uid").unwrap(), 1000);
    }

    #[test]
    fn bad_numeric_fields_say_which_and_why() {
        let e = numeric_u32(&[0x80, 0, 0, 0, 1, 0, 0, 0, 0], "uid").unwrap_err();
        assert!(
            matches!(&e, Error::BadNumeric { field, parsed: Some(v), .. } if field == "uid" && *v == 1 << 32),
            "{e}"
        );
        assert!(e.to_string().starts_with("bad uid field"), "{e}");
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = numeric_u64(&[0xff; 12], "size").unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadNumeric {
                    parsed: Some(-1),
                    ..
                }
            ),
            "{e}"
        );
        let e = numeric_u64(b"12x4", "mode").unwrap_err();
        assert_eq!(
            e,
            Error::BadNumeric {
                field: "mode".into(),
                value: b"12x4".to_vec(),
                parsed: None
            }
        );
        assert_eq!(e.to_string(), "bad mode field \"12x4\"");
    }

    fn block_with(f: impl FnOnce(&mut [u8; BLOCK])) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[100..108].copy_from_slice(b"0000644\0");
        b[156] = b'0';
        f(&mut b);
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }

    #[test]
    fn names_and_checksums() {
        let ustar = block_with(|b| {
            b[..4].copy_from_slice(b"file");
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
            b[345..351].copy_from_slice(b"a/long");
        });
        assert!(verify_checksum(&ustar, 0).is_ok());
        assert_eq!(header_name(&ustar), b"a/long/file");
        // GNU headers keep atime/ctime where ustar has the prefix.
        let gnu = block_with(|b| {
            b[..4].copy_from_slice(b"file");
            b[257..265].copy_from_slice(b"ustar  \0");
            b[345..351].copy_from_slice(b"012345");
        });
        assert_eq!(header_name(&gnu), b"file");
        // A full-width 100-byte name has no NUL.
        let full = block_with(|b| b[..100].fill(b'n'));
        assert_eq!(header_name(&full), vec![b'n'; 100]);
        let mut bad = ustar;
        bad[0] ^= 1;
        assert!(verify_checksum(&bad, 0).is_err());
        assert!(matches!(
            verify_checksum(&bad, 1024),
            Err(Error::BadChecksum {
                at: 1024,
                stored: Some(_),
                ..
            })
        ));
        bad[148..156].copy_from_slice(b"nonsense");
        assert!(matches!(
            verify_checksum(&bad, 0),
            Err(Error::BadChecksum { stored: None, .. })
        ));
    }

    #[test]
    fn header_errors_name_their_offset() {
        let good = block_with(|b| b[..4].copy_from_slice(b"file"));
        let e = Error::TruncatedHeader { at: 512, got: 100 };
        assert_eq!(
            e.to_string(),
            "tar ends at byte 612, inside the header that starts at byte 512: truncated"
        );
        let mut bad = good;
        bad[0] ^= 1;
        let e = verify_checksum(&bad, 512).unwrap_err();
        assert!(matches!(e, Error::BadChecksum { at: 512, .. }), "{e}");
        assert!(e.to_string().contains("bad checksum"), "{e}");
    }

    #[test]
    fn pax_parsing() {
        let recs = pax_records(b"11 size=99\n25 path=a/long/name/here\n").unwrap();
        assert_eq!(recs[0], (&b"size"[..], &b"99"[..]));
        assert_eq!(recs[1].1, b"a/long/name/here");
        let problem = |data: &[u8]| match pax_records(data) {
            Err(Error::BadPax { offset, problem }) => (offset, problem),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            problem(b"99 size=1\n"),
            (0, PaxProblem::LengthDoesNotFit(99))
        );
        assert_eq!(problem(b"x size=1\n"), (0, PaxProblem::BadLength));
        assert_eq!(problem(b"-1 a=b\n"), (0, PaxProblem::BadLength));
        assert_eq!(
            problem(b"10 size 12\n"),
            (0, PaxProblem::LengthDoesNotFit(10))
        );
        assert_eq!(
            problem(b"11 size=99\n11 size 12\n"),
            (11, PaxProblem::NoEquals)
        );
        assert_eq!(problem(b"11 size=99\nnolength"), (11, PaxProblem::NoLength));
        assert_eq!(
            pax_records(b"11 size 12\n").unwrap_err().to_string(),
            "PAX record at offset 0 has no '='"
        );
        // Values may hold newlines and '=': the length delimits.
        let recs = pax_records(b"11 a=b=c\nd\n\0\0").unwrap();
        assert_eq!(recs, vec![(&b"a"[..], &b"b=c\nd"[..])]);
    }
}
