//! The operator's view of keys: id, consumer, state, validity, last use and limit
//! usage, never a digest. Served as JSON or text by the admin listener
//! (`GET /keys`) and printed by `keygate keys` (offline, without last use).

use serde::Serialize;

use crate::limits::{self, Counter, Owner, Spec};
use crate::state::{KeyState, State};
use crate::timestamp;

/// Keys listed per page by default.
pub const DEFAULT_PAGE: usize = 1000;
/// The most keys one page may list.
pub const MAX_PAGE: usize = 100_000;

/// Which keys to list. Every field narrows the listing; the default lists the first
/// [`DEFAULT_PAGE`] keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only this consumer's keys.
    pub consumer: Option<String>,
    /// Only keys in this state.
    pub state: Option<KeyState>,
    /// Only keys not used for at least this many days (including never, since keygate
    /// started: last use is kept in memory, across reloads but not restarts).
    pub unused_days: Option<u64>,
    /// Skip this many matching keys (paging).
    pub offset: usize,
    /// List at most this many (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            consumer: None,
            state: None,
            unused_days: None,
            offset: 0,
            limit: DEFAULT_PAGE,
        }
    }
}

/// Decode `%XX` escapes (and `+` as a space) in a query-string value.
fn percent_decode(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("`{v}` has a broken %-escape"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{v}` is not UTF-8"))
}

impl Filter {
    /// Parse a query string (`consumer=acme&state=expiring&unused_days=30`), the
    /// admin listener's `?…` or the same text from the command line.
    ///
    /// # Errors
    /// A message naming the parameter that is unknown or malformed.
    pub fn parse_query(query: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        let mut seen = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            if seen.contains(&k) {
                return Err(format!("`{k}` is given twice"));
            }
            seen.push(k);
            let number = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{k}: `{v}` is not {what}"))
            };
            match k {
                "consumer" => f.consumer = Some(v.clone()),
                "state" => f.state = Some(parse_state(&v)?),
                "unused_days" => f.unused_days = Some(number("a number of days")?),
                "offset" => f.offset = number("a number")? as usize,
                "limit" => {
                    let n = number("a number")? as usize;
                    if !(1..=MAX_PAGE).contains(&n) {
                        return Err(format!("limit: must be between 1 and {MAX_PAGE}"));
                    }
                    f.limit = n;
                }
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`: use consumer, state, unused_days, offset, limit or format"
                    ))
                }
            }
        }
        Ok(f)
    }
}

/// A key state by name.
///
/// # Errors
/// A message listing the states when `s` is none of them.
pub fn parse_state(s: &str) -> Result<KeyState, String> {
    [
        KeyState::Active,
        KeyState::Expiring,
        KeyState::Pending,
        KeyState::Expired,
        KeyState::Disabled,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| {
        format!("state: `{s}` is not one of active, expiring, pending, expired, disabled")
    })
}

/// How much of one limit is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The policy name, as in the `RateLimit-Policy` field (`consumer-60s`, `key-day`).
    pub policy: String,
    /// Requests allowed per window or period.
    pub limit: u64,
    /// Requests counted now (for a sliding window, the weighted estimate).
    pub used: u64,
    /// Seconds until the window or period ends.
    pub reset_seconds: u64,
}

/// One key in the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The key's id.
    pub id: String,
    /// Its consumer's id.
    pub consumer: String,
    /// `active`, `expiring`, `pending`, `expired` or `disabled`.
    pub state: &'static str,
    /// `expires_at`, RFC 3339, when set.
    pub expires_at: Option<String>,
    /// `not_before`, RFC 3339, when set.
    pub not_before: Option<String>,
    /// Last use, RFC 3339; `None` when not used since keygate started (or offline).
    pub last_used_at: Option<String>,
    /// Every limit that applies to the key, on any route.
    pub limits: Vec<Usage>,
}

/// The listing: how many keys matched, which of them are listed, and the rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// When it was made, RFC 3339.
    pub generated_at: String,
    /// Number of keys that match the filter.
    pub total: usize,
    /// Number of keys listed here.
    pub count: usize,
    /// The `offset` of the next page, when there is one.
    pub next_offset: Option<usize>,
    /// The keys, in file order.
    pub keys: Vec<Row>,
}

/// The limits of one key: its consumer's (or route defaults) and its own.
fn usage(state: &State, key: usize, now_ms: i64) -> Vec<Usage> {
    let mut out = Vec::new();
    let Some(e) = state.keys.entries().get(key) else {
        return out;
    };
    let mut add = |owner, spec: &Spec, counter: &Counter, route: &str| {
        let s = counter.peek(spec, now_ms);
        let mut policy = String::new();
        limits::policy_name(owner, spec, route, &mut policy);
        out.push(Usage {
            policy,
            limit: limits::limit_of(spec),
            used: counter.used(spec, now_ms),
            reset_seconds: s.reset_seconds,
        });
    };
    let policy = state.key_policy(e);
    if let Some(c) = state.consumers.get(e.consumer as usize) {
        for l in [&c.rate, &c.quota].into_iter().flatten() {
            add(Owner::Consumer, &l.spec, &l.counter, "");
        }
        for (ri, r) in state.routes.iter().enumerate() {
            // Only the routes this key may use.
            if !c.may_use(ri) || policy.is_some_and(|p| !p.may_use(ri)) {
                continue;
            }
            let Some(rc) = r.limit_slot.and_then(|s| c.route_counters.get(s)) else {
                continue;
            };
            if let (Some(spec), Some(counter)) = (&r.default_rate, &rc.rate) {
                add(Owner::Route, spec, counter, &r.name);
            }
            if let (Some(spec), Some(counter)) = (&r.default_quota, &rc.quota) {
                add(Owner::Route, spec, counter, &r.name);
            }
        }
    }
    if let Some(p) = policy {
        for l in [&p.rate, &p.quota].into_iter().flatten() {
            add(Owner::Key, &l.spec, &l.counter, "");
        }
    }
    out
}

/// List the keys of `state` matching `filter` at `now_ms` (Unix milliseconds);
/// `last_use`: include last-use times (false offline, where there are none).
pub fn list(state: &State, filter: &Filter, now_ms: i64, last_use: bool) -> Listing {
    let now = now_ms.div_euclid(1000);
    let mut keys = Vec::new();
    let mut total = 0;
    for (idx, e) in state.keys.entries().iter().enumerate() {
        let consumer = state
            .consumers
            .get(e.consumer as usize)
            .map_or("", |c| c.id.as_str());
        if filter.consumer.as_deref().is_some_and(|c| c != consumer) {
            continue;
        }
        let key_state = state.key_state(e, now);
        if filter.state.is_some_and(|s| s != key_state) {
            continue;
        }
        let last = if last_use {
            state.last_used(idx as u32)
        } else {
            None
        };
        if let Some(days) = filter.unused_days {
            let cutoff =
                now.saturating_sub(i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX));
            if last.is_some_and(|t| t > cutoff) {
                continue;
            }
        }
        total += 1;
        if total <= filter.offset || keys.len() >= filter.limit {
            continue;
        }
        let not_before = state
            .key_policy(e)
            .map(|p| p.not_before)
            .filter(|&t| t != i64::MIN);
        keys.push(Row {
            id: state.keys.id(idx as u32).to_string(),
            consumer: consumer.to_string(),
            state: key_state.as_str(),
            expires_at: (e.expires_at != i64::MAX).then(|| timestamp::format_rfc3339(e.expires_at)),
            not_before: not_before.map(timestamp::format_rfc3339),
            last_used_at: last.map(timestamp::format_rfc3339),
            limits: usage(state, idx, now_ms),
        });
    }
    let next = filter.offset + keys.len();
    Listing {
        generated_at: timestamp::format_rfc3339(now),
        total,
        count: keys.len(),
        next_offset: (next < total).then_some(next),
        keys,
    }
}

/// The listing as a JSON document.
pub fn json(listing: &Listing) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(listing).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The listing as an aligned text table, one key per line; `last_use`: include the
/// `LAST_USED` column.
pub fn text(listing: &Listing, last_use: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(listing.keys.len() + 1);
    let mut head = vec!["KEY_ID", "CONSUMER", "STATE", "NOT_BEFORE", "EXPIRES_AT"];
    if last_use {
        head.push("LAST_USED");
    }
    head.push("LIMITS (used/limit, reset)");
    rows.push(head.into_iter().map(String::from).collect());
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for r in &listing.keys {
        let mut row = vec![
            r.id.clone(),
            r.consumer.clone(),
            r.state.to_string(),
            dash(&r.not_before),
            dash(&r.expires_at),
        ];
        if last_use {
            row.push(r.last_used_at.clone().unwrap_or_else(|| "never".into()));
        }
        let limits: Vec<String> = r
            .limits
            .iter()
            .map(|u| format!("{} {}/{} {}s", u.policy, u.used, u.limit, u.reset_seconds))
            .collect();
        row.push(if limits.is_empty() {
            "-".into()
        } else {
            limits.join(", ")
        });
        rows.push(row);
    }
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
