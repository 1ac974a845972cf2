//! Text for the request path without `core::fmt`: decimal integers (through `itoa`) and
//! IP addresses, appended to a `String` or a byte buffer.
//!
//! `write!(out, "{ip}")` costs several hundred instructions through `fmt`'s machinery;
//! these write the same text directly (the `benches/icount.rs` cases `rewrite` and
//! `access_log` count the difference).

use std::net::IpAddr;

/// Append `n` in decimal.
pub fn push_int(n: impl itoa::Integer, out: &mut String) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Append `ip` as `Display` writes it: dotted decimal for IPv4, RFC 5952 text for IPv6
/// (through `fmt`: rare enough on the request path, and its compression rules are
/// easy to get wrong).
pub fn push_ip(ip: IpAddr, out: &mut String) {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(b.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Append `micros` as milliseconds with three decimals (`1234` → `1.234`).
pub fn push_millis(micros: u128, out: &mut String) {
    push_int(micros / 1000, out);
    let frac = (micros % 1000) as u16;
    out.push('.');
    for d in [frac / 100, frac / 10 % 10, frac % 10] {
        out.push(char::from(b'0' + d as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_as_display() {
        for ip in [
            "0.0.0.0",
            "192.0.2.1",
            "255.255.255.255",
            "10.20.3.40",
            "::1",
            "2001:db8::8:800:200c:417a",
            "::ffff:192.0.2.1",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::from("x=");
            push_ip(ip, &mut s);
            assert_eq!(s, format!("x={ip}"));
        }
        for n in [0u64, 7, 10, 99, 100, 65535, u64::MAX] {
            let mut s = String::new();
            push_int(n, &mut s);
            assert_eq!(s, n.to_string());
        }
        for (us, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (1234, "1.234"),
            (60_000_010, "60000.010"),
        ] {
            let mut s = String::new();
            push_millis(us, &mut s);
            assert_eq!(s, text);
        }
    }
}
