//! Label children resolved once per configuration, so recording is lock-free.
//!
//! A configuration's routes, consumers and upstreams are known when it is
//! loaded; [`Metrics::handles`] resolves their label children then, and the
//! request path records by index (route, consumer, upstream) with a few atomic
//! additions. A status code's child is resolved on its first use per route.

use std::sync::OnceLock;

use prometheus::{Histogram, IntCounter, IntCounterVec};

use super::{AuthResult, ErrorKind, LimitReason, Metrics, NO_ROUTE};

/// Label children for one route.
struct RouteHandles {
    requests: IntCounterVec,
    name: String,
    by_status: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
    limit_rejections: Vec<IntCounter>,
    expiring_key_requests: IntCounter,
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
struct UpstreamHandles {
    errors: Vec<IntCounter>,
    origin_auth_rejections: IntCounter,
    retries: IntCounter,
    servers: Vec<ServerHandles>,
}

/// Label children for one upstream server.
struct ServerHandles {
    selections: IntCounter,
    ejections: IntCounter,
}

/// Everything one configuration records into; the default records nothing (tests,
/// benches and `keygate check` build configurations without metrics).
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

impl Metrics {
    /// Resolve the label children for a configuration's routes, consumers and upstreams
    /// (each with its servers' addresses); names as configured, and indices into these
    /// lists are what [`Handles`] records by.
    pub fn handles<'a, S: AsRef<[&'a str]>>(
        &self,
        routes: &[&str],
        consumers: impl Iterator<Item = &'a str>,
        upstreams: &[(&'a str, S)],
    ) -> Handles {
        let route = |name: &str| RouteHandles {
            requests: self.requests.clone(),
            name: name.to_string(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            duration: self.duration.with_label_values(&[name]),
            limit_rejections: LimitReason::ALL
                .iter()
                .map(|r| self.limit_rejections.with_label_values(&[name, r.label()]))
                .collect(),
            expiring_key_requests: self.expiring_key_requests.with_label_values(&[name]),
        };
        Handles {
            routes: routes.iter().map(|r| route(r)).collect(),
            unmatched: Some(route(NO_ROUTE)),
            auth: AuthResult::ALL
                .iter()
                .map(|r| self.auth.with_label_values(&[r.label()]))
                .collect(),
            consumers: consumers
                .map(|c| self.consumer_requests.with_label_values(&[c]))
                .collect(),
            upstreams: upstreams
                .iter()
                .map(|(u, servers)| UpstreamHandles {
                    errors: ErrorKind::ALL
                        .iter()
                        .map(|k| self.upstream_errors.with_label_values(&[u, k.label()]))
                        .collect(),
                    origin_auth_rejections: self.origin_auth_rejections.with_label_values(&[u]),
                    retries: self.retries.with_label_values(&[u]),
                    servers: servers
                        .as_ref()
                        .iter()
                        .map(|a| ServerHandles {
                            selections: self.selections.with_label_values(&[u, a]),
                            ejections: self.ejections.with_label_values(&[u, a]),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl Handles {
    /// Count an authentication decision.
    pub fn auth(&self, result: AuthResult) {
        let idx = AuthResult::ALL.iter().position(|r| *r == result);
        if let Some(c) = idx.and_then(|i| self.auth.get(i)) {
            c.inc();
        }
    }

    /// Count a finished request on `route` (index; `None`: no route matched) with
    /// `status`, made by `consumer` (index), that took `seconds`.
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

    /// Count a request on `route` (index) refused by a consumer limit.
    pub fn limit_rejection(&self, route: usize, reason: LimitReason) {
        let idx = LimitReason::ALL.iter().position(|r| *r == reason);
        if let Some(c) = self
            .routes
            .get(route)
            .and_then(|r| r.limit_rejections.get(idx?))
        {
            c.inc();
        }
    }

    /// Count a request on `route` (index) made with a key inside its warning window.
    pub fn expiring_key_request(&self, route: usize) {
        if let Some(r) = self.routes.get(route) {
            r.expiring_key_requests.inc();
        }
    }

    /// Count an upstream failure on `upstream` (index).
    pub fn upstream_error(&self, upstream: usize, kind: ErrorKind) {
        let idx = ErrorKind::ALL.iter().position(|k| *k == kind);
        if let Some(c) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.errors.get(idx?))
        {
            c.inc();
        }
    }

    /// Count an origin 401/403 to an authenticated request on `upstream` (index).
    pub fn origin_rejection(&self, upstream: usize) {
        if let Some(u) = self.upstreams.get(upstream) {
            u.origin_auth_rejections.inc();
        }
    }

    /// Count a request sent to server `server` of `upstream` (indices).
    pub fn selection(&self, upstream: usize, server: usize) {
        if let Some(s) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.servers.get(server))
        {
            s.selections.inc();
        }
    }

    /// Count a passive ejection of server `server` of `upstream` (indices).
    pub fn ejection(&self, upstream: usize, server: usize) {
        if let Some(s) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.servers.get(server))
        {
            s.ejections.inc();
        }
    }

    /// Count a request retried on another server of `upstream` (index).
    pub fn retry(&self, upstream: usize) {
        if let Some(u) = self.upstreams.get(upstream) {
            u.retries.inc();
        }
    }
}
