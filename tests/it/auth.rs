//! Authentication through real sockets: every outcome, and what reaches the origin.

use crate::harness::*;

#[test]
fn valid_key_reaches_origin_with_identity_and_without_credential() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let good = &k.plain["good"];

    for (i, scheme) in ["Bearer", "bearer", "BEARER", "bEaReR"].iter().enumerate() {
        let r = get(
            gw.addr,
            "/v1/things",
            &[("Authorization", &format!("{scheme} {good}"))],
        );
        assert_eq!(r.status(), 200, "{scheme}: {}", r.text());
        assert_eq!(origin.count(), i + 1);
    }
    let r = get(
        gw.addr,
        "/v1/things?q=1",
        &[("x-api-key", good), ("x-request-id", "client-req-42")],
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-req-42"));

    let seen = origin.last();
    assert_eq!(seen.path(), "/v1/things?q=1");
    assert_eq!(seen.all("x-shared-secret"), [SECRET]);
    assert_eq!(seen.header("x-consumer-id").as_deref(), Some("acme"));
    assert_eq!(
        seen.header("x-consumer-username").as_deref(),
        Some("ACME Corp")
    );
    assert_eq!(
        seen.header("x-credential-identifier").as_deref(),
        Some("acme-good")
    );
    assert_eq!(seen.header("x-anonymous-consumer"), None);
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.header("x-request-id").as_deref(),
        Some("client-req-42")
    );
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("gateway.test")
    );
    for m in origin.requests() {
        let raw = format!("{:?}", m.headers);
        assert!(
            !raw.contains(good.as_str()),
            "key reached the origin: {raw}"
        );
    }

    // An imported key (no keygate prefix) is simply looked up.
    let r = get(gw.addr, "/x", &[("x-api-key", &k.plain["imported"])]);
    assert_eq!(r.status(), 200);
    assert_eq!(
        origin.last().header("x-credential-identifier").as_deref(),
        Some("acme-imported")
    );
}

#[test]
fn rejections_are_problem_documents_and_never_reach_the_origin() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let good = &k.plain["good"];
    let invalid = r#"Bearer realm="keygate", error="invalid_token""#;

    let r = get(gw.addr, "/v1", &[]);
    assert_problem(&r, 401, "missing_api_key");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keygate""#)
    );

    let unknown = keygate::apikey::generate().unwrap();
    let mut bad_checksum = good.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let bad_checksum = String::from_utf8(bad_checksum).unwrap();
    for (key, code) in [
        (unknown.as_str(), "invalid_api_key"),
        (bad_checksum.as_str(), "invalid_api_key"),
        ("not-a-known-key", "invalid_api_key"),
        (k.plain["expired"].as_str(), "expired_api_key"),
        (k.plain["disabled"].as_str(), "disabled_api_key"),
        (k.plain["offconsumer"].as_str(), "disabled_api_key"),
    ] {
        let r = get(gw.addr, "/v1", &[("x-api-key", key)]);
        let body = assert_problem(&r, 401, code);
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some(invalid),
            "{code}"
        );
        assert!(!body.contains(key), "key echoed: {body}");
        assert!(!body.contains("acme"), "key id or consumer echoed: {body}");
    }

    let r = get(
        gw.addr,
        "/v1",
        &[
            ("Authorization", &format!("Bearer {good}")),
            ("x-api-key", &k.plain["admin"]),
        ],
    );
    assert_problem(&r, 401, "ambiguous_credentials");
    let r = get(
        gw.addr,
        "/v1",
        &[("x-api-key", good), ("x-api-key", &k.plain["admin"])],
    );
    assert_problem(&r, 401, "ambiguous_credentials");

    // acme may not use the admin route; ops may.
    let r = get(gw.addr, "/admin/users", &[("x-api-key", good)]);
    let body = assert_problem(&r, 403, "forbidden");
    assert!(!body.contains("acme"), "{body}");
    assert_eq!(r.header("www-authenticate"), None);

    let r = get(gw.addr, "/v1", &[("Host", "other.test")]);
    assert_problem(&r, 404, "route_not_found");

    assert_eq!(origin.count(), 0, "a rejected request reached the origin");
    assert_eq!(
        get(gw.addr, "/admin/users", &[("x-api-key", &k.plain["admin"])]).status(),
        200
    );
    assert_eq!(origin.count(), 1);

    // Rejections are logged with a code and never with the key (the access log is
    // written in batches, so wait for the line).
    gw.wait_log("code=expired_api_key", 1);
    let log = gw.log();
    assert!(
        !log.contains(good.as_str()) && !log.contains(&k.plain["expired"]),
        "key in log"
    );
    assert!(!log.contains(SECRET), "secret in log");
}

#[test]
fn rejection_keeps_the_connection_alive() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        let r = c.get("/v1", &[("x-api-key", "wrong")]);
        assert_eq!(r.status(), 401);
        assert_ne!(r.header("connection").as_deref(), Some("close"));
    }
    // The same connection still serves a good request afterwards.
    let r = c.get("/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 200);
}

#[test]
fn optional_and_none_routes() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);

    let r = get(gw.addr, "/maybe/x", &[]);
    assert_eq!(r.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.header("x-anonymous-consumer").as_deref(), Some("true"));
    assert_eq!(seen.header("x-consumer-id"), None);

    let r = get(gw.addr, "/maybe/x", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 200);
    assert_eq!(
        origin.last().header("x-consumer-id").as_deref(),
        Some("acme")
    );

    let r = get(gw.addr, "/maybe/x", &[("x-api-key", "wrong-key")]);
    assert_problem(&r, 401, "invalid_api_key");

    let before = origin.count();
    let r = get(gw.addr, "/public/info", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(origin.count(), before + 1);
    let seen = origin.last();
    assert_eq!(seen.all("x-shared-secret"), [SECRET]);
    assert_eq!(seen.header("x-anonymous-consumer").as_deref(), Some("true"));
}

#[test]
fn spoofed_identity_and_secret_headers_are_replaced() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let spoof = [
        ("X-Shared-Secret", "guessed"),
        ("x-shared-secret", "guessed-again"),
        ("X-Consumer-ID", "admin"),
        ("x-consumer-username", "Admin"),
        ("X-Credential-Identifier", "root-key"),
        ("X-Anonymous-Consumer", "false"),
    ];
    let mut headers = spoof.to_vec();
    headers.push(("x-api-key", &k.plain["good"]));
    assert_eq!(get(gw.addr, "/v1", &headers).status(), 200);
    let seen = origin.last();
    assert_eq!(seen.all("x-shared-secret"), [SECRET]);
    assert_eq!(seen.all("x-consumer-id"), ["acme"]);
    assert_eq!(seen.all("x-consumer-username"), ["ACME Corp"]);
    assert_eq!(seen.all("x-credential-identifier"), ["acme-good"]);
    assert!(seen.all("x-anonymous-consumer").is_empty());

    // On an auth: none route too.
    assert_eq!(get(gw.addr, "/public/x", &spoof).status(), 200);
    let seen = origin.last();
    assert_eq!(seen.all("x-shared-secret"), [SECRET]);
    assert!(seen.all("x-consumer-id").is_empty());
    assert!(seen.all("x-credential-identifier").is_empty());
    assert_eq!(seen.all("x-anonymous-consumer"), ["true"]);
}
