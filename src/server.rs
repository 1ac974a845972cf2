//! Wiring: turns a loaded configuration into a Pingora `Server` with keygate's services.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::{resolve_relative, ServerConfig};
use crate::conn::DeadlineApp;
use crate::metrics::{Metrics, MetricsApp};
use crate::proxy::{ApiKeyProxy, Timeouts};
use crate::reload::{LoadHooks, Reloader};
use crate::state::{Loaded, SharedState};

/// Errors while assembling the server (after the configuration was validated).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The metric families could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
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

/// Build the server, ready for `run_forever`: the proxy on every listener, plus the SIGHUP reloader when the
/// configuration came from a file.
///
/// `hooks` run on the loading thread of each reload (lower its priority, hand freed
/// memory back to the OS).
pub fn assemble(
    loaded: Loaded,
    config_path: Option<PathBuf>,
    hooks: LoadHooks,
) -> Result<Server, ServerError> {
    let Loaded {
        config, mut state, ..
    } = loaded;
    let metrics = Arc::new(Metrics::register(prometheus::Registry::new())?);
    state.handles = metrics.handles_for(&state);
    metrics.load_succeeded(false);
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
    // Every accepted connection goes through the request-head deadline and body-rate floor.
    let app = DeadlineApp::new(
        http,
        shared.clone(),
        Arc::new(Timeouts::new(shared.clone(), metrics.client_timeouts())),
    );
    let mut proxy = Service::new("keygate".to_string(), app);
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
        let mut service = pingora::services::listening::Service::new(
            "keygate metrics".to_string(),
            MetricsApp::new(metrics.clone(), shared.clone()),
        );
        service.add_tcp(&config.server.metrics_listen);
        server.add_service(service);
    }
    if let Some(path) = config_path {
        let reloader = Reloader::new(path, shared.clone(), metrics.clone(), config.clone(), hooks);
        server.add_service(background_service("keygate reloader", reloader));
    }
    Ok(server)
}
