//! The origin side: failures become problem documents; TLS to the origin and on listeners.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn origin_down_is_502_problem() {
    let dir = TestDir::new();
    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let k = keys();
    let gw = Gateway::start(&dir, &config(dead), &k.yaml);
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 502, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(
        r.text().contains("\"code\":\"upstream_unavailable\""),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("\"title\":\"Bad Gateway\""),
        "{}",
        r.text()
    );
    // Still serving afterwards.
    assert_eq!(get(gw.addr, "/v1", &[]).status(), 401);
}

#[test]
fn origin_timeout_is_504_problem() {
    let dir = TestDir::new();
    let origin = Origin::start_with(None, OriginMode::Hang);
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let t = Instant::now();
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 504, "{}", r.text());
    assert!(
        r.text().contains("\"code\":\"upstream_timeout\""),
        "{}",
        r.text()
    );
    assert_eq!(origin.count(), 1);
    // read_timeout_ms is 1500 in the test config: the answer cannot come before it.
    assert!(t.elapsed() >= Duration::from_millis(1400));
}

#[test]
fn tls_origin_with_private_ca() {
    let dir = TestDir::new();
    let pki = Pki::new();
    let origin = Origin::start_with(Some(&pki), OriginMode::Normal);
    dir.write("origin-ca.pem", &pki.ca_pem);
    let k = keys();
    let cfg = tls_origin_config(origin.addr, "origin-ca.pem");
    let gw = Gateway::start(&dir, &cfg, &k.yaml);
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 200, "{}\n{}", r.text(), gw.log());
    assert_eq!(origin.last().all("x-shared-secret"), [SECRET]);
}

#[test]
fn tls_origin_with_unknown_ca_is_refused() {
    let dir = TestDir::new();
    let pki = Pki::new();
    let other = Pki::new();
    let origin = Origin::start_with(Some(&pki), OriginMode::Normal);
    dir.write("wrong-ca.pem", &other.ca_pem);
    let k = keys();
    let cfg = tls_origin_config(origin.addr, "wrong-ca.pem");
    let gw = Gateway::start(&dir, &cfg, &k.yaml);
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 502, "{}", r.text());
    assert_eq!(
        origin.count(),
        0,
        "a request was sent over an unverified connection"
    );
}

#[test]
fn tls_listener_serves_clients() {
    let dir = TestDir::new();
    let pki = Pki::new();
    dir.write("cert.pem", &pki.cert_pem);
    dir.write("key.pem", &pki.key_pem);
    let origin = Origin::start();
    let k = keys();
    let tls_port = free_port();
    let cfg = config(origin.addr).replace(
        "  threads: 1\n",
        &format!("  threads: 1\n  tls_listen:\n    - {{ address: \"127.0.0.1:{tls_port}\", cert: cert.pem, key: key.pem }}\n"),
    );
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    let tls_addr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    gw.wait_ready(tls_addr);
    let mut c = Client::connect_tls(tls_addr, &pki.ca_der, "localhost");
    let r = c.get("/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(
        origin.last().header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    let r = c.get("/v1", &[]);
    assert_eq!(r.status(), 401);
}
