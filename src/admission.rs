//! Admission: everything `request_filter` decides before a request may go upstream.
//!
//! [`admit`] takes the parsed request head and the state and returns an
//! [`Admission`]: forward (with the route, the identity and, when the path was
//! normalized, the new target) or reject (with the problem code). It is pure apart
//! from counting failures in the brute-force table, so unit tests and benches call it
//! directly. Request ids are made here too.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderValue};
use pingora::http::RequestHeader;

use crate::auth::{self, AuthOutcome, Rejection};
use crate::config::AuthMode;
use crate::limiter::FailureLimiter;
use crate::problem::Code;
use crate::state::State;

/// Longest accepted incoming `x-request-id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What `request_filter` decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Forward on `route`; `target` replaces the request target when the path was
    /// normalized or the request used the absolute form.
    Forward {
        /// The matched route.
        route: usize,
        /// The authentication outcome (consumer or anonymous).
        outcome: AuthOutcome,
        /// New origin-form target (path and query), if it changed.
        target: Option<Vec<u8>>,
    },
    /// Answer with this code; `route` and `outcome` when known (for metrics and logs).
    Reject {
        /// Why.
        code: Code,
        /// The matched route, if routing got that far.
        route: Option<usize>,
        /// The authentication outcome, if authentication ran.
        outcome: Option<AuthOutcome>,
        /// Seconds for `Retry-After` (brute-force block).
        retry_after: Option<u64>,
    },
}

fn reject(code: Code) -> Admission {
    Admission::Reject {
        code,
        route: None,
        outcome: None,
        retry_after: None,
    }
}

/// Approximate size of the request line and headers as received.
fn header_bytes(req: &RequestHeader) -> usize {
    let line =
        req.method.as_str().len() + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    req.headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Decide what happens to a request: limits, path, route, brute-force block, authentication.
///
/// Pure apart from counting a failed authentication in `limiter`.
pub fn admit(
    state: &State,
    req: &RequestHeader,
    client: Option<IpAddr>,
    limiter: &FailureLimiter,
    now: i64,
) -> Admission {
    let limits = &state.limits;
    if req.headers.len() > limits.max_request_headers
        || header_bytes(req) > limits.max_request_header_bytes
    {
        return reject(Code::HeadersTooLarge);
    }
    let path = req.uri.path().as_bytes();
    let normalized = match crate::path::normalize(path) {
        Ok(n) => n,
        Err(_) => return reject(Code::InvalidPath),
    };
    let path = normalized.as_deref().unwrap_or(path);
    let Some(route) = state.route(request_host(req), path) else {
        return reject(Code::RouteNotFound);
    };
    // Pingora keeps an absolute-form target (`GET http://host/path`) verbatim for the
    // wire; forward origin-form so the origin sees exactly the path routed here.
    let absolute_form = !req.raw_path().starts_with(b"/");
    let target = if normalized.is_some() || absolute_form {
        let mut t = path.to_vec();
        if let Some(q) = req.uri.query() {
            t.push(b'?');
            t.extend_from_slice(q.as_bytes());
        }
        Some(t)
    } else {
        None
    };
    let mode = state
        .routes
        .get(route)
        .map_or(AuthMode::Required, |r| r.auth);
    let now_secs = u64::try_from(now).unwrap_or(0);
    if mode != AuthMode::None {
        if let Some(ip) = client {
            if let Some(wait) = limiter.blocked(ip, limits.brute_force, now_secs) {
                state.handles.auth_blocked();
                return Admission::Reject {
                    code: Code::TooManyFailures,
                    route: Some(route),
                    outcome: None,
                    retry_after: Some(wait),
                };
            }
        }
    }
    let outcome = auth::authenticate(state, route, &req.headers, now);
    if mode != AuthMode::None {
        state.handles.auth(&outcome);
    }
    match outcome {
        AuthOutcome::Rejected(r) => {
            let guess = matches!(
                r,
                Rejection::Invalid
                    | Rejection::Expired
                    | Rejection::Disabled
                    | Rejection::Ambiguous
            );
            if let (true, Some(ip)) = (guess, client) {
                limiter.record_failure(ip, limits.brute_force, now_secs);
            }
            Admission::Reject {
                code: Code::from(r),
                route: Some(route),
                outcome: Some(outcome),
                retry_after: None,
            }
        }
        outcome => Admission::Forward {
            route,
            outcome,
            target,
        },
    }
}

/// Whether an incoming request id is safe to keep: 1–128 of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_LEN
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);
static REQUEST_ID_SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Generate a request id: 32 hex characters, unique within the process.
pub fn new_request_id() -> HeaderValue {
    let seed = *REQUEST_ID_SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        // A fixed seed only makes ids predictable across restarts, never duplicated within one.
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    });
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let (hi, lo) = (splitmix64(!seed), splitmix64(seed.wrapping_add(n)));
    let mut buf = [0u8; 32];
    for (i, byte) in hi
        .to_be_bytes()
        .iter()
        .chain(lo.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[usize::from(byte >> 4)];
        buf[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The request's host without port, from the URI authority or the `Host` header.
pub fn request_host(req: &RequestHeader) -> &[u8] {
    let raw = match req.uri.host() {
        Some(h) => h.as_bytes(),
        None => req
            .headers
            .get(header::HOST)
            .map_or(&b""[..], HeaderValue::as_bytes),
    };
    strip_port(raw)
}

fn strip_port(h: &[u8]) -> &[u8] {
    if let Some(rest) = h.strip_prefix(b"[") {
        return rest.split(|&b| b == b']').next().unwrap_or(rest);
    }
    match h.iter().rposition(|&b| b == b':') {
        Some(i) => &h[..i],
        None => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(valid_request_id(b"abc-123_x.y:z"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"a\"b"));
        assert!(!valid_request_id(&[b'a'; 129]));
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(valid_request_id(a.as_bytes()));
    }

    #[test]
    fn host_port_stripping() {
        assert_eq!(strip_port(b"example.com:8080"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"[::1]:8080"), b"::1");
    }
}
