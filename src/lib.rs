//! keygate: a self-hosted API-key gateway on Cloudflare's Pingora.
//!
//! Clients present an API key; keygate checks its SHA-256 digest against the
//! keys file, answers 401/403 itself, and forwards good requests to the origin
//! with the credential removed, a shared secret added, and the consumer's
//! identity in headers. The modules, in the order a request meets them:
//!
//! - [`config`]: the YAML files as written (strict, located errors);
//! - [`state`]: the validated runtime snapshot the request path reads;
//! - [`keystore`]: the key index (O(1) by digest, about 70 bytes per key);
//! - [`admission`]: the request decision (limits, host, path, route, brute force, auth);
//! - [`host`], [`path`]: the canonical host and path routes match and origins receive;
//! - [`headers`]: every header name keygate sets, and those it removes from clients;
//! - [`forwarded`]: the client address behind trusted proxies, and `X-Forwarded-*`;
//! - [`auth`]: the pure authentication decision;
//! - [`limiter`]: brute-force resistance per client address;
//! - [`apikey`]: the key format, checksum and digests;
//! - [`proxy`]: the Pingora `ProxyHttp` phases;
//! - [`conn`]: client connections (request-head deadline, body-rate floor);
//! - [`tls`]: origin certificate verification;
//! - [`problem`]: the problem documents keygate answers with;
//! - [`logging`]: the leak-proof logger and the access log;
//! - [`metrics`]: Prometheus metrics and the `/metrics` listener;
//! - [`reload`]: SIGHUP reload;
//! - [`server`]: wiring into a Pingora server;
//! - [`cli`], [`demo`], [`origin`]: the command line and the demo;
//! - [`timestamp`]: RFC 3339 helpers;
//! - `fuzz`: fuzzing entry points (used by `fuzz/`).

#![forbid(unsafe_code)]

pub mod admission;
pub mod apikey;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod demo;
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
pub mod server;
pub mod state;
pub mod timestamp;
pub mod tls;
