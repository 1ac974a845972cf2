//! Upstreams with several servers: weights, health checks, passive ejection, retries on
//! another server, everything down, reloads, probes over TLS and with the live secret.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;

/// How long health checks get to reach a verdict in these tests.
const VERDICT: Duration = Duration::from_secs(20);

fn healthy(addr: SocketAddr) -> String {
    format!("keygate_upstream_server_healthy{{address=\"{addr}\",upstream=\"origin\"}}")
}

fn selections(addr: SocketAddr) -> String {
    format!("keygate_upstream_selections_total{{address=\"{addr}\",upstream=\"origin\"}}")
}

fn ejections(addr: SocketAddr) -> String {
    format!("keygate_upstream_ejections_total{{address=\"{addr}\",upstream=\"origin\"}}")
}

const RETRIES: &str = "keygate_upstream_retries_total{upstream=\"origin\"}";

/// Send `n` GETs for `/v1/items` on `client` with key `key`; every one must be a 200.
fn all_ok(client: &mut Client, key: &str, n: usize) {
    for i in 0..n {
        let r = client.get("/v1/items", &[("x-api-key", key)]);
        assert_eq!(r.status(), 200, "request {i}: {}", r.text());
    }
}

/// Wait until the gauge of `addr` on `maddr` is `value`.
fn gauge_becomes(maddr: SocketAddr, addr: SocketAddr, value: f64) -> String {
    eventually(
        &format!("{} reaching {value}", healthy(addr)),
        VERDICT,
        || {
            let text = scrape(maddr);
            if sample(&text, &healthy(addr)) == value {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
}

#[test]
fn two_servers_share_the_load_by_weight() {
    let dir = TestDir::new();
    let (a, b) = (Origin::start(), Origin::start());
    let maddr = free_addr();
    let k = keys();
    let cfg = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 3), (b.addr, 1)])
        .metrics(maddr)
        .yaml();
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    let mut c = Client::connect(gw.addr);
    all_ok(&mut c, &k.plain["good"], 40);
    // Weighted round robin is exact over whole cycles.
    assert_eq!((a.count_path("/v1"), b.count_path("/v1")), (30, 10));
    let text = scrape_until(maddr, &selections(a.addr), 30.0);
    assert_eq!(sample(&text, &selections(b.addr)), 10.0);
    assert_eq!(sample(&text, &healthy(a.addr)), 1.0);
    assert_eq!(sample(&text, &healthy(b.addr)), 1.0);
    assert_eq!(sample(&text, RETRIES), 0.0);
    gw.wait_log(&format!(" upstream_server={}\n", b.addr), 10);
    // Each server received the shared secret and the consumer's identity.
    for o in [&a, &b] {
        let last = o.last();
        assert_eq!(last.all("x-shared-secret"), [SECRET]);
        assert_eq!(last.header("x-consumer-id").as_deref(), Some("acme"));
    }
    drop(gw);
}

#[test]
fn a_stopped_server_is_taken_out_by_health_checks_without_failing_a_request_and_comes_back() {
    let dir = TestDir::new();
    let a = Origin::start();
    let b = Origin::start();
    let b_addr = b.addr;
    let maddr = free_addr();
    let k = keys();
    let key = &k.plain["good"];
    let cfg = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 1), (b.addr, 1)])
        .upstream("health_check: { path: /healthz, interval_ms: 300, timeout_ms: 300, healthy_threshold: 2, unhealthy_threshold: 2 }")
        .metrics(maddr)
        .yaml();
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    gauge_becomes(maddr, a.addr, 1.0);
    gauge_becomes(maddr, b_addr, 1.0);
    // Probes carry the shared secret (origins refuse anything else) and the address as Host.
    let probe = b
        .requests()
        .into_iter()
        .find(|r| r.path() == "/healthz")
        .expect("a health probe");
    assert_eq!(probe.start, "GET /healthz HTTP/1.1");
    assert_eq!(probe.all("x-shared-secret"), [SECRET]);
    assert_eq!(probe.header("host"), Some(b_addr.to_string()));
    assert!(
        probe
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("keygate-health-check/")),
        "{probe:?}"
    );
    let mut c = Client::connect(gw.addr);
    all_ok(&mut c, key, 10);
    assert_eq!((a.count_path("/v1"), b.count_path("/v1")), (5, 5));

    // b stops: requests that pick it are retried on a, none fails.
    drop(b);
    all_ok(&mut c, key, 20);
    let text = scrape(maddr);
    assert!(sample(&text, RETRIES) >= 1.0, "{text}");
    // Two failed probes in a row take it out.
    gw.wait_log(
        &format!("upstream `origin` server {b_addr} is unhealthy after 2 consecutive health checks failed"),
        1,
    );
    gauge_becomes(maddr, b_addr, 0.0);
    let (served, retries) = (a.count_path("/v1"), sample(&scrape(maddr), RETRIES));
    all_ok(&mut c, key, 10);
    assert_eq!(a.count_path("/v1"), served + 10, "everything goes to a");
    assert_eq!(
        sample(&scrape(maddr), RETRIES),
        retries,
        "no more attempts on b"
    );

    // b comes back on the same address: two passed probes, then it takes its share again.
    let b = Origin::start_at(b_addr);
    gw.wait_log(
        &format!("upstream `origin` server {b_addr} is healthy again after 2 consecutive health checks passed"),
        1,
    );
    gauge_becomes(maddr, b_addr, 1.0);
    all_ok(&mut c, key, 10);
    assert_eq!(b.count_path("/v1"), 5, "traffic returns to b");
}

#[test]
fn connect_failures_are_retried_on_another_server_and_eject_it() {
    let dir = TestDir::new();
    let a = Origin::start();
    let dead = free_addr();
    let maddr = free_addr();
    let k = keys();
    let key = &k.plain["good"];
    let cfg = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 1), (dead, 1)])
        .upstream("eject_after_connect_failures: 2, eject_seconds: 600")
        .metrics(maddr)
        .yaml();
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    let mut c = Client::connect(gw.addr);
    all_ok(&mut c, key, 1);
    // The second request goes to the dead server first: a POST whose body was not sent
    // yet is retried too, and a receives it whole.
    c.send_raw(
        format!("POST /v1/items HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {key}\r\ncontent-length: 5\r\n\r\nhello")
            .as_bytes(),
    );
    let r = c.read().unwrap().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    let last = a.last();
    assert_eq!(last.start, "POST /v1/items HTTP/1.1");
    assert_eq!(last.body, b"hello");
    // The access line names both servers, the failed one first.
    gw.wait_log(&format!("upstream_server={dead},{}\n", a.addr), 1);
    all_ok(&mut c, key, 10);
    assert_eq!(a.count_path("/v1"), 12, "every request served by a");
    // Two connect failures: two retries, then the server is ejected and left alone.
    let text = scrape_until(maddr, &ejections(dead), 1.0);
    assert_eq!(sample(&text, RETRIES), 2.0);
    assert_eq!(sample(&text, &selections(dead)), 2.0);
    assert_eq!(sample(&text, &selections(a.addr)), 12.0);
    assert_eq!(sample(&text, &healthy(dead)), 0.0);
    assert_eq!(sample(&text, &healthy(a.addr)), 1.0);
    assert_eq!(
        sample(
            &text,
            "keygate_upstream_errors_total{kind=\"connect_refused\",upstream=\"origin\"}"
        ),
        2.0
    );
    gw.wait_log(
        &format!("upstream `origin` server {dead} ejected for 600 s after 2 consecutive connect failures (last: ConnectRefused"),
        1,
    );
}

#[test]
fn every_server_down_is_a_502_problem_at_once_or_after_one_retry() {
    let k = keys();
    let key = &k.plain["good"];
    // With health checks: once both fail them, no server is tried at all.
    let dir = TestDir::new();
    let (d1, d2) = (free_addr(), free_addr());
    let maddr = free_addr();
    let cfg = GatewayConfig::new(d1)
        .servers(&[(d1, 1), (d2, 1)])
        .upstream("health_check: { interval_ms: 200, timeout_ms: 200 }")
        .metrics(maddr)
        .yaml();
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    for d in [d1, d2] {
        gw.wait_log(
            &format!("upstream `origin` server {d} is unhealthy after 1 health check failed: ConnectRefused"),
            1,
        );
    }
    let r = get(gw.addr, "/v1", &[("x-api-key", key)]);
    assert_problem(&r, 502, "upstream_unavailable");
    let text = scrape_until(
        maddr,
        "keygate_upstream_errors_total{kind=\"no_server\",upstream=\"origin\"}",
        1.0,
    );
    assert_eq!(sample(&text, &selections(d1)), 0.0, "nothing was tried");
    assert_eq!(sample(&text, &selections(d2)), 0.0, "nothing was tried");
    gw.wait_log("error=\"NoServerAvailable\"", 1);
    // Still serving.
    assert_eq!(get(gw.addr, "/v1", &[]).status(), 401);

    // Without health checks: the first server refuses, the retry on the second too.
    let dir = TestDir::new();
    let maddr = free_addr();
    let cfg = GatewayConfig::new(d1)
        .servers(&[(d1, 1), (d2, 1)])
        .metrics(maddr)
        .yaml();
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    let r = get(gw.addr, "/v1", &[("x-api-key", key)]);
    assert_problem(&r, 502, "upstream_unavailable");
    let text = scrape_until(
        maddr,
        "keygate_upstream_errors_total{kind=\"connect_refused\",upstream=\"origin\"}",
        2.0,
    );
    assert_eq!(sample(&text, RETRIES), 1.0, "one retry, no more");
    assert_eq!(sample(&text, &selections(d1)), 1.0);
    assert_eq!(sample(&text, &selections(d2)), 1.0);
}

#[test]
fn a_reload_keeps_the_health_of_servers_that_remain_whatever_their_weight() {
    let dir = TestDir::new();
    let a = Origin::start();
    let dead = free_addr();
    let maddr = free_addr();
    let k = keys();
    let key = &k.plain["good"];
    let settings = "eject_after_connect_failures: 1, eject_seconds: 3600";
    let cfg = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 1), (dead, 1)])
        .upstream(settings)
        .metrics(maddr);
    let mut gw = Gateway::start(&dir, &cfg.yaml(), &k.yaml);
    gw.wait_ready(maddr);
    let mut c = Client::connect(gw.addr);
    all_ok(&mut c, key, 4);
    let text = scrape_until(maddr, &ejections(dead), 1.0);
    assert_eq!(sample(&text, RETRIES), 1.0);

    // New weights for both: the ejection stays, so nothing is tried on `dead`.
    let reloaded = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 2), (dead, 3)])
        .upstream(settings)
        .metrics(maddr)
        .listen(gw.addr);
    dir.write("keygate.yaml", &reloaded.yaml());
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    all_ok(&mut c, key, 10);
    let text = scrape(maddr);
    assert_eq!(sample(&text, RETRIES), 1.0, "{text}");
    assert_eq!(sample(&text, &selections(dead)), 1.0, "{text}");
    assert_eq!(sample(&text, &healthy(dead)), 0.0);
    assert_eq!(a.count_path("/v1"), 14);

    // A server the reload removes disappears from every per-server series.
    let alone = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 1)])
        .metrics(maddr)
        .listen(gw.addr);
    dir.write("keygate.yaml", &alone.yaml());
    gw.sighup();
    gw.wait_log("configuration reloaded", 2);
    let text = scrape(maddr);
    assert!(!text.contains(&healthy(dead)), "{text}");
    assert!(!text.contains(&selections(dead)), "{text}");
    assert!(!text.contains(&ejections(dead)), "{text}");
    assert_eq!(sample(&text, &healthy(a.addr)), 1.0);
    assert!(sample(&text, &selections(a.addr)) >= 14.0, "{text}");
}

#[test]
fn probes_carry_the_live_shared_secret_and_all_down_is_502() {
    let dir = TestDir::new();
    let (a, b) = (Origin::start(), Origin::start());
    let maddr = free_addr();
    let k = keys();
    let key = &k.plain["good"];
    let cfg = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 1), (b.addr, 1)])
        .upstream("health_check: { path: /healthz, interval_ms: 200, timeout_ms: 200, healthy_threshold: 1, unhealthy_threshold: 1 }")
        .metrics(maddr);
    let mut gw = Gateway::start_with_secret_file(&dir, &cfg, &k.yaml, SECRET);
    gw.wait_ready(maddr);
    gauge_becomes(maddr, a.addr, 1.0);
    gauge_becomes(maddr, b.addr, 1.0);

    // A new secret, reloaded: the next probes carry it, and origins still expecting the
    // old one answer 401, which fails them.
    let rotated = "rotated-secret-abcdefghijklmnop";
    dir.write("secret", rotated);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    gauge_becomes(maddr, a.addr, 0.0);
    gauge_becomes(maddr, b.addr, 0.0);
    gw.wait_log("failed: GET /healthz answered 401", 2);
    let r = get(gw.addr, "/v1", &[("x-api-key", key)]);
    assert_problem(&r, 502, "upstream_unavailable");

    // The origins learn the new secret: back in, and requests flow.
    a.set_secret(rotated);
    b.set_secret(rotated);
    gauge_becomes(maddr, a.addr, 1.0);
    gauge_becomes(maddr, b.addr, 1.0);
    let r = get(gw.addr, "/v1", &[("x-api-key", key)]);
    assert_eq!(r.status(), 200, "{}", r.text());
    let probe = a
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path() == "/healthz")
        .unwrap();
    assert_eq!(probe.all("x-shared-secret"), [rotated]);
}

#[test]
fn tls_probes_verify_the_certificate_like_requests() {
    let dir = TestDir::new();
    let pki = Pki::new();
    let other = Pki::new();
    let a = Origin::start_with(Some(&pki), OriginMode::Normal);
    let b = Origin::start_with(Some(&pki), OriginMode::Normal);
    let maddr = free_addr();
    let k = keys();
    // Trust the wrong CA first: probes refuse both certificates.
    dir.write("origin-ca.pem", &other.ca_pem);
    let cfg = GatewayConfig::new(a.addr)
        .servers(&[(a.addr, 1), (b.addr, 1)])
        .connect_timeout_ms(5000)
        .upstream("tls: true, sni: localhost, ca_file: origin-ca.pem, health_check: { path: /healthz, interval_ms: 1000, timeout_ms: 1000, healthy_threshold: 1 }")
        .metrics(maddr);
    let mut gw = Gateway::start(&dir, &cfg.yaml(), &k.yaml);
    gw.wait_ready(maddr);
    for o in [&a, &b] {
        gw.wait_log(
            &format!("upstream `origin` server {} is unhealthy after 1 health check failed: origin certificate refused", o.addr),
            1,
        );
    }
    assert_eq!(a.count_path("/healthz") + b.count_path("/healthz"), 0);
    // The right CA, reloaded: both pass, over TLS, with the secret.
    dir.write("origin-ca.pem", &pki.ca_pem);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    gauge_becomes(maddr, a.addr, 1.0);
    gauge_becomes(maddr, b.addr, 1.0);
    assert_eq!(
        a.requests()
            .into_iter()
            .find(|r| r.path() == "/healthz")
            .unwrap()
            .all("x-shared-secret"),
        [SECRET]
    );
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 200, "{}\n{}", r.text(), gw.log());
}
