//! How changes are written: path quoting (git's C-style quoting), the
//! name-status lines, the JSON objects, and the `diff --git` headers of
//! `--content` patches.
//!
//! Paths are written as raw bytes unless they contain a control character
//! (below 0x20, or 0x7f), `"` or `\`, or are not UTF-8: then, as git does,
//! the whole path is put in double quotes with `\"`, `\\`, `\a \b \t \n \v
//! \f \r` and three-digit octal escapes for other control characters and
//! for bytes that are not UTF-8 (valid UTF-8 characters stay as they are).
//!
//! JSON byte strings (paths, symlink targets, xattr names and values) are
//! strings, lossily decoded when they are not UTF-8; then a sibling field
//! with the suffix `_bytes` holds the exact bytes in standard base64
//! (`path` and `path_bytes`).

use std::borrow::Cow;
use std::io::Write;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{Aspects, Change, Status};
use crate::tree::{FileData, Inode, Kind};

fn needs_quoting(p: &[u8]) -> bool {
    std::str::from_utf8(p).is_err()
        || p.iter()
            .any(|&b| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\')
}

/// `p`, quoted and escaped as git does when it has to be (see the module
/// comment), else as it is.
pub fn quote_path(p: &[u8]) -> Cow<'_, [u8]> {
    if !needs_quoting(p) {
        return Cow::Borrowed(p);
    }
    let mut out = Vec::with_capacity(p.len() + 8);
    out.push(b'"');
    let octal = |out: &mut Vec<u8>, b: u8| {
        out.extend_from_slice(format!("\\{b:03o}").as_bytes());
    };
    for chunk in p.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\x07' => out.extend_from_slice(b"\\a"),
                '\x08' => out.extend_from_slice(b"\\b"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\x0b' => out.extend_from_slice(b"\\v"),
                '\x0c' => out.extend_from_slice(b"\\f"),
                '\r' => out.extend_from_slice(b"\\r"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => octal(&mut out, c as u8),
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        for &b in chunk.invalid() {
            octal(&mut out, b);
        }
    }
    out.push(b'"');
    Cow::Owned(out)
}

/// `prefix` + `p` (without its leading `/`), quoted as one path when
/// needed: `a/usr/bin/x`, `"b/odd\tname"`.
pub fn prefixed(prefix: &str, p: &[u8]) -> Vec<u8> {
    let rel = p.strip_prefix(b"/").unwrap_or(p);
    let mut whole = prefix.as_bytes().to_vec();
    whole.extend_from_slice(rel);
    quote_path(&whole).into_owned()
}

/// One name-status line: `M\t/etc/passwd\n`.
pub fn write_name_status(out: &mut dyn Write, c: &Change) -> std::io::Result<()> {
    out.write_all(&[c.status.letter() as u8, b'\t'])?;
    out.write_all(&quote_path(&c.path))?;
    out.write_all(b"\n")
}

/// Put a byte string into `m` as `key` (lossy) and, when it is not UTF-8,
/// `key_bytes` (base64).
pub fn put_bytes(m: &mut Map<String, Value>, key: &str, b: &[u8]) {
    m.insert(
        key.to_string(),
        Value::String(String::from_utf8_lossy(b).into_owned()),
    );
    if std::str::from_utf8(b).is_err() {
        m.insert(
            format!("{key}_bytes"),
            Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        );
    }
}

/// The JSON name of a file type.
pub fn type_name(k: &Kind) -> &'static str {
    match k {
        Kind::Directory => "directory",
        Kind::Regular(_) => "file",
        Kind::Symlink(_) => "symlink",
        Kind::CharDevice { .. } => "char",
        Kind::BlockDevice { .. } => "block",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
    }
}

/// An inode as JSON: `type`, `mode` (the full `st_mode` in octal, as a
/// string: `"100644"`), `uid`, `gid`, `mtime` (`{sec, nsec}`), `xattrs`
/// (`[{name, value}]`, sorted); `size` for files and symlinks, `object`
/// (fs-verity digest, hex) for files stored as objects, `target` for
/// symlinks, `rdev` for devices.
pub fn inode_json(i: &Inode) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), type_name(&i.kind).into());
    m.insert("mode".into(), format!("{:o}", i.st_mode()).into());
    m.insert("uid".into(), i.stat.uid.into());
    m.insert("gid".into(), i.stat.gid.into());
    m.insert(
        "mtime".into(),
        json!({"sec": i.stat.mtime.sec, "nsec": i.stat.mtime.nsec}),
    );
    match &i.kind {
        Kind::Regular(d) => {
            m.insert("size".into(), d.size().into());
            if let FileData::External {
                digest: Some(id), ..
            } = d
            {
                m.insert("object".into(), id.to_hex().into());
            }
        }
        Kind::Symlink(t) => {
            m.insert("size".into(), (t.len() as u64).into());
            put_bytes(&mut m, "target", t);
        }
        Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => {
            m.insert("rdev".into(), (*rdev).into());
        }
        _ => {}
    }
    let xattrs: Vec<Value> = i
        .xattrs
        .iter()
        .map(|(n, v)| {
            let mut x = Map::new();
            put_bytes(&mut x, "name", n);
            put_bytes(&mut x, "value", v);
            Value::Object(x)
        })
        .collect();
    m.insert("xattrs".into(), Value::Array(xattrs));
    Value::Object(m)
}

/// A change as JSON: `path` (and `path_bytes`), `status` (`A`, `D`, `M`,
/// `T`), `aspects` (names, for `M`), `old` and `new` (inodes or null),
/// and with the `hardlink` aspect `old_links` and `new_links` (the paths
/// naming the inode on each side).
pub fn change_json(c: &Change) -> Value {
    let mut m = Map::new();
    put_bytes(&mut m, "path", &c.path);
    m.insert("status".into(), c.status.letter().to_string().into());
    m.insert(
        "aspects".into(),
        Value::Array(c.aspects.names().into_iter().map(Value::from).collect()),
    );
    m.insert(
        "old".into(),
        c.old.as_deref().map_or(Value::Null, inode_json),
    );
    m.insert(
        "new".into(),
        c.new.as_deref().map_or(Value::Null, inode_json),
    );
    if c.aspects.contains(Aspects::HARDLINK) {
        for (key, links) in [("old_links", &c.old_links), ("new_links", &c.new_links)] {
            let v: Vec<Value> = links
                .iter()
                .map(|p| Value::String(String::from_utf8_lossy(p).into_owned()))
                .collect();
            m.insert(key.into(), Value::Array(v));
        }
    }
    Value::Object(m)
}

/// Streams one JSON document `{"a": A, "b": B, "changes": [...]}`, a
/// change at a time (memory does not grow with the diff).
pub struct JsonWriter {
    first: bool,
}

impl JsonWriter {
    pub fn start(out: &mut dyn Write, a: &str, b: &str) -> std::io::Result<JsonWriter> {
        write!(
            out,
            "{{\"a\":{},\"b\":{},\"changes\":[",
            Value::from(a),
            Value::from(b)
        )?;
        Ok(JsonWriter { first: true })
    }

    pub fn change(&mut self, out: &mut dyn Write, c: &Change) -> std::io::Result<()> {
        if !self.first {
            out.write_all(b",")?;
        }
        self.first = false;
        out.write_all(b"\n")?;
        serde_json::to_writer(&mut *out, &change_json(c))?;
        Ok(())
    }

    pub fn finish(self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(b"\n]}\n")
    }
}

/// The `diff --git` header of a content patch, with git's extended lines
/// for new and deleted files and mode changes, and the `---`/`+++` names
/// (`/dev/null` for a missing side). `old`/`new`: the regular-file sides
/// taking part.
pub fn write_patch_header(
    out: &mut dyn Write,
    c: &Change,
    old: Option<&Inode>,
    new: Option<&Inode>,
) -> std::io::Result<()> {
    out.write_all(b"diff --git ")?;
    out.write_all(&prefixed("a/", &c.path))?;
    out.write_all(b" ")?;
    out.write_all(&prefixed("b/", &c.path))?;
    out.write_all(b"\n")?;
    match (old, new) {
        (None, Some(n)) => writeln!(out, "new file mode {:o}", n.st_mode())?,
        (Some(o), None) => writeln!(out, "deleted file mode {:o}", o.st_mode())?,
        (Some(o), Some(n)) if o.st_mode() != n.st_mode() => {
            writeln!(out, "old mode {:o}", o.st_mode())?;
            writeln!(out, "new mode {:o}", n.st_mode())?;
        }
        _ => {}
    }
    Ok(())
}

/// The `--- a/P` and `+++ b/P` lines (`/dev/null` for a missing side).
pub fn write_file_names(
    out: &mut dyn Write,
    c: &Change,
    old: bool,
    new: bool,
) -> std::io::Result<()> {
    out.write_all(b"--- ")?;
    if old {
        out.write_all(&prefixed("a/", &c.path))?;
    } else {
        out.write_all(b"/dev/null")?;
    }
    out.write_all(b"\n+++ ")?;
    if new {
        out.write_all(&prefixed("b/", &c.path))?;
    } else {
        out.write_all(b"/dev/null")?;
    }
    out.write_all(b"\n")
}

/// `Binary files a/P and b/P differ` (or `/dev/null` for a missing side).
pub fn write_binary(
    out: &mut dyn Write,
    c: &Change,
    old: bool,
    new: bool,
    why: &str,
) -> std::io::Result<()> {
    let name = |present: bool, prefix: &str| {
        if present {
            prefixed(prefix, &c.path)
        } else {
            b"/dev/null".to_vec()
        }
    };
    out.write_all(why.as_bytes())?;
    out.write_all(b" ")?;
    out.write_all(&name(old, "a/"))?;
    out.write_all(b" and ")?;
    out.write_all(&name(new, "b/"))?;
    out.write_all(b" differ\n")
}

/// Whether a change has a content patch: a regular file added, deleted,
/// content-modified, or on one side of a type change.
pub fn has_patch(c: &Change) -> bool {
    let reg = |i: &Option<std::sync::Arc<Inode>>| {
        i.as_deref()
            .is_some_and(|i| matches!(i.kind, Kind::Regular(_)))
    };
    match c.status {
        Status::Added | Status::Deleted | Status::TypeChanged => reg(&c.old) || reg(&c.new),
        Status::Modified => c.aspects.contains(Aspects::CONTENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_git() {
        assert_eq!(&*quote_path(b"/usr/bin/ls"), b"/usr/bin/ls");
        assert_eq!(
            &*quote_path("/caf\u{e9}".as_bytes()),
            "/caf\u{e9}".as_bytes()
        );
        assert_eq!(&*quote_path(b"/a\tb"), b"\"/a\\tb\"");
        assert_eq!(&*quote_path(b"/new\nline"), b"\"/new\\nline\"");
        assert_eq!(&*quote_path(b"/back\\slash"), b"\"/back\\\\slash\"");
        assert_eq!(&*quote_path(b"/q\"uote"), b"\"/q\\\"uote\"");
        assert_eq!(&*quote_path(b"/bad\xff"), b"\"/bad\\377\"");
        assert_eq!(&*quote_path(b"/\x01\x7f"), b"\"/\\001\\177\"");
        assert_eq!(prefixed("a/", b"/x\ty"), b"\"a/x\\ty\"");
        assert_eq!(prefixed("b/", b"/etc/x"), b"b/etc/x");
    }

    #[test]
    fn json_bytes() {
        let mut m = Map::new();
        put_bytes(&mut m, "path", b"/ok");
        assert!(!m.contains_key("path_bytes"));
        put_bytes(&mut m, "target", b"\xff");
        assert_eq!(m["target_bytes"], "/w==");
        assert_eq!(m["target"], "\u{fffd}");
    }
}
