//! Unit tests for `state`.

use super::*;
use crate::config::{Config, ConfigError, KeysFile, SecretSource};
use crate::timestamp;
use std::path::Path;

pub(crate) const CONFIG: &str = r#"
secret: { env: KG_UNUSED }
auth: { keys_file: keys.yaml }
upstreams:
  origin: { address: "127.0.0.1:8000" }
routes:
  - { name: admin, path_prefix: /admin, upstream: origin, auth: required }
  - { name: public, path_prefix: /public, upstream: origin, auth: none }
  - { name: api, path_prefix: /, upstream: origin, auth: required }
"#;

fn keys_yaml() -> String {
    format!(
        r#"
consumers:
  - id: acme
    name: ACME Corp
    routes: [api]
    keys:
      - {{ id: acme-1, sha256: "{}" }}
      - {{ id: acme-old, sha256: "{}", expires_at: 2020-01-01T00:00:00Z }}
  - id: off
    disabled: true
    keys:
      - {{ id: off-1, sha256: "{}" }}
"#,
        hex::encode(crate::apikey::digest(b"key-one")),
        hex::encode(crate::apikey::digest(b"key-old")),
        hex::encode(crate::apikey::digest(b"key-off")),
    )
}

fn build_from(config: &str, keys: &str) -> Result<State, ConfigError> {
    crate::fixture::build(config, keys)
}

#[test]
fn builds_and_counts() {
    let s = build_from(CONFIG, &keys_yaml()).unwrap();
    assert_eq!(s.routes.len(), 3);
    assert_eq!(s.keys.len(), 3);
    let c = s.key_counts(timestamp::now_unix());
    assert_eq!(
        c,
        KeyCounts {
            active: 1,
            expired: 1,
            disabled: 1
        }
    );
    let (idx, e) = s.keys.lookup(&crate::apikey::digest(b"key-one")).unwrap();
    assert_eq!(s.keys.id(idx), "acme-1");
    assert_eq!(s.keys.id_header(idx).unwrap(), "acme-1");
    assert_eq!(s.consumers[e.consumer as usize].id, "acme");
    assert!(s.keys.lookup(&crate::apikey::digest(b"nope")).is_none());
}

#[test]
fn route_matching_respects_segments_and_order() {
    let s = build_from(CONFIG, &keys_yaml()).unwrap();
    assert_eq!(s.route(b"x", b"/admin"), Some(0));
    assert_eq!(s.route(b"x", b"/admin/users"), Some(0));
    assert_eq!(s.route(b"x", b"/adminx"), Some(2));
    assert_eq!(s.route(b"x", b"/public/a"), Some(1));
    assert_eq!(s.route(b"x", b"/"), Some(2));
    assert!(s.consumers[0].may_use(2));
    assert!(!s.consumers[0].may_use(0));
    assert!(s.consumers[1].may_use(0));
}

#[test]
fn every_problem_is_reported_with_file_and_field() {
    let config = CONFIG.replace(
        "upstream: origin, auth: none",
        "upstream: nowhere, auth: none",
    );
    let keys = format!(
            "{}  - id: acme\n    keys:\n      - {{ id: acme-1, sha256: \"zz\" }}\n      - {{ id: dup, sha256: \"{}\" }}\n      - {{ id: when, sha256: \"{}\", expires_at: tomorrow }}\n",
            keys_yaml(),
            hex::encode(crate::apikey::digest(b"key-one")),
            hex::encode(crate::apikey::digest(b"key-x")),
        );
    let err = build_from(&config, &keys).unwrap_err();
    let s = err.to_string();
    // Each problem found while building carries the line and column of the field it
    // names, looked up in the file it came from.
    for want in [
            "keygate.yaml:8:53: routes[1].upstream: unknown upstream `nowhere`",
            "keys.yaml:13:9: consumers[2].id: consumer `acme` is defined twice",
            "keys.yaml:15:15: consumers[2].keys[0].id: key id `acme-1` is used twice",
            "keys.yaml:15:31: consumers[2].keys[0].sha256: must be 64 hex characters",
            "keys.yaml:16:28: consumers[2].keys[1].sha256: the same key digest is already used by key `acme-1`",
            "keys.yaml:17:109: consumers[2].keys[2].expires_at: `tomorrow` is not an RFC 3339",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
    // Digests never appear in messages.
    assert!(!s.contains(&hex::encode(crate::apikey::digest(b"key-one"))));
}

#[test]
fn unknown_route_in_allow_list_and_bad_ids() {
    let keys = "consumers:\n  - id: \"bad id\"\n    routes: [nope]\n    keys: []\n";
    let s = build_from(CONFIG, keys).unwrap_err().to_string();
    assert!(s.contains("consumers[0].id: ids may contain only"), "{s}");
    assert!(
        s.contains("consumers[0].routes[0]: unknown route `nope`"),
        "{s}"
    );
}

#[test]
fn secret_must_be_present_and_printable() {
    let c = Config::from_yaml(CONFIG, Path::new("keygate.yaml")).unwrap();
    let err = build(
        Inputs {
            config: &c,
            config_path: Path::new("keygate.yaml"),
            keys_path: Path::new("keys.yaml"),
            secret: b"has space",
            metrics: None,
        },
        &KeysFile::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("secret"), "{err}");
    assert!(!err.contains("has space"), "secret leaked: {err}");
    let err = read_secret(
        &SecretSource::Env("KG_SURELY_UNSET_VAR".into()),
        Path::new("keygate.yaml"),
        "secret",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("secret.env: environment variable KG_SURELY_UNSET_VAR is not set"),
        "{err}"
    );
    let err = read_secret(
        &SecretSource::File("/nonexistent/secret".into()),
        Path::new("keygate.yaml"),
        "secret",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("secret.file: cannot read secret file /nonexistent/secret"),
        "{err}"
    );
}

#[test]
fn tls_upstream_defaults_sni_to_host() {
    let config = CONFIG.replace(
        r#"origin: { address: "127.0.0.1:8000" }"#,
        r#"origin: { address: "localhost:8443", tls: true }"#,
    );
    let s = build_from(&config, &keys_yaml()).unwrap();
    assert_eq!(s.upstreams[0].peer.sni, "localhost");
}

/// A folder of its own under the system's temporary folder, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kg-state-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_load_reports_both_files_in_order_and_caps_the_list() {
    let dir = TempDir::new();
    let secret = SecretSource::File(dir.write("secret", "a-secret-of-32-characters-000000"));
    // keygate.yaml does not parse (two problems); its keys file is checked all the same.
    let cfg = dir.write(
        "keygate.yaml",
        &CONFIG
            .replace("auth: none }", "auth: nope }")
            .replace("upstreams:", "upstream:"),
    );
    let mut keys = String::from("consumers:\n");
    for i in 0..250 {
        keys.push_str(&format!("  - id: \"bad id {i}\"\n"));
    }
    dir.write("keys.yaml", &keys);
    let err = load_with_secret(&cfg, None, Some(&secret)).unwrap_err();
    let ConfigError::Invalid(list) = err else {
        panic!("{err}")
    };
    assert_eq!(list.len(), 201);
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert!(
        shown[0].contains("keygate.yaml:2:1: missing field `upstreams`"),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].contains("keygate.yaml:4:1: unknown field `upstream`"),
        "{}",
        shown[1]
    );
    assert!(
        shown[2].contains("keygate.yaml:8:67: routes[1].auth: unknown variant `nope`"),
        "{}",
        shown[2]
    );
    assert!(
        shown[3].contains("keys.yaml:2:9: consumers[0].id: ids may contain only"),
        "{}",
        shown[3]
    );
    assert!(
        shown[199].contains("keys.yaml:198:9: consumers[196].id"),
        "{}",
        shown[199]
    );
    assert!(
        shown[200].ends_with("keys.yaml: and 53 more problems"),
        "{}",
        shown[200]
    );
}
