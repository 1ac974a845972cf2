//! The runtime snapshot the request path reads: validated, prepared, immutable.
//!
//! [`load()`] reads `keygate.yaml`, the keys file and the secret, checks them as a
//! whole (collecting *every* problem before failing, [`build()`]) and builds a
//! [`State`]: routes with parsed matchers, upstreams as ready-to-clone
//! `HttpPeer`s with their TLS trust, the key index, pre-built header values and
//! resolved metric handles. Nothing string-typed or optional that the request
//! path would have to re-check survives into `State`. A `State` is never
//! mutated (its atomics aside: counters, last use, server health); a reload builds
//! a new one and swaps it in ([`SharedState`]), handing over the counters and
//! server health of what remains.
//!
//! - `build`: the orchestrator and the sections of `keygate.yaml`;
//! - `upstream`: upstreams, their servers (peers, origin TLS trust, health carried
//!   over a reload) and health checks;
//! - `routes`: routes, their canonical hosts and prefixes;
//! - `keys`: consumers and the key index, one consumer at a time;
//! - `address`: addresses are `host:port`, never URLs;
//! - `load`: reading the files and secrets, and locating every problem found.
//!
//! Over the ~400-line guideline because the prepared `State` and its parts are declared
//! here, every field documented; building, loading and validating live in `state/*`.

mod address;
mod build;
mod keys;
mod load;
mod policy;
mod problems;
mod routes;
mod store;
mod upstream;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue};

use crate::access::{Methods, Scopes};
use crate::config::AuthMode;
use crate::forwarded::TrustedProxies;
use crate::keystore::{KeyEntry, KeyIndex};
use crate::limits::{Counter, Spec};
use crate::metrics::{Handles, KeyGauges};

pub use build::{build, Inputs};
pub use load::{
    load, load_with_secret, load_without_secrets, read_secret, reload, FileDigests, Loaded,
    SHORT_SECRET,
};
pub use routes::origin_overlaps;
pub use store::on_error;
pub use upstream::{HealthCheck, Server, ServerStatus, Upstream};

/// The state shared by every request and replaced whole by a reload.
pub type SharedState = Arc<ArcSwap<State>>;

/// A consumer counts as near its quota from this share of it used, in percent.
pub const NEAR_QUOTA_PERCENT: u64 = 90;

/// Longest key id accepted (it is forwarded in a header and logged).
const MAX_ID_LEN: usize = 128;

/// One route, ready to match.
#[derive(Debug)]
pub struct Route {
    /// The configured name.
    pub name: String,
    /// Lower-case host to match, without port; `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, matched at a segment boundary.
    pub path_prefix: String,
    /// Index into [`State::upstreams`].
    pub upstream: usize,
    /// How keys are treated.
    pub auth: AuthMode,
    /// Match `path_prefix` without regard to ASCII case (the upstream's origin does).
    pub case_insensitive: bool,
    /// Scopes a key needs here.
    pub scopes: Scopes,
    /// Rate limit for consumers without their own, counted per consumer on this route.
    pub default_rate: Option<Spec>,
    /// Quota for consumers without their own, counted per consumer on this route.
    pub default_quota: Option<Spec>,
    /// Index into each consumer's [`Consumer::route_counters`], for routes with defaults.
    pub limit_slot: Option<usize>,
    /// Whether consumer and key limits apply here (`consumer_limits`).
    pub consumer_limits: bool,
    /// Methods this route serves (others get 405).
    pub methods: Methods,
    /// The `Allow` value of this route's 405.
    pub allow: HeaderValue,
    /// What replaces `path_prefix` in the path sent to the origin, when it changes.
    pub rewrite: Option<PrefixRewrite>,
    /// `x-forwarded-prefix` for the origin: the prefix a `strip_prefix` route removed.
    pub forwarded_prefix: Option<HeaderValue>,
    /// Connect timeout instead of the upstream's.
    pub connect_timeout: Option<Duration>,
    /// Read timeout instead of the upstream's.
    pub read_timeout: Option<Duration>,
    /// Largest request body, in bytes.
    pub max_request_body: Option<u64>,
    /// CORS for browser clients.
    pub cors: Option<crate::cors::Policy>,
}

/// How a route changes the path it forwards: its `path_prefix` is replaced by
/// `prefix` (empty for `strip_prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRewrite {
    /// The replacement, canonical, without a trailing `/` (empty: strip).
    pub prefix: String,
}

impl PrefixRewrite {
    /// The forwarded path for canonical `path` matched by a route with `path_prefix`:
    /// the replacement, then the rest of the path (always starting with `/`).
    pub fn apply(&self, path_prefix: &str, path: &[u8]) -> Vec<u8> {
        let rest = path.get(path_prefix.len()..).unwrap_or_default();
        if rest.is_empty() || rest == b"/" && self.prefix.is_empty() {
            return if self.prefix.is_empty() {
                b"/".to_vec()
            } else {
                self.prefix.as_bytes().to_vec()
            };
        }
        let mut out = Vec::with_capacity(self.prefix.len() + rest.len() + 1);
        out.extend_from_slice(self.prefix.as_bytes());
        if !rest.starts_with(b"/") {
            out.push(b'/');
        }
        out.extend_from_slice(rest);
        out
    }
}

impl Route {
    /// Whether this route matches a request for `host` (canonical: lower-case, no port,
    /// no trailing dot) and `path` (canonical, see [`crate::path::canonical`]).
    pub fn matches(&self, host: &[u8], path: &[u8]) -> bool {
        if let Some(h) = &self.host {
            if !h.as_bytes().eq_ignore_ascii_case(host) {
                return false;
            }
        }
        let prefix = self.path_prefix.as_bytes();
        let starts = match path.get(..prefix.len()) {
            Some(head) if self.case_insensitive => head.eq_ignore_ascii_case(prefix),
            Some(head) => head == prefix,
            None => false,
        };
        if !starts {
            return false;
        }
        // Segment boundary: "/api" matches "/api" and "/api/x", not "/apix".
        prefix.ends_with(b"/") || matches!(path.get(prefix.len()), None | Some(b'/'))
    }
}

/// A limit and its counter. Counters are shared with the previous state across a
/// reload, so counts survive it.
#[derive(Debug, Clone)]
pub struct Limit {
    /// What it enforces.
    pub spec: Spec,
    /// Its count.
    pub counter: Arc<Counter>,
}

/// A consumer's counters for one route's default limits.
#[derive(Debug, Clone, Default)]
pub struct RouteCounters {
    /// For the route's `default_rate_limit` (when the consumer has no rate limit).
    pub rate: Option<Arc<Counter>>,
    /// For the route's `default_quota` (when the consumer has no quota).
    pub quota: Option<Arc<Counter>>,
}

/// Whether route `route` is in an allow-list (`None`: every route).
fn allowed(list: &Option<Box<[bool]>>, route: usize) -> bool {
    list.as_ref()
        .is_none_or(|a| a.get(route).copied().unwrap_or(false))
}

/// One consumer with its identity headers pre-built.
#[derive(Debug)]
pub struct Consumer {
    /// The configured id.
    pub id: String,
    /// `x-consumer-id` value.
    pub id_header: HeaderValue,
    /// `x-consumer-username` value, when a name is set.
    pub name_header: Option<HeaderValue>,
    /// `x-consumer-custom-id` value, when set.
    pub custom_id_header: Option<HeaderValue>,
    /// `x-consumer-groups` value (comma-separated), when any.
    pub groups_header: Option<HeaderValue>,
    /// Every key of this consumer is disabled.
    pub disabled: bool,
    /// `allowed[route_index]`; `None` means all routes.
    pub allowed: Option<Box<[bool]>>,
    /// Methods allowed.
    pub methods: Methods,
    /// Scopes granted.
    pub scopes: Scopes,
    /// Own rate limit, shared by all keys and routes.
    pub rate: Option<Limit>,
    /// Own quota, shared by all keys and routes.
    pub quota: Option<Limit>,
    /// Counters for route defaults, by [`Route::limit_slot`] (empty when none apply).
    pub route_counters: Box<[RouteCounters]>,
}

impl Consumer {
    /// Whether this consumer may use route `route`.
    pub fn may_use(&self, route: usize) -> bool {
        allowed(&self.allowed, route)
    }
}

/// What a key narrows or adds beyond its consumer, for the few keys that do.
#[derive(Debug)]
pub struct KeyPolicy {
    /// `consumer-id:key-id`: the name its limits have in a shared store.
    pub name: Box<str>,
    /// Unix seconds before which the key is invalid (`i64::MIN`: none).
    pub not_before: i64,
    /// Route allow-list (within the consumer's); `None`: the consumer's.
    pub allowed: Option<Box<[bool]>>,
    /// Methods (within the consumer's).
    pub methods: Methods,
    /// Scopes (within the consumer's); [`Scopes::ALL`]: the consumer's.
    pub scopes: Scopes,
    /// Own rate limit, on top of the consumer's.
    pub rate: Option<Limit>,
    /// Own quota, on top of the consumer's.
    pub quota: Option<Limit>,
}

impl KeyPolicy {
    /// Whether this key may use route `route` (its own list; the consumer's is separate).
    pub fn may_use(&self, route: usize) -> bool {
        allowed(&self.allowed, route)
    }
}

/// The credential's warning window and where clients read about it.
#[derive(Debug, Clone, Default)]
pub struct KeyWarning {
    /// Seconds before `expires_at` when the warning starts; 0: never.
    pub seconds: i64,
    /// `Link` value (`<url>; rel="deprecation"; type="text/html"`), when configured.
    pub link: Option<HeaderValue>,
}

/// The admin listener's bearer token. Its `Debug` never shows it.
pub struct AdminToken(pub(crate) [u8; 32]);

impl AdminToken {
    /// The token whose SHA-256 is kept (the token itself is not).
    pub fn new(token: &[u8]) -> Self {
        AdminToken(crate::apikey::digest(token))
    }

    /// Whether `presented` is the token, compared in constant time (of digests, so
    /// neither length nor content leaks through timing).
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(crate::apikey::digest(presented).ct_eq(&self.0))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The shared secret header, ready to insert. Its `Debug` never shows the value.
pub struct Secret {
    /// Header name.
    pub header: HeaderName,
    /// Header value, marked sensitive.
    pub value: HeaderValue,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {{ header: {}, value: <redacted> }}", self.header)
    }
}

/// One credential source, parsed.
#[derive(Debug, Clone)]
pub struct Source {
    /// Header to read.
    pub header: HeaderName,
    /// Required scheme (e.g. `Bearer`), compared case-insensitively.
    pub scheme: Option<Box<[u8]>>,
}

/// Counts for `keygate check` and the key gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Keys whose `not_before` is still ahead.
    pub pending: usize,
    /// Usable keys.
    pub active: usize,
    /// Keys past their expiry.
    pub expired: usize,
    /// Keys disabled directly or through their consumer.
    pub disabled: usize,
}

/// Per-request limits, reloadable.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Idle time allowed between requests on a client connection.
    pub keepalive_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub client_body_timeout: Duration,
    /// Longest time from the first byte of a request head to its end.
    pub client_header_timeout: Duration,
    /// Minimum request-body rate in bytes per second; 0 disables.
    pub client_body_min_rate: u64,
    /// Largest request line plus headers, in bytes.
    pub max_request_header_bytes: usize,
    /// Most request headers.
    pub max_request_headers: usize,
    /// Brute-force policy.
    pub brute_force: crate::limiter::Policy,
}

/// Everything the request path needs, validated and prepared.
#[derive(Debug)]
pub struct State {
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// Upstreams referenced by routes.
    pub upstreams: Vec<Upstream>,
    /// Consumers referenced by keys.
    pub consumers: Vec<Consumer>,
    /// The key index.
    pub keys: KeyIndex,
    /// The shared secret.
    pub secret: Secret,
    /// Credential sources, in order.
    pub sources: Vec<Source>,
    /// Metric handles for this state's routes, consumers and upstreams.
    pub handles: Handles,
    /// Request limits and timeouts.
    pub limits: Limits,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Whether trusted peers' connections start with a PROXY protocol header.
    pub proxy_protocol: crate::config::ProxyProtocolMode,
    /// Per-key narrowing and limits, by [`KeyEntry::policy`].
    pub key_policies: Vec<KeyPolicy>,
    /// When each key was last used (Unix seconds; 0: not since keygate started), by key index.
    pub last_use: Box<[AtomicU32]>,
    /// The scope names routes require, by bit.
    pub scope_names: Vec<String>,
    /// The expiry warning.
    pub warning: KeyWarning,
    /// The admin listener's token, when `server.admin_token` is set.
    pub admin_token: Option<AdminToken>,
    /// The shared limit store's view, when `limits.store` was set at start (reloads
    /// keep it).
    pub fleet: Option<Arc<crate::limits::Fleet>>,
}

impl State {
    /// Find the first route matching `host` (no port) and `path`.
    pub fn route(&self, host: &[u8], path: &[u8]) -> Option<usize> {
        self.routes.iter().position(|r| r.matches(host, path))
    }

    /// The policy of a key entry, when it has one.
    pub fn key_policy(&self, entry: &KeyEntry) -> Option<&KeyPolicy> {
        self.key_policies.get(entry.policy as usize)
    }

    /// The state of key `entry` at time `now` (Unix seconds).
    pub fn key_state(&self, entry: &KeyEntry, now: i64) -> KeyState {
        let consumer_disabled = self
            .consumers
            .get(entry.consumer as usize)
            .is_none_or(|c| c.disabled);
        if entry.disabled || consumer_disabled {
            KeyState::Disabled
        } else if entry.expires_at <= now {
            KeyState::Expired
        } else if self.key_policy(entry).is_some_and(|p| p.not_before > now) {
            KeyState::Pending
        } else if self.in_warning(entry.expires_at, now) {
            KeyState::Expiring
        } else {
            KeyState::Active
        }
    }

    /// Whether a key expiring at `expires_at` is inside its warning window at `now`.
    pub fn in_warning(&self, expires_at: i64, now: i64) -> bool {
        self.warning.seconds > 0
            && expires_at != i64::MAX
            && expires_at > now
            && expires_at - now <= self.warning.seconds
    }

    /// Count keys by state at time `now` (Unix seconds); expiring keys count as active.
    pub fn key_counts(&self, now: i64) -> KeyCounts {
        let mut c = KeyCounts::default();
        for e in self.keys.entries() {
            match self.key_state(e, now) {
                KeyState::Disabled => c.disabled += 1,
                KeyState::Expired => c.expired += 1,
                KeyState::Pending => c.pending += 1,
                KeyState::Active | KeyState::Expiring => c.active += 1,
            }
        }
        c
    }

    /// The key gauges at time `now` (Unix seconds), for the telemetry listener.
    pub fn key_gauges(&self, now: i64) -> KeyGauges {
        let mut g = KeyGauges {
            store_bytes: self.keys.heap_bytes() as u64,
            ..KeyGauges::default()
        };
        for e in self.keys.entries() {
            match self.key_state(e, now) {
                KeyState::Disabled => g.disabled += 1,
                KeyState::Expired => g.expired += 1,
                KeyState::Pending => g.pending += 1,
                KeyState::Active => g.active += 1,
                KeyState::Expiring => {
                    g.active += 1;
                    g.expiring_soon += 1;
                }
            }
        }
        let (near, exhausted) = self.quota_usage(now.saturating_mul(1000));
        g.quota_near = near;
        g.quota_exhausted = exhausted;
        g
    }

    /// Consumers near (at least [`NEAR_QUOTA_PERCENT`] used) and at (nothing left)
    /// one of their quotas, their own or a route default's, at `now_ms` (Unix ms).
    pub fn quota_usage(&self, now_ms: i64) -> (u64, u64) {
        let (mut near, mut exhausted) = (0, 0);
        for c in &self.consumers {
            let own = c.quota.as_ref().map(|l| (l.spec, &*l.counter));
            let defaults = self.routes.iter().filter_map(|r| {
                let counter = c.route_counters.get(r.limit_slot?)?.quota.as_deref()?;
                Some((r.default_quota?, counter))
            });
            let mut level = 0;
            for (spec, counter) in own.into_iter().chain(defaults) {
                let s = counter.peek(&spec, now_ms);
                let limit = crate::limits::limit_of(&spec);
                if s.remaining == 0 {
                    level = 2;
                } else if (limit - s.remaining) * 100 >= limit * NEAR_QUOTA_PERCENT {
                    level = level.max(1);
                }
            }
            match level {
                2 => exhausted += 1,
                1 => near += 1,
                _ => {}
            }
        }
        (near, exhausted)
    }

    /// Record that key `idx` was used at `now` (Unix seconds). Lock-free; writes only
    /// when the second changed, so a busy key does not bounce its cache line.
    pub fn touch(&self, idx: u32, now: i64) {
        if let Some(slot) = self.last_use.get(idx as usize) {
            let now = u32::try_from(now).unwrap_or(0);
            if slot.load(Ordering::Relaxed) != now {
                slot.store(now, Ordering::Relaxed);
            }
        }
    }

    /// When key `idx` was last used (Unix seconds), if since keygate started.
    pub fn last_used(&self, idx: u32) -> Option<i64> {
        self.last_use
            .get(idx as usize)
            .map(|s| i64::from(s.load(Ordering::Relaxed)))
            .filter(|&t| t > 0)
    }

    /// Take the later last-use time of every key `previous` also has (same digest), for
    /// uses recorded by requests still on the previous state while this one was built.
    pub fn merge_last_use(&self, previous: &State) {
        for (idx, e) in self.keys.entries().iter().enumerate() {
            if let Some((old, _)) = previous.keys.lookup(&e.digest) {
                if let (Some(slot), Some(t)) = (self.last_use.get(idx), previous.last_used(old)) {
                    slot.fetch_max(u32::try_from(t).unwrap_or(0), Ordering::Relaxed);
                }
            }
        }
    }
}

/// What state a key is in, for listings and gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Usable, inside its warning window before `expires_at`.
    Expiring,
    /// Not usable yet (`not_before` ahead).
    Pending,
    /// Past `expires_at`.
    Expired,
    /// Disabled directly or through its consumer.
    Disabled,
}

impl KeyState {
    /// The name used in listings and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Expiring => "expiring",
            KeyState::Pending => "pending",
            KeyState::Expired => "expired",
            KeyState::Disabled => "disabled",
        }
    }
}

/// Whether `s` is a valid id: 1–128 of `[A-Za-z0-9._-]`.
pub fn valid_id(s: &str) -> bool {
    const OK: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let c = i as u8;
            t[i] = c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
            i += 1;
        }
        t
    };
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| OK[usize::from(b)])
}

#[cfg(test)]
mod tests;
