//! Secrets never leak: not in logs at the most verbose level, not in bodies, not in metrics.

use crate::harness::*;

#[test]
fn no_key_digest_or_secret_appears_anywhere_even_at_trace() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let maddr = free_addr();
    let addr = free_addr();
    let cfg = GatewayConfig::new(origin.addr)
        .listen(addr)
        .metrics(maddr)
        .yaml();
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
    let metrics = scrape_until(maddr, r#"keygate_auth_total{result="ambiguous"}"#, 1.0);
    // Every proxied request has its access-log line (written in batches); the malformed
    // ones are answered by Pingora before keygate sees them.
    gw.wait_log("keygate::access", 5);
    let log = gw.log();

    assert!(
        log.contains("keygate::access"),
        "access log missing:\n{log}"
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
}
