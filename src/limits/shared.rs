//! Counters shared by a fleet of instances through a store (Redis or Valkey).
//!
//! The request path never waits for the store: a [`Counter`] decides from its own
//! count plus what the other instances had counted at the last sync
//! ([`Counter::others`]); a background task (`crate::fleet`) sends this instance's
//! increments and reads the totals back every sync interval, using the
//! functions here to take and settle each counter's unsent part. A quota is spent
//! from a lease this instance holds ([`Counter::lease_in`]), granted by the store
//! atomically, so the instances together never admit more than the quota.
//!
//! The [`Fleet`] holds what the request path needs to know about the store: whether
//! it answered the last sync, how many instances are live, the offset between this
//! instance's clock and the store's (windows are numbered on the store's clock), and
//! what to do while the store is away ([`OnError`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};

use tokio::sync::Notify;

use super::{pack, unpack, Counter, COUNT_MASK};

/// What the limits do while the store is unreachable, slow or failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Each instance enforces its share of every limit (the limit divided by the
    /// instances live at the last sync), counting on from the counts it holds.
    #[default]
    Local,
    /// Admit every request (limits are counted locally but not enforced).
    Open,
    /// Refuse every request that a shared limit applies to (503 `limits_unavailable`).
    Closed,
}

impl OnError {
    /// The configuration name (`local`, `open`, `closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Local => "local",
            OnError::Open => "open",
            OnError::Closed => "closed",
        }
    }
}

/// How counters judge a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The store is up: shared counts and leases.
    Shared,
    /// The store is away, `on_error: local`: this share of the instances (at least 1).
    Share(u64),
    /// The store is away, `on_error: open`: admit.
    Open,
    /// The store is away, `on_error: closed`: refuse.
    Closed,
}

/// The store as the request path sees it. Shared by every state (reloads keep it).
#[derive(Debug)]
pub struct Fleet {
    on_error: AtomicU8,
    up: AtomicBool,
    instances: AtomicU64,
    offset_ms: AtomicI64,
    timeout_ms: AtomicU64,
    /// Wakes the sync task early: a request found no lease for a quota.
    pub lease_wanted: Notify,
    /// Wakes requests waiting for a lease: a lease round finished.
    pub lease_round: Notify,
}

impl Fleet {
    /// A fleet view for a store that has not answered yet (down, one instance).
    pub fn new(on_error: OnError) -> Self {
        Fleet {
            on_error: AtomicU8::new(on_error as u8),
            up: AtomicBool::new(false),
            instances: AtomicU64::new(1),
            offset_ms: AtomicI64::new(0),
            timeout_ms: AtomicU64::new(20),
            lease_wanted: Notify::new(),
            lease_round: Notify::new(),
        }
    }

    /// What to do while the store is away.
    pub fn on_error(&self) -> OnError {
        match self.on_error.load(Ordering::Relaxed) {
            1 => OnError::Open,
            2 => OnError::Closed,
            _ => OnError::Local,
        }
    }

    /// Change what to do while the store is away (a reload does).
    pub fn set_on_error(&self, on_error: OnError) {
        self.on_error.store(on_error as u8, Ordering::Relaxed);
    }

    /// Whether the last sync succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Record whether the last sync succeeded.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    /// Live instances seen at the last successful sync (at least 1).
    pub fn instances(&self) -> u64 {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    /// Record the live instances seen.
    pub fn set_instances(&self, n: u64) {
        self.instances.store(n.max(1), Ordering::Relaxed);
    }

    /// The store's clock minus this instance's, in milliseconds (measured at each sync).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Record the clock offset.
    pub fn set_offset_ms(&self, offset: i64) {
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// This instance's time `now_ms` (Unix milliseconds) on the store's clock.
    pub fn now_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.offset_ms())
    }

    /// The longest a store call may take (`timeout_ms`): the longest a request waits
    /// for a quota lease.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Record the store's `timeout_ms`.
    pub fn set_timeout_ms(&self, ms: u64) {
        self.timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// How counters judge a request now.
    pub fn mode(&self) -> Mode {
        if self.is_up() {
            return Mode::Shared;
        }
        match self.on_error() {
            OnError::Local => Mode::Share(self.instances()),
            OnError::Open => Mode::Open,
            OnError::Closed => Mode::Closed,
        }
    }
}

/// One counter's unsent increments, taken for a sync of `window` (the store's current
/// window): how many to add to `window` and to the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsent {
    /// The window synced.
    pub window: u64,
    /// Increments to add to `window - 1`.
    pub previous: u64,
    /// Increments to add to `window`.
    pub current: u64,
    /// This instance's count in `window - 1` (sent once this sync succeeds).
    own_previous: u64,
    /// This instance's count in `window` (sent once this sync succeeds).
    own_current: u64,
}

impl Counter {
    /// The lease this instance holds for `period` (0: none).
    pub fn lease_in(&self, period: u64) -> u64 {
        let (p, c) = unpack(self.lease.load(Ordering::Acquire));
        if p == period & COUNT_MASK {
            c
        } else {
            0
        }
    }

    /// Add `granted` to the lease for `period` (replacing a lease of another period).
    pub fn grant(&self, period: u64, granted: u64) {
        let period = period & COUNT_MASK;
        let _ = self
            .lease
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let (p, c) = unpack(v);
                Some(pack(
                    period,
                    if p == period { c + granted } else { granted },
                ))
            });
    }

    /// Give the lease for `period` up: returns what was left of it unused (the lease
    /// minus this instance's count), for handing back to the store.
    pub fn surrender(&self, period: u64) -> u64 {
        let (p, c) = unpack(self.lease.swap(0, Ordering::AcqRel));
        if p != period & COUNT_MASK {
            return 0;
        }
        c.saturating_sub(self.own(period))
    }

    /// Whether this instance counted anything in `window` or the one before.
    pub fn active(&self, window: u64) -> bool {
        self.own(window) > 0 || self.own(window.wrapping_sub(1) & COUNT_MASK) > 0
    }

    /// The increments not yet sent, for a sync of `window`. A request being judged
    /// right now may show in the count and be taken back after: such an increment is
    /// sent all the same (the error is on the side of refusing).
    pub fn unsent(&self, window: u64) -> Unsent {
        let window = window & COUNT_MASK;
        let prev = window.wrapping_sub(1) & COUNT_MASK;
        let (own_previous, own_current) = (self.own(prev), self.own(window));
        let (fw, fc) = unpack(self.flushed.load(Ordering::Acquire));
        let (previous, current) = if fw == window {
            (0, own_current.saturating_sub(fc))
        } else if fw == prev {
            (own_previous.saturating_sub(fc), own_current)
        } else {
            (own_previous, own_current)
        };
        Unsent {
            window,
            previous,
            current,
            own_previous,
            own_current,
        }
    }

    /// Settle a sync: `unsent` was added to the store, whose totals are now
    /// `total_previous` and `total_current`; the other instances' part is the rest.
    pub fn settle(&self, unsent: &Unsent, total_previous: u64, total_current: u64) {
        let window = unsent.window;
        let prev = window.wrapping_sub(1) & COUNT_MASK;
        let (fw, fc) = unpack(self.flushed.load(Ordering::Acquire));
        let sent = if fw == window {
            fc.max(unsent.own_current)
        } else {
            unsent.own_current
        };
        self.flushed.store(pack(window, sent), Ordering::Release);
        self.others_previous.store(
            pack(prev, total_previous.saturating_sub(unsent.own_previous)),
            Ordering::Release,
        );
        self.others.store(
            pack(window, total_current.saturating_sub(sent)),
            Ordering::Release,
        );
    }

    /// Note that a request found no lease for `period` (quotas use the word that rate
    /// limits keep their sent count in).
    pub fn want_lease(&self, period: u64) {
        self.flushed
            .store(pack(period & COUNT_MASK, 1), Ordering::Release);
    }

    /// Whether a request found no lease for `period` since the last lease round.
    pub fn wants_lease(&self, period: u64) -> bool {
        self.flushed.load(Ordering::Acquire) == pack(period & COUNT_MASK, 1)
    }

    /// A lease round for `period` finished: the want is answered.
    pub fn lease_done(&self, period: u64) {
        let _ = self.flushed.compare_exchange(
            pack(period & COUNT_MASK, 1),
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Record what the whole fleet holds of a quota for `period` (leased by all
    /// instances together, this one included), as the store said.
    pub fn set_leased_total(&self, period: u64, leased: u64) {
        self.others
            .store(pack(period & COUNT_MASK, leased), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{reserve_all_in, Period, Quota, Rate, Spec, Standing};
    use super::*;

    const RATE: Spec = Spec::Rate(Rate {
        requests: 10,
        window_seconds: 10,
    });

    fn admit(spec: &Spec, c: &Counter, fleet: &Fleet, now: i64) -> Standing {
        let mut out = [Standing::default()];
        reserve_all_in(&[(spec, c)], Some(fleet), now, &mut out);
        out[0]
    }

    #[test]
    fn others_count_against_the_limit_and_syncs_send_only_what_is_new() {
        let fleet = Fleet::new(OnError::Local);
        fleet.set_up(true);
        let c = Counter::new();
        let now = 100 * 10_000;
        let w = 100;
        for _ in 0..3 {
            assert!(!admit(&RATE, &c, &fleet, now).exceeded);
        }
        let u = c.unsent(w);
        assert_eq!((u.previous, u.current), (0, 3));
        // The store had 5 from the others: total 8 after adding ours.
        c.settle(&u, 0, 8);
        assert_eq!(c.others(w), 5);
        assert_eq!(c.unsent(w).current, 0);
        assert!(!admit(&RATE, &c, &fleet, now).exceeded);
        assert!(!admit(&RATE, &c, &fleet, now).exceeded);
        let s = admit(&RATE, &c, &fleet, now);
        assert!(s.exceeded && s.retry_seconds > 0, "{s:?}");
        assert_eq!(c.unsent(w).current, 2);
    }

    #[test]
    fn while_away_local_enforces_a_share_and_open_admits() {
        let fleet = Fleet::new(OnError::Local);
        fleet.set_instances(2);
        let c = Counter::new();
        let now = 7 * 10_000;
        let admitted = (0..20)
            .filter(|_| !admit(&RATE, &c, &fleet, now).exceeded)
            .count();
        assert_eq!(admitted, 5);
        fleet.set_on_error(OnError::Open);
        assert!(!admit(&RATE, &c, &fleet, now).exceeded);
        assert_eq!(fleet.mode(), Mode::Open);
        fleet.set_on_error(OnError::Closed);
        assert_eq!(fleet.mode(), Mode::Closed);
    }

    #[test]
    fn a_quota_is_spent_from_the_lease_and_waits_for_one_while_any_is_left() {
        let spec = Spec::Quota(Quota {
            requests: 100,
            period: Period::Day,
        });
        let fleet = Fleet::new(OnError::Local);
        fleet.set_up(true);
        let c = Counter::new();
        let now = 20_000 * 86_400_000;
        let day = 20_000;
        let s = admit(&spec, &c, &fleet, now);
        assert!(s.exceeded && s.pending, "{s:?}");
        c.grant(day, 2);
        c.set_leased_total(day, 100);
        assert!(!admit(&spec, &c, &fleet, now).exceeded);
        assert!(!admit(&spec, &c, &fleet, now).exceeded);
        let s = admit(&spec, &c, &fleet, now);
        assert!(s.exceeded && !s.pending, "nothing left to lease: {s:?}");
        c.grant(day, 3);
        assert!(!admit(&spec, &c, &fleet, now).exceeded);
        assert_eq!(c.surrender(day), 2);
        assert_eq!(c.lease_in(day), 0);
    }
}
