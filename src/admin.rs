//! The admin listener: `GET /keys`, for operators, behind a bearer token.
//!
//! Served on `server.admin_listen` (off unless set; keep it on loopback), apart from
//! client traffic and metrics. Every request must carry
//! `Authorization: Bearer <server.admin_token>`, compared in constant time; the token
//! is re-read on reload. The listing ([`crate::keylist`]) never contains a key or a
//! digest. `?format=text` gives the table `keygate keys` prints; filters:
//! `consumer`, `state`, `unused_days`; pages: `offset`, `limit` (default 1000). Errors
//! are RFC 9457 problem documents; every request is logged (never the token).

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

/// An RFC 9457 problem document for an admin request.
fn problem(status: u16, detail: &str) -> Answer {
    let title = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    });
    (
        status,
        "application/problem+json",
        format!("{body}\n").into_bytes(),
    )
}

/// Answer one admin request: `method`, `path` (with query) and the `Authorization`
/// value, against `state`. Pure, so tests call it directly.
pub fn answer(state: &State, method: &str, target: &str, authorization: Option<&[u8]>) -> Answer {
    let Some(token) = &state.admin_token else {
        return problem(503, "the admin token is not configured");
    };
    let presented = authorization.and_then(|v| {
        let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ').unwrap_or(v.len()));
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then(|| rest.trim_ascii())
    });
    match presented {
        Some(t) if token.matches(t) => {}
        _ => return problem(401, "send Authorization: Bearer <admin token>"),
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/keys" {
        return problem(404, "not found: try GET /keys");
    }
    if method != "GET" && method != "HEAD" {
        return problem(405, "use GET");
    }
    let mut text = false;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("format=") {
            Some("text") => text = true,
            Some("json") => {}
            Some(other) => return problem(400, &format!("format: `{other}` is not json or text")),
            None => rest.push(pair),
        }
    }
    let filter = match Filter::parse_query(&rest.join("&")) {
        Ok(f) => f,
        Err(e) => return problem(400, &e),
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
        let client = session
            .client_addr()
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let mut path = String::new();
        crate::logging::escape_for_log(target.as_bytes(), &mut path);
        log::info!(target: "keygate::admin", "{method} {path} status={status} bytes={} client={client}", body.len());
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
