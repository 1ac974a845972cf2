//! Wiring: turns a loaded configuration into a Pingora `Server` with keygate's services.
//!
//! The proxy (every accepted connection wrapped by [`crate::conn`]), the
//! telemetry listener, the upstream health checks, the shared limit store's sync, the SIGHUP reloader and the
//! SIGUSR1 access-log reopener are added here; `main` opens the access log, runs
//! the server and drains the access log once it stops.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::{resolve_relative, AccessLogFormat, ServerConfig};
use crate::conn::{DeadlineApp, ProxyHeaderReader};
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::proxy::{ApiKeyProxy, Timeouts};
use crate::reload::{LoadHooks, Reloader};
use crate::service::{self, LogReopener, Notifier, Readiness};
use crate::state::{Loaded, SharedState};
use crate::telemetry::TelemetryApp;

/// Errors while assembling the server (after the configuration was validated).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The shared limit store could not be set up (its password unreadable).
    #[error("limits.store: {0}")]
    LimitStore(String),
    /// A TLS listener could not be set up.
    #[error("TLS listener {address}: {message}")]
    Tls {
        /// The listen address.
        address: String,
        /// What went wrong.
        message: String,
    },
}

/// Pingora's server settings derived from `server:`.
pub fn server_conf(s: &ServerConfig) -> ServerConf {
    ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.grace_period_seconds.saturating_add(5)),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ..ServerConf::default()
    }
}

/// Build the server, ready to run: the proxy on every listener, the telemetry listener,
/// and the SIGHUP reloader when the configuration came from a file.
///
/// `loaded` must have been built with `metrics` (its handles record there); `hooks` run
/// on the loading thread of each reload (lower its priority, hand freed memory back);
/// `notifier` announces readiness and reloads to the service manager.
///
/// # Errors
/// [`ServerError::Tls`] when a TLS listener's files cannot be set up.
pub fn assemble(
    loaded: Loaded,
    metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    hooks: LoadHooks,
    notifier: Notifier,
) -> Result<Server, ServerError> {
    let Loaded {
        config,
        state,
        digests,
        ..
    } = loaded;
    let summary = service::summary(&state);
    metrics.load_succeeded(false, crate::timestamp::now_unix());
    if let Some(d) = &digests {
        metrics.set_config_info(&d.config_hex(), &d.keys_hex());
    }
    let fleet = state.fleet.clone();
    let shared: SharedState = Arc::new(ArcSwap::from_pointee(state));
    let mut server = Server::new_with_opt_and_conf(Opt::default(), server_conf(&config.server));
    server.bootstrap();

    let http = pingora::proxy::http_proxy(
        &server.configuration,
        ApiKeyProxy::new(
            shared.clone(),
            Arc::new(crate::limiter::FailureLimiter::new(
                config.auth.brute_force.table_slots,
            )),
        ),
    );
    // A trusted balancer's PROXY header is read first: on plain listeners by the app,
    // on TLS listeners before the handshake.
    let proxy_header = Arc::new(ProxyHeaderReader::new(
        shared.clone(),
        Some(metrics.proxy_protocol()),
    ));
    // Every accepted connection goes through the request-head deadline and body-rate floor.
    let app = DeadlineApp::new(
        http,
        shared.clone(),
        Arc::new(Timeouts::new(shared.clone(), metrics.client_timeouts())),
        proxy_header.clone(),
    );
    let mut proxy = Service::new("keygate".to_string(), app);
    proxy.endpoints().set_pre_tls_callback(proxy_header);
    for addr in &config.server.listen {
        proxy.add_tcp(addr);
    }
    for t in &config.server.tls_listen {
        let base = config_path.clone().unwrap_or_default();
        let cert = resolve_relative(&base, &t.cert);
        let key = resolve_relative(&base, &t.key);
        let tls_err = |message: String| ServerError::Tls {
            address: t.address.clone(),
            message,
        };
        let (Some(cert), Some(key)) = (cert.to_str(), key.to_str()) else {
            return Err(tls_err("certificate paths must be UTF-8".into()));
        };
        proxy
            .add_tls(&t.address, cert, key)
            .map_err(|e| tls_err(e.to_string()))?;
    }
    server.add_service(proxy);

    if !config.server.metrics_listen.is_empty() {
        let mut service = Service::new(
            "keygate telemetry".to_string(),
            TelemetryApp::new(metrics.clone(), shared.clone()),
        );
        service.add_tcp(&config.server.metrics_listen);
        server.add_service(service);
    }
    if !config.server.admin_listen.is_empty() {
        let addr = &config.server.admin_listen;
        let mut service = Service::new(
            "keygate admin".to_string(),
            crate::admin::AdminApp::new(shared.clone()),
        );
        service.add_tcp(addr);
        server.add_service(service);
    }
    // Probes upstream servers; reads the live state each round, so a reload that adds
    // a health check needs no restart.
    server.add_service(background_service(
        "keygate health checks",
        HealthChecker::new(shared.clone()),
    ));
    // Shares consumer and key limits with the fleet through the store, when configured.
    if let (Some(fleet), Some(store)) = (fleet, &config.limits.store) {
        let password = match &store.redis.password {
            Some(source) => Some(
                crate::state::read_secret(
                    source,
                    &config_path.clone().unwrap_or_default(),
                    "limits.store.redis.password",
                )
                .map_err(|e| ServerError::LimitStore(e.to_string()))?,
            ),
            None => None,
        };
        let store_metrics = crate::metrics::StoreMetrics::register(&metrics)
            .map_err(|e| ServerError::LimitStore(e.to_string()))?;
        server.add_service(background_service(
            "keygate limit store",
            crate::fleet::LimitSync::new(
                shared.clone(),
                fleet,
                store.redis.clone(),
                password,
                store_metrics,
            ),
        ));
    }
    server.add_service(background_service(
        "keygate readiness",
        Readiness::new(&config.server, summary, notifier.clone())
            .log_also(digests.map(|d| d.to_string())),
    ));
    let access_log = &config.server.access_log;
    server.add_service(background_service(
        "keygate log reopener",
        LogReopener::new(
            access_log.file(&config_path.clone().unwrap_or_default()),
            match access_log.format {
                AccessLogFormat::Text => "text",
                AccessLogFormat::Json => "json",
            },
        ),
    ));
    if let Some(path) = config_path {
        let reloader = Reloader::new(
            path,
            shared.clone(),
            metrics.clone(),
            config.clone(),
            hooks,
            notifier,
        )
        .files_read_at(digests.map(|d| d.read_at));
        server.add_service(background_service("keygate reloader", reloader));
    }
    Ok(server)
}
