//! Hot reload: SIGHUP → load → validate → build → swap, all or nothing.
//!
//! The [`Reloader`] is a Pingora background service, so its SIGHUP handler is
//! installed inside the running server. A failed load leaves the old state
//! serving and logs the full error; settings that only a restart can apply
//! (listeners, threads, metrics address) are reported and left as they are.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::state::{self, Loaded, SharedState};
use crate::timestamp;

/// Reloads the configuration on SIGHUP into the shared state.
pub struct Reloader {
    config_path: PathBuf,
    shared: SharedState,
    metrics: Arc<Metrics>,
    running: ServerConfig,
    release_memory: fn(),
}

impl Reloader {
    /// Create a reloader for `config_path`; `running` holds the settings in force.
    pub fn new(
        config_path: PathBuf,
        shared: SharedState,
        metrics: Arc<Metrics>,
        running: ServerConfig,
        release_memory: fn(),
    ) -> Self {
        Reloader {
            config_path,
            shared,
            metrics,
            running,
            release_memory,
        }
    }

    /// Load the files again and swap the new state in; on failure keep the old one.
    pub async fn reload(&self) -> bool {
        let path = self.config_path.clone();
        let release = self.release_memory;
        let started = std::time::Instant::now();
        // Loading parses large files: keep it off the request threads.
        let result = tokio::task::spawn_blocking(move || {
            let loaded = state::load(&path);
            release();
            loaded
        })
        .await;
        match result {
            Ok(Ok(Loaded {
                config,
                mut state,
                warnings,
            })) => {
                for w in &warnings {
                    warn!(target: "keygate::reload", "{w}");
                }
                for field in restart_only_changes(&self.running, &config.server) {
                    warn!(target: "keygate::reload", "server.{field} changed; this setting requires a restart and keeps its running value");
                }
                let c = state.key_counts(timestamp::now_unix());
                let summary = format!(
                    "routes={} upstreams={} consumers={} keys_active={} keys_expired={} keys_disabled={}",
                    state.routes.len(), state.upstreams.len(), state.consumers.len(), c.active, c.expired, c.disabled
                );
                state.handles = self.metrics.handles_for(&state);
                let old = self.shared.swap(Arc::new(state));
                self.metrics.load_succeeded(true);
                info!(target: "keygate::reload", "configuration reloaded in {} ms: {summary}", started.elapsed().as_millis());
                // Free the previous state off the async thread once in-flight requests let go.
                tokio::task::spawn_blocking(move || {
                    drop(old);
                    release();
                });
                true
            }
            Ok(Err(e)) => {
                self.metrics.reload_failed();
                warn!(target: "keygate::reload", "configuration reload failed, still serving the previous configuration: {e}");
                false
            }
            Err(e) => {
                self.metrics.reload_failed();
                warn!(target: "keygate::reload", "configuration reload failed, still serving the previous configuration: {e}");
                false
            }
        }
    }
}

/// Names of `server` settings that differ between `old` and `new`.
pub fn restart_only_changes(old: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    let tls = |c: &ServerConfig| {
        c.tls_listen
            .iter()
            .map(|t| (t.address.clone(), t.cert.clone(), t.key.clone()))
            .collect::<Vec<_>>()
    };
    if tls(old) != tls(new) {
        out.push("tls_listen");
    }
    if old.threads != new.threads {
        out.push("threads");
    }
    if old.metrics_listen != new.metrics_listen {
        out.push("metrics_listen");
    }
    if old.grace_period_seconds != new.grace_period_seconds {
        out.push("grace_period_seconds");
    }
    if old.upstream_keepalive_pool_size != new.upstream_keepalive_pool_size {
        out.push("upstream_keepalive_pool_size");
    }
    // keepalive, body timeout and header limits are per request: they reload live.
    out
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
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!(target: "keygate::reload", "SIGHUP received, reloading configuration");
                    self.reload().await;
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
