//! The client's address and what keygate tells the origin about the connection.
//!
//! By default keygate is the first hop: the client address is the TCP peer,
//! and any `X-Forwarded-*` a client sends is replaced (an `X-Forwarded-For`
//! from an untrusted client is *replaced* by the peer address, not appended
//! to). Behind a load balancer, list it in `server.trusted_proxies`: only when
//! the TCP peer is trusted are the incoming `X-Forwarded-For` entries kept, and
//! the client address becomes the right-most entry that is not itself a
//! trusted proxy (the same walk nginx's `real_ip_recursive` and Envoy's
//! `xff_num_trusted_hops` do); a trusted peer's `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `X-Forwarded-Port` are kept when they are valid.
//! IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) are treated as IPv4.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use crate::headers;

/// The proxies whose forwarding headers keygate believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse CIDR blocks or single addresses (`10.0.0.0/8`, `192.0.2.7`, `::1`).
    ///
    /// # Errors
    /// The index and text of the first entry that is neither.
    pub fn parse(list: &[String]) -> Result<TrustedProxies, (usize, String)> {
        let mut nets = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let net = match s.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match s.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(canonical_ip(ip)),
                    Err(_) => return Err((i, s.clone())),
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether no proxy is trusted (keygate is the first hop).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// `ip` with IPv4-mapped IPv6 addresses turned into IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parse one `X-Forwarded-For` entry: an address, optionally with a port (`a.b.c.d:p`,
/// `[v6]:p`), as some balancers write it.
fn parse_entry(e: &str) -> Option<IpAddr> {
    let e = e.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(canonical_ip(sa.ip()));
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(canonical_ip)
}

/// Who the client is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Client {
    /// The client address (for the brute-force limiter, the access log and the origin).
    pub addr: Option<IpAddr>,
    /// The TCP peer, canonical.
    pub peer: Option<IpAddr>,
    /// Whether the TCP peer is a trusted proxy.
    pub via_trusted_proxy: bool,
}

/// Find the client address from the TCP `peer` and, when the peer is trusted, the
/// incoming `X-Forwarded-For` entries (right to left, skipping trusted proxies; an
/// unparsable entry stops the walk at the last trusted hop).
pub fn client(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Client {
    let peer = peer.map(canonical_ip);
    let Some(p) = peer.filter(|&p| !trusted.is_empty() && trusted.contains(p)) else {
        return Client {
            addr: peer,
            peer,
            via_trusted_proxy: false,
        };
    };
    let mut addr = p;
    let values: Vec<&str> = headers
        .get_all(&headers::X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    'walk: for v in values.iter().rev() {
        for e in v.rsplit(',') {
            if e.trim().is_empty() {
                continue;
            }
            match parse_entry(e) {
                Some(ip) => {
                    addr = ip;
                    if !trusted.contains(ip) {
                        break 'walk;
                    }
                }
                None => break 'walk,
            }
        }
    }
    Client {
        addr: Some(addr),
        peer,
        via_trusted_proxy: true,
    }
}

/// The forwarding headers keygate sends to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// `X-Forwarded-For`: the peer, after a trusted proxy's incoming list.
    pub for_: Option<HeaderValue>,
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub proto: HeaderValue,
    /// `X-Forwarded-Host`: the canonical host.
    pub host: Option<HeaderValue>,
    /// `X-Forwarded-Port`: the port the client connected to.
    pub port: Option<HeaderValue>,
}

static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Decide the forwarding headers for a request.
///
/// `headers` are the client's request headers (read before keygate strips them),
/// `client` comes from [`client`], `tls` says whether the client connection is TLS,
/// `local_port` is the listener's port and `host` the canonical `host[:port]`.
pub fn forwarded(
    headers: &HeaderMap,
    client: &Client,
    tls: bool,
    local_port: Option<u16>,
    host: Option<&[u8]>,
) -> Forwarded {
    let own_proto = if tls { &HTTPS } else { &HTTP };
    let mut f = Forwarded {
        for_: client.peer.and_then(|p| ip_value(p, None)),
        proto: own_proto.clone(),
        host: host.and_then(|h| HeaderValue::from_bytes(h).ok()),
        port: local_port.map(HeaderValue::from),
    };
    if !client.via_trusted_proxy {
        return f;
    }
    let mut chain = String::with_capacity(64);
    for v in headers.get_all(&headers::X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            for e in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                chain.push_str(e);
                chain.push_str(", ");
            }
        }
    }
    if let Some(p) = client.peer {
        f.for_ = ip_value(p, Some(chain));
    }
    if let Some(v) = single(headers, &headers::X_FORWARDED_PROTO) {
        if v.eq_ignore_ascii_case(b"https") {
            f.proto = HTTPS.clone();
        } else if v.eq_ignore_ascii_case(b"http") {
            f.proto = HTTP.clone();
        }
    }
    if let Some(v) = single(headers, &headers::X_FORWARDED_HOST) {
        if let Ok(a) = crate::host::canonical(v) {
            f.host = HeaderValue::from_bytes(a.as_bytes()).ok().or(f.host);
        }
    }
    if let Some(v) = single(headers, &headers::X_FORWARDED_PORT) {
        if let Some(p) = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
        {
            f.port = Some(HeaderValue::from(p));
        }
    }
    f
}

fn single<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h [u8]> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v.as_bytes()),
        _ => None,
    }
}

fn ip_value(ip: IpAddr, prefix: Option<String>) -> Option<HeaderValue> {
    let mut s = prefix.unwrap_or_else(|| String::with_capacity(48));
    crate::text::push_ip(ip, &mut s);
    // The string's buffer becomes the value's: no second copy.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&headers::X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cidrs_and_addresses() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.1.2.3/8"]);
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(t.contains(ip("2001:db8::5")));
        assert!(t.contains(ip("::ffff:10.0.0.1")));
        assert_eq!(
            TrustedProxies::parse(&["10.0.0.0/8".into(), "nope".into()]),
            Err((1, "nope".into()))
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn untrusted_peer_is_the_client_and_its_xff_is_replaced() {
        let h = xff(&["6.6.6.6"]);
        let c = client(Some(ip("203.0.113.9")), &h, &TrustedProxies::default());
        assert_eq!(c.addr, Some(ip("203.0.113.9")));
        let f = forwarded(&h, &c, false, Some(8080), Some(b"api.test"));
        assert_eq!(f.for_.unwrap(), "203.0.113.9");
        assert_eq!(f.proto, "http");
        assert_eq!(f.port.unwrap(), "8080");
        assert_eq!(f.host.unwrap(), "api.test");
        // The same with proxies configured, but the peer not among them.
        let c = client(Some(ip("203.0.113.9")), &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(c.addr, Some(ip("203.0.113.9")));
        assert!(!c.via_trusted_proxy);
    }

    #[test]
    fn trusted_peer_walks_xff_from_the_right() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["6.6.6.6, 198.51.100.1", "10.0.0.2"]);
        let c = client(Some(ip("10.0.0.1")), &h, &t);
        assert_eq!(c.addr, Some(ip("198.51.100.1")));
        let f = forwarded(&h, &c, false, Some(80), None);
        assert_eq!(f.for_.unwrap(), "6.6.6.6, 198.51.100.1, 10.0.0.2, 10.0.0.1");
        // All trusted: the left-most entry.
        let c = client(Some(ip("10.0.0.1")), &xff(&["10.9.9.9"]), &t);
        assert_eq!(c.addr, Some(ip("10.9.9.9")));
        // Garbage stops the walk at the last trusted hop.
        let c = client(Some(ip("10.0.0.1")), &xff(&["1.2.3.4, junk, 10.0.0.3"]), &t);
        assert_eq!(c.addr, Some(ip("10.0.0.3")));
        // Ports and brackets are tolerated.
        let c = client(Some(ip("10.0.0.1")), &xff(&["[2001:db8::1]:443"]), &t);
        assert_eq!(c.addr, Some(ip("2001:db8::1")));
        let c = client(Some(ip("10.0.0.1")), &xff(&["192.0.2.1:5555"]), &t);
        assert_eq!(c.addr, Some(ip("192.0.2.1")));
        // No XFF at all: the proxy itself.
        let c = client(Some(ip("10.0.0.1")), &HeaderMap::new(), &t);
        assert_eq!(c.addr, Some(ip("10.0.0.1")));
    }

    #[test]
    fn trusted_peer_scheme_host_and_port_are_kept_when_valid() {
        let t = trusted(&["127.0.0.1"]);
        let mut h = HeaderMap::new();
        h.insert(
            &headers::X_FORWARDED_PROTO,
            HeaderValue::from_static("HTTPS"),
        );
        h.insert(
            &headers::X_FORWARDED_HOST,
            HeaderValue::from_static("Shop.Example."),
        );
        h.insert(&headers::X_FORWARDED_PORT, HeaderValue::from_static("443"));
        let c = client(Some(ip("127.0.0.1")), &h, &t);
        let f = forwarded(&h, &c, false, Some(8080), Some(b"internal"));
        assert_eq!(f.proto, "https");
        assert_eq!(f.host.unwrap(), "shop.example");
        assert_eq!(f.port.unwrap(), "443");
        h.insert(
            &headers::X_FORWARDED_PROTO,
            HeaderValue::from_static("gopher"),
        );
        h.insert(
            &headers::X_FORWARDED_PORT,
            HeaderValue::from_static("99999"),
        );
        h.insert(&headers::X_FORWARDED_HOST, HeaderValue::from_static("a b"));
        let f = forwarded(&h, &c, false, Some(8080), Some(b"internal"));
        assert_eq!(f.proto, "http");
        assert_eq!(f.host.unwrap(), "internal");
        assert_eq!(f.port.unwrap(), "8080");
    }

    #[test]
    fn mapped_peers_count_as_ipv4() {
        let c = client(
            Some(ip("::ffff:192.0.2.5")),
            &HeaderMap::new(),
            &TrustedProxies::default(),
        );
        assert_eq!(c.addr, Some(ip("192.0.2.5")));
    }
}
