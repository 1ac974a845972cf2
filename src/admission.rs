//! Admission: everything `request_filter` decides before a request may go upstream.
//!
//! [`admit`] takes the parsed request head and the state and returns an
//! [`Admission`]: forward (with the route, the identity, the canonical host and,
//! when it changed, the canonical target, the limits charged and the key's expiry
//! warning) or reject (with the problem code). It is pure apart from counting
//! failures in the brute-force table, charging the consumer's limit counters
//! ([`charge_limits`]), recording the key's last use and the metrics, so unit tests
//! and benches call it directly.
//!
//! Over the ~400-line guideline because the whole request decision (route, method,
//! limits, authentication, scopes, CORS preflight) is one pure function with its helpers,
//! benchmarked and unit-tested as a unit.

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::{raw_target_authority, RawTargetAuthority};

use crate::auth::{self, AuthOutcome, Rejection};
use crate::config::AuthMode;
use crate::limiter::FailureLimiter;
use crate::limits::{Charge, Counter, Owner, Rate, Spec};
use crate::metrics::{AuthResult, LimitReason};
use crate::problem::Code;
use crate::state::State;

/// A request admitted for the origin: where it goes, as whom, and what changes on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The matched route.
    pub route: usize,
    /// The authentication outcome (consumer or anonymous).
    pub outcome: AuthOutcome,
    /// New origin-form target (canonical path and query), when it differs from the
    /// request's.
    pub target: Option<Vec<u8>>,
    /// The canonical `host[:port]` (empty when the request named no host).
    pub host: HeaderValue,
    /// Whether `host` must replace the request's `Host` (it was not canonical, or the
    /// request used the absolute form).
    pub host_changed: bool,
    /// The limits charged, for the `RateLimit` fields.
    pub charge: Charge,
    /// The key's expiry warning, when it is inside its warning window.
    pub sunset: Option<Sunset>,
}

/// The expiry warning for a key inside its warning window: what `Deprecation` (RFC 9745)
/// and `Sunset` (RFC 8594) say about the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sunset {
    /// When the warning began (Unix seconds): `expires_at` minus the warning window, but
    /// never before the key's `not_before` nor after `sunset_at`.
    pub deprecated_at: i64,
    /// The key's `expires_at` (Unix seconds).
    pub sunset_at: i64,
}

/// The warning for key `key` (index) at `now` (Unix seconds), if it is inside its window.
pub fn sunset(state: &State, key: u32, now: i64) -> Option<Sunset> {
    let e = state.keys.entries().get(key as usize)?;
    if !state.in_warning(e.expires_at, now) {
        return None;
    }
    let not_before = state.key_policy(e).map_or(i64::MIN, |p| p.not_before);
    let start = e.expires_at.saturating_sub(state.warning.seconds);
    Some(Sunset {
        deprecated_at: start.max(not_before).clamp(0, e.expires_at),
        sunset_at: e.expires_at,
    })
}

/// A request keygate answers itself: with which code, and what was known by then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub code: Code,
    /// The matched route, if routing got that far (for metrics and logs).
    pub route: Option<usize>,
    /// The authentication outcome, if authentication ran.
    pub outcome: Option<AuthOutcome>,
    /// Seconds for `Retry-After` (brute-force block, limits).
    pub retry_after: Option<u64>,
    /// The limits checked (one refused the request, for `rate_limited` and
    /// `quota_exceeded`), for the `RateLimit` fields.
    pub charge: Charge,
    /// The key's expiry warning (a valid key refused by a limit or an allow-list).
    pub sunset: Option<Sunset>,
}

/// What `request_filter` decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Forward to the origin.
    Forward(Forward),
    /// Answer it here.
    Reject(Reject),
    /// A CORS preflight for a route with `cors`: answer it here, without a key.
    Preflight {
        /// The matched route.
        route: usize,
    },
}

fn reject(code: Code) -> Admission {
    reject_on(code, None)
}

fn reject_on(code: Code, route: Option<usize>) -> Admission {
    Admission::Reject(Reject {
        code,
        route,
        outcome: None,
        retry_after: None,
        charge: Charge::default(),
        sunset: None,
    })
}

/// The limits that apply to `consumer` (and its `key`) on `route`, in header order:
/// the consumer's rate limit (or the route's default), its quota (or the route's
/// default), then the key's own.
fn applicable(
    state: &State,
    route: usize,
    key: u32,
    consumer: u32,
) -> ([(Owner, Spec, &Counter); Charge::MAX], usize) {
    let mut out: [(Owner, Spec, &Counter); Charge::MAX] = [(
        Owner::Key,
        Spec::Rate(Rate {
            requests: 1,
            window_seconds: 1,
        }),
        &NONE,
    ); Charge::MAX];
    let mut n = 0;
    let (Some(r), Some(c)) = (
        state.routes.get(route),
        state.consumers.get(consumer as usize),
    ) else {
        return (out, 0);
    };
    if !r.consumer_limits {
        return (out, 0);
    }
    let mut push = |owner, spec, counter| {
        if let Some(slot) = out.get_mut(n) {
            *slot = (owner, spec, counter);
            n += 1;
        }
    };
    let defaults = r.limit_slot.and_then(|s| c.route_counters.get(s));
    // The consumer's own rate limit and quota, else the route's defaults for it.
    let pairs = [
        (
            &c.rate,
            r.default_rate,
            defaults.and_then(|d| d.rate.as_deref()),
        ),
        (
            &c.quota,
            r.default_quota,
            defaults.and_then(|d| d.quota.as_deref()),
        ),
    ];
    for (own, default, counter) in pairs {
        match (own, default, counter) {
            (Some(l), _, _) => push(Owner::Consumer, l.spec, &*l.counter),
            (None, Some(spec), Some(counter)) => push(Owner::Route, spec, counter),
            _ => {}
        }
    }
    if let Some(p) = state
        .keys
        .entries()
        .get(key as usize)
        .and_then(|e| state.key_policy(e))
    {
        for l in [&p.rate, &p.quota].into_iter().flatten() {
            push(Owner::Key, l.spec, &*l.counter);
        }
    }
    (out, n)
}

/// Charge one request by `consumer` (index) with `key` (index) on `route` (index) at
/// `now_ms` (Unix milliseconds) to every limit that applies: all or nothing (see
/// [`crate::limits::reserve_all`]). No lock; a few atomic operations per limit.
///
/// With a shared store (`limits.store`), the counters judge with the other instances'
/// counts as of the last sync, on the store's clock, and never wait for the store;
/// while it is away with `on_error: closed`, a request any limit applies to gets
/// [`Charge::unavailable`].
pub fn charge_limits(state: &State, route: usize, key: u32, consumer: u32, now_ms: i64) -> Charge {
    let (applicable, n) = applicable(state, route, key, consumer);
    let Some(fleet) = state.fleet.as_deref() else {
        return crate::limits::charge(&applicable[..n], now_ms);
    };
    if n > 0 && fleet.mode() == crate::limits::shared::Mode::Closed {
        return Charge::unavailable();
    }
    crate::limits::charge_in(&applicable[..n], Some(fleet), fleet.now_ms(now_ms))
}

/// A placeholder for unused limit slots.
static NONE: Counter = Counter::new();

/// Approximate size of the request line and headers as received.
fn header_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// The raw authority a request names: its `Host` header, else an absolute-form target's.
///
/// # Errors
/// [`Code::BadRequest`] for several `Host` fields or an HTTP/1.1 request without one
/// (RFC 9112 §3.2).
fn raw_authority(req: &RequestHeader) -> Result<Option<&[u8]>, Code> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(Code::BadRequest),
        (Some(h), None) => Ok(Some(h.as_bytes())),
        (None, _) => match raw_target_authority(req.raw_path()).authority() {
            Some(a) => Ok(Some(a)),
            None if req.version >= http::Version::HTTP_11 => Err(Code::BadRequest),
            None => Ok(None),
        },
    }
}

/// Decide what happens to a request: limits, canonical host and path, route,
/// brute-force block, authentication.
///
/// Inputs: the state, the parsed request head, the client address (after
/// trusted proxies, see [`crate::forwarded`]), the brute-force table and the
/// current time in Unix milliseconds. Pure apart from counting a failed
/// authentication in `limiter`, charging the consumer's limit counters, recording the
/// key's last use and the metrics in `state.handles`.
pub fn admit(
    state: &State,
    req: &RequestHeader,
    client: Option<IpAddr>,
    limiter: &FailureLimiter,
    now_ms: i64,
) -> Admission {
    let now = now_ms.div_euclid(1000);
    let limits = &state.limits;
    if req.headers.len() > limits.max_request_headers
        || header_bytes(req) > limits.max_request_header_bytes
    {
        return reject(Code::HeadersTooLarge);
    }
    // TRACE (and IIS's TRACK) make the origin echo the request, shared secret included;
    // in any letter case, as some servers read methods.
    let echoes = ["TRACE", "TRACK"]
        .iter()
        .any(|m| req.method.as_str().eq_ignore_ascii_case(m));
    let raw_host = match raw_authority(req) {
        Ok(h) => h,
        Err(code) => return reject(code),
    };
    let authority = match raw_host
        .filter(|h| !h.is_empty())
        .map(crate::host::canonical)
    {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return reject(Code::InvalidHost),
    };
    let raw = req.raw_path();
    let (pq, absolute_form) = match raw_target_authority(raw) {
        RawTargetAuthority::Absolute { path_and_query, .. } => (path_and_query, true),
        _ => (raw, false),
    };
    let (path, query) = match pq.iter().position(|&b| b == b'?') {
        Some(i) => (&pq[..i], Some(&pq[i + 1..])),
        None => (pq, None),
    };
    // "http://host" and "http://host?q" have an empty path: origin-form anchors it at "/".
    let path = if absolute_form && path.is_empty() {
        &b"/"[..]
    } else {
        path
    };
    let canonical = match crate::path::canonical(path) {
        Ok(n) => n,
        Err(_) => return reject(Code::InvalidPath),
    };
    let path = canonical.as_deref().unwrap_or(path);
    let host = authority.as_ref().map_or(&b""[..], |a| a.host());
    let Some(route) = state.route(host, path) else {
        return reject(if echoes {
            Code::MethodNotAllowed
        } else {
            Code::RouteNotFound
        });
    };
    if echoes {
        return reject_on(Code::MethodNotAllowed, Some(route));
    }
    let r = &state.routes[route];
    if r.cors.is_some() && crate::cors::is_preflight(&req.method, &req.headers) {
        return Admission::Preflight { route };
    }
    // A method the route does not serve ends here: falling through to a later, broader
    // route would walk around this one.
    if !r.methods.allows(&req.method) {
        return reject_on(Code::MethodNotAllowed, Some(route));
    }
    if let Some(max) = r.max_request_body {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return reject_on(Code::PayloadTooLarge, Some(route));
        }
    }
    // Pingora keeps an absolute-form target (`GET http://host/path`) verbatim for the
    // wire; forward origin-form so the origin sees exactly the path routed here; a route
    // may rewrite its prefix.
    let rewritten = r.rewrite.as_ref().map(|rw| rw.apply(&r.path_prefix, path));
    let target = (canonical.is_some() || absolute_form || rewritten.is_some()).then(|| {
        let mut t = rewritten.unwrap_or_else(|| path.to_vec());
        if let Some(q) = query {
            t.push(b'?');
            t.extend_from_slice(q);
        }
        t
    });
    let host_value = authority
        .as_ref()
        .and_then(|a| HeaderValue::from_bytes(a.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static(""));
    let host_changed = match (raw_host, &authority) {
        (Some(raw), Some(a)) => raw != a.as_bytes() || !req.headers.contains_key(header::HOST),
        _ => false,
    };
    let mode = state
        .routes
        .get(route)
        .map_or(AuthMode::Required, |r| r.auth);
    let now_secs = u64::try_from(now).unwrap_or(0);
    if mode != AuthMode::None {
        if let Some(ip) = client {
            if let Some(wait) = limiter.blocked(ip, limits.brute_force, now_secs) {
                state.handles.auth(AuthResult::Blocked);
                return Admission::Reject(Reject {
                    code: Code::TooManyFailures,
                    route: Some(route),
                    outcome: None,
                    retry_after: Some(wait),
                    charge: Charge::default(),
                    sunset: None,
                });
            }
        }
    }
    let outcome = auth::authenticate(state, route, &req.method, &req.headers, now);
    let key = match outcome {
        AuthOutcome::Consumer { key, .. } => Some(key),
        AuthOutcome::Rejected(Rejection::Forbidden { key, .. }) => Some(key),
        _ => None,
    };
    let sunset = key.and_then(|k| sunset(state, k, now));
    if sunset.is_some() {
        state.handles.expiring_key_request(route);
    }
    let charge = match outcome {
        AuthOutcome::Consumer { key, consumer, .. } => {
            charge_limits(state, route, key, consumer, now_ms)
        }
        _ => Charge::default(),
    };
    // The shared store is away (`on_error: closed`) or a quota lease is still on its way:
    // 503 and a retry in a second; the proxy waits for the lease once, briefly.
    if charge.is_unavailable() {
        return Admission::Reject(Reject {
            code: Code::LimitsUnavailable,
            route: Some(route),
            outcome: Some(outcome),
            retry_after: Some(1),
            charge: Charge::default(),
            sunset,
        });
    }
    let limited = charge.violated().map(|_| {
        // A spent quota outlasts any rate window: name it when both refused.
        if charge
            .iter()
            .any(|a| a.standing.exceeded && matches!(a.spec, Spec::Quota(_)))
        {
            (
                Code::QuotaExceeded,
                AuthResult::QuotaExceeded,
                LimitReason::QuotaExceeded,
            )
        } else {
            (
                Code::RateLimited,
                AuthResult::RateLimited,
                LimitReason::RateLimited,
            )
        }
    });
    if mode != AuthMode::None {
        state
            .handles
            .auth(limited.map_or(outcome.metric(), |(_, m, _)| m));
    }
    if let Some((code, _, reason)) = limited {
        state.handles.limit_rejection(route, reason);
        return Admission::Reject(Reject {
            code,
            route: Some(route),
            outcome: Some(outcome),
            retry_after: charge.retry_after(),
            charge,
            sunset,
        });
    }
    match outcome {
        AuthOutcome::Rejected(r) => {
            let guess = matches!(
                r,
                Rejection::Invalid
                    | Rejection::Expired
                    | Rejection::Disabled
                    | Rejection::Ambiguous
                    | Rejection::NotYetValid
            );
            if let (true, Some(ip)) = (guess, client) {
                limiter.record_failure(ip, limits.brute_force, now_secs);
            }
            Admission::Reject(Reject {
                code: r.code(),
                route: Some(route),
                outcome: Some(outcome),
                retry_after: None,
                charge,
                sunset,
            })
        }
        outcome => Admission::Forward(Forward {
            route,
            outcome,
            target,
            host: host_value,
            host_changed,
            charge,
            sunset,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        crate::fixture::state(
            r#"
secret: { env: UNUSED }
auth: { keys_file: keys.yaml }
upstreams:
  o: { address: "127.0.0.1:1" }
  iis: { address: "127.0.0.1:2", case_insensitive_paths: true }
routes:
  - { name: admin, path_prefix: /admin, upstream: o, auth: required }
  - { name: win, path_prefix: /Win, upstream: iis, auth: required }
  - { name: api, host: api.test, path_prefix: /, upstream: o, auth: required }
  - { name: open, path_prefix: /, upstream: o, auth: none }
"#,
            "consumers: []",
        )
    }

    fn request(target: &[u8], hosts: &[&str], version: http::Version) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target, None).unwrap();
        r.set_version(version);
        for h in hosts {
            r.append_header(header::HOST, *h).unwrap();
        }
        r
    }

    fn decide(target: &str, hosts: &[&str]) -> Admission {
        let limiter = FailureLimiter::new(1024);
        admit(
            &state(),
            &request(target.as_bytes(), hosts, http::Version::HTTP_11),
            None,
            &limiter,
            0,
        )
    }

    fn code(a: &Admission) -> Option<Code> {
        match a {
            Admission::Reject(r) => Some(r.code),
            Admission::Forward(_) | Admission::Preflight { .. } => None,
        }
    }

    #[test]
    fn admission_table() {
        use Code::*;
        let table: &[(&str, &[&str], Option<Code>)] = &[
            ("/x", &["gateway.test"], None),
            ("/admin/x", &["gateway.test"], Some(MissingApiKey)),
            ("/%61dmin/x", &["gateway.test"], Some(MissingApiKey)),
            ("/public/../admin", &["gateway.test"], Some(MissingApiKey)),
            ("/x", &["api.test."], Some(MissingApiKey)),
            ("/x", &["API.TEST:80"], Some(MissingApiKey)),
            ("/x", &["api.test.:080"], Some(MissingApiKey)),
            ("/WIN/x", &["gateway.test"], Some(MissingApiKey)),
            ("/win", &["gateway.test"], Some(MissingApiKey)),
            ("/ADMIN/x", &["gateway.test"], None),
            ("/x", &["a..b"], Some(InvalidHost)),
            ("/x", &["user@api.test"], Some(InvalidHost)),
            ("/x", &["api.test:65536"], Some(InvalidHost)),
            ("/x", &["a", "b"], Some(BadRequest)),
            ("/x", &[], Some(BadRequest)),
            ("/admin;x/y", &["gateway.test"], Some(InvalidPath)),
            ("/a%2fb", &["gateway.test"], Some(InvalidPath)),
            ("http://api.test/x", &[], Some(MissingApiKey)),
            ("http://gateway.test", &[], None),
        ];
        let limiter = FailureLimiter::new(1024);
        for m in ["TRACE", "TRACK", "trace", "Track"] {
            let mut r = request(b"/x", &["gateway.test"], http::Version::HTTP_11);
            r.set_method(http::Method::from_bytes(m.as_bytes()).unwrap());
            assert_eq!(
                code(&admit(&state(), &r, None, &limiter, 0)),
                Some(MethodNotAllowed),
                "{m}"
            );
        }
        for (target, hosts, want) in table {
            assert_eq!(code(&decide(target, hosts)), *want, "{target} {hosts:?}");
        }
    }

    #[test]
    fn forward_carries_the_canonical_target_and_host() {
        let Admission::Forward(f) = decide("/%7euser/./x//y?q=%61", &["Gateway.Test.:080"]) else {
            panic!("rejected")
        };
        assert_eq!(f.target.as_deref(), Some(&b"/~user/x/y?q=%61"[..]));
        assert_eq!(f.host, "gateway.test:80");
        assert!(f.host_changed);
        let Admission::Forward(f) = decide("/x?y", &["gateway.test"]) else {
            panic!("rejected")
        };
        assert_eq!(f.target, None);
        assert!(!f.host_changed);
        let Admission::Forward(f) = decide("http://gateway.test/x?q", &[]) else {
            panic!("rejected")
        };
        assert_eq!(f.target.as_deref(), Some(&b"/x?q"[..]));
        assert_eq!(f.host, "gateway.test");
        assert!(
            f.host_changed,
            "Host must be set from the absolute-form authority"
        );
        // HTTP/1.0 may omit Host.
        let limiter = FailureLimiter::new(1024);
        let r = request(b"/x", &[], http::Version::HTTP_10);
        assert!(matches!(
            admit(&state(), &r, None, &limiter, 0),
            Admission::Forward(_)
        ));
    }
}
