//! Hot reload: SIGHUP (or a change of the watched files) → load → validate → build →
//! swap, all or nothing.
//!
//! The [`Reloader`] is a Pingora background service, so its SIGHUP handler is
//! installed inside the running server. A failed load leaves the old state
//! serving and logs the full error; settings that only a restart can apply
//! (listeners, threads, metrics address) are reported and left as they are.
//! Every reload is announced to the service manager and recorded in the status
//! file ([`crate::service::Notifier`]), so `systemctl reload` reports its result.
//! With `server.watch_files`, a change of the files ([`watch`]) starts the same
//! reload once the files have been quiet for [`WATCH_DEBOUNCE`]; one loop handles
//! both triggers, so two reloads never run at once.
//!
//! Over the ~400-line guideline because SIGHUP and file-watch triggers share one reload
//! loop and its notifications.

pub mod watch;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{Config, ServerConfig};
use crate::metrics::Metrics;
use crate::service::{self, Notifier};
use crate::state::{self, Loaded, SharedState, State};
use crate::timestamp;
use watch::{FileWatch, Targets};

/// How long the watched files must stay unchanged before a reload starts: a burst of
/// events (a write in several pieces, a Kubernetes volume update, an editor's
/// write-then-rename) makes one reload, of the finished files.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP (`kill -HUP`, `systemctl reload`, `keygate reload`).
    Signal,
    /// A change of the watched files (`server.watch_files`).
    Watch,
}

/// Reloads the configuration on SIGHUP, or when its files change, into the shared state.
pub struct Reloader {
    config_path: PathBuf,
    shared: SharedState,
    metrics: Arc<Metrics>,
    running: Config,
    hooks: LoadHooks,
    notifier: Notifier,
    generation: AtomicU64,
    /// The files to watch, per the configuration loaded last, and when that load began
    /// reading them.
    watched: Mutex<(Targets, Option<SystemTime>)>,
}

impl Reloader {
    /// Create a reloader for `config_path`; `running` holds the settings in force;
    /// `notifier` tells the service manager (and the status file) about each reload.
    pub fn new(
        config_path: PathBuf,
        shared: SharedState,
        metrics: Arc<Metrics>,
        running: Config,
        hooks: LoadHooks,
        notifier: Notifier,
    ) -> Self {
        let watched = Mutex::new((Targets::of(&config_path, &running), None));
        Reloader {
            config_path,
            shared,
            metrics,
            running,
            hooks,
            notifier,
            generation: AtomicU64::new(0),
            watched,
        }
    }

    /// Say when the load the server started with began reading the files (see
    /// [`crate::state::FileDigests::read_at`]): a change made between then and the start
    /// of the watch is reloaded as soon as the watch starts.
    pub fn files_read_at(self, read_at: Option<SystemTime>) -> Self {
        self.set_watched(None, read_at);
        self
    }

    /// Load the files again and swap the new state in; on failure keep the old one.
    /// Tells the service manager when it starts and how it ended.
    pub async fn reload(&self) -> bool {
        self.reload_by(Trigger::Signal).await
    }

    /// [`Reloader::reload`], counted as started by `trigger`.
    pub async fn reload_by(&self, trigger: Trigger) -> bool {
        self.notifier.reloading();
        let (ok, status) = self.load_and_swap().await;
        if trigger == Trigger::Watch {
            self.metrics.watch_reload(ok);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.notifier.reloaded(generation, ok, &status);
        ok
    }

    /// The files to watch, per the configuration loaded last, and when it read them.
    fn watched(&self) -> (Targets, Option<SystemTime>) {
        self.watched
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Record what a load read: its targets (unchanged when `None`) and when.
    fn set_watched(&self, targets: Option<Targets>, read_at: Option<SystemTime>) {
        let mut w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = targets {
            w.0 = t;
        }
        w.1 = read_at;
    }

    /// The reload itself; returns whether it worked and a status line.
    async fn load_and_swap(&self) -> (bool, String) {
        let (path, metrics, hooks) = (self.config_path.clone(), self.metrics.clone(), self.hooks);
        let previous = self.shared.load_full();
        let started = std::time::Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Parse on a thread of its own, at low priority: a million-key file takes about a
        // second of CPU, which must come from idle time, not from the request threads.
        let spawned = std::thread::Builder::new()
            .name("keygate-reload".into())
            .spawn(move || {
                (hooks.background_priority)();
                let result = state::reload(&path, Some(&metrics), &previous).map(|loaded| {
                    let c = loaded.state.key_counts(timestamp::now_unix());
                    (loaded, c)
                });
                (hooks.release_memory)();
                let _ = tx.send(result);
            });
        let result = match spawned {
            Ok(_) => rx.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(Ok((loaded, c))) => {
                let Loaded {
                    config,
                    state,
                    warnings,
                    digests,
                } = loaded;
                for w in &warnings {
                    warn!(target: "keygate::reload", "{w}");
                }
                for field in restart_only_changes(&self.running, &config) {
                    warn!(target: "keygate::reload", "{field} changed; this setting requires a restart and keeps its running value");
                }
                let mut summary = format!(
                    "routes={} upstreams={} consumers={} keys_active={} keys_expired={} keys_disabled={} keys_pending={}",
                    state.routes.len(), state.upstreams.len(), state.consumers.len(), c.active, c.expired, c.disabled, c.pending
                );
                if let Some(d) = &digests {
                    summary.push_str(&format!(" {d}"));
                }
                self.set_watched(
                    Some(Targets::of(&self.config_path, &config)),
                    digests.map(|d| d.read_at),
                );
                let status = format!(
                    "serving: {} (reloaded at {})",
                    service::summary(&state),
                    timestamp::format_rfc3339(timestamp::now_unix())
                );
                let new = Arc::new(state);
                let old = self.shared.swap(new.clone());
                self.metrics.load_succeeded(true, timestamp::now_unix());
                forget_removed_servers(&self.metrics, &old, &new);
                if let Some(d) = &digests {
                    self.metrics.set_config_info(&d.config_hex(), &d.keys_hex());
                }
                info!(target: "keygate::reload", "configuration reloaded in {} ms: {summary}", started.elapsed().as_millis());
                // Free the previous state off the async thread once in-flight requests let go.
                // Last uses recorded on the old state while the new one was built carry over.
                tokio::task::spawn_blocking(move || {
                    new.merge_last_use(&old);
                    drop(new);
                    drop(old);
                    (hooks.release_memory)();
                });
                (true, status)
            }
            Ok(Err(e)) => {
                self.metrics.reload_failed();
                warn!(target: "keygate::reload", "configuration reload failed, still serving the previous configuration: {e}");
                (
                    false,
                    format!("reload failed, still serving the previous configuration: {e}"),
                )
            }
            Err(e) => {
                self.metrics.reload_failed();
                warn!(target: "keygate::reload", "configuration reload failed, still serving the previous configuration: the loader thread failed: {e}");
                (false, format!("reload failed, still serving the previous configuration: the loader thread failed: {e}"))
            }
        }
    }
}

/// Process-level actions around a configuration load. The binary supplies them: they
/// need FFI calls that this library, which forbids `unsafe`, does not make itself.
#[derive(Debug, Clone, Copy)]
pub struct LoadHooks {
    /// Give memory the parser freed back to the OS (called on the loading thread).
    pub release_memory: fn(),
    /// Lower the calling thread's scheduling priority (called on the loading thread).
    pub background_priority: fn(),
}

impl Default for LoadHooks {
    fn default() -> Self {
        LoadHooks {
            release_memory: || {},
            background_priority: || {},
        }
    }
}

/// Settings that differ between `old` and `new` but only a restart can apply
/// (listening sockets, threads, process-wide pools and tables), by config path.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let tls = |c: &ServerConfig| {
        c.tls_listen
            .iter()
            .map(|t| (t.address.clone(), t.cert.clone(), t.key.clone()))
            .collect::<Vec<_>>()
    };
    let checks = [
        ("server.listen", o.listen != n.listen),
        ("server.tls_listen", tls(o) != tls(n)),
        ("server.threads", o.threads != n.threads),
        (
            "server.metrics_listen",
            o.metrics_listen != n.metrics_listen,
        ),
        (
            "server.grace_period_seconds",
            o.grace_period_seconds != n.grace_period_seconds,
        ),
        (
            "server.upstream_keepalive_pool_size",
            o.upstream_keepalive_pool_size != n.upstream_keepalive_pool_size,
        ),
        (
            "server.access_log.flush_interval_ms",
            o.access_log.flush_interval_ms != n.access_log.flush_interval_ms,
        ),
        // The format and the open file are the writer thread's, process-wide; SIGUSR1
        // reopens the same path (logrotate), a new path needs a restart.
        (
            "server.access_log.format",
            o.access_log.format != n.access_log.format,
        ),
        (
            "server.access_log.destination",
            o.access_log.destination != n.access_log.destination,
        ),
        (
            "auth.brute_force.table_slots",
            old.auth.brute_force.table_slots != new.auth.brute_force.table_slots,
        ),
        ("server.admin_listen", o.admin_listen != n.admin_listen),
        // The store's connection is the sync task's, set up at start; `on_error` reloads.
        (
            "limits.store.redis",
            old.limits.store.as_ref().map(|s| &s.redis)
                != new.limits.store.as_ref().map(|s| &s.redis),
        ),
    ];
    // Keep-alive, body timeout, header limits and the brute-force policy are applied per
    // request from the state: they reload live.
    checks
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(f, _)| *f)
        .collect()
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(target: "keygate::reload", "cannot install the SIGHUP handler, reload is disabled: {e}");
                return;
            }
        };
        let mut files = FileWatch::default();
        // When the watched files have been quiet long enough, and which ones changed.
        let mut due: Option<tokio::time::Instant> = None;
        let mut changed = BTreeSet::new();
        // (Re)arm the watch per the configuration loaded last; a file that changed after
        // that load read it and before the watch started is reloaded too.
        let arm = |files: &mut FileWatch,
                   due: &mut Option<tokio::time::Instant>,
                   changed: &mut BTreeSet<String>| {
            let (targets, read_at) = self.watched();
            if files.set(targets.clone()) && read_at.is_some_and(|t| targets.changed_since(t)) {
                changed.insert("before the watch started".to_string());
                *due = Some(tokio::time::Instant::now() + WATCH_DEBOUNCE);
            }
        };
        arm(&mut files, &mut due, &mut changed);
        info!(target: "keygate::reload", "ready to reload the configuration on SIGHUP");
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!(target: "keygate::reload", "SIGHUP received, reloading configuration");
                    self.reload_by(Trigger::Signal).await;
                }
                name = files.changed() => {
                    changed.insert(name);
                    due = Some(tokio::time::Instant::now() + WATCH_DEBOUNCE);
                    continue;
                }
                _ = sleep_until(due), if due.is_some() => {
                    // Changes that came in while the timer fired belong to this reload.
                    files.drain(&mut changed);
                    let names: Vec<_> = std::mem::take(&mut changed).into_iter().collect();
                    due = None;
                    info!(target: "keygate::reload", "watched files changed ({}), reloading configuration", names.join(", "));
                    self.reload_by(Trigger::Watch).await;
                }
                _ = shutdown.changed() => break,
            }
            // The reloaded configuration may watch other files, or none.
            arm(&mut files, &mut due, &mut changed);
        }
    }
}

/// Drop the metric series of servers that `old` had and `new` has not.
fn forget_removed_servers(metrics: &Metrics, old: &State, new: &State) {
    let keep: std::collections::HashSet<(&str, &str)> = new
        .server_statuses(0)
        .into_iter()
        .map(|s| (s.upstream, s.address))
        .collect();
    for s in old.server_statuses(0) {
        if !keep.contains(&(s.upstream, s.address)) {
            metrics.forget_server(s.upstream, s.address);
        }
    }
}

/// Sleep until `due`; `None` never comes (the `select!` branch is disabled then anyway).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str, auth: &str) -> Config {
        let text = format!(
            "server:\n{server}\nsecret: {{ env: X }}\nauth:\n  keys_file: k\n{auth}\nupstreams: {{ o: {{ address: \"127.0.0.1:1\" }} }}\nroutes: [ {{ name: api, upstream: o, auth: required }} ]\n"
        );
        Config::from_yaml(&text, std::path::Path::new("c")).unwrap()
    }

    #[test]
    fn restart_only_settings_are_named_and_live_ones_are_not() {
        let base = config("  threads: 2", "");
        assert!(restart_only_changes(&base, &base).is_empty());
        for (server, auth, field) in [
            ("  threads: 3", "", "server.threads"),
            ("  listen: [\"127.0.0.1:9\"]", "", "server.listen"),
            ("  metrics_listen: \"\"", "", "server.metrics_listen"),
            (
                "  grace_period_seconds: 1",
                "",
                "server.grace_period_seconds",
            ),
            (
                "  upstream_keepalive_pool_size: 8",
                "",
                "server.upstream_keepalive_pool_size",
            ),
            (
                "  access_log: { flush_interval_ms: 5 }",
                "",
                "server.access_log.flush_interval_ms",
            ),
            (
                "  access_log: { format: json }",
                "",
                "server.access_log.format",
            ),
            (
                "  access_log: { destination: /var/log/keygate/access.log }",
                "",
                "server.access_log.destination",
            ),
            (
                "  threads: 2",
                "  brute_force: { table_slots: 2048 }",
                "auth.brute_force.table_slots",
            ),
        ] {
            let changed = restart_only_changes(&base, &config(server, auth));
            assert_eq!(changed, vec![field], "{server} {auth}");
        }
        // Live settings are applied by the reload, not reported.
        for live in [
            "  keepalive_timeout_seconds: 5",
            "  client_header_timeout_seconds: 5",
            "  client_body_min_rate_bytes_per_second: 0",
            "  trusted_proxies: [\"10.0.0.0/8\"]",
            "  max_request_headers: 10",
        ] {
            let changed =
                restart_only_changes(&config(&format!("  threads: 2\n{live}"), ""), &base);
            assert!(changed.is_empty(), "{live}: {changed:?}");
        }
    }
}
