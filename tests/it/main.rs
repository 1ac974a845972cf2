//! Integration tests: the real keygate binary on loopback in front of a real origin.
#![allow(clippy::unwrap_used)] // test harness code: a failed unwrap is a failed test

// Servers, client, certificates, configs and processes shared by every test.
mod harness;
// Authentication outcomes and what the origin receives.
mod auth;
// Upstream failures, TLS to the origin, TLS listeners.
mod upstream;
// Upstreams with several servers: balancing, health checks, ejection, retries.
mod upstreams;
// The request keygate routes is the request the origin acts on: hosts, paths, claims.
mod canonical;
// The PROXY protocol from trusted L4 balancers, plain and TLS listeners.
mod proxyproto;
// Slow clients: request-head deadline, body-rate floor.
mod slow;
// The command line: check, keygen/hash, refusing to start, demo.
mod cli;
// SIGHUP reload: keys change live, broken files keep the old state.
mod reload;
// Files across a fleet: their digests exported and logged, `server.watch_files`.
mod watch;
// Prometheus metrics and the health endpoint.
mod metrics;
// Hostile requests: malformed credentials, smuggling, odd paths, slow clients, brute force.
mod hostile;
// Faults: bad origins, broken files at reload, signal storms.
mod faults;
// Secrets never appear in logs (even at trace), bodies or metrics.
mod leaks;
// Stopping: every access-log line is written on SIGTERM and SIGINT.
mod lifecycle;
// Logs an operator can use: directives, JSON, a file reopened on SIGUSR1, quiet Pingora.
mod logs;
// The service manager hears the truth: start-up failures, readiness, reloads.
mod service;
// Consumer controls: rate limits, quotas, key lifecycle, scopes, metadata, last use, admin.
mod controls;
// Routes: methods and 405, prefix rewrites, per-route timeouts, body limits, CORS.
mod routes;
// A fleet: limits shared through a real redis-server; the store failing and recovering.
mod fleet;
// What passes through untouched: request-targets and fields in, status lines and fields out.
mod passthrough;
