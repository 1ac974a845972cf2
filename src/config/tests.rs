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

#[test]
fn three_broken_fields_are_all_reported_with_their_lines() {
    let text = "\
secret: { env: KG_TEST_SECRET }
auth: { keys_file: keys.yaml }
upstreams:
  origin:
    adress: 127.0.0.1:8000
routes:
  - { name: api, upstream: origin, auth: required }
  - { name: maybe, upstream: origin, auth: requird }
server:
  threads: two
";
    let err = Config::from_yaml(text, Path::new("conf/keygate.yaml")).unwrap_err();
    let lines: Vec<String> = err.to_string().lines().map(String::from).collect();
    assert_eq!(
        lines,
        [
            "3 problems in configuration",
            "  conf/keygate.yaml:5:5: upstreams.origin: unknown field `adress`, expected one of `address`, `servers`, `balance`, `health_check`, `eject_after_connect_failures`, `eject_seconds`, `tls`, `sni`, `ca_file`, `host_header`, `connect_timeout_ms`, `read_timeout_ms`, `case_insensitive_paths`",
            "  conf/keygate.yaml:8:44: routes[1].auth: unknown variant `requird`, expected one of `required`, `optional`, `none`",
            "  conf/keygate.yaml:10:12: server.threads: invalid type: string \"two\", expected usize",
        ]
    );
}

#[test]
fn every_broken_consumer_is_reported_in_yaml_and_in_json() {
    let yaml = "consumers:\n  - id: a\n    colour: red\n  - id: b\n  - id: c\n    keys: [{ id: k, sha: x }]\n";
    let mut ok = Vec::new();
    let err = for_each_consumer(yaml, Path::new("keys.yaml"), &mut |i, c| {
        ok.push((i, c.id.clone()))
    })
    .unwrap_err()
    .to_string();
    assert_eq!(
        ok,
        [(1, "b".to_string())],
        "the good consumer is still read"
    );
    assert!(
        err.contains("keys.yaml:3:5: consumers[0]: unknown field `colour`"),
        "{err}"
    );
    assert!(
        err.contains("keys.yaml:6:21: consumers[2].keys[0]: unknown field `sha`"),
        "{err}"
    );
    assert!(
        err.contains("keys.yaml:6:12: consumers[2].keys[0]: missing field `sha256`"),
        "{err}"
    );

    let json = "{\"consumers\": [\n  {\"id\": \"a\", \"colour\": 1},\n  {\"id\": \"b\"},\n  {\"id\": 3}\n]}\n";
    let mut ok = Vec::new();
    let err = for_each_consumer(json, Path::new("keys.json"), &mut |i, c| {
        ok.push((i, c.id.clone()))
    })
    .unwrap_err()
    .to_string();
    assert_eq!(ok, [(1, "b".to_string())]);
    assert!(
        err.contains("keys.json:2:22: consumers[0]: unknown field `colour`"),
        "{err}"
    );
    assert!(
        err.contains("keys.json:4:10: consumers[2]: invalid type: integer `3`"),
        "{err}"
    );
}

#[test]
fn json_outline_errors_keep_serde_json_messages_and_positions() {
    let bad = |text: &str| {
        for_each_consumer(text, Path::new("k.json"), &mut |_, _| {})
            .unwrap_err()
            .to_string()
    };
    let e = bad("{\"consumers\": [], \"extra\": 1}");
    assert!(
        e.contains("k.json:1:26: unknown field `extra`, expected `consumers`"),
        "{e}"
    );
    let e = bad("{\"consumers\": [{\"id\": \"a\"}]} x");
    assert!(e.contains("k.json:1:30: trailing characters"), "{e}");
    let e = bad("{\"consumers\": [{\"id\": \"a\"}, {\"id\": \"b\"");
    assert!(e.contains("EOF while parsing"), "{e}");
    let e = bad("{\"consumers\": [{\"id\": \"a\"}], \"consumers\": []}");
    assert!(e.contains("duplicate field `consumers`"), "{e}");
    // A syntax error before any consumer: flow-style YAML, read as YAML.
    let mut n = 0;
    for_each_consumer(
        "{\"consumers\": [{id: a}, {id: b}]}",
        Path::new("k"),
        &mut |_, _| n += 1,
    )
    .unwrap();
    assert_eq!(n, 2);
    // An empty text has no consumers; the same text on disk is refused.
    for_each_consumer("  \n", Path::new("k"), &mut |_, _| panic!("no consumers")).unwrap();
}

/// A file of its own under the system's temporary folder, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &[u8]) -> TempFile {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("kg-config-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn keys_files_stream_from_disk_and_blank_or_broken_ones_are_refused() {
    for (name, text) in [
        ("keys.yaml", "consumers:\n  - id: a\n  - id: b\n".as_bytes()),
        ("keys.json", br#"{"consumers": [{"id": "a"}, {"id": "b"}]}"#),
    ] {
        let f = TempFile::new(name, text);
        let mut ids = Vec::new();
        stream_consumers(&f.0, &mut |_, c| ids.push(c.id.clone())).unwrap();
        assert_eq!(ids, ["a", "b"], "{name}");
    }
    let blank = TempFile::new("blank.yaml", b" \n\n");
    let e = stream_consumers(&blank.0, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("the keys file is empty"), "{e}");
    let latin1 = TempFile::new("latin1.yaml", b"consumers:\n  - id: caf\xe9\n");
    let e = stream_consumers(&latin1.0, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert!(e.to_string().contains("valid UTF-8"), "{e}");
    let e = stream_consumers(Path::new("/nonexistent/keys.yaml"), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn problems_found_later_are_located_in_the_text() {
    let text = "consumers:\n  - id: a\n    keys:\n      - { id: k1, sha256: zz }\n";
    let mut problems = vec![
        Problem {
            at: Location {
                file: "keys.yaml".into(),
                line_col: None,
                field: "consumers[0].keys[0].sha256".into(),
            },
            message: "bad digest".into(),
        },
        Problem {
            at: Location {
                file: "other.yaml".into(),
                line_col: None,
                field: "consumers[0].id".into(),
            },
            message: "not this file".into(),
        },
    ];
    locate_in_text(text, Path::new("keys.yaml"), &mut problems);
    assert_eq!(problems[0].at.line_col, Some((4, 27)));
    assert_eq!(problems[1].at.line_col, None);
    let f = TempFile::new("keys.yaml", text.as_bytes());
    problems[0].at.line_col = None;
    problems[0].at.file = f.0.clone();
    locate_in_file(&f.0, &mut problems);
    assert_eq!(problems[0].at.line_col, Some((4, 27)));
}

#[test]
fn files_only_the_earlier_reader_accepted_still_load_with_a_warning() {
    // A quoted string continued on an unindented line is not YAML 1.2; libyaml took it.
    let text = MINIMAL.replace(
        "auth: { keys_file: keys.yaml }",
        "auth:\n  keys_file: \"keys\n.yaml\"",
    );
    let (c, warning) = parse_yaml_compat::<Config>(&text, Path::new("k.yaml")).unwrap();
    assert_eq!(c.auth.keys_file, Path::new("keys .yaml"));
    let warning = warning.unwrap();
    assert!(warning.starts_with("k.yaml:4:14: "), "{warning}");
    assert!(warning.contains("not valid YAML 1.2"), "{warning}");
    let (_, none) = parse_yaml_compat::<Config>(MINIMAL, Path::new("k.yaml")).unwrap();
    assert_eq!(none, None);
    // Invalid for both: the new reader's error, located.
    let err = Config::from_yaml("routes: [a\nb: c\n", Path::new("k.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 problem in configuration\n  k.yaml:2:"),
        "{err}"
    );

    // A keys file: the consumers before the place the new reader stops are handed over
    // once, the rest by the earlier reader.
    let keys = "consumers:\n  - id: a\n  - id: b\n    name: \"Bee\n  Corp\"#note\n  - id: c\n";
    let f = TempFile::new("keys.yaml", keys.as_bytes());
    let mut ids = Vec::new();
    let streamed = stream_consumers(&f.0, &mut |i, c| ids.push((i, c.id.clone()))).unwrap();
    assert_eq!(ids, [(0, "a".into()), (1, "b".into()), (2, "c".into())]);
    // The digest is of the whole file, whichever reader finished it.
    assert_eq!(streamed.sha256, sha2_of(keys.as_bytes()));
    let warning = streamed.warning.unwrap();
    assert!(warning.contains("keys.yaml:4:11: "), "{warning}");
}

/// SHA-256 of `bytes`, computed in one piece (the reference for streamed digests).
fn sha2_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[test]
fn streaming_a_keys_file_hashes_every_byte_once_whichever_reader_reads_it() {
    // JSON (fast path, several 64 KiB chunks), YAML (the JSON probe stops at once and
    // the YAML reader starts over), flow-style YAML starting with `{` (the JSON probe
    // reads some, then YAML starts over), and trailing whitespace after the JSON.
    let mut json = String::from("{\"consumers\": [");
    for i in 0..3000 {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "{{\"id\": \"c{i}\", \"keys\": [{{\"id\": \"k{i}\", \"sha256\": \"{:064x}\"}}]}}",
            i + 1
        ));
    }
    json.push_str("]}\n\n  \n");
    assert!(json.len() > 3 * 64 * 1024);
    let yaml = "consumers:\n  - id: a\n    keys: [ { id: a1, sha256: \"".to_string()
        + &"ab".repeat(32)
        + "\" } ]\n";
    let flow = "{consumers: [ {id: a} ]}\n".to_string();
    for (name, text, n) in [
        ("keys.json", &json, 3000),
        ("keys.yaml", &yaml, 1),
        ("flow.yaml", &flow, 1),
    ] {
        let f = TempFile::new(name, text.as_bytes());
        let mut count = 0;
        let streamed = stream_consumers(&f.0, &mut |_, _| count += 1).unwrap();
        assert_eq!(count, n, "{name}");
        assert_eq!(streamed.sha256, sha2_of(text.as_bytes()), "{name}");
    }
}
