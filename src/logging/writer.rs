//! How access-log lines leave the process, off the request path.
//!
//! Each worker thread appends its lines to a buffer of its own; the `keygate-log`
//! thread collects every buffer each `flush_interval_ms` and writes them to the
//! destination (stderr, or a file opened at start and reopened on request, for
//! logrotate). A request never waits on, or pays a system call for, its line.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::throttle::Throttle;

/// Where access-log lines go (`server.access_log.destination`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Destination {
    /// Standard error, with keygate's other lines (the journal under systemd).
    #[default]
    Stderr,
    /// This file: opened for appending (created with mode 0640 if missing), reopened
    /// by [`reopen`].
    File(PathBuf),
}

/// Mode of an access-log file keygate creates (before the umask).
const FILE_MODE: u32 = 0o640;

/// Most bytes of access log a worker thread buffers before lines are dropped (and counted).
const MAX_BUFFERED: usize = 4 << 20;

/// How often, in milliseconds, the writer thread collects the workers' buffers.
static FLUSH_INTERVAL_MS: AtomicU64 = AtomicU64::new(50);

/// Lines dropped because the writer could not keep up or the destination refused them.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Set by [`reopen`]; the writer reopens the file at its next pass.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// The writer thread, to wake when the interval changes or a reopen is asked for.
static WRITER: OnceLock<std::thread::Thread> = OnceLock::new();

type Buffer = Arc<Mutex<Vec<u8>>>;

/// Every worker thread's buffer, registered once per thread; set once the writer runs.
static BUFFERS: OnceLock<Mutex<Vec<Buffer>>> = OnceLock::new();

/// The destination. Held while buffers are written out, so the writer thread, a final
/// [`flush`] and a change of destination never interleave lines.
static SINK: Mutex<Sink> = Mutex::new(Sink::Stderr);

/// A failed write to the file is reported at most once a minute.
static WRITE_FAILED: Throttle = Throttle::new();

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

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Sink {
    /// Write `bytes` (whole lines); on failure count the lines as dropped.
    fn write(&mut self, bytes: &[u8]) {
        let result = match self {
            Sink::Stderr => std::io::stderr().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        };
        if let Err(e) = result {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            DROPPED.fetch_add(lines, Ordering::Relaxed);
            if let Sink::File { path, .. } = self {
                if let Some(more) = WRITE_FAILED.admit_now(Duration::from_secs(60)) {
                    log::warn!(target: "keygate::logging", "cannot write the access log {}: {e}; {lines} lines dropped{}", path.display(), super::throttle::more(more));
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Sink::Stderr = self {
            let _ = std::io::stderr().flush();
        }
    }
}

/// Open `path` for appending, creating it with mode 0640 when missing.
fn open_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Send access-log lines to `destination` from now on, after writing out the lines
/// buffered so far to the previous one.
///
/// # Errors
/// The operating system's error when the file cannot be opened; the destination is
/// then unchanged.
pub fn set_destination(destination: &Destination) -> std::io::Result<()> {
    let new = match destination {
        Destination::Stderr => Sink::Stderr,
        Destination::File(path) => Sink::File {
            path: path.clone(),
            file: open_file(path)?,
        },
    };
    let mut sink = lock_sink();
    drain_into(&mut sink, &mut Vec::new());
    *sink = new;
    Ok(())
}

/// Ask the writer to reopen the access-log file at the same path (after logrotate
/// renamed it); lines buffered until then go to the file that was open. A no-op when
/// the access log goes to stderr.
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
    match WRITER.get() {
        Some(w) => w.unpark(),
        // No writer thread (tests): reopen now.
        None => drain_into(&mut lock_sink(), &mut Vec::new()),
    }
}

fn lock_sink() -> std::sync::MutexGuard<'static, Sink> {
    SINK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reopen the file if asked to: a file that cannot be opened keeps the old handle (the
/// lines go on into the rotated file rather than nowhere) and is reported.
fn reopen_if_asked(sink: &mut Sink) {
    if !REOPEN.swap(false, Ordering::Relaxed) {
        return;
    }
    if let Sink::File { path, file } = sink {
        match open_file(path) {
            Ok(f) => {
                *file = f;
                log::info!(target: "keygate::logging", "access log reopened: {}", path.display());
            }
            Err(e) => {
                log::warn!(target: "keygate::logging", "cannot reopen the access log {}: {e}; still writing to the file open before", path.display());
            }
        }
    }
}

/// Write out every worker's buffered lines (using `out` as scratch), then reopen the
/// file if asked to.
fn drain_into(sink: &mut Sink, out: &mut Vec<u8>) {
    let buffers: Vec<Buffer> = BUFFERS
        .get()
        .and_then(|all| all.lock().ok().map(|all| all.clone()))
        .unwrap_or_default();
    for b in buffers {
        if let Ok(mut b) = b.lock() {
            std::mem::swap(&mut *b, out);
        }
        if !out.is_empty() {
            sink.write(out);
            out.clear();
        }
    }
    reopen_if_asked(sink);
}

/// Write every buffered access-log line before returning.
///
/// The writer thread drains the buffers every `flush_interval_ms`; `main` calls this once the
/// server has stopped (after SIGTERM's grace period or a SIGINT), so no line of a
/// finished request is lost at exit.
pub fn flush() {
    let mut sink = lock_sink();
    drain_into(&mut sink, &mut Vec::new());
    sink.flush();
}

/// Set how often buffered access-log lines are written out (`server.access_log.flush_interval_ms`;
/// at least 1 ms).
pub fn set_flush_interval(interval: Duration) {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    FLUSH_INTERVAL_MS.store(ms, Ordering::Relaxed);
    if let Some(w) = WRITER.get() {
        w.unpark();
    }
}

/// Access-log lines dropped so far because the writer could not keep up or the
/// destination refused a write (exported as `keygate_access_log_dropped_total`).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Start the thread that collects the workers' buffers and writes them out (once).
pub(super) fn start() {
    BUFFERS.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("keygate-log".into())
            .spawn(|| {
                let mut out = Vec::with_capacity(64 * 1024);
                let mut last = Instant::now();
                loop {
                    // Woken early by `set_flush_interval` (a new interval applies at once)
                    // and by `reopen`.
                    let interval = Duration::from_millis(FLUSH_INTERVAL_MS.load(Ordering::Relaxed));
                    match interval.checked_sub(last.elapsed()) {
                        Some(left) if !left.is_zero() && !REOPEN.load(Ordering::Relaxed) => {
                            std::thread::park_timeout(left)
                        }
                        _ => {
                            drain_into(&mut lock_sink(), &mut out);
                            last = Instant::now();
                        }
                    }
                }
            });
        if let Ok(handle) = spawned {
            let _ = WRITER.set(handle.thread().clone());
        }
        Mutex::new(Vec::new())
    });
}

/// Append one formatted line to this thread's buffer (never blocks on I/O), or, before
/// the writer runs, write it at once.
pub(super) fn append(line: &[u8]) {
    if BUFFERS.get().is_none() {
        lock_sink().write(line);
        return;
    }
    MY_BUFFER.with(|b| match b.lock() {
        Ok(mut b) if b.len() + line.len() <= MAX_BUFFERED => b.extend_from_slice(line),
        _ => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_appended_to_and_reopened_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("keygate-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        std::fs::write(&path, "kept\n").unwrap();
        set_destination(&Destination::File(path.clone())).unwrap();
        append(b"one\n");
        flush();
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        append(b"two\n");
        reopen();
        append(b"three\n");
        flush();
        set_destination(&Destination::Stderr).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("access.log.1")).unwrap(),
            "kept\none\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
        assert!(set_destination(&Destination::File(dir.join("missing/access.log"))).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
