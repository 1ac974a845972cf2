//! Prometheus metrics: families registered into a registry, handles resolved per state.
//!
//! [`Metrics::register`] creates every family once. Each [`State`] gets
//! [`Handles`]: label children for its routes, consumers and upstreams resolved
//! at load time, so recording a request is a few atomic additions with no lock
//! and no label hashing. Label values come only from the configuration (route,
//! upstream and consumer ids) or from fixed sets (auth result, error kind, HTTP
//! status), so cardinality is bounded. [`MetricsApp`] serves `/metrics` and
//! `/healthz`.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::ErrorType;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::auth::{AuthOutcome, Rejection};
use crate::state::{SharedState, State};
use crate::timestamp;

/// Latency buckets for a proxy, in seconds: 0.5 ms … 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Keys expiring within this many seconds count as "expiring soon" (7 days).
pub const EXPIRING_SOON_SECONDS: i64 = 7 * 24 * 3600;
/// The `route` label of requests that matched no route (cannot clash: route names have no parentheses).
pub const NO_ROUTE: &str = "(none)";

/// Authentication results, the values of `keygate_auth_total{result}`.
pub const AUTH_RESULTS: [&str; 9] = [
    "ok",
    "anonymous",
    "missing",
    "invalid",
    "expired",
    "disabled",
    "forbidden",
    "ambiguous",
    "blocked",
];

/// Index of `blocked` in [`AUTH_RESULTS`]: refused by the brute-force limiter.
const BLOCKED: usize = 8;

/// Kinds of upstream failure, the values of `keygate_upstream_errors_total{kind}`.
pub const ERROR_KINDS: [&str; 7] = [
    "connect_refused",
    "connect_timeout",
    "tls",
    "timeout",
    "closed",
    "invalid_response",
    "other",
];

/// The index into [`AUTH_RESULTS`] of an outcome.
pub fn auth_result(o: &AuthOutcome) -> usize {
    match o {
        AuthOutcome::Consumer { .. } => 0,
        AuthOutcome::Anonymous => 1,
        AuthOutcome::Rejected(r) => match r {
            Rejection::Missing => 2,
            Rejection::Invalid => 3,
            Rejection::Expired => 4,
            Rejection::Disabled => 5,
            Rejection::Forbidden => 6,
            Rejection::Ambiguous => 7,
        },
    }
}

/// The index into [`ERROR_KINDS`] of a Pingora error type.
pub fn error_kind(e: &ErrorType) -> usize {
    use ErrorType::*;
    match e {
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError => 0,
        ConnectTimedout => 1,
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | TLSWantX509Lookup => 2,
        ReadTimedout | WriteTimedout => 3,
        ConnectionClosed | ReadError | WriteError => 4,
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => 5,
        _ => 6,
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
    /// `keygate_config_last_reload_successful`: 1 when the last reload worked.
    last_reload_ok: IntGauge,
    /// `keygate_config_last_reload_success_timestamp_seconds`.
    last_reload_ts: Gauge,
    /// `keygate_keys{state}`: keys by state, computed at scrape time.
    keys: IntGaugeVec,
    /// `keygate_keys_expiring_soon`: active keys expiring within 7 days.
    keys_expiring: IntGauge,
    /// `keygate_key_store_bytes`: heap bytes of the key index.
    key_store_bytes: IntGauge,
    /// `keygate_access_log_dropped_total`: access-log lines dropped because stderr was blocked.
    access_log_dropped: IntCounter,
    /// `keygate_client_timeouts_total{phase}`: request heads past
    /// `client_header_timeout_seconds` (`header`) and bodies below the minimum rate (`body`).
    client_timeouts: IntCounterVec,
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

impl Metrics {
    /// Create and register every family into `registry`, plus process metrics and build info.
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
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_request_duration_seconds",
                "Time from request start to the end of the response, by route.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        r.register(Box::new(duration.clone()))?;
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
        let last_reload_ok = IntGauge::new(
            "keygate_config_last_reload_successful",
            "1 if the last configuration load succeeded, else 0.",
        )?;
        r.register(Box::new(last_reload_ok.clone()))?;
        let last_reload_ts = Gauge::new(
            "keygate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )?;
        r.register(Box::new(last_reload_ts.clone()))?;
        let keys = IntGaugeVec::new(
            Opts::new("keygate_keys", "Configured keys by state."),
            &["state"],
        )?;
        r.register(Box::new(keys.clone()))?;
        let keys_expiring = IntGauge::new(
            "keygate_keys_expiring_soon",
            "Active keys that expire within 7 days.",
        )?;
        r.register(Box::new(keys_expiring.clone()))?;
        let key_store_bytes = IntGauge::new(
            "keygate_key_store_bytes",
            "Heap bytes held by the in-memory key index.",
        )?;
        r.register(Box::new(key_store_bytes.clone()))?;
        // Brought up to the logger's own atomic count at each scrape.
        let access_log_dropped = IntCounter::new(
            "keygate_access_log_dropped_total",
            "Access-log lines dropped because the log writer could not keep up.",
        )?;
        r.register(Box::new(access_log_dropped.clone()))?;
        let client_timeouts = counter_vec(
            r,
            "keygate_client_timeouts_total",
            "Client connections cut for a slow request head (phase=header) or body (phase=body).",
            &["phase"],
        )?;
        for phase in ["header", "body"] {
            client_timeouts.with_label_values(&[phase]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new("keygate_build_info", "Build information; always 1."),
            &["version"],
        )?;
        r.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        for result in AUTH_RESULTS {
            auth.with_label_values(&[result]);
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
            last_reload_ok,
            last_reload_ts,
            keys,
            keys_expiring,
            key_store_bytes,
            access_log_dropped,
            client_timeouts,
        })
    }

    /// The client-timeout counters.
    pub fn client_timeouts(&self) -> ClientTimeouts {
        ClientTimeouts {
            header: self.client_timeouts.with_label_values(&["header"]),
            body: self.client_timeouts.with_label_values(&["body"]),
        }
    }

    /// Resolve the label children `state` will record into.
    pub fn handles_for(&self, state: &State) -> Handles {
        let route = |name: &str| RouteHandles {
            requests: self.requests.clone(),
            name: name.to_string(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            duration: self.duration.with_label_values(&[name]),
        };
        Handles {
            routes: state.routes.iter().map(|r| route(&r.name)).collect(),
            unmatched: Some(route(NO_ROUTE)),
            auth: AUTH_RESULTS
                .map(|r| self.auth.with_label_values(&[r]))
                .to_vec(),
            consumers: state
                .consumers
                .iter()
                .map(|c| self.consumer_requests.with_label_values(&[c.id.as_str()]))
                .collect(),
            upstreams: state
                .upstreams
                .iter()
                .map(|u| UpstreamHandles {
                    errors: ERROR_KINDS
                        .iter()
                        .map(|k| {
                            self.upstream_errors
                                .with_label_values(&[u.name.as_str(), k])
                        })
                        .collect(),
                    origin_auth_rejections: self
                        .origin_auth_rejections
                        .with_label_values(&[u.name.as_str()]),
                })
                .collect(),
        }
    }

    /// Record a configuration load that succeeded (at start-up or on reload).
    pub fn load_succeeded(&self, reload: bool) {
        if reload {
            self.reloads.with_label_values(&["success"]).inc();
        }
        self.last_reload_ok.set(1);
        self.last_reload_ts.set(timestamp::now_unix() as f64);
    }

    /// Record a reload that failed (the old state keeps serving).
    pub fn reload_failed(&self) {
        self.reloads.with_label_values(&["failure"]).inc();
        self.last_reload_ok.set(0);
    }

    /// Recompute the key gauges from `state` at time `now`.
    pub fn refresh_keys(&self, state: &State, now: i64) {
        let c = state.key_counts(now);
        self.keys
            .with_label_values(&["active"])
            .set(c.active as i64);
        self.keys
            .with_label_values(&["expired"])
            .set(c.expired as i64);
        self.keys
            .with_label_values(&["disabled"])
            .set(c.disabled as i64);
        let soon = state
            .keys
            .entries()
            .iter()
            .filter(|e| {
                !e.disabled
                    && e.expires_at > now
                    && e.expires_at - now <= EXPIRING_SOON_SECONDS
                    && state
                        .consumers
                        .get(e.consumer as usize)
                        .is_some_and(|c| !c.disabled)
            })
            .count();
        self.keys_expiring.set(soon as i64);
        self.key_store_bytes
            .set(i64::try_from(state.keys.heap_bytes()).unwrap_or(i64::MAX));
        let dropped = crate::logging::ACCESS_DROPPED.load(std::sync::atomic::Ordering::Relaxed);
        let seen = self.access_log_dropped.get();
        if dropped > seen {
            self.access_log_dropped.inc_by(dropped - seen);
        }
    }

    /// The exposition in Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Label children for one route.
pub struct RouteHandles {
    requests: IntCounterVec,
    name: String,
    by_status: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
}

impl RouteHandles {
    fn record(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        let idx = usize::from(status).wrapping_sub(100);
        match self.by_status.get(idx) {
            // Resolved once per (route, status), lock-free afterwards.
            Some(cell) => cell
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[self.name.as_str(), status_label(status)])
                })
                .inc(),
            None => self
                .requests
                .with_label_values(&[self.name.as_str(), "0"])
                .inc(),
        }
    }
}

fn status_label(status: u16) -> &'static str {
    // 100..=599 as static strings, so no allocation per label.
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (100..600).map(|s: u16| s.to_string()).collect());
    labels
        .get(usize::from(status).wrapping_sub(100))
        .map_or("0", String::as_str)
}

/// Label children for one upstream.
pub struct UpstreamHandles {
    errors: Vec<IntCounter>,
    origin_auth_rejections: IntCounter,
}

/// Everything one [`State`] records into; empty (records nothing) until attached.
#[derive(Default)]
pub struct Handles {
    routes: Vec<RouteHandles>,
    unmatched: Option<RouteHandles>,
    auth: Vec<IntCounter>,
    consumers: Vec<IntCounter>,
    upstreams: Vec<UpstreamHandles>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handles({} routes)", self.routes.len())
    }
}

impl Handles {
    /// Count an authentication decision.
    pub fn auth(&self, outcome: &AuthOutcome) {
        if let Some(c) = self.auth.get(auth_result(outcome)) {
            c.inc();
        }
    }

    /// Count a request refused by the brute-force limiter before any key lookup.
    pub fn auth_blocked(&self) {
        if let Some(c) = self.auth.get(BLOCKED) {
            c.inc();
        }
    }

    /// Count a finished request.
    pub fn request(&self, route: Option<usize>, status: u16, consumer: Option<u32>, seconds: f64) {
        let r = match route {
            Some(r) => self.routes.get(r),
            None => self.unmatched.as_ref(),
        };
        if let Some(r) = r {
            r.record(status, seconds);
        }
        if let Some(c) = consumer.and_then(|c| self.consumers.get(c as usize)) {
            c.inc();
        }
    }

    /// Count an upstream failure.
    pub fn upstream_error(&self, upstream: usize, kind: usize) {
        if let Some(c) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.errors.get(kind))
        {
            c.inc();
        }
    }

    /// Count an origin 401/403 to an authenticated request.
    pub fn origin_rejection(&self, upstream: usize) {
        if let Some(u) = self.upstreams.get(upstream) {
            u.origin_auth_rejections.inc();
        }
    }
}

/// The metrics listener: `GET /metrics` and `GET /healthz`.
pub struct MetricsApp {
    metrics: Arc<Metrics>,
    shared: SharedState,
}

impl MetricsApp {
    /// Serve `metrics`, refreshing key gauges from `shared` at each scrape.
    pub fn new(metrics: Arc<Metrics>, shared: SharedState) -> Self {
        MetricsApp { metrics, shared }
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, ctype, body) = match session.req_header().uri.path() {
            "/metrics" => {
                self.metrics
                    .refresh_keys(&self.shared.load(), timestamp::now_unix());
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.encode(),
                )
            }
            "/healthz" => (200, "text/plain; charset=utf-8", b"ok\n".to_vec()),
            _ => (
                404,
                "text/plain; charset=utf-8",
                b"not found: try /metrics or /healthz\n".to_vec(),
            ),
        };
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    /// Metrics with one sample recorded into every family.
    fn exercised() -> (Metrics, Handles) {
        let m = Metrics::register(Registry::new()).unwrap();
        let config = crate::config::Config::from_yaml(
            "secret: { env: X }\nauth: { keys_file: k }\nupstreams: { o: { address: \"127.0.0.1:1\" } }\nroutes: [ { name: api, upstream: o, auth: required } ]\n",
            std::path::Path::new("c"),
        )
        .unwrap();
        let keys = crate::config::KeysFile::from_yaml(
            "consumers: [ { id: acme, keys: [] } ]",
            std::path::Path::new("k"),
        )
        .unwrap();
        let state = crate::state::build(
            &config,
            std::path::Path::new("c"),
            &keys,
            std::path::Path::new("k"),
            b"0123456789abcdef",
        )
        .unwrap();
        let h = m.handles_for(&state);
        m.refresh_keys(&state, 0);
        (m, h)
    }

    #[test]
    fn records_through_handles_and_encodes() {
        let (m, h) = exercised();
        h.request(Some(0), 200, Some(0), 0.002);
        h.request(Some(0), 200, Some(0), 0.002);
        h.request(None, 404, None, 0.0001);
        h.auth(&AuthOutcome::Rejected(Rejection::Expired));
        h.upstream_error(0, error_kind(&ErrorType::ConnectRefused));
        h.origin_rejection(0);
        m.load_succeeded(false);
        let text = String::from_utf8(m.encode()).unwrap();
        assert_eq!(
            line(
                &text,
                "keygate_requests_total{route=\"api\",status=\"200\"}"
            ),
            Some("keygate_requests_total{route=\"api\",status=\"200\"} 2")
        );
        assert!(
            text.contains("keygate_requests_total{route=\"(none)\",status=\"404\"} 1"),
            "{text}"
        );
        assert!(text.contains("keygate_consumer_requests_total{consumer=\"acme\"} 2"));
        assert!(text.contains("keygate_auth_total{result=\"expired\"} 1"));
        assert!(text.contains("keygate_auth_total{result=\"ok\"} 0"));
        assert!(text
            .contains("keygate_upstream_errors_total{kind=\"connect_refused\",upstream=\"o\"} 1"));
        assert!(text.contains("keygate_origin_auth_rejections_total{upstream=\"o\"} 1"));
        assert!(
            text.contains("keygate_request_duration_seconds_bucket{route=\"api\",le=\"0.0025\"} 2")
        );
        assert!(text.contains("keygate_config_last_reload_successful 1"));
        assert!(text.contains("keygate_build_info{version=\""));
        m.reload_failed();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains("keygate_config_reloads_total{result=\"failure\"} 1"));
        assert!(text.contains("keygate_config_last_reload_successful 0"));
    }

    #[test]
    fn grafana_dashboard_queries_only_exported_metrics() {
        let (m, h) = exercised();
        h.request(Some(0), 200, Some(0), 0.002);
        h.upstream_error(0, 0);
        h.origin_rejection(0);
        m.load_succeeded(true);
        let text = String::from_utf8(m.encode()).unwrap();
        let families: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../conf/grafana/keygate.json")).unwrap();
        assert_eq!(dash["uid"], "keygate");
        let panels = dash["panels"].as_array().unwrap();
        let mut used = std::collections::HashSet::new();
        for p in panels {
            assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for tok in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !(tok.starts_with("keygate_") || tok.starts_with("process_")) {
                        continue;
                    }
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| tok.strip_suffix(s).filter(|f| families.contains(f)))
                        .unwrap_or(tok);
                    assert!(
                        families.contains(family),
                        "dashboard queries {tok}, which keygate does not export"
                    );
                    used.insert(family.to_string());
                }
            }
        }
        for needed in [
            "keygate_requests_total",
            "keygate_auth_total",
            "keygate_request_duration_seconds",
            "keygate_config_reloads_total",
            "keygate_keys",
        ] {
            assert!(used.contains(needed), "dashboard has no panel for {needed}");
        }
    }
}
