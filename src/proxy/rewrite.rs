//! The request header rewrite for the origin, in small steps each tested alone.
//!
//! [`rewrite_upstream_headers`] runs them in order: remove the credential that
//! authenticated the request (and, on `auth: none` routes, any keygate
//! credential); remove every header a client could use to make a claim
//! ([`headers::is_client_claim`]) and the secret header; add the secret, the
//! identity, the forwarding headers, the request id and the canonical `Host`.
//!
//! The steps work on the request's plain [`HeaderMap`]: Pingora's
//! [`RequestHeader`] also keeps each name's original letter case in a second map,
//! and every insert through it copies, re-parses and stores the name twice (about
//! 1.4k instructions each, ten or more per request). Header names are
//! case-insensitive (RFC 9110 §5.1), so the request reaches the origin with every
//! name in lower case, as HTTP/2 sends every name, except the twelve Pingora writes
//! title-cased (`Host`, `Content-Type`, `Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Cache-Control`, `Date`, `Server`, `Set-Cookie`, ...): a client's
//! `User-Agent` or `X-Trace` arrives as `user-agent`, `x-trace`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};

use crate::admission::Forward;
use crate::auth::{self, AuthOutcome};
use crate::config::AuthMode;
use crate::forwarded::Forwarded;
use crate::headers;
use crate::state::{Secret, State};

static TRUE: HeaderValue = HeaderValue::from_static("true");

/// Everything the header rewrite needs besides the request itself.
pub struct Rewrite<'a> {
    /// The state snapshot.
    pub state: &'a State,
    /// The admitted request.
    pub forward: &'a Forward,
    /// The request id.
    pub request_id: &'a HeaderValue,
    /// The forwarding headers decided for this request.
    pub forwarded: Forwarded,
}

/// Rewrite the request headers for the origin: the pure part of `upstream_request_filter`.
///
/// The request-target is kept as it is (absolute-form and non-UTF-8 targets included);
/// header names lose their original letter case (see the module documentation).
///
/// # Errors
/// Pingora's `InvalidHTTPHeader` when the header map would pass `http`'s size limit
/// (32,768 fields; never with keygate's header limits), or when the kept target does not
/// parse again (never for a target Pingora accepted).
pub fn rewrite_upstream_headers(req: &mut RequestHeader, rw: Rewrite<'_>) -> Result<()> {
    without_header_case(req, |h| rewrite_fields(h, rw))
}

/// The rewrite on a plain header map.
///
/// # Errors
/// `InvalidHTTPHeader` when the map would pass `http`'s size limit.
pub fn rewrite_fields(h: &mut HeaderMap, rw: Rewrite<'_>) -> Result<()> {
    let Rewrite {
        state,
        forward,
        request_id,
        forwarded,
    } = rw;
    strip_credentials(h, state, forward);
    strip_client_claims(h, &state.secret.header);
    // Room for what follows, so the map grows (and rehashes) at most once.
    h.reserve(12);
    insert_secret(h, &state.secret)?;
    insert_identity(h, state, &forward.outcome)?;
    insert_forwarding(h, forwarded)?;
    // The prefix a `strip_prefix` route removed, so the origin can build its own URLs
    // (Spring, Werkzeug's ProxyFix, Traefik's convention); clients cannot send it.
    if let Some(prefix) = state
        .routes
        .get(forward.route)
        .and_then(|r| r.forwarded_prefix.as_ref())
    {
        put(h, &headers::X_FORWARDED_PREFIX, prefix.clone())?;
    }
    put(h, &headers::X_REQUEST_ID, request_id.clone())?;
    set_host(h, state, forward)
}

/// Run `edit` on `req`'s header map after dropping Pingora's map of original name
/// spellings, keeping the request-target byte for byte.
fn without_header_case(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    // A target the URI does not reproduce (absolute-form, non-UTF-8) is kept aside.
    let from_uri = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
    let target = (from_uri != Some(req.raw_path())).then(|| req.raw_path().to_vec());
    let taken = std::mem::replace(req, RequestHeader::from(empty_parts()));
    let mut parts = Parts::from(taken);
    let edited = edit(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(t) = target {
        req.set_raw_path(&t)?;
    }
    edited
}

/// Run `edit` on an origin response's header map after dropping Pingora's map of
/// original name spellings (as [`rewrite_upstream_headers`] does for the request); the
/// status and a reason phrase of the origin's own are kept.
///
/// # Errors
/// `edit`'s error (the response is left without the case map either way).
pub fn edit_response_fields(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<()>,
) -> Result<()> {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let empty = http::Response::new(()).into_parts().0;
    let taken = std::mem::replace(resp, ResponseHeader::from(empty));
    let mut parts = http::response::Parts::from(taken);
    let edited = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if let Some(r) = reason {
        resp.set_reason_phrase(Some(&r))?;
    }
    edited
}

/// Empty request parts (no allocation: an empty `HeaderMap` holds none).
fn empty_parts() -> Parts {
    http::Request::new(()).into_parts().0
}

/// Set `name` to `value`, replacing any earlier values.
///
/// # Errors
/// `InvalidHTTPHeader` when the map would pass `http`'s size limit (32,768 fields).
pub fn put(h: &mut HeaderMap, name: &HeaderName, value: HeaderValue) -> Result<()> {
    h.try_insert(name.clone(), value)
        .map(drop)
        .map_err(|_| too_many())
}

/// Add `value` to `name`, keeping earlier values.
///
/// # Errors
/// `InvalidHTTPHeader` when the map would pass `http`'s size limit (32,768 fields).
pub fn add(h: &mut HeaderMap, name: &HeaderName, value: HeaderValue) -> Result<()> {
    h.try_append(name.clone(), value)
        .map(drop)
        .map_err(|_| too_many())
}

fn too_many() -> Box<Error> {
    Error::explain(
        ErrorType::InvalidHTTPHeader,
        "header map size limit reached",
    )
}

/// Remove the credential that authenticated the request; on `auth: none` routes, remove
/// any keygate credential a client sent along anyway.
pub fn strip_credentials(h: &mut HeaderMap, state: &State, forward: &Forward) {
    let mask = match forward.outcome {
        AuthOutcome::Consumer { sources, .. } => sources,
        _ => {
            let none_route = state
                .routes
                .get(forward.route)
                .is_some_and(|r| r.auth == AuthMode::None);
            if none_route {
                auth::keygate_credentials(state, h)
            } else {
                0
            }
        }
    };
    for (i, s) in state.sources.iter().enumerate().take(32) {
        if mask & (1 << i) != 0 {
            h.remove(&s.header);
        }
    }
}

/// Remove every client-sent header that claims identity, URL, host, scheme, port or
/// client address, every header with `_` in its name, and the secret header.
pub fn strip_client_claims(h: &mut HeaderMap, secret: &HeaderName) {
    // One pass over the names first: claims are rare, and each removal costs a lookup.
    let claims: Vec<HeaderName> = h
        .keys()
        .filter(|k| *k == secret || headers::is_client_claim(k.as_str()))
        .cloned()
        .collect();
    for name in claims {
        h.remove(&name);
    }
}

/// Add the shared secret.
///
/// # Errors
/// `InvalidHTTPHeader` when the map would pass `http`'s size limit.
pub fn insert_secret(h: &mut HeaderMap, secret: &Secret) -> Result<()> {
    put(h, &secret.header, secret.value.clone())
}

/// Add the identity: the consumer and key ids (and name, custom id, groups), or
/// `x-anonymous-consumer`.
///
/// # Errors
/// `InvalidHTTPHeader` when the map would pass `http`'s size limit.
pub fn insert_identity(h: &mut HeaderMap, state: &State, outcome: &AuthOutcome) -> Result<()> {
    match *outcome {
        AuthOutcome::Consumer { key, consumer, .. } => {
            if let Some(c) = state.consumers.get(consumer as usize) {
                put(h, &headers::X_CONSUMER_ID, c.id_header.clone())?;
                if let Some(n) = &c.name_header {
                    put(h, &headers::X_CONSUMER_USERNAME, n.clone())?;
                }
                if let Some(v) = &c.custom_id_header {
                    put(h, &headers::X_CONSUMER_CUSTOM_ID, v.clone())?;
                }
                if let Some(v) = &c.groups_header {
                    put(h, &headers::X_CONSUMER_GROUPS, v.clone())?;
                }
            }
            if let Some(id) = state.keys.id_header(key) {
                put(h, &headers::X_CREDENTIAL_IDENTIFIER, id)?;
            }
        }
        _ => put(h, &headers::X_ANONYMOUS_CONSUMER, TRUE.clone())?,
    }
    Ok(())
}

/// Add `x-forwarded-for`, `-proto`, `-host` and `-port`.
///
/// # Errors
/// `InvalidHTTPHeader` when the map would pass `http`'s size limit.
pub fn insert_forwarding(h: &mut HeaderMap, f: Forwarded) -> Result<()> {
    if let Some(v) = f.for_ {
        put(h, &headers::X_FORWARDED_FOR, v)?;
    }
    put(h, &headers::X_FORWARDED_PROTO, f.proto)?;
    if let Some(v) = f.host {
        put(h, &headers::X_FORWARDED_HOST, v)?;
    }
    if let Some(v) = f.port {
        put(h, &headers::X_FORWARDED_PORT, v)?;
    }
    Ok(())
}

/// Set `Host`: the upstream's `host_header` when configured, else the canonical host
/// when the request's differed from it.
///
/// # Errors
/// `InvalidHTTPHeader` when the map would pass `http`'s size limit.
pub fn set_host(h: &mut HeaderMap, state: &State, forward: &Forward) -> Result<()> {
    let upstream_host = state
        .routes
        .get(forward.route)
        .and_then(|r| state.upstreams.get(r.upstream))
        .and_then(|u| u.host_header.as_ref());
    match upstream_host {
        Some(v) => put(h, &header::HOST, v.clone()),
        None if forward.host_changed => put(h, &header::HOST, forward.host.clone()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::Client;

    const CONFIG: &str = r#"
secret: { env: UNUSED, header: x-gw-secret }
auth: { keys_file: k }
upstreams:
  o: { address: "127.0.0.1:1" }
  renamed: { address: "127.0.0.1:2", host_header: internal.example }
routes:
  - { name: open, path_prefix: /open, upstream: o, auth: none }
  - { name: other, path_prefix: /other, upstream: renamed, auth: none }
  - { name: api, path_prefix: /, upstream: o, auth: required }
"#;

    fn state() -> State {
        crate::fixture::state(
            CONFIG,
            &format!(
                "consumers:\n  - id: acme\n    name: ACME\n    keys:\n      - {{ id: acme-1, sha256: \"{}\" }}\n",
                crate::fixture::digest_hex("the-key")
            ),
        )
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn map(headers: &[(&str, &str)]) -> HeaderMap {
        req(headers).headers.clone()
    }

    fn forward(route: usize, outcome: AuthOutcome) -> Forward {
        Forward {
            route,
            outcome,
            target: None,
            host: HeaderValue::from_static("api.test"),
            host_changed: false,
            charge: Default::default(),
            sunset: None,
        }
    }

    fn consumer(sources: u32) -> AuthOutcome {
        AuthOutcome::Consumer {
            key: 0,
            consumer: 0,
            sources,
        }
    }

    fn all(r: &HeaderMap, name: &str) -> Vec<String> {
        r.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_credential_used_is_removed_and_others_stay() {
        let s = state();
        let mut r = map(&[("authorization", "Bearer the-key"), ("x-api-key", "other")]);
        strip_credentials(&mut r, &s, &forward(2, consumer(0b01)));
        assert!(all(&r, "authorization").is_empty());
        assert_eq!(all(&r, "x-api-key"), ["other"]);
    }

    #[test]
    fn keygate_keys_are_removed_on_open_routes_only() {
        let s = state();
        let generated = crate::apikey::generate().unwrap();
        let mut r = map(&[
            ("x-api-key", "the-key"),
            ("authorization", &format!("Bearer {generated}")),
        ]);
        strip_credentials(&mut r, &s, &forward(0, AuthOutcome::Anonymous));
        assert!(all(&r, "x-api-key").is_empty());
        assert!(all(&r, "authorization").is_empty());
        let mut r = map(&[
            ("x-api-key", "origin-token"),
            ("authorization", "Basic abc"),
        ]);
        strip_credentials(&mut r, &s, &forward(0, AuthOutcome::Anonymous));
        assert_eq!(all(&r, "x-api-key"), ["origin-token"]);
        assert_eq!(all(&r, "authorization"), ["Basic abc"]);
    }

    #[test]
    fn claims_underscores_and_the_secret_header_are_removed() {
        let s = state();
        let mut r = map(&[
            ("X-Consumer-Id", "root"),
            ("x_consumer_id", "root"),
            ("X-Forwarded-Prefix", "/evil"),
            ("x-real-ip", "6.6.6.6"),
            ("X-GW-Secret", "guess"),
            ("accept", "*/*"),
        ]);
        strip_client_claims(&mut r, &s.secret.header);
        let names: Vec<&str> = r.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn secret_and_identity_are_added() {
        let s = state();
        let mut r = map(&[]);
        insert_secret(&mut r, &s.secret).unwrap();
        insert_identity(&mut r, &s, &consumer(1)).unwrap();
        assert_eq!(
            all(&r, "x-gw-secret"),
            [std::str::from_utf8(crate::fixture::SECRET).unwrap()]
        );
        assert_eq!(all(&r, "x-consumer-id"), ["acme"]);
        assert_eq!(all(&r, "x-consumer-username"), ["ACME"]);
        assert_eq!(all(&r, "x-credential-identifier"), ["acme-1"]);
        assert!(all(&r, "x-anonymous-consumer").is_empty());
        let mut r = map(&[]);
        insert_identity(&mut r, &s, &AuthOutcome::Anonymous).unwrap();
        assert_eq!(all(&r, "x-anonymous-consumer"), ["true"]);
        assert!(all(&r, "x-consumer-id").is_empty());
    }

    #[test]
    fn forwarding_headers_replace_the_clients() {
        let mut r = map(&[("x-forwarded-for", "6.6.6.6")]);
        let client = Client {
            addr: Some("192.0.2.1".parse().unwrap()),
            peer: Some("192.0.2.1".parse().unwrap()),
            via_trusted_proxy: false,
        };
        let f = crate::forwarded::forwarded(&r, &client, true, Some(8443), Some(b"api.test"));
        insert_forwarding(&mut r, f).unwrap();
        assert_eq!(all(&r, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["api.test"]);
        assert_eq!(all(&r, "x-forwarded-port"), ["8443"]);
    }

    #[test]
    fn host_is_the_upstreams_or_the_canonical_one() {
        let s = state();
        let mut r = map(&[("host", "API.test.")]);
        set_host(&mut r, &s, &forward(2, AuthOutcome::Anonymous)).unwrap();
        assert_eq!(
            all(&r, "host"),
            ["API.test."],
            "unchanged unless it changed"
        );
        let mut f = forward(2, AuthOutcome::Anonymous);
        f.host_changed = true;
        set_host(&mut r, &s, &f).unwrap();
        assert_eq!(all(&r, "host"), ["api.test"]);
        set_host(&mut r, &s, &forward(1, AuthOutcome::Anonymous)).unwrap();
        assert_eq!(all(&r, "host"), ["internal.example"]);
    }

    #[test]
    fn the_whole_rewrite_in_order() {
        let s = state();
        let mut r = req(&[
            ("x-api-key", "the-key"),
            ("x-gw-secret", "guess"),
            ("x-consumer-id", "root"),
        ]);
        let client = Client::default();
        let forwarded = crate::forwarded::forwarded(&r.headers, &client, false, None, None);
        let rid = HeaderValue::from_static("rid-1");
        rewrite_upstream_headers(
            &mut r,
            Rewrite {
                state: &s,
                forward: &forward(2, consumer(0b10)),
                request_id: &rid,
                forwarded,
            },
        )
        .unwrap();
        assert!(all(&r.headers, "x-api-key").is_empty());
        assert_eq!(all(&r.headers, "x-gw-secret").len(), 1);
        assert_ne!(all(&r.headers, "x-gw-secret"), ["guess"]);
        assert_eq!(all(&r.headers, "x-consumer-id"), ["acme"]);
        assert_eq!(all(&r.headers, "x-request-id"), ["rid-1"]);
    }

    #[test]
    fn the_request_target_survives_the_rewrite_byte_for_byte() {
        let s = state();
        let targets: [&[u8]; 5] = [
            b"/x?a=1&b=%20",
            b"/caf\xe9?q=\xff",
            b"http://api.test/abs?q=1",
            b"*",
            b"/",
        ];
        for target in targets {
            let mut r = RequestHeader::build("GET", target, None).unwrap();
            r.append_header("X-Mixed-Case", "v").unwrap();
            let utf8 = r.raw_path_is_utf8();
            let forwarded =
                crate::forwarded::forwarded(&r.headers, &Client::default(), false, None, None);
            rewrite_upstream_headers(
                &mut r,
                Rewrite {
                    state: &s,
                    forward: &forward(2, AuthOutcome::Anonymous),
                    request_id: &HeaderValue::from_static("rid"),
                    forwarded,
                },
            )
            .unwrap();
            assert_eq!(r.raw_path(), target, "{}", String::from_utf8_lossy(target));
            assert_eq!(r.raw_path_is_utf8(), utf8);
            assert_eq!(all(&r.headers, "x-mixed-case"), ["v"]);
            assert_eq!(all(&r.headers, "x-anonymous-consumer"), ["true"]);
        }
    }

    #[test]
    fn an_origin_response_keeps_its_status_reason_and_fields() {
        let mut resp = ResponseHeader::build(201, None).unwrap();
        resp.append_header("X-Origin-Thing", "a").unwrap();
        resp.append_header("X-Origin-Thing", "b").unwrap();
        resp.append_header("Content-Type", "application/json")
            .unwrap();
        resp.set_reason_phrase(Some("Made It")).unwrap();
        edit_response_fields(&mut resp, |h| {
            put(h, &headers::X_REQUEST_ID, HeaderValue::from_static("rid"))
        })
        .unwrap();
        assert_eq!(resp.status.as_u16(), 201);
        assert_eq!(resp.get_reason_phrase(), Some("Made It"));
        assert_eq!(all(&resp.headers, "x-origin-thing"), ["a", "b"]);
        assert_eq!(all(&resp.headers, "content-type"), ["application/json"]);
        assert_eq!(all(&resp.headers, "x-request-id"), ["rid"]);
        // The canonical reason stays implicit.
        let mut resp = ResponseHeader::build(404, None).unwrap();
        edit_response_fields(&mut resp, |_| Ok(())).unwrap();
        assert_eq!(resp.get_reason_phrase(), Some("Not Found"));
    }
}
