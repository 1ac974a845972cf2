//! Faults: a misbehaving origin, broken files at reload, signal storms.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;

/// The standard config with a metrics listener, and the listener's address.
fn with_metrics(origin: SocketAddr) -> (String, SocketAddr) {
    let maddr = free_addr();
    (GatewayConfig::new(origin).metrics(maddr).yaml(), maddr)
}

#[test]
fn garbage_from_the_origin_is_a_502_and_counted() {
    let dir = TestDir::new();
    let origin = Origin::start_with(None, OriginMode::Garbage);
    let k = keys();
    let (cfg, maddr) = with_metrics(origin.addr);
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    let r = get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]);
    assert_eq!(r.status(), 502, "{}", r.text());
    assert!(r.text().contains("upstream_unavailable"));
    let text = scrape_until(
        maddr,
        r#"keygate_upstream_errors_total{kind="invalid_response",upstream="origin"}"#,
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            r#"keygate_upstream_errors_total{kind="invalid_response",upstream="origin"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(get(gw.addr, "/v1", &[]).status(), 401, "still serving");
}

#[test]
fn an_origin_cut_mid_body_truncates_the_response_and_is_counted() {
    let dir = TestDir::new();
    let origin = Origin::start_with(None, OriginMode::CutMidBody);
    let k = keys();
    let (cfg, maddr) = with_metrics(origin.addr);
    let mut gw = Gateway::start(&dir, &cfg, &k.yaml);
    gw.wait_ready(maddr);
    let mut c = std::net::TcpStream::connect(gw.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        format!(
            "GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {}\r\n\r\n",
            k.plain["good"]
        )
        .as_bytes(),
    )
    .unwrap();
    // Headers were already sent: the client sees a 200 announcing 1000 bytes, the 10 the
    // origin sent, then a close.
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)
        .expect("the connection closes after the truncated body");
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-length: 1000\r\n"),
        "{raw}"
    );
    assert_eq!(body, "0123456789", "{raw}");
    let text = scrape_until(
        maddr,
        r#"keygate_upstream_errors_total{kind="closed",upstream="origin"}"#,
        1.0,
    );
    let counted: f64 = ["closed", "invalid_response", "other"]
        .iter()
        .map(|k| {
            sample(
                &text,
                &format!("keygate_upstream_errors_total{{kind=\"{k}\",upstream=\"origin\"}}"),
            )
        })
        .sum();
    assert_eq!(counted, 1.0, "{text}");
    assert_eq!(get(gw.addr, "/v1", &[]).status(), 401, "still serving");
}

/// A keys file that adds `late` at the top (so a half-applied load would let it in) and
/// is broken further down.
fn broken_variants(good_yaml: &str, late: &str) -> Vec<(&'static str, String)> {
    let late_entry = format!(
        "consumers:\n  - id: late\n    keys:\n      - {{ id: late-1, sha256: \"{}\" }}\n",
        hex::encode(keygate::apikey::digest(late.as_bytes()))
    );
    let full = format!(
        "{late_entry}{}",
        good_yaml.trim_start().trim_start_matches("consumers:\n")
    );
    let half = full[..full.len() * 2 / 3].to_string();
    let cut_token = format!(
        "{}  - id: cut\n    keys:\n      - {{ id: cut-1, sha256: \"0123",
        late_entry
    );
    vec![
        ("half-written", half),
        ("cut mid-token", cut_token),
        ("truncated to nothing useful", "consumers: [".to_string()),
        ("truncated to nothing at all", String::new()),
    ]
}

#[test]
fn broken_files_at_reload_keep_the_old_state_whole() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let late = keygate::apikey::generate().unwrap();
    let mut failures = 0;
    let mut check = |what: &str| {
        failures += 1;
        gw.sighup();
        gw.wait_log("configuration reload failed", failures);
        assert_eq!(
            get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
            200,
            "{what}: old key lost"
        );
        assert_eq!(
            get(gw.addr, "/v1", &[("x-api-key", &late)]).status(),
            401,
            "{what}: half-applied"
        );
    };
    for (what, text) in broken_variants(&k.yaml, &late) {
        dir.write("keys.yaml", &text);
        check(what);
    }
    std::fs::remove_file(dir.path("keys.yaml")).unwrap();
    check("keys file deleted");
    std::fs::create_dir(dir.path("keys.yaml")).unwrap();
    check("keys file replaced by a directory");
    std::fs::remove_dir(dir.path("keys.yaml")).unwrap();
    dir.write("keys.yaml", &k.yaml);
    let cfg = std::fs::read_to_string(dir.path("keygate.yaml")).unwrap();
    dir.write("keygate.yaml", &cfg[..cfg.len() / 2]);
    check("config truncated");
    std::fs::remove_file(dir.path("keygate.yaml")).unwrap();
    check("config deleted");
    assert!(gw.log().contains("cannot read file"), "{}", gw.log());
    // Restored files load again.
    dir.write("keygate.yaml", &cfg);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
}

#[test]
fn unreadable_secret_file_at_start_refuses_to_start() {
    let dir = TestDir::new();
    let k = keys();
    let cfg = GatewayConfig::new("127.0.0.1:9".parse().unwrap())
        .listen(free_addr())
        .secret_file("missing-secret")
        .yaml();
    let cfg = dir.write("keygate.yaml", &cfg);
    dir.write("keys.yaml", &k.yaml);
    let err = run_refused(&cfg, &[]);
    assert!(
        err.contains("secret.file: cannot read secret file"),
        "{err}"
    );
}

/// How many file descriptors process `pid` has open; panics if /proc cannot say.
fn open_fds(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot count open descriptors in {dir}: {e}"))
        .count()
}

#[test]
fn sighup_storm_with_traffic_fails_nothing_and_ends_on_the_last_file() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    // Warm up, then note the descriptors in use.
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    let fds_before = open_fds(gw.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, failed, addr, key) = (
            stop.clone(),
            failed.clone(),
            gw.addr,
            k.plain["good"].clone(),
        );
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if c.get("/v1", &[("x-api-key", &key)]).status() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        })
    };
    let last = keygate::apikey::generate().unwrap();
    let final_yaml = format!(
        "{}  - id: last\n    keys:\n      - {{ id: last-1, sha256: \"{}\" }}\n",
        k.yaml,
        hex::encode(keygate::apikey::digest(last.as_bytes()))
    );
    let t = std::time::Instant::now();
    for i in 0..300 {
        if i == 150 {
            // Replace the file atomically, as editors and config management do.
            dir.write("keys.yaml.new", &final_yaml);
            std::fs::rename(dir.path("keys.yaml.new"), dir.path("keys.yaml")).unwrap();
        }
        gw.signal("HUP");
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    // Let the last reloads finish, then the final file must be in force.
    eventually("the final file applied", Duration::from_secs(20), || {
        let status = get(gw.addr, "/v1", &[("x-api-key", &last)]).status();
        if status == 200 {
            Ok(())
        } else {
            Err(format!("{status}; keygate's log:\n{}", gw.log()))
        }
    });
    // Keep the traffic going a moment longer, across any reload still queued behind the
    // storm (a window of load, not a wait for an event: none marks the last reload).
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = client.join().unwrap();
    assert!(sent > 10);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the storm"
    );
    let fds_after = open_fds(gw.pid());
    assert!(
        fds_after <= fds_before + 4,
        "descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}
