//! The origin side: failures become problem documents; TLS to the origin and on listeners.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn origin_down_is_502_problem() {
    let dir = TestDir::new();
    let dead = free_addr();
    let k = keys();
    let gw = Gateway::start(&dir, &config(dead), &k.yaml);
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_problem(&r, 502, "upstream_unavailable");
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
    let cfg = GatewayConfig::new(origin.addr)
        .upstream("tls: true, sni: localhost, ca_file: origin-ca.pem")
        .yaml();
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
    let cfg = GatewayConfig::new(origin.addr)
        .upstream("tls: true, sni: localhost, ca_file: wrong-ca.pem")
        .yaml();
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
    let tls_addr = free_addr();
    let cfg = GatewayConfig::new(origin.addr)
        .server(&format!(
            "tls_listen:\n  - {{ address: \"{tls_addr}\", cert: cert.pem, key: key.pem }}"
        ))
        .yaml();
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
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

/// Start keygate in front of a TLS origin serving `pki`, trusting `ca_pem` (written to
/// `trust.pem`), with `extra` upstream settings (e.g. `sni: localhost`, or none).
fn tls_gateway(dir: &TestDir, pki: &Pki, ca_pem: &str, extra: &str) -> (Origin, Gateway, Keys) {
    let origin = Origin::start_with(Some(pki), OriginMode::Normal);
    dir.write("trust.pem", ca_pem);
    let k = keys();
    let cfg = GatewayConfig::new(origin.addr)
        .connect_timeout_ms(10_000)
        .upstream("tls: true, ca_file: trust.pem")
        .upstream(extra)
        .yaml();
    let gw = Gateway::start(dir, &cfg, &k.yaml);
    (origin, gw, k)
}

/// The exact certificate of the seed's deployment: `openssl req -x509` (CA:TRUE, its own
/// trust anchor), trusted through `ca_file: origin.crt`, by name and by IP address.
#[test]
fn tls_origin_with_an_openssl_req_x509_certificate() {
    let dir = TestDir::new();
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(dir.path("origin.key"))
        .arg("-out")
        .arg(dir.path("origin.crt"))
        .args(["-days", "365", "-subj", "/CN=localhost", "-addext"])
        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command (./dev deps installs it)");
    assert!(status.success());
    let cert = std::fs::read_to_string(dir.path("origin.crt")).unwrap();
    let key = std::fs::read_to_string(dir.path("origin.key")).unwrap();
    let pki = Pki::from_pem(&cert, &key);
    // By name, as the configuration does.
    let (origin, gw, k) = tls_gateway(&dir, &pki, &cert, "sni: localhost");
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 200, "{}\n{}", r.text(), gw.log());
    assert_eq!(origin.last().all("x-shared-secret"), [SECRET]);
    drop(gw);
    // By IP address without `sni`: checked against the certificate's IP SAN.
    let dir2 = TestDir::new();
    let (origin, gw, k) = tls_gateway(&dir2, &pki, &cert, "");
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 200, "{}\n{}", r.text(), gw.log());
    assert_eq!(origin.count(), 1);
}

/// Certificates that fail for a real reason get 502 before any request byte reaches the
/// origin, and the log names the reason.
#[test]
fn tls_origin_certificates_that_must_fail() {
    let cases: [(&str, Pki, Option<String>, &str, &str); 5] = [
        (
            "wrong name",
            Pki::self_signed(&["other.test"], (2020, 2099)),
            None,
            "sni: localhost",
            "hostname mismatch",
        ),
        (
            "wrong IP",
            Pki::self_signed(&["localhost", "127.0.0.2"], (2020, 2099)),
            None,
            "",
            "IP address mismatch",
        ),
        (
            "expired",
            Pki::self_signed(&["localhost"], (2020, 2021)),
            None,
            "sni: localhost",
            "expired",
        ),
        (
            "not yet valid",
            Pki::self_signed(&["localhost"], (2090, 2099)),
            None,
            "sni: localhost",
            "not yet valid",
        ),
        (
            "untrusted",
            Pki::self_signed(&["localhost"], (2020, 2099)),
            Some(Pki::self_signed(&["localhost"], (2020, 2099)).ca_pem),
            "sni: localhost",
            "self-signed certificate",
        ),
    ];
    for (what, pki, trust, extra, reason) in cases {
        let dir = TestDir::new();
        let ca = trust.unwrap_or_else(|| pki.ca_pem.clone());
        let (origin, gw, k) = tls_gateway(&dir, &pki, &ca, extra);
        let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
        assert_eq!(r.status(), 502, "{what}: {}\n{}", r.text(), gw.log());
        assert!(r.text().contains("upstream_unavailable"), "{what}");
        assert_eq!(
            origin.count(),
            0,
            "{what}: a request crossed an unverified connection"
        );
        gw.wait_log(reason, 1);
        assert!(
            gw.log().contains("origin certificate refused"),
            "{what}: {}",
            gw.log()
        );
    }
}

/// A reload that changes what is trusted never reuses a connection verified under the
/// old trust.
#[test]
fn tls_trust_change_on_reload_applies_to_pooled_connections() {
    let dir = TestDir::new();
    let pki = Pki::new();
    let (origin, gw, k) = tls_gateway(&dir, &pki, &pki.ca_pem, "sni: localhost");
    let mut c = Client::connect(gw.addr);
    assert_eq!(
        c.get("/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    // A pooled upstream connection now exists; distrust the origin's CA.
    dir.write("trust.pem", &Pki::new().ca_pem);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    let r = c.get("/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 502, "{}", r.text());
    assert_eq!(origin.count(), 1);
}
