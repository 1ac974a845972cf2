//! Slow clients: a deadline for every request head, a floor for request-body rates,
//! counted without the time an origin makes keygate wait.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;

struct Setup {
    _dir: TestDir,
    origin: Origin,
    keys: Keys,
    gw: Gateway,
    metrics: SocketAddr,
}

/// The config for slow-client tests: a patient origin read timeout (10 s), metrics on
/// `metrics`.
fn slow_config(origin: SocketAddr, metrics: SocketAddr) -> GatewayConfig {
    GatewayConfig::new(origin)
        .read_timeout_ms(10_000)
        .metrics(metrics)
}

/// A gateway in front of `origin` on [`slow_config`] plus the `server` settings.
fn setup(origin: Origin, server: &[&str]) -> Setup {
    let dir = TestDir::new();
    let keys = keys();
    let metrics = free_addr();
    let cfg = server
        .iter()
        .fold(slow_config(origin.addr, metrics), |c, s| c.server(s));
    let mut gw = Gateway::start(&dir, &cfg.yaml(), &keys.yaml);
    gw.wait_ready(metrics);
    Setup {
        _dir: dir,
        origin,
        keys,
        gw,
        metrics,
    }
}

/// Send `bytes` one at a time, `gap` apart, stopping quietly if the server closed.
fn trickle(c: &mut Client, bytes: &[u8], gap: Duration) {
    for b in bytes {
        if c.try_send(std::slice::from_ref(b)).is_err() {
            return;
        }
        std::thread::sleep(gap);
    }
}

#[test]
fn a_trickled_request_head_gets_408_within_the_deadline() {
    let s = setup(
        Origin::start(),
        &[
            "client_header_timeout_seconds: 2",
            "keepalive_timeout_seconds: 60",
        ],
    );
    let mut c = Client::connect(s.gw.addr);
    let started = Instant::now();
    // One byte every 300 ms: every read is well within Pingora's per-read timeout.
    let head = b"GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut writer = c.try_clone_stream();
    let t = std::thread::spawn(move || {
        for b in head {
            if std::io::Write::write_all(&mut writer, std::slice::from_ref(b)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let r = c.read().unwrap().expect("a 408 response");
    let waited = started.elapsed();
    assert_eq!(r.status(), 408, "{}", r.text());
    assert!(
        r.text().contains("\"code\":\"request_timeout\""),
        "{}",
        r.text()
    );
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(waited < Duration::from_secs(6), "answered after {waited:?}");
    assert!(c.closed_within(Duration::from_secs(5)));
    t.join().unwrap();
    assert_eq!(s.origin.count(), 0);
    s.gw.wait_log("status=408", 1);
    assert!(
        s.gw.log().contains("code=request_timeout"),
        "{}",
        s.gw.log()
    );
    let text = scrape_until(
        s.metrics,
        r#"keygate_client_timeouts_total{phase="header"}"#,
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            r#"keygate_requests_total{route="(none)",status="408"}"#
        ),
        1.0,
        "{text}"
    );
}

#[test]
fn a_silent_connection_is_closed_without_a_response() {
    let s = setup(Origin::start(), &["client_header_timeout_seconds: 1"]);
    let mut raw = std::net::TcpStream::connect(s.gw.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    assert!(buf.is_empty(), "got {:?}", String::from_utf8_lossy(&buf));
    assert!(started.elapsed() < Duration::from_secs(6));
    scrape_until(
        s.metrics,
        r#"keygate_client_timeouts_total{phase="header"}"#,
        1.0,
    );
}

#[test]
fn the_deadline_applies_to_every_request_on_a_connection_and_reloads_live() {
    let s = setup(Origin::start(), &["client_header_timeout_seconds: 30"]);
    let good = s.keys.plain["good"].clone();
    // Lower the deadline by reload; the connection opened afterwards uses it for its
    // second request.
    let cfg = slow_config(s.origin.addr, s.metrics)
        .server("client_header_timeout_seconds: 2")
        .listen(s.gw.addr);
    s._dir.write("keygate.yaml", &cfg.yaml());
    s.gw.sighup();
    s.gw.wait_log("configuration reloaded", 1);
    let mut c = Client::connect(s.gw.addr);
    assert_eq!(c.get("/v1", &[("x-api-key", &good)]).status(), 200);
    let started = Instant::now();
    trickle(
        &mut c,
        b"GET /v1 HTTP/1.1\r\nHost: gate",
        Duration::from_millis(250),
    );
    let r = c.read().unwrap().expect("a 408 for the second request");
    assert_eq!(r.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(8));
    // A normal client on a fresh connection is unaffected.
    assert_eq!(get(s.gw.addr, "/v1", &[("x-api-key", &good)]).status(), 200);
}

#[test]
fn a_trickled_body_is_cut_with_408() {
    let s = setup(
        Origin::start(),
        &[
            "client_body_timeout_seconds: 2",
            "client_body_min_rate_bytes_per_second: 500",
        ],
    );
    let good = s.keys.plain["good"].clone();
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(
        format!("POST /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {good}\r\nContent-Length: 1000\r\n\r\n")
            .as_bytes(),
    );
    let started = Instant::now();
    let mut writer = c.try_clone_stream();
    let t = std::thread::spawn(move || {
        // 4 bytes a second, each read far within the 2 s per-read timeout.
        for _ in 0..1000 {
            if std::io::Write::write_all(&mut writer, b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let r = c.read().unwrap().expect("a 408 response");
    assert_eq!(r.status(), 408, "{}", r.text());
    assert!(r.text().contains("request_timeout"));
    // Grace (2 s) plus 2 ms per byte received: cut after about two seconds.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    drop(c);
    t.join().unwrap();
    scrape_until(
        s.metrics,
        r#"keygate_client_timeouts_total{phase="body"}"#,
        1.0,
    );
}

#[test]
fn time_an_origin_makes_keygate_wait_is_not_held_against_the_client() {
    // The origin reads nothing for 3 s; the client sends a 4 MiB body at full speed.
    // A floor of 10 MB/s after a 1 s grace would cut the body on wall-clock time
    // (1 s + 0.4 s < 3 s); keygate counts only the time it waits on the client.
    let s = setup(
        Origin::start_with(None, OriginMode::SlowReadMs(3000)),
        &[
            "client_body_timeout_seconds: 1",
            "client_body_min_rate_bytes_per_second: 10000000",
        ],
    );
    let good = s.keys.plain["good"].clone();
    let body = vec![b'x'; 4 << 20];
    let mut c = Client::connect(s.gw.addr);
    let mut writer = c.try_clone_stream();
    let head = format!(
        "POST /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {good}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let t = std::thread::spawn(move || {
        std::io::Write::write_all(&mut writer, head.as_bytes()).unwrap();
        let _ = std::io::Write::write_all(&mut writer, &body);
    });
    let r = c.read().unwrap().expect("a response");
    t.join().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(s.origin.last().body.len(), 4 << 20);
    let text = scrape(s.metrics);
    assert_eq!(
        sample(&text, r#"keygate_client_timeouts_total{phase="body"}"#),
        0.0
    );
}
