//! Unit tests for `metrics`.

use super::*;

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn records_through_handles_and_encodes() {
    let m = Metrics::register(Registry::new()).unwrap();
    let h = m.handles(&["api"], ["acme"].into_iter(), &[("o", ["127.0.0.1:1"])]);
    h.request(Some(0), 200, Some(0), 0.002);
    h.request(Some(0), 200, Some(0), 0.002);
    h.request(None, 404, None, 0.0001);
    h.auth(AuthResult::Expired);
    h.upstream_error(0, ErrorKind::of(&pingora::ErrorType::ConnectRefused));
    h.origin_rejection(0);
    m.load_succeeded(false, 1);
    m.set_key_gauges(KeyGauges {
        active: 3,
        expiring_soon: 1,
        ..KeyGauges::default()
    });
    m.set_access_log_dropped(4);
    let text = String::from_utf8(m.encode()).unwrap();
    assert_eq!(
        line(
            &text,
            "keygate_requests_total{route=\"api\",status=\"200\"}"
        ),
        Some("keygate_requests_total{route=\"api\",status=\"200\"} 2")
    );
    for want in [
        "keygate_requests_total{route=\"(none)\",status=\"404\"} 1",
        "keygate_consumer_requests_total{consumer=\"acme\"} 2",
        "keygate_auth_total{result=\"expired\"} 1",
        "keygate_auth_total{result=\"ok\"} 0",
        "keygate_upstream_errors_total{kind=\"connect_refused\",upstream=\"o\"} 1",
        "keygate_origin_auth_rejections_total{upstream=\"o\"} 1",
        "keygate_request_duration_seconds_bucket{route=\"api\",le=\"0.0025\"} 2",
        "keygate_config_last_reload_successful 1",
        "keygate_keys{state=\"active\"} 3",
        "keygate_keys_expiring_soon 1",
        "keygate_access_log_dropped_total 4",
        "keygate_client_timeouts_total{phase=\"header\"} 0",
        "keygate_build_info{version=\"",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    m.reload_failed();
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(text.contains("keygate_config_reloads_total{result=\"failure\"} 1"));
    assert!(text.contains("keygate_config_last_reload_successful 0"));
}

#[test]
fn labels_are_distinct_and_classify_pingora_errors() {
    let auth: std::collections::HashSet<_> = AuthResult::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(auth.len(), AuthResult::ALL.len());
    let kinds: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.label()).collect();
    assert_eq!(kinds.len(), ErrorKind::ALL.len());
    use pingora::ErrorType;
    assert_eq!(ErrorKind::of(&ErrorType::InvalidCert), ErrorKind::Tls);
    assert_eq!(ErrorKind::of(&ErrorType::ReadTimedout), ErrorKind::Timeout);
    assert_eq!(
        ErrorKind::of(&ErrorType::H1Error),
        ErrorKind::InvalidResponse
    );
    assert_eq!(ErrorKind::of(&ErrorType::InternalError), ErrorKind::Other);
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let m = Metrics::register(Registry::new()).unwrap();
    let h = m.handles(&["api"], ["acme"].into_iter(), &[("o", ["127.0.0.1:1"])]);
    h.request(Some(0), 200, Some(0), 0.002);
    h.upstream_error(0, ErrorKind::ConnectRefused);
    h.origin_rejection(0);
    m.load_succeeded(true, 1);
    m.set_key_gauges(KeyGauges::default());
    m.set_server_health([ServerGauge {
        upstream: "o",
        address: "127.0.0.1:1",
        up: true,
    }]);
    let text = String::from_utf8(m.encode()).unwrap();
    let families: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../conf/grafana/keygate.json")).unwrap();
    assert_eq!(dash["uid"], "keygate");
    let panels = dash["panels"].as_array().unwrap();
    let mut used = std::collections::HashSet::new();
    for p in panels {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for tok in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(tok.starts_with("keygate_") || tok.starts_with("process_")) {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| tok.strip_suffix(s).filter(|f| families.contains(f)))
                    .unwrap_or(tok);
                assert!(
                    families.contains(family),
                    "dashboard queries {tok}, which keygate does not export"
                );
                used.insert(family.to_string());
            }
        }
    }
    for needed in [
        "keygate_requests_total",
        "keygate_auth_total",
        "keygate_request_duration_seconds",
        "keygate_config_reloads_total",
        "keygate_keys",
        "keygate_upstream_server_healthy",
        "keygate_upstream_selections_total",
    ] {
        assert!(used.contains(needed), "dashboard has no panel for {needed}");
    }
}

#[test]
fn upstream_servers_are_counted_by_address_and_their_health_follows_the_configuration() {
    let m = Metrics::register(Registry::new()).unwrap();
    let h = m.handles(
        &["api"],
        std::iter::empty(),
        &[("api", ["10.0.0.1:80", "10.0.0.2:80"])],
    );
    h.selection(0, 0);
    h.selection(0, 1);
    h.selection(0, 1);
    h.ejection(0, 1);
    h.retry(0);
    h.upstream_error(0, ErrorKind::of(&pingora::ErrorType::Custom(NO_SERVER)));
    // Out of range: ignored, never a panic.
    h.selection(0, 2);
    h.ejection(1, 0);
    h.retry(3);
    let gauge = |address, up| ServerGauge {
        upstream: "api",
        address,
        up,
    };
    m.set_server_health([gauge("10.0.0.1:80", true), gauge("10.0.0.2:80", false)]);
    let text = String::from_utf8(m.encode()).unwrap();
    for want in [
        "keygate_upstream_selections_total{address=\"10.0.0.1:80\",upstream=\"api\"} 1",
        "keygate_upstream_selections_total{address=\"10.0.0.2:80\",upstream=\"api\"} 2",
        "keygate_upstream_ejections_total{address=\"10.0.0.1:80\",upstream=\"api\"} 0",
        "keygate_upstream_ejections_total{address=\"10.0.0.2:80\",upstream=\"api\"} 1",
        "keygate_upstream_retries_total{upstream=\"api\"} 1",
        "keygate_upstream_errors_total{kind=\"no_server\",upstream=\"api\"} 1",
        "keygate_upstream_server_healthy{address=\"10.0.0.1:80\",upstream=\"api\"} 1",
        "keygate_upstream_server_healthy{address=\"10.0.0.2:80\",upstream=\"api\"} 0",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    // A reload that drops a server: its health series goes.
    m.set_server_health([gauge("10.0.0.1:80", true)]);
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(
        !text.contains("upstream_server_healthy{address=\"10.0.0.2:80\""),
        "{text}"
    );
}

#[test]
fn config_info_exports_only_the_files_loaded_last_and_watch_reloads_count_apart() {
    let m = Metrics::register(Registry::new()).unwrap();
    let info = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("keygate_config_info{"))
            .map(str::to_string)
            .collect()
    };
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(info(&text).is_empty(), "nothing loaded yet: {text}");
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    m.set_config_info(&a, &b);
    m.set_config_info(&a, &b);
    let text = String::from_utf8(m.encode()).unwrap();
    assert_eq!(
        info(&text),
        [format!(
            "keygate_config_info{{config_sha256=\"{a}\",keys_sha256=\"{b}\"}} 1"
        )]
    );
    // A reload that changed the keys file replaces the series.
    m.set_config_info(&a, &c);
    let text = String::from_utf8(m.encode()).unwrap();
    assert_eq!(
        info(&text),
        [format!(
            "keygate_config_info{{config_sha256=\"{a}\",keys_sha256=\"{c}\"}} 1"
        )]
    );

    assert!(text.contains("keygate_config_watch_reloads_total{result=\"success\"} 0"));
    m.watch_reload(false);
    m.reload_failed();
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(text.contains("keygate_config_watch_reloads_total{result=\"failure\"} 1"));
    assert!(text.contains("keygate_config_reloads_total{result=\"failure\"} 1"));
}
