//! What happens when a client is too slow: the 408 written for a request head that
//! never completed, the access-log line and the counters (see [`crate::conn`]).

use std::net::IpAddr;
use std::time::Duration;

use crate::conn::TimeoutReporter;
use crate::logging::{self, AccessRecord};
use crate::metrics::ClientTimeouts;
use crate::problem::Code;
use crate::request_id::new_request_id;
use crate::state::SharedState;

/// Writes the 408 for a request head that timed out, and counts both kinds of timeout.
pub struct Timeouts {
    shared: SharedState,
    counters: ClientTimeouts,
}

impl Timeouts {
    /// Report timeouts into `counters`, reading the state's handles from `shared`.
    pub fn new(shared: SharedState, counters: ClientTimeouts) -> Self {
        Timeouts { shared, counters }
    }
}

impl TimeoutReporter for Timeouts {
    fn head_timeout(&self, received: bool, client: Option<IpAddr>) -> Option<Vec<u8>> {
        self.counters.header.inc();
        if !received {
            return None;
        }
        let code = Code::RequestTimeout;
        let id = new_request_id();
        let body = code.body(id.as_bytes());
        let mut out = Vec::with_capacity(body.len() + 256);
        out.extend_from_slice(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\nconnection: close\r\nx-request-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(format!("\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        self.shared.load().handles.request(None, 408, None, 0.0);
        logging::access(&AccessRecord {
            method: None,
            path: None,
            status: 408,
            route: None,
            consumer: None,
            key_id: None,
            code: Some(code.as_str()),
            duration: Duration::ZERO,
            request_id: id.as_bytes(),
            client,
            error: Some("request head timed out"),
            key_expires_at: None,
            upstream_server: None,
            retried_from: None,
        });
        Some(out)
    }

    fn body_timeout(&self, _client: Option<IpAddr>) {
        self.counters.body.inc();
    }
}
