//! Every header name keygate reads, writes or removes, in one place.
//!
//! Two kinds of names live here: the headers keygate itself sets on the way to
//! the origin (identity, forwarding, request id), and the finite list of
//! request headers it removes from every client request because an origin or
//! its framework may read them as a statement of *who the caller is* or *which
//! URL, host, scheme, port, prefix or client address the request had*. Only
//! keygate may make those statements; whatever a client sends under these names
//! is dropped on every route (`auth: none` included), in any letter case, and
//! so is every header whose name contains `_` (CGI and WSGI servers read
//! `X_Consumer_Id` as `X-Consumer-Id`; nginx drops such headers by default).
//!
//! Where the list ends: it holds the names that keygate sets, plus the names
//! that widely deployed gateways, auth proxies and load balancers set for the
//! same facts and that origin frameworks trust (Kong, APISIX, Envoy,
//! oauth2-proxy, Apache/nginx auth modules, Cloudflare, Akamai, Fastly,
//! Werkzeug's `ProxyFix`, IIS URL Rewrite, Symfony, Spring). An
//! application-specific header an origin invents for itself cannot be known
//! here; the README's Security section says so and lists these groups.

use http::header::HeaderName;

/// `x-request-id`: the request id, kept from the client when well-formed.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`: the client address chain.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`: `http` or `https`, the client's scheme.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`: the canonical host the client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-forwarded-port`: the port the client connected to.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `x-consumer-id`: the consumer's configured id.
pub static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
/// `x-consumer-username`: the consumer's configured name.
pub static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
/// `x-credential-identifier`: the id of the key used (never the key).
pub static X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
/// `x-anonymous-consumer`: `true` on requests forwarded without a key.
pub static X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");

/// `ratelimit-policy`: the limits that apply (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `ratelimit`: where each limit stands (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `deprecation`: when the credential was deprecated (RFC 9745).
pub static DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// `sunset`: when the credential stops working (RFC 8594).
pub static SUNSET: HeaderName = HeaderName::from_static("sunset");
/// `x-forwarded-prefix`: the path prefix a `strip_prefix` route removed.
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `x-consumer-custom-id`: the consumer's `custom_id` (as Kong names it).
pub static X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
/// `x-consumer-groups`: the consumer's groups, comma-separated (as Kong names it).
pub static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

/// The identity headers keygate sets (named as Kong and APISIX name them).
pub const IDENTITY: [&str; 6] = [
    "x-consumer-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-consumer-custom-id",
    "x-consumer-groups",
];

/// Headers that claim who the caller is, set by other gateways and auth proxies (besides
/// keygate's own [`IDENTITY`], which Kong and APISIX set too).
pub const CLAIMS_IDENTITY: [&str; 18] = [
    // Kong, APISIX
    "x-credential-username",
    "x-authenticated-userid",
    "x-authenticated-scope",
    "x-authenticated-groups",
    "x-userinfo",
    // oauth2-proxy
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
    // Apache/nginx auth modules (REMOTE_USER)
    "remote-user",
    "x-remote-user",
    "x-authenticated-user",
];

/// Headers that claim which URL, path or method the request had.
pub const CLAIMS_URL: [&str; 11] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-method",
    "x-forwarded-prefix",
    "x-forwarded-path",
    "x-forwarded-uri",
    "x-envoy-original-path",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that claim which host the client asked for.
pub const CLAIMS_HOST: [&str; 5] = [
    "x-forwarded-host",
    "x-host",
    "x-forwarded-server",
    "x-http-host-override",
    "forwarded",
];

/// Headers that claim the client's scheme or port.
pub const CLAIMS_SCHEME_PORT: [&str; 9] = [
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-forwarded-ssl",
    "x-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-https",
];

/// Headers that claim the client's address.
pub const CLAIMS_CLIENT_ADDRESS: [&str; 14] = [
    "x-forwarded-for",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "fastly-client-ip",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-envoy-external-address",
];

/// Whether a client-sent header must be removed before the request goes upstream:
/// one of the claim lists above, or a name containing `_`.
///
/// `name` is a lower-case header name as `http` stores it. The shared-secret
/// header is configurable and checked separately by the caller.
pub fn is_client_claim(name: &str) -> bool {
    if name.as_bytes().contains(&b'_') {
        return true;
    }
    // Most requests carry none of these: reject on the first byte before comparing.
    if !matches!(
        name.as_bytes().first(),
        Some(b'x' | b'r' | b't' | b'c' | b'f')
    ) {
        return false;
    }
    IDENTITY.contains(&name)
        || CLAIMS_IDENTITY.contains(&name)
        || CLAIMS_URL.contains(&name)
        || CLAIMS_HOST.contains(&name)
        || CLAIMS_SCHEME_PORT.contains(&name)
        || CLAIMS_CLIENT_ADDRESS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> impl Iterator<Item = &'static str> {
        IDENTITY
            .iter()
            .chain(&CLAIMS_IDENTITY)
            .chain(&CLAIMS_URL)
            .chain(&CLAIMS_HOST)
            .chain(&CLAIMS_SCHEME_PORT)
            .chain(&CLAIMS_CLIENT_ADDRESS)
            .copied()
    }

    #[test]
    fn every_listed_name_is_a_lower_case_header_name_and_a_claim() {
        for n in all() {
            assert!(HeaderName::from_bytes(n.as_bytes()).is_ok(), "{n}");
            assert_eq!(n, n.to_ascii_lowercase());
            assert!(is_client_claim(n), "{n}");
        }
        let mut seen = std::collections::HashSet::new();
        for n in all() {
            assert!(seen.insert(n), "{n} listed twice");
        }
    }

    #[test]
    fn underscores_and_ordinary_headers() {
        assert!(is_client_claim("x_consumer_id"));
        assert!(is_client_claim("x_api_key"));
        assert!(!is_client_claim("x-api-key"));
        assert!(!is_client_claim("authorization"));
        assert!(!is_client_claim("content-type"));
        assert!(!is_client_claim("x-request-id"));
    }

    #[test]
    fn readme_lists_every_removed_header() {
        let readme = include_str!("../README.md");
        for n in all() {
            assert!(
                readme.contains(&format!("`{n}`")),
                "README's Security section does not list `{n}`"
            );
        }
    }
}
