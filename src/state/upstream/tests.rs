//! Unit tests for upstreams: servers, weights, health checks, ejection settings, and
//! health carried over a reload.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::balance::{Availability, Probed};
use crate::config::{Config, ConfigError, KeysFile};
use crate::state::{build, Inputs, State};

/// A configuration whose only upstream `api` is `upstream` (flow-map contents).
fn config(upstream: &str) -> String {
    format!(
        r#"
secret: {{ env: KG_UNUSED }}
auth: {{ keys_file: keys.yaml }}
upstreams:
  api: {{ {upstream} }}
routes:
  - {{ name: api, path_prefix: /, upstream: api, auth: required }}
"#
    )
}

fn build_with(config: &str, previous: Option<&State>) -> Result<State, ConfigError> {
    let c = Config::from_yaml(config, Path::new("keygate.yaml"))?;
    build(
        Inputs {
            config: &c,
            config_path: Path::new("keygate.yaml"),
            keys_path: Path::new("keys.yaml"),
            secret: crate::fixture::SECRET,
            metrics: None,
            previous,
            admin_token: None,
        },
        &KeysFile::default(),
    )
}

fn problems(upstream: &str) -> String {
    build_with(&config(upstream), None).unwrap_err().to_string()
}

#[test]
fn several_servers_get_a_peer_each_and_share_by_weight() {
    let s = build_with(
        &config(r#"servers: [ { address: "127.0.0.1:8001", weight: 3 }, { address: "127.0.0.1:8002" } ]"#),
        None,
    )
    .unwrap();
    let u = &s.upstreams[0];
    let addrs: Vec<String> = u
        .servers
        .iter()
        .map(|s| s.peer._address.to_string())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:8001", "127.0.0.1:8002"]);
    assert_eq!(u.servers[1].address, "127.0.0.1:8002");
    assert_eq!(u.servers[0].probe_host, "127.0.0.1:8001");
    let mut count = [0; 2];
    for _ in 0..400 {
        count[u.balancer.pick(None).unwrap().server] += 1;
    }
    assert_eq!(count, [300, 100]);
    assert!(u.health_check.is_none());
    assert!(!u.balancer.checked());
    assert_eq!(u.balancer.ejection_settings(), (3, 10));
}

#[test]
fn the_one_server_form_is_an_upstream_of_one() {
    let s = build_with(
        &config(r#"address: "127.0.0.1:8000", host_header: api.internal"#),
        None,
    )
    .unwrap();
    let u = &s.upstreams[0];
    assert_eq!(u.servers.len(), 1);
    assert_eq!(u.servers[0].address, "127.0.0.1:8000");
    assert_eq!(
        u.servers[0].probe_host, "api.internal",
        "probes send host_header"
    );
}

#[test]
fn every_upstream_problem_is_reported_with_its_field() {
    let both = problems(r#"address: "127.0.0.1:1", servers: [ { address: "127.0.0.1:2" } ]"#);
    assert!(
        both.contains("upstreams.api: set `address` (one server) or `servers` (several), not both"),
        "{both}"
    );
    let neither = problems("tls: false");
    assert!(
        neither.contains("upstreams.api: needs `address`"),
        "{neither}"
    );
    let empty = problems("servers: []");
    assert!(
        empty.contains("upstreams.api.servers: at least one server is needed"),
        "{empty}"
    );
    let s = problems(
        r#"servers: [ { address: "127.0.0.1:1", weight: 0 }, { address: "127.0.0.1:2", weight: 1001 },
                      { address: "127.0.0.1:1" }, { address: "no-port" }, { address: "nowhere.invalid:80" } ],
           eject_after_connect_failures: 2, eject_seconds: 0"#,
    );
    for want in [
        "upstreams.api.servers[0].weight: must be 1 to 1000",
        "upstreams.api.servers[1].weight: must be 1 to 1000",
        "upstreams.api.servers[2].address: `127.0.0.1:1` is listed twice",
        "upstreams.api.servers[3].address: `no-port` is not host:port",
        "upstreams.api.servers[4].address: cannot resolve `nowhere.invalid`",
        "upstreams.api.eject_seconds: must be greater than 0",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    let long = problems(r#"address: "127.0.0.1:1", eject_seconds: 3601"#);
    assert!(
        long.contains("upstreams.api.eject_seconds: must be at most 3600"),
        "{long}"
    );
    // Ejection off: no length needed.
    build_with(
        &config(r#"address: "127.0.0.1:1", eject_after_connect_failures: 0, eject_seconds: 0"#),
        None,
    )
    .unwrap();
}

#[test]
fn health_checks_are_validated_whole() {
    let s = problems(
        r#"address: "127.0.0.1:1", health_check: { path: "health check", interval_ms: 50, timeout_ms: 60,
           healthy_threshold: 0, unhealthy_threshold: 101, healthy_statuses: [700, "300-200"] }"#,
    );
    for want in [
        "upstreams.api.health_check.path: `health check` is not a path",
        "upstreams.api.health_check.interval_ms: must be 100 to 3600000",
        "upstreams.api.health_check.timeout_ms: must be greater than 0 and at most `interval_ms`",
        "upstreams.api.health_check.healthy_threshold: must be 1 to 100",
        "upstreams.api.health_check.unhealthy_threshold: must be 1 to 100",
        "upstreams.api.health_check.healthy_statuses[0]: must be a status 100 to 599",
        "upstreams.api.health_check.healthy_statuses[1]: must be a status 100 to 599",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    let tcp = problems(r#"address: "127.0.0.1:1", health_check: { healthy_statuses: [200] }"#);
    assert!(
        tcp.contains("upstreams.api.health_check.healthy_statuses: only meaningful with `path`"),
        "{tcp}"
    );
    let none =
        problems(r#"address: "127.0.0.1:1", health_check: { path: /h, healthy_statuses: [] }"#);
    assert!(none.contains("at least one status or range"), "{none}");
}

#[test]
fn health_check_defaults_and_statuses() {
    let s = build_with(&config(r#"address: "127.0.0.1:1", health_check: {}"#), None).unwrap();
    let h = s.upstreams[0].health_check.as_ref().unwrap();
    assert_eq!(h.path, None, "TCP by default");
    assert_eq!(h.interval, Duration::from_millis(2000));
    assert_eq!(h.timeout, Duration::from_millis(1000));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));
    assert!(h.passes(200) && h.passes(399) && !h.passes(400) && !h.passes(199));
    assert!(s.upstreams[0].balancer.checked());
    let s = build_with(
        &config(r#"address: "127.0.0.1:1", health_check: { path: "/healthz?deep=1", healthy_statuses: [204, "200-201"] }"#),
        None,
    )
    .unwrap();
    let h = s.upstreams[0].health_check.as_ref().unwrap();
    assert_eq!(h.path.as_deref(), Some("/healthz?deep=1"));
    assert!(h.passes(204) && h.passes(201) && !h.passes(202));
}

#[test]
fn a_bad_status_is_a_located_parse_error() {
    let text =
        config(r#"address: "127.0.0.1:1", health_check: { path: /h, healthy_statuses: ["2xx"] }"#);
    let e = Config::from_yaml(&text, Path::new("keygate.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("keygate.yaml:5:"), "{e}");
    assert!(e.contains("`2xx` is not a status code or a range"), "{e}");
    let text = config(r#"address: "127.0.0.1:1", health_check: { path: /h, interval: 5 }"#);
    let e = Config::from_yaml(&text, Path::new("keygate.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `interval`"), "{e}");
    let text = config(r#"address: "127.0.0.1:1", balance: random"#);
    let e = Config::from_yaml(&text, Path::new("keygate.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant `random`"), "{e}");
}

#[test]
fn health_carries_over_a_reload_for_servers_that_remain() {
    let before = config(
        r#"servers: [ { address: "127.0.0.1:8001" }, { address: "127.0.0.1:8002" } ], health_check: { path: /h }"#,
    );
    let old = build_with(&before, None).unwrap();
    let ob = &old.upstreams[0].balancer;
    ob.health(0).unwrap().observe(false, 2, 3);
    assert_eq!(ob.health(0).unwrap().probed(), Probed::Unhealthy);
    // 8001 stays with a new weight, 8002 leaves, 8003 arrives.
    let after = config(
        r#"servers: [ { address: "127.0.0.1:8003" }, { address: "127.0.0.1:8001", weight: 5 } ], health_check: { path: /h }"#,
    );
    let new = build_with(&after, Some(&old)).unwrap();
    let nb = &new.upstreams[0].balancer;
    assert!(Arc::ptr_eq(nb.health(1).unwrap(), ob.health(0).unwrap()));
    assert_eq!(nb.availability(1, 1), Availability::Down, "still unhealthy");
    assert_eq!(
        nb.health(0).unwrap().probed(),
        Probed::Unknown,
        "new: not probed yet"
    );
    assert!(!Arc::ptr_eq(nb.health(0).unwrap(), ob.health(1).unwrap()));
    // Another upstream with the same address starts afresh.
    let renamed = after
        .replace("  api: {", "  other: {")
        .replace("upstream: api", "upstream: other");
    let other = build_with(&renamed, Some(&old)).unwrap();
    assert!(!Arc::ptr_eq(
        other.upstreams[0].balancer.health(1).unwrap(),
        ob.health(0).unwrap()
    ));
}

#[test]
fn server_statuses_name_every_server() {
    let s = build_with(
        &config(r#"servers: [ { address: "127.0.0.1:8001" }, { address: "127.0.0.1:8002" } ], health_check: { path: /h }"#),
        None,
    )
    .unwrap();
    s.upstreams[0]
        .balancer
        .health(0)
        .unwrap()
        .observe(true, 2, 3);
    let st = s.server_statuses(1);
    assert_eq!(
        st,
        [
            ServerStatus {
                upstream: "api",
                address: "127.0.0.1:8001",
                up: true
            },
            ServerStatus {
                upstream: "api",
                address: "127.0.0.1:8002",
                up: false
            },
        ]
    );
}

#[test]
fn the_commented_example_in_conf_builds() {
    let conf = include_str!("../../../conf/keygate.yaml");
    let block: String = conf
        .lines()
        .skip_while(|l| !l.contains("--- example: servers ---"))
        .skip(1)
        .take_while(|l| !l.contains("--- end of example ---"))
        .map(|l| l.replacen("  # ", "  ", 1) + "\n")
        .collect();
    assert!(block.contains("servers:"), "{block}");
    let text = format!(
        "secret: {{ env: KG_UNUSED }}\nauth: {{ keys_file: keys.yaml }}\nupstreams:\n{block}routes:\n  - {{ name: api, path_prefix: /, upstream: api, auth: required }}\n"
    );
    let s = build_with(&text, None).unwrap();
    let u = &s.upstreams[0];
    assert_eq!(u.servers.len(), 2);
    let h = u.health_check.as_ref().unwrap();
    assert_eq!(h.path.as_deref(), Some("/healthz"));
    assert!(h.passes(200) && h.passes(204) && !h.passes(201) && !h.passes(300));
}
