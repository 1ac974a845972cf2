//! The Pingora `ProxyHttp` implementation: thin phases over pure decisions.
//!
//! ```text
//! request_filter ──► forwarded::client (trusted proxies) ─► admission::admit
//!                    (limits, canonical host and path, route, brute force, authenticate)
//!                    ─► reject: write the problem document ourselves, keep-alive
//! upstream_peer ───► the route's pre-built HttpPeer
//! connected_to_upstream ─► refuse a TLS connection whose certificate failed (tls.rs)
//! upstream_request_filter ─► canonical target and Host; strip credentials and every
//!                            client claim; add secret, identity, forwarding headers
//! request_body_filter ─► tell the connection the body ended (conn.rs rate floor)
//! response_filter ─► x-request-id on the response
//! fail_to_proxy ───► 502/504/408 problem documents
//! logging ─────────► one access-log record; the connection awaits the next head
//! ```
//!
//! Each request loads the shared state once in `request_filter` and keeps that
//! `Arc<State>` in its [`RequestCtx`], so every phase of one request sees the
//! same configuration even if a reload swaps in a new one meanwhile.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::admission::{admit, new_request_id, valid_request_id, Admission, Forward};
use crate::auth::{self, AuthOutcome};
use crate::config::AuthMode;
use crate::conn::{DeadlineStream, TimeoutReporter};
use crate::forwarded::{self, Client, Forwarded};
use crate::headers;
use crate::limiter::FailureLimiter;
use crate::logging::{self, AccessRecord};
use crate::metrics::{self, ClientTimeouts};
use crate::problem::Code;
use crate::state::{SharedState, State};
use crate::timestamp;

/// Request bodies above this size are not drained after a rejection: the connection closes.
pub const MAX_DRAIN_BYTES: u64 = 64 * 1024;

static PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
static TRUE: HeaderValue = HeaderValue::from_static("true");
/// The `Allow` of a 405: the methods keygate forwards.
static FORWARDED_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");

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
    /// What changes on the way to the origin (set when the request is forwarded).
    pub forward: Option<Forward>,
    /// Who the client is (after trusted proxies).
    pub client: Client,
    /// `Retry-After` seconds for a 429.
    pub retry_after: Option<u64>,
    /// When the request started.
    pub start: Instant,
}

/// Everything the header rewrite needs besides the request itself.
pub struct Rewrite<'a> {
    /// The state snapshot.
    pub state: &'a State,
    /// The admitted request.
    pub forward: &'a Forward,
    /// The request id.
    pub request_id: &'a HeaderValue,
    /// The forwarding headers decided for this request.
    pub forwarded: Forwarded,
}

/// Rewrite the request headers for the origin: the pure part of `upstream_request_filter`.
///
/// In order: remove the credential that was used (and, on `auth: none` routes, any
/// keygate credential); remove every header a client could use to make a claim
/// ([`headers::is_client_claim`]) and the secret header; add the secret, the
/// identity, the forwarding headers, the request id and the canonical `Host`.
///
/// # Errors
/// Pingora's error when a header cannot be inserted (never for values built here).
pub fn rewrite_upstream_headers(req: &mut RequestHeader, rw: Rewrite<'_>) -> Result<()> {
    let Rewrite {
        state,
        forward,
        request_id,
        forwarded,
    } = rw;
    strip_credentials(req, state, forward);
    strip_client_claims(req, &state.secret.header);
    req.insert_header(state.secret.header_case.clone(), state.secret.value.clone())?;
    insert_identity(req, state, &forward.outcome)?;
    if let Some(v) = forwarded.for_ {
        req.insert_header(headers::X_FORWARDED_FOR.clone(), v)?;
    }
    req.insert_header(headers::X_FORWARDED_PROTO.clone(), forwarded.proto)?;
    if let Some(v) = forwarded.host {
        req.insert_header(headers::X_FORWARDED_HOST.clone(), v)?;
    }
    if let Some(v) = forwarded.port {
        req.insert_header(headers::X_FORWARDED_PORT.clone(), v)?;
    }
    req.insert_header(headers::X_REQUEST_ID.clone(), request_id.clone())?;
    let upstream_host = state
        .routes
        .get(forward.route)
        .and_then(|r| state.upstreams.get(r.upstream))
        .and_then(|u| u.host_header.as_ref());
    match upstream_host {
        Some(h) => req.insert_header(header::HOST, h.clone())?,
        None if forward.host_changed => req.insert_header(header::HOST, forward.host.clone())?,
        None => {}
    }
    Ok(())
}

/// Remove the credential that authenticated the request; on `auth: none` routes, remove
/// any keygate credential a client sent along anyway.
fn strip_credentials(req: &mut RequestHeader, state: &State, forward: &Forward) {
    let mask = match forward.outcome {
        AuthOutcome::Consumer { sources, .. } => sources,
        _ => {
            let none_route = state
                .routes
                .get(forward.route)
                .is_some_and(|r| r.auth == AuthMode::None);
            if none_route {
                auth::keygate_credentials(state, &req.headers)
            } else {
                0
            }
        }
    };
    for (i, s) in state.sources.iter().enumerate().take(32) {
        if mask & (1 << i) != 0 {
            req.remove_header(&s.header);
        }
    }
}

/// Remove every client-sent header that claims identity, URL, host, scheme, port or
/// client address, every header with `_` in its name, and the secret header.
fn strip_client_claims(req: &mut RequestHeader, secret: &HeaderName) {
    // One pass over the names first: claims are rare, and each removal costs a lookup.
    let claims: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| *k == secret || headers::is_client_claim(k.as_str()))
        .cloned()
        .collect();
    for name in claims {
        req.remove_header(&name);
    }
}

fn insert_identity(req: &mut RequestHeader, state: &State, outcome: &AuthOutcome) -> Result<()> {
    match *outcome {
        AuthOutcome::Consumer { key, consumer, .. } => {
            if let Some(c) = state.consumers.get(consumer as usize) {
                req.insert_header(headers::X_CONSUMER_ID.clone(), c.id_header.clone())?;
                if let Some(n) = &c.name_header {
                    req.insert_header(headers::X_CONSUMER_USERNAME.clone(), n.clone())?;
                }
            }
            if let Some(id) = state.keys.id_header(key) {
                req.insert_header(headers::X_CREDENTIAL_IDENTIFIER.clone(), id)?;
            }
        }
        _ => req.insert_header(headers::X_ANONYMOUS_CONSUMER.clone(), TRUE.clone())?,
    }
    Ok(())
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

/// Write a problem document for `code` and keep the connection alive when that is safe.
async fn respond(session: &mut Session, ctx: &mut RequestCtx, code: Code) -> Result<()> {
    ctx.code = Some(code);
    let body = Bytes::from(code.body(ctx.request_id.as_bytes()));
    let mut resp = ResponseHeader::build(code.status(), Some(6))?;
    resp.insert_header(header::CONTENT_TYPE, PROBLEM_JSON.clone())?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CACHE_CONTROL, NO_STORE.clone())?;
    resp.insert_header(headers::X_REQUEST_ID.clone(), ctx.request_id.clone())?;
    if let Some(challenge) = code.www_authenticate() {
        resp.insert_header(header::WWW_AUTHENTICATE, challenge)?;
    }
    if let Some(secs) = ctx.retry_after {
        resp.insert_header(header::RETRY_AFTER, secs)?;
    }
    if code == Code::MethodNotAllowed {
        resp.insert_header(header::ALLOW, FORWARDED_METHODS.clone())?;
    }
    if keep_alive_after_rejection(session.req_header(), code) {
        // A small body still on the wire is read and discarded, so the next request on
        // this connection starts where it should; bounded by the body-rate floor.
        session.set_close_on_response_before_downstream_finish(false);
        session.set_total_drain_timeout(Some(drain_timeout(ctx)));
    } else {
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

/// Whether a connection can be kept after keygate turns a request away: not when the
/// request was malformed or timed out, announces a body larger than [`MAX_DRAIN_BYTES`]
/// or of unknown length (chunked), or waits for `100 Continue` (the client may send the
/// body or not, so the next bytes cannot be framed, RFC 9110 §10.1.1).
pub fn keep_alive_after_rejection(req: &RequestHeader, code: Code) -> bool {
    if matches!(
        code,
        Code::HeadersTooLarge
            | Code::InvalidPath
            | Code::InvalidHost
            | Code::BadRequest
            | Code::RequestTimeout
    ) {
        return false;
    }
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    let length = match req.headers.get(header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => n,
            None => return false,
        },
    };
    let expects_continue = req
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    length <= MAX_DRAIN_BYTES && !(expects_continue && length > 0)
}

/// The longest a rejected request's remaining body may take to arrive.
fn drain_timeout(ctx: &RequestCtx) -> Duration {
    let limits = ctx.state.as_ref().map(|s| s.limits);
    match limits {
        Some(l) if l.client_body_min_rate > 0 => {
            l.client_body_timeout
                + Duration::from_secs(MAX_DRAIN_BYTES / l.client_body_min_rate + 1)
        }
        Some(l) => l.client_body_timeout,
        None => Duration::from_secs(crate::config::DEFAULT_CLIENT_BODY_TIMEOUT_SECONDS),
    }
}

fn current(ctx: &RequestCtx) -> Result<(&Arc<State>, &Forward)> {
    match (&ctx.state, &ctx.forward) {
        (Some(s), Some(f)) => Ok((s, f)),
        _ => Error::e_explain(ErrorType::InternalError, "no route selected"),
    }
}

/// Upstream TLS failures logged per second at most (each is also in the access log).
static LAST_TLS_WARNING: AtomicU64 = AtomicU64::new(0);

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
            forward: None,
            client: Client {
                addr: None,
                peer: None,
                via_trusted_proxy: false,
            },
            retry_after: None,
            start: Instant::now(),
        }
    }

    /// Route and authenticate; a rejection is written here and ends the request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.state.load_full();
        let has_body = !session.downstream_session.is_body_empty();
        if let Some(conn) = DeadlineStream::of(session.stream()) {
            conn.head_done(has_body);
        }
        // Pingora keeps HTTP/1.1 connections open forever by default: bound idle time,
        // and the wait for each piece of a request body.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(state.limits.keepalive_timeout_seconds));
        }
        session.set_read_timeout(Some(state.limits.client_body_timeout));
        // Answer pipelined requests in order (each one judged alone) instead of dropping them.
        session.set_pipelining_enabled(true);
        let req = session.req_header();
        ctx.request_id = match req.headers.get(&headers::X_REQUEST_ID) {
            Some(v) if valid_request_id(v.as_bytes()) => v.clone(),
            _ => new_request_id(),
        };
        ctx.client = forwarded::client(peer_ip(session), &req.headers, &state.trusted_proxies);
        let admission = admit(
            &state,
            req,
            ctx.client.addr,
            &self.limiter,
            timestamp::now_unix(),
        );
        ctx.state = Some(state);
        match admission {
            Admission::Forward(f) => {
                ctx.route = Some(f.route);
                ctx.outcome = Some(f.outcome);
                ctx.forward = Some(f);
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
        let (state, forward) = current(ctx)?;
        let upstream = state
            .routes
            .get(forward.route)
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

    /// Refuse a TLS connection to the origin unless its certificate passed keygate's
    /// verification (runs for new and reused connections, before any request byte).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !peer.is_tls() {
            return Ok(());
        }
        crate::tls::verdict(digest).map_err(|reason| {
            let mut e = Error::explain(
                ErrorType::InvalidCert,
                format!("origin certificate refused: {reason}"),
            );
            e.set_retry(false);
            e.into_up()
        })
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (state, forward) = current(ctx)?;
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
                state,
                forward,
                request_id: &ctx.request_id,
                forwarded,
            },
        )
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
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
            && matches!(ctx.outcome, Some(AuthOutcome::Consumer { .. }))
        {
            if let Ok((state, forward)) = current(ctx) {
                if let Some(r) = state.routes.get(forward.route) {
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
        upstream_response.insert_header(headers::X_REQUEST_ID.clone(), ctx.request_id.clone())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if e.esource() == &ErrorSource::Upstream {
            if let Ok((state, forward)) = current(ctx) {
                if let Some(r) = state.routes.get(forward.route) {
                    state
                        .handles
                        .upstream_error(r.upstream, metrics::error_kind(e.etype()));
                    if matches!(e.etype(), ErrorType::InvalidCert) {
                        warn_tls(state, r.upstream, e);
                    }
                }
            }
        }
        let body_cut = DeadlineStream::of(session.stream()).is_some_and(|c| c.body_was_cut());
        let code = match (e.esource(), e.etype()) {
            _ if body_cut => Some(Code::RequestTimeout),
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
        let mut path = String::new();
        for &b in req
            .raw_path()
            .split(|&b| b == b'?')
            .next()
            .unwrap_or_default()
        {
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
        let state = ctx.state.as_deref();
        let (consumer, key_id) = match (ctx.outcome, state) {
            (Some(AuthOutcome::Consumer { key, consumer, .. }), Some(s)) => {
                s.handles
                    .request(ctx.route, status, Some(consumer), elapsed.as_secs_f64());
                (
                    s.consumers
                        .get(consumer as usize)
                        .map_or("-", |c| c.id.as_str()),
                    s.keys.id(key),
                )
            }
            (_, Some(s)) => {
                s.handles
                    .request(ctx.route, status, None, elapsed.as_secs_f64());
                ("-", "-")
            }
            _ => ("-", "-"),
        };
        let route = ctx
            .route
            .and_then(|r| state?.routes.get(r))
            .map_or("-", |r| r.name.as_str());
        let req = session.req_header();
        logging::access(&AccessRecord {
            method: req.method.as_str(),
            path: req
                .raw_path()
                .split(|&b| b == b'?')
                .next()
                .unwrap_or_default(),
            status,
            route,
            consumer,
            key_id,
            code: ctx.code.map_or("-", Code::as_str),
            duration: elapsed,
            request_id: ctx.request_id.as_bytes(),
            client: ctx.client.addr,
            error: e.map(|e| e.etype().as_str()),
        });
    }
}

/// Log why an origin's certificate was refused, at most once a second.
fn warn_tls(state: &State, upstream: usize, e: &Error) {
    let now = u64::try_from(timestamp::now_unix()).unwrap_or(0);
    let last = LAST_TLS_WARNING.load(Ordering::Relaxed);
    if now > last
        && LAST_TLS_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let name = state
            .upstreams
            .get(upstream)
            .map_or("-", |u| u.name.as_str());
        let reason = e
            .context
            .as_ref()
            .map(|c| c.as_str())
            .unwrap_or("TLS verification failed");
        log::warn!(target: "keygate::upstream", "upstream `{name}`: {reason}");
    }
}

/// Writes the 408 for a request head that timed out, and counts both kinds of timeout.
pub struct Timeouts {
    shared: SharedState,
    counters: ClientTimeouts,
}

impl Timeouts {
    /// Report timeouts into `counters`, reading the state's handles from `shared`.
    pub fn new(shared: SharedState, counters: ClientTimeouts) -> Self {
        Timeouts { shared, counters }
    }
}

impl TimeoutReporter for Timeouts {
    fn head_timeout(&self, received: bool, client: Option<IpAddr>) -> Option<Vec<u8>> {
        self.counters.header.inc();
        if !received {
            return None;
        }
        let code = Code::RequestTimeout;
        let id = new_request_id();
        let body = code.body(id.as_bytes());
        let mut out = Vec::with_capacity(body.len() + 256);
        out.extend_from_slice(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\nconnection: close\r\nx-request-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(format!("\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        self.shared.load().handles.request(None, 408, None, 0.0);
        logging::access(&AccessRecord {
            method: "-",
            path: b"-",
            status: 408,
            route: "-",
            consumer: "-",
            key_id: "-",
            code: code.as_str(),
            duration: Duration::ZERO,
            request_id: id.as_bytes(),
            client,
            error: Some("request head timed out"),
        });
        Some(out)
    }

    fn body_timeout(&self, _client: Option<IpAddr>) {
        self.counters.body.inc();
    }
}
