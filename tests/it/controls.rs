//! Consumer controls through the real process: rate limits and quotas, key lifecycle
//! (`not_before`, rotation with grace), scopes and methods, consumer metadata, last use
//! and the admin listener.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;

/// The admin listener's token in these tests.
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A fresh key and its digest (hex).
fn new_key() -> (String, String) {
    let k = keygate::apikey::generate().unwrap();
    let d = hex::encode(keygate::apikey::digest(k.as_bytes()));
    (k, d)
}

/// One request with any method on a fresh connection.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Message {
    let mut c = Client::connect(addr);
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.send_raw(req.as_bytes());
    let r = if method == "HEAD" {
        c.read_head()
    } else {
        c.read()
    };
    r.unwrap().expect("no response")
}

/// A keys file with one consumer `acme` (with the YAML `fields`, indented four spaces)
/// holding one key `acme-1` with digest `digest`.
fn acme(fields: &str, digest: &str) -> String {
    format!(
        "consumers:\n  - id: acme\n{}    keys: [ {{ id: acme-1, sha256: \"{digest}\" }} ]\n",
        fields
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

fn with_key(addr: SocketAddr, path: &str, key: &str) -> Message {
    get(addr, path, &[("x-api-key", key)])
}

/// The problem document's `code` and `detail`.
fn problem(m: &Message) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or_default();
    (
        v["code"].as_str().unwrap_or("").to_string(),
        v["detail"].as_str().unwrap_or("").to_string(),
    )
}

/// A parameter of one member of a structured-field list (`"name";r=1;t=2`).
fn param(field: &str, name: &str, p: &str) -> Option<u64> {
    let member = field
        .split(", ")
        .find(|m| m.starts_with(&format!("\"{name}\"")))?;
    member
        .split(';')
        .find_map(|kv| kv.strip_prefix(&format!("{p}=")))
        .and_then(|v| v.parse().ok())
}

/// A gateway with `routes`, `auth` settings, an admin listener and a metrics listener.
struct Setup {
    dir: TestDir,
    origin: Origin,
    gw: Gateway,
    admin: SocketAddr,
    metrics: SocketAddr,
}

fn start(routes: &[&str], auth: &[&str], keys: &str) -> Setup {
    let dir = TestDir::new();
    let origin = Origin::start();
    let (admin, metrics) = (free_addr(), free_addr());
    dir.write("admin-token", ADMIN_TOKEN);
    let mut cfg = GatewayConfig::new(origin.addr)
        .threads(2)
        .metrics(metrics)
        .server(&format!(
            "admin_listen: \"{admin}\"\nadmin_token: {{ file: admin-token }}"
        ))
        .routes(routes);
    for a in auth {
        cfg = cfg.auth(a);
    }
    let gw = Gateway::start(&dir, &cfg.yaml(), keys);
    Setup {
        dir,
        origin,
        gw,
        admin,
        metrics,
    }
}

const API: &str = "name: api, path_prefix: /, upstream: origin, auth: required";

/// `GET /keys` on the admin listener, as JSON.
fn admin_keys(admin: SocketAddr, query: &str) -> serde_json::Value {
    let r = get(
        admin,
        &format!("/keys{query}"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// How much of `policy` key `id` has used, from the admin listing.
fn used(admin: SocketAddr, id: &str, policy: &str) -> u64 {
    let v = admin_keys(admin, "");
    let key = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("no key {id} in {v}"))
        .clone();
    key["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["policy"] == policy)
        .unwrap_or_else(|| panic!("no policy {policy} in {key}"))["used"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_rate_limit_refuses_with_fields_counts_only_admitted_requests_and_recovers() {
    let (a, da) = new_key();
    let (b, db) = new_key();
    let keys = format!(
        r#"
consumers:
  - id: acme
    rate_limit: {{ requests: 3, window_seconds: 60 }}
    quota: {{ requests: 1000, period: day }}
    keys:
      - {{ id: acme-1, sha256: "{da}" }}
  - id: quick
    keys:
      - {{ id: quick-1, sha256: "{db}", rate_limit: {{ requests: 1, window_seconds: 1 }} }}
"#
    );
    let s = start(&[API], &[], &keys);
    for remaining in [2, 1, 0] {
        let r = with_key(s.gw.addr, "/v1", &a);
        assert_eq!(r.status(), 200);
        let policy = r.header("ratelimit-policy").unwrap();
        assert_eq!(
            policy,
            r#""consumer-60s";q=3;w=60, "consumer-day";q=1000;w=86400"#
        );
        let state = r.header("ratelimit").unwrap();
        assert_eq!(
            param(&state, "consumer-60s", "r"),
            Some(remaining),
            "{state}"
        );
        assert_eq!(
            param(&state, "consumer-day", "r"),
            Some(1000 - 3 + remaining)
        );
        assert!(param(&state, "consumer-60s", "t").unwrap() <= 60);
        assert!(!state.contains("pk="), "no partition key: {state}");
    }
    for _ in 0..20 {
        let r = with_key(s.gw.addr, "/v1", &a);
        assert_eq!(r.status(), 429);
        let (code, detail) = problem(&r);
        assert_eq!(code, "rate_limited");
        assert!(detail.contains("consumer-60s"), "{detail}");
        let state = r.header("ratelimit").unwrap();
        let t = param(&state, "consumer-60s", "t").unwrap();
        assert_eq!(param(&state, "consumer-60s", "r"), Some(0));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= t && retry > 0, "Retry-After {retry} < t {t}");
        assert!(r.header("ratelimit-policy").is_some());
    }
    // Only the admitted requests reached the origin and were counted, by the rate limit
    // and by the quota the refusals never charged.
    assert_eq!(s.origin.count(), 3);
    assert_eq!(used(s.admin, "acme-1", "consumer-60s"), 3);
    assert_eq!(used(s.admin, "acme-1", "consumer-day"), 3);

    // A client over its limit recovers as soon as it waits as told.
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 200);
    let r = with_key(s.gw.addr, "/v1", &b);
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""key-1s";q=1;w=1"#)
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 200);

    let m = scrape(s.metrics);
    assert_eq!(
        sample(
            &m,
            r#"keygate_limit_rejections_total{reason="rate_limited",route="api"}"#
        ),
        21.0
    );
    assert_eq!(
        sample(&m, r#"keygate_auth_total{result="rate_limited"}"#),
        21.0
    );
    assert_eq!(sample(&m, r#"keygate_auth_total{result="ok"}"#), 5.0);
}

#[test]
fn a_burst_of_concurrent_requests_never_exceeds_the_limit() {
    let (a, da) = new_key();
    let keys = acme("rate_limit: { requests: 5, window_seconds: 600 }", &da);
    let s = start(&[API], &[], &keys);
    let addr = s.gw.addr;
    let statuses: Vec<u16> = (0..24)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || with_key(addr, "/v1", &a).status())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!((1..=5).contains(&ok), "{statuses:?}");
    // Whatever contention refused was not counted: the rest of the budget is still there.
    let mut more = 0;
    while with_key(addr, "/v1", &a).status() == 200 {
        more += 1;
    }
    assert_eq!(ok + more, 5);
    assert_eq!(s.origin.count(), 5);
}

/// Seconds from `now` to the next 00:00 UTC.
fn to_midnight() -> u64 {
    let now = keygate::timestamp::now_unix() as u64;
    86_400 - now % 86_400
}

#[test]
fn a_quota_lasts_until_the_utc_period_ends_and_route_defaults_count_per_route() {
    let (a, da) = new_key();
    let (b, db) = new_key();
    let keys = format!(
        r#"
consumers:
  - id: acme
    quota: {{ requests: 2, period: day }}
    keys: [ {{ id: acme-1, sha256: "{da}" }} ]
  - id: plain
    keys: [ {{ id: plain-1, sha256: "{db}" }} ]
"#
    );
    let s = start(
        &[
            "name: free, path_prefix: /free, upstream: origin, auth: required, consumer_limits: false",
            "name: monthly, path_prefix: /monthly, upstream: origin, auth: required, default_quota: { requests: 1, period: month }",
            "name: api, path_prefix: /, upstream: origin, auth: required, default_rate_limit: { requests: 2, window_seconds: 600 }",
        ],
        &[],
        &keys,
    );
    assert_eq!(with_key(s.gw.addr, "/v1", &a).status(), 200);
    assert_eq!(with_key(s.gw.addr, "/v1", &a).status(), 200);
    // acme has its own quota but no rate limit: the route's default rate applies too,
    // and when both refuse, the quota (the longer wait) is named.
    let r = with_key(s.gw.addr, "/v1", &a);
    assert_eq!(r.status(), 429);
    assert_eq!(problem(&r).0, "quota_exceeded");
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""route.api-600s";q=2;w=600, "consumer-day";q=2;w=86400"#)
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let t = param(&r.header("ratelimit").unwrap(), "consumer-day", "t").unwrap();
    let midnight = to_midnight();
    assert!(
        retry >= t && retry.abs_diff(midnight) <= 2,
        "{retry} {t} {midnight}"
    );
    // An opted-out route neither limits nor counts, and sends no fields.
    let r = with_key(s.gw.addr, "/free/x", &a);
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("ratelimit-policy"), None);

    // A consumer without its own limits gets each route's default, counted per route.
    for _ in 0..2 {
        let r = with_key(s.gw.addr, "/v1", &b);
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some(r#""route.api-600s";q=2;w=600"#)
        );
    }
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 429);
    let r = with_key(s.gw.addr, "/monthly/x", &b);
    assert_eq!(r.status(), 200, "the monthly route has its own budget");
    let w = param(
        &r.header("ratelimit-policy").unwrap(),
        "route.monthly-month",
        "w",
    )
    .unwrap();
    assert!([28, 29, 30, 31].map(|d| d * 86_400).contains(&w), "{w}");
    let r = with_key(s.gw.addr, "/monthly/x", &b);
    assert_eq!(problem(&r).0, "quota_exceeded");
    // The monthly quota (acme has its own day quota: the route default does not apply).
    assert_eq!(with_key(s.gw.addr, "/monthly/x", &a).status(), 429);
    assert_eq!(
        problem(&with_key(s.gw.addr, "/monthly/x", &a)).0,
        "quota_exceeded"
    );
    let m = scrape(s.metrics);
    assert_eq!(
        sample(&m, r#"keygate_quota_consumers{level="exhausted"}"#),
        2.0
    );
}

#[test]
fn counts_survive_a_reload_reset_for_a_removed_consumer_and_follow_a_changed_limit() {
    let (a, da) = new_key();
    let (b, db) = new_key();
    let keys = |a_limit: u64, with_b: bool| {
        let mut y = format!(
            r#"
consumers:
  - id: acme
    rate_limit: {{ requests: {a_limit}, window_seconds: 600 }}
    keys: [ {{ id: acme-1, sha256: "{da}" }} ]
"#
        );
        if with_b {
            y.push_str(&format!(
                r#"  - id: bravo
    rate_limit: {{ requests: 2, window_seconds: 600 }}
    keys: [ {{ id: bravo-1, sha256: "{db}" }} ]
"#
            ));
        }
        y
    };
    let s = start(&[API], &[], &keys(2, true));
    for key in [&a, &a, &b, &b] {
        assert_eq!(with_key(s.gw.addr, "/v1", key).status(), 200);
    }
    assert_eq!(with_key(s.gw.addr, "/v1", &a).status(), 429);
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 429);

    // Reload without bravo: acme keeps its count.
    s.dir.write("keys.yaml", &keys(2, false));
    s.gw.sighup();
    s.gw.wait_log("configuration reloaded", 1);
    assert_eq!(
        with_key(s.gw.addr, "/v1", &a).status(),
        429,
        "a reload reset acme"
    );
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 401);

    // Bravo comes back with a fresh budget; acme's raised limit applies to its count.
    s.dir.write("keys.yaml", &keys(4, true));
    s.gw.sighup();
    s.gw.wait_log("configuration reloaded", 2);
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 200);
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 200);
    assert_eq!(with_key(s.gw.addr, "/v1", &b).status(), 429);
    assert_eq!(with_key(s.gw.addr, "/v1", &a).status(), 200);
    assert_eq!(with_key(s.gw.addr, "/v1", &a).status(), 200);
    let r = with_key(s.gw.addr, "/v1", &a);
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""consumer-600s";q=4;w=600"#)
    );
}

#[test]
fn not_before_keys_are_invalid_until_then_and_count_as_failures() {
    let (a, da) = new_key();
    let (b, db) = new_key();
    let soon = keygate::timestamp::format_rfc3339(keygate::timestamp::now_unix() + 2);
    let keys = format!(
        r#"
consumers:
  - id: acme
    keys:
      - {{ id: acme-soon, sha256: "{da}", not_before: {soon} }}
      - {{ id: acme-later, sha256: "{db}", not_before: 2099-01-01T00:00:00Z }}
"#
    );
    let s = start(
        &[API],
        &["brute_force: { max_failures: 3, window_seconds: 3600 }"],
        &keys,
    );
    for key in [&b, &a] {
        let r = with_key(s.gw.addr, "/v1", key);
        assert_eq!(r.status(), 401);
        assert_eq!(problem(&r).0, "invalid_api_key");
    }
    assert_eq!(s.origin.count(), 0);
    // The key valid from two seconds on works then, without a reload.
    while keygate::timestamp::now_unix() <= keygate::timestamp::parse_rfc3339(&soon).unwrap() {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(with_key(s.gw.addr, "/v1", &a).status(), 200);
    let listing = admin_keys(s.admin, "?state=pending");
    assert_eq!(listing["count"], 1);
    assert_eq!(listing["keys"][0]["id"], "acme-later");
    assert_eq!(listing["keys"][0]["not_before"], "2099-01-01T00:00:00Z");
    // Not-yet-valid keys count toward the brute-force block like any invalid key.
    let mut last = 0;
    for _ in 0..6 {
        last = with_key(s.gw.addr, "/v1", &b).status();
    }
    assert_eq!(last, 429);
    let m = scrape(s.metrics);
    assert!(sample(&m, r#"keygate_auth_total{result="not_yet_valid"}"#) >= 3.0);
    assert_eq!(sample(&m, r#"keygate_keys{state="pending"}"#), 1.0);
}

#[test]
fn rotation_with_grace_warns_the_old_key_with_deprecation_and_sunset() {
    let (old, dold) = new_key();
    let keys = format!(
        r#"# the team's keys
consumers:
  - id: acme
    keys:
      - id: acme-old   # issued 2026-01
        sha256: "{dold}"
        methods: [GET]
"#
    );
    let s = start(
        &[API],
        &["deprecation_link: \"https://docs.example.com/keys\""],
        &keys,
    );
    let r = with_key(s.gw.addr, "/v1", &old);
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("deprecation"), None);

    let out = keygate()
        .args([
            "keygen",
            "--rotate",
            "acme-old",
            "--grace",
            "72h",
            "--write",
            "--keys-file",
        ])
        .arg(s.dir.path("keys.yaml"))
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let new = stdout
        .lines()
        .find(|l| l.starts_with("kg_"))
        .expect("the new key is printed")
        .to_string();
    let file = std::fs::read_to_string(s.dir.path("keys.yaml")).unwrap();
    assert!(file.starts_with("# the team's keys") && file.contains("# issued 2026-01"));
    s.gw.sighup();
    s.gw.wait_log("configuration reloaded", 1);

    let now = keygate::timestamp::now_unix();
    let r = with_key(s.gw.addr, "/v1", &old);
    assert_eq!(r.status(), 200, "the old key works during the grace period");
    let sunset = r.header("sunset").expect("Sunset on the old key");
    let expires = httpdate::parse_http_date(&sunset).unwrap();
    let expires = expires
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - (now + 72 * 3600)).abs() <= 5, "{sunset}");
    let deprecation = r.header("deprecation").expect("Deprecation on the old key");
    let since: i64 = deprecation.strip_prefix('@').unwrap().parse().unwrap();
    assert_eq!(since, expires - 7 * 86_400);
    assert!(since <= expires, "Sunset never earlier than Deprecation");
    assert_eq!(
        r.header("link").as_deref(),
        Some(r#"<https://docs.example.com/keys>; rel="deprecation"; type="text/html""#)
    );
    // A 403 to the old key warns too (it is still a valid key).
    let r = request(s.gw.addr, "POST", "/v1", &[("x-api-key", &old)]);
    assert_eq!(r.status(), 403);
    assert_eq!(r.header("sunset").as_deref(), Some(sunset.as_str()));
    assert_eq!(
        r.header("deprecation").as_deref(),
        Some(deprecation.as_str())
    );
    // The new key works, has the old one's settings, and is not warned.
    let r = with_key(s.gw.addr, "/v1", &new);
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("deprecation"), None);
    assert_eq!(
        request(s.gw.addr, "POST", "/v1", &[("x-api-key", &new)]).status(),
        403
    );
    s.gw.wait_log("key_expires_at=", 1);
    assert!(s.gw.log().contains("key_id=acme-old"));
    let m = scrape(s.metrics);
    assert_eq!(sample(&m, "keygate_keys_expiring_soon"), 1.0);
    assert_eq!(
        sample(&m, r#"keygate_expiring_key_requests_total{route="api"}"#),
        2.0
    );
    assert_eq!(
        admin_keys(s.admin, "?state=expiring")["keys"][0]["id"],
        "acme-old"
    );
}

#[test]
fn scopes_routes_and_methods_narrow_what_a_key_may_do() {
    let (full, dfull) = new_key();
    let (narrow, dnarrow) = new_key();
    let (reader, dreader) = new_key();
    let keys = format!(
        r#"
consumers:
  - id: acme
    scopes: ["orders:write", "orders:read"]
    methods: [GET, POST]
    keys:
      - {{ id: acme-full, sha256: "{dfull}" }}
      - {{ id: acme-narrow, sha256: "{dnarrow}", scopes: ["orders:read"] }}
      - {{ id: acme-reader, sha256: "{dreader}", methods: [GET], routes: [api] }}
"#
    );
    let s = start(
        &[
            "name: orders, path_prefix: /orders, upstream: origin, auth: required, scopes: [\"orders:write\"]",
            API,
        ],
        &[],
        &keys,
    );
    assert_eq!(with_key(s.gw.addr, "/orders/1", &full).status(), 200);
    let r = with_key(s.gw.addr, "/orders/1", &narrow);
    assert_eq!(r.status(), 403);
    let (code, detail) = problem(&r);
    assert_eq!(code, "forbidden");
    assert!(
        detail.contains("`orders`") && detail.contains("orders:write"),
        "{detail}"
    );
    assert!(!r.text().contains("acme-narrow") && !r.text().contains(&narrow));
    assert_eq!(with_key(s.gw.addr, "/v1", &narrow).status(), 200);
    // The reader may GET (and HEAD) the api route only.
    assert_eq!(with_key(s.gw.addr, "/v1", &reader).status(), 200);
    assert_eq!(
        request(s.gw.addr, "HEAD", "/v1", &[("x-api-key", &reader)]).status(),
        200
    );
    let r = request(s.gw.addr, "POST", "/v1", &[("x-api-key", &reader)]);
    assert_eq!(r.status(), 403);
    assert!(problem(&r).1.contains("POST"), "{}", r.text());
    let r = with_key(s.gw.addr, "/orders/1", &reader);
    assert_eq!(r.status(), 403);
    assert!(problem(&r).1.contains("route `orders`"), "{}", r.text());
    // The consumer's own method list binds every key.
    let r = request(s.gw.addr, "DELETE", "/v1", &[("x-api-key", &full)]);
    assert_eq!(r.status(), 403);
    assert_eq!(
        request(s.gw.addr, "POST", "/v1", &[("x-api-key", &full)]).status(),
        200
    );
    let m = scrape(s.metrics);
    assert_eq!(sample(&m, r#"keygate_auth_total{result="forbidden"}"#), 4.0);
}

#[test]
fn consumer_metadata_reaches_the_origin_and_clients_cannot_forge_it() {
    let (a, da) = new_key();
    let keys = acme("custom_id: crm-4711\ngroups: [gold, beta-testers]", &da);
    let s = start(
        &[
            "name: public, path_prefix: /public, upstream: origin, auth: none",
            API,
        ],
        &[],
        &keys,
    );
    let forged = [
        ("x-consumer-custom-id", "admin"),
        ("X-Consumer-Groups", "root"),
    ];
    let mut h = forged.to_vec();
    h.push(("x-api-key", &a));
    assert_eq!(get(s.gw.addr, "/v1", &h).status(), 200);
    let seen = s.origin.last();
    assert_eq!(seen.all("x-consumer-custom-id"), vec!["crm-4711"]);
    assert_eq!(seen.all("x-consumer-groups"), vec!["gold,beta-testers"]);
    assert_eq!(get(s.gw.addr, "/public/x", &forged).status(), 200);
    let seen = s.origin.last();
    assert!(seen.all("x-consumer-custom-id").is_empty());
    assert!(seen.all("x-consumer-groups").is_empty());
}

#[test]
fn last_use_is_recorded_listed_kept_across_reloads_and_the_admin_listener_needs_its_token() {
    let (a, da) = new_key();
    let (b, db) = new_key();
    let keys = format!(
        r#"
consumers:
  - id: acme
    keys:
      - {{ id: acme-used, sha256: "{da}" }}
      - {{ id: acme-idle, sha256: "{db}" }}
"#
    );
    let s = start(&[API], &[], &keys);
    let _ = b;
    for auth in [None, Some("Bearer wrong-token-0123456789"), Some("Basic x")] {
        let h: Vec<(&str, &str)> = auth.iter().map(|v| ("authorization", *v)).collect();
        let r = get(s.admin, "/keys", &h);
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(!r.text().contains("acme-used"));
    }
    let before = admin_keys(s.admin, "");
    assert!(before["keys"][0]["last_used_at"].is_null(), "{before}");
    assert_eq!(with_key(s.gw.addr, "/v1", &a).status(), 200);
    let after = admin_keys(s.admin, "?consumer=acme");
    let text = after.to_string();
    assert!(
        !text.contains(&da) && !text.contains(&db),
        "a digest was listed"
    );
    let used_at = after["keys"][0]["last_used_at"]
        .as_str()
        .unwrap()
        .to_string();
    let t = keygate::timestamp::parse_rfc3339(&used_at).unwrap();
    assert!((keygate::timestamp::now_unix() - t).abs() <= 5);
    assert!(after["keys"][1]["last_used_at"].is_null());
    // Stale keys: not used for 0+ days means never used here.
    let stale = admin_keys(s.admin, "?unused_days=1");
    assert_eq!(stale["count"], 1);
    assert_eq!(stale["keys"][0]["id"], "acme-idle");
    // A reload keeps last use for keys that remain.
    s.dir.write("keys.yaml", &format!("{keys}\n# touched\n"));
    s.gw.sighup();
    s.gw.wait_log("configuration reloaded", 1);
    let again = admin_keys(s.admin, "");
    assert_eq!(
        again["keys"][0]["last_used_at"].as_str(),
        Some(used_at.as_str())
    );
    // Pages, percent-encoded values, and bad parameters as problem documents.
    let page = admin_keys(s.admin, "?limit=1&state=act%69ve");
    assert_eq!(
        (page["total"].as_u64(), page["count"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(page["next_offset"], 1);
    let page = admin_keys(s.admin, "?limit=1&offset=1");
    assert_eq!(page["keys"][0]["id"], "acme-idle");
    assert!(page["next_offset"].is_null());
    for bad in [
        "?format=xml",
        "?limit=0",
        "?state=active&state=expired",
        "?nope=1",
    ] {
        let r = get(
            s.admin,
            &format!("/keys{bad}"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        );
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
    }
    s.gw.wait_log("keygate::admin", 1);
    assert!(
        !s.gw.log().contains(ADMIN_TOKEN),
        "the admin token was logged"
    );
    // The text table, and a bad filter.
    let r = get(
        s.admin,
        "/keys?format=text&state=active",
        &[("authorization", &format!("bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(r.status(), 200);
    assert!(r.text().starts_with("KEY_ID") && r.text().contains("acme-idle"));
    let r = get(
        s.admin,
        "/keys?state=nope",
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(r.status(), 400);
}

#[test]
fn keygate_keys_prints_the_listing_offline() {
    let dir = TestDir::new();
    let (_, da) = new_key();
    dir.write(
        "keys.yaml",
        &format!(
            r#"
consumers:
  - id: acme
    quota: {{ requests: 10, period: month }}
    keys:
      - {{ id: acme-1, sha256: "{da}", expires_at: 2020-01-01T00:00:00Z }}
      - {{ id: acme-2, sha256: "{}" }}
"#,
            new_key().1
        ),
    );
    // No secret is needed to list keys.
    let config = dir.write(
        "keygate.yaml",
        &GatewayConfig::new(free_addr())
            .listen(free_addr())
            .secret_file("absent-secret")
            .yaml(),
    );
    let out = keygate_with_config(&["keys"], &config);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("KEY_ID") && !lines[0].contains("LAST_USED"));
    assert!(lines[1].contains("acme-1") && lines[1].contains("expired"));
    assert!(lines[2].contains("consumer-month 0/10"));
    assert!(!stdout.contains(&da));
    let out = keygate_with_config(&["keys", "--state", "expired", "--json"], &config);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 1);
    let out = keygate_with_config(&["keys", "--state", "bogus"], &config);
    assert!(!out.status.success());
}

#[test]
fn a_charged_request_the_origin_fails_still_carries_its_limits() {
    let (a, da) = new_key();
    let dir = TestDir::new();
    // Nothing listens at the origin's address.
    let cfg = GatewayConfig::new(free_addr()).routes(&[API]);
    let gw = Gateway::start(
        &dir,
        &cfg.yaml(),
        &acme("rate_limit: { requests: 5, window_seconds: 60 }", &da),
    );
    let r = with_key(gw.addr, "/v1", &a);
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""consumer-60s";q=5;w=60"#)
    );
    assert_eq!(
        param(&r.header("ratelimit").unwrap(), "consumer-60s", "r"),
        Some(4)
    );
}
