//! keygate: a self-hosted API-key gateway on Cloudflare's Pingora.
//!
//! Clients present an API key; keygate checks its SHA-256 digest against the
//! keys file, answers 401/403 itself, and forwards good requests to the origin
//! with the credential removed, a shared secret added, and the consumer's
//! identity in headers.
//!
//! The modules form one-way layers: a module only uses modules of a lower
//! layer (a test, `layering`, keeps it so). From the bottom:
//!
//! ```text
//! leaves      apikey timestamp headers host path limiter problem request_id
//!             yaml metrics tls
//! files       config logging forwarded
//! keys        keystore
//! state       state                   (validated, prepared, immutable snapshot)
//! decisions   auth → admission        (pure: request head + state → outcome)
//! connection  conn                    (request-head deadline, body-rate floor)
//! serving     proxy  telemetry        (Pingora phases; /metrics + /healthz)
//! operating   reload → server         (SIGHUP; wiring a Pingora server)
//! front       cli  origin → demo      (the command line, the demo)
//! ```
//!
//! - [`apikey`]: the key format, checksum and digests;
//! - [`timestamp`]: RFC 3339 helpers;
//! - [`headers`]: every header name keygate sets, and those it removes from clients;
//! - [`host`], [`path`]: the canonical host and path routes match and origins receive;
//! - [`limiter`]: brute-force resistance per client address;
//! - [`problem`]: the problem documents keygate answers with;
//! - [`request_id`]: request ids;
//! - [`yaml`]: the YAML reader (positions, every error, one subtree at a time);
//! - [`config`]: the YAML files as written (strict, located errors);
//! - [`metrics`]: Prometheus families, label values and per-state handles;
//! - [`logging`]: the leak-proof logger and the access log;
//! - [`tls`]: origin certificate verification;
//! - [`forwarded`]: the client address behind trusted proxies, and `X-Forwarded-*`;
//! - [`keystore`]: the key index (O(1) by digest, about 70 bytes per key);
//! - [`state`]: the validated runtime snapshot the request path reads;
//! - [`auth`]: the pure authentication decision;
//! - [`admission`]: the request decision (limits, host, path, route, brute force, auth);
//! - [`conn`]: client connections (request-head deadline, body-rate floor);
//! - [`proxy`]: the Pingora `ProxyHttp` phases;
//! - [`telemetry`]: the `/metrics` and `/healthz` listener;
//! - [`reload`]: SIGHUP reload;
//! - [`server`]: wiring into a Pingora server;
//! - [`cli`], [`origin`], [`demo`]: the command line and the demo;
//! - `fixture`, `fuzz`: shared test fixtures and fuzzing entry points (hidden).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod apikey;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod demo;
#[doc(hidden)]
pub mod fixture;
pub mod forwarded;
#[doc(hidden)]
pub mod fuzz;
pub mod headers;
pub mod host;
pub mod keystore;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod path;
pub mod problem;
pub mod proxy;
pub mod reload;
pub mod request_id;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
pub mod yaml;

#[cfg(test)]
mod layering;
