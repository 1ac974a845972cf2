//! The responses keygate writes itself: RFC 9457 problem documents.
//!
//! Every error keygate answers carries `content-type: application/problem+json`
//! and a body `{"type","title","status","detail","code","request_id"}`. Bodies
//! never contain the key, its id or the secret: only a fixed text per code and
//! the request id (which is validated to a safe alphabet before it gets here).

/// Every error code keygate answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 401: no key presented.
    MissingApiKey,
    /// 401: unknown, malformed or corrupt key.
    InvalidApiKey,
    /// 401: the key has expired.
    ExpiredApiKey,
    /// 401: the key or its consumer is disabled.
    DisabledApiKey,
    /// 401: two different credentials presented.
    AmbiguousCredentials,
    /// 403: the consumer may not use this route.
    Forbidden,
    /// 404: no route matches.
    RouteNotFound,
    /// 405: a method keygate never forwards (`TRACE`, `TRACK`: the origin would echo
    /// the shared secret back to the client).
    MethodNotAllowed,
    /// 400: the request is malformed.
    BadRequest,
    /// 413: the request body is larger than the route allows.
    PayloadTooLarge,
    /// 403: a CORS preflight from an origin (or for a method or header) the route does not
    /// allow.
    CorsRejected,
    /// 400: the path uses encodings or dot segments keygate will not route.
    InvalidPath,
    /// 400: the `Host` (or absolute-form authority) is not a valid host.
    InvalidHost,
    /// 408: the request head or body did not arrive in time.
    RequestTimeout,
    /// 431: the request line and headers are too large, or too many.
    HeadersTooLarge,
    /// 429: too many failed authentications from this address.
    TooManyFailures,
    /// 429: the consumer or key is over a rate limit.
    RateLimited,
    /// 429: the consumer or key has used up a quota.
    QuotaExceeded,
    /// 502: the origin could not be reached or answered badly.
    UpstreamUnavailable,
    /// 504: the origin did not answer in time.
    UpstreamTimeout,
    /// 503: a shared limit applies and its store cannot be reached
    /// (`limits.store.on_error: closed`), or a shared quota's lease did not arrive in time.
    LimitsUnavailable,
    /// 500: an internal error.
    Internal,
}

impl Code {
    /// The machine-readable code, as in the body's `code` member.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingApiKey => "missing_api_key",
            Code::InvalidApiKey => "invalid_api_key",
            Code::ExpiredApiKey => "expired_api_key",
            Code::DisabledApiKey => "disabled_api_key",
            Code::AmbiguousCredentials => "ambiguous_credentials",
            Code::Forbidden => "forbidden",
            Code::RouteNotFound => "route_not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::BadRequest => "bad_request",
            Code::PayloadTooLarge => "request_body_too_large",
            Code::CorsRejected => "cors_not_allowed",
            Code::InvalidPath => "invalid_path",
            Code::InvalidHost => "invalid_host",
            Code::RequestTimeout => "request_timeout",
            Code::HeadersTooLarge => "request_header_fields_too_large",
            Code::TooManyFailures => "too_many_failed_attempts",
            Code::RateLimited => "rate_limited",
            Code::QuotaExceeded => "quota_exceeded",
            Code::UpstreamUnavailable => "upstream_unavailable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::LimitsUnavailable => "limits_unavailable",
            Code::Internal => "internal_error",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Code::MissingApiKey
            | Code::InvalidApiKey
            | Code::ExpiredApiKey
            | Code::DisabledApiKey
            | Code::AmbiguousCredentials => 401,
            Code::Forbidden | Code::CorsRejected => 403,
            Code::PayloadTooLarge => 413,
            Code::RouteNotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::BadRequest | Code::InvalidPath | Code::InvalidHost => 400,
            Code::RequestTimeout => 408,
            Code::HeadersTooLarge => 431,
            Code::TooManyFailures | Code::RateLimited | Code::QuotaExceeded => 429,
            Code::UpstreamUnavailable => 502,
            Code::UpstreamTimeout => 504,
            Code::LimitsUnavailable => 503,
            Code::Internal => 500,
        }
    }

    /// The status reason phrase, used as the problem's `title`.
    pub fn title(self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Internal Server Error",
        }
    }

    /// A fixed human explanation, never echoing request data.
    pub fn detail(self) -> &'static str {
        match self {
            Code::MissingApiKey => "No API key was presented. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            Code::InvalidApiKey => "The API key presented is not valid.",
            Code::ExpiredApiKey => "The API key presented has expired.",
            Code::DisabledApiKey => "The API key presented has been disabled.",
            Code::AmbiguousCredentials => "More than one different credential was presented; send exactly one API key.",
            Code::Forbidden => "This API key may not be used for this route.",
            Code::RouteNotFound => "No route matches this request.",
            Code::MethodNotAllowed => "This method is not served here; Allow lists the ones that are.",
            Code::BadRequest => "The request is malformed.",
            Code::PayloadTooLarge => "The request body is larger than this route accepts.",
            Code::CorsRejected => "This origin, method or header is not allowed for cross-origin requests on this route.",
            Code::InvalidPath => "The request path uses encodings, characters or dot segments that origins read differently.",
            Code::InvalidHost => "The Host header is not a valid host name or address.",
            Code::RequestTimeout => "The request did not arrive in time.",
            Code::HeadersTooLarge => "The request headers are too large or too many.",
            Code::TooManyFailures => "Too many failed authentication attempts from this address; retry later.",
            Code::RateLimited => "This API key's rate limit is exceeded; retry after the time in Retry-After.",
            Code::QuotaExceeded => "This API key's quota is used up; retry after the time in Retry-After.",
            Code::UpstreamUnavailable => "The upstream service could not be reached.",
            Code::UpstreamTimeout => "The upstream service did not answer in time.",
            Code::LimitsUnavailable => "This API key's limits cannot be checked right now; retry after the time in Retry-After.",
            Code::Internal => "An internal error occurred.",
        }
    }

    /// The `WWW-Authenticate` challenge for 401s (RFC 6750), built at compile time.
    pub fn www_authenticate(self) -> Option<&'static http::HeaderValue> {
        static MISSING: http::HeaderValue =
            http::HeaderValue::from_static(r#"Bearer realm="keygate""#);
        static INVALID: http::HeaderValue =
            http::HeaderValue::from_static(r#"Bearer realm="keygate", error="invalid_token""#);
        match self {
            Code::MissingApiKey => Some(&MISSING),
            Code::InvalidApiKey
            | Code::ExpiredApiKey
            | Code::DisabledApiKey
            | Code::AmbiguousCredentials => Some(&INVALID),
            _ => None,
        }
    }

    /// The JSON body for this code and request id.
    ///
    /// `request_id` must already be restricted to `[A-Za-z0-9._:-]` (see
    /// [`crate::request_id::valid_request_id`]), so it needs no escaping.
    pub fn body(self, request_id: &[u8]) -> Vec<u8> {
        self.body_with(request_id, None)
    }

    /// The JSON body with `detail` instead of the code's fixed one (JSON-escaped here).
    /// Callers build it from the configuration only (route, scope and policy names),
    /// never from the request or the key.
    pub fn body_with(self, request_id: &[u8], detail: Option<&str>) -> Vec<u8> {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(br#"{"type":"about:blank","title":""#);
        b.extend_from_slice(self.title().as_bytes());
        b.extend_from_slice(br#"","status":"#);
        b.extend_from_slice(itoa3(self.status()).as_slice());
        b.extend_from_slice(br#","detail":""#);
        match detail {
            Some(d) => escape_json(d, &mut b),
            None => b.extend_from_slice(self.detail().as_bytes()),
        }
        b.extend_from_slice(br#"","code":""#);
        b.extend_from_slice(self.as_str().as_bytes());
        b.extend_from_slice(br#"","request_id":""#);
        b.extend(
            request_id
                .iter()
                .filter(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c)),
        );
        b.extend_from_slice(b"\"}");
        b
    }
}

/// Append `s` as the inside of a JSON string (RFC 8259 §7).
fn escape_json(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

fn itoa3(n: u16) -> [u8; 3] {
    [
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_documented_json() {
        let b = Code::MissingApiKey.body(b"abc-123");
        let s = String::from_utf8(b).unwrap();
        assert_eq!(
            s,
            r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"No API key was presented. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.","code":"missing_api_key","request_id":"abc-123"}"#
        );
    }

    #[test]
    fn statuses_and_challenges() {
        assert_eq!(Code::Forbidden.status(), 403);
        assert_eq!(Code::UpstreamTimeout.status(), 504);
        assert_eq!(Code::Forbidden.www_authenticate(), None);
        assert!(Code::ExpiredApiKey
            .www_authenticate()
            .unwrap()
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        let s = String::from_utf8(Code::RouteNotFound.body(b"x\"y")).unwrap();
        assert!(s.ends_with(r#""request_id":"xy"}"#), "{s}");
        let s = Code::Forbidden.body_with(b"r", Some("route `a\"b\\c\n`"));
        let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
        assert_eq!(v["detail"], "route `a\"b\\c\n`");
        assert_eq!(v["status"], 403);
    }
}
