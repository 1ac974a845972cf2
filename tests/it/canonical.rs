//! keygate routes, authorises and forwards the request the origin will act on: canonical
//! hosts and paths, no client claim reaching the origin, trusted proxies, bodies of
//! rejected requests.

use std::time::Duration;

use crate::harness::*;

/// A protected host and a protected prefix in front of a broader open route: the shape
/// in which any disagreement between keygate and the origin becomes a bypass.
const BYPASS_ROUTES: [&str; 4] = [
    "name: admin, path_prefix: /admin, upstream: origin, auth: required",
    "name: api, host: api.test, path_prefix: /, upstream: origin, auth: required",
    "name: maybe, path_prefix: /maybe, upstream: origin, auth: optional",
    "name: public, path_prefix: /, upstream: origin, auth: none",
];

struct Setup {
    _dir: TestDir,
    origin: Origin,
    keys: Keys,
    gw: Gateway,
}

/// A gateway on the [`BYPASS_ROUTES`], its config changed by `tune`.
fn setup_with(tune: impl FnOnce(GatewayConfig) -> GatewayConfig) -> Setup {
    let dir = TestDir::new();
    let origin = Origin::start();
    let keys = keys();
    let cfg = tune(GatewayConfig::new(origin.addr).routes(&BYPASS_ROUTES));
    let gw = Gateway::start(&dir, &cfg.yaml(), &keys.yaml);
    Setup {
        _dir: dir,
        origin,
        keys,
        gw,
    }
}

fn setup() -> Setup {
    setup_with(|c| c)
}

/// Send `head` (request line and headers, without the final blank line) on a fresh
/// connection and read one response.
fn send(s: &Setup, head: &str) -> Message {
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(format!("{head}\r\n\r\n").as_bytes());
    c.read()
        .unwrap()
        .unwrap_or_else(|| panic!("no response to {head:?}"))
}

#[test]
fn hosts_are_routed_and_forwarded_in_canonical_form() {
    let s = setup();
    let admin = s.keys.plain["admin"].clone();
    for host in [
        "api.test",
        "api.test.",
        "API.Test",
        "api.test.:80",
        "api.test:080",
        "api.test:",
    ] {
        let r = send(&s, &format!("GET /v1 HTTP/1.1\r\nHost: {host}"));
        assert_problem(&r, 401, "missing_api_key");
    }
    assert_eq!(
        s.origin.count(),
        0,
        "an anonymous request reached the origin: {}",
        s.gw.log()
    );
    for (host, forwarded) in [
        ("API.test.", "api.test"),
        ("api.test.:080", "api.test:80"),
        ("Api.Test", "api.test"),
    ] {
        let r = send(
            &s,
            &format!("GET /v1 HTTP/1.1\r\nHost: {host}\r\nx-api-key: {admin}"),
        );
        assert_eq!(r.status(), 200, "{host}: {}", r.text());
        let seen = s.origin.last();
        assert_eq!(seen.all("host"), [forwarded], "{host}");
        assert_eq!(seen.all("x-forwarded-host"), [forwarded], "{host}");
    }
}

#[test]
fn invalid_hosts_are_400() {
    let s = setup();
    for head in [
        "GET /v1 HTTP/1.1\r\nHost: api.test:99999",
        "GET /v1 HTTP/1.1\r\nHost: a..b",
        "GET /v1 HTTP/1.1\r\nHost: api.test/x",
        "GET /v1 HTTP/1.1\r\nHost: [::1",
        "GET /v1 HTTP/1.1\r\nHost: api.test:8o",
        "GET /v1 HTTP/1.1\r\nHost: api%2etest",
    ] {
        let r = send(&s, head);
        assert_problem(&r, 400, "invalid_host");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{head}");
    }
    // Userinfo, two Host fields, HTTP/1.1 without Host (RFC 9112 §3.2), a target
    // authority that differs from Host: 400 (some refused by Pingora itself).
    for head in [
        "GET /v1 HTTP/1.1\r\nHost: user@api.test",
        "GET /v1 HTTP/1.1\r\nHost: api.test\r\nHost: other.test",
        "GET /v1 HTTP/1.1",
        "GET http://api.test/v1 HTTP/1.1\r\nHost: other.test",
    ] {
        let mut c = Client::connect(s.gw.addr);
        c.send_raw(format!("{head}\r\n\r\n").as_bytes());
        let r = c
            .read()
            .unwrap()
            .unwrap_or_else(|| panic!("no answer to {head:?}"));
        assert_eq!(r.status(), 400, "{head}: {}", r.text());
    }
    // HTTP/1.0 may omit Host: it is routed without one.
    let r = send(&s, "GET /public HTTP/1.0");
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(s.origin.count(), 1);
}

#[test]
fn paths_are_routed_as_origins_decode_them() {
    let s = setup();
    // Percent-encoded unreserved characters decode before routing, and the decoded path
    // is what the origin receives.
    // (`%25` is an encoded `%`: `/%2561dmin` is another segment, and `..` leaves it.)
    for p in [
        "/%61dmin/users",
        "/%61%64%6d%69%6e/users",
        "/%2561dmin/../admin/users",
    ] {
        let r = send(&s, &format!("GET {p} HTTP/1.1\r\nHost: gateway.test"));
        assert_problem(&r, 401, "missing_api_key");
    }
    let admin = s.keys.plain["admin"].clone();
    let r = send(
        &s,
        &format!("GET /%61dmin/us%65rs?q=%61 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {admin}"),
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(s.origin.last().path(), "/admin/users?q=%61");
    // Ambiguous forms are refused before routing; none reaches the origin.
    for p in [
        "/admin;x=1/users",
        "/public/..;/admin/users",
        "/admin%3b/users",
        "/public/%2e%2e/admin",
        "/admin%2fusers",
        "/admin%5cusers",
        "/a%u002e",
        "/a%zz",
        "/%c0%ae%c0%ae/admin",
        "/%c0%af",
        "/admin./users",
        "/admin%20/users",
        "/x/%0a",
    ] {
        let r = send(&s, &format!("GET {p} HTTP/1.1\r\nHost: gateway.test"));
        assert_problem(&r, 400, "invalid_path");
    }
    assert_eq!(s.origin.count(), 1);
    // Raw UTF-8 is forwarded percent-encoded and logged as its bytes.
    let r = send(
        &s,
        "GET /public/\u{12f}\u{12f} HTTP/1.1\r\nHost: gateway.test",
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(s.origin.last().path(), "/public/%C4%AF%C4%AF");
    s.gw.wait_log("path=/public/%C4%AF%C4%AF ", 1);
    assert!(!s.gw.log().contains("%2F%2F"), "{}", s.gw.log());
}

#[test]
fn case_insensitive_origins_get_case_insensitive_routes() {
    // Default: routes match case-sensitively, and the origin receives the path as sent.
    let s = setup();
    let r = send(&s, "GET /ADMIN/users HTTP/1.1\r\nHost: gateway.test");
    assert_eq!(r.status(), 200, "{}", s.gw.log());
    assert_eq!(s.origin.last().path(), "/ADMIN/users");
    // An upstream marked `case_insensitive_paths` (IIS, ASP.NET Core, Express) routes
    // `/ADMIN` and `/%41dmin` into the protected route.
    let s = setup_with(|c| c.upstream("case_insensitive_paths: true"));
    for p in ["/ADMIN/users", "/Admin", "/%41dmin/x"] {
        let r = send(&s, &format!("GET {p} HTTP/1.1\r\nHost: gateway.test"));
        assert_problem(&r, 401, "missing_api_key");
    }
    assert_eq!(s.origin.count(), 0);
}

#[test]
fn no_client_claim_reaches_the_origin() {
    let s = setup_with(|c| c.server("max_request_headers: 300"));
    let good = s.keys.plain["good"].clone();
    let mut head = String::from("GET /maybe/x HTTP/1.1\r\nHost: gateway.test\r\n");
    let lists = [
        &keygate::headers::IDENTITY[..],
        &keygate::headers::CLAIMS_IDENTITY[..],
        &keygate::headers::CLAIMS_URL[..],
        &keygate::headers::CLAIMS_HOST[..],
        &keygate::headers::CLAIMS_SCHEME_PORT[..],
        &keygate::headers::CLAIMS_CLIENT_ADDRESS[..],
    ];
    for name in lists.iter().flat_map(|l| l.iter()) {
        // Mixed case, and the CGI/WSGI underscore spelling of each.
        let mixed: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        head.push_str(&format!("{mixed}: evil\r\n"));
        head.push_str(&format!("{}: evil\r\n", name.replace('-', "_")));
    }
    head.push_str("X_Shared_Secret: evil\r\nx-shared-secret: evil\r\n");
    // Without a key (anonymous on an optional route), then with one.
    for with_key in [false, true] {
        let mut h = head.clone();
        if with_key {
            h.push_str(&format!("x-api-key: {good}\r\n"));
        }
        let r = send(&s, h.trim_end());
        assert_eq!(r.status(), 200, "{}", r.text());
        let seen = s.origin.last();
        for (name, value) in &seen.headers {
            assert!(
                !String::from_utf8_lossy(value).contains("evil"),
                "{name} reached the origin from the client"
            );
            assert!(!name.contains('_'), "{name} reached the origin");
        }
        assert_eq!(seen.all("x-shared-secret"), [SECRET]);
        assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
        assert_eq!(seen.all("x-forwarded-host"), ["gateway.test"]);
        assert_eq!(seen.all("x-forwarded-port"), [s.gw.addr.port().to_string()]);
        assert!(seen.all("x-forwarded-prefix").is_empty());
        if with_key {
            assert_eq!(seen.all("x-consumer-id"), ["acme"]);
            assert!(seen.all("x-anonymous-consumer").is_empty());
        } else {
            assert!(seen.all("x-consumer-id").is_empty());
            assert_eq!(seen.all("x-anonymous-consumer"), ["true"]);
        }
    }
}

#[test]
fn keygate_credentials_are_never_forwarded_even_on_open_routes() {
    let s = setup();
    let good = s.keys.plain["good"].clone();
    let expired = s.keys.plain["expired"].clone();
    let imported = s.keys.plain["imported"].clone();
    for headers in [
        format!("x-api-key: {good}"),
        format!("Authorization: Bearer {good}"),
        format!("x-api-key: {expired}"),
        format!("x-api-key: {imported}"),
        // A keygate-format key keygate does not know is still keygate's.
        format!("x-api-key: {}", keygate::apikey::generate().unwrap()),
    ] {
        let r = send(
            &s,
            &format!("GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n{headers}"),
        );
        assert_eq!(r.status(), 200, "{headers}");
        let seen = s.origin.last();
        assert!(
            seen.all("x-api-key").is_empty(),
            "{headers} reached the origin"
        );
        assert!(
            seen.all("authorization").is_empty(),
            "{headers} reached the origin"
        );
    }
    // Credentials that are not keygate's pass through on an open route.
    let r = send(
        &s,
        "GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Basic dXNlcjpwYXNz\r\nx-api-key: origin-own-token",
    );
    assert_eq!(r.status(), 200);
    let seen = s.origin.last();
    assert_eq!(seen.all("authorization"), ["Basic dXNlcjpwYXNz"]);
    assert_eq!(seen.all("x-api-key"), ["origin-own-token"]);
}

#[test]
fn trusted_proxies_supply_the_client_address_and_nobody_else_does() {
    let s = setup_with(|c| c.server("trusted_proxies: [\"127.0.0.1/32\"]"));
    // From the trusted balancer: its X-Forwarded-* are kept, the client is the right-most
    // untrusted entry.
    let r = send(
        &s,
        "GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Real-IP: 6.6.6.6",
    );
    assert_eq!(r.status(), 200);
    let seen = s.origin.last();
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["6.6.6.6, 203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(seen.all("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.all("x-forwarded-port"), ["443"]);
    assert!(seen.all("x-real-ip").is_empty());
    s.gw.wait_log("client=203.0.113.7", 1);
    // From an untrusted peer (127.0.0.2): its X-Forwarded-* are replaced.
    let mut c = Client::connect_from("127.0.0.2", s.gw.addr);
    let r = c.get(
        "/public/y",
        &[
            ("X-Forwarded-For", "203.0.113.8"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    assert_eq!(r.status(), 200);
    let seen = s.origin.last();
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.2"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    s.gw.wait_log("client=127.0.0.2", 1);
}

#[test]
fn brute_force_counts_the_client_behind_a_trusted_proxy() {
    let s = setup_with(|c| {
        c.server("trusted_proxies: [\"127.0.0.1\"]")
            .auth("brute_force: { max_failures: 3, window_seconds: 3600 }")
    });
    let good = s.keys.plain["good"].clone();
    let mut c = Client::connect(s.gw.addr);
    for _ in 0..3 {
        let r = c.get(
            "/admin/x",
            &[("x-api-key", "guess"), ("x-forwarded-for", "198.51.100.1")],
        );
        assert_eq!(r.status(), 401);
    }
    let r = c.get(
        "/admin/x",
        &[("x-api-key", &good), ("x-forwarded-for", "198.51.100.1")],
    );
    assert_eq!(r.status(), 429, "{}", r.text());
    // Another client behind the same balancer is not blocked.
    let r = c.get(
        "/maybe/x",
        &[("x-api-key", &good), ("x-forwarded-for", "198.51.100.2")],
    );
    assert_eq!(r.status(), 200, "{}", r.text());
}

#[test]
fn small_bodies_of_rejected_requests_are_drained_and_the_connection_kept() {
    let s = setup();
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(
        b"POST /admin/a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\nhelloGET /public/next HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
    );
    let first = c.read().unwrap().unwrap();
    assert_problem(&first, 401, "missing_api_key");
    assert_ne!(first.header("connection").as_deref(), Some("close"));
    let second = c.read().unwrap().expect("the pipelined request was lost");
    assert_eq!(second.status(), 200, "{}", second.text());
    assert_eq!(s.origin.last().path(), "/public/next");
    // The body arriving after the answer, in pieces, is drained too.
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(b"POST /admin/a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 10\r\n\r\n01234");
    assert_problem(&c.read().unwrap().unwrap(), 401, "missing_api_key");
    c.send_raw(b"56789");
    assert_eq!(c.get("/public/again", &[]).status(), 200);
    // Waiting for `100 Continue`: the client may or may not send the body, so the
    // connection cannot be framed any more and closes.
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(b"POST /admin/a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.read().unwrap().unwrap();
    assert_problem(&r, 401, "missing_api_key");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)));
    // Above 64 KiB the body is not read: close.
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(b"POST /admin/a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 65537\r\n\r\n");
    let r = c.read().unwrap().unwrap();
    assert_eq!(r.header("connection").as_deref(), Some("close"));
}

#[test]
fn a_bare_lf_in_a_chunk_extension_is_reframed_consistently() {
    // Pingora's chunk parser (httparse) accepts `2;\nxx\r\n` as a chunk-size line with an
    // extension; keygate cannot refuse it without a fork. What it forwards is re-framed
    // from what it parsed, so the origin and keygate agree and nothing is smuggled.
    let s = setup();
    let admin = s.keys.plain["admin"].clone();
    let mut c = Client::connect(s.gw.addr);
    c.send_raw(
        format!(
            "POST /admin/x HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {admin}\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n33\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
        )
        .as_bytes(),
    );
    // Pingora accepts it today (a refusal, 400, would be as safe: change this test then).
    let first = c.read().unwrap().expect("an answer to the chunked request");
    assert_eq!(first.status(), 200, "{}", first.text());
    let seen = s
        .origin
        .requests()
        .into_iter()
        .find(|m| m.path() == "/admin/x")
        .expect("the chunked request reached the origin");
    assert_eq!(seen.body, b"33", "the origin saw a different body");
    // The pipelined request is judged on its own: no key, 401.
    let second = c.read().unwrap().expect("pipelined request answered");
    assert_problem(&second, 401, "missing_api_key");
    assert!(
        s.origin
            .requests()
            .iter()
            .all(|m| m.path() != "/admin/smuggled"),
        "a smuggled request reached the origin"
    );
}

#[test]
fn trace_is_never_forwarded() {
    // An origin answering TRACE echoes the request back, shared secret included.
    let s = setup();
    for m in ["TRACE", "TRACK"] {
        let r = send(&s, &format!("{m} /public/x HTTP/1.1\r\nHost: gateway.test"));
        assert_problem(&r, 405, "method_not_allowed");
        assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
        assert!(!r.text().contains(SECRET));
    }
    assert_eq!(s.origin.count(), 0);
}
