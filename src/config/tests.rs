//! Unit tests for `config`.

use super::*;

const MINIMAL: &str = r#"
secret: { env: KG_TEST_SECRET }
auth: { keys_file: keys.yaml }
upstreams:
  origin: { address: "127.0.0.1:8000" }
routes:
  - { name: api, upstream: origin, auth: required }
"#;

#[test]
fn minimal_config_takes_documented_defaults() {
    let c = Config::from_yaml(MINIMAL, Path::new("k.yaml")).unwrap();
    assert_eq!(c.server.listen, vec![DEFAULT_LISTEN]);
    assert_eq!(c.server.threads, DEFAULT_THREADS);
    assert_eq!(c.server.metrics_listen, DEFAULT_METRICS_LISTEN);
    assert_eq!(c.secret.header, DEFAULT_SECRET_HEADER);
    assert_eq!(c.auth.sources, default_sources());
    let up = &c.upstreams["origin"];
    assert!(!up.tls);
    assert_eq!(up.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
    assert_eq!(up.read_timeout_ms, DEFAULT_READ_TIMEOUT_MS);
    assert_eq!(c.routes[0].path_prefix, "/");
    assert_eq!(c.routes[0].auth, AuthMode::Required);
}

#[test]
fn unknown_field_is_rejected_with_line_and_field() {
    let text = MINIMAL.replace("auth: required }", "auth: required, pathprefix: /x }");
    let err = Config::from_yaml(&text, Path::new("conf/k.yaml")).unwrap_err();
    let ConfigError::Invalid(problems) = &err else {
        panic!("{err}")
    };
    let p = &problems[0];
    assert_eq!(p.at.field, "routes[0]");
    assert_eq!(p.at.line_col.map(|l| l.0), Some(7));
    assert!(p.message.contains("unknown field `pathprefix`"), "{p}");
    assert!(err.to_string().contains("conf/k.yaml:7:"), "{err}");
}

#[test]
fn bad_auth_mode_names_the_field() {
    let text = MINIMAL.replace("auth: required", "auth: sometimes");
    let err = Config::from_yaml(&text, Path::new("k.yaml")).unwrap_err();
    let s = err.to_string();
    assert!(s.contains("routes[0].auth"), "{s}");
    assert!(s.contains("sometimes"), "{s}");
}

#[test]
fn keys_file_rejects_unknown_key_field() {
    let text = "consumers:\n  - id: a\n    keys:\n      - { id: k, sha256: x, expire: 1 }\n";
    let err = KeysFile::from_yaml(text, Path::new("keys.yaml")).unwrap_err();
    let s = err.to_string();
    assert!(s.contains("keys.yaml:4:"), "{s}");
    assert!(s.contains("consumers[0].keys[0]"), "{s}");
    assert!(s.contains("unknown field `expire`"), "{s}");
}

#[test]
fn relative_paths_resolve_against_config_folder() {
    let p = resolve_relative(
        Path::new("/etc/keygate/keygate.yaml"),
        Path::new("keys.yaml"),
    );
    assert_eq!(p, Path::new("/etc/keygate/keys.yaml"));
    let p = resolve_relative(Path::new("/etc/keygate/keygate.yaml"), Path::new("/k.yaml"));
    assert_eq!(p, Path::new("/k.yaml"));
}

#[test]
fn json_documents_take_the_fast_path_with_the_same_strictness() {
    let k = KeysFile::from_yaml(
        r#"{"consumers": [{"id": "a", "keys": [{"id": "k", "sha256": "00"}]}]}"#,
        Path::new("keys.json"),
    )
    .unwrap();
    assert_eq!(k.consumers[0].keys[0].id, "k");
    let err = KeysFile::from_yaml(
        "{\"consumers\": [{\"id\": \"a\",\n \"color\": 1}]}",
        Path::new("keys.json"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("keys.json:2:"), "{err}");
    assert!(err.contains("unknown field `color`"), "{err}");
    // Flow-style YAML that is not JSON still parses.
    let k = KeysFile::from_yaml("{consumers: [{id: a}]}", Path::new("k")).unwrap();
    assert_eq!(k.consumers[0].id, "a");
}

#[test]
fn streaming_consumers_match_the_whole_file_parse_and_locate_errors() {
    let text = "consumers:\n  - id: a\n    keys: [ { id: k1, sha256: x } ]\n  - id: b\n";
    let mut seen = Vec::new();
    for_each_consumer(text, Path::new("keys.yaml"), &mut |i, c| {
        seen.push((i, c.id.clone()))
    })
    .unwrap();
    assert_eq!(seen, [(0, "a".to_string()), (1, "b".to_string())]);
    let json = r#"{"consumers": [{"id": "a"}, {"id": "b", "keys": []}]}"#;
    let mut n = 0;
    for_each_consumer(json, Path::new("keys.json"), &mut |_, _| n += 1).unwrap();
    assert_eq!(n, 2);
    for_each_consumer("", Path::new("k"), &mut |_, _| panic!("no consumers")).unwrap();
    let bad =
        "consumers:\n  - id: a\n  - id: b\n    keys:\n      - { id: k, sha256: x, color: red }\n";
    let err = for_each_consumer(bad, Path::new("keys.yaml"), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("keys.yaml:5:"), "{err}");
    assert!(
        err.contains("consumers[1].keys[0]: unknown field `color`"),
        "{err}"
    );
    let err = for_each_consumer("consumer: []\n", Path::new("k"), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `consumer`"), "{err}");
}

#[test]
fn access_log_format_and_destination_are_strict_with_documented_defaults() {
    let c = Config::from_yaml(MINIMAL, Path::new("/etc/keygate/k.yaml")).unwrap();
    assert_eq!(c.server.access_log, AccessLogConfig::default());
    assert_eq!(c.server.access_log.format, AccessLogFormat::Text);
    assert_eq!(c.server.access_log.destination, "stderr");
    assert_eq!(
        c.server.access_log.file(Path::new("/etc/keygate/k.yaml")),
        None
    );

    let with = |access_log: &str| {
        Config::from_yaml(
            &format!("server:\n  access_log: {access_log}\n{MINIMAL}"),
            Path::new("/etc/keygate/k.yaml"),
        )
    };
    let c = with("{ format: json, destination: /var/log/keygate/access.log }").unwrap();
    assert_eq!(c.server.access_log.format, AccessLogFormat::Json);
    assert_eq!(
        c.server.access_log.file(Path::new("/etc/keygate/k.yaml")),
        Some(PathBuf::from("/var/log/keygate/access.log"))
    );
    assert_eq!(c.server.access_log.flush_interval_ms, 50);
    let c = with("{ destination: logs/access.log }").unwrap();
    assert_eq!(
        c.server.access_log.file(Path::new("/etc/keygate/k.yaml")),
        Some(PathBuf::from("/etc/keygate/logs/access.log"))
    );
    for (bad, says) in [
        ("{ format: JSON }", "unknown variant `JSON`"),
        ("{ format: yaml }", "unknown variant `yaml`"),
        ("{ destinaton: stderr }", "unknown field `destinaton`"),
    ] {
        let e = with(bad).unwrap_err().to_string();
        assert!(
            e.contains(says) && e.contains("server.access_log"),
            "{bad}: {e}"
        );
    }
}
