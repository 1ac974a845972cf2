//! Prometheus metrics: every family keygate exports, and the label values they take.
//!
//! A leaf module: it knows names, label sets and fixed label values (typed
//! enums such as [`AuthResult`] and [`ErrorKind`]), never keygate's request or
//! state types. [`Metrics::register`] creates every family once, into the
//! registry it is given (production: a fresh one served by `crate::telemetry`;
//! tests: their own). [`Metrics::handles`] resolves the label children one
//! configuration will record into ([`Handles`]), so recording a request
//! is a few atomic additions with no lock and no label hashing. Label values
//! come only from the configuration (route, upstream and consumer ids) or
//! from the fixed sets here, so cardinality is bounded.
//!
//! Over the ~400-line guideline because every family is declared here with its help text
//! and labels, so the exposition's names stay in one reviewable list (per-state handles
//! are in `metrics/handles.rs`).

mod handles;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub use handles::Handles;

/// Latency buckets for a proxy, in seconds: 0.5 ms … 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The `route` label of requests that matched no route (cannot clash: route names have no parentheses).
pub const NO_ROUTE: &str = "(none)";
/// The Pingora error type (`ErrorType::Custom`) of a request no server of its upstream
/// could take; the access log's `error=` shows it.
pub const NO_SERVER: &str = "NoServerAvailable";

/// An authentication result: the values of `keygate_auth_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// A valid key.
    Ok,
    /// No key where none was needed.
    Anonymous,
    /// No key where one was required.
    Missing,
    /// An unknown, malformed or corrupt key.
    Invalid,
    /// An expired key.
    Expired,
    /// A disabled key or consumer.
    Disabled,
    /// A valid key not allowed on the route.
    Forbidden,
    /// Two different credentials.
    Ambiguous,
    /// Refused by the brute-force limiter before any lookup.
    Blocked,
    /// A known key before its `not_before`.
    NotYetValid,
    /// A valid key over a rate limit.
    RateLimited,
    /// A valid key over a quota.
    QuotaExceeded,
}

impl AuthResult {
    /// Every result, in label order.
    pub const ALL: [AuthResult; 12] = [
        AuthResult::Ok,
        AuthResult::Anonymous,
        AuthResult::Missing,
        AuthResult::Invalid,
        AuthResult::Expired,
        AuthResult::Disabled,
        AuthResult::Forbidden,
        AuthResult::Ambiguous,
        AuthResult::Blocked,
        AuthResult::NotYetValid,
        AuthResult::RateLimited,
        AuthResult::QuotaExceeded,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthResult::Ok => "ok",
            AuthResult::Anonymous => "anonymous",
            AuthResult::Missing => "missing",
            AuthResult::Invalid => "invalid",
            AuthResult::Expired => "expired",
            AuthResult::Disabled => "disabled",
            AuthResult::Forbidden => "forbidden",
            AuthResult::Ambiguous => "ambiguous",
            AuthResult::Blocked => "blocked",
            AuthResult::NotYetValid => "not_yet_valid",
            AuthResult::RateLimited => "rate_limited",
            AuthResult::QuotaExceeded => "quota_exceeded",
        }
    }
}

/// A kind of upstream failure: the values of `keygate_upstream_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The origin refused the connection, or it could not be opened.
    ConnectRefused,
    /// Connecting took longer than `connect_timeout_ms`.
    ConnectTimeout,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// The origin did not answer within `read_timeout_ms`.
    Timeout,
    /// The origin closed or reset the connection.
    Closed,
    /// The origin answered something that is not HTTP.
    InvalidResponse,
    /// No server of the upstream takes requests: every one fails its health checks.
    NoServer,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Closed,
        ErrorKind::InvalidResponse,
        ErrorKind::NoServer,
        ErrorKind::Other,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::NoServer => "no_server",
            ErrorKind::Other => "other",
        }
    }

    /// Classify a Pingora error type.
    pub fn of(e: &pingora::ErrorType) -> ErrorKind {
        use pingora::ErrorType::*;
        match e {
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError => {
                ErrorKind::ConnectRefused
            }
            ConnectTimedout => ErrorKind::ConnectTimeout,
            TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
            | TLSWantX509Lookup => ErrorKind::Tls,
            ReadTimedout | WriteTimedout => ErrorKind::Timeout,
            ConnectionClosed | ReadError | WriteError => ErrorKind::Closed,
            InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => {
                ErrorKind::InvalidResponse
            }
            Custom(NO_SERVER) => ErrorKind::NoServer,
            _ => ErrorKind::Other,
        }
    }
}

/// Key gauges, computed by the caller from one configuration at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyGauges {
    /// Usable keys.
    pub active: u64,
    /// Keys past their expiry.
    pub expired: u64,
    /// Keys disabled directly or through their consumer.
    pub disabled: u64,
    /// Keys whose `not_before` is still ahead.
    pub pending: u64,
    /// Active keys inside their expiry warning window (`auth.key_expiry_warning_seconds`).
    pub expiring_soon: u64,
    /// Heap bytes held by the key index.
    pub store_bytes: u64,
    /// Consumers that used at least 90 % of a quota, but not all of it.
    pub quota_near: u64,
    /// Consumers with a quota used up.
    pub quota_exhausted: u64,
}

/// Why a consumer's request was refused by its limits: `keygate_limit_rejections_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// Over a rate limit.
    RateLimited,
    /// Over a quota.
    QuotaExceeded,
}

impl LimitReason {
    /// Every reason, in label order.
    pub const ALL: [LimitReason; 2] = [LimitReason::RateLimited, LimitReason::QuotaExceeded];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            LimitReason::RateLimited => "rate_limited",
            LimitReason::QuotaExceeded => "quota_exceeded",
        }
    }
}

/// Every metric family keygate exports.
pub struct Metrics {
    registry: Registry,
    /// `keygate_requests_total{route,status}`: every request, including those keygate answered.
    requests: IntCounterVec,
    /// `keygate_auth_total{result}`: authentication decisions.
    auth: IntCounterVec,
    /// `keygate_consumer_requests_total{consumer}`: authenticated requests per consumer.
    consumer_requests: IntCounterVec,
    /// `keygate_request_duration_seconds{route}`: time from request to last byte.
    duration: HistogramVec,
    /// `keygate_upstream_errors_total{upstream,kind}`: failures talking to origins.
    upstream_errors: IntCounterVec,
    /// `keygate_origin_auth_rejections_total{upstream}`: the origin answered 401/403 to an
    /// authenticated request (almost always a shared-secret mismatch).
    origin_auth_rejections: IntCounterVec,
    /// `keygate_config_reloads_total{result}`: reload attempts.
    reloads: IntCounterVec,
    /// `keygate_config_watch_reloads_total{result}`: the reloads a file change started
    /// (`server.watch_files`), also counted in `reloads`.
    watch_reloads: IntCounterVec,
    /// `keygate_config_info{config_sha256,keys_sha256}`: 1 for the files loaded.
    config_info: IntGaugeVec,
    /// The label values `config_info` exports now, so a new load can remove them.
    config_info_current: std::sync::Mutex<Option<[String; 2]>>,
    /// `keygate_config_last_reload_successful`: 1 when the last reload worked.
    last_reload_ok: IntGauge,
    /// `keygate_config_last_reload_success_timestamp_seconds`.
    last_reload_ts: Gauge,
    /// `keygate_keys{state}`: keys by state, computed at scrape time.
    keys: IntGaugeVec,
    /// `keygate_keys_expiring_soon`: active keys inside their warning window.
    keys_expiring: IntGauge,
    /// `keygate_limit_rejections_total{route,reason}`: requests refused by consumer limits.
    limit_rejections: IntCounterVec,
    /// `keygate_expiring_key_requests_total{route}`: requests made with a key inside its
    /// warning window.
    expiring_key_requests: IntCounterVec,
    /// `keygate_quota_consumers{level}`: consumers near (`near`) or at (`exhausted`) a quota.
    quota_consumers: IntGaugeVec,
    /// `keygate_key_store_bytes`: heap bytes of the key index.
    key_store_bytes: IntGauge,
    /// `keygate_access_log_dropped_total`: access-log lines dropped because the writer
    /// could not keep up (its destination blocked) or the destination refused a write.
    access_log_dropped: IntCounter,
    /// `keygate_client_timeouts_total{phase}`: request heads past
    /// `client_header_timeout_seconds` (`header`) and bodies below the minimum rate (`body`).
    client_timeouts: IntCounterVec,
    /// `keygate_proxy_protocol_connections_total{outcome}`: connections from trusted peers
    /// read for a PROXY protocol header: `header` (one was read), `none` (`optional`, the
    /// peer sent none), `refused` (malformed, missing while `required`, cut short or late).
    proxy_protocol: IntCounterVec,
    /// `keygate_upstream_server_healthy{upstream,address}`: 1 when the server takes
    /// requests (its health checks pass, or it has none, and it is not ejected), set at
    /// scrape time.
    server_healthy: IntGaugeVec,
    /// `keygate_upstream_selections_total{upstream,address}`: requests sent to each server
    /// (a retry counts once more, on the server it went to).
    selections: IntCounterVec,
    /// `keygate_upstream_ejections_total{upstream,address}`: passive ejections after
    /// consecutive connect failures.
    ejections: IntCounterVec,
    /// `keygate_upstream_retries_total{upstream}`: requests sent to another server after a
    /// connection failed before any byte was sent.
    retries: IntCounterVec,
}

/// Whether one server takes requests, for `keygate_upstream_server_healthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerGauge<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// The server's configured address.
    pub address: &'a str,
    /// Whether it takes requests.
    pub up: bool,
}

/// The PROXY protocol outcome counters, resolved once.
#[derive(Clone)]
pub struct ProxyProtocolCounters {
    /// Connections whose header was read.
    pub header: IntCounter,
    /// Connections without a header (`optional`).
    pub none: IntCounter,
    /// Connections closed for a bad, missing, truncated or late header.
    pub refused: IntCounter,
}

/// The two client-timeout counters, resolved once.
#[derive(Clone)]
pub struct ClientTimeouts {
    /// Request heads that did not complete in time.
    pub header: IntCounter,
    /// Request bodies cut for arriving below the minimum rate.
    pub body: IntCounter,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let v = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(v.clone()))?;
    Ok(v)
}

fn gauge<G: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    g: G,
) -> prometheus::Result<G> {
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// Create and register every family into `registry`, plus process metrics and build info.
    ///
    /// # Errors
    /// `prometheus`'s error when a family is already registered in `registry`.
    pub fn register(registry: Registry) -> prometheus::Result<Metrics> {
        let r = &registry;
        let requests = counter_vec(
            r,
            "keygate_requests_total",
            "Requests by route and response status, including those keygate answered itself.",
            &["route", "status"],
        )?;
        let auth = counter_vec(
            r,
            "keygate_auth_total",
            "Authentication decisions by result.",
            &["result"],
        )?;
        let consumer_requests = counter_vec(
            r,
            "keygate_consumer_requests_total",
            "Authenticated requests by consumer id.",
            &["consumer"],
        )?;
        let duration = gauge(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "keygate_request_duration_seconds",
                    "Time from request start to the end of the response, by route.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["route"],
            )?,
        )?;
        let upstream_errors = counter_vec(
            r,
            "keygate_upstream_errors_total",
            "Failures talking to an upstream, by kind.",
            &["upstream", "kind"],
        )?;
        let origin_auth_rejections = counter_vec(
            r,
            "keygate_origin_auth_rejections_total",
            "Origin answered 401/403 to a request keygate authenticated (shared-secret mismatch?).",
            &["upstream"],
        )?;
        let reloads = counter_vec(
            r,
            "keygate_config_reloads_total",
            "Configuration reload attempts by result.",
            &["result"],
        )?;
        let watch_reloads = counter_vec(
            r,
            "keygate_config_watch_reloads_total",
            "Configuration reloads started by a change of the watched files, by result (also in keygate_config_reloads_total).",
            &["result"],
        )?;
        let config_info = gauge(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "keygate_config_info",
                    "SHA-256 of the configuration and keys files loaded; always 1.",
                ),
                &["config_sha256", "keys_sha256"],
            )?,
        )?;
        let last_reload_ok = gauge(
            r,
            IntGauge::new(
                "keygate_config_last_reload_successful",
                "1 if the last configuration load succeeded, else 0.",
            )?,
        )?;
        let last_reload_ts = gauge(
            r,
            Gauge::new(
                "keygate_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load.",
            )?,
        )?;
        let keys = gauge(
            r,
            IntGaugeVec::new(
                Opts::new("keygate_keys", "Configured keys by state."),
                &["state"],
            )?,
        )?;
        let keys_expiring = gauge(
            r,
            IntGauge::new(
                "keygate_keys_expiring_soon",
                "Active keys inside their expiry warning window (auth.key_expiry_warning_seconds).",
            )?,
        )?;
        let limit_rejections = counter_vec(
            r,
            "keygate_limit_rejections_total",
            "Requests refused by consumer or key limits, by route and reason.",
            &["route", "reason"],
        )?;
        let expiring_key_requests = counter_vec(
            r,
            "keygate_expiring_key_requests_total",
            "Requests made with a key inside its expiry warning window, by route.",
            &["route"],
        )?;
        let quota_consumers = gauge(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "keygate_quota_consumers",
                    "Consumers that used at least 90% of a quota (level=near) or all of it (level=exhausted).",
                ),
                &["level"],
            )?,
        )?;
        let key_store_bytes = gauge(
            r,
            IntGauge::new(
                "keygate_key_store_bytes",
                "Heap bytes held by the in-memory key index.",
            )?,
        )?;
        // Brought up to the logger's own count at each scrape.
        let access_log_dropped = gauge(
            r,
            IntCounter::new(
                "keygate_access_log_dropped_total",
                "Access-log lines dropped because the log writer could not keep up or its destination refused a write.",
            )?,
        )?;
        let client_timeouts = counter_vec(
            r,
            "keygate_client_timeouts_total",
            "Client connections cut for a slow request head (phase=header) or body (phase=body).",
            &["phase"],
        )?;
        let proxy_protocol = counter_vec(
            r,
            "keygate_proxy_protocol_connections_total",
            "Connections from trusted peers read for a PROXY protocol header, by outcome (header, none, refused).",
            &["outcome"],
        )?;
        let server_healthy = gauge(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "keygate_upstream_server_healthy",
                    "1 when the upstream server takes requests (health checks pass or none, not ejected), else 0.",
                ),
                &["upstream", "address"],
            )?,
        )?;
        let selections = counter_vec(
            r,
            "keygate_upstream_selections_total",
            "Requests sent to each upstream server (retries included).",
            &["upstream", "address"],
        )?;
        let ejections = counter_vec(
            r,
            "keygate_upstream_ejections_total",
            "Upstream servers ejected after consecutive connect failures.",
            &["upstream", "address"],
        )?;
        let retries = counter_vec(
            r,
            "keygate_upstream_retries_total",
            "Requests retried on another server after a connection failed before any byte was sent.",
            &["upstream"],
        )?;
        let build_info = gauge(
            r,
            IntGaugeVec::new(
                Opts::new("keygate_build_info", "Build information; always 1."),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Fixed label sets are exported from the start, at zero.
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
            watch_reloads.with_label_values(&[result]);
        }
        for result in AuthResult::ALL {
            auth.with_label_values(&[result.label()]);
        }
        for phase in ["header", "body"] {
            client_timeouts.with_label_values(&[phase]);
        }
        for outcome in ["header", "none", "refused"] {
            proxy_protocol.with_label_values(&[outcome]);
        }
        Ok(Metrics {
            registry,
            requests,
            auth,
            consumer_requests,
            duration,
            upstream_errors,
            origin_auth_rejections,
            reloads,
            watch_reloads,
            config_info,
            config_info_current: std::sync::Mutex::new(None),
            last_reload_ok,
            last_reload_ts,
            keys,
            keys_expiring,
            limit_rejections,
            expiring_key_requests,
            quota_consumers,
            key_store_bytes,
            access_log_dropped,
            client_timeouts,
            proxy_protocol,
            server_healthy,
            selections,
            ejections,
            retries,
        })
    }

    /// Set `keygate_upstream_server_healthy` to exactly `servers` (series of servers no
    /// longer configured disappear).
    pub fn set_server_health<'a>(&self, servers: impl IntoIterator<Item = ServerGauge<'a>>) {
        self.server_healthy.reset();
        for s in servers {
            self.server_healthy
                .with_label_values(&[s.upstream, s.address])
                .set(i64::from(s.up));
        }
    }

    /// Remove the per-server series (`keygate_upstream_selections_total`,
    /// `keygate_upstream_ejections_total`) of a server a reload took out, so that address
    /// churn does not grow the exposition for ever.
    pub fn forget_server(&self, upstream: &str, address: &str) {
        // Absent series (never created) are not an error worth reporting.
        let _ = self.selections.remove_label_values(&[upstream, address]);
        let _ = self.ejections.remove_label_values(&[upstream, address]);
    }

    /// The client-timeout counters.
    pub fn client_timeouts(&self) -> ClientTimeouts {
        ClientTimeouts {
            header: self.client_timeouts.with_label_values(&["header"]),
            body: self.client_timeouts.with_label_values(&["body"]),
        }
    }

    /// The PROXY protocol outcome counters.
    pub fn proxy_protocol(&self) -> ProxyProtocolCounters {
        ProxyProtocolCounters {
            header: self.proxy_protocol.with_label_values(&["header"]),
            none: self.proxy_protocol.with_label_values(&["none"]),
            refused: self.proxy_protocol.with_label_values(&["refused"]),
        }
    }

    /// Record a configuration load that succeeded at `now` (Unix seconds), at start-up
    /// or on reload.
    pub fn load_succeeded(&self, reload: bool, now: i64) {
        if reload {
            self.reloads.with_label_values(&["success"]).inc();
        }
        self.last_reload_ok.set(1);
        self.last_reload_ts.set(now as f64);
    }

    /// Record a reload that failed (the old state keeps serving).
    pub fn reload_failed(&self) {
        self.reloads.with_label_values(&["failure"]).inc();
        self.last_reload_ok.set(0);
    }

    /// Count a reload that a change of the watched files started (`server.watch_files`),
    /// by whether it succeeded; [`Metrics::load_succeeded`] or [`Metrics::reload_failed`]
    /// counts it among all reloads as well.
    pub fn watch_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.watch_reloads.with_label_values(&[result]).inc();
    }

    /// Export `keygate_config_info{config_sha256, keys_sha256} 1` for the files just
    /// loaded (both digests as 64 lower-case hex characters) and remove the series of the
    /// files loaded before, so exactly one series is exported. The new series is set
    /// before the old one is removed: a scrape in between sees two, never none.
    pub fn set_config_info(&self, config_sha256: &str, keys_sha256: &str) {
        let new = [config_sha256.to_string(), keys_sha256.to_string()];
        self.config_info
            .with_label_values(&[config_sha256, keys_sha256])
            .set(1);
        // A poisoned lock only means another load panicked mid-update: the value is still
        // the last one set.
        let mut current = self
            .config_info_current
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(old) = current.replace(new.clone()) {
            if old != new {
                let _ = self
                    .config_info
                    .remove_label_values(&[old[0].as_str(), old[1].as_str()]);
            }
        }
    }

    /// Set the key gauges.
    pub fn set_key_gauges(&self, g: KeyGauges) {
        let v = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.keys.with_label_values(&["active"]).set(v(g.active));
        self.keys.with_label_values(&["expired"]).set(v(g.expired));
        self.keys
            .with_label_values(&["disabled"])
            .set(v(g.disabled));
        self.keys.with_label_values(&["pending"]).set(v(g.pending));
        self.quota_consumers
            .with_label_values(&["near"])
            .set(v(g.quota_near));
        self.quota_consumers
            .with_label_values(&["exhausted"])
            .set(v(g.quota_exhausted));
        self.keys_expiring.set(v(g.expiring_soon));
        self.key_store_bytes.set(v(g.store_bytes));
    }

    /// Bring `keygate_access_log_dropped_total` up to the logger's own count.
    pub fn set_access_log_dropped(&self, dropped: u64) {
        let seen = self.access_log_dropped.get();
        if dropped > seen {
            self.access_log_dropped.inc_by(dropped - seen);
        }
    }

    /// The registry every family is in (for families registered elsewhere).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The exposition in Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Buckets of `keygate_limit_store_sync_seconds`: 100 µs to 1 s.
pub const STORE_SYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The shared limit store's families, registered only when `limits.store` is set.
#[derive(Clone)]
pub struct StoreMetrics {
    errors: IntCounterVec,
    sync: prometheus::Histogram,
    up: IntGauge,
    instances: IntGauge,
}

impl StoreMetrics {
    /// The `kind` label values of `keygate_limit_store_errors_total`.
    pub const KINDS: [&'static str; 3] = ["timeout", "connection", "response"];

    /// Create and register the store's families in `metrics`' registry.
    ///
    /// # Errors
    /// `prometheus`'s error when they are already registered.
    pub fn register(metrics: &Metrics) -> prometheus::Result<StoreMetrics> {
        let r = metrics.registry();
        let errors = counter_vec(
            r,
            "keygate_limit_store_errors_total",
            "Failed calls to the shared limit store, by kind (timeout, connection, response).",
            &["kind"],
        )?;
        for k in Self::KINDS {
            errors.with_label_values(&[k]);
        }
        let sync = gauge(
            r,
            prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "keygate_limit_store_sync_seconds",
                    "Duration of successful syncs with the shared limit store (one round trip each).",
                )
                .buckets(STORE_SYNC_BUCKETS.to_vec()),
            )?,
        )?;
        let up = gauge(
            r,
            IntGauge::new(
                "keygate_limit_store_up",
                "1 when the last sync with the shared limit store succeeded, else 0 (limits follow on_error).",
            )?,
        )?;
        let instances = gauge(
            r,
            IntGauge::new(
                "keygate_limit_store_instances",
                "Live keygate instances seen in the shared limit store at the last sync.",
            )?,
        )?;
        Ok(StoreMetrics {
            errors,
            sync,
            up,
            instances,
        })
    }

    /// Count one failed call (`kind` one of [`Self::KINDS`]).
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// Record a successful sync's duration.
    pub fn observe_sync(&self, took: std::time::Duration) {
        self.sync.observe(took.as_secs_f64());
    }

    /// Record whether the store answers.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    /// Record the live instances seen.
    pub fn set_instances(&self, n: u64) {
        self.instances.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests;
