//! What keygate tells an operator about an origin, beside the access line: refused
//! certificates, an origin rejecting keygate's shared secret, and why a request to an
//! origin failed. Rate-limited, and never a key, a digest or the secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pingora::{Error, ErrorSource};

use crate::logging;
use crate::state::State;
use crate::timestamp;

/// The target of these lines (`KEYGATE_LOG=info,keygate::upstream=debug`).
pub const UPSTREAM_TARGET: &str = "keygate::upstream";

/// An origin that rejects keygate's requests is reported at most this often.
pub const REJECTION_WARNING_PERIOD: Duration = Duration::from_secs(60);

/// Upstream TLS failures logged per second at most (each is also in the access log).
static LAST_TLS_WARNING: AtomicU64 = AtomicU64::new(0);

/// Log why an origin's certificate was refused, at most once a second.
pub(super) fn warn_tls(state: &State, upstream: usize, server: Option<usize>, e: &Error) {
    let now = u64::try_from(timestamp::now_unix()).unwrap_or(0);
    let last = LAST_TLS_WARNING.load(Ordering::Relaxed);
    if now > last
        && LAST_TLS_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let (name, address) = server_names(state, Some(upstream), server);
        log::warn!(target: UPSTREAM_TARGET, "upstream `{name}` server {address}: {}", tls_reason(e));
    }
}

/// Why an origin's certificate was refused: keygate's own verdict, wherever Pingora
/// wrapped it in the error chain (it adds the peer as context on the way out).
fn tls_reason(e: &Error) -> String {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(c) = err.context.as_ref().map(|c| c.as_str()) {
            if c.starts_with(CERT_REFUSED) {
                return c.to_string();
            }
        }
        // Pingora boxes a wrapped error as its cause (`BError`, a `Box<Error>`).
        next = err
            .cause
            .as_deref()
            .and_then(|c| c.downcast_ref::<Box<Error>>())
            .map(|b| &**b);
    }
    let root = e.root_cause();
    if root.downcast_ref::<Error>().is_none() {
        format!("TLS handshake failed: {root}")
    } else {
        "TLS verification failed".to_string()
    }
}

/// How keygate's refusal of an origin certificate begins (see `connected_to_upstream`).
pub(super) const CERT_REFUSED: &str = "origin certificate refused";

/// The origin answered `status` (401 or 403) to a request keygate authenticated: most
/// likely it does not accept keygate's shared secret. Logged at most once a minute per
/// upstream, with the number of rejections held back since the previous line.
pub(super) fn warn_origin_rejection(state: &State, upstream: usize, route: &str, status: u16) {
    let Some(u) = state.upstreams.get(upstream) else {
        return;
    };
    if let Some(more) = u.rejection_warning.admit_now(REJECTION_WARNING_PERIOD) {
        log::warn!(
            target: UPSTREAM_TARGET,
            "upstream `{}` answered {status} to an authenticated request (route {route}): does the origin accept keygate's shared secret (sent in `{}`)?{}",
            u.name,
            state.secret.header,
            logging::more(more)
        );
    }
}

/// Whether Pingora's own `ERROR … Fail to proxy` line for `e` would only repeat the
/// request's access line: an upstream failure (the access line carries its kind in
/// `error=`, the status and the request id; `keygate_upstream_errors_total` counts it)
/// while the access log is on. Internal and client-side errors stay Pingora's to log.
pub fn duplicates_access_line(e: &Error, access_log_on: bool) -> bool {
    access_log_on && e.esource() == &ErrorSource::Upstream
}

/// Log at `debug` why a request to an origin failed, for the failures whose `ERROR`
/// line keygate leaves out (see [`duplicates_access_line`]): the error kind and the
/// operating system's or parser's reason, never the bytes Pingora read from the origin
/// (an invalid response header's buffer could echo anything).
pub(super) fn debug_upstream_failure(
    state: &State,
    upstream: Option<usize>,
    server: Option<usize>,
    e: &Error,
    request_id: &[u8],
) {
    if !log::log_enabled!(target: UPSTREAM_TARGET, log::Level::Debug) {
        return;
    }
    let root = e.root_cause();
    // A Pingora error as the root cause displays its context; only a foreign cause
    // (an I/O or parse error) is a plain reason.
    let reason = if root.downcast_ref::<Error>().is_some() {
        String::new()
    } else {
        format!(": {root}")
    };
    let (name, address) = server_names(state, upstream, server);
    let mut rid = String::new();
    logging::escape_for_log(request_id, &mut rid);
    log::debug!(
        target: UPSTREAM_TARGET,
        "upstream `{name}` ({address}): {}{reason} (request_id={rid})",
        e.etype().as_str()
    );
}

/// The upstream's name and the server's configured address, for log lines.
fn server_names(state: &State, upstream: Option<usize>, server: Option<usize>) -> (&str, &str) {
    let u = upstream.and_then(|u| state.upstreams.get(u));
    (
        u.map_or("-", |u| u.name.as_str()),
        u.and_then(|u| u.server(server?))
            .map_or("-", |s| s.address.as_str()),
    )
}

/// Why a connection failed, in a few words: the error type and the operating system's
/// or TLS library's reason when there is one.
fn connect_reason(e: &Error) -> String {
    let root = e.root_cause();
    if root.downcast_ref::<Error>().is_some() {
        e.etype().as_str().to_string()
    } else {
        format!("{}: {root}", e.etype().as_str())
    }
}

/// A server was ejected after consecutive connect failures (a warning: once per
/// ejection, so at most once per `eject_seconds` per server).
pub(super) fn warn_ejected(state: &State, upstream: usize, server: usize, e: &Error) {
    let (name, address) = server_names(state, Some(upstream), Some(server));
    let (after, seconds, failures) = state.upstreams.get(upstream).map_or((0, 0, 0), |u| {
        let (after, seconds) = u.balancer.ejection_settings();
        (after, seconds, u.balancer.consecutive_failures(server))
    });
    // Past the threshold, the server was back on probation and failed once more.
    let probation = if failures > after {
        " (again: it failed on probation after its last ejection)"
    } else {
        ""
    };
    log::warn!(
        target: UPSTREAM_TARGET,
        "upstream `{name}` server {address} ejected for {seconds} s after {failures} consecutive connect failures{probation} (last: {})",
        connect_reason(e)
    );
}

/// A request is retried on another server after a failed connection (`debug`: the
/// retries are counted in `keygate_upstream_retries_total`).
pub(super) fn debug_retry(
    state: &State,
    upstream: usize,
    server: usize,
    e: &Error,
    request_id: &[u8],
) {
    if !log::log_enabled!(target: UPSTREAM_TARGET, log::Level::Debug) {
        return;
    }
    let (name, address) = server_names(state, Some(upstream), Some(server));
    let mut rid = String::new();
    logging::escape_for_log(request_id, &mut rid);
    log::debug!(
        target: UPSTREAM_TARGET,
        "upstream `{name}` server {address}: connection failed ({}), retrying on another server (request_id={rid})",
        connect_reason(e)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::ErrorType;

    #[test]
    fn the_tls_reason_is_found_under_pingoras_context() {
        let verdict = Error::explain(
            ErrorType::InvalidCert,
            "origin certificate refused: hostname mismatch (expected name `localhost`)",
        )
        .into_up();
        let wrapped = verdict.more_context("Peer: addr: 127.0.0.1:1, scheme: HTTPS");
        assert_eq!(
            tls_reason(&wrapped),
            "origin certificate refused: hostname mismatch (expected name `localhost`)"
        );
        let handshake = Error::because(
            ErrorType::TLSHandshakeFailure,
            "buf: anything",
            std::io::Error::other("unexpected eof"),
        );
        assert_eq!(
            tls_reason(&handshake),
            "TLS handshake failed: unexpected eof"
        );
        assert_eq!(
            tls_reason(&Error::new(ErrorType::InvalidCert)),
            "TLS verification failed"
        );
    }

    #[test]
    fn only_upstream_failures_duplicate_the_access_line() {
        let up = Error::new(ErrorType::ConnectRefused).into_up();
        assert!(duplicates_access_line(&up, true));
        assert!(!duplicates_access_line(&up, false), "access log off");
        let timeout = Error::new(ErrorType::ReadTimedout).into_up();
        assert!(duplicates_access_line(&timeout, true));
        for genuine in [
            Error::new(ErrorType::InternalError).into_in(),
            Error::explain(ErrorType::InternalError, "route without upstream"),
            Error::new(ErrorType::InvalidHTTPHeader).into_down(),
        ] {
            assert!(!duplicates_access_line(&genuine, true), "{genuine}");
        }
    }
}
