//! keygate as a service: start-up failures exit, readiness and reloads reach the
//! service manager (a real `NOTIFY_SOCKET`), `keygate reload --wait` reports the result.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A `NOTIFY_SOCKET` the test listens on, as systemd would.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &TestDir) -> NotifySocket {
        let path = dir.path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        NotifySocket { socket, path }
    }

    /// The next datagram, as text.
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Read datagrams until one contains `needle`; return it.
    fn until(&self, needle: &str) -> String {
        loop {
            let m = self.next();
            if m.contains(needle) {
                return m;
            }
        }
    }
}

fn start_notified(
    dir: &TestDir,
    cfg: &GatewayConfig,
    keys: &str,
    extra_env: &[(&str, &str)],
) -> (Gateway, NotifySocket) {
    let notify = NotifySocket::bind(dir);
    let addr = free_addr();
    let config = dir.write("keygate.yaml", &cfg.clone().listen(addr).yaml());
    dir.write("keys.yaml", keys);
    let path = notify.path.to_str().unwrap().to_string();
    let mut env = vec![
        ("KEYGATE_SHARED_SECRET", SECRET),
        ("NOTIFY_SOCKET", path.as_str()),
    ];
    env.extend_from_slice(extra_env);
    let gw = Gateway::spawn(dir, config, addr, &env);
    (gw, notify)
}

/// Run `keygate run` on `cfg` (expecting it to exit), returning its exit code and stderr.
fn run_to_exit(dir: &TestDir, cfg: &GatewayConfig) -> (Option<i32>, String, Duration) {
    dir.write("keygate.yaml", &cfg.yaml());
    dir.write("keys.yaml", &keys().yaml);
    let started = Instant::now();
    let out = keygate()
        .args(["run", "--config"])
        .arg(dir.path("keygate.yaml"))
        .env("KEYGATE_SHARED_SECRET", SECRET)
        .output()
        .unwrap();
    (out.status.code(), texts(&out).1, started.elapsed())
}

#[test]
fn a_busy_port_is_a_start_up_failure_within_a_second() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let (code, err, took) = run_to_exit(&dir, &GatewayConfig::new(origin.addr).listen(busy));
    assert_eq!(code, Some(1), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        err.contains(&busy.to_string()) && err.contains("server.listen[0]"),
        "{err}"
    );
    assert!(
        !err.contains("ready: listening"),
        "claimed readiness: {err}"
    );
    // The metrics listener too.
    let cfg = GatewayConfig::new(origin.addr)
        .listen(free_addr())
        .metrics(busy);
    let (code, err, _) = run_to_exit(&dir, &cfg);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("server.metrics_listen"), "{err}");
    // An address this machine does not have.
    let (code, err, _) = run_to_exit(
        &dir,
        &GatewayConfig::new(origin.addr).listen("192.0.2.1:80".parse().unwrap()),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("192.0.2.1:80"), "{err}");
}

#[test]
fn readiness_reloads_and_stopping_reach_the_service_manager() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let (gw, notify) = start_notified(&dir, &GatewayConfig::new(origin.addr), &k.yaml, &[]);
    let ready = notify.until("READY=1");
    assert!(
        ready.contains("STATUS=serving: 4 routes, 1 upstream, 3 consumers"),
        "{ready}"
    );
    // READY=1 came once the listener accepts: a request succeeds right away.
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    gw.wait_log("ready: listening on", 1);
    assert!(
        gw.log()
            .contains(&format!("listening on {} (http)", gw.addr)),
        "{}",
        gw.log()
    );

    gw.sighup();
    let reloading = notify.until("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let done = notify.until("READY=1");
    assert!(
        done.contains("STATUS=serving:") && done.contains("reloaded at"),
        "{done}"
    );

    dir.write(
        "keys.yaml",
        "consumers:\n  - id: a\n    keys: [ { id: k, sha256: nothex } ]\n",
    );
    gw.sighup();
    notify.until("RELOADING=1");
    let failed = notify.until("READY=1");
    assert!(failed.contains("STATUS=reload failed"), "{failed}");
    assert!(failed.contains("sha256"), "{failed}");

    gw.signal("TERM");
    notify.until("STOPPING=1");
}

#[test]
fn reload_wait_reports_the_running_keygates_result() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let status = dir.path("status");
    let status_arg = status.to_str().unwrap().to_string();
    let addr = free_addr();
    let config_path = dir.write(
        "keygate.yaml",
        &GatewayConfig::new(origin.addr).listen(addr).yaml(),
    );
    dir.write("keys.yaml", &k.yaml);
    // `run --status-file` is how a manual start opts in; systemd sets RUNTIME_DIRECTORY.
    let gw = Gateway::spawn_with(
        &dir,
        config_path.clone(),
        addr,
        &["--status-file", &status_arg],
        &[("KEYGATE_SHARED_SECRET", SECRET)],
    );
    let pid = gw.pid().to_string();
    let reload = |extra: &[&str]| {
        keygate()
            .args([
                "reload",
                "--wait",
                "--status-file",
                &status_arg,
                "--pid",
                &pid,
                "--config",
            ])
            .arg(&config_path)
            .args(extra)
            .env("KEYGATE_SHARED_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let out = reload(&[]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("serving: 4 routes"), "{stdout}");
    gw.wait_log("configuration reloaded", 1);

    // A broken file is caught by the check: keygate is not signalled.
    dir.write(
        "keys.yaml",
        "consumers:\n  - id: a\n    keys: [ { id: k, sha256: nothex } ]\n",
    );
    let out = reload(&[]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was not signalled"), "{stderr}");
    // Without the check, the running keygate's own rejection is what fails the command.
    let out = reload(&["--no-check", "--timeout-seconds", "5"]);
    let (_, stderr) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stderr}\n{}\n{:?}",
        gw.log(),
        std::fs::read_to_string(&status)
    );
    assert!(
        stderr.contains("reload failed") && stderr.contains("sha256"),
        "{stderr}"
    );
    gw.wait_log("configuration reload failed", 1);
    // And keygate kept serving.
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
}

/// The shipped unit, with its executable pointed at the binary under test.
fn unit_under_test(dir: &TestDir) -> (String, std::path::PathBuf) {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/keygate.service"
    ))
    .unwrap();
    let path = dir.write(
        "keygate.service",
        &unit.replace("/usr/bin/keygate", keygate_bin()),
    );
    (unit, path)
}

#[test]
fn the_unit_is_notify_type_with_a_waiting_reload_and_passes_verify() {
    let dir = TestDir::new();
    let (unit, path) = unit_under_test(&dir);
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStartPre=/usr/bin/keygate check --config /etc/keygate/keygate.yaml",
        "ExecStart=/usr/bin/keygate run --config /etc/keygate/keygate.yaml",
        "ExecReload=/usr/bin/keygate reload --wait --config /etc/keygate/keygate.yaml",
        "RuntimeDirectory=keygate",
        "LogsDirectory=keygate",
        "LoadCredential=shared-secret:/etc/keygate/shared-secret",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    assert!(
        !unit.contains("kill -HUP"),
        "reload must wait for keygate's verdict"
    );
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// The exposure score the README states; a change that weakens the hardening fails here.
const MAX_EXPOSURE: f64 = 2.0;

#[test]
fn the_unit_scores_as_documented_in_systemd_analyze_security() {
    let dir = TestDir::new();
    let (_, path) = unit_under_test(&dir);
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for keygate.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&format!("exposure level {score}")),
        "README does not state the exposure level {score}"
    );
}
