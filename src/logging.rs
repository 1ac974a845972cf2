//! Logging: a small `log` backend that can never leak credentials, and the access log.
//!
//! At `debug`/`trace` level Pingora logs request headers and raw header buffers,
//! which carry client keys and the shared secret. So records from any target
//! outside keygate are capped at `info`, whatever `KEYGATE_LOG` says. keygate's
//! own records never contain a key, a digest or the secret: they name keys by
//! their configured id only.
//!
//! `KEYGATE_LOG` (or `RUST_LOG`) sets keygate's level: `error`, `warn`, `info`
//! (default), `debug`, `trace` or `off`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::timestamp;

/// The access log's target, so it can be filtered like any other.
pub const ACCESS_TARGET: &str = "keygate::access";

/// Highest level let through for targets outside keygate.
const FOREIGN_MAX: Level = Level::Info;

struct Logger {
    own: LevelFilter,
}

impl Logger {
    fn allowed(&self, m: &Metadata<'_>) -> bool {
        let own = m.target().starts_with("keygate");
        m.level() <= self.own && (own || m.level() <= FOREIGN_MAX)
    }
}

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

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    static STAMP: RefCell<(i64, String)> = RefCell::new((0, String::with_capacity(24)));
}

/// Most bytes of access log a worker thread buffers before lines are dropped (and counted).
const MAX_BUFFERED: usize = 4 << 20;
/// How often, in milliseconds, the writer thread collects the workers' buffers.
static FLUSH_INTERVAL_MS: AtomicU64 = AtomicU64::new(50);

/// Set how often buffered access-log lines are written out (`server.access_log.flush_interval_ms`;
/// at least 1 ms).
pub fn set_flush_interval(interval: std::time::Duration) {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    FLUSH_INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// Lines dropped because the writer could not keep up (stderr blocked).
static ACCESS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access-log lines dropped so far because the writer could not keep up (exported as
/// `keygate_access_log_dropped_total` by the telemetry listener).
pub fn dropped_lines() -> u64 {
    ACCESS_DROPPED.load(Ordering::Relaxed)
}

type Buffer = Arc<Mutex<Vec<u8>>>;

/// Every worker thread's access-log buffer, registered once per thread.
static BUFFERS: OnceLock<Mutex<Vec<Buffer>>> = OnceLock::new();
/// Held while buffers are written out, so the writer thread and a final [`flush`]
/// never interleave one buffer's lines.
static WRITING: Mutex<()> = Mutex::new(());

thread_local! {
    static MY_BUFFER: Buffer = {
        let b: Buffer = Arc::new(Mutex::new(Vec::with_capacity(64 * 1024)));
        if let Some(all) = BUFFERS.get() {
            if let Ok(mut all) = all.lock() {
                all.push(b.clone());
            }
        }
        b
    };
}

/// Write out every worker's buffered access-log lines now.
fn drain(out: &mut Vec<u8>) {
    let _writing = WRITING.lock();
    let buffers: Vec<Buffer> = BUFFERS
        .get()
        .and_then(|all| all.lock().ok().map(|all| all.clone()))
        .unwrap_or_default();
    for b in buffers {
        if let Ok(mut b) = b.lock() {
            std::mem::swap(&mut *b, out);
        }
        if !out.is_empty() {
            let _ = std::io::stderr().write_all(out);
            out.clear();
        }
    }
}

/// Write every buffered access-log line to stderr before returning.
///
/// The writer thread drains the buffers every `flush_interval_ms`; `main` calls this once the
/// server has stopped (after SIGTERM's grace period or a SIGINT), so no line of a
/// finished request is lost at exit.
pub fn flush() {
    drain(&mut Vec::new());
    let _ = std::io::stderr().flush();
}

/// Start the thread that collects the workers' access-log buffers and writes them out,
/// so a busy gateway pays neither a system call nor a thread wake-up per request.
fn start_access_writer() -> Mutex<Vec<Buffer>> {
    let spawned = std::thread::Builder::new()
        .name("keygate-log".into())
        .spawn(|| {
            let mut out = Vec::with_capacity(64 * 1024);
            let mut last = std::time::Instant::now();
            loop {
                // Woken early by `set_flush_interval`, so a new interval applies at once.
                let interval =
                    std::time::Duration::from_millis(FLUSH_INTERVAL_MS.load(Ordering::Relaxed));
                match interval.checked_sub(last.elapsed()) {
                    Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                    _ => {
                        drain(&mut out);
                        last = std::time::Instant::now();
                    }
                }
            }
        });
    if let Ok(handle) = spawned {
        let _ = WRITER.set(handle.thread().clone());
    }
    Mutex::new(Vec::new())
}

/// The writer thread, to wake when the interval changes.
static WRITER: OnceLock<std::thread::Thread> = OnceLock::new();

/// Append one access-log line to this thread's buffer; never blocks on I/O.
fn emit_access(f: impl FnOnce(&mut String)) {
    if BUFFERS.get().is_none() {
        return emit(Level::Info, ACCESS_TARGET, f);
    }
    LINE.with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            return;
        };
        line.clear();
        write_timestamp(&mut line);
        line.push_str(" INFO  keygate::access: ");
        f(&mut line);
        line.push('\n');
        MY_BUFFER.with(|b| match b.lock() {
            Ok(mut b) if b.len() + line.len() <= MAX_BUFFERED => {
                b.extend_from_slice(line.as_bytes())
            }
            _ => {
                ACCESS_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        });
    });
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

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.allowed(m)
    }

    fn log(&self, r: &Record<'_>) {
        if self.allowed(r.metadata()) {
            emit(r.level(), r.target(), |line| {
                let _ = write!(line, "{}", r.args());
            });
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// Parse a level name; `None` when unknown.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    s.trim().parse().ok()
}

/// Install the logger. The level comes from `KEYGATE_LOG`, else `RUST_LOG`, else `info`.
pub fn init() {
    let level = std::env::var("KEYGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| parse_level(&s))
        .unwrap_or(LevelFilter::Info);
    if log::set_boxed_logger(Box::new(Logger { own: level })).is_ok() {
        log::set_max_level(level);
    }
    BUFFERS.get_or_init(start_access_writer);
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Write `bytes` for a log line: visible ASCII as is (except `"` and `%`), every
/// other byte as `%XX`, so raw UTF-8 shows as its percent-encoded bytes and a log
/// reader can never mistake it for an escape that was let through.
pub fn escape_for_log(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
        }
    }
}

/// One access-log record: plain values, built by the proxy for each finished request.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The request method (`-` when no request head was read).
    pub method: &'a str,
    /// The request path as received, without the query string.
    pub path: &'a [u8],
    /// The status sent (0 when none).
    pub status: u16,
    /// The route name, or `-`.
    pub route: &'a str,
    /// The consumer id, or `-`.
    pub consumer: &'a str,
    /// The key id, or `-`.
    pub key_id: &'a str,
    /// keygate's problem code, or `-`.
    pub code: &'a str,
    /// Time from the start of the request to its end.
    pub duration: std::time::Duration,
    /// The request id.
    pub request_id: &'a [u8],
    /// The client address (after trusted proxies).
    pub client: Option<std::net::IpAddr>,
    /// The error kind that ended the request, if any.
    pub error: Option<&'a str>,
    /// The key's `expires_at` (Unix seconds) when it was inside its warning window.
    pub key_expires_at: Option<i64>,
}

/// Write the access-log line for one finished request.
///
/// Fields: method, path (no query string; bytes outside visible ASCII, `"` and `%`
/// percent-encoded), status, route, consumer, key id, result code, duration,
/// request id, client address, and `key_expires_at` for a key inside its expiry
/// warning window. Never the key or the secret.
pub fn access(r: &AccessRecord<'_>) {
    if !log::log_enabled!(target: ACCESS_TARGET, Level::Info) {
        return;
    }
    emit_access(|line| {
        let _ = write!(line, "method={} path=", r.method);
        escape_for_log(r.path, line);
        let us = r.duration.as_micros();
        let _ = write!(
            line,
            " status={} route={} consumer={} key_id={} code={} duration_ms={}.{:03} request_id=",
            r.status,
            r.route,
            r.consumer,
            r.key_id,
            r.code,
            us / 1000,
            us % 1000
        );
        escape_for_log(r.request_id, line);
        match r.client {
            Some(ip) => {
                let _ = write!(line, " client={ip}");
            }
            None => line.push_str(" client=-"),
        }
        if let Some(e) = r.error {
            let _ = write!(line, " error={e:?}");
        }
        if let Some(t) = r.key_expires_at {
            line.push_str(" key_expires_at=");
            line.push_str(&timestamp::format_rfc3339(t));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_targets_are_capped_at_info() {
        let l = Logger {
            own: LevelFilter::Trace,
        };
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        assert!(l.allowed(&meta("keygate::reload", Level::Trace)));
        assert!(!l.allowed(&meta(
            "pingora_core::protocols::http::v1::server",
            Level::Debug
        )));
        assert!(!l.allowed(&meta("pingora_proxy", Level::Trace)));
        assert!(l.allowed(&meta("pingora_proxy", Level::Info)));
        let quiet = Logger {
            own: LevelFilter::Warn,
        };
        assert!(!quiet.allowed(&meta("keygate::access", Level::Info)));
    }

    #[test]
    fn log_escaping_shows_bytes() {
        let mut s = String::new();
        escape_for_log("/public/\u{12f}\"%".as_bytes(), &mut s);
        assert_eq!(s, "/public/%C4%AF%22%25");
    }

    #[test]
    fn levels_parse() {
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("OFF"), Some(LevelFilter::Off));
        assert_eq!(parse_level("loud"), None);
    }
}
