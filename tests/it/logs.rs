//! Logs an operator can use: `KEYGATE_LOG` directives (and the cap no directive lifts),
//! the JSON access log, a file destination reopened on SIGUSR1, Pingora's chatter at
//! `debug`, no duplicate error line for a 502/504, and the wrong-secret warning.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;

/// The standard config with a 1 s grace period (so [`Gateway::stop`] is quick) and, ahead
/// of the standard routes, `/dead` to an upstream where nothing listens; `server` adds
/// settings under `server:`.
fn config(origin: SocketAddr, server: &[&str]) -> String {
    let dead = free_addr();
    let dead_route = "name: dead, path_prefix: /dead, upstream: dead, auth: none";
    let mut c = GatewayConfig::new(origin)
        .server("grace_period_seconds: 1")
        .extra_upstream("dead", &format!("address: \"{dead}\""))
        .routes(&[&[dead_route][..], &STANDARD_ROUTES[..]].concat());
    for s in server {
        c = c.server(s);
    }
    c.yaml()
}

/// Start keygate on `cfg` with `KEYGATE_LOG=directives`.
fn start_with_log(dir: &TestDir, cfg: &str, keys: &str, directives: &str) -> Gateway {
    let addr = free_addr();
    let cfg = dir.write("keygate.yaml", &cfg.replace("{listen}", &addr.to_string()));
    dir.write("keys.yaml", keys);
    Gateway::spawn(
        dir,
        cfg,
        addr,
        &[
            ("KEYGATE_SHARED_SECRET", SECRET),
            ("KEYGATE_LOG", directives),
        ],
    )
}

/// The access lines in `log`, text or JSON.
fn access_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains(" keygate::access: ") || l.contains("\"target\":\"keygate::access\"")
        })
        .collect()
}

#[test]
fn directives_turn_the_access_log_off_and_a_keygate_target_up() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let cfg = config(origin.addr, &[]);

    // `keygate::access=off`: no access line; the 502 then keeps Pingora's error line,
    // the only record of it.
    let gw = start_with_log(&dir, &cfg, &k.yaml, "info,keygate::access=off");
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    assert_eq!(get(gw.addr, "/dead/x", &[]).status(), 502);
    gw.stop();
    let log = gw.log();
    assert!(access_lines(&log).is_empty(), "{log}");
    assert!(
        log.contains("INFO  keygate::reload: ready to reload"),
        "{log}"
    );
    assert!(log.contains("ERROR pingora_proxy: Fail to proxy"), "{log}");
    assert!(!log.contains("WARN  keygate::logging"), "{log}");

    // `warn`, with keygate targets at their own levels: the upstream's debug line (why
    // the 502 happened, instead of Pingora's error line), the access line at info.
    let dir = TestDir::new();
    let gw = start_with_log(
        &dir,
        &cfg,
        &k.yaml,
        "warn,keygate::access=info,keygate::reload=debug,keygate::upstream=debug",
    );
    assert_eq!(get(gw.addr, "/dead/x", &[]).status(), 502);
    gw.wait_log("DEBUG keygate::upstream: upstream `dead`", 1);
    gw.stop();
    let log = gw.log();
    assert!(
        log.contains("INFO  keygate::reload: ready to reload"),
        "{log}"
    );
    assert!(
        log.contains(": ConnectRefused: Connection refused"),
        "{log}"
    );
    assert_eq!(access_lines(&log).len(), 1, "{log}");
    assert!(!log.contains("Fail to proxy"), "{log}");
    assert!(!log.contains("keygate::service"), "{log}");
    assert!(!log.contains("DEBUG keygate::logging"), "{log}");
}

#[test]
fn an_invalid_directive_is_reported_once_and_the_rest_applies() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = start_with_log(
        &dir,
        &config(origin.addr, &[]),
        &k.yaml,
        "info,keygate::access=loud,verbose",
    );
    assert_eq!(get(gw.addr, "/public/x", &[]).status(), 200);
    gw.stop();
    let log = gw.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN  keygate::logging: KEYGATE_LOG:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("`keygate::access=loud` is not a directive")
            && warnings[0].contains("`verbose` names neither a level"),
        "{log}"
    );
    assert_eq!(access_lines(&log).len(), 1, "info still applies:\n{log}");
}

#[test]
fn pingoras_start_and_stop_lines_are_debug_and_its_debug_records_never_shown() {
    let origin = Origin::start();
    let k = keys();
    let cfg = config(origin.addr, &[]);
    // Lines Pingora logs at info when starting and stopping.
    let chatter = [
        "Bootstrap starting",
        "Server starting",
        "Starting service",
        "SIGTERM received",
        "Graceful shutdown",
        "All runtimes exited",
    ];

    let dir = TestDir::new();
    let gw = start_with_log(&dir, &cfg, &k.yaml, "info");
    gw.wait_log("INFO  keygate::service: keygate", 1);
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    gw.stop();
    let log = gw.log();
    assert!(!log.contains("pingora"), "Pingora lines at info:\n{log}");
    assert!(
        log.contains("INFO  keygate::service: stopping: no new connections"),
        "{log}"
    );
    assert!(log.contains("INFO  keygate::service: stopped"), "{log}");

    // At debug, with every directive that might lift the cap on Pingora's own debug and
    // trace records (which print request headers: keys and the secret).
    let dir = TestDir::new();
    let gw = start_with_log(
        &dir,
        &cfg,
        &k.yaml,
        "trace,pingora_proxy=trace,pingora_core=trace,pingora=trace",
    );
    let good = &k.plain["good"];
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", good)]).status(), 200);
    let mut c = Client::connect(gw.addr);
    c.send_raw(format!("GET /v1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: {good}\r\nbad header line\r\n\r\n").as_bytes());
    let _ = c.read();
    gw.stop();
    let log = gw.log();
    for line in chatter {
        assert!(
            log.lines()
                .any(|l| l.contains(" DEBUG pingora_core::server") && l.contains(line)),
            "{line:?} not at debug:\n{log}"
        );
    }
    assert!(!log.contains("INFO  pingora"), "{log}");
    assert!(!log.contains("TRACE pingora"), "{log}");
    // What Pingora logs at debug for these requests: the upstream request's headers.
    for debug_only in [
        "Sending header to upstream",
        "Successfully get a new request",
        "Invalid request header",
    ] {
        assert!(
            !log.contains(debug_only),
            "{debug_only:?} reached the log:\n{log}"
        );
    }
    assert!(
        !log.contains(SECRET) && !log.contains(good.as_str()),
        "{log}"
    );
    assert!(
        log.contains("DEBUG keygate::logging: access log (text) written to stderr"),
        "{log}"
    );
}

#[test]
fn an_upstream_failure_is_logged_once_in_its_access_line() {
    let dir = TestDir::new();
    let hanging = Origin::start_with(None, OriginMode::Hang);
    let k = keys();
    let dead = free_addr();
    let cfg = GatewayConfig::new(hanging.addr)
        .read_timeout_ms(300)
        .server("grace_period_seconds: 1")
        .extra_upstream("dead", &format!("address: \"{dead}\""))
        .routes(
            &[
                &[
                    "name: dead, path_prefix: /dead, upstream: dead, auth: none",
                    "name: slow, path_prefix: /slow, upstream: origin, auth: none",
                ][..],
                &STANDARD_ROUTES[..],
            ]
            .concat(),
        )
        .yaml();
    let gw = start_with_log(&dir, &cfg, &k.yaml, "info");
    assert_eq!(get(gw.addr, "/dead/x", &[]).status(), 502);
    assert_eq!(get(gw.addr, "/slow/x", &[]).status(), 504);
    gw.stop();
    let log = gw.log();
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("status=502")
            && lines[0].contains("code=upstream_unavailable")
            && lines[0].contains("error=\"ConnectRefused\""),
        "{log}"
    );
    assert!(
        lines[1].contains("status=504")
            && lines[1].contains("code=upstream_timeout")
            && lines[1].contains("error=\"ReadTimedout\""),
        "{log}"
    );
    assert!(!log.contains("Fail to proxy"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn json_access_lines_parse_whatever_the_request_bytes() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let cfg = config(origin.addr, &["access_log: { format: json }"]);
    let gw = start_with_log(&dir, &cfg, &k.yaml, "info");
    let good = &k.plain["good"];
    assert_eq!(
        get(gw.addr, "/v1/things?limit=1", &[("x-api-key", good)]).status(),
        200
    );
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["expired"])]).status(),
        401
    );
    // Raw bytes a request target can carry (UTF-8, a quote, a backslash): 400
    // invalid_path (for the backslash), logged as in the text line.
    let mut c = Client::connect(gw.addr);
    c.send_raw(b"GET /public/\xc4\xaf\"\\x HTTP/1.1\r\nHost: gateway.test\r\n\r\n");
    let _ = c.read();
    assert_eq!(
        get(gw.addr, "/dead/x", &[("x-request-id", "ops:trace-1")]).status(),
        502
    );
    gw.stop();
    let log = gw.log();
    let records: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(access_lines(&log).len() >= 3, "{log}");
    assert_eq!(
        records.len(),
        access_lines(&log).len(),
        "every access line is JSON:\n{log}"
    );
    let ok = &records[0];
    assert_eq!(ok["target"], "keygate::access");
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/v1/things");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "api");
    assert_eq!(ok["consumer"], "acme");
    assert_eq!(ok["key_id"], "acme-good");
    assert_eq!(ok["code"], serde_json::Value::Null);
    assert_eq!(ok["client"], "127.0.0.1");
    assert!(ok["duration_ms"].as_f64().is_some(), "{ok}");
    assert_eq!(ok["request_id"].as_str().map(str::len), Some(32));
    let expired = &records[1];
    assert_eq!(
        (expired["status"].as_u64(), expired["code"].as_str()),
        (Some(401), Some("expired_api_key"))
    );
    assert_eq!(expired["key_id"], serde_json::Value::Null);
    let odd = records
        .iter()
        .find(|r| r["status"] == 400)
        .unwrap_or_else(|| panic!("no 400 line:\n{log}"));
    assert_eq!(odd["path"], "/public/%C4%AF%22\\x", "{odd}");
    assert_eq!(odd["code"], "invalid_path");
    let failed = records.iter().find(|r| r["status"] == 502).unwrap();
    assert_eq!(failed["request_id"], "ops:trace-1");
    assert_eq!(failed["error"], "ConnectRefused");
    assert!(!log.contains(good.as_str()) && !log.contains(SECRET));
}

/// A config whose access log goes to `access.log` (beside the config) as JSON.
fn file_config(origin: SocketAddr, destination: &str) -> String {
    config(
        origin,
        &[&format!(
            "access_log: {{ format: json, destination: {destination}, flush_interval_ms: 10 }}"
        )],
    )
}

/// The JSON records in `path`, each line parsed.
fn records_in(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_file_destination_is_reopened_on_sigusr1_after_logrotate_renames_it() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = start_with_log(
        &dir,
        &file_config(origin.addr, "access.log"),
        &k.yaml,
        "info",
    );
    let (live, rotated) = (dir.path("access.log"), dir.path("access.log.1"));
    gw.wait_log(
        &format!(
            "access log (json) written to {}; SIGUSR1 reopens it",
            live.display()
        ),
        1,
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&live).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "created {mode:o}, not within 0640");

    assert_eq!(get(gw.addr, "/public/before", &[]).status(), 200);
    eventually(
        "the first line in the file",
        Duration::from_secs(10),
        || (records_in(&live).len() == 1).then_some(()),
    );
    // logrotate: rename, then SIGUSR1 (its postrotate); lines keep going to the renamed
    // file until keygate reopens.
    std::fs::rename(&live, &rotated).unwrap();
    gw.signal("USR1");
    gw.wait_log("access log reopened", 1);
    assert_eq!(get(gw.addr, "/public/after", &[]).status(), 200);
    eventually(
        "the second line in the new file",
        Duration::from_secs(10),
        || (records_in(&live).len() == 1).then_some(()),
    );
    gw.signal("USR1");
    gw.wait_log("access log reopened", 2);
    assert_eq!(get(gw.addr, "/public/again", &[]).status(), 200);
    gw.stop();
    let old = records_in(&rotated);
    let new = records_in(&live);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["path"], "/public/before");
    // A reopen of a file that was not renamed appends to it.
    let paths: Vec<&str> = new.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(paths, ["/public/after", "/public/again"]);
    let log = gw.log();
    assert!(
        access_lines(&log).is_empty(),
        "access lines on stderr:\n{log}"
    );
}

#[test]
fn an_access_log_that_cannot_be_opened_stops_the_start() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let addr = free_addr();
    let cfg = file_config(origin.addr, "missing/access.log").replace("{listen}", &addr.to_string());
    let cfg = dir.write("keygate.yaml", &cfg);
    dir.write("keys.yaml", &k.yaml);
    let out = keygate()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("KEYGATE_SHARED_SECRET", SECRET)
        .output()
        .unwrap();
    let (_, err) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to start: cannot open the access log")
            && err.contains(
                "missing/access.log (server.access_log.destination): No such file or directory"
            ),
        "{err}"
    );
}

#[test]
fn an_origin_rejecting_the_secret_is_warned_about_once_for_a_burst() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = start_with_log(&dir, &config(origin.addr, &[]), &k.yaml, "info");
    origin.set_secret("what-the-origin-expects-instead");
    let mut c = Client::connect(gw.addr);
    for _ in 0..20 {
        assert_eq!(
            c.get("/v1", &[("x-api-key", &k.plain["good"])]).status(),
            401
        );
    }
    // Anonymous requests the origin rejects are not keygate's secret's fault.
    assert_eq!(get(gw.addr, "/public/x", &[]).status(), 401);
    gw.stop();
    let log = gw.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("to an authenticated request"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("WARN  keygate::upstream: upstream `origin` answered 401 to an authenticated request (route api): does the origin accept keygate's shared secret (sent in `x-shared-secret`)?"),
        "{log}"
    );
    assert_eq!(access_lines(&log).len(), 21, "{log}");
    assert!(!log.contains(SECRET), "{log}");
}
