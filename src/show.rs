//! How things appear in messages and listings: byte counts, byte strings
//! (names, paths, values; lossy UTF-8, control characters escaped), long
//! paths shortened, and UTC calendar times.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Human-readable byte count (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Show a byte string for messages: UTF-8 lossily, with control characters escaped.
pub fn display_bytes(b: &[u8]) -> String {
    OsStr::from_bytes(b)
        .to_string_lossy()
        .escape_debug()
        .to_string()
}

/// Bytes kept at each end of a path shortened by [`short_path`].
pub const SHORT_PATH_KEEP: usize = 100;

/// A path for a message, as [`display_bytes`] shows it when it is short;
/// otherwise its first and last [`SHORT_PATH_KEEP`] bytes around `…`, with
/// its length and number of components, so that an error about a file
/// 10,000 directories deep is one line, not 20 KB.
pub fn short_path(p: &[u8]) -> String {
    if p.len() <= 2 * SHORT_PATH_KEEP + 32 {
        return display_bytes(p);
    }
    // Cut on UTF-8 character boundaries (never inside a sequence).
    let mut head = SHORT_PATH_KEEP;
    while head > 0 && p[head] & 0xc0 == 0x80 {
        head -= 1;
    }
    let mut tail = p.len() - SHORT_PATH_KEEP;
    while tail < p.len() && p[tail] & 0xc0 == 0x80 {
        tail += 1;
    }
    let components = p.split(|&c| c == b'/').filter(|c| !c.is_empty()).count();
    format!(
        "{}…{} ({} bytes, {components} components)",
        display_bytes(&p[..head]),
        display_bytes(&p[tail..]),
        p.len()
    )
}

/// A filesystem path for a message, as [`short_path`] shows its bytes.
pub fn path(p: &std::path::Path) -> String {
    short_path(p.as_os_str().as_bytes())
}

/// UTC calendar date and time of `secs` since the epoch: (year, month,
/// day, hour, minute, second). Days-from-civil arithmetic, no time zone
/// database.
pub fn utc_from_unix(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}
