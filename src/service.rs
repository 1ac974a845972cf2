//! Running as a service: tell the service manager the truth.
//!
//! - Listeners are checked before start ([`probe_listeners`]): an address in
//!   use, not permitted or not local is a start-up failure named in one line,
//!   within a second, before anything claims readiness (Pingora itself would
//!   retry a busy address for 30 s, then panic one thread while the process
//!   kept running; [`exit_on_listener_failure`] turns that panic into an exit).
//! - Readiness ([`Readiness`], a background service) is announced only once
//!   every listener accepts connections: a start-up log line with the
//!   addresses and the configuration's size, `READY=1` and `STATUS=` to
//!   systemd (`sd_notify`, a no-op without `NOTIFY_SOCKET`).
//! - Reloads ([`Notifier::reloading`], [`Notifier::reloaded`]) send
//!   `RELOADING=1` with `MONOTONIC_USEC`, then `READY=1` and a `STATUS=` line
//!   naming the result, and write the [`StatusFile`] that `keygate reload
//!   --wait` reads, so `systemctl reload` returns after the reload and fails
//!   when it failed.
//! - Stopping is announced in keygate's words (`STOPPING=1`, one log line);
//!   Pingora's own start and stop lines are `debug` (see [`crate::logging`]).
//! - SIGUSR1 reopens the access-log file ([`LogReopener`]), for logrotate.
//!
//! Over the ~400-line guideline because the systemd protocol (notify, reload --wait,
//! status) is one conversation, kept in one place.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sd_notify::NotifyState;

use crate::config::ServerConfig;
use crate::state::State;
use crate::timestamp;

/// How long listeners get to accept connections after start before keygate gives up.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// Why keygate cannot start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A listen address cannot be bound.
    #[error("cannot listen on {address} ({field}): {source}")]
    Bind {
        /// The configuration field, e.g. `server.listen[0]`.
        field: String,
        /// The address.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Every address keygate will listen on, with the field it comes from and its kind.
pub fn listeners(server: &ServerConfig) -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    for (i, a) in server.listen.iter().enumerate() {
        out.push((format!("server.listen[{i}]"), a.clone(), "http"));
    }
    for (i, t) in server.tls_listen.iter().enumerate() {
        out.push((
            format!("server.tls_listen[{i}]"),
            t.address.clone(),
            "https",
        ));
    }
    if !server.metrics_listen.is_empty() {
        out.push((
            "server.metrics_listen".to_string(),
            server.metrics_listen.clone(),
            "metrics",
        ));
    }
    if !server.admin_listen.is_empty() {
        out.push((
            "server.admin_listen".to_string(),
            server.admin_listen.clone(),
            "admin",
        ));
    }
    out
}

/// Bind (and release) every listen address once, so a busy, forbidden or foreign address
/// is reported before start.
///
/// # Errors
/// [`ServiceError::Bind`] for the first address that cannot be bound.
pub fn probe_listeners(server: &ServerConfig) -> Result<(), ServiceError> {
    for (field, address, _) in listeners(server) {
        if let Err(source) = std::net::TcpListener::bind(address.as_str()) {
            return Err(ServiceError::Bind {
                field,
                address,
                source,
            });
        }
    }
    Ok(())
}

/// Exit with status 1 when Pingora panics because a listener could not be built
/// (an address taken between [`probe_listeners`] and Pingora's own bind), instead of
/// serving without it.
pub fn exit_on_listener_failure() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Failed to build listeners") {
            eprintln!("keygate: a listener could not be started; exiting");
            crate::logging::flush();
            std::process::exit(1);
        }
    }));
}

/// A one-line summary of a configuration, for logs and `STATUS=`.
pub fn summary(state: &State) -> String {
    let c = state.key_counts(timestamp::now_unix());
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let pending = if c.pending > 0 {
        format!(", {} pending", c.pending)
    } else {
        String::new()
    };
    format!(
        "{}, {}, {}, keys: {} active, {} expired, {} disabled{pending}",
        plural(state.routes.len(), "route", "routes"),
        plural(state.upstreams.len(), "upstream", "upstreams"),
        plural(state.consumers.len(), "consumer", "consumers"),
        c.active,
        c.expired,
        c.disabled
    )
}

/// Talks to the service manager; every call is a no-op without `NOTIFY_SOCKET`.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    status_file: Option<StatusFile>,
    /// The last generation written to the status file, so a late start-up note never
    /// overwrites a reload's outcome.
    written: Arc<Mutex<Option<u64>>>,
}

impl Notifier {
    /// A notifier that also writes `status_file` after start and every reload.
    pub fn new(status_file: Option<StatusFile>) -> Self {
        Notifier {
            status_file,
            written: Arc::default(),
        }
    }

    /// Write `generation`'s outcome unless a later one is already written.
    fn record(&self, generation: u64, ok: bool, status: &str) {
        let Some(f) = &self.status_file else {
            return;
        };
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        if written.is_none_or(|w| generation > w) {
            f.write(generation, ok, status);
            *written = Some(generation);
        }
    }

    fn notify(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states) {
            log::debug!(target: "keygate::service", "sd_notify failed: {e}");
        }
    }

    /// Every listener accepts: ready, with `status`.
    pub fn ready(&self, status: &str) {
        Self::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.record(0, true, status);
    }

    /// A reload has started.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        // systemd 253+ requires MONOTONIC_USEC with RELOADING=1; older ones ignore it.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        Self::notify(&states);
    }

    /// Reload number `generation` ended (`ok`), described by `status`.
    pub fn reloaded(&self, generation: u64, ok: bool, status: &str) {
        Self::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.record(generation, ok, status);
    }

    /// keygate is stopping.
    pub fn stopping(&self) {
        Self::notify(&[NotifyState::Stopping]);
    }
}

/// The file `keygate reload --wait` reads: this process's id and the outcome of its last
/// load, rewritten atomically after start and after every reload.
///
/// Format, one `key=value` per line: `pid`, `generation` (0 at start, then one more per
/// reload), `result` (`success` or `failure`), `at` (RFC 3339), `message` (one line; the
/// error of a failed reload, never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFile {
    path: PathBuf,
}

/// One reading of a [`StatusFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The process that wrote it.
    pub pid: u32,
    /// Loads since start (0: the start itself).
    pub generation: u64,
    /// Whether the load succeeded.
    pub ok: bool,
    /// What happened.
    pub message: String,
}

impl StatusFile {
    /// The status file at `path`.
    pub fn new(path: PathBuf) -> Self {
        StatusFile { path }
    }

    /// Where the file lives by default: `$RUNTIME_DIRECTORY/status` (systemd sets it from
    /// the unit's `RuntimeDirectory=`), or nowhere.
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("RUNTIME_DIRECTORY")
            .map(|d| {
                // systemd lists several directories separated by `:`; the first is ours.
                let first = d
                    .to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_string();
                PathBuf::from(first)
            })
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.join("status"))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the outcome of load number `generation`; failures are logged, never fatal.
    pub fn write(&self, generation: u64, ok: bool, message: &str) {
        let mut text = String::new();
        let _ = writeln!(text, "pid={}", std::process::id());
        let _ = writeln!(text, "generation={generation}");
        let _ = writeln!(text, "result={}", if ok { "success" } else { "failure" });
        let _ = writeln!(
            text,
            "at={}",
            timestamp::format_rfc3339(timestamp::now_unix())
        );
        let _ = writeln!(text, "message={}", message.replace('\n', " | "));
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            log::warn!(target: "keygate::service", "cannot write the status file {}: {e}", self.path.display());
        }
    }

    /// Read the file; `None` when it is missing or unreadable.
    pub fn read(&self) -> Option<Status> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        };
        Some(Status {
            pid: field("pid")?.parse().ok()?,
            generation: field("generation")?.parse().ok()?,
            ok: field("result")? == "success",
            message: field("message").unwrap_or("").replace(" | ", "\n"),
        })
    }
}

/// The address to connect to, to see whether a listener on `addr` accepts.
fn probe_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Announces readiness once every listener accepts connections, and the start of a
/// graceful stop (see the module docs).
pub struct Readiness {
    listeners: Vec<(String, &'static str)>,
    summary: String,
    /// Logged after `summary` on the start-up line, not announced.
    log_also: Option<String>,
    notifier: Notifier,
    grace_period_seconds: u64,
}

impl Readiness {
    /// Wait for `server`'s listeners; then log and announce `summary`.
    pub fn new(server: &ServerConfig, summary: String, notifier: Notifier) -> Self {
        Readiness {
            listeners: listeners(server)
                .into_iter()
                .map(|(_, a, kind)| (a, kind))
                .collect(),
            summary,
            log_also: None,
            notifier,
            grace_period_seconds: server.grace_period_seconds,
        }
    }

    /// Add `extra` to the start-up log line only, not to the status the service
    /// manager shows (e.g. the files' digests, too long for `systemctl status`).
    pub fn log_also(mut self, extra: Option<String>) -> Self {
        self.log_also = extra;
        self
    }

    /// Poll until every listener accepts a connection, or `READY_DEADLINE` passes.
    async fn wait_for_listeners(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        for (address, _) in &self.listeners {
            let Ok(addr) = address.parse::<SocketAddr>() else {
                continue;
            };
            let target = probe_target(addr);
            loop {
                let attempt = tokio::time::timeout(
                    Duration::from_millis(200),
                    tokio::net::TcpStream::connect(target),
                )
                .await;
                if matches!(attempt, Ok(Ok(_))) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("{address} does not accept connections"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Err(e) = self.wait_for_listeners().await {
            log::error!(target: "keygate::service", "{e} {READY_DEADLINE:?} after start; exiting");
            crate::logging::flush();
            std::process::exit(1);
        }
        let addresses: Vec<String> = self
            .listeners
            .iter()
            .map(|(a, kind)| format!("{a} ({kind})"))
            .collect();
        let also = self
            .log_also
            .as_ref()
            .map_or(String::new(), |a| format!("; {a}"));
        log::info!(
            target: "keygate::service",
            "keygate {} ready: listening on {}; {}{also}",
            env!("CARGO_PKG_VERSION"),
            addresses.join(", "),
            self.summary
        );
        self.notifier.ready(&format!("serving: {}", self.summary));
        // Tell the service manager when keygate starts stopping (SIGTERM).
        let _ = shutdown.changed().await;
        log::info!(
            target: "keygate::service",
            "stopping: no new connections; requests in flight get up to {} s",
            self.grace_period_seconds
        );
        self.notifier.stopping();
    }
}

/// Reopens the access-log file on SIGUSR1, after logrotate renamed it (its
/// `postrotate` sends the signal); with the access log on stderr SIGUSR1 changes nothing.
pub struct LogReopener {
    file: Option<PathBuf>,
    format: &'static str,
}

impl LogReopener {
    /// Reopen `file` (the access log's, `None` when it goes to stderr), written in `format`
    /// (named in the start-up line).
    pub fn new(file: Option<PathBuf>, format: &'static str) -> Self {
        LogReopener { file, format }
    }
}

#[async_trait]
impl BackgroundService for LogReopener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(target: crate::logging::LOGGING_TARGET, "cannot install the SIGUSR1 handler, the access log cannot be reopened: {e}");
                return;
            }
        };
        match &self.file {
            Some(f) => log::info!(
                target: crate::logging::LOGGING_TARGET,
                "access log ({}) written to {}; SIGUSR1 reopens it",
                self.format,
                f.display()
            ),
            None => log::debug!(
                target: crate::logging::LOGGING_TARGET,
                "access log ({}) written to stderr",
                self.format
            ),
        }
        loop {
            tokio::select! {
                _ = usr1.recv() => match &self.file {
                    Some(_) => crate::logging::reopen(),
                    None => log::info!(target: crate::logging::LOGGING_TARGET, "SIGUSR1 received; the access log goes to stderr, nothing to reopen"),
                },
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_address_is_named_before_start() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let server = ServerConfig {
            listen: vec![addr.clone()],
            metrics_listen: String::new(),
            ..ServerConfig::default()
        };
        let e = probe_listeners(&server).unwrap_err().to_string();
        assert!(e.contains(&addr) && e.contains("server.listen[0]"), "{e}");
        drop(taken);
        assert!(probe_listeners(&server).is_ok());
    }

    #[test]
    fn status_file_round_trips_and_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("keygate-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = StatusFile::new(dir.join("status"));
        assert_eq!(f.read(), None);
        f.write(0, true, "serving: 1 route");
        f.write(3, false, "2 problems in configuration\n  a: b\n  c: d");
        let s = f.read().unwrap();
        assert_eq!(s.pid, std::process::id());
        assert_eq!(s.generation, 3);
        assert!(!s.ok);
        assert_eq!(s.message, "2 problems in configuration\n  a: b\n  c: d");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        assert_eq!(
            probe_target("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            probe_target("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            probe_target("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse().unwrap()
        );
    }
}
