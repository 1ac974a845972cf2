//! The process lifecycle: every access-log line of a finished request is written before
//! keygate exits, on SIGTERM (after in-flight requests finish) and on SIGINT (at once).

use std::time::Duration;

use crate::harness::*;

/// A config whose access-log lines are flushed only at exit (an interval longer than any
/// test), with a 1 s grace period.
fn flush_only_at_exit(origin: std::net::SocketAddr) -> String {
    GatewayConfig::new(origin)
        .server("access_log: { flush_interval_ms: 600000 }")
        .server("grace_period_seconds: 1")
        .yaml()
}

/// The same with a metrics listener on `metrics`.
fn flush_only_at_exit_with_metrics(
    origin: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
) -> String {
    GatewayConfig::new(origin)
        .server("access_log: { flush_interval_ms: 600000 }")
        .server("grace_period_seconds: 1")
        .metrics(metrics)
        .yaml()
}

fn access_lines(log: &str, path_prefix: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("keygate::access") && l.contains(&format!("path={path_prefix}")))
        .count()
}

#[test]
fn sigint_writes_every_buffered_access_line() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let maddr = free_addr();
    let cfg = flush_only_at_exit_with_metrics(origin.addr, maddr);
    let gw = Gateway::start(&dir, &cfg, &k.yaml);
    let mut c = Client::connect(gw.addr);
    for i in 0..50 {
        let r = c.get(&format!("/v1/int-{i}"), &[("x-api-key", &k.plain["good"])]);
        assert_eq!(r.status(), 200);
    }
    // A request is finished when its `logging` phase ran, just after its response was
    // sent: wait for the 50th to be counted (in the same phase) before stopping.
    scrape_until(
        maddr,
        r#"keygate_requests_total{route="api",status="200"}"#,
        50.0,
    );
    assert_eq!(
        access_lines(&gw.log(), "/v1/int-"),
        0,
        "lines were flushed early"
    );
    gw.signal("INT");
    wait_exit(gw.pid(), Duration::from_secs(10));
    assert_eq!(access_lines(&gw.log(), "/v1/int-"), 50, "{}", gw.log());
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_writes_their_lines() {
    let dir = TestDir::new();
    let origin = Origin::start_with(None, OriginMode::SlowMs(400));
    let k = keys();
    let cfg = flush_only_at_exit(origin.addr);
    let gw = Gateway::start(&dir, &cfg, &k.yaml);
    let good = k.plain["good"].clone();
    let addr = gw.addr;
    let in_flight =
        std::thread::spawn(move || get(addr, "/v1/term-slow", &[("x-api-key", &good)]).status());
    // Wait until the request is at the origin, then ask keygate to stop.
    eventually(
        "the request reaches the origin",
        Duration::from_secs(10),
        || (origin.count() > 0).then_some(()),
    );
    gw.signal("TERM");
    assert_eq!(
        in_flight.join().unwrap(),
        200,
        "the in-flight request was cut"
    );
    wait_exit(gw.pid(), Duration::from_secs(15));
    assert_eq!(access_lines(&gw.log(), "/v1/term-slow"), 1, "{}", gw.log());
}
