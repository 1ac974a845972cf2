//! What keygate tells a client about its credential on the way back: the rate-limit
//! fields, the expiry warning, and the `detail` of a refusal.

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use pingora::Result;

use super::rewrite::{add, put};

use crate::access::METHOD_NAMES;
use crate::admission::{Reject, Sunset};
use crate::auth::{AuthOutcome, Denial, Rejection};
use crate::headers;
use crate::limits::{self, Charge, Period, Spec};
use crate::problem::Code;
use crate::state::State;
use crate::timestamp;

/// Add `RateLimit-Policy` and `RateLimit` members for the limits charged (as field
/// lines of their own, so an origin's own policies stay listed: the fields are
/// structured-field lists), and `Deprecation`, `Sunset` and a `Link` when the key is
/// inside its warning window. An origin's own `Deprecation` or `Sunset` (about the
/// resource) is kept as it is; the `Link` is added in any case.
///
/// # Errors
/// Pingora's error when a header cannot be inserted (never for values built here).
pub fn insert_credential_fields(
    resp: &mut HeaderMap,
    state: &State,
    route: usize,
    charge: &Charge,
    sunset: Option<Sunset>,
    now_ms: i64,
) -> Result<()> {
    let route_name = state.routes.get(route).map_or("", |r| r.name.as_str());
    if let Some((policy, standing)) = limits::fields(charge, route_name, now_ms) {
        if let (Ok(p), Ok(s)) = (
            HeaderValue::from_str(&policy),
            HeaderValue::from_str(&standing),
        ) {
            add(resp, &headers::RATELIMIT_POLICY, p)?;
            add(resp, &headers::RATELIMIT, s)?;
        }
    }
    if let Some(s) = sunset {
        let origin_said =
            resp.contains_key(&headers::DEPRECATION) || resp.contains_key(&headers::SUNSET);
        if !origin_said {
            let deprecation = HeaderValue::from_str(&format!("@{}", s.deprecated_at));
            let sunset = HeaderValue::from_str(&timestamp::format_http_date(s.sunset_at));
            if let (Ok(d), Ok(s)) = (deprecation, sunset) {
                put(resp, &headers::DEPRECATION, d)?;
                put(resp, &headers::SUNSET, s)?;
            }
        }
        if let Some(link) = &state.warning.link {
            add(resp, &header::LINK, link.clone())?;
        }
    }
    Ok(())
}

/// On a route with CORS: remove whatever CORS headers the origin sent and add keygate's
/// for `origin` (the request's `Origin`), with `Vary: Origin` added to any `Vary`.
///
/// # Errors
/// Pingora's error when a header cannot be inserted (never for values built here).
pub fn insert_cors(
    resp: &mut HeaderMap,
    policy: &crate::cors::Policy,
    origin: Option<&HeaderValue>,
) -> Result<()> {
    for name in &crate::cors::RESPONSE_HEADERS {
        resp.remove(name);
    }
    for (name, value) in crate::cors::response_headers(policy, origin) {
        if name == header::VARY {
            add(resp, &name, value)?;
        } else {
            put(resp, &name, value)?;
        }
    }
    Ok(())
}

/// The `detail` of a refusal that says more than its code's fixed text: which route,
/// method or scope a valid key may not use, which limit refused it and for how long.
/// Built from the configuration only, never from the key.
pub fn detail(state: &State, reject: &Reject, method: &Method) -> Option<String> {
    let route = state.routes.get(reject.route?)?;
    match (reject.code, reject.outcome) {
        (Code::Forbidden, Some(AuthOutcome::Rejected(Rejection::Forbidden { denial: d, .. }))) => {
            Some(match d {
                Denial::Route => format!("This API key may not be used on route `{}`.", route.name),
                // Only a method keygate knows is named: the request's own could be anything.
                Denial::Method => match METHOD_NAMES.iter().find(|m| **m == method.as_str()) {
                    Some(m) => format!(
                        "This API key may not use the {m} method on route `{}`.",
                        route.name
                    ),
                    None => format!(
                        "This API key may not use this method on route `{}`.",
                        route.name
                    ),
                },
                Denial::Scope(bit) => format!(
                    "Route `{}` requires the scope `{}`, which this API key does not have.",
                    route.name,
                    state
                        .scope_names
                        .get(bit as usize)
                        .map_or("?", String::as_str)
                ),
            })
        }
        (Code::RateLimited | Code::QuotaExceeded, _) => {
            let a = reject
                .charge
                .iter()
                .filter(|a| a.standing.exceeded)
                .max_by_key(|a| a.standing.retry_seconds)?;
            let mut name = String::new();
            limits::policy_name(a.owner, &a.spec, &route.name, &mut name);
            let wait = reject.retry_after.unwrap_or(a.standing.retry_seconds);
            Some(match a.spec {
                Spec::Rate(r) => format!(
                    "Rate limit `{name}` exceeded: {} requests per {} seconds. Retry in {wait} seconds.",
                    r.requests, r.window_seconds
                ),
                Spec::Quota(q) => format!(
                    "Quota `{name}` used up: {} requests per {} (UTC). Retry in {wait} seconds.",
                    q.requests,
                    match q.period {
                        Period::Day => "day",
                        Period::Month => "month",
                    }
                ),
            })
        }
        _ => None,
    }
}
