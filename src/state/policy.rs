//! Validating the access fields shared by routes, consumers and keys: rate limits,
//! quotas, method and scope lists.

use std::collections::HashMap;
use std::path::Path;

use super::problems::Problems;
use crate::access::{self, Methods, Scopes};
use crate::config::{QuotaConfig, QuotaPeriod, RateLimitConfig};
use crate::limits::{Period, Quota, Rate, Spec};

/// Largest `requests` a limit may allow (counters hold 32 bits).
const MAX_REQUESTS: u64 = u32::MAX as u64;
/// Longest sliding window, in seconds; longer periods are quotas.
const MAX_WINDOW_SECONDS: u64 = 86_400;

/// A rate limit's spec, or `None` (with problems added) when out of range.
pub(super) fn rate(
    c: &Option<RateLimitConfig>,
    file: &Path,
    field: &dyn Fn() -> String,
    p: &mut Problems,
) -> Option<Spec> {
    let c = c.as_ref()?;
    let mut ok = true;
    if !(1..=MAX_REQUESTS).contains(&c.requests) {
        p.add(
            file,
            format!("{}.requests", field()),
            format!("must be between 1 and {MAX_REQUESTS}"),
        );
        ok = false;
    }
    if !(1..=MAX_WINDOW_SECONDS).contains(&c.window_seconds) {
        p.add(
            file,
            format!("{}.window_seconds", field()),
            format!(
                "must be between 1 and {MAX_WINDOW_SECONDS} (use a `quota` for a day or a month)"
            ),
        );
        ok = false;
    }
    ok.then_some(Spec::Rate(Rate {
        requests: c.requests,
        window_seconds: c.window_seconds,
    }))
}

/// A quota's spec, or `None` (with a problem added) when out of range.
pub(super) fn quota(
    c: &Option<QuotaConfig>,
    file: &Path,
    field: &dyn Fn() -> String,
    p: &mut Problems,
) -> Option<Spec> {
    let c = c.as_ref()?;
    if !(1..=MAX_REQUESTS).contains(&c.requests) {
        p.add(
            file,
            format!("{}.requests", field()),
            format!("must be between 1 and {MAX_REQUESTS}"),
        );
        return None;
    }
    Some(Spec::Quota(Quota {
        requests: c.requests,
        period: match c.period {
            QuotaPeriod::Day => Period::Day,
            QuotaPeriod::Month => Period::Month,
        },
    }))
}

/// A method allow-list (`None`: every method).
pub(super) fn methods(
    list: &Option<Vec<String>>,
    file: &Path,
    field: &dyn Fn() -> String,
    p: &mut Problems,
) -> Methods {
    let Some(list) = list else {
        return Methods::ALL;
    };
    match Methods::parse(list.iter().map(String::as_str)) {
        Ok(m) => m,
        Err((i, bad)) => {
            p.add(
                file,
                format!("{}[{i}]", field()),
                format!(
                    "`{bad}` is not one of {} (upper case)",
                    access::METHOD_NAMES.join(", ")
                ),
            );
            Methods::ALL
        }
    }
}

/// A scope list as bits over the scopes routes require; names no route requires take
/// no bit. Invalid names are reported.
pub(super) fn scopes(
    list: &[String],
    bits: &HashMap<String, u32>,
    file: &Path,
    field: &dyn Fn() -> String,
    p: &mut Problems,
) -> Scopes {
    let mut s = Scopes::default();
    for (i, name) in list.iter().enumerate() {
        if !access::valid_scope(name) {
            p.add(
                file,
                format!("{}[{i}]", field()),
                "scope names are 1-64 of A-Z a-z 0-9 . _ - : /",
            );
        }
        if let Some(bit) = bits.get(name) {
            s.0 |= 1 << bit;
        }
    }
    s
}
