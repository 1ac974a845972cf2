//! Secrets never leak: not in logs at the most verbose level, not in bodies, not in metrics.

use crate::harness::*;

#[test]
fn no_key_digest_or_secret_appears_anywhere_even_at_trace() {
    let log = leak_session(None);
    assert!(
        log.stderr.contains("keygate::access"),
        "access log missing:\n{}",
        log.stderr
    );
}

#[test]
fn nor_in_a_json_access_log_file() {
    let log = leak_session(Some("{ format: json, destination: access.log }"));
    let file = log.file.unwrap_or_default();
    assert!(file.lines().count() >= 5, "access log file:\n{file}");
    for line in file.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["target"], "keygate::access", "{line}");
    }
    assert!(
        !log.stderr.contains("keygate::access:"),
        "access lines on stderr:\n{}",
        log.stderr
    );
}

/// What a leak session wrote: stderr, and the access-log file if there is one.
struct Logs {
    stderr: String,
    file: Option<String>,
}

/// Run keygate at `trace` (with `server.access_log` set to `access_log`, if given)
/// through valid, invalid and malformed requests carrying keys and the secret, and assert
/// that none reaches stderr, the access-log file, a response body or `/metrics`.
fn leak_session(access_log: Option<&str>) -> Logs {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let maddr = free_addr();
    let addr = free_addr();
    let mut cfg = GatewayConfig::new(origin.addr)
        .listen(addr)
        .metrics(maddr)
        .server("grace_period_seconds: 1");
    if let Some(a) = access_log {
        cfg = cfg.server(&format!("access_log: {a}"));
    }
    let cfg = cfg.yaml();
    let cfg = dir.write("keygate.yaml", &cfg);
    dir.write("keys.yaml", &k.yaml);
    let mut gw = Gateway::spawn(
        &dir,
        cfg,
        addr,
        &[("KEYGATE_SHARED_SECRET", SECRET), ("KEYGATE_LOG", "trace")],
    );
    gw.wait_ready(maddr);

    let good = k.plain["good"].clone();
    let wrong = keygate::apikey::generate().unwrap();
    let mut bodies = String::new();
    let mut exchange = |req: String| {
        let mut c = Client::connect(gw.addr);
        c.send_raw(req.as_bytes());
        // Responses keygate wrote itself (the origin's echo of the URL is the origin's business).
        if let Ok(Some(m)) = c.read() {
            if m.status() >= 400 {
                bodies.push_str(&format!("{:?}\n{}\n", m.headers, m.text()));
            }
        }
    };
    let h = "Host: gateway.test\r\n";
    exchange(format!(
        "GET /v1?api_key={good} HTTP/1.1\r\n{h}Authorization: Bearer {good}\r\n\r\n"
    ));
    exchange(format!(
        "GET /v1 HTTP/1.1\r\n{h}x-api-key: {wrong}\r\nx-shared-secret: {SECRET}\r\n\r\n"
    ));
    exchange(format!(
        "GET /admin/x HTTP/1.1\r\n{h}x-api-key: {good}\r\n\r\n"
    ));
    exchange(format!(
        "GET /v1 HTTP/1.1\r\n{h}x-api-key: {good}\r\nx-api-key: {wrong}\r\n\r\n"
    ));
    exchange(format!(
        "GET /v1 HTTP/1.1\r\n{h}x-api-key: {}\r\n\r\n",
        k.plain["expired"]
    ));
    // Malformed requests make Pingora log its raw header buffer at debug level.
    exchange(format!(
        "GET /v1 HTTP/1.1\r\n{h}x-api-key: {good}\r\nbad header line\r\n\r\n"
    ));
    exchange(format!(
        "GET /v1 HTTP/1.1\r\n{h}Authorization: Bearer {good}\r\nx-bad\0: 1\r\n\r\n"
    ));
    exchange(format!("G@T /v1 HTTP/1.1\r\n{h}x-api-key: {good}\r\n\r\n"));
    // The origin stops accepting keygate's secret: keygate warns, naming no secret.
    origin.set_secret("the-origin-expects-another-secret");
    exchange(format!(
        "GET /v1 HTTP/1.1\r\n{h}Authorization: Bearer {good}\r\n\r\n"
    ));
    let metrics = scrape_until(maddr, r#"keygate_auth_total{result="ambiguous"}"#, 1.0);
    // Every proxied request has its access-log line (written in batches, all of them by
    // the time keygate has stopped); the malformed ones are answered by Pingora before
    // keygate sees them.
    gw.wait_log("to an authenticated request", 1);
    gw.stop();
    let file = access_log.map(|_| std::fs::read_to_string(dir.path("access.log")).unwrap());
    let log = format!("{}\n{}", gw.log(), file.clone().unwrap_or_default());
    assert!(
        log.matches("keygate::access").count() >= 5,
        "access lines missing:\n{log}"
    );
    let mut secrets = vec![
        SECRET.to_string(),
        good.clone(),
        wrong.clone(),
        k.plain["expired"].clone(),
    ];
    for key in [&good, &wrong] {
        secrets.push(hex::encode(keygate::apikey::digest(key.as_bytes())));
    }
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "a secret reached the log:\n{log}"
        );
        assert!(
            !bodies.contains(s.as_str()),
            "a secret reached a response:\n{bodies}"
        );
        assert!(!metrics.contains(s.as_str()), "a secret reached /metrics");
    }
    // The secret's own header name is fine to log; its value and keys are not.
    assert!(
        !log.contains("api_key="),
        "query strings are not logged:\n{log}"
    );
    Logs {
        stderr: gw.log(),
        file,
    }
}
