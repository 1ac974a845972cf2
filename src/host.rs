//! The canonical host of a request: what routes match and what the origin is told.
//!
//! Origins canonicalize hosts before choosing a site: nginx drops a trailing dot
//! (`api.test.` serves `api.test`), every server compares names without regard
//! to letter case, and ports are numbers (`:080` is `:80`). A gateway that
//! matched the raw `Host` would route `api.test.` past a host-bound route to a
//! broader one while the origin serves the protected site. keygate therefore
//! parses `Host` (RFC 9112 §3.2, RFC 3986 §3.2.2), refuses what is not a valid
//! host (400), routes on the canonical name and forwards the canonical value.
//!
//! Accepted: a DNS-style name of letters, digits, `-`, `_` and `.` (at most 253
//! characters, no empty label, one trailing dot dropped), an IPv4 literal, or an
//! IPv6 literal in brackets (without a zone), optionally followed by `:port`
//! (decimal, at most 65535; an empty port is dropped). Refused: userinfo (`@`),
//! percent-encoding, non-ASCII (send IDNA names as `xn--`), any other character.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// The longest host name accepted, in bytes (RFC 1035 §2.3.4).
pub const MAX_HOST_LEN: usize = 253;

/// Why a `Host` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// The value is not a valid `host[:port]` (RFC 9112 §3.2: answer 400).
    Invalid,
}

/// A canonical `host[:port]`: lower-case, no trailing dot, decimal port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    /// `host[:port]` as forwarded (for IPv6: `[addr]:port`); borrowed when already canonical.
    full: Cow<'a, [u8]>,
    /// Length of the host part inside `full` (brackets included for IPv6).
    host_len: usize,
}

impl Authority<'_> {
    /// The whole `host[:port]`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.full
    }

    /// The host alone, without port; IPv6 literals without brackets (as routes name them).
    pub fn host(&self) -> &[u8] {
        let h = &self.full[..self.host_len];
        h.strip_prefix(b"[")
            .and_then(|h| h.strip_suffix(b"]"))
            .unwrap_or(h)
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Whether `raw` is already canonical: the common case needs no allocation.
fn already_canonical(raw: &[u8]) -> Option<usize> {
    let (host, port) = match raw.iter().position(|&b| b == b':') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let name_ok = !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && !host.starts_with(b".")
        && !host.ends_with(b".")
        && !host.windows(2).any(|w| w == b"..");
    let port_ok = match port {
        None => true,
        Some(p) => {
            !p.is_empty()
                && p.len() <= 5
                && p[0] != b'0'
                && p.iter().all(u8::is_ascii_digit)
                && parse_port(p).is_some()
        }
    };
    (name_ok && port_ok).then_some(host.len())
}

fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(p).ok()?.parse().ok()
}

/// Parse and canonicalize a `Host` value (or an absolute-form authority).
///
/// Input: the raw header bytes, e.g. `API.Test.:080`. Output: `api.test:80`.
/// Follows RFC 9112 §3.2 (an invalid `Host` is a 400) and RFC 3986 §3.2.2/§6.2.2
/// (case and port normalization), plus nginx's trailing-dot rule.
///
/// # Errors
/// [`HostError::Invalid`] for anything that is not a valid `host[:port]`.
pub fn canonical(raw: &[u8]) -> Result<Authority<'_>, HostError> {
    if let Some(host_len) = already_canonical(raw) {
        return Ok(Authority {
            full: Cow::Borrowed(raw),
            host_len,
        });
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix(b"[") {
        let end = rest
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::Invalid)?;
        let inner = std::str::from_utf8(&rest[..end]).map_err(|_| HostError::Invalid)?;
        let addr: Ipv6Addr = inner.parse().map_err(|_| HostError::Invalid)?;
        let after = &rest[end + 1..];
        let port = match after {
            [] => None,
            [b':', p @ ..] => Some(p),
            _ => return Err(HostError::Invalid),
        };
        (format!("[{addr}]").into_bytes(), port)
    } else {
        let (name, port) = match raw.iter().position(|&b| b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty()
            || name.len() > MAX_HOST_LEN
            || !name.iter().all(|&b| is_name_byte(b))
            || name.starts_with(b".")
            || name.ends_with(b".")
            || name.windows(2).any(|w| w == b"..")
        {
            return Err(HostError::Invalid);
        }
        (name.to_ascii_lowercase(), port)
    };
    let host_len = host.len();
    let mut full = host;
    match port {
        None | Some([]) => {}
        Some(p) => {
            let n = parse_port(p).ok_or(HostError::Invalid)?;
            full.push(b':');
            full.extend_from_slice(n.to_string().as_bytes());
        }
    }
    Ok(Authority {
        full: Cow::Owned(full),
        host_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<String, HostError> {
        canonical(s.as_bytes()).map(|a| String::from_utf8(a.as_bytes().to_vec()).unwrap())
    }

    fn host(s: &str) -> String {
        String::from_utf8(canonical(s.as_bytes()).unwrap().host().to_vec()).unwrap()
    }

    #[test]
    fn canonical_forms() {
        for (raw, want) in [
            ("api.test", "api.test"),
            ("api.test.", "api.test"),
            ("API.Test", "api.test"),
            ("api.test.:80", "api.test:80"),
            ("api.test:080", "api.test:80"),
            ("api.test:", "api.test"),
            ("api.test:8443", "api.test:8443"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:8080", "[::1]:8080"),
            ("[0:0::1]", "[::1]"),
            ("[2001:DB8::1]:443", "[2001:db8::1]:443"),
            ("internal_host", "internal_host"),
        ] {
            assert_eq!(c(raw).as_deref(), Ok(want), "{raw}");
        }
        assert_eq!(host("API.test.:8080"), "api.test");
        assert_eq!(host("[::1]:1"), "::1");
    }

    #[test]
    fn invalid_hosts_are_refused() {
        for raw in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.b..",
            "user@api.test",
            "api.test:80:80",
            "api.test:99999",
            "api.test:8o",
            "api.test:+80",
            "api%2etest",
            "api test",
            "api.test/x",
            "[::1",
            "[::1]x",
            "[fe80::1%eth0]",
            "[not-v6]",
            "b\u{fc}cher.de",
            "a,b",
        ] {
            assert_eq!(c(raw), Err(HostError::Invalid), "{raw:?}");
        }
        assert_eq!(c(&"a".repeat(254)), Err(HostError::Invalid));
        assert!(c(&"a".repeat(253)).is_ok());
    }
}
