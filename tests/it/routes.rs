//! Routes a real API needs, through the real process: methods (405, no fall-through),
//! prefix strip and rewrite, per-route timeouts, request-body limits, CORS.

use std::net::SocketAddr;

use crate::harness::*;

/// One raw request on a fresh connection, read back (HEAD and 204 have no body).
fn send(addr: SocketAddr, raw: &str) -> Message {
    let mut c = Client::connect(addr);
    c.send_raw(raw.as_bytes());
    let r = if raw.starts_with("HEAD ") {
        c.read_head()
    } else {
        c.read()
    };
    r.unwrap().expect("no response")
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: gateway.test\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// A keys file with one consumer and one key, allowed on every route.
struct OneKey {
    key: String,
    yaml: String,
}

fn keys() -> OneKey {
    let key = keygate::apikey::generate().unwrap();
    let d = hex::encode(keygate::apikey::digest(key.as_bytes()));
    OneKey {
        yaml: format!(
            "consumers:\n  - id: acme\n    keys: [ {{ id: acme-1, sha256: \"{d}\" }} ]\n"
        ),
        key,
    }
}

fn code(m: &Message) -> String {
    let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or_default();
    v["code"].as_str().unwrap_or("").to_string()
}

#[test]
fn a_method_a_route_does_not_serve_gets_405_and_never_a_later_route() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let cfg = GatewayConfig::new(origin.addr).routes(&[
        "name: reports, path_prefix: /reports, upstream: origin, auth: required, methods: [GET]",
        "name: open, path_prefix: /, upstream: origin, auth: none",
    ]);
    let gw = Gateway::start(&dir, &cfg.yaml(), &k.yaml);
    let key = &k.key;
    let r = send(gw.addr, &req("GET", "/reports/1", &[("x-api-key", key)]));
    assert_eq!(r.status(), 200);
    assert_eq!(
        send(gw.addr, &req("HEAD", "/reports/1", &[("x-api-key", key)])).status(),
        200
    );
    // DELETE matches /reports by host and path: 405, not the open catch-all route.
    for headers in [vec![("x-api-key", key.as_str())], vec![]] {
        let r = send(gw.addr, &req("DELETE", "/reports/1", &headers));
        assert_eq!(r.status(), 405, "{}", r.text());
        assert_eq!(code(&r), "method_not_allowed");
        assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    }
    assert_eq!(origin.count(), 2);
    // TRACE and TRACK in any letter case are never forwarded, with the route's Allow.
    for m in ["TRACE", "trace", "Track"] {
        let r = send(gw.addr, &req(m, "/reports/1", &[]));
        assert_eq!(r.status(), 405, "{m}");
        assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"), "{m}");
    }
    assert_eq!(origin.count(), 2);
    // Elsewhere the open route serves every method.
    assert_eq!(send(gw.addr, &req("DELETE", "/other", &[])).status(), 200);
}

#[test]
fn prefixes_are_stripped_or_rewritten_on_the_canonical_path() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let cfg = GatewayConfig::new(origin.addr).routes(&[
        "name: v1, path_prefix: /v1, upstream: origin, auth: none, strip_prefix: true",
        "name: legacy, path_prefix: /old/api, upstream: origin, auth: none, rewrite_prefix: /internal",
        "name: rest, path_prefix: /, upstream: origin, auth: none",
    ]);
    let gw = Gateway::start(&dir, &cfg.yaml(), &k.yaml);
    for (sent, seen) in [
        ("/v1/orders?x=1", "/orders?x=1"),
        ("/v1", "/"),
        ("/v1/", "/"),
        ("/v1/./a/../orders/%7e1", "/orders/~1"),
        ("/old/api/things", "/internal/things"),
        ("/old/api/", "/internal/"),
        ("/old/api", "/internal"),
        ("/v1x", "/v1x"),
    ] {
        let r = send(
            gw.addr,
            &req("GET", sent, &[("x-forwarded-prefix", "/forged")]),
        );
        assert_eq!(r.status(), 200, "{sent}");
        let got = origin.last();
        assert_eq!(got.path(), seen, "{sent}");
        // A stripped prefix is told to the origin; a client's claim never is.
        let prefix = if sent.starts_with("/v1/") || sent == "/v1" {
            vec!["/v1".to_string()]
        } else {
            vec![]
        };
        assert_eq!(got.all("x-forwarded-prefix"), prefix, "{sent}");
    }
}

#[test]
fn a_route_timeout_applies_to_its_route_only() {
    let dir = TestDir::new();
    let origin = Origin::start_with(None, OriginMode::SlowMs(700));
    let k = keys();
    let cfg = GatewayConfig::new(origin.addr).routes(&[
        "name: quick, path_prefix: /quick, upstream: origin, auth: none, read_timeout_ms: 200",
        "name: rest, path_prefix: /, upstream: origin, auth: none",
    ]);
    let gw = Gateway::start(&dir, &cfg.yaml(), &k.yaml);
    let r = send(gw.addr, &req("GET", "/quick/x", &[]));
    assert_eq!(r.status(), 504, "{}", r.text());
    assert_eq!(code(&r), "upstream_timeout");
    assert_eq!(send(gw.addr, &req("GET", "/slow/x", &[])).status(), 200);
}

#[test]
fn bodies_larger_than_the_route_allows_get_413() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let cfg = GatewayConfig::new(origin.addr).routes(&[
        "name: upload, path_prefix: /upload, upstream: origin, auth: none, max_request_body_bytes: 16",
        "name: rest, path_prefix: /, upstream: origin, auth: none",
    ]);
    let gw = Gateway::start(&dir, &cfg.yaml(), &k.yaml);
    let ok = send(
        gw.addr,
        "POST /upload HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 16\r\n\r\n0123456789abcdef",
    );
    assert_eq!(ok.status(), 200);
    // Declared too large: refused before the origin sees anything.
    let r = send(
        gw.addr,
        "POST /upload HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 17\r\n\r\n0123456789abcdefg",
    );
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r), "request_body_too_large");
    assert_eq!(origin.count(), 1);
    // Chunked, passing the limit midway.
    let r = send(
        gw.addr,
        "POST /upload HTTP/1.1\r\nHost: gateway.test\r\ntransfer-encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n8\r\nXXXXXXXX\r\n0\r\n\r\n",
    );
    assert_eq!(r.status(), 413, "{}", r.text());
    // No request with more than the limit reached the origin whole.
    assert!(origin.requests().iter().all(|m| m.body.len() <= 16));
    // With `Expect: 100-continue` too (the origin may answer `100 Continue` first: an
    // interim answer, after which the 413 is still written).
    let mut c = Client::connect(gw.addr);
    c.send_raw(b"POST /upload HTTP/1.1\r\nHost: gateway.test\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n");
    let mut r = c.read().unwrap().expect("an answer");
    if r.status() == 100 {
        assert_eq!(r.header("ratelimit"), None);
        r = c
            .read()
            .unwrap()
            .expect("a final answer after 100 Continue");
    }
    assert_eq!(r.status(), 413, "{}", r.text());
    assert!(!gw.log().contains("Fail to proxy"), "{}", gw.log());
    // Other routes take any size.
    let big = format!(
        "POST /x HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 100\r\n\r\n{}",
        "y".repeat(100)
    );
    assert_eq!(send(gw.addr, &big).status(), 200);
}

#[test]
fn cors_preflights_are_answered_without_a_key_and_errors_are_readable() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let cfg = GatewayConfig::new(origin.addr).routes(&[
        "name: api, path_prefix: /, upstream: origin, auth: required, methods: [GET, POST], cors: { allow_origins: [\"https://app.example.com\"], expose_headers: [x-total-count], max_age_seconds: 300 }",
    ]);
    let gw = Gateway::start(&dir, &cfg.yaml(), &k.yaml);
    let pre = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-api-key, content-type"),
    ];
    let r = send(gw.addr, &req("OPTIONS", "/v1/orders", &pre));
    assert_eq!(r.status(), 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("GET, HEAD, POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("x-api-key, content-type")
    );
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("300"));
    // From another origin, or for another method: 403, still without the origin.
    let r = send(
        gw.addr,
        &req(
            "OPTIONS",
            "/v1/orders",
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "POST"),
            ],
        ),
    );
    assert_eq!(r.status(), 403);
    assert_eq!(code(&r), "cors_not_allowed");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(origin.count(), 0, "a preflight reached the origin");

    // The actual request: CORS headers on the origin's 200, replacing its own…
    let from = ("origin", "https://app.example.com");
    let r = send(
        gw.addr,
        &req("GET", "/v1/orders", &[from, ("x-api-key", &k.key)]),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.all("access-control-allow-origin"),
        vec!["https://app.example.com"]
    );
    let exposed = r.header("access-control-expose-headers").unwrap();
    for h in [
        "x-request-id",
        "ratelimit",
        "retry-after",
        "deprecation",
        "sunset",
        "x-total-count",
    ] {
        assert!(exposed.contains(h), "{exposed}");
    }
    assert!(r.all("vary").iter().any(|v| v.contains("Origin")));
    // …and on keygate's own 401, so the script can read the problem document.
    let r = send(gw.addr, &req("GET", "/v1/orders", &[from]));
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    // A request from an origin not allowed gets no CORS header at all.
    let r = send(
        gw.addr,
        &req("GET", "/v1/orders", &[("origin", "https://evil.test")]),
    );
    assert_eq!(r.status(), 401);
    assert_eq!(r.header("access-control-allow-origin"), None);
    // Without an Origin: no CORS header, but `Vary: Origin`, so caches keep them apart.
    let r = send(gw.addr, &req("GET", "/v1/orders", &[("x-api-key", &k.key)]));
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(
        r.all("vary").iter().any(|v| v.contains("Origin")),
        "{:?}",
        r.headers
    );
    // A plain OPTIONS (not a preflight) is an ordinary request: it needs a key.
    assert_eq!(
        send(gw.addr, &req("OPTIONS", "/v1/orders", &[])).status(),
        405
    );
}
