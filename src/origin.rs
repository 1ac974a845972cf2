//! The small built-in origin used by `keygate demo`.
//!
//! It behaves like the reference origin: every request must carry the shared
//! secret (checked in constant time), or it answers 401. Otherwise it answers
//! 200 with a JSON echo of the identity keygate forwarded, so a new user sees
//! exactly what their own origin would receive.

use async_trait::async_trait;
use http::{HeaderName, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use subtle::ConstantTimeEq;

/// An origin that requires `header: secret` and echoes the identity headers.
pub struct DemoOrigin {
    header: HeaderName,
    secret: Vec<u8>,
}

impl DemoOrigin {
    /// Create an origin accepting only requests with `header` set to `secret`.
    pub fn new(header: HeaderName, secret: Vec<u8>) -> Self {
        DemoOrigin { header, secret }
    }
}

fn json_str(out: &mut String, v: &[u8]) {
    out.push('"');
    for &b in v {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\u{b:04x}")),
        }
    }
    out.push('"');
}

#[async_trait]
impl ServeHttp for DemoOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let presented = req
            .headers
            .get(&self.header)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        // Length is not secret; the comparison of contents is constant-time.
        let ok = presented.len() == self.secret.len() && bool::from(presented.ct_eq(&self.secret));
        let (status, body) = if ok {
            let mut b = String::from("{\"message\":\"hello from the origin\",\"path\":");
            json_str(&mut b, req.uri.path().as_bytes());
            for h in [
                "x-consumer-id",
                "x-consumer-username",
                "x-credential-identifier",
                "x-anonymous-consumer",
                "x-request-id",
            ] {
                b.push_str(",\"");
                b.push_str(h);
                b.push_str("\":");
                match req.headers.get(h) {
                    Some(v) => json_str(&mut b, v.as_bytes()),
                    None => b.push_str("null"),
                }
            }
            b.push('}');
            (200, b)
        } else {
            (
                401,
                String::from("{\"detail\":\"missing or wrong shared secret\"}"),
            )
        };
        let body = body.into_bytes();
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}
