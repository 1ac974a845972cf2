//! Criterion benchmarks for keygate's own per-request work (including the access-log
//! line) and for loading keys.
//!
//! `cargo bench --bench keygate` measures; `cargo test --all-targets` runs each benchmark
//! once as a smoke test (with smaller key sets, so CI stays quick).

#![allow(clippy::unwrap_used)] // benchmark setup: a failed unwrap is a broken benchmark

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use keygate::admission::{admit, charge_limits, Admission};
use keygate::auth::{self, AuthOutcome};
use keygate::balance::{Balancer, Ejection, Policy, ServerHealth};
use keygate::config::{ConsumerConfig, KeyConfig, KeysFile};
use keygate::fixture;
use keygate::forwarded;
use keygate::limiter::FailureLimiter;
use keygate::logging::{self, AccessRecord};
use keygate::proxy::{rewrite_upstream_headers, Rewrite};
use keygate::state::{self, State};
use pingora::http::RequestHeader;

// The same allocator as the keygate binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONFIG: &str = r#"
secret: { env: UNUSED }
auth: { keys_file: keys.json }
upstreams: { origin: { address: "127.0.0.1:8000" } }
routes: [ { name: api, path_prefix: /, upstream: origin, auth: required } ]
"#;

/// Whether this run measures (`cargo bench`) or only smoke-tests (`cargo test`).
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn key(i: usize) -> String {
    format!("bench-key-{i:08}")
}

fn state_with(n: usize) -> State {
    let consumers = (0..n.div_ceil(10))
        .map(|c| ConsumerConfig {
            id: format!("c{c}"),
            name: Some("Bench".into()),
            keys: (c * 10..(c * 10 + 10).min(n))
                .map(|i| KeyConfig {
                    id: format!("k{i}"),
                    sha256: hex::encode(keygate::apikey::digest(key(i).as_bytes())),
                    ..KeyConfig::default()
                })
                .collect(),
            ..ConsumerConfig::default()
        })
        .collect();
    fixture::build_with_keys(CONFIG, &KeysFile { consumers }).unwrap()
}

fn sizes() -> Vec<usize> {
    if measuring() {
        vec![10, 10_000, 1_000_000]
    } else {
        vec![10, 10_000]
    }
}

fn headers(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_str(key).unwrap());
    h.insert("host", HeaderValue::from_static("api.example.com"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h
}

/// Extract + hash + lookup + constant-time confirm + checks, at several key-set sizes.
fn auth_decision(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth");
    for n in sizes() {
        let state = state_with(n);
        // Spread the probed keys over the whole index, as real traffic would.
        let valid: Vec<HeaderMap> = (0..1024).map(|i| headers(&key(i * 7919 % n))).collect();
        let invalid: Vec<HeaderMap> = (0..1024)
            .map(|i| headers(&format!("unknown-key-{i:08}")))
            .collect();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("valid", n), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let o = auth::authenticate(
                    &state,
                    0,
                    &Method::GET,
                    black_box(&valid[i]),
                    1_800_000_000,
                );
                debug_assert!(matches!(o, AuthOutcome::Consumer { .. }));
                o
            })
        });
        g.bench_function(BenchmarkId::new("invalid", n), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                auth::authenticate(
                    &state,
                    0,
                    &Method::GET,
                    black_box(&invalid[i]),
                    1_800_000_000,
                )
            })
        });
    }
    g.finish();
}

fn request(key: &str) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/v1/things?limit=10", Some(8)).unwrap();
    r.insert_header("host", "api.example.com").unwrap();
    r.insert_header("x-api-key", key).unwrap();
    r.insert_header("user-agent", "bench/1.0").unwrap();
    r.insert_header("accept", "application/json").unwrap();
    r
}

/// The whole `request_filter` decision (limits, path, route, limiter, auth) and the
/// `upstream_request_filter` header rewrite.
fn request_path(c: &mut Criterion) {
    let state = state_with(10_000);
    let limiter = FailureLimiter::new(65_536);
    let req = request(&key(42));
    let ip = Some("192.0.2.1".parse().unwrap());
    c.bench_function("admit/valid", |b| {
        b.iter(|| admit(&state, black_box(&req), ip, &limiter, 1_800_000_000_000))
    });
    let Admission::Forward(forward) = admit(&state, &req, ip, &limiter, 1_800_000_000_000) else {
        panic!("bench key rejected");
    };
    let rid = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
    let client = forwarded::client(ip, &req.headers, &state.trusted_proxies);
    c.bench_function("rewrite_upstream_headers", |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                let fwd =
                    forwarded::forwarded(&r.headers, &client, false, Some(8080), Some(b"api.test"));
                rewrite_upstream_headers(
                    &mut r,
                    Rewrite {
                        state: &state,
                        forward: &forward,
                        request_id: &rid,
                        forwarded: fwd,
                    },
                )
                .unwrap();
                r
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// `n` consumers with one key each and a rate limit and a quota (high enough never to
/// refuse).
fn limited_state(n: usize) -> State {
    let consumers = (0..n)
        .map(|c| ConsumerConfig {
            id: format!("c{c}"),
            rate_limit: Some(keygate::config::RateLimitConfig {
                requests: 4_000_000_000,
                window_seconds: 60,
            }),
            quota: Some(keygate::config::QuotaConfig {
                requests: 4_000_000_000,
                period: keygate::config::QuotaPeriod::Month,
            }),
            keys: vec![KeyConfig {
                id: format!("k{c}"),
                sha256: hex::encode(keygate::apikey::digest(key(c).as_bytes())),
                ..KeyConfig::default()
            }],
            ..ConsumerConfig::default()
        })
        .collect();
    fixture::build_with_keys(CONFIG, &KeysFile { consumers }).unwrap()
}

/// The consumer-limit check (rate limit and quota, check then commit) with 100,000
/// consumers, touching a different consumer's counters each time as real traffic would;
/// and the whole admission of a limited consumer next to `admit/valid`.
fn limit_check(c: &mut Criterion) {
    let n = if measuring() { 100_000 } else { 1_000 };
    let state = limited_state(n);
    let mut g = c.benchmark_group("limits");
    let mut i = 0u32;
    let now = 1_800_000_000_000;
    g.bench_function(BenchmarkId::new("charge", n), |b| {
        b.iter(|| {
            i = (i + 7919) % n as u32;
            let c = charge_limits(&state, 0, i, i, black_box(now));
            debug_assert!(c.admitted());
            c
        })
    });
    let limiter = FailureLimiter::new(65_536);
    let req = request(&key(42));
    let ip = Some("192.0.2.1".parse().unwrap());
    g.bench_function("admit/valid_limited", |b| {
        b.iter(|| admit(&state, black_box(&req), ip, &limiter, now))
    });
    g.finish();
}

/// Formatting one access-log line, as the proxy's `logging` phase does for every request
/// (into the thread's reused line buffer; writing it out happens on another thread).
fn access_log(c: &mut Criterion) {
    let record = AccessRecord {
        method: Some("GET"),
        path: Some(b"/v1/things/42"),
        status: 200,
        route: Some("api"),
        consumer: Some("acme"),
        key_id: Some("acme-2026-01"),
        code: None,
        duration: std::time::Duration::from_micros(7265),
        request_id: b"0123456789abcdef0123456789abcdef",
        client: Some("192.0.2.1".parse().unwrap()),
        error: None,
        key_expires_at: None,
        upstream_server: Some("10.0.0.11:8000"),
        retried_from: None,
    };
    let mut g = c.benchmark_group("access_log");
    let mut line = String::with_capacity(512);
    for (name, format) in [
        ("text", logging::Format::Text),
        ("json", logging::Format::Json),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                line.clear();
                logging::format_line(format, black_box(&record), &mut line);
                line.len()
            })
        });
    }
    g.finish();
}

/// Loading and validating a keys file (JSON), streamed into the index.
fn load(c: &mut Criterion) {
    let n = if measuring() { 1_000_000 } else { 10_000 };
    let dir = std::env::temp_dir().join(format!("keygate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut json = String::from("{\"consumers\": [");
    for cidx in 0..n / 10 {
        if cidx > 0 {
            json.push(',');
        }
        json.push_str(&format!("{{\"id\": \"c{cidx}\", \"keys\": ["));
        for i in cidx * 10..cidx * 10 + 10 {
            if i > cidx * 10 {
                json.push(',');
            }
            let d = hex::encode(keygate::apikey::digest(key(i).as_bytes()));
            json.push_str(&format!("{{\"id\": \"k{i}\", \"sha256\": \"{d}\"}}"));
        }
        json.push_str("]}");
    }
    json.push_str("]}");
    std::fs::write(dir.join("keys.json"), json).unwrap();
    std::fs::write(
        dir.join("keygate.yaml"),
        CONFIG.replace("env: UNUSED", "file: secret"),
    )
    .unwrap();
    std::fs::write(dir.join("secret"), "bench-secret-0123456789\n").unwrap();
    let path = dir.join("keygate.yaml");
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("json_keys", n), |b| {
        b.iter(|| {
            let loaded = state::load(&path, None).unwrap();
            assert_eq!(loaded.state.keys.len(), n);
            loaded
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A balancer over servers of `weights`, with health checks and ejection on.
fn balancer(weights: &[u32], policy: Policy) -> Balancer {
    let servers = weights
        .iter()
        .map(|&w| {
            let h = std::sync::Arc::new(ServerHealth::default());
            h.observe(true, 2, 3);
            (h, w)
        })
        .collect();
    let eject = Ejection {
        after_failures: 3,
        duration_ms: 10_000,
    };
    Balancer::new(servers, policy, true, eject)
}

/// Choosing an upstream server in `upstream_peer` (the pick and its lease, dropped).
fn selection(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    for (name, weights, policy) in [
        ("one_server", &[1][..], Policy::RoundRobin),
        ("two_servers", &[1, 1], Policy::RoundRobin),
        (
            "eight_weighted",
            &[1, 2, 3, 4, 5, 6, 7, 8],
            Policy::RoundRobin,
        ),
        (
            "least_connections_8",
            &[1, 2, 3, 4, 5, 6, 7, 8],
            Policy::LeastConnections,
        ),
    ] {
        let b = balancer(weights, policy);
        g.bench_function(name, |bench| {
            bench.iter(|| black_box(b.pick(black_box(None)).map(|p| p.server)))
        });
    }
    // One of two servers failing its health checks: every other pick falls back.
    let b = balancer(&[1, 1], Policy::RoundRobin);
    b.health(1).unwrap().observe(false, 2, 1);
    g.bench_function("two_servers_one_down", |bench| {
        bench.iter(|| black_box(b.pick(black_box(None)).map(|p| p.server)))
    });
    // One of two ejected: the clock is read on every pick.
    let b = balancer(&[1, 1], Policy::RoundRobin);
    for _ in 0..3 {
        b.connect_failed(1);
    }
    g.bench_function("two_servers_one_ejected", |bench| {
        bench.iter(|| black_box(b.pick(black_box(None)).map(|p| p.server)))
    });
    g.finish();
}

criterion_group!(
    benches,
    selection,
    auth_decision,
    request_path,
    limit_check,
    access_log,
    load
);
criterion_main!(benches);
