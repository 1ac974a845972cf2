//! Hostile input through real sockets: every case gets a precise answer, nothing
//! unauthenticated reaches the origin, and keygate keeps serving.

use std::time::Duration;

use crate::harness::*;

struct Setup {
    _dir: TestDir,
    origin: Origin,
    keys: Keys,
    gw: Gateway,
}

/// A gateway on the standard config plus the `server` settings.
fn setup_with(server: &[&str]) -> Setup {
    let dir = TestDir::new();
    let origin = Origin::start();
    let keys = keys();
    let cfg = server
        .iter()
        .fold(GatewayConfig::new(origin.addr), |c, s| c.server(s));
    let gw = Gateway::start(&dir, &cfg.yaml(), &keys.yaml);
    Setup {
        _dir: dir,
        origin,
        keys,
        gw,
    }
}

fn setup() -> Setup {
    setup_with(&[])
}

/// Send raw bytes on a fresh connection and read one response (None: closed without one).
fn raw(s: &Setup, bytes: &[u8]) -> Option<Message> {
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(bytes);
    c.read().ok().flatten()
}

fn status(m: &Option<Message>) -> u16 {
    m.as_ref().map_or(0, Message::status)
}

/// Send raw bytes on a fresh connection: the answer is Pingora's bare 400 marked
/// `connection: close`, and the connection then closes.
fn refused_400(s: &Setup, bytes: &[u8], what: &str) {
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(bytes);
    let r = c
        .read()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .unwrap_or_else(|| panic!("{what}: closed without a response"));
    assert_eq!(r.status(), 400, "{what}: {r:?}");
    assert_eq!(r.header("connection").as_deref(), Some("close"), "{what}");
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "{what}: connection left open"
    );
}

/// keygate still answers a normal request afterwards.
fn still_serving(s: &Setup) {
    assert_eq!(
        get(s.gw.addr, "/v1", &[("x-api-key", &s.keys.plain["good"])]).status(),
        200,
        "{}",
        s.gw.log()
    );
}

#[test]
fn malformed_credentials_get_precise_401s_and_never_reach_the_origin() {
    let s = setup();
    let good = s.keys.plain["good"].clone();
    let mut prefix = good.clone();
    prefix.truncate(good.len() - 3);
    let mut one_off = good.clone().into_bytes();
    one_off[10] = if one_off[10] == b'x' { b'y' } else { b'x' };
    let one_off = String::from_utf8(one_off).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("x-api-key: \r\n".into(), "invalid_api_key"),
        ("x-api-key:      \r\n".into(), "invalid_api_key"),
        ("Authorization: Bearer\r\n".into(), "invalid_api_key"),
        ("Authorization: Bearer     \r\n".into(), "invalid_api_key"),
        (
            "Authorization: Basic dXNlcjpwYXNz\r\n".into(),
            "missing_api_key",
        ),
        ("Authorization: Token abc\r\n".into(), "missing_api_key"),
        ("x-api-key: kg_\u{e9}t\u{e9}\r\n".into(), "invalid_api_key"),
        (format!("x-api-key: {prefix}\r\n"), "invalid_api_key"),
        (format!("x-api-key: {one_off}\r\n"), "invalid_api_key"),
        (
            format!("x-api-key: {good}\r\nx-api-key: {prefix}\r\n"),
            "ambiguous_credentials",
        ),
        (
            format!("Authorization: Bearer {good}\r\nx-api-key: {one_off}\r\n"),
            "ambiguous_credentials",
        ),
        (
            format!("x-api-key: {}\r\n", "a".repeat(2000)),
            "invalid_api_key",
        ),
    ];
    for (headers, code) in &cases {
        let r = raw(
            &s,
            format!("GET /v1 HTTP/1.1\r\nHost: gateway.test\r\n{headers}\r\n").as_bytes(),
        );
        let r = r.unwrap_or_else(|| panic!("no response to {headers:?}"));
        assert_eq!(r.status(), 401, "{headers:?}: {}", r.text());
        assert!(r.text().contains(code), "{headers:?}: {}", r.text());
    }
    // Control bytes inside a header value break HTTP framing: 400, connection closed.
    for bad in [
        &b"x-api-key: abc\rdef\r\n"[..],
        b"x-api-key: abc\ndef\r\n",
        b"x-api-key: abc\0def\r\n",
    ] {
        let mut req = b"GET /v1 HTTP/1.1\r\nHost: gateway.test\r\n".to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"\r\n");
        refused_400(&s, &req, &format!("{:?}", String::from_utf8_lossy(bad)));
    }
    // A 1 MiB key: refused before any lookup, by Pingora's own 1 MiB header cap.
    let huge = format!(
        "GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {}\r\n\r\n",
        "k".repeat(1 << 20)
    );
    refused_400(&s, huge.as_bytes(), "a 1 MiB key");
    // A valid key with trailing whitespace is the valid key (HTTP trims optional whitespace).
    let r = raw(
        &s,
        format!("GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {good}   \r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status(&r), 200);
    assert_eq!(
        s.origin.count(),
        1,
        "only the valid key may reach the origin"
    );
    still_serving(&s);
}

#[test]
fn spoofed_headers_in_any_case_and_repeated_never_reach_the_origin() {
    let s = setup();
    let req = format!(
        "GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nX-SHARED-SECRET: a\r\nx-Shared-Secret: b\r\nX-Consumer-Id: root\r\nx-consumer-id: root2\r\nX-CONSUMER-USERNAME: r\r\nx-credential-IDENTIFIER: k\r\nX-Anonymous-Consumer: true\r\nx-anonymous-consumer: 1\r\nx-api-key: {}\r\n\r\n",
        s.keys.plain["good"]
    );
    assert_eq!(status(&raw(&s, req.as_bytes())), 200);
    let seen = s.origin.last();
    assert_eq!(seen.all("x-shared-secret"), [SECRET]);
    assert_eq!(seen.all("x-consumer-id"), ["acme"]);
    assert_eq!(seen.all("x-consumer-username"), ["ACME Corp"]);
    assert_eq!(seen.all("x-credential-identifier"), ["acme-good"]);
    assert!(seen.all("x-anonymous-consumer").is_empty());
}

#[test]
fn header_limits_answer_431() {
    let s = setup_with(&["max_request_headers: 20", "max_request_header_bytes: 4096"]);
    let mut many = String::from("GET /v1 HTTP/1.1\r\nHost: gateway.test\r\n");
    for i in 0..30 {
        many.push_str(&format!("x-filler-{i}: 1\r\n"));
    }
    many.push_str(&format!("x-api-key: {}\r\n\r\n", s.keys.plain["good"]));
    let r = raw(&s, many.as_bytes()).unwrap();
    assert_eq!(r.status(), 431);
    assert!(r.text().contains("request_header_fields_too_large"));
    let big = format!(
        "GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-big: {}\r\nx-api-key: {}\r\n\r\n",
        "b".repeat(5000),
        s.keys.plain["good"]
    );
    assert_eq!(status(&raw(&s, big.as_bytes())), 431);
    assert_eq!(s.origin.count(), 0);
    still_serving(&s);
}

#[test]
fn smuggling_attempts_are_refused_or_neutralised() {
    let s = setup();
    let wrong = "x-api-key: wrong-key\r\n";
    // Duplicate, conflicting Content-Length.
    refused_400(
        &s,
        format!("POST /v1 HTTP/1.1\r\nHost: gateway.test\r\n{wrong}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!").as_bytes(),
        "two Content-Length fields",
    );
    // Obfuscated or non-final chunked Transfer-Encoding.
    for te in [
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding : chunked",
    ] {
        refused_400(
            &s,
            format!("POST /v1 HTTP/1.1\r\nHost: gateway.test\r\n{te}\r\n\r\n0\r\n\r\n").as_bytes(),
            te,
        );
    }
    // Both Content-Length and Transfer-Encoding, hiding a second request in the body:
    // the first is judged alone (401 here), the connection is closed, the hidden one never runs.
    let hidden = format!(
        "GET /admin/secret HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {}\r\n\r\n",
        s.keys.plain["admin"]
    );
    let body = format!("0\r\n\r\n{hidden}");
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(format!("POST /v1 HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}", body.len()).as_bytes());
    let first = c.read().unwrap().unwrap();
    assert_eq!(first.status(), 401);
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection left open after CL+TE"
    );
    assert_eq!(s.origin.count(), 0, "{:?}", s.origin.requests());
    still_serving(&s);
    assert!(s
        .origin
        .requests()
        .iter()
        .all(|r| !r.path().starts_with("/admin")));
}

#[test]
fn odd_request_lines() {
    let s = setup();
    let good = s.keys.plain["good"].clone();
    refused_400(
        &s,
        b"G@T /v1 HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        "an invalid method token",
    );
    let r = raw(&s, b"OPTIONS * HTTP/1.1\r\nHost: gateway.test\r\n\r\n").unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().contains("invalid_path"), "{}", r.text());
    // Absolute form: routed on its authority and path, forwarded in origin form.
    let r = raw(&s, format!("GET http://gateway.test/v1/abs?x=1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {good}\r\n\r\n").as_bytes());
    assert_eq!(status(&r), 200, "{r:?}");
    assert_eq!(s.origin.last().start, "GET /v1/abs?x=1 HTTP/1.1");
    // HTTP/1.0 without Host: no host-bound route matches; host-less routes still work.
    let r = raw(
        &s,
        format!("GET /v1 HTTP/1.0\r\nx-api-key: {good}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = raw(&s, b"GET /public/x HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.origin.count(), 2);
    still_serving(&s);
}

#[test]
fn paths_are_matched_the_way_the_origin_sees_them() {
    let s = setup();
    let acme = s.keys.plain["good"].clone();
    let admin = s.keys.plain["admin"].clone();
    // Through an auth: none prefix into the admin route: normalized first, so admin rules apply.
    let r = get(s.gw.addr, "/public/../admin/users", &[]);
    assert_eq!(r.status(), 401, "{}", r.text());
    let r = get(s.gw.addr, "//admin/users", &[("x-api-key", &acme)]);
    assert_eq!(r.status(), 403, "{}", r.text());
    let r = get(
        s.gw.addr,
        "/public/./../admin/users?q=1",
        &[("x-api-key", &admin)],
    );
    assert_eq!(r.status(), 200);
    assert_eq!(s.origin.last().path(), "/admin/users?q=1");
    // Encoded separators and dots, backslashes, climbing above the root.
    for p in [
        "/public/%2e%2e/admin/users",
        "/public%2f..%2fadmin",
        "/public/..%5cadmin",
        "/..",
        "/public/../../admin",
    ] {
        let r = get(s.gw.addr, p, &[]);
        assert_eq!(r.status(), 400, "{p}: {}", r.text());
        assert!(r.text().contains("invalid_path"), "{p}");
    }
    assert_eq!(s.origin.count(), 1);
}

#[test]
fn connection_header_cannot_drop_the_secret_or_keep_a_credential() {
    let s = setup();
    let r = raw(
        &s,
        format!(
            "GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nConnection: keep-alive, x-shared-secret, x-consumer-id, x-api-key\r\nx-api-key: {}\r\n\r\n",
            s.keys.plain["good"]
        )
        .as_bytes(),
    );
    match status(&r) {
        200 => {
            let seen = s.origin.last();
            assert_eq!(seen.all("x-shared-secret"), [SECRET]);
            assert_eq!(seen.all("x-consumer-id"), ["acme"]);
            assert!(seen.all("x-api-key").is_empty());
            assert!(
                seen.all("connection")
                    .iter()
                    .all(|v| !v.contains("x-shared-secret")),
                "{:?}",
                seen.headers
            );
        }
        400 => assert_eq!(s.origin.count(), 0),
        other => panic!("unexpected {other}: {r:?}"),
    }
    still_serving(&s);
}

#[test]
fn pipelined_second_request_with_a_bad_key_is_rejected() {
    let s = setup();
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(
        format!(
            "GET /v1/first HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {}\r\n\r\nGET /v1/second HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: wrong\r\n\r\n",
            s.keys.plain["good"]
        )
        .as_bytes(),
    );
    let first = c.read().unwrap().unwrap();
    assert_eq!(first.status(), 200);
    let second = c.read().unwrap().unwrap();
    assert_eq!(second.status(), 401);
    assert_eq!(s.origin.count(), 1);
    assert_eq!(s.origin.last().path(), "/v1/first");
}

#[test]
fn slow_clients_are_cut_off_and_idle_ones_do_not_starve_others() {
    let s = setup_with(&[
        "keepalive_timeout_seconds: 1",
        "client_body_timeout_seconds: 1",
    ]);
    let good = s.keys.plain["good"].clone();
    // Slow body: announces 100 bytes, sends 10, stalls.
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(format!("POST /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {good}\r\nContent-Length: 100\r\n\r\n0123456789").as_bytes());
    assert!(
        c.closed_within(Duration::from_secs(8)),
        "slow body was not cut off"
    );
    // Slowloris on a kept-alive connection: the next request's headers trickle in.
    let mut c = Client::connect(s.gw.addr);
    assert_eq!(c.get("/v1", &[("x-api-key", &good)]).status(), 200);
    c.send_raw(b"GET /v1 HTTP/1.1\r\n");
    assert!(
        c.closed_within(Duration::from_millis(6500)),
        "trickled headers were not cut off"
    );
    // Hundreds of idle connections do not starve a normal client.
    let idle: Vec<_> = (0..300)
        .map(|_| std::net::TcpStream::connect(s.gw.addr).unwrap())
        .collect();
    let t = std::time::Instant::now();
    assert_eq!(get(s.gw.addr, "/v1", &[("x-api-key", &good)]).status(), 200);
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(idle);
}

#[test]
fn a_huge_body_to_a_rejected_request_is_not_read() {
    let s = setup();
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(b"POST /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: wrong\r\nContent-Length: 104857600\r\n\r\n");
    c.send_raw(&vec![b'x'; 64 * 1024]);
    let r = c.read().unwrap().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "keygate kept reading a 100 MiB body"
    );
    assert_eq!(s.origin.count(), 0);
}

#[test]
fn brute_force_is_throttled_per_address() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let maddr = free_addr();
    let cfg = GatewayConfig::new(origin.addr)
        .auth("brute_force: { max_failures: 5, window_seconds: 3600 }")
        .metrics(maddr)
        .yaml();
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    let mut c = Client::connect(gw.addr);
    for _ in 0..5 {
        assert_eq!(c.get("/v1", &[("x-api-key", "guess")]).status(), 401);
    }
    // Now blocked before any lookup, even with a valid key; the connection stays usable.
    let r = c.get("/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 429, "{}", r.text());
    assert!(r.text().contains("too_many_failed_attempts"));
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(origin.count(), 0);
    // Another client address is unaffected.
    let mut other = Client::connect_from("127.0.0.2", gw.addr);
    assert_eq!(
        other
            .get("/v1", &[("x-api-key", &k.plain["good"])])
            .status(),
        200
    );
    // auth: none routes are not throttled.
    assert_eq!(c.get("/public/x", &[]).status(), 200);
    // Blocked attempts are counted.
    let text = scrape_until(maddr, r#"keygate_auth_total{result="blocked"}"#, 1.0);
    assert_eq!(
        sample(&text, r#"keygate_auth_total{result="blocked"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"keygate_auth_total{result="invalid"}"#),
        5.0
    );
}
