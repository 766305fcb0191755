//! Tar header blocks, as the producers in the field write them: POSIX ustar
//! (a name prefix), GNU (base-256 numbers, negative ones too; `ustar  `
//! magic, whose prefix bytes hold other fields) and PAX records. The one
//! parser of them for the tar splitter ([`crate::tarsplit`]), the OCI layer
//! merge ([`crate::oci::merge`]) and the fuzz targets.

use anyhow::{Context, Result, bail};

use crate::show::display_bytes;

/// A tar block: headers are one, content is padded to a whole number.
pub const BLOCK: usize = 512;

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

pub fn numeric_u64(field: &[u8], what: &str) -> Result<u64> {
    parse_numeric(field)
        .and_then(|v| u64::try_from(v).ok())
        .with_context(|| format!("bad {what} field {:?}", display_bytes(field)))
}

pub fn numeric_u32(field: &[u8], what: &str) -> Result<u32> {
    parse_numeric(field)
        .and_then(|v| u32::try_from(v).ok())
        .with_context(|| format!("bad {what} field {:?}", display_bytes(field)))
}

/// The header checksum: the sum of all bytes with the checksum field read
/// as spaces, unsigned or (historically) signed.
pub fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_numeric(&block[148..156]) else {
        return false;
    };
    let signed: i64 = checksum_bytes(block).map(|b| i64::from(b as i8)).sum();
    stored == checksum(block) || stored == signed
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

/// Records of a PAX extended header: `"<len> <key>=<value>\n"`.
pub fn pax_records(data: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .context("PAX record has no length")?;
        let len: usize = Some(&rest[..sp])
            .filter(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|s| s.parse().ok())
            .context("PAX record has a bad length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            bail!("PAX record length {len} does not fit the record");
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("PAX record has no '='")?;
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
        assert!(numeric_u32(&[0x80, 0, 0, 0, 1, 0, 0, 0, 0], "uid").is_err());
        assert!(numeric_u64(&[0xff; 12], "size").is_err());
        assert_eq!(numeric_u32(b"0001750\0", "uid").unwrap(), 1000);
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
        assert!(checksum_ok(&ustar));
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
        assert!(!checksum_ok(&bad));
    }

    #[test]
    fn pax_parsing() {
        let recs = pax_records(b"11 size=99\n25 path=a/long/name/here\n").unwrap();
        assert_eq!(recs[0], (&b"size"[..], &b"99"[..]));
        assert_eq!(recs[1].1, b"a/long/name/here");
        assert!(pax_records(b"99 size=1\n").is_err());
        assert!(pax_records(b"x size=1\n").is_err());
        assert!(pax_records(b"10 size 12\n").is_err());
        assert!(pax_records(b"-1 a=b\n").is_err());
        // Values may hold newlines and '=': the length delimits.
        let recs = pax_records(b"11 a=b=c\nd\n\0\0").unwrap();
        assert_eq!(recs, vec![(&b"a"[..], &b"b=c\nd"[..])]);
    }
}
