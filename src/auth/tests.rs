//! Unit tests for `auth`.

use super::*;
use http::HeaderValue;

fn state() -> State {
    let config = r#"
secret: { env: UNUSED }
auth: { keys_file: keys.yaml }
upstreams: { o: { address: "127.0.0.1:1" } }
routes:
  - { name: open, path_prefix: /open, upstream: o, auth: none }
  - { name: opt, path_prefix: /opt, upstream: o, auth: optional }
  - { name: admin, path_prefix: /admin, upstream: o, auth: required }
  - { name: api, path_prefix: /, upstream: o, auth: required }
"#;
    let keys = format!(
            "consumers:\n  - id: c\n    routes: [api, opt]\n    keys:\n      - {{ id: good, sha256: \"{}\" }}\n      - {{ id: old, sha256: \"{}\", expires_at: 2001-01-01T00:00:00Z }}\n      - {{ id: off, sha256: \"{}\", disabled: true }}\n",
            hex::encode(apikey::digest(b"good-key")),
            hex::encode(apikey::digest(b"old-key")),
            hex::encode(apikey::digest(b"off-key")),
        );
    crate::fixture::state(config, &keys)
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    h
}

const API: usize = 3;
const NOW: i64 = 1_800_000_000;

fn auth(pairs: &[(&str, &[u8])]) -> AuthOutcome {
    authenticate(&state(), API, &Method::GET, &headers(pairs), NOW)
}

fn rejected(r: Rejection) -> AuthOutcome {
    AuthOutcome::Rejected(r)
}

#[test]
fn bearer_any_case_and_x_api_key() {
    for v in [
        "Bearer good-key",
        "bearer good-key",
        "BEARER  good-key ",
        "Bearer\tgood-key",
    ] {
        assert!(
            matches!(
                auth(&[("authorization", v.as_bytes())]),
                AuthOutcome::Consumer { sources: 1, .. }
            ),
            "{v}"
        );
    }
    assert!(matches!(
        auth(&[("x-api-key", b"good-key")]),
        AuthOutcome::Consumer { sources: 2, .. }
    ));
    assert!(matches!(
        auth(&[
            ("x-api-key", b"good-key"),
            ("authorization", b"Bearer good-key")
        ]),
        AuthOutcome::Consumer { sources: 3, .. }
    ));
}

#[test]
fn missing_and_other_schemes() {
    assert_eq!(auth(&[]), rejected(Rejection::Missing));
    assert_eq!(
        auth(&[("authorization", b"Basic dXNlcjpwYXNz")]),
        rejected(Rejection::Missing)
    );
}

#[test]
fn malformed_keys_are_invalid() {
    for v in [
        &b"Bearer"[..],
        b"Bearer ",
        b"Bearer    ",
        b"Bearer a b",
        b"Bearer \xff\xfe",
    ] {
        assert_eq!(
            auth(&[("authorization", v)]),
            rejected(Rejection::Invalid),
            "{v:?}"
        );
    }
    assert_eq!(auth(&[("x-api-key", b"")]), rejected(Rejection::Invalid));
    assert_eq!(
        auth(&[("x-api-key", &vec![b'a'; MAX_KEY_LEN + 1])]),
        rejected(Rejection::Invalid)
    );
    assert_eq!(
        auth(&[("x-api-key", b"good-ke")]),
        rejected(Rejection::Invalid)
    );
    assert_eq!(
        auth(&[("x-api-key", b"good-kez")]),
        rejected(Rejection::Invalid)
    );
}

#[test]
fn corrupt_generated_key_is_invalid_before_lookup() {
    let mut k = apikey::generate().unwrap().into_bytes();
    let last = k.len() - 1;
    k[last] = if k[last] == b'0' { b'1' } else { b'0' };
    assert_eq!(auth(&[("x-api-key", &k)]), rejected(Rejection::Invalid));
}

#[test]
fn ambiguity_never_falls_back() {
    assert_eq!(
        auth(&[
            ("authorization", b"Bearer good-key"),
            ("x-api-key", b"other")
        ]),
        rejected(Rejection::Ambiguous)
    );
    assert_eq!(
        auth(&[("x-api-key", b"good-key"), ("x-api-key", b"other")]),
        rejected(Rejection::Ambiguous)
    );
    assert_eq!(
        auth(&[("x-api-key", b"good-key"), ("authorization", b"Bearer ")]),
        rejected(Rejection::Ambiguous)
    );
    assert!(matches!(
        auth(&[("x-api-key", b"good-key"), ("x-api-key", b"good-key")]),
        AuthOutcome::Consumer { .. }
    ));
}

#[test]
fn expired_disabled_forbidden() {
    assert_eq!(
        auth(&[("x-api-key", b"old-key")]),
        rejected(Rejection::Expired)
    );
    assert_eq!(
        auth(&[("x-api-key", b"off-key")]),
        rejected(Rejection::Disabled)
    );
    let s = state();
    assert_eq!(
        authenticate(
            &s,
            2,
            &Method::GET,
            &headers(&[("x-api-key", b"good-key")]),
            NOW
        ),
        AuthOutcome::Rejected(Rejection::Forbidden {
            denial: Denial::Route,
            key: 0
        })
    );
}

#[test]
fn optional_and_none_routes() {
    let s = state();
    assert_eq!(
        authenticate(&s, 0, &Method::GET, &headers(&[("x-api-key", b"bad")]), NOW),
        AuthOutcome::Anonymous
    );
    assert_eq!(
        authenticate(&s, 1, &Method::GET, &headers(&[]), NOW),
        AuthOutcome::Anonymous
    );
    assert_eq!(
        authenticate(&s, 1, &Method::GET, &headers(&[("x-api-key", b"bad")]), NOW),
        rejected(Rejection::Invalid)
    );
    assert!(matches!(
        authenticate(
            &s,
            1,
            &Method::GET,
            &headers(&[("x-api-key", b"good-key")]),
            NOW
        ),
        AuthOutcome::Consumer { .. }
    ));
}
