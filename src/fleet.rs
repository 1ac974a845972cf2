//! Sharing consumer and key limits across a fleet: the background task that syncs
//! every counter with a Redis (or Valkey) store.
//!
//! Every `sync_interval_ms` the task sends one pipeline (one round trip) holding:
//! `TIME` (the store's clock numbers the windows: the offset to this instance's clock
//! is measured at each sync, from the midpoint of the round trip), this instance's
//! heartbeat in a sorted set of live instances (`ZADD`, `ZREMRANGEBYSCORE`, `ZCARD`,
//! `PEXPIRE`), and for each counter this instance used in the current or previous
//! window: for a rate limit, `INCRBY` of its unsent increments and `PEXPIRE` (two
//! windows) on the current and previous window's keys, whose replies are the fleet's
//! totals; for a quota, one `EVAL` of the lease script (which grants
//! `min(block, unleased)` atomically, or nothing, and returns the fleet's leased total).
//! A request that finds no lease for a quota wakes the task for an extra lease round.
//!
//! Every call is bounded by `timeout_ms`; a failed or late sync marks the store down
//! (`on_error` applies from then on) and the next one tries again, through the
//! connection manager's own reconnection. On shutdown the unused part of every lease
//! is handed back and the heartbeat removed.
//!
//! Store keys (after `key_prefix`): `rate:<owner>:<window seconds>:<window number>`,
//! `quota:<owner>:<day|month>:<period number>`, `instances`; owners are
//! `c:<consumer>`, `r:<route>:<consumer>` (a route default) and `k:<consumer>:<key id>`.
//! Nothing secret is written: ids only, never a key or its digest.
//!
//! Over the ~400-line guideline because the store's sync loop, lease rounds and leaving
//! on shutdown share one connection and one set of counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Pipeline, RedisError, Value};

use crate::config::RedisConfig;
use crate::limits::{position, Counter, Fleet, Period, Spec};
use crate::metrics::StoreMetrics;
use crate::state::{SharedState, State};
use crate::timestamp::now_unix_ms;

/// The log target of the store's lines (`KEYGATE_LOG=info,keygate::fleet=debug`).
pub const TARGET: &str = "keygate::fleet";

/// Grants `min(ARGV[2], ARGV[1] - leased)` of the quota at `KEYS[1]` (the fleet's
/// leased total for the period), never more than is left: `{granted, leased total}`.
const LEASE: &str = r"
local leased = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = tonumber(ARGV[1]) - leased
local want = tonumber(ARGV[2])
local grant = want
if left < grant then grant = left end
if grant < 0 then grant = 0 end
if grant > 0 then leased = redis.call('INCRBY', KEYS[1], grant) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {grant, leased}
";

/// Hands `ARGV[1]` unused requests back to the quota at `KEYS[1]` (never below 0).
const RETURN: &str = r"
local v = redis.call('DECRBY', KEYS[1], ARGV[1])
if v < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return 0
";

/// One counter to sync: its store-key stem, what it enforces, and its counts.
struct Item {
    stem: String,
    spec: Spec,
    counter: Arc<Counter>,
}

/// What a sync sends for one item, to read its replies back.
enum Sent {
    Rate(crate::limits::shared::Unsent),
    Quota { period: u64, asked: u64 },
}

/// Why a store call failed, as the `kind` label of `keygate_limit_store_errors_total`.
fn kind(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        "connection"
    } else {
        "response"
    }
}

/// The sync task: a Pingora background service.
pub struct LimitSync {
    shared: SharedState,
    fleet: Arc<Fleet>,
    settings: RedisConfig,
    password: Option<String>,
    metrics: StoreMetrics,
    instance: String,
    /// The store has answered a sync since start.
    answered: std::sync::atomic::AtomicBool,
    /// A store that never answered since start has been warned about.
    warned_silent: std::sync::atomic::AtomicBool,
}

impl LimitSync {
    /// Sync the counters of the state in `shared` (read again at each sync) with the
    /// store `settings` describe (validated), logging in with `password` when given;
    /// `fleet` is the view the states share.
    pub fn new(
        shared: SharedState,
        fleet: Arc<Fleet>,
        settings: RedisConfig,
        password: Option<String>,
        metrics: StoreMetrics,
    ) -> Self {
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        fleet.set_timeout_ms(settings.timeout_ms);
        LimitSync {
            shared,
            fleet,
            settings,
            password,
            metrics,
            instance: hex::encode(id),
            answered: std::sync::atomic::AtomicBool::new(false),
            warned_silent: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.settings.sync_interval_ms)
    }

    /// The connection manager: one multiplexed connection, reconnecting in the
    /// background, every call bounded by `timeout_ms`.
    fn connect(&self) -> Result<ConnectionManager, RedisError> {
        let mut info = self.settings.url.as_str().into_connection_info()?;
        if let Some(p) = &self.password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout()))
            .set_response_timeout(Some(self.timeout()))
            .set_number_of_retries(1)
            .set_max_delay(self.interval());
        ConnectionManager::new_lazy_with_config(client, config)
    }

    /// Run `pipe` bounded by `timeout_ms`, counting the failure by kind.
    async fn run(&self, con: &mut ConnectionManager, pipe: &Pipeline) -> Option<Vec<Value>> {
        match tokio::time::timeout(self.timeout(), pipe.query_async::<Vec<Value>>(con)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(kind(&e), &e.to_string());
                None
            }
            Err(_) => {
                self.failed("timeout", "no answer within timeout_ms");
                None
            }
        }
    }

    fn failed(&self, kind: &'static str, why: &str) {
        self.metrics.error(kind);
        if self.fleet.is_up() {
            warn!(target: TARGET, "limit store unavailable ({kind}): {why}; limits follow on_error={} until it answers again", self.fleet.on_error().as_str());
        } else if !self.answered.load(Ordering::Relaxed)
            && !self.warned_silent.swap(true, Ordering::Relaxed)
        {
            // Never up since start: said once, so a wrong address or password shows.
            warn!(target: TARGET, "limit store not answering since start ({kind}): {why}; limits follow on_error={} until it answers", self.fleet.on_error().as_str());
        }
        self.fleet.set_up(false);
        self.metrics.set_up(false);
    }

    /// Every counter of `state` that this instance used lately (for quotas: or holds a
    /// lease for, or wants one for), at `now_ms` on the store's clock.
    fn items(&self, state: &State, now_ms: i64) -> Vec<Item> {
        let mut out = Vec::new();
        let mut add = |stem: &dyn Fn() -> String, spec: Spec, counter: &Arc<Counter>| {
            let (window, _, _) = position(&spec, now_ms);
            let busy = match spec {
                Spec::Rate(_) => counter.active(window),
                Spec::Quota(_) => {
                    counter.own(window) > 0
                        || counter.lease_in(window) > 0
                        || counter.wants_lease(window)
                }
            };
            if busy {
                out.push(Item {
                    stem: stem(),
                    spec,
                    counter: counter.clone(),
                });
            }
        };
        for c in &state.consumers {
            for l in [&c.rate, &c.quota].into_iter().flatten() {
                add(&|| format!("c:{}", c.id), l.spec, &l.counter);
            }
            for r in &state.routes {
                let Some(rc) = r.limit_slot.and_then(|s| c.route_counters.get(s)) else {
                    continue;
                };
                let pairs = [
                    (r.default_rate, rc.rate.as_ref()),
                    (r.default_quota, rc.quota.as_ref()),
                ];
                for (spec, counter) in pairs {
                    if let (Some(spec), Some(counter)) = (spec, counter) {
                        add(&|| format!("r:{}:{}", r.name, c.id), spec, counter);
                    }
                }
            }
        }
        for p in &state.key_policies {
            for l in [&p.rate, &p.quota].into_iter().flatten() {
                add(&|| format!("k:{}", p.name), l.spec, &l.counter);
            }
        }
        out
    }

    /// The store key of `stem` for `spec` in `window`.
    fn key(&self, stem: &str, spec: &Spec, window: u64) -> String {
        let prefix = &self.settings.key_prefix;
        match spec {
            Spec::Rate(r) => format!("{prefix}rate:{stem}:{}:{window}", r.window_seconds),
            Spec::Quota(q) => {
                let p = match q.period {
                    Period::Day => "day",
                    Period::Month => "month",
                };
                format!("{prefix}quota:{stem}:{p}:{window}")
            }
        }
    }

    /// How much of a quota to ask for: a tenth of it at most, half of this instance's
    /// share of what is left at least (the block shrinks as the quota runs out), and
    /// at least 1.
    fn block(&self, limit: u64, leased_total: u64) -> u64 {
        let left = limit.saturating_sub(leased_total);
        (left / (2 * self.fleet.instances())).clamp(1, (limit / 10).max(1))
    }

    /// One sync: heartbeat, clock, every busy counter. `leases_only` syncs just the
    /// quotas that want a lease (a request is waiting).
    async fn sync(&self, con: &mut ConnectionManager, leases_only: bool) {
        let started = Instant::now();
        let state = self.shared.load_full();
        let now = self.fleet.now_ms(now_unix_ms());
        let items = self.items(&state, now);
        let mut pipe = redis::pipe();
        let ttl = self.interval().as_millis().saturating_mul(3).max(1000) as i64;
        let set = format!("{}instances", self.settings.key_prefix);
        if !leases_only {
            pipe.cmd("TIME");
            pipe.cmd("ZADD")
                .arg(&set)
                .arg(now + ttl)
                .arg(&self.instance)
                .ignore();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&set)
                .arg("-inf")
                .arg(now)
                .ignore();
            pipe.cmd("ZCARD").arg(&set);
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl).ignore();
        }
        let mut sent = Vec::with_capacity(items.len());
        for item in &items {
            let (window, _, len) = position(&item.spec, now);
            match item.spec {
                Spec::Rate(_) if leases_only => sent.push(None),
                Spec::Rate(_) => {
                    let u = item.counter.unsent(window);
                    let ttl = len * 2;
                    let prev = window.wrapping_sub(1) & 0xffff_ffff;
                    for (w, n) in [(prev, u.previous), (u.window, u.current)] {
                        let key = self.key(&item.stem, &item.spec, w);
                        pipe.cmd("INCRBY").arg(&key).arg(n);
                        pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
                    }
                    sent.push(Some(Sent::Rate(u)));
                }
                Spec::Quota(q) => {
                    let c = &item.counter;
                    let left = c.lease_in(window).saturating_sub(c.own(window));
                    let block = self.block(q.requests, c.others(window));
                    let asked = if c.wants_lease(window) || left * 2 < block {
                        block
                    } else {
                        0
                    };
                    if leases_only && asked == 0 {
                        sent.push(None);
                        continue;
                    }
                    // Kept a day past the period's end (months are at most 31 days).
                    let ttl = len + 86_400_000;
                    pipe.cmd("EVAL")
                        .arg(LEASE)
                        .arg(1)
                        .arg(self.key(&item.stem, &item.spec, window))
                        .arg(q.requests)
                        .arg(asked)
                        .arg(ttl);
                    sent.push(Some(Sent::Quota {
                        period: window,
                        asked,
                    }));
                }
            }
        }
        if leases_only && sent.iter().all(Option::is_none) {
            return;
        }
        let before = now_unix_ms();
        let Some(replies) = self.run(con, &pipe).await else {
            return;
        };
        let after = now_unix_ms();
        let mut replies = replies.into_iter();
        if !leases_only {
            let time = replies.next();
            let live = replies.next();
            if let Some(t) = time.and_then(|v| redis::from_redis_value::<(u64, u64)>(v).ok()) {
                let store_ms = (t.0 * 1000 + t.1 / 1000) as i64;
                self.fleet.set_offset_ms(store_ms - (before + after) / 2);
            }
            if let Some(n) = live.and_then(|v| redis::from_redis_value::<u64>(v).ok()) {
                self.fleet.set_instances(n);
                self.metrics.set_instances(n);
            }
        }
        for (item, sent) in items.iter().zip(sent) {
            match sent {
                None => {}
                Some(Sent::Rate(u)) => {
                    let prev = replies.next().and_then(|v| redis::from_redis_value(v).ok());
                    let cur = replies.next().and_then(|v| redis::from_redis_value(v).ok());
                    if let (Some(prev), Some(cur)) = (prev, cur) {
                        item.counter.settle(&u, prev, cur);
                    }
                }
                Some(Sent::Quota { period, asked }) => {
                    let reply = replies.next();
                    if let Some((granted, leased)) =
                        reply.and_then(|v| redis::from_redis_value::<(u64, u64)>(v).ok())
                    {
                        if granted > 0 {
                            item.counter.grant(period, granted);
                        }
                        item.counter.set_leased_total(period, leased);
                        if asked > 0 {
                            item.counter.lease_done(period);
                        }
                    }
                }
            }
        }
        if !self.fleet.is_up() {
            let again = if self.answered.swap(true, Ordering::Relaxed) {
                " again"
            } else {
                ""
            };
            info!(target: TARGET, "limit store answering{again}: counts shared across {} instance(s)", self.fleet.instances());
        }
        self.fleet.set_up(true);
        self.metrics.set_up(true);
        self.metrics.observe_sync(started.elapsed());
    }

    /// On shutdown: send the last increments, hand back the unused part of every lease
    /// and leave the instance set, in one pipeline bounded by `timeout_ms`.
    async fn leave(&self, con: &mut ConnectionManager) {
        if !self.fleet.is_up() {
            return;
        }
        let state = self.shared.load_full();
        let now = self.fleet.now_ms(now_unix_ms());
        let mut pipe = redis::pipe();
        let mut returned = 0u64;
        for item in self.items(&state, now) {
            let (window, _, _) = position(&item.spec, now);
            match item.spec {
                Spec::Rate(_) => {
                    let u = item.counter.unsent(window);
                    if u.current > 0 {
                        let key = self.key(&item.stem, &item.spec, window);
                        pipe.cmd("INCRBY").arg(key).arg(u.current).ignore();
                    }
                }
                Spec::Quota(_) => {
                    let unused = item.counter.surrender(window);
                    if unused > 0 {
                        returned += unused;
                        pipe.cmd("EVAL")
                            .arg(RETURN)
                            .arg(1)
                            .arg(self.key(&item.stem, &item.spec, window))
                            .arg(unused)
                            .ignore();
                    }
                }
            }
        }
        let set = format!("{}instances", self.settings.key_prefix);
        pipe.cmd("ZREM").arg(set).arg(&self.instance).ignore();
        if self.run(con, &pipe).await.is_some() {
            info!(target: TARGET, "left the limit store; handed back {returned} unused quota lease(s)");
        }
    }
}

#[async_trait]
impl BackgroundService for LimitSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut con = match self.connect() {
            Ok(c) => c,
            Err(e) => {
                self.failed("connection", &e.to_string());
                return;
            }
        };
        info!(target: TARGET, "sharing limits through the store every {} ms (timeout {} ms, on_error={})", self.settings.sync_interval_ms, self.settings.timeout_ms, self.fleet.on_error().as_str());
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let leases_only = tokio::select! {
                _ = tick.tick() => false,
                _ = self.fleet.lease_wanted.notified() => true,
                _ = shutdown.changed() => {
                    self.leave(&mut con).await;
                    return;
                }
            };
            // A lease round while the store is down would only add a timeout.
            if !leases_only || self.fleet.is_up() {
                self.sync(&mut con, leases_only).await;
            }
            self.fleet.lease_round.notify_waiters();
        }
    }
}
