//! Logging: a small `log` backend that can never leak credentials, and the access log.
//!
//! keygate's own records never contain a key, a digest or the secret: they name keys
//! by their configured id only. Records from outside keygate (Pingora's) are let
//! through at `error`, `warn` and `info` only — at `debug`/`trace` Pingora prints
//! request headers, which carry keys and the shared secret — and Pingora's `info`
//! lifecycle chatter is shown as `debug`. Every line goes to stderr (the journal
//! under systemd), except the access log, which can go to a file.
//!
//! - `filter`: `KEYGATE_LOG` directives (env_logger's syntax), the cap, the re-levelling;
//! - `access`: the access-log record and its text and JSON lines;
//! - `writer`: per-thread buffers, the writer thread, the destination and its reopening;
//! - `throttle`: rate-limited warnings.

mod access;
mod filter;
mod throttle;
mod writer;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, Log, Metadata, Record};

use crate::timestamp;

pub use access::{escape_for_log, format_line, json_string, AccessRecord, Format, ACCESS_TARGET};
pub use filter::{is_own, Filter, DEFAULT_DIRECTIVES};
pub use throttle::{more, Throttle};
pub use writer::{dropped_lines, flush, reopen, set_destination, set_flush_interval, Destination};

/// The target of keygate's lines about logging itself (bad directives, reopening).
pub const LOGGING_TARGET: &str = "keygate::logging";

struct Logger {
    filter: Filter,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.filter.shown_as(m.target(), m.level()).is_some()
    }

    fn log(&self, r: &Record<'_>) {
        if let Some(level) = self.filter.shown_as(r.target(), r.level()) {
            emit(level, r.target(), |line| {
                let _ = write!(line, "{}", r.args());
            });
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// Whether access-log lines are written (decided once, by the directives).
static ACCESS_ENABLED: AtomicBool = AtomicBool::new(false);

/// The access log's [`Format`]: 0 text, 1 JSON.
static ACCESS_FORMAT: AtomicU8 = AtomicU8::new(0);

/// Install the logger and start the access-log writer. The directives come from
/// `KEYGATE_LOG`, else `RUST_LOG`, else [`DEFAULT_DIRECTIVES`]; each invalid one is
/// reported in one warning line (and left out).
pub fn init() {
    let spec = std::env::var("KEYGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let (filter, problems) = Filter::parse(spec.as_deref());
    let max = filter.max_level();
    ACCESS_ENABLED.store(
        filter.shown_as(ACCESS_TARGET, Level::Info).is_some(),
        Ordering::Relaxed,
    );
    if log::set_boxed_logger(Box::new(Logger { filter })).is_ok() {
        log::set_max_level(max);
    }
    if !problems.is_empty() {
        // Whatever the directives say: they are what is wrong.
        let source = if std::env::var_os("KEYGATE_LOG").is_some() {
            "KEYGATE_LOG"
        } else {
            "RUST_LOG"
        };
        emit(Level::Warn, LOGGING_TARGET, |line| {
            let _ = write!(line, "{source}: {}", problems.join("; "));
        });
    }
    writer::start();
}

/// Whether access-log lines are written: the directives can turn the access log off
/// (`keygate::access=off`).
pub fn access_enabled() -> bool {
    ACCESS_ENABLED.load(Ordering::Relaxed)
}

/// Write access-log lines in `format` from now on (`server.access_log.format`).
pub fn set_format(format: Format) {
    ACCESS_FORMAT.store(
        match format {
            Format::Text => 0,
            Format::Json => 1,
        },
        Ordering::Relaxed,
    );
}

fn format() -> Format {
    match ACCESS_FORMAT.load(Ordering::Relaxed) {
        1 => Format::Json,
        _ => Format::Text,
    }
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    static STAMP: RefCell<(i64, String)> = RefCell::new((0, String::with_capacity(24)));
}

/// Append the current time, `2026-11-27T20:30:39.287Z` (UTC, milliseconds).
fn write_timestamp(out: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    // The date and time change once a second: format them once a second per thread.
    STAMP.with(|cell| {
        let mut stamp = cell.borrow_mut();
        if stamp.0 != secs || stamp.1.is_empty() {
            stamp.1.clear();
            timestamp::format_rfc3339_millis(secs, 0, &mut stamp.1);
            stamp.1.truncate(19);
            stamp.0 = secs;
        }
        out.push_str(&stamp.1);
    });
    let ms = now.subsec_millis();
    out.push('.');
    out.push(char::from(b'0' + (ms / 100) as u8));
    out.push(char::from(b'0' + (ms / 10 % 10) as u8));
    out.push(char::from(b'0' + (ms % 10) as u8));
    out.push('Z');
}

/// Format one line with `f` into a reused per-thread buffer and write it to stderr at once.
fn emit(level: Level, target: &str, f: impl FnOnce(&mut String)) {
    LINE.with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            return;
        };
        line.clear();
        write_timestamp(&mut line);
        let _ = write!(line, " {level:<5} {target}: ");
        f(&mut line);
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

/// Write the access-log line for one finished request (unless the directives turned
/// the access log off), in the configured [`Format`], to the configured
/// [`Destination`], through the calling thread's buffer.
///
/// Fields: method, path (no query string; bytes outside visible ASCII, `"` and `%`
/// percent-encoded), status, route, consumer, key id, result code, duration,
/// request id, client address and error. Never the key or the secret.
pub fn access(r: &AccessRecord<'_>) {
    if !ACCESS_ENABLED.load(Ordering::Relaxed) {
        return;
    }
    LINE.with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            return;
        };
        line.clear();
        format_line(format(), r, &mut line);
        writer::append(line.as_bytes());
    });
}
