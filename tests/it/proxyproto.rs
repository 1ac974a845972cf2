//! The PROXY protocol behind an L4 balancer: a trusted peer's header names the client
//! for the origin, the access log and the brute-force limiter, on plain and TLS
//! listeners; nobody else's header is believed, and a bad one closes only its connection.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::harness::*;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header naming `client` (destination 127.0.0.1:8080, or `::1` for IPv6).
fn v1(client: &str) -> Vec<u8> {
    let c: SocketAddr = client.parse().unwrap();
    match c.ip() {
        IpAddr::V4(ip) => format!("PROXY TCP4 {ip} 127.0.0.1 {} 8080\r\n", c.port()),
        IpAddr::V6(ip) => format!("PROXY TCP6 {ip} ::1 {} 8080\r\n", c.port()),
    }
    .into_bytes()
}

/// A v2 `PROXY` header naming `client`, with a NOOP TLV after the addresses.
fn v2(client: &str) -> Vec<u8> {
    let c: SocketAddr = client.parse().unwrap();
    let mut addrs = Vec::new();
    let fam = match c.ip() {
        IpAddr::V4(ip) => {
            addrs.extend_from_slice(&ip.octets());
            addrs.extend_from_slice(&[127, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(ip) => {
            addrs.extend_from_slice(&ip.octets());
            addrs.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    addrs.extend_from_slice(&c.port().to_be_bytes());
    addrs.extend_from_slice(&8080u16.to_be_bytes());
    addrs.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
    v2_raw(0x21, fam, &addrs)
}

fn v2_raw(ver_cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[ver_cmd, fam]);
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn request(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Send `header` and a request for `path` in one write on a fresh connection.
fn through(addr: SocketAddr, header: &[u8], path: &str, headers: &[(&str, &str)]) -> Client {
    let mut c = Client::connect(addr);
    c.send_raw(&[header, &request(path, headers)].concat());
    c
}

/// No response came: the connection was closed (after a 400 from Pingora's own parser
/// at most, never a forwarded request).
fn refused(c: &mut Client) {
    if let Ok(Some(m)) = c.read() {
        assert_eq!(m.status(), 400, "{}", m.text());
    }
    assert!(c.closed_within(Duration::from_secs(5)));
}

struct Setup {
    dir: TestDir,
    origin: Origin,
    keys: Keys,
    gw: Gateway,
    metrics: SocketAddr,
    config: GatewayConfig,
}

fn setup(tune: impl FnOnce(GatewayConfig) -> GatewayConfig) -> Setup {
    let dir = TestDir::new();
    let origin = Origin::start();
    let keys = keys();
    let metrics = free_addr();
    let config = tune(GatewayConfig::new(origin.addr).metrics(metrics));
    let gw = Gateway::start(&dir, &config.yaml(), &keys.yaml);
    Setup {
        dir,
        origin,
        keys,
        gw,
        metrics,
        config,
    }
}

const HEADERS: &str = "keygate_proxy_protocol_connections_total{outcome=\"header\"}";
const NONE: &str = "keygate_proxy_protocol_connections_total{outcome=\"none\"}";
const REFUSED: &str = "keygate_proxy_protocol_connections_total{outcome=\"refused\"}";

#[test]
fn v1_and_v2_headers_from_a_trusted_balancer_name_the_client() {
    let s = setup(|c| c.server("trusted_proxies: [\"127.0.0.1\"]\nproxy_protocol: required"));
    // v1, the request in the same write; a second request on the connection keeps the client.
    let mut c = through(s.gw.addr, &v1("192.0.2.10:5000"), "/public/a", &[]);
    assert_eq!(c.read().unwrap().unwrap().status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["192.0.2.10"]);
    assert_eq!(c.get("/public/b", &[]).status(), 200);
    assert_eq!(s.origin.last().path(), "/public/b");
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["192.0.2.10"]);
    // v2 over IPv6 with a TLV, the request in the same write.
    let mut c = through(s.gw.addr, &v2("[2001:db8::7]:443"), "/public/c", &[]);
    assert_eq!(c.read().unwrap().unwrap().status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["2001:db8::7"]);
    // v2 over IPv4, the header in a write of its own.
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(&v2("198.51.100.4:1234"));
    assert_eq!(c.get("/public/d", &[]).status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["198.51.100.4"]);
    // A header trickling in a byte at a time is put together.
    let mut c = Client::connect(s.gw.addr);
    for b in v1("192.0.2.11:6000") {
        c.send_raw(&[b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.get("/public/slow", &[]).status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["192.0.2.11"]);
    // v2 LOCAL (the balancer's own health check): the peer stands.
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(&v2_raw(0x20, 0x00, &[]));
    assert_eq!(c.get("/public/e", &[]).status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["127.0.0.1"]);
    // The access log names the claimed clients.
    s.gw.wait_log("client=192.0.2.10", 2);
    s.gw.wait_log("client=2001:db8::7", 1);
    s.gw.wait_log("client=198.51.100.4", 1);
    scrape_until(s.metrics, HEADERS, 5.0);
    assert_eq!(sample(&scrape(s.metrics), REFUSED), 0.0);
}

#[test]
fn brute_force_counts_each_claimed_client_apart() {
    let s = setup(|c| {
        c.server("trusted_proxies: [\"127.0.0.1\"]\nproxy_protocol: required")
            .auth("brute_force: { max_failures: 3, window_seconds: 3600 }")
    });
    let good = s.keys.plain["good"].clone();
    let mut a = Client::connect(s.gw.addr);
    a.send_raw(&v1("198.51.100.1:1000"));
    for _ in 0..3 {
        assert_eq!(a.get("/admin/x", &[("x-api-key", "guess")]).status(), 401);
    }
    let r = a.get("/admin/x", &[("x-api-key", &good)]);
    assert_problem(&r, 429, "too_many_failed_attempts");
    // The same claimed client on a new connection (v2 this time) is still blocked.
    let mut again = through(
        s.gw.addr,
        &v2("198.51.100.1:2000"),
        "/admin/x",
        &[("x-api-key", &good)],
    );
    assert_eq!(again.read().unwrap().unwrap().status(), 429);
    // Another client behind the same balancer has a budget of its own.
    let mut b = through(
        s.gw.addr,
        &v2("198.51.100.2:1000"),
        "/maybe/x",
        &[("x-api-key", &good)],
    );
    let r = b.read().unwrap().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["198.51.100.2"]);
}

#[test]
fn a_header_from_an_untrusted_peer_is_never_believed() {
    let s = setup(|c| c.server("trusted_proxies: [\"127.0.0.2\"]\nproxy_protocol: optional"));
    // 127.0.0.1 is not trusted: its header reaches the HTTP parser as garbage.
    for header in [v1("203.0.113.66:1"), v2("203.0.113.66:1")] {
        let mut c = through(s.gw.addr, &header, "/public/x", &[]);
        refused(&mut c);
    }
    assert_eq!(s.origin.count(), 0);
    // Without a header, the untrusted peer is served as itself.
    assert_eq!(get(s.gw.addr, "/public/plain", &[]).status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["127.0.0.1"]);
    // The trusted peer's header is believed; without one (optional) it is the client.
    let mut c = Client::connect_from("127.0.0.2", s.gw.addr);
    c.send_raw(&[v1("203.0.113.67:1"), request("/public/y", &[])].concat());
    assert_eq!(c.read().unwrap().unwrap().status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["203.0.113.67"]);
    let mut c = Client::connect_from("127.0.0.2", s.gw.addr);
    assert_eq!(c.get("/public/z", &[]).status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["127.0.0.2"]);
    let log = s.gw.log();
    assert!(!log.contains("203.0.113.66"), "{log}");
    scrape_until(s.metrics, NONE, 1.0);
    assert_eq!(sample(&scrape(s.metrics), HEADERS), 1.0);
}

#[test]
fn required_closes_a_trusted_peer_without_a_header_and_a_reload_relaxes_it() {
    let s = setup(|c| c.server("trusted_proxies: [\"127.0.0.1\"]\nproxy_protocol: required"));
    let mut c = through(s.gw.addr, b"", "/public/x", &[]);
    assert!(matches!(c.read(), Ok(None) | Err(_)), "answered");
    assert_eq!(s.origin.count(), 0);
    scrape_until(s.metrics, REFUSED, 1.0);
    // `optional` applies from the next connection after a reload.
    let relaxed = s
        .config
        .clone()
        .listen(s.gw.addr)
        .yaml()
        .replace("proxy_protocol: required", "proxy_protocol: optional");
    s.dir.write("keygate.yaml", &relaxed);
    s.gw.sighup();
    s.gw.wait_log("configuration reloaded", 1);
    assert_eq!(get(s.gw.addr, "/public/x", &[]).status(), 200);
    assert_eq!(s.origin.last().all("x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn truncated_and_malformed_headers_close_only_their_connection() {
    let s = setup(|c| {
        c.server(
            "trusted_proxies: [\"127.0.0.1\"]\nproxy_protocol: required\nclient_header_timeout_seconds: 1",
        )
    });
    // Half a header, then silence: held at most client_header_timeout_seconds.
    let mut half = Client::connect(s.gw.addr);
    half.send_raw(b"PROXY TCP4 192.0.2.1 ");
    let bad: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 999.0.2.1 127.0.0.1 1 2\r\n".to_vec(),
        b"PROXY TCP4 192.0.2.1 127.0.0.1 01 2\r\n".to_vec(),
        [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat(),
        v2_raw(0x31, 0x11, &[0; 12]),
        v2_raw(0x21, 0x11, &[0; 4]),
        [V2_SIGNATURE.as_slice(), &[0x21, 0x11, 0xff, 0xff]].concat(),
        [V2_SIGNATURE.as_slice(), &[0xff; 64]].concat(),
    ];
    for header in &bad {
        let mut c = through(s.gw.addr, header, "/public/bad", &[]);
        assert!(matches!(c.read(), Ok(None) | Err(_)), "{header:?} answered");
    }
    // Meanwhile a good connection is served.
    let mut good = through(s.gw.addr, &v1("192.0.2.2:2"), "/public/good", &[]);
    assert_eq!(good.read().unwrap().unwrap().status(), 200);
    assert!(half.closed_within(Duration::from_secs(10)));
    assert_eq!(s.origin.count(), 1);
    scrape_until(s.metrics, REFUSED, (bad.len() + 1) as f64);
    // keygate keeps serving.
    let mut after = through(s.gw.addr, &v2("192.0.2.3:3"), "/public/after", &[]);
    assert_eq!(after.read().unwrap().unwrap().status(), 200);
}

#[test]
fn a_tls_listener_reads_the_header_before_the_client_hello() {
    let pki = Pki::new();
    let tls_addr = free_addr();
    let dir = TestDir::new();
    dir.write("cert.pem", &pki.cert_pem);
    dir.write("key.pem", &pki.key_pem);
    let origin = Origin::start();
    let keys = keys();
    let config = GatewayConfig::new(origin.addr).server(&format!(
        "trusted_proxies: [\"127.0.0.1\"]\nproxy_protocol: required\ntls_listen:\n  - {{ address: \"{tls_addr}\", cert: cert.pem, key: key.pem }}"
    ));
    let mut gw = Gateway::start(&dir, &config.yaml(), &keys.yaml);
    gw.wait_ready(tls_addr);
    for (header, client) in [
        (v2("203.0.113.20:4000"), "203.0.113.20"),
        (v1("203.0.113.21:4000"), "203.0.113.21"),
    ] {
        let mut c = Client::connect_tls_after(tls_addr, &header, &pki.ca_der, "localhost");
        let r = c.get("/public/tls", &[]);
        assert_eq!(r.status(), 200, "{}", r.text());
        let seen = origin.last();
        assert_eq!(seen.all("x-forwarded-for"), [client]);
        assert_eq!(seen.all("x-forwarded-proto"), ["https"]);
        gw.wait_log(&format!("client={client}"), 1);
    }
    // Without a header the TLS handshake never starts.
    let mut c = Client::connect_tls(tls_addr, &pki.ca_der, "localhost");
    let sent = c.try_send(&request("/public/none", &[]));
    assert!(sent.is_err() || !matches!(c.read(), Ok(Some(_))));
    assert_eq!(origin.count(), 2);
}
