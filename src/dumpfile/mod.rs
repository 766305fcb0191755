//! composefs-dump(5): the text form of a composefs tree, both directions.
//!
//! One line per name, eleven space-separated fixed fields and then the
//! extended attributes:
//!
//! ```text
//! PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [KEY=VALUE]...
//! ```
//!
//! Rules (taken from the C tools: `tools/mkcomposefs.c` `tree_from_dump_line`
//! and `unescape_string` for reading, `tools/composefs-info.c` `dump_node` and
//! `print_escaped` for writing):
//!
//! - Escapes: `\\`, `\n`, `\r`, `\t` and `\xHH`. The writer escapes `\`,
//!   newline, CR and tab with the short forms and every other byte outside
//!   `0x21..=0x7e` (space included) as `\xHH` (lowercase hex); `=` is escaped
//!   only inside xattr names and values.
//! - `-` alone means "not set" in PAYLOAD, CONTENT and DIGEST; a payload or
//!   content that *is* a single `-` is written `\x2d`. Paths and xattrs are
//!   never optional, so `-` is literal there.
//! - MODE is octal `st_mode`; a leading `@` marks a hardlink, whose PAYLOAD is
//!   the path of another name of the same inode (all its other fields are
//!   ignored when reading). Hardlinks are resolved after the whole file is
//!   read, so the target may come later; chains are followed.
//! - MTIME is `SEC.NSEC` (not a decimal fraction: `1.1` is one second and one
//!   nanosecond).
//! - PAYLOAD is a symlink's target or a regular file's backing path
//!   (`trusted.overlay.redirect` without the leading `/`); CONTENT is a small
//!   file's inline bytes (its length must equal SIZE); DIGEST is the
//!   fs-verity digest of a regular file's content (64 hex digits for sha256,
//!   128 for sha512).
//!
//! The writer produces what `composefs-info dump` prints for the image the
//! C `mkcomposefs` would build from the same tree (see [`write_with`] for the
//! details and the knobs).
//!
//! The work is split by job: `escape` (the field escaping both ways),
//! `fields` (reading one field: numbers, times, digests, paths, xattrs),
//! `parse` (lines into a tree) and `links` (its hardlinks, resolved at the
//! end), `write` (a tree into lines), with `dir_size` and `xattr_order`
//! (what the C writer does to an image that its dump shows).

mod dir_size;
mod escape;
mod fields;
mod links;
mod parse;
mod write;
mod xattr_order;

pub use dir_size::erofs_dir_size;
pub use escape::{Escape, escape, escape_into, unescape};
pub use parse::{ParseOptions, parse, parse_reader, parse_with};
pub use write::{DirSize, WriteOptions, write, write_with};
pub use xattr_order::XattrOrder;

/// The tree's limits, which the C parser has too.
pub use crate::tree::{MAX_SYMLINK_TARGET, MAX_XATTR_NAME, MAX_XATTR_VALUE};
/// Largest inline CONTENT the C parser takes (`LCFS_INLINE_CONTENT_MAX`).
pub const MAX_INLINE_CONTENT: usize = 5000;
