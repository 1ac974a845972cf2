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
            disabled: 1,
            pending: 0,
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
            previous: None,
            admin_token: None,
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
    assert_eq!(s.upstreams[0].servers[0].peer.sni, "localhost");
}

#[test]
fn access_fields_are_validated_whole() {
    let config = CONFIG.replace(
        "  - { name: admin, path_prefix: /admin, upstream: origin, auth: required }",
        "  - { name: admin, path_prefix: /admin, upstream: origin, auth: required, scopes: [\"ops:admin\", \"bad scope\"], default_rate_limit: { requests: 0, window_seconds: 90000 } }
  - { name: free, path_prefix: /free, upstream: origin, auth: optional, scopes: [x], consumer_limits: false, default_quota: { requests: 5, period: day } }",
    ) + "  # end\n";
    let config = config.replace(
        "auth: { keys_file: keys.yaml }",
        "auth: { keys_file: keys.yaml, deprecation_link: \"javascript:alert(1)\" }\nserver: { admin_listen: \"127.0.0.1:9465\" }",
    );
    let d = |k: &[u8]| hex::encode(crate::apikey::digest(k));
    let keys = format!(
        r#"
consumers:
  - id: acme
    routes: [api]
    methods: [GET, get]
    scopes: ["ops:admin"]
    groups: ["a,b"]
    quota: {{ requests: 0, period: day }}
    keys:
      - {{ id: k1, sha256: "{}", scopes: ["ops:admin", "other"], routes: [api, admin], not_before: 2030-01-01T00:00:00Z, expires_at: 2029-01-01T00:00:00Z }}
  - id: bravo
    methods: [GET]
    keys:
      - {{ id: k2, sha256: "{}", methods: [POST] }}
"#,
        d(b"k1"),
        d(b"k2")
    );
    let e = build_from(&config, &keys).unwrap_err().to_string();
    for want in [
        "routes[0].scopes[1]: scope names are",
        "routes[0].default_rate_limit.requests: must be between 1 and",
        "routes[0].default_rate_limit.window_seconds: must be between 1 and 86400",
        "routes[1].scopes: scopes need `auth: required`",
        "routes[1].consumer_limits: a route that opts out",
        "auth.deprecation_link: `javascript:alert(1)` is not an absolute http(s) URL",
        "server.admin_token: the admin listener needs a token",
        "consumers[0].methods[1]: `get` is not one of GET",
        "consumers[0].groups[0]: group names are printable ASCII without commas",
        "consumers[0].quota.requests: must be between 1",
        "consumers[0].keys[0].not_before: must be earlier than `expires_at`",
        "consumers[0].keys[0].routes: route `admin` is not in the consumer's `routes`",
        "consumers[0].keys[0].scopes[1]: scope `other` is not granted to the consumer",
        "consumers[1].keys[0].methods: a key can only narrow its consumer's `methods`",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn a_reload_carries_counters_and_last_use_by_consumer_id_and_key_digest() {
    let d = |k: &[u8]| hex::encode(crate::apikey::digest(k));
    let keys = |b_rate: bool| {
        format!(
            r#"
consumers:
  - id: acme
    rate_limit: {{ requests: 5, window_seconds: 60 }}
    keys:
      - {{ id: a1, sha256: "{}", quota: {{ requests: 9, period: month }} }}
  - id: bravo
    {}
    keys:
      - {{ id: b1, sha256: "{}" }}
"#,
            d(b"a1"),
            if b_rate {
                "rate_limit: { requests: 5, window_seconds: 60 }"
            } else {
                "name: Bravo"
            },
            d(b"b1"),
        )
    };
    let old = build_from(CONFIG, &keys(true)).unwrap();
    let a = &old.consumers[0];
    let now_ms = 1_800_000_000_000;
    let mut out = [crate::limits::Standing::default(); 1];
    let spec = a.rate.as_ref().unwrap().spec;
    assert!(crate::limits::reserve_all(
        &[(&spec, &a.rate.as_ref().unwrap().counter)],
        now_ms,
        &mut out
    ));
    old.touch(0, 1_800_000_000);
    let c = Config::from_yaml(CONFIG, Path::new("keygate.yaml")).unwrap();
    // The keys file renamed acme's key but kept its digest; bravo lost its limit.
    let text = keys(false).replace("id: a1", "id: a1-renamed");
    let file = KeysFile::from_yaml(&text, Path::new("keys.yaml")).unwrap();
    let new = build(
        Inputs {
            config: &c,
            config_path: Path::new("keygate.yaml"),
            keys_path: Path::new("keys.yaml"),
            secret: b"secret-secret-secret",
            metrics: None,
            previous: Some(&old),
            admin_token: None,
        },
        &file,
    )
    .unwrap();
    let na = &new.consumers[0];
    assert!(Arc::ptr_eq(
        &na.rate.as_ref().unwrap().counter,
        &a.rate.as_ref().unwrap().counter
    ));
    assert_eq!(
        na.rate
            .as_ref()
            .unwrap()
            .counter
            .peek(&spec, now_ms)
            .remaining,
        4
    );
    let (idx, e) = new.keys.lookup(&crate::apikey::digest(b"a1")).unwrap();
    let (_, oe) = old.keys.lookup(&crate::apikey::digest(b"a1")).unwrap();
    assert!(Arc::ptr_eq(
        &new.key_policy(e).unwrap().quota.as_ref().unwrap().counter,
        &old.key_policy(oe).unwrap().quota.as_ref().unwrap().counter
    ));
    assert_eq!(new.last_used(idx), Some(1_800_000_000));
    assert!(new.consumers[1].rate.is_none());
    // A later use on the old state is merged after the swap.
    old.touch(0, 1_800_000_100);
    new.merge_last_use(&old);
    assert_eq!(new.last_used(idx), Some(1_800_000_100));
}

#[test]
fn listeners_need_addresses_of_their_own_and_limits_a_consumer() {
    let config = CONFIG.replace(
        "secret: { env: KG_UNUSED }",
        "secret: { env: KG_UNUSED }\nserver: { listen: [\"127.0.0.1:18080\", \"0.0.0.0:18443\"], metrics_listen: \"127.0.0.1:18443\", admin_listen: \"127.0.0.1:18080\", admin_token: { env: X } }",
    )
    .replace(
        "  - { name: public, path_prefix: /public, upstream: origin, auth: none }",
        "  - { name: public, path_prefix: /public, upstream: origin, auth: none, default_quota: { requests: 5, period: day } }",
    )
    .replace(
        "auth: { keys_file: keys.yaml }",
        "auth: { keys_file: keys.yaml, key_expiry_warning_seconds: 400000000000 }",
    );
    let e = build_from(&config, "consumers: []")
        .unwrap_err()
        .to_string();
    for want in [
        "server.metrics_listen: `127.0.0.1:18443` is already used by server.listen[1]",
        "server.admin_listen: `127.0.0.1:18080` is already used by server.listen[0]",
        "routes[1].auth: default limits count consumers",
        "auth.key_expiry_warning_seconds: must be at most",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn access_log_destination_must_name_a_file() {
    for (destination, says) in [
        (
            "\"\"",
            "server.access_log.destination: must be `stderr` or the path of a file",
        ),
        (
            "/tmp",
            "server.access_log.destination: `/tmp` is a directory",
        ),
    ] {
        let config = format!("server:\n  access_log: {{ destination: {destination} }}\n{CONFIG}");
        let s = build_from(&config, &keys_yaml()).unwrap_err().to_string();
        assert!(s.contains(says), "{destination}: {s}");
    }
    let config =
        format!("server:\n  access_log: {{ destination: /tmp/keygate-access.log }}\n{CONFIG}");
    assert!(build_from(&config, &keys_yaml()).is_ok());
}

#[test]
fn proxy_protocol_needs_trusted_proxies_and_a_known_mode() {
    use crate::config::ProxyProtocolMode;
    let with = |server: &str| format!("server:\n{server}{CONFIG}");
    let s = build_from(&with("  proxy_protocol: required\n"), &keys_yaml())
        .unwrap_err()
        .to_string();
    assert!(
        s.contains("server.proxy_protocol: a PROXY protocol header is only read from server.trusted_proxies peers"),
        "{s}"
    );
    let s = build_from(
        &with("  proxy_protocol: on\n  trusted_proxies: [10.0.0.0/8]\n"),
        &keys_yaml(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        s.contains("proxy_protocol") && s.contains("optional"),
        "{s}"
    );
    for (text, mode) in [
        ("off", ProxyProtocolMode::Off),
        ("optional", ProxyProtocolMode::Optional),
        ("required", ProxyProtocolMode::Required),
    ] {
        let state = build_from(
            &with(&format!(
                "  proxy_protocol: {text}\n  trusted_proxies: [10.0.0.0/8]\n"
            )),
            &keys_yaml(),
        )
        .unwrap();
        assert_eq!(state.proxy_protocol, mode);
    }
    // The default is off, with or without trusted proxies.
    let state = build_from(CONFIG, &keys_yaml()).unwrap();
    assert_eq!(state.proxy_protocol, ProxyProtocolMode::Off);
}

#[test]
fn route_methods_rewrites_timeouts_and_cors_are_validated() {
    let config = CONFIG.replace(
        "  - { name: admin, path_prefix: /admin, upstream: origin, auth: required }",
        "  - { name: admin, path_prefix: /admin, upstream: origin, auth: required, methods: [GET, TRACE], strip_prefix: true, rewrite_prefix: /x, connect_timeout_ms: 0 }
  - { name: r2, path_prefix: /r2, upstream: origin, auth: required, rewrite_prefix: \"/a/../b\", cors: { allow_origins: [\"*\"], allow_credentials: true, allow_headers: [\"bad header\"], max_age_seconds: 100000 } }
  - { name: r3, path_prefix: /r3, upstream: origin, auth: required, methods: [GET], cors: { allow_origins: [\"app.example.com\", \"https://ok.example.com\"], allow_methods: [DELETE] } }",
    );
    let e = build_from(&config, "consumers: []")
        .unwrap_err()
        .to_string();
    for want in [
        "routes[0].methods[1]: `TRACE` is not one of",
        "routes[0].rewrite_prefix: set `strip_prefix` or `rewrite_prefix`, not both",
        "routes[0].connect_timeout_ms: must be greater than 0",
        "routes[1].rewrite_prefix: `/a/../b` must be a canonical path",
        "routes[1].cors.allow_credentials: credentials are never allowed for any origin",
        "routes[1].cors.allow_headers[0]: `bad header` is not a header name",
        "routes[1].cors.max_age_seconds: must be at most 86400",
        "routes[2].cors.allow_origins[0]: `app.example.com` is not an origin",
        "routes[2].cors.allow_methods[0]: `DELETE` is not one of the route's `methods`",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn prefix_rewrites_keep_the_rest_of_the_path() {
    let strip = PrefixRewrite {
        prefix: String::new(),
    };
    let to = PrefixRewrite {
        prefix: "/internal".into(),
    };
    for (rw, prefix, path, want) in [
        (&strip, "/v1", "/v1/orders/7", "/orders/7"),
        (&strip, "/v1", "/v1", "/"),
        (&strip, "/v1", "/v1/", "/"),
        (&strip, "/v1/", "/v1/orders", "/orders"),
        (&to, "/v1", "/v1/orders", "/internal/orders"),
        (&to, "/v1", "/v1", "/internal"),
        (&to, "/v1/", "/v1/", "/internal"),
        (&to, "/", "/x", "/internal/x"),
    ] {
        assert_eq!(
            String::from_utf8(rw.apply(prefix, path.as_bytes())).unwrap(),
            want,
            "{prefix} {path}"
        );
    }
}

#[test]
fn routes_that_reach_the_same_origin_paths_by_other_doors_are_warned_about() {
    let routes = |reports: &str| {
        format!(
            r#"
secret: {{ env: KG_UNUSED }}
auth: {{ keys_file: keys.yaml }}
upstreams:
  api: {{ address: "127.0.0.1:8000" }}
routes:
  - {{ name: orders, path_prefix: /v1/orders, upstream: api, auth: required, methods: [GET, POST], rewrite_prefix: /orders, max_request_body_bytes: 65536 }}
  - {{ name: reports, path_prefix: /v1/reports, upstream: api, auth: required, {reports} }}
  - {{ name: api, path_prefix: /v1, upstream: api, auth: required, strip_prefix: true }}
"#
        )
    };
    // Stripping /v1/reports puts /v1/reports/orders/7 on the origin's /orders/7, past
    // the orders route's methods and body limit.
    let s = build_from(&routes("strip_prefix: true"), "consumers: []").unwrap();
    let w = origin_overlaps(&s);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains("`orders` and `reports`") && w[0].contains("/v1/reports/orders"),
        "{w:?}"
    );
    // The same translation (orders and api both drop /v1) and disjoint prefixes are fine.
    let s = build_from(&routes("rewrite_prefix: /reports"), "consumers: []").unwrap();
    assert_eq!(origin_overlaps(&s), Vec::<String>::new());
    // Same settings, but a consumer allowed on one and not the other: warned.
    let config = routes("strip_prefix: true").replace(
        "methods: [GET, POST], rewrite_prefix: /orders, max_request_body_bytes: 65536",
        "rewrite_prefix: /orders",
    );
    assert_eq!(
        origin_overlaps(&build_from(&config, "consumers: []").unwrap()),
        Vec::<String>::new()
    );
    // (Allowed on reports alone, it reaches all of the origin through the strip: both
    // the orders and the api route's paths.)
    let keys = "consumers:\n  - { id: c, routes: [reports], keys: [] }\n";
    let w = origin_overlaps(&build_from(&config, keys).unwrap());
    assert_eq!(w.len(), 2, "{w:#?}");
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
