//! Choosing a server of an upstream: weighted round robin or least connections, over
//! the servers that active health checks and passive ejection leave in.
//!
//! A leaf: it knows servers only by index, weight and [`ServerHealth`], never
//! peers, configurations or requests, so every rule here is unit-tested alone.
//! Selection is lock-free: one atomic cursor per upstream, a few atomic loads per
//! server looked at, and no allocation. A server's [`ServerHealth`] lives in an
//! `Arc` that a reload hands to the new state for a server that remains (same
//! upstream and address), so health, ejection and in-flight counts survive a
//! reload, whatever happened to the server's weight.
//!
//! Which servers take requests:
//!
//! 1. servers that are *up*: healthy by their last probes (or the upstream has no
//!    health check) and not ejected;
//! 2. when none is up, as a last resort, servers that are *in doubt*: not yet
//!    probed (just added), or ejected after connect failures while their probes
//!    (if any) still pass. A request then still has a chance, and is never worse off
//!    than failing at once: connect failures are quick or bounded by the connect
//!    timeout;
//! 3. when none is in doubt either (every server failed its health checks), no
//!    server: the request fails at once (502 `upstream_unavailable`).
//!
//! What does *not* live here: probing (`crate::health`), peers and TLS
//! (`crate::state`), retries (`crate::proxy`).
//!
//! Over the ~400-line guideline because server selection, health and ejection share one
//! lock-free per-server structure whose state machine is documented here as a whole
//! (tests are in `balance/tests.rs`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The largest weight a server may have.
pub const MAX_WEIGHT: u32 = 1000;
/// The most servers one upstream may have.
pub const MAX_SERVERS: usize = 256;

/// Milliseconds on keygate's monotonic clock (never 0, so 0 can mean "never").
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// What the active health checks concluded about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// Not probed yet (a new server), or its upstream has no health check.
    Unknown,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

impl Probed {
    fn from_u8(v: u8) -> Probed {
        match v {
            1 => Probed::Healthy,
            2 => Probed::Unhealthy,
            _ => Probed::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Probed::Unknown => 0,
            Probed::Healthy => 1,
            Probed::Unhealthy => 2,
        }
    }
}

/// Whether a server takes requests now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Availability {
    /// Takes requests.
    Up,
    /// Takes requests only when no server is up (not probed yet, or ejected).
    InDoubt,
    /// Takes no request: its health checks fail.
    Down,
}

/// A change of a server's probed health, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: Probed,
    /// After.
    pub to: Probed,
    /// Consecutive probe results that made the change.
    pub after: u32,
}

/// The health of one server: what probes found, connect failures, ejection, requests
/// in flight. Shared (in an `Arc`) by every state that has the server.
#[derive(Debug, Default)]
pub struct ServerHealth {
    /// [`Probed`] as a byte.
    probed: AtomicU8,
    /// Consecutive probe results that contradict `probed`.
    streak: AtomicU32,
    /// Consecutive failed connections (reset by a successful one).
    connect_failures: AtomicU32,
    /// Until when (on [`now_ms`]) the server is ejected; 0: not ejected.
    ejected_until: AtomicU64,
    /// Requests in flight (least connections only).
    in_flight: AtomicU32,
    /// A probe of this server is running.
    probing: AtomicBool,
    /// When (on [`now_ms`]) the next probe is due; 0: now.
    next_probe: AtomicU64,
}

/// Passive ejection: after how many consecutive connect failures, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive connect failures that eject a server; 0: never.
    pub after_failures: u32,
    /// How long an ejection lasts, in milliseconds.
    pub duration_ms: u64,
}

impl ServerHealth {
    /// What probes concluded.
    pub fn probed(&self) -> Probed {
        Probed::from_u8(self.probed.load(Ordering::Relaxed))
    }

    /// Whether the server is ejected at `now` (on [`now_ms`]).
    pub fn ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > now
    }

    /// Whether it takes requests at `now` (read only when it was ejected); `checked`:
    /// its upstream has active health checks.
    pub fn availability(&self, checked: bool, now: impl FnOnce() -> u64) -> Availability {
        let probed = if checked {
            self.probed()
        } else {
            Probed::Healthy
        };
        if probed == Probed::Unhealthy {
            return Availability::Down;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until != 0 && until > now() {
            return Availability::InDoubt;
        }
        match probed {
            Probed::Healthy => Availability::Up,
            _ => Availability::InDoubt,
        }
    }

    /// Record a probe result; returns the change it made, if any. The first probe of a
    /// server settles it either way; after that `healthy_threshold` consecutive passes
    /// bring it back and `unhealthy_threshold` consecutive failures take it out. A pass
    /// also ends an ejection: a fresh connection just worked.
    pub fn observe(
        &self,
        passed: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<Transition> {
        if passed {
            self.connect_failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        let from = self.probed();
        let wanted = if passed {
            Probed::Healthy
        } else {
            Probed::Unhealthy
        };
        if from == wanted {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = match (from, passed) {
            (Probed::Unknown, _) => 1,
            (_, true) => healthy_threshold,
            (_, false) => unhealthy_threshold,
        };
        if streak < threshold.max(1) {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.probed.store(wanted.as_u8(), Ordering::Relaxed);
        Some(Transition {
            from,
            to: wanted,
            after: streak,
        })
    }

    /// Record a failed connection at `now`; returns whether it ejected the server
    /// (it was not ejected, and this failure reached `eject.after_failures`). The count
    /// is not reset by an ejection: once the ejection ends, one more failure ejects the
    /// server again, while one success clears the count.
    pub fn connect_failed(&self, eject: Ejection, now: u64) -> bool {
        let failures = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if eject.after_failures == 0 || failures < eject.after_failures {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until != 0 && until > now {
            return false;
        }
        self.ejected_until
            .compare_exchange(
                until,
                now.saturating_add(eject.duration_ms),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Record a successful connection (new or reused): the failure count starts over.
    pub fn connected(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Requests in flight to this server (counted under least connections only).
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Claim the probe due at `now`, and schedule the next one `interval` ms later:
    /// returns false when none is due or another probe of this server still runs. A
    /// probe scheduled further away than `interval` (a reload shortened it) is due now.
    pub fn start_probe(&self, now: u64, interval: u64) -> bool {
        let next = self.next_probe.load(Ordering::Relaxed);
        let due = next <= now || next > now.saturating_add(interval);
        let claimed = due
            && self
                .probing
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
        if claimed {
            self.next_probe
                .store(now.saturating_add(interval), Ordering::Relaxed);
        }
        claimed
    }

    /// End a probe claimed with [`ServerHealth::start_probe`].
    pub fn finish_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// When the next probe is due (on [`now_ms`]).
    pub fn next_probe(&self) -> u64 {
        self.next_probe.load(Ordering::Relaxed)
    }
}

/// A request's hold on a server, counted in its requests in flight while it lives
/// (least connections only; otherwise it holds nothing).
#[derive(Debug, Default)]
pub struct Lease(Option<Arc<ServerHealth>>);

impl Lease {
    fn take(health: &Arc<ServerHealth>) -> Lease {
        health.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease(Some(health.clone()))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The server chosen for a request.
#[derive(Debug)]
pub struct Pick {
    /// Its index in the upstream's servers.
    pub server: usize,
    /// It was chosen as a last resort (no server was up).
    pub last_resort: bool,
    /// The request's hold on it (least connections).
    pub lease: Lease,
}

/// How a server is chosen among those that take requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Weighted round robin, interleaved.
    RoundRobin,
    /// Fewest requests in flight per unit of weight; ties in turn.
    LeastConnections,
}

/// The servers of one upstream and how to choose among them.
#[derive(Debug)]
pub struct Balancer {
    health: Box<[Arc<ServerHealth>]>,
    weights: Box<[u32]>,
    /// Server indices in round-robin order, each as often as its weight (divided by
    /// the weights' greatest common divisor), spread out evenly.
    schedule: Box<[u16]>,
    cursor: AtomicUsize,
    policy: Policy,
    checked: bool,
    eject: Ejection,
}

impl Balancer {
    /// A balancer over `servers` (health and weight each, at most [`MAX_SERVERS`],
    /// weights 1 to [`MAX_WEIGHT`]; out-of-range weights are clamped); `checked`: the
    /// upstream has active health checks.
    pub fn new(
        servers: Vec<(Arc<ServerHealth>, u32)>,
        policy: Policy,
        checked: bool,
        eject: Ejection,
    ) -> Balancer {
        let (health, weights): (Vec<_>, Vec<_>) = servers
            .into_iter()
            .take(MAX_SERVERS)
            .map(|(h, w)| (h, w.clamp(1, MAX_WEIGHT)))
            .unzip();
        Balancer {
            schedule: schedule(&weights),
            health: health.into(),
            weights: weights.into(),
            cursor: AtomicUsize::new(0),
            policy,
            checked,
            eject,
        }
    }

    /// How many servers.
    pub fn len(&self) -> usize {
        self.health.len()
    }

    /// Whether there is no server (never, for a validated upstream).
    pub fn is_empty(&self) -> bool {
        self.health.is_empty()
    }

    /// The health of server `i`.
    pub fn health(&self, i: usize) -> Option<&Arc<ServerHealth>> {
        self.health.get(i)
    }

    /// Whether the upstream has active health checks.
    pub fn checked(&self) -> bool {
        self.checked
    }

    /// Passive ejection: consecutive connect failures, and the ejection's length in
    /// whole seconds.
    pub fn ejection_settings(&self) -> (u32, u64) {
        (self.eject.after_failures, self.eject.duration_ms / 1000)
    }

    /// Whether server `i` takes requests at `now` (on [`now_ms`]).
    pub fn availability(&self, i: usize, now: u64) -> Availability {
        self.health
            .get(i)
            .map_or(Availability::Down, |h| h.availability(self.checked, || now))
    }

    /// Choose a server for a request, never `exclude` (the server a connection just
    /// failed to); `None` when no server takes requests.
    pub fn pick(&self, exclude: Option<usize>) -> Option<Pick> {
        self.pick_at(exclude, now_ms)
    }

    /// [`Balancer::pick`] with the clock given (read only when a server is ejected).
    pub fn pick_at(&self, exclude: Option<usize>, now: impl Fn() -> u64) -> Option<Pick> {
        let clock = Clock::new(&now);
        let avail = |i: usize| -> Availability {
            if Some(i) == exclude {
                return Availability::Down;
            }
            self.health[i].availability(self.checked, || clock.get())
        };
        let n = self.health.len();
        if n == 1 {
            return match avail(0) {
                Availability::Up => Some(self.chosen(0, false)),
                Availability::InDoubt => Some(self.chosen(0, true)),
                Availability::Down => None,
            };
        }
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        if self.policy == Policy::RoundRobin {
            let first = usize::from(self.schedule[turn % self.schedule.len()]);
            if avail(first) == Availability::Up {
                return Some(self.chosen(first, false));
            }
        }
        // Look at every server once, then choose among the best available level.
        let mut levels = [Availability::Down; MAX_SERVERS];
        let mut best = Availability::Down;
        for (i, level) in levels.iter_mut().enumerate().take(n) {
            *level = avail(i);
            best = best.min(*level);
        }
        if best == Availability::Down {
            return None;
        }
        let chosen = match self.policy {
            Policy::RoundRobin => self.weighted(turn, &levels[..n], best),
            Policy::LeastConnections => self.least_loaded(turn, &levels[..n], best),
        }?;
        Some(self.chosen(chosen, best != Availability::Up))
    }

    /// Whether a server other than `exclude` takes requests now (up or in doubt).
    pub fn has_alternative(&self, exclude: usize) -> bool {
        let clock = Clock::new(&now_ms);
        (0..self.health.len()).any(|i| {
            i != exclude
                && self.health[i].availability(self.checked, || clock.get()) != Availability::Down
        })
    }

    /// Record a failed connection to server `i`; returns whether it ejected the server.
    pub fn connect_failed(&self, i: usize) -> bool {
        self.health
            .get(i)
            .is_some_and(|h| h.connect_failed(self.eject, now_ms()))
    }

    /// Consecutive failed connections to server `i` so far (0 after a success).
    pub fn consecutive_failures(&self, i: usize) -> u32 {
        self.health
            .get(i)
            .map_or(0, |h| h.connect_failures.load(Ordering::Relaxed))
    }

    /// Record a successful connection to server `i`.
    pub fn connected(&self, i: usize) {
        if let Some(h) = self.health.get(i) {
            h.connected();
        }
    }

    fn chosen(&self, server: usize, last_resort: bool) -> Pick {
        let lease = match self.policy {
            Policy::LeastConnections => Lease::take(&self.health[server]),
            Policy::RoundRobin => Lease::default(),
        };
        Pick {
            server,
            last_resort,
            lease,
        }
    }

    /// A server at `level`, with a chance proportional to its weight (`turn` spreads
    /// successive calls over them).
    fn weighted(&self, turn: usize, levels: &[Availability], level: Availability) -> Option<usize> {
        let at = |i: &usize| levels[*i] == level;
        let total: u64 = (0..levels.len())
            .filter(at)
            .map(|i| u64::from(self.weights[i]))
            .sum();
        if total == 0 {
            return None;
        }
        // Successive turns land far apart in the range (Fibonacci hashing).
        let mut target = (turn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % total;
        for i in (0..levels.len()).filter(at) {
            let w = u64::from(self.weights[i]);
            if target < w {
                return Some(i);
            }
            target -= w;
        }
        None
    }

    /// The server at `level` with the fewest requests in flight per unit of weight,
    /// looking from a different server each turn so ties take turns.
    fn least_loaded(
        &self,
        turn: usize,
        levels: &[Availability],
        level: Availability,
    ) -> Option<usize> {
        let n = levels.len();
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = (turn + k) % n;
            if levels[i] != level {
                continue;
            }
            let (load, weight) = (
                u64::from(self.health[i].in_flight()),
                u64::from(self.weights[i]),
            );
            // load / weight < best_load / best_weight, without division.
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

/// Reads the clock at most once per selection.
struct Clock<'a, F: Fn() -> u64> {
    read: &'a F,
    value: std::cell::Cell<u64>,
}

impl<'a, F: Fn() -> u64> Clock<'a, F> {
    fn new(read: &'a F) -> Self {
        Clock {
            read,
            value: std::cell::Cell::new(0),
        }
    }

    fn get(&self) -> u64 {
        if self.value.get() == 0 {
            self.value.set((self.read)().max(1));
        }
        self.value.get()
    }
}

/// Server indices in round-robin order: each as many times as its weight (divided by
/// the weights' greatest common divisor), spread evenly over the cycle. Slot `k` of
/// server `i` (of `n`, weight `w`) sits at `(k + φᵢ) / w` of the cycle, with a phase
/// `φᵢ = (2i + 1) / 2n` of its own, so light servers fall between the heavy one's
/// slots instead of piling up together (weights 5, 1, 1 give `0 0 0 1 0 0 2`).
fn schedule(weights: &[u32]) -> Box<[u16]> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let n = weights.len() as u64;
    let mut slots: Vec<(u64, u64, u16)> = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        let w = u64::from(w / g);
        let (phase, index) = (2 * i as u64 + 1, u16::try_from(i).unwrap_or(u16::MAX));
        // Position (2nk + 2i + 1) / 2nw, kept as a fraction.
        slots.extend((0..w).map(|k| (2 * n * k + phase, 2 * n * w, index)));
    }
    slots.sort_by(|a, b| {
        (u128::from(a.0) * u128::from(b.1))
            .cmp(&(u128::from(b.0) * u128::from(a.1)))
            .then(a.2.cmp(&b.2))
    });
    let out: Box<[u16]> = slots.into_iter().map(|(_, _, i)| i).collect();
    if out.is_empty() {
        Box::new([0])
    } else {
        out
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests;
