//! Active health checks: one keygate-owned background service probing every server of
//! every upstream that has a `health_check`.
//!
//! Each round reads the live state ([`SharedState`]), so a reload's new upstreams,
//! servers, paths, thresholds and shared secret apply from the next probe on, and a
//! server that remains keeps its health ([`crate::balance::ServerHealth`] travels with
//! it). A new server is due at once; the loop wakes at least every
//! [`MAX_SLEEP`], so a server a reload adds is probed within that. Probes run
//! concurrently, one at a time per server, each bounded by the check's `timeout_ms`.
//!
//! A probe connects the way a request does, with a fresh connection (never a pooled
//! one, which could hide a server that stopped accepting): the server's own peer, its
//! TLS trust and certificate check (`crate::tls`: a refused certificate fails the
//! probe). A TCP probe stops there; an HTTP probe sends `GET <path>` with `Host` (the
//! upstream's `host_header`, else the server's address) and the shared secret header
//! (origins refuse anything else), and passes when the status is one of
//! `healthy_statuses`.
//!
//! Pingora's `pingora-load-balancing` has health checks of its own (`TcpHealthCheck`,
//! `HttpHealthCheck`), but they take a fixed request and a registry set before the
//! server starts, and cannot see keygate's certificate verdict; the connection code
//! here is the same Pingora connector they use.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header;
use log::{debug, info, warn};
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::balance::{now_ms, Probed, Transition};
use crate::state::{HealthCheck, Server, SharedState, State, Upstream};

/// The longest the loop sleeps between two looks at the state.
pub const MAX_SLEEP: Duration = Duration::from_millis(250);
/// The target of the health-check log lines (`KEYGATE_LOG=info,keygate::health=debug`).
pub const HEALTH_TARGET: &str = "keygate::health";

/// Probes upstream servers in the background.
pub struct HealthChecker {
    shared: SharedState,
    connector: Arc<TransportConnector>,
}

impl HealthChecker {
    /// Probe the servers of the state in `shared` (read again at each round).
    pub fn new(shared: SharedState) -> Self {
        HealthChecker {
            shared,
            connector: Arc::new(TransportConnector::new(None)),
        }
    }

    /// Start the probes that are due now; returns when the next one is due (on
    /// [`now_ms`]).
    fn round(&self, state: &Arc<State>) -> u64 {
        let now = now_ms();
        let mut next = now + u64::try_from(MAX_SLEEP.as_millis()).unwrap_or(250);
        for (u, upstream) in state.upstreams.iter().enumerate() {
            let Some(check) = &upstream.health_check else {
                continue;
            };
            for s in 0..upstream.servers.len() {
                let Some(health) = upstream.balancer.health(s) else {
                    continue;
                };
                let interval = u64::try_from(check.interval.as_millis()).unwrap_or(u64::MAX);
                if health.start_probe(now, interval) {
                    let (state, connector) = (state.clone(), self.connector.clone());
                    tokio::spawn(async move {
                        let Some((upstream, server, check)) = parts(&state, u, s) else {
                            return;
                        };
                        let result = probe(&connector, &state, server, check).await;
                        if let Some(health) = upstream.balancer.health(s) {
                            let change = health.observe(
                                result.is_ok(),
                                check.healthy_threshold,
                                check.unhealthy_threshold,
                            );
                            if let Some(t) = change {
                                report(upstream, server, t, result.as_ref().err());
                            } else if let Err(reason) = &result {
                                debug!(target: HEALTH_TARGET, "upstream `{}` server {}: health check failed: {reason}", upstream.name, server.address);
                            }
                            health.finish_probe();
                        }
                    });
                }
                next = next.min(health.next_probe().max(now + 1));
            }
        }
        next
    }
}

/// Upstream `u`, its server `s` and its health check, in `state`.
fn parts(state: &State, u: usize, s: usize) -> Option<(&Upstream, &Server, &HealthCheck)> {
    let upstream = state.upstreams.get(u)?;
    Some((
        upstream,
        upstream.server(s)?,
        upstream.health_check.as_ref()?,
    ))
}

/// Log a change of a server's health: a warning when it stops taking requests, info
/// when it comes back, debug when a new server's first probe passes.
fn report(upstream: &Upstream, server: &Server, t: Transition, reason: Option<&String>) {
    let (name, address) = (&upstream.name, &server.address);
    let probes = if t.after == 1 {
        "1 health check".to_string()
    } else {
        format!("{} consecutive health checks", t.after)
    };
    match (t.from, t.to) {
        (_, Probed::Unhealthy) => warn!(
            target: HEALTH_TARGET,
            "upstream `{name}` server {address} is unhealthy after {probes} failed: {}; it gets no requests until it passes again",
            reason.map_or("", String::as_str)
        ),
        (Probed::Unknown, _) => {
            debug!(target: HEALTH_TARGET, "upstream `{name}` server {address} is healthy (first health check passed)")
        }
        _ => info!(
            target: HEALTH_TARGET,
            "upstream `{name}` server {address} is healthy again after {probes} passed"
        ),
    }
}

/// Probe one server: connect (and verify its certificate), then for an HTTP check send
/// `GET path` and judge the status. `Err` holds the reason in a few words.
async fn probe(
    connector: &TransportConnector,
    state: &State,
    server: &Server,
    check: &HealthCheck,
) -> Result<(), String> {
    let mut peer = server.peer.clone();
    let o = &mut peer.options;
    o.connection_timeout = Some(check.timeout);
    o.total_connection_timeout = Some(check.timeout);
    o.read_timeout = Some(check.timeout);
    o.write_timeout = Some(check.timeout);
    let work = async {
        let stream = connector.new_stream(&peer).await.map_err(|e| reason(&e))?;
        let mut session = HttpSession::new_with_options(stream, &peer);
        if server.trust.is_some() {
            crate::tls::verdict(Some(session.digest()))
                .map_err(|r| format!("origin certificate refused: {r}"))?;
        }
        let Some(path) = &check.path else {
            return Ok(());
        };
        let mut req = RequestHeader::build("GET", path.as_bytes(), Some(5))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let secret = &state.secret;
        for (name, value) in [
            (header::HOST, server.probe_host.clone()),
            (secret.header.clone(), secret.value.clone()),
            (
                header::USER_AGENT,
                header::HeaderValue::from_static(USER_AGENT),
            ),
            (
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            ),
        ] {
            req.insert_header(name, value)
                .map_err(|e| format!("cannot build the request: {e}"))?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| reason(&e))?;
        loop {
            session.read_response().await.map_err(|e| reason(&e))?;
            let status = session.get_status().map_or(0, |s| s.as_u16());
            // 100 Continue and other informational answers come before the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            return if check.passes(status) {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            };
        }
    };
    match tokio::time::timeout(check.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
    }
}

/// The `User-Agent` of health probes.
const USER_AGENT: &str = concat!("keygate-health-check/", env!("CARGO_PKG_VERSION"));

/// A Pingora error in a few words: its type, and the operating system's or TLS
/// library's reason when there is one.
fn reason(e: &pingora::Error) -> String {
    let root = e.root_cause();
    if root.downcast_ref::<pingora::Error>().is_some() {
        e.etype().as_str().to_string()
    } else {
        format!("{}: {root}", e.etype().as_str())
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let state = self.shared.load_full();
            let next = self.round(&state);
            drop(state);
            let wait = Duration::from_millis(next.saturating_sub(now_ms()).max(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
}
