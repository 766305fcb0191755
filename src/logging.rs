//! Log lines, through `tracing`: one subscriber for the command and the
//! FUSE daemon it may become, writing plain lines to standard error
//! (`composefs: warning: …`). Standard error is the terminal for a command,
//! the `--log` file for a detached daemon (it is put on descriptor 2), the
//! journal under systemd (`JOURNAL_STREAM`): plain lines suit all three.
//!
//! Levels: errors and warnings by default (a command that works prints
//! nothing here), `info` with `-v` (what is fetched, from where, what is
//! reused, what a daemon serves), `debug` with `-vv` (each object, each
//! request), `trace` with `-vvv`; `-q` keeps errors only. `RUST_LOG`, when
//! set, replaces all of that (`RUST_LOG=composefs=debug`, `RUST_LOG=info`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How much to say, from the command line's `-q` / `-v` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Info,
    Debug,
    Trace,
}

impl Verbosity {
    /// From `-q` and the number of `-v`.
    pub fn from_flags(quiet: bool, verbose: u8) -> Verbosity {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (_, 0) => Verbosity::Normal,
            (_, 1) => Verbosity::Info,
            (_, 2) => Verbosity::Debug,
            _ => Verbosity::Trace,
        }
    }

    /// The filter: this crate at the chosen level, libraries at warnings
    /// (their debug lines are not ours to promise) unless tracing all.
    fn directives(self) -> &'static str {
        match self {
            Verbosity::Quiet => "error",
            Verbosity::Normal => "warn",
            Verbosity::Info => "warn,composefs=info",
            Verbosity::Debug => "warn,composefs=debug",
            Verbosity::Trace => "trace",
        }
    }
}

static TIMESTAMPS: AtomicBool = AtomicBool::new(false);

/// Start each line with its UTC time (a daemon's log file wants it; a
/// terminal and the journal do not).
pub fn set_timestamps(on: bool) {
    TIMESTAMPS.store(on, Ordering::Relaxed);
}

/// Install the subscriber for this process. A `RUST_LOG` that does not
/// parse is said once and the flags' level is used instead.
pub fn init(v: Verbosity) {
    let mut bad_env = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => match EnvFilter::try_new(&s) {
            Ok(f) => f,
            Err(e) => {
                bad_env = Some(format!("RUST_LOG={s:?} ignored: {e}"));
                EnvFilter::new(v.directives())
            }
        },
        _ => EnvFilter::new(v.directives()),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Lines)
        .try_init()
        .is_ok();
    if let (true, Some(msg)) = (installed, bad_env) {
        tracing::warn!("{msg}");
    }
}

/// `[TIME ]composefs: LEVEL: SPAN{fields}: …: message key=value`.
struct Lines;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if TIMESTAMPS.load(Ordering::Relaxed) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let (y, mo, d, h, mi, s) = crate::show::utc_from_unix(now.as_secs() as i64);
            write!(
                w,
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z ",
                now.subsec_millis()
            )?;
        }
        write!(w, "composefs: {}: ", level_word(*event.metadata().level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                match ext.get::<FormattedFields<N>>() {
                    Some(f) if !f.is_empty() => write!(w, "{}{{{f}}}: ", span.name())?,
                    _ => write!(w, "{}: ", span.name())?,
                }
            }
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

fn level_word(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_levels() {
        assert_eq!(Verbosity::from_flags(true, 2), Verbosity::Quiet);
        assert_eq!(Verbosity::from_flags(false, 0), Verbosity::Normal);
        assert_eq!(Verbosity::from_flags(false, 1), Verbosity::Info);
        assert_eq!(Verbosity::from_flags(false, 2), Verbosity::Debug);
        assert_eq!(Verbosity::from_flags(false, 9), Verbosity::Trace);
        for v in [
            Verbosity::Quiet,
            Verbosity::Normal,
            Verbosity::Info,
            Verbosity::Debug,
            Verbosity::Trace,
        ] {
            EnvFilter::try_new(v.directives()).expect("directives parse");
        }
    }
}
