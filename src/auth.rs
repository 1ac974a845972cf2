//! The authentication decision: request headers + [`State`] → [`AuthOutcome`].
//!
//! Pure functions, no I/O and no `Session`, so unit tests and benches call them
//! directly. A missing or wrong key is an *outcome*, not an error.

use http::{HeaderMap, Method};

use crate::apikey::{self, Shape};
use crate::config::AuthMode;
use crate::metrics::AuthResult;
use crate::problem::Code;
use crate::state::{Source, State};

impl Rejection {
    /// The problem code keygate answers with.
    pub fn code(self) -> Code {
        match self {
            Rejection::Missing => Code::MissingApiKey,
            Rejection::Invalid | Rejection::NotYetValid => Code::InvalidApiKey,
            Rejection::Expired => Code::ExpiredApiKey,
            Rejection::Disabled => Code::DisabledApiKey,
            Rejection::Ambiguous => Code::AmbiguousCredentials,
            Rejection::Forbidden { .. } => Code::Forbidden,
        }
    }
}

impl AuthOutcome {
    /// The `keygate_auth_total{result}` this outcome counts as.
    pub fn metric(&self) -> AuthResult {
        match self {
            AuthOutcome::Consumer { .. } => AuthResult::Ok,
            AuthOutcome::Anonymous => AuthResult::Anonymous,
            AuthOutcome::Rejected(r) => match r {
                Rejection::Missing => AuthResult::Missing,
                Rejection::Invalid => AuthResult::Invalid,
                Rejection::Expired => AuthResult::Expired,
                Rejection::Disabled => AuthResult::Disabled,
                Rejection::NotYetValid => AuthResult::NotYetValid,
                Rejection::Forbidden { .. } => AuthResult::Forbidden,
                Rejection::Ambiguous => AuthResult::Ambiguous,
            },
        }
    }
}

/// Longest key accepted; longer ones are rejected without hashing.
pub const MAX_KEY_LEN: usize = 1024;

/// What the client presented, across all sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No source carried a credential.
    None,
    /// Exactly one distinct key; `sources` is a bitmask of the sources that carried it.
    Key {
        /// The key bytes as sent.
        key: &'a [u8],
        /// Bit `i` set when source `i` carried this key.
        sources: u32,
    },
    /// A source carried something unusable as a key (empty, bad bytes, too long).
    Malformed {
        /// Bit `i` set when source `i` carried it.
        sources: u32,
    },
    /// Two different credentials were presented.
    Ambiguous,
}

/// Why a request is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No key presented on a route that requires one.
    Missing,
    /// The key is unknown, malformed or fails its checksum.
    Invalid,
    /// The key is past its expiry.
    Expired,
    /// The key or its consumer is disabled.
    Disabled,
    /// Two different credentials were presented.
    Ambiguous,
    /// The key's `not_before` is still ahead (the client is told `invalid_api_key`).
    NotYetValid,
    /// The consumer or key may not do this.
    Forbidden {
        /// Why.
        denial: Denial,
        /// Index of the (valid) key in the key index.
        key: u32,
    },
}

/// Why a valid key may not make a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The route is not in the consumer's or the key's `routes`.
    Route,
    /// The method is not in the consumer's or the key's `methods`.
    Method,
    /// The route requires the scope with this bit, which the key lacks.
    Scope(u32),
}

/// The result of authenticating one request on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// A valid key: forward with its identity.
    Consumer {
        /// Index of the key in the key index.
        key: u32,
        /// Index of the consumer.
        consumer: u32,
        /// Bitmask of the sources that carried the key (removed before forwarding).
        sources: u32,
    },
    /// No key on an `optional` route, or an `auth: none` route.
    Anonymous,
    /// Turned away.
    Rejected(Rejection),
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The key a single header value carries for `source`, if any.
///
/// `Some(Ok(key))`: a key; `Some(Err(()))`: the value is meant for us but unusable;
/// `None`: the value does not use this source's scheme (e.g. `Basic` auth), so it is
/// not a keygate credential.
fn value_key<'a>(source: &Source, value: &'a [u8]) -> Option<Result<&'a [u8], ()>> {
    let value = trim_ows(value);
    let key = match &source.scheme {
        Some(scheme) => {
            let (s, rest) = match value.iter().position(|&b| b == b' ' || b == b'\t') {
                Some(i) => (&value[..i], &value[i..]),
                None => (value, &b""[..]),
            };
            if !s.eq_ignore_ascii_case(scheme) {
                return None;
            }
            trim_ows(rest)
        }
        None => value,
    };
    let ok = !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(u8::is_ascii_graphic);
    Some(if ok { Ok(key) } else { Err(()) })
}

/// Collect the credential from every source; repeated or conflicting values are ambiguous.
pub fn extract<'a>(headers: &'a HeaderMap, sources: &[Source]) -> Credential<'a> {
    let mut found: Option<&[u8]> = None;
    let mut mask = 0u32;
    let mut malformed = 0u32;
    for (i, source) in sources.iter().enumerate().take(32) {
        for v in headers.get_all(&source.header) {
            match value_key(source, v.as_bytes()) {
                None => {}
                Some(Err(())) => malformed |= 1 << i,
                Some(Ok(k)) => match found {
                    Some(prev) if prev != k => return Credential::Ambiguous,
                    _ => {
                        found = Some(k);
                        mask |= 1 << i;
                    }
                },
            }
        }
    }
    match (found, malformed) {
        (Some(_), m) if m != 0 => Credential::Ambiguous,
        (Some(key), _) => Credential::Key { key, sources: mask },
        (None, 0) => Credential::None,
        (None, m) => Credential::Malformed { sources: m },
    }
}

/// Bitmask of the sources (bit `i` for source `i`) that carry something keygate reads
/// as one of its own credentials: a `kg_`-prefixed key, or any key whose digest is in
/// the index whatever its state. On `auth: none` routes keygate forwards without
/// checking keys, but never forwards one of these; other values (a `Basic`
/// credential, an origin's own token) pass through.
pub fn keygate_credentials(state: &State, headers: &HeaderMap) -> u32 {
    let mut mask = 0u32;
    for (i, source) in state.sources.iter().enumerate().take(32) {
        for v in headers.get_all(&source.header) {
            if let Some(Ok(key)) = value_key(source, v.as_bytes()) {
                if apikey::shape(key) != Shape::Foreign
                    || state.keys.lookup(&apikey::digest(key)).is_some()
                {
                    mask |= 1 << i;
                }
            }
        }
    }
    mask
}

/// Check a presented key against the state for `route` and `method` at time `now` (Unix
/// seconds): known, enabled, within `not_before`..`expires_at`, then allowed the route,
/// the method and the route's scopes (by the consumer and by the key). Records the
/// key's last use once it is known to be valid, even when the request is then denied.
pub fn check_key(
    state: &State,
    route: usize,
    method: &Method,
    key: &[u8],
    sources: u32,
    now: i64,
) -> AuthOutcome {
    if apikey::shape(key) == Shape::Corrupt {
        return AuthOutcome::Rejected(Rejection::Invalid);
    }
    let Some((idx, entry)) = state.keys.lookup(&apikey::digest(key)) else {
        return AuthOutcome::Rejected(Rejection::Invalid);
    };
    let Some(consumer) = state.consumers.get(entry.consumer as usize) else {
        return AuthOutcome::Rejected(Rejection::Invalid);
    };
    if entry.disabled || consumer.disabled {
        return AuthOutcome::Rejected(Rejection::Disabled);
    }
    if entry.expires_at <= now {
        return AuthOutcome::Rejected(Rejection::Expired);
    }
    let policy = state.key_policy(entry);
    if policy.is_some_and(|p| p.not_before > now) {
        return AuthOutcome::Rejected(Rejection::NotYetValid);
    }
    state.touch(idx, now);
    let forbidden = |denial| AuthOutcome::Rejected(Rejection::Forbidden { denial, key: idx });
    if !consumer.may_use(route) || policy.is_some_and(|p| !p.may_use(route)) {
        return forbidden(Denial::Route);
    }
    if !consumer.methods.allows(method) || policy.is_some_and(|p| !p.methods.allows(method)) {
        return forbidden(Denial::Method);
    }
    let required = state
        .routes
        .get(route)
        .map(|r| r.scopes)
        .unwrap_or_default();
    if required.0 != 0 {
        let granted = policy.map_or(consumer.scopes, |p| consumer.scopes.and(p.scopes));
        if let Some(bit) = granted.first_missing(required) {
            return forbidden(Denial::Scope(bit));
        }
    }
    AuthOutcome::Consumer {
        key: idx,
        consumer: entry.consumer,
        sources,
    }
}

/// Decide what happens to a request on `route` with this method and these headers at
/// `now` (Unix seconds).
pub fn authenticate(
    state: &State,
    route: usize,
    method: &Method,
    headers: &HeaderMap,
    now: i64,
) -> AuthOutcome {
    let mode = state
        .routes
        .get(route)
        .map_or(AuthMode::Required, |r| r.auth);
    if mode == AuthMode::None {
        return AuthOutcome::Anonymous;
    }
    match extract(headers, &state.sources) {
        Credential::Ambiguous => AuthOutcome::Rejected(Rejection::Ambiguous),
        Credential::Malformed { .. } => AuthOutcome::Rejected(Rejection::Invalid),
        Credential::None if mode == AuthMode::Optional => AuthOutcome::Anonymous,
        Credential::None => AuthOutcome::Rejected(Rejection::Missing),
        Credential::Key { key, sources } => check_key(state, route, method, key, sources, now),
    }
}

#[cfg(test)]
mod tests;
