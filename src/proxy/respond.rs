//! Problem documents keygate writes itself: which code answers a failure, and whether
//! the connection survives it.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::fields;
use super::rewrite::put;
use super::RequestCtx;
use crate::admission::Admission;
use crate::headers;
use crate::problem::Code;
use crate::state::Limits;
use crate::timestamp;

/// Request bodies above this size are not drained after a rejection: the connection closes.
pub const MAX_DRAIN_BYTES: u64 = 64 * 1024;

static CLOSE: HeaderValue = HeaderValue::from_static("close");
static PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
/// The `Allow` of a 405: the methods keygate forwards.
static FORWARDED_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");

/// Write a problem document for `code` and keep the connection alive when that is safe.
///
/// # Errors
/// Pingora's error when the response cannot be written (the client is gone).
pub async fn respond(session: &mut Session, ctx: &mut RequestCtx, code: Code) -> Result<()> {
    ctx.answered = Some(code);
    let keep_alive = keep_alive_after_rejection(session.req_header(), code);
    let req = session.req_header();
    let (resp, body) =
        problem_response(ctx, code, &req.method, keep_alive, timestamp::now_unix_ms())?;
    if keep_alive {
        // A small body still on the wire is read and discarded, so the next request on
        // this connection starts where it should; bounded by the body-rate floor.
        session.set_close_on_response_before_downstream_finish(false);
        session.set_total_drain_timeout(Some(drain_timeout(&ctx.state.limits)));
    } else {
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(resp, head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The problem document answering `ctx`'s request with `code`: its head and its JSON
/// body (RFC 9457), with the request id, `WWW-Authenticate`, `Retry-After`, `Allow`, the
/// route's CORS fields, the rate-limit fields and the key's expiry warning as they
/// apply, and `Connection: close` unless `keep_alive`. The pure part of `respond`;
/// `method` is the request's, `now_ms` Unix milliseconds (for the rate-limit fields).
///
/// # Errors
/// Pingora's `InvalidHTTPHeader` when a field cannot be added (never for values built
/// here).
pub fn problem_response(
    ctx: &RequestCtx,
    code: Code,
    method: &http::Method,
    keep_alive: bool,
    now_ms: i64,
) -> Result<(Box<ResponseHeader>, Bytes)> {
    let reject = match &ctx.decision {
        Some(Admission::Reject(r)) if r.code == code => Some(r),
        _ => None,
    };
    let detail = reject.and_then(|r| fields::detail(&ctx.state, r, method));
    let body = Bytes::from(code.body_with(ctx.request_id.as_bytes(), detail.as_deref()));
    // keygate's own answer: a plain header map (the same bytes as with Pingora's case map:
    // keygate's names are lower case, the standard ones Pingora title-cases either way).
    let mut h = HeaderMap::with_capacity(8);
    put(&mut h, &header::CONTENT_TYPE, PROBLEM_JSON.clone())?;
    put(
        &mut h,
        &header::CONTENT_LENGTH,
        HeaderValue::from(body.len()),
    )?;
    put(&mut h, &header::CACHE_CONTROL, NO_STORE.clone())?;
    put(&mut h, &headers::X_REQUEST_ID, ctx.request_id.clone())?;
    if let Some(challenge) = code.www_authenticate() {
        put(&mut h, &header::WWW_AUTHENTICATE, challenge.clone())?;
    }
    if let Some(secs) = ctx.retry_after() {
        put(&mut h, &header::RETRY_AFTER, HeaderValue::from(secs))?;
    }
    if code == Code::MethodNotAllowed {
        // The route's methods, or (TRACE, TRACK, before routing) every method keygate forwards.
        let allow = reject
            .and_then(|r| r.route)
            .and_then(|r| ctx.state.routes.get(r))
            .map_or(FORWARDED_METHODS.clone(), |r| r.allow.clone());
        put(&mut h, &header::ALLOW, allow)?;
    }
    if let Some(cors) = ctx
        .route()
        .and_then(|r| ctx.state.routes.get(r))
        .and_then(|r| r.cors.as_ref())
    {
        fields::insert_cors(&mut h, cors, ctx.origin.as_ref())?;
    }
    // A rejection after authentication, or a failure to proxy an admitted request: the
    // client still learns about its limits and its key.
    let credential = match &ctx.decision {
        Some(Admission::Reject(r)) => r.route.map(|route| (route, &r.charge, r.sunset)),
        Some(Admission::Forward(f)) => Some((f.route, &f.charge, f.sunset)),
        Some(Admission::Preflight { .. }) | None => None,
    };
    if let Some((route, charge, sunset)) = credential {
        fields::insert_credential_fields(&mut h, &ctx.state, route, charge, sunset, now_ms)?;
    }
    if !keep_alive {
        put(&mut h, &header::CONNECTION, CLOSE.clone())?;
    }
    Ok((answer(code.status(), h)?, body))
}

/// A response head of keygate's own: `status` and the fields `h`.
///
/// # Errors
/// Pingora's `InternalError` for a status outside 100–999 (never for keygate's codes).
fn answer(status: u16, h: HeaderMap) -> Result<Box<ResponseHeader>> {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = StatusCode::from_u16(status)
        .map_err(|_| Error::explain(ErrorType::InternalError, "invalid status"))?;
    parts.headers = h;
    Ok(Box::new(ResponseHeader::from(parts)))
}

/// Answer a CORS preflight on a route with `cors`: 204 with the allowed origin, methods
/// and headers, or a 403 `cors_not_allowed` problem document; never the origin.
///
/// # Errors
/// Pingora's error when the response cannot be written (the client is gone).
pub async fn preflight(session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    let policy = ctx
        .route()
        .and_then(|r| ctx.state.routes.get(r))
        .and_then(|r| r.cors.clone());
    let allowed = policy
        .as_ref()
        .and_then(|p| crate::cors::preflight(p, &session.req_header().headers).ok());
    let Some(headers) = allowed else {
        return respond(session, ctx, Code::CorsRejected).await;
    };
    let mut h = HeaderMap::with_capacity(headers.len() + 3);
    for (name, value) in headers {
        put(&mut h, &name, value)?;
    }
    put(&mut h, &headers::X_REQUEST_ID, ctx.request_id.clone())?;
    if keep_alive_after_rejection(session.req_header(), Code::Forbidden) {
        session.set_close_on_response_before_downstream_finish(false);
        session.set_total_drain_timeout(Some(drain_timeout(&ctx.state.limits)));
    } else {
        session.set_keepalive(None);
        put(&mut h, &header::CONNECTION, CLOSE.clone())?;
    }
    session.write_response_header(answer(204, h)?, true).await
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

/// The longest a rejected request's remaining body (at most [`MAX_DRAIN_BYTES`]) may
/// take to arrive: the body-rate floor's allowance for that size.
pub fn drain_timeout(limits: &Limits) -> Duration {
    match MAX_DRAIN_BYTES.checked_div(limits.client_body_min_rate) {
        Some(secs) => limits.client_body_timeout + Duration::from_secs(secs + 1),
        None => limits.client_body_timeout,
    }
}

/// The problem keygate answers a failed proxy attempt with; `None` when the client is
/// gone (nothing can be written).
pub fn failure_code(e: &Error, body_cut: bool) -> Option<Code> {
    if body_cut {
        return Some(Code::RequestTimeout);
    }
    match (e.esource(), e.etype()) {
        (
            ErrorSource::Upstream,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
        ) => Some(Code::UpstreamTimeout),
        (ErrorSource::Upstream, _) => Some(Code::UpstreamUnavailable),
        (
            ErrorSource::Downstream,
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
        ) => None,
        (ErrorSource::Downstream, _) => Some(Code::BadRequest),
        _ => Some(Code::Internal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    type Case<'a> = (&'a [(&'a str, &'a str)], Code, bool);

    #[test]
    fn which_rejections_keep_the_connection() {
        let table: &[Case<'_>] = &[
            (&[], Code::MissingApiKey, true),
            (&[("content-length", "5")], Code::InvalidApiKey, true),
            (&[("content-length", "65536")], Code::Forbidden, true),
            (&[("content-length", "65537")], Code::Forbidden, false),
            (&[("content-length", "x")], Code::Forbidden, false),
            (
                &[("transfer-encoding", "chunked")],
                Code::MissingApiKey,
                false,
            ),
            (
                &[("content-length", "5"), ("expect", "100-continue")],
                Code::MissingApiKey,
                false,
            ),
            (
                &[("content-length", "0"), ("expect", "100-Continue")],
                Code::MissingApiKey,
                true,
            ),
            (&[], Code::InvalidPath, false),
            (&[], Code::InvalidHost, false),
            (&[], Code::BadRequest, false),
            (&[], Code::HeadersTooLarge, false),
            (&[], Code::RequestTimeout, false),
            (&[], Code::TooManyFailures, true),
        ];
        for (headers, code, keep) in table {
            assert_eq!(
                keep_alive_after_rejection(&req(headers), *code),
                *keep,
                "{headers:?} {code:?}"
            );
        }
    }

    #[test]
    fn failures_map_to_problem_codes() {
        let up = |t| Error::new(t).into_up();
        let down = |t| Error::new(t).into_down();
        assert_eq!(
            failure_code(&up(ErrorType::ConnectTimedout), false),
            Some(Code::UpstreamTimeout)
        );
        assert_eq!(
            failure_code(&up(ErrorType::ReadTimedout), false),
            Some(Code::UpstreamTimeout)
        );
        assert_eq!(
            failure_code(&up(ErrorType::ConnectRefused), false),
            Some(Code::UpstreamUnavailable)
        );
        assert_eq!(
            failure_code(&up(ErrorType::InvalidCert), false),
            Some(Code::UpstreamUnavailable)
        );
        assert_eq!(
            failure_code(&down(ErrorType::ConnectionClosed), false),
            None
        );
        assert_eq!(
            failure_code(&down(ErrorType::InvalidHTTPHeader), false),
            Some(Code::BadRequest)
        );
        assert_eq!(
            failure_code(&down(ErrorType::ReadError), true),
            Some(Code::RequestTimeout)
        );
        assert_eq!(
            failure_code(&Error::new(ErrorType::InternalError), false),
            Some(Code::Internal)
        );
    }
}
