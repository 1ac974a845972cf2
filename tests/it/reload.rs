//! SIGHUP reload through the real process.

use std::time::Duration;

use crate::harness::*;

#[test]
fn sighup_adds_and_removes_keys_and_a_broken_file_keeps_the_old_state() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let newkey = keygate::apikey::generate().unwrap();
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 401);

    // Add a key and drop acme-good.
    let added = k.yaml.replace(
        &format!(
            "      - {{ id: acme-good, sha256: \"{}\" }}\n",
            hex::encode(keygate::apikey::digest(k.plain["good"].as_bytes()))
        ),
        &format!(
            "      - {{ id: acme-new, sha256: \"{}\" }}\n",
            hex::encode(keygate::apikey::digest(newkey.as_bytes()))
        ),
    );
    assert_ne!(added, k.yaml);
    dir.write("keys.yaml", &added);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 200);
    assert_eq!(
        origin.last().header("x-credential-identifier").as_deref(),
        Some("acme-new")
    );
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        401
    );

    // A broken keys file is rejected whole: the previous keys keep working.
    dir.write(
        "keys.yaml",
        "consumers:\n  - id: acme\n    keys: [ { id: x, sha256: nothex } ]\n",
    );
    gw.sighup();
    gw.wait_log("configuration reload failed", 1);
    assert!(
        gw.log().contains("consumers[0].keys[0].sha256"),
        "{}",
        gw.log()
    );
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 200);

    // The next good reload succeeds.
    dir.write("keys.yaml", &k.yaml);
    gw.sighup();
    gw.wait_log("configuration reloaded", 2);
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &newkey)]).status(), 401);
}

#[test]
fn no_request_fails_during_many_reloads() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    // Two valid files that both keep the client's key: the first and a variant with one more key.
    let extra = keygate::apikey::generate().unwrap();
    let variant = format!(
        "{}  - id: extra\n    keys:\n      - {{ id: extra-1, sha256: \"{}\" }}\n",
        k.yaml,
        hex::encode(keygate::apikey::digest(extra.as_bytes()))
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let (addr, key) = (gw.addr, k.plain["good"].clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let r = c.get("/v1", &[("x-api-key", &key)]);
                    if r.status() == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    const RELOADS: usize = 30;
    for i in 0..RELOADS {
        dir.write("keys.yaml", if i % 2 == 0 { &variant } else { &k.yaml });
        gw.sighup();
        gw.wait_log("configuration reloaded", i + 1);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > RELOADS,
        "too few requests to prove anything"
    );
    // The final state is the last file's (the plain one: no `extra` key).
    assert_eq!(get(gw.addr, "/v1", &[("x-api-key", &extra)]).status(), 401);
}

#[test]
fn sighup_rotates_the_shared_secret() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw =
        Gateway::start_with_secret_file(&dir, &GatewayConfig::new(origin.addr), &k.yaml, SECRET);
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );

    let rotated = "rotated-secret-abcdefghijklmnop";
    dir.write("secret", &format!("{rotated}\n"));
    origin.set_secret(rotated);
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    assert_eq!(origin.last().all("x-shared-secret"), [rotated]);

    // An unreadable secret at reload: rejected, the rotated secret stays in use.
    std::fs::remove_file(dir.path("secret")).unwrap();
    gw.sighup();
    gw.wait_log("configuration reload failed", 1);
    assert!(
        gw.log().contains("secret.file: cannot read secret file"),
        "{}",
        gw.log()
    );
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    assert_eq!(origin.last().all("x-shared-secret"), [rotated]);
    let log = gw.log();
    assert!(
        !log.contains(rotated) && !log.contains(SECRET),
        "secret in log"
    );
}

#[test]
fn restart_only_settings_are_kept_and_reported() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let three_threads = GatewayConfig::new(origin.addr).listen(gw.addr).threads(3);
    dir.write("keygate.yaml", &three_threads.yaml());
    gw.sighup();
    gw.wait_log("configuration reloaded", 1);
    assert!(
        gw.log()
            .contains("server.threads changed; this setting requires a restart"),
        "{}",
        gw.log()
    );
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let dir = TestDir::new();
    let origin = Origin::start_with(None, OriginMode::SlowMs(1500));
    let k = keys();
    let gw = Gateway::start(&dir, &config(origin.addr), &k.yaml);
    let (addr, key) = (gw.addr, k.plain["good"].clone());
    let inflight = std::thread::spawn(move || get(addr, "/v1", &[("x-api-key", &key)]));
    // Wait until the request is at the origin, then ask keygate to stop.
    eventually(
        "the request reaching the origin",
        Duration::from_secs(10),
        || (origin.count() > 0).then_some(()),
    );
    assert_eq!(origin.count(), 1);
    gw.signal("TERM");
    let r = inflight.join().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
}

#[test]
fn sighup_during_startup_does_not_kill_keygate() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let addr = free_addr();
    let cfg = dir.write(
        "keygate.yaml",
        &GatewayConfig::new(origin.addr).listen(addr).yaml(),
    );
    dir.write("keys.yaml", &k.yaml);
    let mut child = keygate()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("KEYGATE_SHARED_SECRET", SECRET)
        .stderr(std::process::Stdio::null())
        .spawn_guarded()
        .unwrap();
    // Signal while it is still starting, as an early `systemctl reload` would (the pauses
    // space the signals out over startup; nothing waits on them).
    std::thread::sleep(Duration::from_millis(30));
    let pid = child.id().to_string();
    for _ in 0..5 {
        let _ = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status();
        std::thread::sleep(Duration::from_millis(20));
    }
    eventually("keygate listening", Duration::from_secs(30), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "keygate died of an early SIGHUP"
        );
        std::net::TcpStream::connect(addr).map(drop)
    });
    assert_eq!(
        get(addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
}
