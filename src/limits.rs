//! Per-consumer rate limits and quotas: counters that count only admitted requests.
//!
//! A **rate limit** (`requests` per `window_seconds`) is a sliding-window
//! counter: the current window's count plus the previous window's, weighted by
//! how much of the previous window the sliding window still covers. A **quota**
//! (`requests` per calendar `day` or `month`, UTC) is a fixed-window counter
//! that resets at the period's boundary. Both are counter-based (not GCRA), so
//! instances of a fleet can later share them by adding up increments.
//!
//! A request is charged with [`reserve_all`]: every counter that applies is
//! incremented, and if any of them then exceeds its limit, every increment is
//! taken back. So a rejected request is never counted (a client over its limit
//! recovers as soon as it slows down), a rejection by one counter never charges
//! another, admitted requests never exceed a limit within a window, and nothing
//! takes a lock. Concurrent requests can momentarily see each other's pending
//! increments and be rejected although one of them alone would fit: under
//! contention the window errs on the side of admitting slightly fewer, never more.
//!
//! How exact the sliding window is: the previous window's requests are assumed
//! to have been spread evenly over it. A burst at the end of the previous window
//! is therefore under-weighted early in the next one: over any `window_seconds`
//! span, at most `requests` are admitted counted this way, and at most twice
//! `requests` in the worst case of a burst at a window boundary.
//!
//! A fleet of instances shares its counters through a [`Fleet`] (see [`shared`]): each
//! counter then also holds what the other instances counted at the last sync, and a
//! quota counter the lease of the quota this instance holds; the decision stays local.
//!
//! Over the ~400-line guideline because the sliding-window counter, quotas, check-then-
//! commit and the RateLimit field syntax are one algorithm whose invariants are
//! documented together (the fleet's share is in `limits/shared.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

pub mod shared;

pub use shared::{Fleet, OnError};

use crate::timestamp::{civil_from_days, days_from_civil};

/// A rate limit: at most `requests` per `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per window (at least 1).
    pub requests: u64,
    /// Window length in seconds (at least 1).
    pub window_seconds: u64,
}

/// A quota period: a calendar day or month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// From 00:00:00 UTC to the next.
    Day,
    /// From the first day of the month, 00:00:00 UTC, to the first of the next.
    Month,
}

/// A quota: at most `requests` per calendar `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per period (at least 1).
    pub requests: u64,
    /// The calendar period.
    pub period: Period,
}

/// What one counter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// A sliding-window rate limit.
    Rate(Rate),
    /// A calendar quota.
    Quota(Quota),
}

pub(crate) const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

pub(crate) fn pack(window: u64, count: u64) -> u64 {
    (window << COUNT_BITS) | (count & COUNT_MASK)
}

pub(crate) fn unpack(v: u64) -> (u64, u64) {
    (v >> COUNT_BITS, v & COUNT_MASK)
}

/// Where `now` (Unix milliseconds) falls for `spec`: the window's number (since 1970,
/// truncated to 32 bits), the milliseconds elapsed in it, and its length.
pub fn position(spec: &Spec, now_ms: i64) -> (u64, u64, u64) {
    let now_ms = u64::try_from(now_ms).unwrap_or(0);
    match spec {
        Spec::Rate(r) => {
            let len = r.window_seconds.max(1) * 1000;
            ((now_ms / len) & COUNT_MASK, now_ms % len, len)
        }
        Spec::Quota(q) => {
            let (start, end) = period_bounds(q.period, now_ms / 1000);
            let index = match q.period {
                Period::Day => start / 86_400,
                Period::Month => month_index(start),
            };
            (
                index & COUNT_MASK,
                now_ms.saturating_sub(start * 1000),
                (end - start) * 1000,
            )
        }
    }
}

fn month_index(start_secs: u64) -> u64 {
    let (y, m, _) = civil_from_days((start_secs / 86_400) as i64);
    (y * 12 + m - 1).max(0) as u64
}

/// The period containing `now` (Unix seconds): its start and end, Unix seconds.
pub fn period_bounds(period: Period, now: u64) -> (u64, u64) {
    match period {
        Period::Day => {
            let start = now - now % 86_400;
            (start, start + 86_400)
        }
        Period::Month => {
            let (y, m, _) = civil_from_days((now / 86_400) as i64);
            let start = days_from_civil(y, m, 1);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1);
            ((start.max(0) as u64) * 86_400, (end.max(0) as u64) * 86_400)
        }
    }
}

/// One counter: the current window's number and count in one atomic word, and the
/// previous window's (for sliding windows) in another.
///
/// With a shared store ([`Fleet`]), four more words, each a `(window, count)` pair:
/// what the other instances counted in the latest and the one before (as of the last
/// sync), how much of this instance's own count has been sent to the store, and, for a
/// quota, how much of it this instance holds on lease for the period.
#[derive(Debug, Default)]
pub struct Counter {
    current: AtomicU64,
    previous: AtomicU64,
    pub(crate) others: AtomicU64,
    pub(crate) others_previous: AtomicU64,
    pub(crate) flushed: AtomicU64,
    pub(crate) lease: AtomicU64,
}

/// Where a counter stands for one request: remaining capacity and seconds to reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Requests still allowed now (after this one, when it was admitted).
    pub remaining: u64,
    /// Seconds until the limit resets: the end of the current window or period (the
    /// `t` of the `RateLimit` field).
    pub reset_seconds: u64,
    /// Whether this counter refused the request.
    pub exceeded: bool,
    /// When refused: seconds until a request would be admitted, never less than
    /// `reset_seconds` (the `Retry-After`). 0 when admitted.
    pub retry_seconds: u64,
    /// When refused: a shared quota this instance holds no lease for yet (a lease
    /// may still be granted; see [`shared`]).
    pub pending: bool,
}

impl Counter {
    /// A fresh counter.
    pub const fn new() -> Self {
        Counter {
            current: AtomicU64::new(0),
            previous: AtomicU64::new(0),
            others: AtomicU64::new(0),
            others_previous: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            lease: AtomicU64::new(0),
        }
    }

    /// This instance's own count in `window` (the current or the previous one kept).
    pub fn own(&self, window: u64) -> u64 {
        let (w, c) = unpack(self.current.load(Ordering::Acquire));
        if w == window {
            return c;
        }
        let (w, c) = unpack(self.previous.load(Ordering::Acquire));
        if w == window {
            c
        } else {
            0
        }
    }

    /// What the other instances counted in `window`, as of the last sync (0: unknown).
    pub fn others(&self, window: u64) -> u64 {
        for word in [&self.others, &self.others_previous] {
            let (w, c) = unpack(word.load(Ordering::Acquire));
            if w == window & COUNT_MASK {
                return c;
            }
        }
        0
    }

    /// Move to `window` if the counter is behind, keeping the previous window's count.
    /// Returns the current word after the move.
    fn roll(&self, window: u64) -> u64 {
        let mut cur = self.current.load(Ordering::Acquire);
        loop {
            let (w, c) = unpack(cur);
            if w == window {
                return cur;
            }
            let fresh = pack(window, 0);
            match self
                .current
                .compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let prev = if w + 1 == window { c } else { 0 };
                    self.previous.store(
                        pack(window.wrapping_sub(1) & COUNT_MASK, prev),
                        Ordering::Release,
                    );
                    return fresh;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// The previous window's count, when it is `window - 1`.
    fn previous_count(&self, window: u64) -> u64 {
        let (w, c) = unpack(self.previous.load(Ordering::Acquire));
        if w == (window.wrapping_sub(1) & COUNT_MASK) {
            c
        } else {
            0
        }
    }

    /// The weighted count for a sliding window, given the current count.
    fn weighted(&self, spec: &Spec, window: u64, elapsed: u64, len: u64, current: u64) -> u64 {
        match spec {
            Spec::Rate(_) => {
                let prev = self.previous_count(window);
                // The part of the previous window the sliding window still covers.
                let covered = len.saturating_sub(elapsed);
                current + (prev * covered).div_ceil(len)
            }
            Spec::Quota(_) => current,
        }
    }

    /// Count one request in `window`, returning the new count.
    fn add(&self, window: u64) -> u64 {
        let mut cur = self.roll(window);
        loop {
            let (w, c) = unpack(cur);
            if w != window {
                cur = self.roll(window);
                continue;
            }
            let next = pack(w, c + 1);
            match self
                .current
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return c + 1,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Take back one request counted in `window` (if the counter is still there).
    fn take_back(&self, window: u64) {
        let mut cur = self.current.load(Ordering::Acquire);
        loop {
            let (w, c) = unpack(cur);
            if w != window || c == 0 {
                return;
            }
            match self.current.compare_exchange_weak(
                cur,
                pack(w, c - 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The requests counted at `now_ms` for `spec` (for a sliding window, the weighted
    /// estimate); may exceed the limit after the limit was lowered by a reload.
    pub fn used(&self, spec: &Spec, now_ms: i64) -> u64 {
        let (window, elapsed, len) = position(spec, now_ms);
        let (w, c) = unpack(self.current.load(Ordering::Acquire));
        match (w == window, w + 1 == window) {
            (true, _) => self.weighted(spec, window, elapsed, len, c),
            // The counter has not moved into this window yet: its count is the previous.
            (false, true) => match spec {
                Spec::Rate(_) => (c * (len - elapsed)).div_ceil(len),
                Spec::Quota(_) => 0,
            },
            _ => 0,
        }
    }

    /// Where the counter stands at `now_ms` without counting anything.
    pub fn peek(&self, spec: &Spec, now_ms: i64) -> Standing {
        let (_, elapsed, len) = position(spec, now_ms);
        let used = self.used(spec, now_ms);
        let limit = limit_of(spec);
        Standing {
            remaining: limit.saturating_sub(used),
            reset_seconds: (len - elapsed).div_ceil(1000),
            exceeded: used >= limit,
            retry_seconds: 0,
            pending: false,
        }
    }
}

/// The number of requests `spec` allows per window or period.
pub fn limit_of(spec: &Spec) -> u64 {
    match spec {
        Spec::Rate(r) => r.requests,
        Spec::Quota(q) => q.requests,
    }
}

/// Charge one request to every `(spec, counter)` at `now_ms` (Unix milliseconds), all
/// or nothing, writing where each counter stands into `out` (in order; `out` must be at
/// least as long as `limits`). Returns whether the request is admitted: when any
/// counter refuses it, every increment is taken back.
pub fn reserve_all(limits: &[(&Spec, &Counter)], now_ms: i64, out: &mut [Standing]) -> bool {
    reserve_all_in(limits, None, now_ms, out)
}

/// How one counter judges a request, given the store's state.
struct Judgement {
    /// The count the decision compares (weighted for a sliding window).
    used: u64,
    /// The most `used` may be.
    allowance: u64,
    /// The current window's count and the previous one's, for `Retry-After`.
    count: u64,
    previous: u64,
    /// Capacity beyond `allowance` still to be had (a quota's unleased part).
    extra: u64,
    /// A refusal here may be lifted by a lease.
    pending: bool,
}

/// Judge `count` (this instance's, in `window`) for `spec` under `fleet`.
fn judge(
    spec: &Spec,
    counter: &Counter,
    fleet: Option<&Fleet>,
    window: u64,
    elapsed: u64,
    len: u64,
    count: u64,
) -> Judgement {
    let limit = limit_of(spec);
    let prev_window = window.wrapping_sub(1) & COUNT_MASK;
    // Refusing while the store is away is the admission's (`charge_limits`); a counter
    // reached anyway judges as `local` would.
    let mode = fleet.map(|f| match f.mode() {
        shared::Mode::Closed => shared::Mode::Share(f.instances()),
        m => m,
    });
    let weigh = |count: u64, previous: u64| match spec {
        Spec::Rate(_) => count + (previous * len.saturating_sub(elapsed)).div_ceil(len),
        Spec::Quota(_) => count,
    };
    let own_previous = counter.previous_count(window);
    match (spec, mode) {
        (_, None) => Judgement {
            used: counter.weighted(spec, window, elapsed, len, count),
            allowance: limit,
            count,
            previous: own_previous,
            extra: 0,
            pending: false,
        },
        (_, Some(shared::Mode::Open)) => Judgement {
            used: weigh(count, own_previous),
            allowance: u64::MAX,
            count,
            previous: own_previous,
            extra: 0,
            pending: false,
        },
        (Spec::Rate(_), Some(shared::Mode::Shared)) => {
            let count = count + counter.others(window);
            let previous = own_previous + counter.others(prev_window);
            Judgement {
                used: weigh(count, previous),
                allowance: limit,
                count,
                previous,
                extra: 0,
                pending: false,
            }
        }
        (Spec::Rate(_), Some(shared::Mode::Share(_) | shared::Mode::Closed)) => {
            let n = match mode {
                Some(shared::Mode::Share(n)) => n,
                _ => 1,
            };
            let allowance = (limit / n.max(1)).max(1);
            Judgement {
                used: weigh(count, own_previous),
                allowance,
                count,
                previous: own_previous,
                extra: 0,
                pending: false,
            }
        }
        (Spec::Quota(_), Some(m)) => {
            let lease = counter.lease_in(window);
            let unleased = limit.saturating_sub(counter.others(window));
            let (allowance, pending) = match m {
                shared::Mode::Share(n) => (lease + unleased / n.max(1), false),
                _ => (lease, unleased > 0),
            };
            Judgement {
                used: count,
                allowance,
                count,
                previous: 0,
                extra: unleased.saturating_sub(allowance - lease),
                pending,
            }
        }
    }
}

/// [`reserve_all`] for counters shared through `fleet` (when given): each counter
/// counts this instance's requests, and judges them with what the other instances
/// counted at the last sync, or, while the store is away, by `on_error`.
pub fn reserve_all_in(
    limits: &[(&Spec, &Counter)],
    fleet: Option<&Fleet>,
    now_ms: i64,
    out: &mut [Standing],
) -> bool {
    let mut admitted = true;
    for ((spec, counter), slot) in limits.iter().zip(out.iter_mut()) {
        let (window, elapsed, len) = position(spec, now_ms);
        let count = counter.add(window);
        let j = judge(spec, counter, fleet, window, elapsed, len, count);
        let limit = limit_of(spec);
        let exceeded = j.used > j.allowance;
        admitted &= !exceeded;
        *slot = Standing {
            remaining: (j.allowance.min(limit).saturating_sub(j.used) + j.extra).min(limit),
            reset_seconds: (len - elapsed).div_ceil(1000),
            exceeded,
            retry_seconds: 0,
            pending: exceeded && j.pending,
        };
        if exceeded && j.pending {
            counter.want_lease(window);
        }
    }
    if !admitted {
        for ((spec, counter), standing) in limits.iter().zip(out.iter_mut()) {
            let (window, elapsed, len) = position(spec, now_ms);
            counter.take_back(window);
            if standing.exceeded {
                let count = counter.own(window);
                let j = judge(spec, counter, fleet, window, elapsed, len, count);
                let retry =
                    retry_ms(spec, j.allowance, j.count, j.previous, elapsed, len).div_ceil(1000);
                standing.retry_seconds = retry;
                // For a refusing sliding window, `t` is when a request fits again: the
                // client can use nothing more until then (draft -11's effective window).
                if matches!(spec, Spec::Rate(_)) {
                    standing.reset_seconds = retry;
                }
            } else {
                standing.remaining = (standing.remaining + 1).min(limit_of(spec));
            }
        }
    }
    admitted
}

/// Charge one request to the limits that apply to it (at most [`Charge::MAX`], more
/// are ignored), all or nothing; see [`reserve_all`].
pub fn charge(limits: &[(Owner, Spec, &Counter)], now_ms: i64) -> Charge {
    charge_in(limits, None, now_ms)
}

/// [`charge`] for counters shared through `fleet` (see [`reserve_all_in`]).
pub fn charge_in(limits: &[(Owner, Spec, &Counter)], fleet: Option<&Fleet>, now_ms: i64) -> Charge {
    let n = limits.len().min(Charge::MAX);
    let mut pairs: [(&Spec, &Counter); Charge::MAX] = [(&NO_SPEC, &NO_COUNTER); Charge::MAX];
    for (pair, (_, spec, counter)) in pairs.iter_mut().zip(limits) {
        *pair = (spec, counter);
    }
    let mut out = [Standing::default(); Charge::MAX];
    reserve_all_in(&pairs[..n], fleet, now_ms, &mut out);
    let mut c = Charge::default();
    for ((owner, spec, _), standing) in limits.iter().zip(out).take(n) {
        c.push(Applied {
            owner: *owner,
            spec: *spec,
            standing,
        });
    }
    c
}

/// Placeholders for the unused slots of [`charge`]'s fixed array.
const NO_SPEC: Spec = Spec::Rate(Rate {
    requests: 1,
    window_seconds: 1,
});
static NO_COUNTER: Counter = Counter::new();

/// Milliseconds from now until one more request fits, for a counter that refused one
/// (`n` allowed, `count` in the current window, `previous` in the one before,
/// `elapsed` of `len`):
/// for a quota, the end of the period; for a sliding window, the moment the previous
/// window's weight has decayed enough, in this window if the current count leaves room,
/// else in the next one, where the current count weighs as the previous.
fn retry_ms(spec: &Spec, n: u64, count: u64, previous: u64, elapsed: u64, len: u64) -> u64 {
    let to_end = len - elapsed;
    if matches!(spec, Spec::Quota(_)) || n == u64::MAX {
        return to_end;
    }
    // A request fits at x ms into a window when 1 + count + ceil(previous·(len−x)/len) ≤ n,
    // that is from x = len − floor((n − 1 − count)·len / previous).
    if count < n && previous > 0 {
        let x = len - ((n - 1 - count) * len) / previous;
        if x < len {
            return x.saturating_sub(elapsed).max(1);
        }
    }
    let x = if count < n {
        0
    } else {
        len - ((n - 1) * len) / count
    };
    to_end + x
}

/// Whose budget a limit is: named in the `RateLimit-Policy` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The consumer's own limit, shared by all its keys and routes.
    Consumer,
    /// The key's own limit.
    Key,
    /// A route's default limit, counted per consumer on that route.
    Route,
}

/// One limit applied to one request: whose, what, and where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Whose budget.
    pub owner: Owner,
    /// The limit.
    pub spec: Spec,
    /// Where its counter stands after this request.
    pub standing: Standing,
}

/// The limits applied to one request (at most [`Charge::MAX`]), kept without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Charge {
    items: [Option<Applied>; Charge::MAX],
    unavailable: bool,
}

impl Charge {
    /// The most limits one request can be charged to: consumer (or route default) rate
    /// and quota, key rate and quota.
    pub const MAX: usize = 4;

    /// Record one applied limit (ignored past [`Charge::MAX`]).
    pub fn push(&mut self, applied: Applied) {
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some(applied);
        }
    }

    /// The applied limits, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Applied> {
        self.items.iter().flatten()
    }

    /// Whether no limit applied.
    pub fn is_empty(&self) -> bool {
        self.items[0].is_none()
    }

    /// A charge that could not be made: the shared store is away and `on_error` is
    /// `closed`.
    pub fn unavailable() -> Self {
        Charge {
            unavailable: true,
            ..Charge::default()
        }
    }

    /// Whether the limits could not be checked: the store is away (`on_error: closed`),
    /// or a shared quota holds no lease yet (one may be granted: wait for it).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable || self.is_pending()
    }

    /// Whether a refusal is only for want of a quota lease that may still be granted.
    pub fn is_pending(&self) -> bool {
        self.iter()
            .any(|a| a.standing.exceeded && a.standing.pending)
    }

    /// Whether every limit admitted the request.
    pub fn admitted(&self) -> bool {
        self.violated().is_none() && !self.unavailable
    }

    /// The first limit that refused the request, if any.
    pub fn violated(&self) -> Option<&Applied> {
        self.iter().find(|a| a.standing.exceeded)
    }

    /// `Retry-After` seconds: the latest of the refusing limits' waits (at least 1).
    pub fn retry_after(&self) -> Option<u64> {
        self.iter()
            .filter(|a| a.standing.exceeded)
            .map(|a| {
                a.standing
                    .retry_seconds
                    .max(a.standing.reset_seconds)
                    .max(1)
            })
            .max()
    }
}

/// The policy's name in the `RateLimit-Policy` and `RateLimit` fields: whose budget
/// (`consumer`, `key`, or `route.<name>` for a route default) and its window
/// (`60s`) or period (`day`, `month`), e.g. `consumer-60s`, `key-day`.
pub fn policy_name(owner: Owner, spec: &Spec, route: &str, out: &mut String) {
    use std::fmt::Write;
    match owner {
        Owner::Consumer => out.push_str("consumer"),
        Owner::Key => out.push_str("key"),
        Owner::Route => {
            out.push_str("route.");
            out.push_str(route);
        }
    }
    let _ = match spec {
        Spec::Rate(r) => write!(out, "-{}s", r.window_seconds),
        Spec::Quota(q) => write!(
            out,
            "-{}",
            match q.period {
                Period::Day => "day",
                Period::Month => "month",
            }
        ),
    };
}

/// Length in seconds of the window or period `applied` counts in, at `now_ms`.
fn window_seconds(spec: &Spec, now_ms: i64) -> u64 {
    position(spec, now_ms).2 / 1000
}

/// The `RateLimit-Policy` and `RateLimit` field values for a charge
/// (draft-ietf-httpapi-ratelimit-headers, named-policy form of draft -10, unchanged in
/// -11 of May 2026: a List of sf-string items with integer `q`, `w`, `r` and `t`):
/// `"consumer-60s";q=100;w=60` and `"consumer-60s";r=57;t=12`, one list member per
/// limit. No `pk` parameter: the partition is the client's own credential, and its
/// identity is never echoed. `route` names the route, for route defaults; route names
/// are `[A-Za-z0-9._-]`, so every name is a valid structured-field string.
pub fn fields(charge: &Charge, route: &str, now_ms: i64) -> Option<(String, String)> {
    use std::fmt::Write;
    if charge.is_empty() {
        return None;
    }
    let mut policy = String::with_capacity(64);
    let mut state = String::with_capacity(64);
    for (i, a) in charge.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
            state.push_str(", ");
        }
        policy.push('"');
        policy_name(a.owner, &a.spec, route, &mut policy);
        let _ = write!(
            policy,
            "\";q={};w={}",
            limit_of(&a.spec),
            window_seconds(&a.spec, now_ms)
        );
        state.push('"');
        policy_name(a.owner, &a.spec, route, &mut state);
        let _ = write!(
            state,
            "\";r={};t={}",
            a.standing.remaining, a.standing.reset_seconds
        );
    }
    Some((policy, state))
}

#[cfg(test)]
mod tests;
