//! The PROXY protocol header an L4 balancer puts before a connection's first byte.
//!
//! A balancer that forwards TCP (AWS NLB, HAProxy in TCP mode, nginx `stream`)
//! cannot add `X-Forwarded-For`; instead it opens each connection to keygate with
//! one header naming the client it forwards, in the text form (v1) or the binary
//! form (v2) of HAProxy's PROXY protocol
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, sections 2.1
//! and 2.2). This module only *parses* such a header, strictly and without ever
//! panicking; whether to read one at all (only from `server.trusted_proxies`
//! peers) is [`crate::conn`]'s business.
//!
//! What is accepted:
//! - v1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, the same with `TCP6`, or
//!   `PROXY UNKNOWN…\r\n` (anything up to the CRLF ignored); single spaces, ports
//!   in decimal without leading zeros, at most 107 bytes in all.
//! - v2: the 12-byte signature, version 2, command `LOCAL` (a health check from the
//!   balancer itself: the peer address stands) or `PROXY`, family `UNSPEC`,
//!   `INET`, `INET6` or `UNIX` over `STREAM` (or `UNSPEC`), at most
//!   [`MAX_V2_PAYLOAD`] bytes of addresses and TLVs. TLVs are skipped.
//!
//! Only the source address matters to keygate; a header that carries none (v1
//! `UNKNOWN`, v2 `LOCAL`, `UNSPEC` or `UNIX`) leaves the peer address in place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (spec section 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix, space included.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 header, CRLF included (spec section 2.1).
pub const V1_MAX_BYTES: usize = 107;
/// Most bytes of addresses and TLVs a v2 header may announce. The addresses take
/// at most 216 bytes; balancers add a few TLVs (AWS NLB its VPC endpoint id,
/// HAProxy an ALPN, authority or unique id); past this keygate refuses the header.
pub const MAX_V2_PAYLOAD: usize = 1536;
/// Longest header of either version.
pub const MAX_HEADER_BYTES: usize = 16 + MAX_V2_PAYLOAD;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete, valid header of `len` bytes; `source` is the client it names,
    /// `None` when it names none (the peer address stands).
    Header {
        /// The client's address and port.
        source: Option<SocketAddr>,
        /// The header's length in bytes; what follows is the client's own data.
        len: usize,
    },
    /// The bytes so far are the beginning of a header (or too few to tell): read more.
    Incomplete,
    /// The bytes do not start a PROXY header at all (plain HTTP or a TLS ClientHello).
    NotProxy,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A v1 header without its CRLF within 107 bytes.
    #[error("PROXY v1 header longer than 107 bytes")]
    TooLong,
    /// A v1 header that breaks the grammar.
    #[error("malformed PROXY v1 header")]
    MalformedV1,
    /// A v2 header with a version other than 2 or an unknown command.
    #[error("PROXY v2 header with an unknown version or command")]
    V2Version,
    /// A v2 header with an unknown address family or transport, or a datagram one.
    #[error("PROXY v2 header with an unsupported address family or transport")]
    V2Family,
    /// A v2 header whose length is too short for its addresses or over [`MAX_V2_PAYLOAD`].
    #[error("PROXY v2 header with a bad length")]
    V2Length,
}

/// Parse the PROXY header at the start of `buf`, the bytes read from a connection so
/// far (any number, including none, and possibly followed by the client's data).
///
/// # Errors
/// A [`HeaderError`] when `buf` starts like a header but is not a valid one; the
/// connection must then be closed.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v2(buf);
    }
    if starts_like(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v1(buf);
    }
    Ok(Parsed::NotProxy)
}

/// Whether `buf` and `pattern` agree on their common length.
fn starts_like(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf[..n] == pattern[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        // A byte that can never be in a header decides first, so that a prefix and the
        // whole agree on why they are refused (the fuzzer checks it).
        return if !window
            .iter()
            .all(|&b| b == b'\r' || b == b' ' || b.is_ascii_graphic())
        {
            Err(HeaderError::MalformedV1)
        } else if buf.len() >= V1_MAX_BYTES {
            Err(HeaderError::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    // The line ends in CRLF, and holds no other control character.
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Err(HeaderError::MalformedV1);
    };
    if !line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Err(HeaderError::MalformedV1);
    }
    let len = lf + 1;
    let mut fields = line[V1_PREFIX.len()..].split(|&b| b == b' ');
    let source = match fields.next() {
        Some(b"UNKNOWN") => {
            // Anything may follow UNKNOWN up to the CRLF; it is ignored.
            return Ok(Parsed::Header { source: None, len });
        }
        Some(b"TCP4") => v1_source(&mut fields, |s| s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)),
        Some(b"TCP6") => v1_source(&mut fields, |s| s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)),
        _ => None,
    };
    match (source, fields.next()) {
        (Some(source), None) => Ok(Parsed::Header {
            source: Some(source),
            len,
        }),
        _ => Err(HeaderError::MalformedV1),
    }
}

/// Read `src dst sport dport` (addresses through `addr`) and return the source.
fn v1_source<'a>(
    fields: &mut impl Iterator<Item = &'a [u8]>,
    addr: impl Fn(&str) -> Option<IpAddr>,
) -> Option<SocketAddr> {
    let mut next = || fields.next().and_then(|f| std::str::from_utf8(f).ok());
    let src = addr(next()?)?;
    addr(next()?)?;
    let sport = port(next()?)?;
    port(next()?)?;
    Some(SocketAddr::new(src, sport))
}

/// A port in decimal: digits only, no leading zero (but `0` itself), at most 65535.
fn port(s: &str) -> Option<u16> {
    let digits = s.bytes().all(|b| b.is_ascii_digit());
    if !digits || s.is_empty() || s.len() > 5 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (ver_cmd, fam, declared) = (
        buf[12],
        buf[13],
        usize::from(u16::from_be_bytes([buf[14], buf[15]])),
    );
    let local = match ver_cmd {
        0x20 => true,
        0x21 => false,
        _ => return Err(HeaderError::V2Version),
    };
    if declared > MAX_V2_PAYLOAD {
        return Err(HeaderError::V2Length);
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    // Transport: 0 UNSPEC, 1 STREAM; 2 DGRAM makes no sense on a TCP connection.
    if family > 3 || transport > 1 {
        return Err(HeaderError::V2Family);
    }
    // The address block each family needs (spec 2.2: 12, 36, 216 bytes).
    let needed = [0, 12, 36, 216][usize::from(family)];
    if declared < needed {
        return Err(HeaderError::V2Length);
    }
    let len = 16 + declared;
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    if local || transport == 0 {
        // LOCAL: the balancer's own connection (a health check); UNSPEC: nothing said.
        return Ok(Parsed::Header { source: None, len });
    }
    let a = &buf[16..len];
    let source = match family {
        1 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([a[8], a[9]]),
            ))
        }
        2 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC and UNIX carry no IP address: the peer address stands.
        _ => None,
    };
    Ok(Parsed::Header { source, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(cmd);
        h.push(fam);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                source: sa("192.0.2.1:56324"),
                len: 45
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                source: sa("[2001:db8::1]:65535"),
                len: h.len()
            })
        );
        let h = b"PROXY UNKNOWN ffff::1 whatever\r\nrest";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                source: None,
                len: h.len() - 4
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                source: None,
                len: 15
            })
        );
    }

    #[test]
    fn v1_is_strict() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n"[..],
            b"PROXY TCP4 192.0.2.1  198.51.100.2 56324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +5632 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",
            b"PROXY TCP4 192.0.2.1\t198.51.100.2 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 1.2.3.4 \xff 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // No CRLF within 107 bytes.
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(parse(&long), Err(HeaderError::TooLong));
        // 107 bytes exactly is fine.
        let max = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 91], b"\r\n"].concat();
        assert_eq!(max.len(), 107);
        assert!(matches!(parse(&max), Ok(Parsed::Header { len: 107, .. })));
    }

    #[test]
    fn prefixes_are_incomplete_and_other_protocols_are_not_proxy() {
        let full = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), Ok(Parsed::Incomplete), "{n}");
        }
        let full = v2(0x21, 0x11, &[192, 0, 2, 1, 10, 0, 0, 1, 0x1f, 0x90, 1, 187]);
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), Ok(Parsed::Incomplete), "{n}");
        }
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /",
            b"PUT",
            b"PRI * HTTP/2.0",
            b"\x16\x03\x01\x02\x00",
            b"\r\n\r\nGET",
            b"PROXYX",
        ] {
            assert_eq!(parse(other), Ok(Parsed::NotProxy), "{other:?}");
        }
    }

    #[test]
    fn v2_inet_inet6_local_and_tlvs() {
        // PROXY, INET/STREAM, then a TLV (type 0x04 NOOP, 3 bytes) and the client's data.
        let mut payload = vec![192, 0, 2, 1, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        payload.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]);
        let mut h = v2(0x21, 0x11, &payload);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                source: sa("192.0.2.1:56324"),
                len
            })
        );
        let mut p6 = vec![0u8; 36];
        p6[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        p6[32..34].copy_from_slice(&8443u16.to_be_bytes());
        assert_eq!(
            parse(&v2(0x21, 0x21, &p6)),
            Ok(Parsed::Header {
                source: sa("[2001:db8::7]:8443"),
                len: 52
            })
        );
        // LOCAL (a health check), UNSPEC and UNIX name no client.
        for (cmd, fam, payload) in [
            (0x20, 0x00, vec![]),
            (0x20, 0x11, vec![0; 12]),
            (0x21, 0x00, vec![]),
            (0x21, 0x10, vec![0; 12]),
            (0x21, 0x31, vec![0; 216]),
        ] {
            assert!(matches!(
                parse(&v2(cmd, fam, &payload)),
                Ok(Parsed::Header { source: None, .. })
            ));
        }
    }

    #[test]
    fn v2_is_strict() {
        assert_eq!(
            parse(&v2(0x11, 0x11, &[0; 12])),
            Err(HeaderError::V2Version)
        );
        assert_eq!(
            parse(&v2(0x22, 0x11, &[0; 12])),
            Err(HeaderError::V2Version)
        );
        assert_eq!(parse(&v2(0x21, 0x41, &[0; 12])), Err(HeaderError::V2Family));
        assert_eq!(parse(&v2(0x21, 0x12, &[0; 12])), Err(HeaderError::V2Family));
        assert_eq!(parse(&v2(0x21, 0x13, &[0; 12])), Err(HeaderError::V2Family));
        assert_eq!(parse(&v2(0x21, 0x11, &[0; 11])), Err(HeaderError::V2Length));
        assert_eq!(parse(&v2(0x21, 0x21, &[0; 35])), Err(HeaderError::V2Length));
        assert_eq!(
            parse(&v2(0x21, 0x31, &[0; 215])),
            Err(HeaderError::V2Length)
        );
        // An announced length over the cap is refused before its bytes arrive.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&h), Err(HeaderError::V2Length));
        let at_cap = v2(0x21, 0x11, &[0; MAX_V2_PAYLOAD]);
        assert_eq!(at_cap.len(), MAX_HEADER_BYTES);
        assert!(matches!(parse(&at_cap), Ok(Parsed::Header { .. })));
    }

    #[test]
    fn never_panics_on_short_or_odd_bytes() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 64) as usize;
            let mut b: Vec<u8> = if seed & 1 == 0 {
                V2_SIGNATURE.to_vec()
            } else {
                b"PROXY ".to_vec()
            };
            b.extend((0..n).map(|i| (seed >> (i % 8 * 8)) as u8));
            let _ = parse(&b);
            let _ = parse(&b[..b.len() / 2]);
        }
    }
}
