//! What keygate tells a client about its credential on the way back: the rate-limit
//! fields, the expiry warning, and the `detail` of a refusal.

use http::header::{self, HeaderValue};
use http::Method;
use pingora::http::ResponseHeader;
use pingora::Result;

use crate::admission::Reject;
use crate::auth::{AuthOutcome, Denial, Rejection};
use crate::headers;
use crate::limits::{self, Charge, Period, Spec};
use crate::problem::Code;
use crate::state::State;
use crate::timestamp;

/// Set `RateLimit-Policy` and `RateLimit` for the limits charged (replacing any the
/// origin sent), and `Deprecation`, `Sunset` and `Link` when the key is inside its
/// warning window (`sunset`: its `expires_at`, Unix seconds).
///
/// # Errors
/// Pingora's error when a header cannot be inserted (never for values built here).
pub fn insert_credential_fields(
    resp: &mut ResponseHeader,
    state: &State,
    route: usize,
    charge: &Charge,
    sunset: Option<i64>,
    now_ms: i64,
) -> Result<()> {
    let route_name = state.routes.get(route).map_or("", |r| r.name.as_str());
    if let Some((policy, standing)) = limits::fields(charge, route_name, now_ms) {
        if let (Ok(p), Ok(s)) = (
            HeaderValue::from_str(&policy),
            HeaderValue::from_str(&standing),
        ) {
            resp.insert_header(headers::RATELIMIT_POLICY.clone(), p)?;
            resp.insert_header(headers::RATELIMIT.clone(), s)?;
        }
    }
    if let Some(expires_at) = sunset {
        // Deprecated since the warning began; the key stops working at `expires_at`.
        let since = expires_at.saturating_sub(state.warning.seconds).max(0);
        resp.insert_header(headers::DEPRECATION.clone(), format!("@{since}"))?;
        resp.insert_header(
            headers::SUNSET.clone(),
            timestamp::format_http_date(expires_at),
        )?;
        if let Some(link) = &state.warning.link {
            resp.append_header(header::LINK, link.clone())?;
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
        (Code::Forbidden, Some(AuthOutcome::Rejected(Rejection::Forbidden(d)))) => Some(match d {
            Denial::Route => format!("This API key may not be used on route `{}`.", route.name),
            Denial::Method => format!(
                "This API key may not use the {} method on route `{}`.",
                method.as_str(),
                route.name
            ),
            Denial::Scope(bit) => format!(
                "Route `{}` requires the scope `{}`, which this API key does not have.",
                route.name,
                state
                    .scope_names
                    .get(bit as usize)
                    .map_or("?", String::as_str)
            ),
        }),
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
