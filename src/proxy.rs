//! The Pingora `ProxyHttp` implementation: thin phases over pure decisions.
//!
//! ```text
//! new_ctx ─────────► one state snapshot for the whole request
//! request_filter ──► forwarded::client (trusted proxies) ─► admission::admit
//!                    (header limits, canonical host and path, route, brute force,
//!                    authenticate, consumer limits)
//!                    ─► reject: write the problem document ourselves, keep-alive
//! upstream_peer ───► balance: a server of the route's upstream, its pre-built HttpPeer
//! fail_to_connect ─► count toward ejection; retry once on another server
//! connected_to_upstream ─► refuse a TLS connection whose certificate failed (tls.rs)
//! upstream_request_filter ─► canonical target; rewrite::rewrite_upstream_headers
//! request_body_filter ─► tell the connection the body ended (conn.rs rate floor)
//! upstream_response_filter ─► count (and warn about) an origin rejecting keygate's secret
//! response_filter ─► x-request-id; RateLimit fields and the key's Deprecation/Sunset
//! fail_to_proxy ───► 502/504/408 problem documents
//! suppress_error_log ─► no `ERROR Fail to proxy` line repeating an access line
//! logging ─────────► metrics and one access-log record; the connection awaits the next head
//! ```
//!
//! - `ctx`: [`RequestCtx`], the typed per-request context;
//! - `rewrite`: the header rewrite, step by step;
//! - `respond`: problem documents and whether the connection survives them;
//! - `fields`: the rate-limit and expiry-warning fields, and refusal details;
//! - `timeouts`: the 408 for a request head that never completed;
//! - `warnings`: rate-limited warnings and debug lines about origins.
//!
//! Over the ~400-line guideline because the `ProxyHttp` phases stay in one impl so their
//! order reads top to bottom; each phase is a few lines calling out to `proxy/*` and the
//! pure decisions.

mod ctx;
mod fields;
mod respond;
mod rewrite;
mod timeouts;
mod warnings;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::admission::{admit, Admission};
use crate::auth::AuthOutcome;
use crate::conn::DeadlineStream;
use crate::forwarded;
use crate::headers;
use crate::limiter::FailureLimiter;
use crate::logging::{self, AccessRecord};
use crate::metrics::{ErrorKind, NO_SERVER};
use crate::problem::Code;
use crate::request_id::{new_request_id, valid_request_id};
use crate::state::SharedState;
use crate::timestamp;

pub use ctx::{Attempt, RequestCtx};
pub use fields::{detail, insert_cors, insert_credential_fields};
pub use respond::{
    drain_timeout, failure_code, keep_alive_after_rejection, problem_response, MAX_DRAIN_BYTES,
};
pub use rewrite::{edit_response_fields, rewrite_upstream_headers, Rewrite};
pub use timeouts::Timeouts;
pub use warnings::{duplicates_access_line, REJECTION_WARNING_PERIOD, UPSTREAM_TARGET};

/// The gateway: holds the shared state handle and the brute-force table, nothing per request.
pub struct ApiKeyProxy {
    state: SharedState,
    limiter: Arc<FailureLimiter>,
}

impl ApiKeyProxy {
    /// Create a proxy reading `state` (swapped atomically on reload).
    pub fn new(state: SharedState, limiter: Arc<FailureLimiter>) -> Self {
        ApiKeyProxy { state, limiter }
    }
}

/// Whether the client connection is TLS.
fn client_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The TCP peer's address.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The request path as received, without its query string.
fn raw_path(req: &RequestHeader) -> &[u8] {
    req.raw_path()
        .split(|&b| b == b'?')
        .next()
        .unwrap_or_default()
}

/// A connection to the request's server failed before any byte was sent (refused,
/// timed out, TLS handshake or certificate refused): count it toward the server's
/// passive ejection, and decide whether to retry on another server: once per request,
/// only when no byte of the request body was read yet, and only when another server
/// takes requests.
fn connect_failure(ctx: &mut RequestCtx, e: &Error) -> bool {
    let Some((u, server)) = ctx.upstream_server() else {
        return false;
    };
    let state = &ctx.state;
    let Some(upstream) = state.upstreams.get(u) else {
        return false;
    };
    if upstream.balancer.connect_failed(server) {
        state.handles.ejection(u, server);
        warnings::warn_ejected(state, u, server, e);
    }
    let retry = ctx.attempt.retried_from.is_none()
        && ctx.body_bytes == 0
        && upstream.balancer.has_alternative(server);
    if retry {
        ctx.attempt.retried_from = Some(server);
        ctx.attempt.elsewhere = true;
        state.handles.retry(u);
        state.handles.upstream_error(u, ErrorKind::of(e.etype()));
        warnings::debug_retry(state, u, server, e, ctx.request_id.as_bytes());
    }
    retry
}

#[async_trait]
impl ProxyHttp for ApiKeyProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.state.load_full())
    }

    /// Route and authenticate; a rejection is written here and ends the request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let has_body = !session.downstream_session.is_body_empty();
        if let Some(conn) = DeadlineStream::of(session.stream()) {
            conn.head_done(has_body);
        }
        let limits = ctx.state.limits;
        // Pingora keeps HTTP/1.1 connections open forever by default: bound idle time,
        // and the wait for each piece of a request body.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(limits.keepalive_timeout.as_secs()));
        }
        session.set_read_timeout(Some(limits.client_body_timeout));
        // Answer pipelined requests in order (each one judged alone) instead of dropping them.
        session.set_pipelining_enabled(true);
        let req = session.req_header();
        ctx.request_id = match req.headers.get(&headers::X_REQUEST_ID) {
            Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
            _ => new_request_id(),
        };
        ctx.client = forwarded::client(peer_ip(session), &req.headers, &ctx.state.trusted_proxies);
        let mut admission = admit(
            &ctx.state,
            req,
            ctx.client.addr,
            &self.limiter,
            timestamp::now_unix_ms(),
        );
        // A shared quota this instance holds no lease for (yet, or any more): ask for one
        // at once and judge again after each lease round, until the store's timeout (a
        // round's block may go to concurrent requests first: wait for the next one).
        let unavailable =
            |a: &Admission| matches!(a, Admission::Reject(r) if r.code == Code::LimitsUnavailable);
        if let (Some(fleet), true) = (ctx.state.fleet.as_deref(), unavailable(&admission)) {
            let deadline = tokio::time::Instant::now() + fleet.timeout();
            while unavailable(&admission) && fleet.is_up() {
                let round = fleet.lease_round.notified();
                fleet.lease_wanted.notify_one();
                let in_time = tokio::time::timeout_at(deadline, round).await.is_ok();
                admission = admit(
                    &ctx.state,
                    req,
                    ctx.client.addr,
                    &self.limiter,
                    timestamp::now_unix_ms(),
                );
                if !in_time {
                    break;
                }
            }
        }
        let route = match &admission {
            Admission::Forward(f) => Some(f.route),
            Admission::Reject(r) => r.route,
            Admission::Preflight { route } => Some(*route),
        };
        if route
            .and_then(|r| ctx.state.routes.get(r))
            .is_some_and(|r| r.cors.is_some())
        {
            ctx.origin = req.headers.get(http::header::ORIGIN).cloned();
        }
        let answer = match &admission {
            Admission::Reject(r) => Some(Some(r.code)),
            Admission::Preflight { .. } => Some(None),
            Admission::Forward(_) => None,
        };
        ctx.decision = Some(admission);
        match answer {
            Some(Some(code)) => {
                respond::respond(session, ctx, code).await?;
                Ok(true)
            }
            Some(None) => {
                respond::preflight(session, ctx).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Choose a server of the route's upstream (never the one a connection just failed
    /// to) and hand Pingora its pre-built peer; no server: 502 `upstream_unavailable`
    /// at once.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx.forward()?.route;
        let state = &ctx.state;
        let (route, u) = state
            .routes
            .get(route)
            .map(|r| (r, r.upstream))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route without upstream"))?;
        let upstream = state
            .upstreams
            .get(u)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route without upstream"))?;
        let exclude = ctx.attempt.server.filter(|_| ctx.attempt.elsewhere);
        ctx.attempt.elsewhere = false;
        let Some(pick) = upstream.balancer.pick(exclude) else {
            let mut e = Error::explain(
                ErrorType::Custom(NO_SERVER),
                format!("no server of upstream `{}` takes requests", upstream.name),
            );
            e.set_retry(false);
            return Err(e.into_up());
        };
        state.handles.selection(u, pick.server);
        let server = upstream
            .server(pick.server)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "server out of range"))?;
        let mut peer = Box::new(server.peer.clone());
        // A route's own timeouts (a slow report endpoint beside fast ones).
        if let Some(t) = route.connect_timeout {
            peer.options.connection_timeout = Some(t);
            peer.options.total_connection_timeout = Some(t);
        }
        if let Some(t) = route.read_timeout {
            peer.options.read_timeout = Some(t);
            peer.options.write_timeout = Some(t);
        }
        ctx.attempt.server = Some(pick.server);
        ctx.attempt.lease = pick.lease;
        Ok(peer)
    }

    /// A connection failed before any byte was sent: count it toward the server's
    /// ejection, and retry once on another server when one takes requests and no byte
    /// of the request body was read yet.
    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _p: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = connect_failure(ctx, &e);
        e.set_retry(retry);
        e
    }

    /// Refuse a TLS connection to the origin unless its certificate passed keygate's
    /// verification (runs for new and reused connections, before any request byte); a
    /// refusal counts as a failed connection. Any other connection resets the
    /// server's count of consecutive failed connections.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let verdict = if peer.is_tls() {
            crate::tls::verdict(digest)
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => {
                if let Some((u, s)) = ctx.upstream_server() {
                    if let Some(up) = ctx.state.upstreams.get(u) {
                        up.balancer.connected(s);
                    }
                }
                Ok(())
            }
            Err(reason) => {
                let mut e = Error::explain(
                    ErrorType::InvalidCert,
                    format!("{}: {reason}", warnings::CERT_REFUSED),
                );
                // Logged here too: a retry on another server may well succeed, and the
                // refusal would then go unsaid.
                if let Some((u, server)) = ctx.upstream_server() {
                    warnings::warn_tls(&ctx.state, u, Some(server), &e);
                }
                let retry = connect_failure(ctx, &e);
                e.set_retry(retry);
                Err(e.into_up())
            }
        }
    }

    /// Pingora's policy for errors on an established connection (retry an idempotent
    /// request whose reused connection failed), except for a certificate refused in
    /// `connected_to_upstream`: no byte was sent, and the retry was decided there.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.attempt.elsewhere {
            return e;
        }
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// Leave out Pingora's warning about a retried attempt when keygate retries a failed
    /// connection on another server: it is counted (`keygate_upstream_retries_total`,
    /// `keygate_upstream_errors_total`), logged at `debug` under `keygate::upstream`, and
    /// an ejection it causes is logged as a warning.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        matches!(context, ProxyWarnLogContext::UpstreamRetry) && ctx.attempt.elsewhere
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let forward = ctx.forward()?;
        let local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port());
        let forwarded = forwarded::forwarded(
            &session.req_header().headers,
            &ctx.client,
            client_tls(session),
            local_port,
            Some(forward.host.as_bytes()).filter(|h| !h.is_empty()),
        );
        if let Some(target) = &forward.target {
            upstream_request.set_raw_path(target)?;
        }
        rewrite_upstream_headers(
            upstream_request,
            Rewrite {
                state: &ctx.state,
                forward,
                request_id: &ctx.request_id,
                forwarded,
            },
        )
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A body of unknown length (chunked) that passes the route's limit midway: stop
        // here. The origin has received the chunks before this one and sees the request
        // cut off (no final chunk), so it never acts on a partial body as a whole one.
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            let max = ctx
                .route()
                .and_then(|r| ctx.state.routes.get(r))
                .and_then(|r| r.max_request_body);
            if max.is_some_and(|m| ctx.body_bytes > m) {
                ctx.body_too_large = true;
                return Error::e_explain(
                    ErrorType::Custom("request body too large"),
                    "the request body passed the route's max_request_body_bytes",
                );
            }
        }
        if end_of_stream {
            if let Some(conn) = DeadlineStream::of(session.stream()) {
                conn.body_done();
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if (status == 401 || status == 403)
            && matches!(ctx.outcome(), Some(AuthOutcome::Consumer { .. }))
        {
            if let Some(r) = ctx.route().and_then(|r| ctx.state.routes.get(r)) {
                ctx.state.handles.origin_rejection(r.upstream);
                warnings::warn_origin_rejection(&ctx.state, r.upstream, &r.name, status);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Interim responses (`100 Continue`) pass as they are.
        if upstream_response.status.as_u16() < 200 {
            return Ok(());
        }
        let ctx = &*ctx;
        // The origin's names reach the client in lower case (Envoy's default too; Pingora
        // title-cases twelve, `Content-Type` among them): Pingora's case-keeping insert
        // would copy, re-parse and store each added name twice.
        edit_response_fields(upstream_response, |h| {
            if let Ok(f) = ctx.forward() {
                if !f.charge.is_empty() || f.sunset.is_some() {
                    let now_ms = timestamp::now_unix_ms();
                    insert_credential_fields(h, &ctx.state, f.route, &f.charge, f.sunset, now_ms)?;
                }
                if let Some(cors) = ctx.state.routes.get(f.route).and_then(|r| r.cors.as_ref()) {
                    insert_cors(h, cors, ctx.origin.as_ref())?;
                }
            }
            rewrite::put(h, &headers::X_REQUEST_ID, ctx.request_id.clone())
        })
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if e.esource() == &ErrorSource::Upstream {
            if let Some(r) = ctx.route().and_then(|r| ctx.state.routes.get(r)) {
                ctx.state
                    .handles
                    .upstream_error(r.upstream, ErrorKind::of(e.etype()));
                if matches!(e.etype(), ErrorType::InvalidCert) {
                    let server = ctx.upstream_server().map(|(_, s)| s);
                    warnings::warn_tls(&ctx.state, r.upstream, server, e);
                }
            }
        }
        let body_cut = DeadlineStream::of(session.stream()).is_some_and(|c| c.body_was_cut());
        let code = if ctx.body_too_large {
            Some(Code::PayloadTooLarge)
        } else {
            failure_code(e, body_cut)
        };
        // An interim `100 Continue` is not an answer: the final one can still be written.
        let answered = session
            .response_written()
            .is_some_and(|r| r.status.as_u16() >= 200);
        let error_code = match code {
            Some(code) if !answered => {
                if ctx.request_id.is_empty() {
                    ctx.request_id = new_request_id();
                }
                match respond::respond(session, ctx, code).await {
                    Ok(()) => code.status(),
                    Err(_) => 0,
                }
            }
            Some(code) => code.status(),
            None => 0,
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    /// Leave out Pingora's `ERROR Fail to proxy` line when the access line already
    /// records the failure (an upstream error, see [`duplicates_access_line`]); its
    /// reason is logged at `debug` under `keygate::upstream` instead.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        // A body over the route's limit is the client's doing, recorded by its access line.
        if ctx.body_too_large && logging::access_enabled() {
            return true;
        }
        let duplicate = duplicates_access_line(e, logging::access_enabled());
        if duplicate {
            let upstream = ctx
                .route()
                .and_then(|r| ctx.state.routes.get(r))
                .map(|r| r.upstream);
            warnings::debug_upstream_failure(
                &ctx.state,
                upstream,
                ctx.attempt.server,
                e,
                ctx.request_id.as_bytes(),
            );
        }
        duplicate
    }

    /// Pingora's own error line: method, path and request id only (no query, no headers).
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let mut path = String::new();
        for &b in raw_path(req) {
            if b.is_ascii_graphic() {
                path.push(char::from(b));
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        format!(
            "{} {} request_id={}",
            req.method,
            path,
            String::from_utf8_lossy(ctx.request_id.as_bytes())
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(conn) = DeadlineStream::of(session.stream()) {
            conn.request_done();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        let state = &ctx.state;
        let route = ctx.route();
        let counted = match ctx.outcome() {
            Some(AuthOutcome::Consumer { key, consumer, .. }) => Some((*key, *consumer)),
            _ => None,
        };
        let (consumer, key_id) = match counted {
            Some((key, consumer)) => (
                state
                    .consumers
                    .get(consumer as usize)
                    .map(|c| c.id.as_str()),
                Some(state.keys.id(key)),
            ),
            None => (None, None),
        };
        let upstream = route
            .and_then(|r| state.routes.get(r))
            .and_then(|r| state.upstreams.get(r.upstream));
        let server = |i: Option<usize>| Some(upstream?.server(i?)?.address.as_str());
        let req = session.req_header();
        logging::access(&AccessRecord {
            method: Some(req.method.as_str()),
            path: Some(raw_path(req)),
            status,
            route: route
                .and_then(|r| state.routes.get(r))
                .map(|r| r.name.as_str()),
            consumer,
            key_id,
            code: ctx.answered.map(Code::as_str),
            duration: elapsed,
            request_id: ctx.request_id.as_bytes(),
            client: ctx.client.addr,
            error: e.map(|e| e.etype().as_str()),
            key_expires_at: ctx.sunset().map(|s| s.sunset_at),
            upstream_server: server(ctx.attempt.server),
            retried_from: server(ctx.attempt.retried_from),
        });
        // Counted after the access line is buffered: a request counted in the metrics
        // has its line written at exit, however soon the exit follows.
        state.handles.request(
            route,
            status,
            counted.map(|(_, c)| c),
            elapsed.as_secs_f64(),
        );
    }
}
