//! `/metrics` and `/healthz` through real sockets, after a known sequence of requests.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::harness::*;

/// The standard config with metrics on `metrics` and, ahead of the standard routes, a
/// route `/dead` to an upstream `dead` at `dead` (where nothing listens).
fn metrics_config(origin: SocketAddr, metrics: SocketAddr, dead: SocketAddr) -> String {
    let dead_route = "name: dead, path_prefix: /dead, upstream: dead, auth: none";
    GatewayConfig::new(origin)
        .metrics(metrics)
        .extra_upstream("dead", &format!("address: \"{dead}\""))
        .routes(&[&[dead_route][..], &STANDARD_ROUTES[..]].concat())
        .yaml()
}

#[test]
fn metrics_count_a_known_sequence_and_pass_promtool() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let soon = keygate::timestamp::format_rfc3339(keygate::timestamp::now_unix() + 3 * 86_400);
    let soon_key = keygate::apikey::generate().unwrap();
    let yaml = format!(
        "{}  - id: soon\n    keys:\n      - {{ id: soon-1, sha256: \"{}\", expires_at: {soon} }}\n",
        k.yaml,
        hex::encode(keygate::apikey::digest(soon_key.as_bytes()))
    );
    let maddr = free_addr();
    let dead = free_addr();
    let mut gw = Gateway::start(&dir, &metrics_config(origin.addr, maddr, dead), &yaml);
    gw.wait_ready(maddr);

    let h = Client::connect(maddr).get("/healthz", &[]);
    assert_eq!(h.status(), 200);

    let good = &k.plain["good"];
    for _ in 0..2 {
        assert_eq!(get(gw.addr, "/v1", &[("x-api-key", good)]).status(), 200);
    }
    assert_eq!(get(gw.addr, "/v1", &[]).status(), 401);
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["expired"])]).status(),
        401
    );
    assert_eq!(
        get(gw.addr, "/admin/x", &[("x-api-key", good)]).status(),
        403
    );
    assert_eq!(
        get(gw.addr, "/v1", &[("Host", "nowhere.test")]).status(),
        404
    );
    assert_eq!(get(gw.addr, "/public/x", &[]).status(), 200);
    assert_eq!(get(gw.addr, "/dead/x", &[]).status(), 502);
    // The origin stops accepting our secret: keygate authenticated, the origin said 401.
    origin.set_secret("rotated-at-the-origin-only");
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", good)]).status(), 401);

    let text = scrape_until(
        maddr,
        r#"keygate_requests_total{route="api",status="401"}"#,
        3.0,
    );
    let m = |s: &str| sample(&text, s);
    assert_eq!(
        m(r#"keygate_requests_total{route="api",status="200"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="api",status="401"}"#),
        3.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="admin",status="403"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="(none)",status="404"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="public",status="200"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="dead",status="502"}"#),
        1.0
    );
    assert_eq!(m(r#"keygate_auth_total{result="ok"}"#), 3.0);
    assert_eq!(m(r#"keygate_auth_total{result="missing"}"#), 1.0);
    assert_eq!(m(r#"keygate_auth_total{result="expired"}"#), 1.0);
    assert_eq!(m(r#"keygate_auth_total{result="forbidden"}"#), 1.0);
    assert_eq!(m(r#"keygate_auth_total{result="invalid"}"#), 0.0);
    assert_eq!(
        m(r#"keygate_consumer_requests_total{consumer="acme"}"#),
        3.0
    );
    assert_eq!(m(r#"keygate_consumer_requests_total{consumer="ops"}"#), 0.0);
    assert_eq!(
        m(r#"keygate_request_duration_seconds_count{route="api"}"#),
        5.0
    );
    assert_eq!(
        m(r#"keygate_upstream_errors_total{kind="connect_refused",upstream="dead"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_origin_auth_rejections_total{upstream="origin"}"#),
        1.0
    );
    assert_eq!(m(r#"keygate_keys{state="active"}"#), 4.0);
    assert_eq!(m(r#"keygate_keys{state="expired"}"#), 1.0);
    assert_eq!(m(r#"keygate_keys{state="disabled"}"#), 2.0);
    assert_eq!(m("keygate_keys_expiring_soon"), 1.0);
    assert_eq!(m("keygate_config_last_reload_successful"), 1.0);
    assert!(m("keygate_config_last_reload_success_timestamp_seconds") > 1.7e9);
    assert_eq!(
        m(&format!(
            "keygate_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(
        m("process_resident_memory_bytes") > 0.0,
        "process metrics missing"
    );
    // Nothing secret in the exposition.
    for secret in [
        SECRET,
        good.as_str(),
        &hex::encode(keygate::apikey::digest(good.as_bytes())),
    ] {
        assert!(!text.contains(secret));
    }

    // The exposition follows Prometheus conventions.
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("promtool (Debian package prometheus) is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reload_results_are_counted() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let maddr = free_addr();
    let dead = free_addr();
    let mut gw = Gateway::start(&dir, &metrics_config(origin.addr, maddr, dead), &k.yaml);
    gw.wait_ready(maddr);

    dir.write(
        "keys.yaml",
        "consumers: [ { id: a, keys: [ { id: x, sha256: nothex } ] } ]\n",
    );
    gw.sighup();
    gw.wait_log("configuration reload failed", 1);
    let text = scrape(maddr);
    assert_eq!(
        sample(&text, r#"keygate_config_reloads_total{result="failure"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"keygate_config_reloads_total{result="success"}"#),
        0.0
    );
    assert_eq!(sample(&text, "keygate_config_last_reload_successful"), 0.0);
    // The old keys still serve.
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );

    dir.write("keys.yaml", &k.yaml);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    let text = scrape(maddr);
    assert_eq!(
        sample(&text, r#"keygate_config_reloads_total{result="success"}"#),
        1.0
    );
    assert_eq!(sample(&text, "keygate_config_last_reload_successful"), 1.0);
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/prometheus");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts_test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool (Debian package prometheus) is installed");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
