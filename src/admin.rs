//! The admin listener: `GET /keys`, for operators, behind a bearer token.
//!
//! Served on `server.admin_listen` (off unless set; keep it on loopback), apart from
//! client traffic and metrics. Every request must carry
//! `Authorization: Bearer <server.admin_token>`, compared in constant time; the token
//! is re-read on reload. The listing ([`crate::keylist`]) never contains a key or a
//! digest. `?format=text` gives the table `keygate keys` prints; filters:
//! `consumer`, `state`, `unused_days`.

use async_trait::async_trait;
use http::{header, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::keylist::{self, Filter};
use crate::state::{SharedState, State};
use crate::timestamp;

/// The admin app.
pub struct AdminApp {
    shared: SharedState,
}

impl AdminApp {
    /// Serve the keys of the state in `shared` (the current one at each request).
    pub fn new(shared: SharedState) -> Self {
        AdminApp { shared }
    }
}

/// A response: status, content type and body.
type Answer = (u16, &'static str, Vec<u8>);

fn plain(status: u16, message: &str) -> Answer {
    (
        status,
        "text/plain; charset=utf-8",
        format!("{message}\n").into_bytes(),
    )
}

/// Answer one admin request: `method`, `path` (with query) and the `Authorization`
/// value, against `state`. Pure, so tests call it directly.
pub fn answer(state: &State, method: &str, target: &str, authorization: Option<&[u8]>) -> Answer {
    let Some(token) = &state.admin_token else {
        return plain(503, "the admin token is not configured");
    };
    let presented = authorization.and_then(|v| {
        let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ').unwrap_or(v.len()));
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then(|| rest.trim_ascii())
    });
    match presented {
        Some(t) if token.matches(t) => {}
        _ => {
            return plain(
                401,
                "unauthorized: send Authorization: Bearer <admin token>",
            )
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/keys" {
        return plain(404, "not found: try GET /keys");
    }
    if method != "GET" && method != "HEAD" {
        return plain(405, "method not allowed: use GET");
    }
    let mut text = false;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| match *p {
            "format=text" => {
                text = true;
                false
            }
            "format=json" => false,
            _ => true,
        })
        .collect();
    let filter = match Filter::parse_query(&rest.join("&")) {
        Ok(f) => f,
        Err(e) => return plain(400, &e),
    };
    let listing = keylist::list(state, &filter, timestamp::now_unix_ms(), true);
    if text {
        (
            200,
            "text/plain; charset=utf-8",
            keylist::text(&listing, true).into_bytes(),
        )
    } else {
        (200, "application/json", keylist::json(&listing))
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let target = String::from_utf8_lossy(req.raw_path()).into_owned();
        let authorization = req
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let method = req.method.as_str().to_string();
        let state = self.shared.load();
        let (status, ctype, body) = answer(&state, &method, &target, authorization.as_deref());
        let mut r = Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("content-length", body.len())
            .header("cache-control", "no-store");
        if status == 401 {
            r = r.header("www-authenticate", r#"Bearer realm="keygate-admin""#);
        }
        r.body(if method == "HEAD" { Vec::new() } else { body })
            .unwrap_or_default()
    }
}
