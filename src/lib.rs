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
//! leaves      apikey access cors timestamp balance → limits headers host path limiter
//!             problem request_id yaml metrics tls proxy_protocol text
//! files       config logging forwarded
//! keys        keystore
//! state       state                   (validated, prepared, immutable snapshot)
//! decisions   auth → admission        (pure: request head + state → outcome)
//!             health                  (probing upstream servers, in the background)
//!             fleet                   (sharing limits through Redis, in the background)
//!             keylist                 (the operator's view of keys)
//! connection  conn                    (PROXY header, request-head deadline, body-rate floor)
//! serving     proxy  telemetry admin  (Pingora phases; /metrics + /healthz; GET /keys)
//! operating   reload → server         (SIGHUP; wiring a Pingora server)
//! front       cli keygen  origin → demo  (the command line, new keys, the demo)
//! ```
//!
//! - [`apikey`]: the key format, checksum and digests;
//! - [`balance`]: choosing an upstream server (weights, health, ejection);
//! - [`access`]: method and scope sets;
//! - [`cors`]: the CORS protocol for browser clients (preflights, response headers);
//! - [`timestamp`]: RFC 3339 and HTTP-date helpers;
//! - [`text`]: integers and IP addresses as text, without `core::fmt`;
//! - [`limits`]: rate-limit and quota counters (count admitted requests only);
//! - [`headers`]: every header name keygate sets, and those it removes from clients;
//! - [`host`], [`path`]: the canonical host and path routes match and origins receive;
//! - [`limiter`]: brute-force resistance per client address;
//! - [`problem`]: the problem documents keygate answers with;
//! - [`request_id`]: request ids;
//! - [`proxy_protocol`]: the PROXY protocol header (v1, v2) an L4 balancer sends first;
//! - [`yaml`]: the YAML reader (positions, every error, one subtree at a time);
//! - [`config`]: the YAML files as written (strict, located errors);
//! - [`metrics`]: Prometheus families, label values and per-state handles;
//! - [`logging`]: the leak-proof logger (`KEYGATE_LOG` directives, Pingora capped) and the
//!   access log (text or JSON, to stderr or a file reopened on SIGUSR1);
//! - [`tls`]: origin certificate verification;
//! - [`forwarded`]: the client address behind trusted proxies, and `X-Forwarded-*`;
//! - [`keystore`]: the key index (O(1) by digest, about 70 bytes per key);
//! - [`state`]: the validated runtime snapshot the request path reads;
//! - [`auth`]: the pure authentication decision;
//! - [`health`]: active health checks of upstream servers (a background service);
//! - [`fleet`]: limits shared by a fleet of instances through Redis or Valkey (a
//!   background service syncing the counters);
//! - [`admission`]: the request decision (header limits, host, path, route, brute force,
//!   auth, consumer limits);
//! - [`keylist`]: the key listing served by the admin listener and `keygate keys`;
//! - [`conn`]: client connections (request-head deadline, body-rate floor);
//! - [`proxy`]: the Pingora `ProxyHttp` phases;
//! - [`telemetry`]: the `/metrics` and `/healthz` listener;
//! - [`admin`]: the admin listener (`GET /keys`, bearer token);
//! - [`reload`]: SIGHUP reload;
//! - [`server`]: wiring into a Pingora server;
//! - [`cli`], [`keygen`], [`origin`], [`demo`]: the command line, new keys, the demo;
//! - `fixture`, `fuzz`: shared test fixtures and fuzzing entry points (hidden).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod admission;
pub mod apikey;
pub mod auth;
pub mod balance;
pub mod cli;
pub mod config;
pub mod conn;
pub mod cors;
pub mod demo;
#[doc(hidden)]
pub mod fixture;
pub mod fleet;
pub mod forwarded;
#[doc(hidden)]
pub mod fuzz;
pub mod headers;
pub mod health;
pub mod host;
pub mod keygen;
pub mod keylist;
pub mod keystore;
pub mod limiter;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod path;
pub mod problem;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod request_id;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod timestamp;
pub mod tls;
pub mod yaml;

#[cfg(test)]
mod layering;
