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

    // Semantic problems in the keys file are all reported, by field, with the line and
    // column of the field.
    let cfg = dir.write("keygate.yaml", &checked_config().yaml());
    dir.write(
        "keys.yaml",
        &format!("{}  - id: acme\n    routes: [nope]\n    keys: []\n", k.yaml),
    );
    let line = k.yaml.lines().count() + 1;
    let out = keygate_with_config(&["check"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "keys.yaml:{line}:9: consumers[3].id: consumer `acme` is defined twice"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "keys.yaml:{}:14: consumers[3].routes[0]: unknown route `nope`",
            line + 1
        )),
        "{err}"
    );
}

#[test]
fn check_reports_the_problems_of_both_files_at_once() {
    let dir = TestDir::new();
    let k = keys();
    // Two schema problems in keygate.yaml (routes[1] on line 14, routes[2] on line 15)...
    let mut routes = STANDARD_ROUTES;
    routes[1] = "name: maybe, path_prefix: /maybe, upstream: origin, auth: requird";
    routes[2] = "name: admin, path_prefix: /admin, upstream: origin, auth: required, strip: 1";
    let cfg = dir.write("keygate.yaml", &checked_config().routes(&routes).yaml());
    // ... and a semantic one in the keys file, checked all the same.
    dir.write("keys.yaml", &format!("{}  - id: ops\n", k.yaml));
    let out = keygate_with_config(&["check"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let line = k.yaml.lines().count() + 1;
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("3 problems in configuration")),
        "{err}"
    );
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| l.contains(want))
            .unwrap_or_else(|| panic!("missing {want:?} in:\n{err}"))
    };
    let first = at("keygate.yaml:14:65: routes[1].auth: unknown variant `requird`, expected one of `required`, `optional`, `none`");
    let second = at("keygate.yaml:15:75: routes[2]: unknown field `strip`");
    let third = at(&format!(
        "keys.yaml:{line}:9: consumers[3].id: consumer `ops` is defined twice"
    ));
    assert!(first < second && second < third, "{err}");
}

#[test]
fn addresses_with_a_scheme_are_refused_with_the_address_to_write() {
    let dir = TestDir::new();
    let k = keys();
    dir.write("keys.yaml", &k.yaml);
    let yaml = checked_config()
        .yaml()
        .replace(
            "address: \"127.0.0.1:9\"",
            "address: \"https://127.0.0.1:9\"",
        )
        .replace(
            "listen: [\"127.0.0.1:1\"]",
            "listen: [\"http://127.0.0.1:1\"]",
        );
    let cfg = dir.write("keygate.yaml", &yaml);
    let out = keygate_with_config(&["check"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams.origin.address: `https://127.0.0.1:9` has a scheme, but addresses take none: write `127.0.0.1:9` and `tls: true`"),
        "{err}"
    );
    assert!(
        err.contains("server.listen[0]: `http://127.0.0.1:1` has a scheme, but addresses take none: write `127.0.0.1:1`"),
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

#[test]
fn test_configs_read_the_same_as_with_serde_yaml() {
    // keygate reads its files with its own YAML reader; every config the tests use
    // means what it meant with serde_yaml, field by field.
    let origin = "127.0.0.1:9".parse().unwrap();
    let listen = "127.0.0.1:1".parse().unwrap();
    let configs = [
        GatewayConfig::new(origin),
        GatewayConfig::new(origin)
            .server("access_log: { flush_interval_ms: 600000 }")
            .server("client_header_timeout_seconds: 2\ngrace_period_seconds: 1")
            .server("trusted_proxies: [\"127.0.0.1/32\"]")
            .auth("brute_force: { max_failures: 3, window_seconds: 3600 }")
            .upstream("tls: true, sni: localhost, ca_file: origin-ca.pem")
            .extra_upstream(
                "dead",
                "address: \"127.0.0.1:9\", case_insensitive_paths: true",
            )
            .metrics(listen)
            .threads(2),
        GatewayConfig::new(origin)
            .secret_file("secret.txt")
            .routes(&["name: api, host: gateway.test, upstream: origin, auth: optional"]),
    ];
    for config in configs {
        let yaml = config.listen(listen).yaml();
        let ours = keygate::config::Config::from_yaml(&yaml, std::path::Path::new("k")).unwrap();
        let theirs: keygate::config::Config = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{yaml}");
    }
    let k = keys();
    let ours = keygate::config::KeysFile::from_yaml(&k.yaml, std::path::Path::new("k")).unwrap();
    let theirs: keygate::config::KeysFile = serde_yaml::from_str(&k.yaml).unwrap();
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));

    // Every later feature's fields: several servers, health checks (statuses as numbers
    // and as quoted ranges), route methods, rewrites, timeouts, CORS, limits, scopes.
    let full = format!(
        "{}upstreams:\n  pool:\n    servers: [{{ address: \"127.0.0.1:9\", weight: 2 }}, {{ address: \"127.0.0.1:10\" }}]\n    balance: least_connections\n    health_check: {{ path: /healthz, interval_ms: 500, timeout_ms: 200, healthy_threshold: 1, unhealthy_threshold: 2, healthy_statuses: [204, \"200-299\"] }}\n    eject_after_connect_failures: 0\n    eject_seconds: 5\nroutes:\n  - name: v1\n    path_prefix: /v1\n    upstream: pool\n    auth: required\n    methods: [GET, POST]\n    strip_prefix: true\n    connect_timeout_ms: 100\n    read_timeout_ms: 900\n    max_request_body_bytes: 1024\n    scopes: [\"orders:read\"]\n    default_rate_limit: {{ requests: 10, window_seconds: 1 }}\n    default_quota: {{ requests: 100, period: month }}\n    cors: {{ allow_origins: [\"https://app.example.com\"], allow_methods: [GET], expose_headers: [x-total-count], max_age_seconds: 600, allow_credentials: true }}\n",
        "secret: { env: KG_SECRET }\nauth: { keys_file: keys.yaml, key_expiry_warning_seconds: 0, deprecation_link: \"https://docs.example.com/keys\" }\nserver: { listen: [\"127.0.0.1:1\"], admin_listen: \"127.0.0.1:2\", admin_token: { env: KG_ADMIN } }\n"
    );
    let ours = keygate::config::Config::from_yaml(&full, std::path::Path::new("k")).unwrap();
    let theirs: keygate::config::Config = serde_yaml::from_str(&full).unwrap();
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{full}");
    let keys_full = "consumers:\n  - id: acme\n    custom_id: \"crm-42\"\n    groups: [gold, \"beta testers\"]\n    methods: [GET]\n    scopes: [\"orders:read\", \"orders:write\"]\n    rate_limit: { requests: 100, window_seconds: 60 }\n    quota: { requests: 100000, period: day }\n    routes: [v1]\n    keys:\n      - { id: acme-1, sha256: \"ab\", not_before: \"2026-01-01T00:00:00Z\", expires_at: \"2027-01-01T00:00:00+02:00\", scopes: [\"orders:read\"], rate_limit: { requests: 5, window_seconds: 1 }, quota: { requests: 9, period: month }, methods: [GET], routes: [v1], disabled: false }\n";
    let ours = keygate::config::KeysFile::from_yaml(keys_full, std::path::Path::new("k")).unwrap();
    let theirs: keygate::config::KeysFile = serde_yaml::from_str(keys_full).unwrap();
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    // And the shipped examples.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, is_keys) in [("conf/keygate.yaml", false), ("conf/keys.yaml", true)] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let (ours, theirs) = if is_keys {
            (
                format!(
                    "{:?}",
                    keygate::config::KeysFile::from_yaml(&text, root).unwrap()
                ),
                format!(
                    "{:?}",
                    serde_yaml::from_str::<keygate::config::KeysFile>(&text).unwrap()
                ),
            )
        } else {
            (
                format!(
                    "{:?}",
                    keygate::config::Config::from_yaml(&text, root).unwrap()
                ),
                format!(
                    "{:?}",
                    serde_yaml::from_str::<keygate::config::Config>(&text).unwrap()
                ),
            )
        };
        assert_eq!(ours, theirs, "{file}");
    }
}

#[test]
fn keys_files_without_their_consumers_list_are_refused() {
    // A file cut after its leading comments, or before its list, must never read as "no
    // keys" (a reload would drop every key): every form of a missing list is refused.
    let dir = TestDir::new();
    let cfg = dir.write("keygate.yaml", &checked_config().yaml());
    for (text, says) in [
        ("", "the keys file is empty"),
        (
            "# keys for production\n# (cut here)\n",
            "no `consumers` list",
        ),
        ("---\n", "no `consumers` list"),
        ("consumers:\n", "no `consumers` list"),
        ("{}\n", "no `consumers` list"),
        ("consumers: null\n", "expected a sequence"),
    ] {
        dir.write("keys.yaml", text);
        let out = keygate_with_config(&["check"], &cfg);
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{text:?}: {stderr}");
        assert!(stderr.contains(says), "{text:?}: {stderr}");
    }
    for text in ["consumers: []\n", "{\"consumers\": []}\n"] {
        dir.write("keys.yaml", text);
        let out = keygate_with_config(&["check"], &cfg);
        assert!(out.status.success(), "{text:?}: {}", texts(&out).1);
    }
}

#[test]
fn unreadable_secrets_and_keys_files_are_listed_with_the_other_problems() {
    let dir = TestDir::new();
    let mut routes = STANDARD_ROUTES;
    routes[1] = "name: maybe, path_prefix: /maybe, upstream: nowhere, auth: optional";
    let yaml = checked_config()
        .routes(&routes)
        .yaml()
        .replace("keys_file: keys.yaml", "keys_file: missing-keys.yaml");
    let cfg = dir.write("keygate.yaml", &yaml);
    // No KEYGATE_SHARED_SECRET in the environment.
    let out = keygate()
        .args(["check", "--config"])
        .arg(&cfg)
        .env_remove("KEYGATE_SHARED_SECRET")
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("3 problems in configuration"), "{stderr}");
    for want in [
        "secret.env: environment variable KEYGATE_SHARED_SECRET is not set",
        "auth.keys_file: cannot read the keys file",
        "routes[1].upstream: unknown upstream `nowhere`",
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("missing {want:?} in:\n{stderr}"));
        // Each with its line and column in keygate.yaml.
        assert!(line.contains("keygate.yaml:"), "{line}");
        let rest = line.split("keygate.yaml:").nth(1).unwrap();
        assert!(
            rest.split(':').next().unwrap().parse::<usize>().is_ok(),
            "{line}"
        );
    }
}

#[test]
fn a_keys_file_with_many_broken_consumers_lists_the_first_and_counts_all() {
    let dir = TestDir::new();
    let cfg = dir.write("keygate.yaml", &checked_config().yaml());
    // 1,500 consumers whose key digest is not hex, in a one-line JSON file.
    let consumers: Vec<String> = (0..1500)
        .map(|i| format!("{{\"id\":\"c{i}\",\"keys\":[{{\"id\":\"k{i}\",\"sha256\":\"zz\"}}]}}"))
        .collect();
    let json = format!("{{\"consumers\":[{}]}}\n", consumers.join(","));
    dir.write("keys.yaml", &json);
    let out = keygate_with_config(&["check"], &cfg);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1500 problems in configuration"),
        "{stderr}"
    );
    assert!(stderr.contains("and 1300 more problems"), "{stderr}");
    // A semantic problem in a JSON file is located at its consumer's `{`.
    let col = json.find("{\"id\":\"c1\"").unwrap() + 1;
    assert!(
        stderr.contains(&format!(
            "keys.yaml:1:{col}: consumers[1].keys[0].sha256: must be 64 hex characters"
        )),
        "{stderr}"
    );
}

#[test]
fn one_upstream_server_spelled_twice_or_on_port_0_is_refused() {
    let dir = TestDir::new();
    let k = keys();
    dir.write("keys.yaml", &k.yaml);
    let yaml = checked_config()
        .servers(&[
            ("127.0.0.1:9".parse().unwrap(), 1),
            ("127.0.0.1:10".parse().unwrap(), 1),
        ])
        .yaml()
        .replace("address: \"127.0.0.1:10\"", "address: \"localhost:9\"");
    let cfg = dir.write("keygate.yaml", &yaml);
    let out = keygate_with_config(&["check"], &cfg);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{yaml}\n{stderr}");
    assert!(
        stderr.contains("`localhost:9` is the same server as `127.0.0.1:9`"),
        "{stderr}"
    );
    let yaml = checked_config()
        .yaml()
        .replace("127.0.0.1:9", "127.0.0.1:0");
    let cfg = dir.write("keygate.yaml", &yaml);
    let out = keygate_with_config(&["check"], &cfg);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("port 0 is not a server's port"), "{stderr}");
}

/// The documents of a multi-document YAML file in `deploy/`.
fn deploy_documents(file: &str) -> Vec<serde_yaml::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_kubernetes_manifests_hold_a_configuration_that_checks_and_mounts_that_match() {
    let maps = deploy_documents("deploy/kubernetes/configmap.yaml");
    let data = |name: &str, key: &str| -> String {
        maps.iter()
            .find(|m| m["metadata"]["name"].as_str() == Some(name))
            .and_then(|m| m["data"][key].as_str())
            .unwrap_or_else(|| panic!("{name}/{key} missing"))
            .to_string()
    };
    let config = data("keygate-config", "keygate.yaml");
    let keys = data("keygate-keys", "keys.yaml");
    let deployment = &deploy_documents("deploy/kubernetes/deployment.yaml")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    // Every file the configuration names lives under a mounted volume.
    for path in [
        "/etc/keygate/keys/keys.yaml",
        "/etc/keygate/secrets/shared-secret",
        "/etc/keygate/secrets/redis-password",
    ] {
        assert!(config.contains(path), "{path} not in the ConfigMap");
        assert!(
            mounts.iter().any(|m| path.starts_with(&format!("{m}/"))),
            "{path} is not under a mount: {mounts:?}"
        );
    }
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        ["run", "--config", "/etc/keygate/config/keygate.yaml"]
    );
    // Kubernetes waits long enough for the preStop pause and keygate's own grace period.
    let grace: u64 = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("grace_period_seconds: "))
        .unwrap()
        .parse()
        .unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination >= grace + 5,
        "{termination} < {grace} + preStop"
    );
    // Probes go to /healthz on the metrics port, bound to the pod address.
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(config.contains("metrics_listen: \"0.0.0.0:9464\""));

    // The configuration itself checks, with this machine's paths and addresses for the
    // cluster's.
    let dir = TestDir::new();
    dir.write("keys.yaml", &keys);
    dir.write("shared-secret", SECRET);
    dir.write("redis-password", "redis-password-for-the-test");
    let local = config
        .replace("/etc/keygate/keys/keys.yaml", "keys.yaml")
        .replace("/etc/keygate/secrets/", "")
        .replace("orders-api.default.svc.cluster.local:8000", "127.0.0.1:9")
        .replace("redis.default.svc.cluster.local", "127.0.0.1");
    let cfg = dir.write("keygate.yaml", &local);
    let out = keygate()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{local}\n{stdout}{stderr}");
    assert!(
        stdout.contains("ok: 1 route, 1 upstream, 1 consumer"),
        "{stdout}"
    );
}
