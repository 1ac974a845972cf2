//! The request header rewrite for the origin, in small steps each tested alone.
//!
//! [`rewrite_upstream_headers`] runs them in order: remove the credential that
//! authenticated the request (and, on `auth: none` routes, any keygate
//! credential); remove every header a client could use to make a claim
//! ([`headers::is_client_claim`]) and the secret header; add the secret, the
//! identity, the forwarding headers, the request id and the canonical `Host`.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::Result;

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
/// # Errors
/// Pingora's error when a header cannot be inserted (never for values built here).
pub fn rewrite_upstream_headers(req: &mut RequestHeader, rw: Rewrite<'_>) -> Result<()> {
    let Rewrite {
        state,
        forward,
        request_id,
        forwarded,
    } = rw;
    strip_credentials(req, state, forward);
    strip_client_claims(req, &state.secret.header);
    insert_secret(req, &state.secret)?;
    insert_identity(req, state, &forward.outcome)?;
    insert_forwarding(req, forwarded)?;
    // The prefix a `strip_prefix` route removed, so the origin can build its own URLs
    // (Spring, Werkzeug's ProxyFix, Traefik's convention); clients cannot send it.
    if let Some(prefix) = state
        .routes
        .get(forward.route)
        .and_then(|r| r.forwarded_prefix.as_ref())
    {
        req.insert_header(headers::X_FORWARDED_PREFIX.clone(), prefix.clone())?;
    }
    req.insert_header(headers::X_REQUEST_ID.clone(), request_id.clone())?;
    set_host(req, state, forward)
}

/// Remove the credential that authenticated the request; on `auth: none` routes, remove
/// any keygate credential a client sent along anyway.
pub fn strip_credentials(req: &mut RequestHeader, state: &State, forward: &Forward) {
    let mask = match forward.outcome {
        AuthOutcome::Consumer { sources, .. } => sources,
        _ => {
            let none_route = state
                .routes
                .get(forward.route)
                .is_some_and(|r| r.auth == AuthMode::None);
            if none_route {
                auth::keygate_credentials(state, &req.headers)
            } else {
                0
            }
        }
    };
    for (i, s) in state.sources.iter().enumerate().take(32) {
        if mask & (1 << i) != 0 {
            req.remove_header(&s.header);
        }
    }
}

/// Remove every client-sent header that claims identity, URL, host, scheme, port or
/// client address, every header with `_` in its name, and the secret header.
pub fn strip_client_claims(req: &mut RequestHeader, secret: &HeaderName) {
    // One pass over the names first: claims are rare, and each removal costs a lookup.
    let claims: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| *k == secret || headers::is_client_claim(k.as_str()))
        .cloned()
        .collect();
    for name in claims {
        req.remove_header(&name);
    }
}

/// Add the shared secret.
///
/// # Errors
/// Pingora's error when the header cannot be inserted.
pub fn insert_secret(req: &mut RequestHeader, secret: &Secret) -> Result<()> {
    req.insert_header(secret.header_case.clone(), secret.value.clone())
}

/// Add the identity: the consumer and key ids (and name, custom id, groups), or
/// `x-anonymous-consumer`.
///
/// # Errors
/// Pingora's error when a header cannot be inserted.
pub fn insert_identity(
    req: &mut RequestHeader,
    state: &State,
    outcome: &AuthOutcome,
) -> Result<()> {
    match *outcome {
        AuthOutcome::Consumer { key, consumer, .. } => {
            if let Some(c) = state.consumers.get(consumer as usize) {
                req.insert_header(headers::X_CONSUMER_ID.clone(), c.id_header.clone())?;
                if let Some(n) = &c.name_header {
                    req.insert_header(headers::X_CONSUMER_USERNAME.clone(), n.clone())?;
                }
                if let Some(v) = &c.custom_id_header {
                    req.insert_header(headers::X_CONSUMER_CUSTOM_ID.clone(), v.clone())?;
                }
                if let Some(v) = &c.groups_header {
                    req.insert_header(headers::X_CONSUMER_GROUPS.clone(), v.clone())?;
                }
            }
            if let Some(id) = state.keys.id_header(key) {
                req.insert_header(headers::X_CREDENTIAL_IDENTIFIER.clone(), id)?;
            }
        }
        _ => req.insert_header(headers::X_ANONYMOUS_CONSUMER.clone(), TRUE.clone())?,
    }
    Ok(())
}

/// Add `x-forwarded-for`, `-proto`, `-host` and `-port`.
///
/// # Errors
/// Pingora's error when a header cannot be inserted.
pub fn insert_forwarding(req: &mut RequestHeader, f: Forwarded) -> Result<()> {
    if let Some(v) = f.for_ {
        req.insert_header(headers::X_FORWARDED_FOR.clone(), v)?;
    }
    req.insert_header(headers::X_FORWARDED_PROTO.clone(), f.proto)?;
    if let Some(v) = f.host {
        req.insert_header(headers::X_FORWARDED_HOST.clone(), v)?;
    }
    if let Some(v) = f.port {
        req.insert_header(headers::X_FORWARDED_PORT.clone(), v)?;
    }
    Ok(())
}

/// Set `Host`: the upstream's `host_header` when configured, else the canonical host
/// when the request's differed from it.
///
/// # Errors
/// Pingora's error when the header cannot be inserted.
pub fn set_host(req: &mut RequestHeader, state: &State, forward: &Forward) -> Result<()> {
    let upstream_host = state
        .routes
        .get(forward.route)
        .and_then(|r| state.upstreams.get(r.upstream))
        .and_then(|u| u.host_header.as_ref());
    match upstream_host {
        Some(h) => req.insert_header(header::HOST, h.clone()),
        None if forward.host_changed => req.insert_header(header::HOST, forward.host.clone()),
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

    fn all(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_credential_used_is_removed_and_others_stay() {
        let s = state();
        let mut r = req(&[("authorization", "Bearer the-key"), ("x-api-key", "other")]);
        strip_credentials(&mut r, &s, &forward(2, consumer(0b01)));
        assert!(all(&r, "authorization").is_empty());
        assert_eq!(all(&r, "x-api-key"), ["other"]);
    }

    #[test]
    fn keygate_keys_are_removed_on_open_routes_only() {
        let s = state();
        let generated = crate::apikey::generate().unwrap();
        let mut r = req(&[
            ("x-api-key", "the-key"),
            ("authorization", &format!("Bearer {generated}")),
        ]);
        strip_credentials(&mut r, &s, &forward(0, AuthOutcome::Anonymous));
        assert!(all(&r, "x-api-key").is_empty());
        assert!(all(&r, "authorization").is_empty());
        let mut r = req(&[
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
        let mut r = req(&[
            ("X-Consumer-Id", "root"),
            ("x_consumer_id", "root"),
            ("X-Forwarded-Prefix", "/evil"),
            ("x-real-ip", "6.6.6.6"),
            ("X-GW-Secret", "guess"),
            ("accept", "*/*"),
        ]);
        strip_client_claims(&mut r, &s.secret.header);
        let names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn secret_and_identity_are_added() {
        let s = state();
        let mut r = req(&[]);
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
        let mut r = req(&[]);
        insert_identity(&mut r, &s, &AuthOutcome::Anonymous).unwrap();
        assert_eq!(all(&r, "x-anonymous-consumer"), ["true"]);
        assert!(all(&r, "x-consumer-id").is_empty());
    }

    #[test]
    fn forwarding_headers_replace_the_clients() {
        let mut r = req(&[("x-forwarded-for", "6.6.6.6")]);
        let client = Client {
            addr: Some("192.0.2.1".parse().unwrap()),
            peer: Some("192.0.2.1".parse().unwrap()),
            via_trusted_proxy: false,
        };
        let f =
            crate::forwarded::forwarded(&r.headers, &client, true, Some(8443), Some(b"api.test"));
        insert_forwarding(&mut r, f).unwrap();
        assert_eq!(all(&r, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["api.test"]);
        assert_eq!(all(&r, "x-forwarded-port"), ["8443"]);
    }

    #[test]
    fn host_is_the_upstreams_or_the_canonical_one() {
        let s = state();
        let mut r = req(&[("host", "API.test.")]);
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
        assert!(all(&r, "x-api-key").is_empty());
        assert_eq!(all(&r, "x-gw-secret").len(), 1);
        assert_ne!(all(&r, "x-gw-secret"), ["guess"]);
        assert_eq!(all(&r, "x-consumer-id"), ["acme"]);
        assert_eq!(all(&r, "x-request-id"), ["rid-1"]);
    }
}
