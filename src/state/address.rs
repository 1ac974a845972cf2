//! Addresses as the configuration writes them: `host:port` (or `ip:port` for a
//! listener), never a URL.
//!
//! An address with a scheme (`http://127.0.0.1:8000`, `https://api.example`) is
//! refused rather than guessed at: `https://` would have to mean `tls: true` (and
//! conflict with an explicit `tls: false`), a missing port would need a default and
//! a path could not be honoured. The message says exactly what to write instead.

/// Which setting an address belongs to, for the advice in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Setting {
    /// `upstreams.<name>.address`.
    Upstream,
    /// `server.listen[]`: plain HTTP.
    Listen,
    /// `server.tls_listen[].address`.
    TlsListen,
    /// `server.metrics_listen`.
    Metrics,
    /// `server.admin_listen`.
    Admin,
}

/// Split `host:port` / `[v6]:port` into host and port.
pub(super) fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// When `addr` is written as a URL, why it is refused and what to write instead.
pub(super) fn scheme_problem(addr: &str, setting: Setting) -> Option<String> {
    let (scheme, rest) = addr.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // Credentials in a URL (`user:password@host`) are neither kept nor repeated.
    let (authority, userinfo) = match authority.rsplit_once('@') {
        Some((_, host)) => (host, true),
        None => (authority, false),
    };
    let addr = if userinfo {
        format!(
            "{scheme}://…@{authority}{}",
            if path.is_empty() { "" } else { "/…" }
        )
    } else {
        addr.to_string()
    };
    let default_port = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let bare = match (split_host_port(authority), default_port) {
        (None, Some(port)) if !authority.is_empty() => format!("{authority}:{port}"),
        _ => authority.to_string(),
    };
    let mut message = format!("`{addr}` has a scheme, but addresses take none: write `{bare}`");
    match (setting, scheme.as_str()) {
        (Setting::Upstream, "https") => message.push_str(" and `tls: true`"),
        (Setting::Listen, "https") => {
            message.push_str(" under `server.tls_listen`, with its `cert` and `key`")
        }
        _ => {}
    }
    if userinfo {
        message.push_str("; credentials do not belong in an address");
    }
    if !path.trim_end_matches('/').is_empty() {
        message.push_str(if setting == Setting::Upstream {
            "; an address has no path (keygate forwards the path the client asked for)"
        } else {
            "; an address has no path"
        });
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_refused_with_the_address_to_write() {
        let up = |a| scheme_problem(a, Setting::Upstream).unwrap();
        assert_eq!(
            up("http://127.0.0.1:8000"),
            "`http://127.0.0.1:8000` has a scheme, but addresses take none: write `127.0.0.1:8000`"
        );
        assert!(up("https://api.example").ends_with("write `api.example:443` and `tls: true`"));
        assert!(up("HTTP://[::1]/").ends_with("write `[::1]:80`"));
        assert!(up("https://h:8443/v1").contains("an address has no path"));
        let listen = scheme_problem("https://0.0.0.0:8443", Setting::Listen).unwrap();
        assert!(listen.contains("under `server.tls_listen`"), "{listen}");
        let tls = scheme_problem("https://0.0.0.0:8443", Setting::TlsListen).unwrap();
        assert!(tls.ends_with("write `0.0.0.0:8443`"), "{tls}");
        let secret = up("http://user:hunter2@origin.internal:8000/v1");
        assert!(
            !secret.contains("hunter2") && !secret.contains("user"),
            "{secret}"
        );
        assert!(secret.contains("write `origin.internal:8000`"), "{secret}");
        assert!(secret.contains("credentials do not belong"), "{secret}");
        let metrics = scheme_problem("http://0.0.0.0:9464/metrics", Setting::Metrics).unwrap();
        assert!(!metrics.contains("forwards"), "{metrics}");
        assert_eq!(scheme_problem("127.0.0.1:8000", Setting::Upstream), None);
        assert_eq!(scheme_problem("origin.internal:80", Setting::Metrics), None);
        let admin = scheme_problem("http://127.0.0.1:9465", Setting::Admin).unwrap();
        assert!(admin.ends_with("write `127.0.0.1:9465`"), "{admin}");
    }

    #[test]
    fn host_and_port_split_with_brackets_for_v6() {
        assert_eq!(split_host_port("a.b:80"), Some(("a.b", 80)));
        assert_eq!(split_host_port("[::1]:8443"), Some(("::1", 8443)));
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("a.b"), None);
        assert_eq!(split_host_port("a.b:http"), None);
    }
}
