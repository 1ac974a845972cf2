//! The command line, run as operators run it.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

/// The standard config as `keygate check` sees it: nothing needs to listen or answer.
fn checked_config() -> GatewayConfig {
    GatewayConfig::new("127.0.0.1:9".parse().unwrap()).listen("127.0.0.1:1".parse().unwrap())
}

#[test]
fn check_accepts_a_good_config_and_summarises_it() {
    let dir = TestDir::new();
    let k = keys();
    let cfg = dir.write("keygate.yaml", &checked_config().yaml());
    dir.write("keys.yaml", &k.yaml);
    let out = keygate_with_config(&["check"], &cfg);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "ok: 4 routes, 1 upstream, 3 consumers, keys: 3 active, 1 expired, 2 disabled"
        ),
        "{stdout}"
    );
    // -t is the same as check.
    let out = keygate()
        .args(["-t", "-c"])
        .arg(&cfg)
        .env("KEYGATE_SHARED_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn check_names_file_line_and_field() {
    let dir = TestDir::new();
    let k = keys();
    // routes[1], on line 14, gets a field that does not exist.
    let mut routes = STANDARD_ROUTES;
    routes[1] = "name: maybe, path_prefix: /maybe, upstream: origin, auth: optional, strip: true";
    let cfg = dir.write("keygate.yaml", &checked_config().routes(&routes).yaml());
    dir.write("keys.yaml", &k.yaml);
    let out = keygate_with_config(&["check"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keygate.yaml:14:"), "{err}");
    assert!(err.contains("routes[1]: unknown field `strip`"), "{err}");

    // Semantic problems in the keys file are all reported, by field.
    let cfg = dir.write("keygate.yaml", &checked_config().yaml());
    dir.write(
        "keys.yaml",
        &format!("{}  - id: acme\n    routes: [nope]\n    keys: []\n", k.yaml),
    );
    let out = keygate_with_config(&["check"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keys.yaml: consumers[3].id: consumer `acme` is defined twice"),
        "{err}"
    );
    assert!(
        err.contains("keys.yaml: consumers[3].routes[0]: unknown route `nope`"),
        "{err}"
    );
}

#[test]
fn missing_secret_refuses_to_start() {
    let dir = TestDir::new();
    let k = keys();
    let cfg = dir.write(
        "keygate.yaml",
        &GatewayConfig::new("127.0.0.1:9".parse().unwrap())
            .listen(free_addr())
            .yaml(),
    );
    dir.write("keys.yaml", &k.yaml);
    let err = run_refused(&cfg, &[]);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(
        err.contains("secret.env: environment variable KEYGATE_SHARED_SECRET is not set"),
        "{err}"
    );
    let err = run_refused(&cfg, &[("KEYGATE_SHARED_SECRET", "")]);
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn secret_from_file_with_trailing_newline() {
    let dir = TestDir::new();
    let origin = Origin::start();
    let k = keys();
    let gw = Gateway::start_with_secret_file(
        &dir,
        &GatewayConfig::new(origin.addr),
        &k.yaml,
        &format!("{SECRET}\n"),
    );
    assert_eq!(
        get(gw.addr, "/v1", &[("x-api-key", &k.plain["good"])]).status(),
        200
    );
    assert_eq!(origin.last().all("x-shared-secret"), [SECRET]);
}

fn run_with_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = keygate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_output_round_trips_through_hash_and_the_gateway() {
    let (ok, out, err) = run_with_stdin(
        &["keygen", "--consumer", "newco", "--key-id", "newco-1"],
        "",
    );
    assert!(ok, "{err}");
    let key = out
        .lines()
        .find(|l| l.starts_with("kg_"))
        .expect("a key line")
        .to_string();
    assert_eq!(key.len(), keygate::apikey::KEY_LEN);
    let entry = out
        .split("already exists, add this entry under its `keys:`, then reload keygate:\n")
        .nth(1)
        .expect("a YAML entry");

    let (ok, digest, _) = run_with_stdin(&["hash"], &format!("{key}\n"));
    assert!(ok);
    let digest = digest.trim();
    assert!(entry.contains(digest), "{entry} vs {digest}");

    // Paste the entry into a keys file: the key works end to end.
    let dir = TestDir::new();
    let origin = Origin::start();
    let keys = format!("consumers:\n  - id: newco\n    keys:\n{entry}");
    let gw = Gateway::start(&dir, &config(origin.addr), &keys);
    let r = get(
        gw.addr,
        "/v1",
        &[("Authorization", &format!("Bearer {key}"))],
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(
        origin.last().header("x-credential-identifier").as_deref(),
        Some("newco-1")
    );
}

#[test]
fn demo_answers_200_with_the_key_and_401_without() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = TestDir::new();
    let stdout = dir.path("demo.out");
    let child = keygate()
        .args(["demo", "--listen", &listen])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .spawn_guarded()
        .unwrap();
    let addr = listen.parse().unwrap();
    // The demo prints its key, then listens.
    let key = eventually(
        "the demo printing a key and listening",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            let key = text
                .split_whitespace()
                .find(|w| w.starts_with("kg_") && w.len() == keygate::apikey::KEY_LEN);
            match key {
                Some(key) if std::net::TcpStream::connect(addr).is_ok() => Ok(key.to_string()),
                _ => Err(text),
            }
        },
    );
    let ok = get(
        addr,
        "/hello",
        &[("Authorization", &format!("Bearer {key}"))],
    );
    let denied = get(addr, "/hello", &[]);
    drop(child);
    assert_eq!(ok.status(), 200, "{}", ok.text());
    assert!(
        ok.text().contains("\"x-consumer-id\":\"demo\""),
        "{}",
        ok.text()
    );
    assert_eq!(denied.status(), 401);
    assert!(denied.text().contains("missing_api_key"));
}

#[test]
fn shipped_configs_check_ok_inside_and_outside_the_unit() {
    let dir = TestDir::new();
    let secret = dir.write("shared-secret", &format!("{SECRET}\n"));
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/keygate.yaml");
    // Outside the unit: the credential does not exist, and the error says what to do.
    let out = keygate().args(["check", "--config", cfg]).output().unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("secret.credential") && stderr.contains("--secret-file"),
        "{stderr}"
    );
    // ...and `--secret-file` checks it.
    let out = keygate()
        .args(["check", "--config", cfg, "--secret-file"])
        .arg(&secret)
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok: 1 route, 1 upstream, 1 consumer,"),
        "{stdout}"
    );
    // Inside the unit, systemd sets CREDENTIALS_DIRECTORY.
    let out = keygate()
        .args(["check", "--config", cfg])
        .env("CREDENTIALS_DIRECTORY", &dir.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    // The production keys file the package installs: valid, no consumer.
    dir.write(
        "keygate.yaml",
        &std::fs::read_to_string(cfg).unwrap().replace(
            "keys_file: keys.yaml",
            &format!(
                "keys_file: {}/packaging/keys.yaml",
                env!("CARGO_MANIFEST_DIR")
            ),
        ),
    );
    let out = keygate()
        .args(["check", "--config"])
        .arg(dir.path("keygate.yaml"))
        .env("CREDENTIALS_DIRECTORY", &dir.0)
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("0 consumers"), "{stdout}");
}

#[test]
fn keygen_appends_a_new_consumer_that_then_authenticates() {
    let dir = TestDir::new();
    let keys_path = dir.write("keys.yaml", "# production keys\nconsumers: []\n");
    let out = keygate()
        .args([
            "keygen",
            "--consumer",
            "newco",
            "--expires-at",
            "2020-01-01T00:00:00Z",
            "--append",
        ])
        .arg(&keys_path)
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    // A past expiry is said, not silently accepted.
    assert!(stderr.contains("in the past"), "{stderr}");
    // Now a usable one.
    let out = keygate()
        .args([
            "keygen",
            "--consumer",
            "newer",
            "--key-id",
            "newer-1",
            "--append",
        ])
        .arg(&keys_path)
        .output()
        .unwrap();
    let (stdout2, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("added consumer `newer`"), "{stderr}");
    let key = stdout2
        .lines()
        .find(|l| l.starts_with("kg_"))
        .expect("the key is printed once");
    assert!(stdout.lines().any(|l| l.starts_with("kg_")));
    let text = std::fs::read_to_string(&keys_path).unwrap();
    assert!(text.starts_with("# production keys\n"), "{text}");
    // The appended file is what the gateway loads.
    let origin = Origin::start();
    let gw = Gateway::start(&dir, &config(origin.addr), &text);
    let r = get(gw.addr, "/v1", &[("x-api-key", key)]);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(
        origin.last().header("x-credential-identifier").as_deref(),
        Some("newer-1")
    );
    // An existing consumer is not edited: the command says what to add.
    let out = keygate()
        .args(["keygen", "--consumer", "newer", "--append"])
        .arg(&keys_path)
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("was not changed"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&keys_path).unwrap(), text);
}
