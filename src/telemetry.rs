//! The telemetry listener: `GET /metrics` (Prometheus text format) and `GET /healthz`.
//!
//! Served on `server.metrics_listen`, apart from client traffic. Gauges that
//! describe the running configuration (keys by state, keys expiring soon, key
//! store size, upstream servers taking requests) and the access log's
//! dropped-line count are computed at each scrape, so expiry (of keys and of
//! ejections) shows without a reload and the request path never touches them.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::{Metrics, ServerGauge};
use crate::state::SharedState;
use crate::timestamp;

/// The telemetry app.
pub struct TelemetryApp {
    metrics: Arc<Metrics>,
    shared: SharedState,
}

impl TelemetryApp {
    /// Serve `metrics`, refreshing the configuration gauges from `shared` at each scrape.
    pub fn new(metrics: Arc<Metrics>, shared: SharedState) -> Self {
        TelemetryApp { metrics, shared }
    }

    /// The `/metrics` body: gauges refreshed, every family encoded.
    pub fn scrape(&self) -> Vec<u8> {
        let state = self.shared.load();
        self.metrics
            .set_key_gauges(state.key_gauges(timestamp::now_unix()));
        self.metrics
            .set_access_log_dropped(crate::logging::dropped_lines());
        let now = crate::balance::now_ms();
        self.metrics
            .set_server_health(state.server_statuses(now).into_iter().map(|s| ServerGauge {
                upstream: s.upstream,
                address: s.address,
                up: s.up,
            }));
        self.metrics.encode()
    }
}

#[async_trait]
impl ServeHttp for TelemetryApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, ctype, body) = match session.req_header().uri.path() {
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.scrape(),
            ),
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
