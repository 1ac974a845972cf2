//! The per-request context: one state snapshot, one decision.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use pingora::{Error, ErrorType, Result};

use crate::admission::{Admission, Forward, Sunset};
use crate::auth::AuthOutcome;
use crate::balance::Lease;
use crate::forwarded::Client;
use crate::problem::Code;
use crate::state::State;

/// Everything keygate knows about one request, shared by its phases.
pub struct RequestCtx {
    /// The state snapshot this request sees in every phase, taken when it starts: a
    /// reload swapping in a new state meanwhile changes nothing for it.
    pub state: Arc<State>,
    /// When the request started.
    pub start: Instant,
    /// The request id (the client's if well-formed, else generated).
    pub request_id: HeaderValue,
    /// Who the client is (after trusted proxies).
    pub client: Client,
    /// What `request_filter` decided; `None` when Pingora refused the request before.
    pub decision: Option<Admission>,
    /// The problem document keygate answered with, if it answered itself (a rejection
    /// in `request_filter`, or a failure to proxy).
    pub answered: Option<Code>,
    /// The request's `Origin`, on a route with CORS.
    pub origin: Option<HeaderValue>,
    /// Request body bytes seen so far (for the route's `max_request_body_bytes`).
    pub body_bytes: u64,
    /// The body passed the route's limit midway: the answer is 413.
    pub body_too_large: bool,
    /// Which upstream server this request went to, and how its attempts went.
    pub attempt: Attempt,
}

/// The upstream server of a request's current (or last) attempt.
#[derive(Debug, Default)]
pub struct Attempt {
    /// Index of the server in its upstream, once one was chosen.
    pub server: Option<usize>,
    /// The server a connection failed to before the request was retried on `server`
    /// (at most one retry).
    pub retried_from: Option<usize>,
    /// The next choice must avoid `server`: a connection to it failed before any byte
    /// was sent, and the request is being retried elsewhere.
    pub elsewhere: bool,
    /// The request's hold on its server (counted in flight for least connections).
    pub lease: Lease,
}

impl RequestCtx {
    /// A context for a request starting now on `state`.
    pub fn new(state: Arc<State>) -> Self {
        RequestCtx {
            state,
            start: Instant::now(),
            request_id: HeaderValue::from_static(""),
            client: Client::default(),
            decision: None,
            answered: None,
            origin: None,
            body_bytes: 0,
            body_too_large: false,
            attempt: Attempt::default(),
        }
    }

    /// The admitted request, for the phases that only run after an admission.
    ///
    /// # Errors
    /// An internal error when the request was not admitted (a phase ran out of order).
    pub fn forward(&self) -> Result<&Forward> {
        match &self.decision {
            Some(Admission::Forward(f)) => Ok(f),
            _ => Error::e_explain(ErrorType::InternalError, "request was not admitted"),
        }
    }

    /// The matched route, if routing got that far.
    pub fn route(&self) -> Option<usize> {
        match &self.decision {
            Some(Admission::Forward(f)) => Some(f.route),
            Some(Admission::Reject(r)) => r.route,
            Some(Admission::Preflight { route }) => Some(*route),
            None => None,
        }
    }

    /// The upstream (index) of the matched route, and the server of the current attempt.
    pub fn upstream_server(&self) -> Option<(usize, usize)> {
        let route = self.state.routes.get(self.route()?)?;
        Some((route.upstream, self.attempt.server?))
    }

    /// The authentication outcome, if authentication ran.
    pub fn outcome(&self) -> Option<&AuthOutcome> {
        match &self.decision {
            Some(Admission::Forward(f)) => Some(&f.outcome),
            Some(Admission::Reject(r)) => r.outcome.as_ref(),
            Some(Admission::Preflight { .. }) | None => None,
        }
    }

    /// The key's expiry warning, when it is inside its warning window.
    pub fn sunset(&self) -> Option<Sunset> {
        match &self.decision {
            Some(Admission::Forward(f)) => f.sunset,
            Some(Admission::Reject(r)) => r.sunset,
            Some(Admission::Preflight { .. }) | None => None,
        }
    }

    /// `Retry-After` seconds for a rejection that has one.
    pub fn retry_after(&self) -> Option<u64> {
        match &self.decision {
            Some(Admission::Reject(r)) => r.retry_after,
            _ => None,
        }
    }
}
