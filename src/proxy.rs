//! The Pingora `ProxyHttp` implementation: thin phases over pure decisions.
//!
//! ```text
//! request_filter ──► admission::admit (limits, path, route, brute force, authenticate)
//!                    ─► reject: write the problem document ourselves, keep-alive
//! upstream_peer ───► the route's pre-built HttpPeer
//! upstream_request_filter ─► strip credential + spoofed headers, add secret, identity, forwarding
//! response_filter ─► x-request-id on the response
//! fail_to_proxy ───► 502/504 problem documents
//! logging ─────────► one access-log line
//! ```
//!
//! Each request loads the shared state once in `request_filter` and keeps that
//! `Arc<State>` in its [`RequestCtx`], so every phase of one request sees the
//! same configuration even if a reload swaps in a new one meanwhile.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::admission::{admit, new_request_id, valid_request_id, Admission};
use crate::auth::AuthOutcome;
use crate::limiter::FailureLimiter;
use crate::logging;
use crate::metrics;
use crate::problem::Code;
use crate::state::{SharedState, State, IDENTITY_HEADERS};
use crate::timestamp;

/// Request bodies above this size are not drained after a rejection: the connection closes.
const MAX_DRAIN_BYTES: u64 = 64 * 1024;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

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

/// Per-request state shared across phases.
pub struct RequestCtx {
    /// The state snapshot this request started with.
    pub state: Option<Arc<State>>,
    /// The matched route.
    pub route: Option<usize>,
    /// The authentication outcome.
    pub outcome: Option<AuthOutcome>,
    /// The request id (incoming if well-formed, else generated).
    pub request_id: HeaderValue,
    /// Set when keygate answered the request itself.
    pub code: Option<Code>,
    /// New request target for the origin (normalized path, origin-form).
    pub target: Option<Vec<u8>>,
    /// `Retry-After` seconds for a 429.
    pub retry_after: Option<u64>,
    /// When the request started.
    pub start: Instant,
}

/// Rewrite the request headers for the origin: the pure part of `upstream_request_filter`.
pub fn rewrite_upstream_headers(
    req: &mut RequestHeader,
    state: &State,
    route: usize,
    outcome: &AuthOutcome,
    request_id: &HeaderValue,
    client_ip: Option<IpAddr>,
    tls: bool,
) -> Result<()> {
    // 1. The credential that was used never reaches the origin.
    if let AuthOutcome::Consumer { sources, .. } = outcome {
        for (i, s) in state.sources.iter().enumerate().take(32) {
            if sources & (1 << i) != 0 {
                req.remove_header(&s.header);
            }
        }
    }
    // 2. Nothing the client sent under keygate's own header names survives.
    // One pass over the names first: spoofing is rare, and each removal costs a lookup.
    let spoofed = req
        .headers
        .keys()
        .any(|k| *k == state.secret.header || IDENTITY_HEADERS.contains(&k.as_str()));
    if spoofed {
        req.remove_header(&state.secret.header);
        for h in IDENTITY_HEADERS {
            req.remove_header(h);
        }
    }
    req.insert_header(state.secret.header_case.clone(), state.secret.value.clone())?;
    match *outcome {
        AuthOutcome::Consumer { key, consumer, .. } => {
            if let Some(c) = state.consumers.get(consumer as usize) {
                req.insert_header("x-consumer-id", c.id_header.clone())?;
                if let Some(n) = &c.name_header {
                    req.insert_header("x-consumer-username", n.clone())?;
                }
            }
            if let Some(id) = state.keys.id_header(key) {
                req.insert_header("x-credential-identifier", id)?;
            }
        }
        _ => req.insert_header("x-anonymous-consumer", TRUE.clone())?,
    }
    // 3. Forwarding headers.
    if let Some(ip) = client_ip {
        let mut xff = String::with_capacity(64);
        for v in req.headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(s) = v.to_str() {
                if !s.trim().is_empty() {
                    xff.push_str(s.trim());
                    xff.push_str(", ");
                }
            }
        }
        use std::fmt::Write;
        let _ = write!(xff, "{ip}");
        req.insert_header("x-forwarded-for", xff)?;
    }
    req.insert_header(
        "x-forwarded-proto",
        if tls { HTTPS.clone() } else { HTTP.clone() },
    )?;
    let host = req
        .uri
        .authority()
        .map(|a| HeaderValue::from_str(a.as_str()))
        .transpose()
        .ok()
        .flatten()
        .or_else(|| req.headers.get(header::HOST).cloned());
    match host {
        Some(h) => req.insert_header("x-forwarded-host", h)?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    req.insert_header("x-request-id", request_id.clone())?;
    if let Some(route) = state.routes.get(route) {
        if let Some(h) = state
            .upstreams
            .get(route.upstream)
            .and_then(|u| u.host_header.as_ref())
        {
            req.insert_header(header::HOST, h.clone())?;
        }
    }
    Ok(())
}

/// Write a problem document for `code` and keep the connection alive when that is safe.
async fn respond(session: &mut Session, ctx: &mut RequestCtx, code: Code) -> Result<()> {
    ctx.code = Some(code);
    let body = Bytes::from(code.body(ctx.request_id.as_bytes()));
    let mut resp = ResponseHeader::build(code.status(), Some(6))?;
    resp.insert_header(header::CONTENT_TYPE, PROBLEM_JSON.clone())?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CACHE_CONTROL, NO_STORE.clone())?;
    resp.insert_header("x-request-id", ctx.request_id.clone())?;
    if let Some(challenge) = code.www_authenticate() {
        resp.insert_header(header::WWW_AUTHENTICATE, challenge)?;
    }
    if let Some(secs) = ctx.retry_after {
        resp.insert_header(header::RETRY_AFTER, secs)?;
    }
    // A large or unbounded body would have to be read before the connection can be
    // reused; don't read it for a request we are turning away.
    let req = session.req_header();
    let chunked = req.headers.contains_key(header::TRANSFER_ENCODING);
    let long = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_DRAIN_BYTES);
    if chunked
        || long
        || matches!(
            code,
            Code::HeadersTooLarge | Code::InvalidPath | Code::BadRequest
        )
    {
        session.set_keepalive(None);
        resp.insert_header(header::CONNECTION, "close")?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

fn current(ctx: &RequestCtx) -> Result<(&Arc<State>, usize)> {
    match (&ctx.state, ctx.route) {
        (Some(s), Some(r)) => Ok((s, r)),
        _ => Error::e_explain(ErrorType::InternalError, "no route selected"),
    }
}

#[async_trait]
impl ProxyHttp for ApiKeyProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            state: None,
            route: None,
            outcome: None,
            request_id: HeaderValue::from_static(""),
            code: None,
            target: None,
            retry_after: None,
            start: Instant::now(),
        }
    }

    /// Route and authenticate; a rejection is written here and ends the request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.state.load_full();
        // Pingora keeps HTTP/1.1 connections open forever by default: bound idle time,
        // and the wait for each piece of a request body.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(state.limits.keepalive_timeout_seconds));
        }
        session.set_read_timeout(Some(state.limits.client_body_timeout));
        // Answer pipelined requests in order (each one judged alone) instead of dropping them.
        session.set_pipelining_enabled(true);
        let req = session.req_header();
        ctx.request_id = match req.headers.get(&X_REQUEST_ID) {
            Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
            _ => new_request_id(),
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let admission = admit(&state, req, client, &self.limiter, timestamp::now_unix());
        ctx.state = Some(state);
        match admission {
            Admission::Forward {
                route,
                outcome,
                target,
            } => {
                ctx.route = Some(route);
                ctx.outcome = Some(outcome);
                ctx.target = target;
                Ok(false)
            }
            Admission::Reject {
                code,
                route,
                outcome,
                retry_after,
            } => {
                ctx.route = route;
                ctx.outcome = outcome;
                ctx.retry_after = retry_after;
                respond(session, ctx, code).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (state, route) = current(ctx)?;
        let upstream = state
            .routes
            .get(route)
            .and_then(|r| state.upstreams.get(r.upstream))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route without upstream"))?;
        Ok(Box::new(upstream.peer.clone()))
    }

    /// Connection failures go straight to `fail_to_proxy`: there is one peer per route.
    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _p: &HttpPeer,
        _c: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        e.set_retry(false);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (state, route) = current(ctx)?;
        let outcome = ctx.outcome.unwrap_or(AuthOutcome::Anonymous);
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if let Some(target) = &ctx.target {
            upstream_request.set_raw_path(target)?;
        }
        rewrite_upstream_headers(
            upstream_request,
            state,
            route,
            &outcome,
            &ctx.request_id,
            client_ip,
            tls,
        )
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if (status == 401 || status == 403)
            && matches!(ctx.outcome, Some(AuthOutcome::Consumer { .. }))
        {
            if let Ok((state, route)) = current(ctx) {
                if let Some(r) = state.routes.get(route) {
                    state.handles.origin_rejection(r.upstream);
                }
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
        upstream_response.insert_header("x-request-id", ctx.request_id.clone())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if e.esource() == &ErrorSource::Upstream {
            if let Ok((state, route)) = current(ctx) {
                if let Some(r) = state.routes.get(route) {
                    state
                        .handles
                        .upstream_error(r.upstream, metrics::error_kind(e.etype()));
                }
            }
        }
        let code = match (e.esource(), e.etype()) {
            (
                _,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) if e.esource() == &ErrorSource::Upstream => Some(Code::UpstreamTimeout),
            (ErrorSource::Upstream, _) => Some(Code::UpstreamUnavailable),
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, _) => Some(Code::BadRequest),
            _ => Some(Code::Internal),
        };
        let error_code = match code {
            Some(code) if session.response_written().is_none() => {
                if ctx.request_id.is_empty() {
                    ctx.request_id = new_request_id();
                }
                match respond(session, ctx, code).await {
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

    /// Pingora's own error line: method, path and request id only (no query, no headers).
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {} request_id={}",
            req.method,
            req.uri.path(),
            String::from_utf8_lossy(ctx.request_id.as_bytes())
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(state) = &ctx.state {
            let consumer = match ctx.outcome {
                Some(AuthOutcome::Consumer { consumer, .. }) => Some(consumer),
                _ => None,
            };
            state.handles.request(
                ctx.route,
                status,
                consumer,
                ctx.start.elapsed().as_secs_f64(),
            );
        }
        logging::access(session, e, ctx, status);
    }
}
