//! The runtime snapshot the request path reads: validated, prepared, immutable.
//!
//! [`load()`] reads `keygate.yaml`, the keys file and the secret, checks them as a
//! whole (collecting *every* problem before failing, [`build()`]) and builds a
//! [`State`]: routes with parsed matchers, upstreams as ready-to-clone
//! `HttpPeer`s with their TLS trust, the key index, pre-built header values and
//! resolved metric handles. Nothing string-typed or optional that the request
//! path would have to re-check survives into `State`. A `State` is never
//! mutated; a reload builds a new one and swaps it in ([`SharedState`]).
//!
//! - `build`: the orchestrator and the sections of `keygate.yaml`;
//! - `upstream`: upstream peers and origin TLS trust;
//! - `routes`: routes, their canonical hosts and prefixes;
//! - `keys`: consumers and the key index, one consumer at a time;
//! - `address`: addresses are `host:port`, never URLs;
//! - `load`: reading the files and secrets, and locating every problem found.

mod address;
mod build;
mod keys;
mod load;
mod problems;
mod routes;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora::upstreams::peer::HttpPeer;

use crate::config::AuthMode;
use crate::forwarded::TrustedProxies;
use crate::keystore::KeyIndex;
use crate::metrics::{Handles, KeyGauges, EXPIRING_SOON_SECONDS};
use crate::tls::OriginTrust;

pub use build::{build, Inputs};
pub use load::{load, load_with_secret, read_secret, Loaded, SHORT_SECRET};

/// The state shared by every request and replaced whole by a reload.
pub type SharedState = Arc<ArcSwap<State>>;

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

/// One upstream, with its peer built once at load.
pub struct Upstream {
    /// The configured name.
    pub name: String,
    /// The peer cloned for each request (address already resolved).
    pub peer: HttpPeer,
    /// `Host` to send instead of the client's, when configured.
    pub host_header: Option<HeaderValue>,
    /// How the origin's certificate is verified, for TLS upstreams.
    pub trust: Option<Arc<OriginTrust>>,
    /// The origin matches paths without regard to ASCII case.
    pub case_insensitive_paths: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("address", &self.peer._address)
            .finish()
    }
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
    /// Every key of this consumer is disabled.
    pub disabled: bool,
    /// `allowed[route_index]`; `None` means all routes.
    pub allowed: Option<Box<[bool]>>,
}

impl Consumer {
    /// Whether this consumer may use route `route`.
    pub fn may_use(&self, route: usize) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.get(route).copied().unwrap_or(false))
    }
}

/// The shared secret header, ready to insert. Its `Debug` never shows the value.
pub struct Secret {
    /// Header name.
    pub header: HeaderName,
    /// The same name as shared bytes, for inserting without a copy per request.
    pub header_case: Bytes,
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
}

impl State {
    /// Find the first route matching `host` (no port) and `path`.
    pub fn route(&self, host: &[u8], path: &[u8]) -> Option<usize> {
        self.routes.iter().position(|r| r.matches(host, path))
    }

    /// Count keys by state at time `now` (Unix seconds).
    pub fn key_counts(&self, now: i64) -> KeyCounts {
        let mut c = KeyCounts::default();
        for e in self.keys.entries() {
            let consumer_disabled = self
                .consumers
                .get(e.consumer as usize)
                .is_none_or(|c| c.disabled);
            if e.disabled || consumer_disabled {
                c.disabled += 1;
            } else if e.expires_at <= now {
                c.expired += 1;
            } else {
                c.active += 1;
            }
        }
        c
    }

    /// The key gauges at time `now` (Unix seconds), for the telemetry listener.
    pub fn key_gauges(&self, now: i64) -> KeyGauges {
        let c = self.key_counts(now);
        let expiring_soon = self
            .keys
            .entries()
            .iter()
            .filter(|e| {
                !e.disabled
                    && e.expires_at > now
                    && e.expires_at - now <= EXPIRING_SOON_SECONDS
                    && self
                        .consumers
                        .get(e.consumer as usize)
                        .is_some_and(|c| !c.disabled)
            })
            .count();
        KeyGauges {
            active: c.active as u64,
            expired: c.expired as u64,
            disabled: c.disabled as u64,
            expiring_soon: expiring_soon as u64,
            store_bytes: self.keys.heap_bytes() as u64,
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
