//! The access log's lines: one record per finished request, as a text line or a JSON
//! object, formatted without a log record (and so without locks or allocation once the
//! thread's line buffer has grown).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::write_timestamp;

/// The access log's target, so it can be filtered like any other
/// (`KEYGATE_LOG=info,keygate::access=off`).
pub const ACCESS_TARGET: &str = "keygate::access";

/// How access-log lines are written (`server.access_log.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// `key=value` pairs after a timestamp, level and target, like every other line.
    #[default]
    Text,
    /// One JSON object per line, with the same fields plus `timestamp`, `level`, `target`.
    Json,
}

/// One access-log record: plain values, built by the proxy for each finished request.
/// `None` is written as `-` in text and as `null` in JSON.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The request method (`None` when no request head was read).
    pub method: Option<&'a str>,
    /// The request path as received, without the query string (`None` when no request
    /// head was read).
    pub path: Option<&'a [u8]>,
    /// The status sent (0 when none: `0` in text, `null` in JSON).
    pub status: u16,
    /// The route name.
    pub route: Option<&'a str>,
    /// The consumer id.
    pub consumer: Option<&'a str>,
    /// The key id (never the key).
    pub key_id: Option<&'a str>,
    /// keygate's problem code, when keygate answered itself.
    pub code: Option<&'a str>,
    /// Time from the start of the request to its end.
    pub duration: Duration,
    /// The request id.
    pub request_id: &'a [u8],
    /// The client address (after trusted proxies).
    pub client: Option<IpAddr>,
    /// The error kind that ended the request, if any.
    pub error: Option<&'a str>,
    /// The key's `expires_at` (Unix seconds) when it was inside its expiry warning
    /// window (text: only then; JSON: always, `null` otherwise).
    pub key_expires_at: Option<i64>,
    /// The upstream server (its configured address) the request went to last, when one
    /// was chosen (text: only then; JSON: always, `null` otherwise).
    pub upstream_server: Option<&'a str>,
    /// The server a connection failed to before the request was retried on
    /// `upstream_server`; written first, comma-separated (`10.0.0.1:80,10.0.0.2:80`).
    pub retried_from: Option<&'a str>,
}

/// Append one whole access-log line for `r` to `out`, newline included: the current
/// time, then the record in `format`.
pub fn format_line(format: Format, r: &AccessRecord<'_>, out: &mut String) {
    match format {
        Format::Text => text(r, out),
        Format::Json => json(r, out),
    }
}

/// `2026-11-27T20:30:39.287Z INFO  keygate::access: method=GET path=/x status=200 …`
fn text(r: &AccessRecord<'_>, out: &mut String) {
    write_timestamp(out);
    out.push_str(" INFO  ");
    out.push_str(ACCESS_TARGET);
    out.push_str(": method=");
    out.push_str(r.method.unwrap_or("-"));
    out.push_str(" path=");
    match r.path {
        Some(p) => escape_for_log(p, out),
        None => out.push('-'),
    }
    out.push_str(" status=");
    crate::text::push_int(r.status, out);
    for (name, value) in [
        (" route=", r.route),
        (" consumer=", r.consumer),
        (" key_id=", r.key_id),
        (" code=", r.code),
    ] {
        out.push_str(name);
        out.push_str(value.unwrap_or("-"));
    }
    out.push_str(" duration_ms=");
    duration_ms(r.duration, out);
    out.push_str(" request_id=");
    escape_for_log(r.request_id, out);
    match r.client {
        Some(ip) => {
            out.push_str(" client=");
            crate::text::push_ip(ip, out);
        }
        None => out.push_str(" client=-"),
    }
    if let Some(e) = r.error {
        let _ = write!(out, " error={e:?}");
    }
    if let Some(t) = r.key_expires_at {
        out.push_str(" key_expires_at=");
        out.push_str(&crate::timestamp::format_rfc3339(t));
    }
    if let Some(server) = r.upstream_server {
        out.push_str(" upstream_server=");
        upstream_servers(r.retried_from, server, out, escape_for_log);
    }
    out.push('\n');
}

/// `first,last` (or `last`), each escaped with `escape`.
fn upstream_servers(
    first: Option<&str>,
    last: &str,
    out: &mut String,
    escape: fn(&[u8], &mut String),
) {
    if let Some(f) = first {
        escape(f.as_bytes(), out);
        out.push(',');
    }
    escape(last.as_bytes(), out);
}

/// `{"timestamp":"…","level":"INFO","target":"keygate::access","method":"GET",…}`: every
/// field always present, `null` when absent.
fn json(r: &AccessRecord<'_>, out: &mut String) {
    out.push_str("{\"timestamp\":\"");
    write_timestamp(out);
    out.push_str("\",\"level\":\"INFO\",\"target\":\"");
    out.push_str(ACCESS_TARGET);
    out.push_str("\",\"method\":");
    json_opt(r.method, out);
    out.push_str(",\"path\":");
    match r.path {
        Some(p) => {
            out.push('"');
            escape_for_json_log(p, out);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"status\":");
    if r.status == 0 {
        out.push_str("null");
    } else {
        crate::text::push_int(r.status, out);
    }
    for (name, value) in [
        (",\"route\":", r.route),
        (",\"consumer\":", r.consumer),
        (",\"key_id\":", r.key_id),
        (",\"code\":", r.code),
    ] {
        out.push_str(name);
        json_opt(value, out);
    }
    out.push_str(",\"duration_ms\":");
    duration_ms(r.duration, out);
    out.push_str(",\"request_id\":\"");
    escape_for_json_log(r.request_id, out);
    out.push_str("\",\"client\":");
    match r.client {
        Some(ip) => {
            out.push('"');
            crate::text::push_ip(ip, out);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"error\":");
    json_opt(r.error, out);
    out.push_str(",\"key_expires_at\":");
    match r.key_expires_at {
        Some(t) => {
            out.push('"');
            out.push_str(&crate::timestamp::format_rfc3339(t));
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"upstream_server\":");
    match r.upstream_server {
        Some(server) => {
            out.push('"');
            upstream_servers(r.retried_from, server, out, escape_for_json_log);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str("}\n");
}

/// Milliseconds with three decimals (microsecond resolution): `7.265`.
fn duration_ms(d: Duration, out: &mut String) {
    crate::text::push_millis(d.as_micros(), out);
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Whether a byte is written as itself in a log line: visible ASCII except `"` and `%`.
fn plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'"' && b != b'%'
}

fn percent(b: u8, out: &mut String) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
}

/// Write `bytes` for a log line: visible ASCII as is (except `"` and `%`), every
/// other byte as `%XX`, so raw UTF-8 shows as its percent-encoded bytes and a log
/// reader can never mistake it for an escape that was let through.
pub fn escape_for_log(bytes: &[u8], out: &mut String) {
    // Most values need no escape: copy the plain run in one go.
    let run = bytes.iter().position(|&b| !plain(b)).unwrap_or(bytes.len());
    let (head, rest) = bytes.split_at(run);
    if let Ok(s) = std::str::from_utf8(head) {
        out.push_str(s);
    }
    for &b in rest {
        if plain(b) {
            out.push(char::from(b));
        } else {
            percent(b, out);
        }
    }
}

/// [`escape_for_log`], then escaped for the inside of a JSON string (only `\` is left
/// to escape): the JSON value reads exactly as the text line's.
fn escape_for_json_log(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b == b'\\' {
            out.push_str("\\\\");
        } else if plain(b) {
            out.push(char::from(b));
        } else {
            percent(b, out);
        }
    }
}

/// A JSON string for `s`, or `null`.
fn json_opt(s: Option<&str>, out: &mut String) {
    match s {
        Some(s) => json_string(s, out),
        None => out.push_str("null"),
    }
}

/// `s` as a JSON string (RFC 8259 §7): `"` and `\` escaped, control characters as
/// `\u00XX`, everything else as it is.
pub fn json_string(s: &str, out: &mut String) {
    out.push('"');
    let mut plain_from = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            out.push_str(&s[plain_from..i]);
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                _ => {
                    out.push_str("\\u00");
                    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
                    out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
                }
            }
            plain_from = i + 1;
        }
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(path: &'a [u8], request_id: &'a [u8]) -> AccessRecord<'a> {
        AccessRecord {
            method: Some("GET"),
            path: Some(path),
            status: 200,
            route: Some("api"),
            consumer: Some("acme"),
            key_id: Some("acme-1"),
            code: None,
            duration: Duration::from_micros(7265),
            request_id,
            client: Some("192.0.2.1".parse().unwrap()),
            error: None,
            key_expires_at: None,
            upstream_server: None,
            retried_from: None,
        }
    }

    fn line(format: Format, r: &AccessRecord<'_>) -> String {
        let mut s = String::new();
        format_line(format, r, &mut s);
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "{s:?}");
        s
    }

    #[test]
    fn log_escaping_shows_bytes() {
        let mut s = String::new();
        escape_for_log("/public/\u{12f}\"%".as_bytes(), &mut s);
        assert_eq!(s, "/public/%C4%AF%22%25");
    }

    #[test]
    fn text_line_has_every_field() {
        let l = line(Format::Text, &record(b"/v1/x", b"rid-1"));
        let fields = l.split_once(" INFO  keygate::access: ").unwrap().1;
        assert_eq!(
            fields,
            "method=GET path=/v1/x status=200 route=api consumer=acme key_id=acme-1 code=- duration_ms=7.265 request_id=rid-1 client=192.0.2.1\n"
        );
        let timed_out = AccessRecord {
            method: None,
            path: None,
            status: 408,
            route: None,
            consumer: None,
            key_id: None,
            code: Some("request_timeout"),
            client: None,
            error: Some("request head timed out"),
            ..record(b"", b"r")
        };
        assert!(line(Format::Text, &timed_out).ends_with(
            ": method=- path=- status=408 route=- consumer=- key_id=- code=request_timeout duration_ms=7.265 request_id=r client=- error=\"request head timed out\"\n"
        ));
    }

    #[test]
    fn json_line_has_the_same_fields() {
        let l = line(Format::Json, &record(b"/v1/x", b"rid-1"));
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "keygate::access");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/v1/x");
        assert_eq!(v["status"], 200);
        assert_eq!(v["route"], "api");
        assert_eq!(v["consumer"], "acme");
        assert_eq!(v["key_id"], "acme-1");
        assert_eq!(v["code"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"].as_f64(), Some(7.265));
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(v["client"], "192.0.2.1");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["key_expires_at"], serde_json::Value::Null);
        assert_eq!(v["upstream_server"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), 16);
        let mut retried = record(b"/v1/x", b"rid-1");
        retried.upstream_server = Some("10.0.0.2:80");
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &retried)).unwrap();
        assert_eq!(v["upstream_server"], "10.0.0.2:80");
        assert!(line(Format::Text, &retried).ends_with(" upstream_server=10.0.0.2:80\n"));
        retried.retried_from = Some("10.0.0.1:80");
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &retried)).unwrap();
        assert_eq!(v["upstream_server"], "10.0.0.1:80,10.0.0.2:80");
        assert!(
            line(Format::Text, &retried).ends_with(" upstream_server=10.0.0.1:80,10.0.0.2:80\n")
        );
        let mut expiring = record(b"/v1/x", b"rid-1");
        expiring.key_expires_at = Some(1_796_169_600);
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &expiring)).unwrap();
        assert_eq!(v["key_expires_at"], "2026-12-02T00:00:00Z");
        assert!(line(Format::Text, &expiring).ends_with(" key_expires_at=2026-12-02T00:00:00Z\n"));
    }

    #[test]
    fn every_byte_makes_valid_json() {
        let all: Vec<u8> = (0..=255).collect();
        let odd = "\u{0}\u{1f}\"\\\n\t\u{7f}\u{2028}é😀";
        let r = AccessRecord {
            method: Some(odd),
            route: Some(odd),
            consumer: Some("\\"),
            key_id: Some("\""),
            code: Some(""),
            error: Some(odd),
            status: 0,
            ..record(&all, &all)
        };
        let l = line(Format::Json, &r);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["method"], odd);
        assert_eq!(v["route"], odd);
        assert_eq!(v["consumer"], "\\");
        assert_eq!(v["key_id"], "\"");
        assert_eq!(v["error"], odd);
        assert_eq!(v["status"], serde_json::Value::Null);
        // Paths and request ids read as in the text line: percent-encoded bytes.
        let mut text = String::new();
        escape_for_log(&all, &mut text);
        assert_eq!(v["path"], text.as_str());
        assert_eq!(v["request_id"], text.as_str());
        assert!(text.contains('\\'));
        // The line is one line, whatever the bytes.
        assert!(!l.trim_end_matches('\n').contains(['\n', '\r']));
    }

    #[test]
    fn json_strings_escape_only_what_they_must() {
        let mut s = String::new();
        json_string("a\"b\\c\u{1}d\u{e9}", &mut s);
        assert_eq!(s, "\"a\\\"b\\\\c\\u0001d\u{e9}\"");
    }
}
