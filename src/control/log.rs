//! The director's log: one line per event on stderr, with a level, for a
//! person, journald or a collector. Nothing on the per-packet path logs: a
//! dropped frame is a counter ([`crate::verdict::DropReason`]), never a line.
//!
//! Code logs with `tracing`'s macros (`info!`, `warn!`, `error!`), the
//! message in today's words and anything a collector may want to select on
//! as a field; [`init`] installs the process's one subscriber:
//!
//! - [`Format::Plain`] (the default): `TIMESTAMP LEVEL xvs: MESSAGE
//!   [key=value ...]`, no colours. Under systemd (stderr is the stream
//!   `$JOURNAL_STREAM` names) the timestamp, which journald adds, gives way
//!   to the sd-daemon priority prefix (`<4>xvs: ...`), which journald turns
//!   into the entry's priority and strips: `journalctl -p warning` works.
//! - [`Format::Json`]: one JSON object a line, `timestamp`, `level`,
//!   `message`, the event's fields and `target` at the top level.
//!
//! The filter is `tracing_subscriber`'s targets syntax: a level (`error`,
//! `warn`, `info`, `debug`, `trace`, `off`) or `TARGET=LEVEL,...`, e.g.
//! `warn,xvs::director=debug`; from `--log-level`, else `$XVS_LOG`, else
//! `$RUST_LOG`, else `info`.

use std::fmt;
use std::io;
use std::str::FromStr;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// How each event is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Text lines for a person and journald.
    #[default]
    Plain,
    /// One JSON object a line, for log collectors.
    Json,
}

/// The filter when neither `--log-level` nor the environment names one.
pub const DEFAULT_LEVEL: &str = "info";

/// Installs the process's subscriber, writing to stderr. `level` is
/// `--log-level`'s value; without it `$XVS_LOG`, then `$RUST_LOG`.
pub fn init(format: Format, level: Option<&str>) -> Result<(), String> {
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let (origin, spec) = match level {
        Some(l) => ("--log-level".to_string(), l.to_string()),
        None => match env("XVS_LOG")
            .map(|v| ("XVS_LOG", v))
            .or_else(|| env("RUST_LOG").map(|v| ("RUST_LOG", v)))
        {
            Some((name, v)) => (format!("${name}"), v),
            None => ("the default".to_string(), DEFAULT_LEVEL.to_string()),
        },
    };
    let filter = filter(&spec).map_err(|e| format!("{origin} {spec:?}: {e}"))?;
    let style = Style {
        journal: stderr_is_journal(),
    };
    tracing::subscriber::set_global_default(subscriber(format, filter, style, io::stderr))
        .map_err(|e| format!("cannot install the log: {e}"))
}

/// Parses a filter: a level or `TARGET=LEVEL,...`.
pub fn filter(spec: &str) -> Result<Targets, String> {
    let hint = "give a level: error, warn, info, debug, trace or off; \
                or TARGET=LEVEL,..., e.g. warn,xvs::director=debug";
    // `Targets` reads a bare word as a target at every level: a mistyped
    // level ("warnn") would log nothing and say nothing.
    if let Some(word) = spec
        .split(',')
        .map(str::trim)
        .find(|w| !w.is_empty() && !w.contains('=') && LevelFilter::from_str(w).is_err())
    {
        return Err(format!("{word:?} is not a level ({hint})"));
    }
    Targets::from_str(spec).map_err(|e| format!("{e} ({hint})"))
}

/// The subscriber [`init`] installs, over any writer (tests pass a buffer).
fn subscriber<W>(
    format: Format,
    filter: Targets,
    style: Style,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match format {
        Format::Plain => Box::new(registry.with(layer.event_format(style))),
        Format::Json => Box::new(
            registry.with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ),
        ),
    }
}

/// True when stderr is the journald stream systemd connected: the
/// `$JOURNAL_STREAM` device and inode are stderr's (a child that inherited
/// the variable but writes elsewhere is not).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(io::stderr().as_fd()) else {
        return false;
    };
    stream == format!("{}:{}", st.st_dev, st.st_ino)
}

/// The plain format: a line as the director always wrote it (`xvs: ...`),
/// led by a timestamp and the level, or by journald's priority prefix.
#[derive(Clone, Copy, Debug, Default)]
struct Style {
    journal: bool,
}

impl<S, N> FormatEvent<S, N> for Style
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
        let level = *event.metadata().level();
        if self.journal {
            write!(w, "<{}>", syslog_priority(level))?;
        } else {
            SystemTime.format_time(&mut w)?;
            write!(w, " {level:>5} ")?;
        }
        w.write_str("xvs: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// sd-daemon(3)'s prefix for a level: err, warning, info, debug.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    /// What the director's events print under `format`, one line each.
    fn logged(format: Format, style: Style, spec: &str) -> Vec<String> {
        let buf = Buffer::default();
        let sub = subscriber(format, filter(spec).unwrap(), style, buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!("directing on eth0 (native)");
            tracing::warn!(iface = "eth1", id = 7, "replacing the XDP program");
            tracing::debug!("a detail");
            tracing::error!("cannot handle signals: \"quoted\"\nsecond line");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn plain_lines_keep_the_messages_text_after_the_level() {
        let lines = logged(Format::Plain, Style::default(), "info");
        assert_eq!(lines.len(), 4, "{lines:?}"); // the newline splits one event
        assert!(
            lines[0].ends_with("  INFO xvs: directing on eth0 (native)"),
            "{lines:?}"
        );
        // A timestamp leads: 2026-12-01T14:20:32.123456Z.
        assert!(lines[0].as_bytes()[4] == b'-' && lines[0].contains('T'));
        assert!(
            lines[1].ends_with("  WARN xvs: replacing the XDP program iface=\"eth1\" id=7"),
            "{lines:?}"
        );
        assert!(lines[2].contains("ERROR xvs: cannot handle signals"));
        assert!(!lines.iter().any(|l| l.contains('\x1b')), "no colours");
    }

    #[test]
    fn under_journald_a_priority_prefix_replaces_the_timestamp() {
        let lines = logged(Format::Plain, Style { journal: true }, "info");
        assert_eq!(lines[0], "<6>xvs: directing on eth0 (native)");
        assert_eq!(
            lines[1],
            "<4>xvs: replacing the XDP program iface=\"eth1\" id=7"
        );
        assert!(lines[2].starts_with("<3>xvs: cannot handle signals"));
    }

    #[test]
    fn json_is_one_object_a_line_with_level_message_and_fields() {
        let lines = logged(Format::Json, Style::default(), "info");
        assert_eq!(
            lines.len(),
            3,
            "a newline in a message stays escaped: {lines:?}"
        );
        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events[0]["level"], "INFO");
        assert_eq!(events[0]["message"], "directing on eth0 (native)");
        assert!(events[0]["timestamp"].is_string());
        assert_eq!(events[1]["level"], "WARN");
        assert_eq!(events[1]["message"], "replacing the XDP program");
        assert_eq!(events[1]["iface"], "eth1");
        assert_eq!(events[1]["id"], 7);
        assert_eq!(events[2]["level"], "ERROR");
        assert_eq!(
            events[2]["message"],
            "cannot handle signals: \"quoted\"\nsecond line"
        );
    }

    #[test]
    fn the_filter_takes_levels_and_targets() {
        assert_eq!(logged(Format::Plain, Style::default(), "warn").len(), 3);
        let all = logged(Format::Plain, Style::default(), "debug");
        assert!(
            all.iter().any(|l| l.ends_with("DEBUG xvs: a detail")),
            "{all:?}"
        );
        // Events here have this module's target; another target's filter
        // leaves them out.
        assert!(logged(Format::Plain, Style::default(), "xvs::director=debug").is_empty());
        assert!(filter("loud").is_err());
        assert!(filter("warn,xvs::director=debug").is_ok());
    }
}
