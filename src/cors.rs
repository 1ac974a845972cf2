//! Cross-origin resource sharing (the Fetch standard's CORS protocol) for browser clients.
//!
//! A browser asks before a cross-origin call with a preflight: `OPTIONS` carrying
//! `Origin` and `Access-Control-Request-Method`, and never an API key. On a route
//! with `cors`, keygate answers it itself ([`preflight`]): 204 with the allowed
//! methods and headers when the origin is allowed, 403 otherwise, without a key and
//! without touching the origin. Actual responses to an allowed origin, the origin's
//! and keygate's own 401/403/429 alike, get [`response_headers`] (replacing any CORS
//! headers the origin sent), so a browser script can read the problem document and
//! the rate-limit fields. `*` is never combined with credentials: with credentials,
//! the allowed origin is echoed.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method};

/// Response headers a script may always read on a CORS route.
pub const EXPOSED: [&str; 8] = [
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "deprecation",
    "sunset",
    "link",
    "www-authenticate",
];

/// The CORS response headers an origin might send, removed on a CORS route.
pub const RESPONSE_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// Which origins are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any origin (`*`), never with credentials.
    Any,
    /// These serialized origins (`https://app.example.com`), lower-case.
    List(Vec<String>),
}

/// A route's CORS policy, validated and with its header values built once.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Allowed origins.
    pub origins: Origins,
    /// `Access-Control-Allow-Methods`.
    pub methods: HeaderValue,
    /// The methods as names, for checking a preflight's request.
    pub method_names: Vec<String>,
    /// `Access-Control-Allow-Headers`; `None`: the headers the preflight asks for.
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`.
    pub expose: HeaderValue,
    /// `Access-Control-Max-Age`.
    pub max_age: HeaderValue,
    /// Whether credentials are allowed.
    pub credentials: bool,
}

/// Whether `s` is a serialized origin keygate accepts in `allow_origins`:
/// `http(s)://host[:port]`, no path, no trailing slash, no user info.
pub fn valid_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    // Browsers omit a scheme's default port: an origin written with it never matches.
    let default_port = if s.starts_with("https://") {
        ":443"
    } else {
        ":80"
    };
    !rest.is_empty()
        && !rest.ends_with(default_port)
        && !rest.contains(['/', '@', '?', '#', ' '])
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `Access-Control-Allow-Origin` value for a request from `origin`, when allowed:
/// `*` for any origin without credentials, else the origin itself.
pub fn allow_origin(policy: &Policy, origin: &HeaderValue) -> Option<HeaderValue> {
    match &policy.origins {
        Origins::Any if !policy.credentials => Some(HeaderValue::from_static("*")),
        Origins::Any => Some(origin.clone()),
        Origins::List(list) => {
            let o = origin.to_str().ok()?;
            list.iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(o))
                .then(|| origin.clone())
        }
    }
}

/// The answer to a preflight: `Ok(headers)` for a 204, `Err(())` for a 403 (origin,
/// method or a requested header not allowed).
#[allow(clippy::result_unit_err)]
pub fn preflight(
    policy: &Policy,
    headers: &HeaderMap,
) -> Result<Vec<(HeaderName, HeaderValue)>, ()> {
    let origin = headers.get(header::ORIGIN).ok_or(())?;
    let allow = allow_origin(policy, origin).ok_or(())?;
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .ok_or(())?;
    if !policy.method_names.iter().any(|m| m == asked) {
        return Err(());
    }
    let asked_headers = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect::<Vec<_>>();
    let allow_headers = match &policy.allow_headers {
        Some(v) => {
            let listed: Vec<String> = v
                .to_str()
                .unwrap_or("")
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .collect();
            if asked_headers.iter().any(|h| !listed.contains(h)) {
                return Err(());
            }
            Some(v.clone())
        }
        None if asked_headers.is_empty() => None,
        // Echo what was asked, once checked to be header names.
        None => {
            if asked_headers
                .iter()
                .any(|h| HeaderName::from_bytes(h.as_bytes()).is_err())
            {
                return Err(());
            }
            HeaderValue::from_str(&asked_headers.join(", ")).ok()
        }
    };
    let mut out = vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, allow),
        (header::ACCESS_CONTROL_ALLOW_METHODS, policy.methods.clone()),
        (header::ACCESS_CONTROL_MAX_AGE, policy.max_age.clone()),
        (
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        ),
    ];
    if let Some(h) = allow_headers {
        out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h));
    }
    if policy.credentials {
        out.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    Ok(out)
}

/// The CORS headers for an actual response to a request from `origin`: `Vary: Origin`
/// always (the answer depends on it, so a cache must keep answers for different
/// origins, and for none, apart), and the `Access-Control-*` headers when `origin` is
/// present and allowed (otherwise none: the browser keeps the response from the script).
pub fn response_headers(
    policy: &Policy,
    origin: Option<&HeaderValue>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = vec![(header::VARY, HeaderValue::from_static("Origin"))];
    let Some(origin) = origin else {
        return out;
    };
    if let Some(allow) = allow_origin(policy, origin) {
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow));
        out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, policy.expose.clone()));
        if policy.credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: Origins, credentials: bool) -> Policy {
        Policy {
            origins,
            methods: HeaderValue::from_static("GET, POST"),
            method_names: vec!["GET".into(), "POST".into()],
            allow_headers: None,
            expose: HeaderValue::from_static("x-request-id"),
            max_age: HeaderValue::from_static("600"),
            credentials,
        }
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get<'a>(out: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        out.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn origins_are_validated() {
        for ok in [
            "https://app.example.com",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(valid_origin(ok), "{ok}");
        }
        for bad in [
            "app.example.com",
            "https://",
            "https://a/",
            "https://a/b",
            "https://u@a",
            "ftp://a",
            "*",
            "http://a.com:80",
            "https://a.com:443",
        ] {
            assert!(!valid_origin(bad), "{bad}");
        }
    }

    #[test]
    fn preflights_are_answered_for_allowed_origins_methods_and_headers() {
        let p = policy(Origins::List(vec!["https://app.example.com".into()]), false);
        let ok = req(&[
            ("origin", "https://APP.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "X-Api-Key, content-type"),
        ]);
        assert!(is_preflight(&Method::OPTIONS, &ok));
        assert!(!is_preflight(&Method::GET, &ok));
        let out = preflight(&p, &ok).unwrap();
        assert_eq!(
            get(&out, &header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://APP.example.com")
        );
        assert_eq!(
            get(&out, &header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("x-api-key, content-type")
        );
        assert_eq!(get(&out, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        for bad in [
            req(&[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "POST"),
            ]),
            req(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "DELETE"),
            ]),
        ] {
            assert_eq!(preflight(&p, &bad), Err(()));
        }
        let mut listed = p.clone();
        listed.allow_headers = Some(HeaderValue::from_static("x-api-key"));
        assert_eq!(
            preflight(&listed, &ok),
            Err(()),
            "content-type is not listed"
        );
    }

    #[test]
    fn star_is_never_sent_with_credentials() {
        let origin = HeaderValue::from_static("https://a.test");
        let any = policy(Origins::Any, false);
        let out = response_headers(&any, Some(&origin));
        assert_eq!(get(&out, &header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&out, &header::VARY), Some("Origin"));
        let creds = policy(Origins::Any, true);
        let out = response_headers(&creds, Some(&origin));
        assert_eq!(
            get(&out, &header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://a.test")
        );
        assert_eq!(
            get(&out, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        let listed = policy(Origins::List(vec!["https://b.test".into()]), false);
        let out = response_headers(&listed, Some(&origin));
        assert_eq!(get(&out, &header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_eq!(get(&out, &header::VARY), Some("Origin"));
        let none = response_headers(&listed, None);
        assert_eq!(none.len(), 1);
        assert_eq!(get(&none, &header::VARY), Some("Origin"));
    }
}
