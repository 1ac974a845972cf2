//! The canonical request path: match routes on the path the origin will act on.
//!
//! A gateway that matches `/public/../admin` against the prefix `/public`, or
//! `/%61dmin` against nothing, while the origin resolves them to `/admin`, has
//! an authorization bypass. Origins disagree on the details (nginx, uvicorn and
//! Express decode before routing; Tomcat strips `;` parameters and reads `..;`
//! as `..`; IIS decodes `%u` escapes and overlong UTF-8, and drops trailing dots
//! and spaces from segments), so keygate canonicalizes what every origin reads
//! the same way and refuses what origins read differently. [`canonical`] then
//! returns the path keygate routes on *and forwards*, so the route decision and
//! the origin see one path.
//!
//! Canonicalized (RFC 3986 §6.2.2): percent-encoded unreserved characters are
//! decoded (`%61` → `a`), other escapes get upper-case hex (`%3a` → `%3A`), bytes
//! that may not appear raw in a path are percent-encoded (raw UTF-8 included),
//! `.` and `..` segments are resolved (RFC 3986 §5.2.4) and repeated slashes
//! collapsed.
//!
//! Refused with [`PathError`] (400 `invalid_path`): encoded `/`, `\`, `.`, `;`
//! and control characters; raw `\` and `;`; `%` not followed by two hex digits
//! (`%u002e` included); bytes that do not decode to UTF-8 (overlong forms such
//! as `%c0%af` included); segments ending in `.` or a space; `..` above the
//! root; targets that are not origin-form (`*`).

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`/...`), e.g. the `*` target.
    NotOriginForm,
    /// An encoded slash, backslash, dot, semicolon or control character, or a raw
    /// backslash or semicolon.
    SuspiciousEncoding,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// A segment ends in `.` or a space (Windows servers drop those).
    TrailingDotOrSpace,
    /// `..` would climb above the root.
    AboveRoot,
}

/// Bytes allowed raw in a canonical path: RFC 3986 `pchar` and `/`, minus `%` (escapes are
/// handled apart) and `;` (refused).
const fn raw_ok_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        i += 1;
    }
    t
}

static RAW_OK: [bool; 256] = raw_ok_table();

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// The fast check: only plain bytes, no escapes, no empty, `.`/`..` or dotted segments.
fn already_canonical(path: &[u8]) -> bool {
    let mut prev = b'/';
    for (i, &b) in path.iter().enumerate() {
        if !RAW_OK[usize::from(b)] {
            return false;
        }
        if b == b'/' && (prev == b'/' || prev == b'.') && i > 0 {
            return false;
        }
        prev = b;
    }
    prev != b'.'
}

/// Canonicalize a request path (the part before `?`).
///
/// Input: raw path bytes as received, starting with `/`. Returns `Ok(None)` when
/// the path is already canonical (the common case, no allocation) and
/// `Ok(Some(path))` when it changed. The result is idempotent: canonicalizing it
/// again returns `Ok(None)`.
///
/// # Errors
/// A [`PathError`] naming why the path is refused (see the module documentation).
pub fn canonical(path: &[u8]) -> Result<Option<Vec<u8>>, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if already_canonical(path) {
        return Ok(None);
    }
    // 1. Escapes and raw bytes, into `encoded`; `decoded` collects what the origin will
    //    decode, for the UTF-8 check.
    let mut encoded = Vec::with_capacity(path.len() + 8);
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    path.get(i + 1).copied().and_then(hex),
                    path.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = (hi << 4) | lo;
                if v == b'.' || v == b'/' || v == b'\\' || v == b';' || v < 0x20 || v == 0x7f {
                    return Err(PathError::SuspiciousEncoding);
                }
                if is_unreserved(v) {
                    encoded.push(v);
                } else {
                    encoded.extend_from_slice(&[
                        b'%',
                        HEX_UPPER[usize::from(hi)],
                        HEX_UPPER[usize::from(lo)],
                    ]);
                }
                decoded.push(v);
                i += 3;
                continue;
            }
            b'\\' | b';' => return Err(PathError::SuspiciousEncoding),
            b if b < 0x20 || b == 0x7f => return Err(PathError::SuspiciousEncoding),
            b if RAW_OK[usize::from(b)] => encoded.push(b),
            b => encoded.extend_from_slice(&[
                b'%',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 0xf)],
            ]),
        }
        decoded.push(b);
        i += 1;
    }
    if !decoded.is_ascii() && std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::NotUtf8);
    }
    // 2. Dot segments and repeated slashes (RFC 3986 §5.2.4), on the escaped form: no
    //    encoded slash or dot survived step 1, so segments are exactly what origins see.
    let trailing = encoded.ends_with(b"/") || encoded.ends_with(b"/.") || encoded.ends_with(b"/..");
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in encoded[1..].split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s if s.ends_with(b".") || s.ends_with(b"%20") => {
                return Err(PathError::TrailingDotOrSpace)
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(encoded.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    Ok((out != path).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str) -> Result<String, PathError> {
        c_bytes(p.as_bytes())
    }

    fn c_bytes(p: &[u8]) -> Result<String, PathError> {
        canonical(p).map(|o| String::from_utf8(o.unwrap_or_else(|| p.to_vec())).unwrap())
    }

    #[test]
    fn canonical_paths_are_untouched_without_allocation() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e",
            "/a:b@c",
            "/v1/x-y_z~",
            "/a+b,c=d",
        ] {
            assert_eq!(canonical(p.as_bytes()), Ok(None), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes_resolve() {
        assert_eq!(c("/public/../admin/users").unwrap(), "/admin/users");
        assert_eq!(c("/public/./x").unwrap(), "/public/x");
        assert_eq!(c("//admin").unwrap(), "/admin");
        assert_eq!(c("/a//b///c").unwrap(), "/a/b/c");
        assert_eq!(c("/a/b/..").unwrap(), "/a/");
        assert_eq!(c("/a/.").unwrap(), "/a/");
        assert_eq!(c("/a/..").unwrap(), "/");
        assert_eq!(c("/.").unwrap(), "/");
    }

    #[test]
    fn unreserved_escapes_decode_and_others_are_normalized() {
        assert_eq!(c("/%61dmin/users").unwrap(), "/admin/users");
        assert_eq!(c("/%41%7e%2D%5f").unwrap(), "/A~-_");
        assert_eq!(c("/a%3ab").unwrap(), "/a%3Ab");
        assert_eq!(c("/a%20b").unwrap(), "/a%20b");
        assert_eq!(c("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        // Raw UTF-8 and other bytes that may not appear raw are encoded.
        assert_eq!(c("/public/\u{12f}\u{12f}").unwrap(), "/public/%C4%AF%C4%AF");
        assert_eq!(c("/a\"b<c>").unwrap(), "/a%22b%3Cc%3E");
        assert_eq!(c("/a|b{c}").unwrap(), "/a%7Cb%7Bc%7D");
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        use PathError::*;
        for (p, e) in [
            ("/public%2f..%2fadmin", SuspiciousEncoding),
            ("/public/%2e%2e/admin", SuspiciousEncoding),
            ("/public/%2E./admin", SuspiciousEncoding),
            ("/a%5cb", SuspiciousEncoding),
            ("/a\\..\\admin", SuspiciousEncoding),
            ("/a%00", SuspiciousEncoding),
            ("/a%0a", SuspiciousEncoding),
            ("/a%7F", SuspiciousEncoding),
            ("/admin;x=1/users", SuspiciousEncoding),
            ("/public/..;/admin", SuspiciousEncoding),
            ("/admin%3bx/users", SuspiciousEncoding),
            ("/a%u002e", BadEscape),
            ("/a%zz", BadEscape),
            ("/a%", BadEscape),
            ("/a%4", BadEscape),
            ("/%c0%af", NotUtf8),
            ("/%c0%ae%c0%ae/admin", NotUtf8),
            ("/%ed%a0%80", NotUtf8),
            ("/admin./users", TrailingDotOrSpace),
            ("/admin%20/users", TrailingDotOrSpace),
            ("/x/...", TrailingDotOrSpace),
            ("/..", AboveRoot),
            ("/a/../../b", AboveRoot),
            ("*", NotOriginForm),
            ("", NotOriginForm),
        ] {
            assert_eq!(c(p), Err(e), "{p}");
        }
        assert_eq!(c_bytes(b"/a\xff"), Err(PathError::NotUtf8));
        assert_eq!(c_bytes(b"/a\xc0\xaf"), Err(PathError::NotUtf8));
    }

    #[test]
    fn canonicalization_is_idempotent() {
        for p in [
            "/%61dmin//x/../y/",
            "/caf\u{e9}/%3a",
            "/a/./b%7e",
            "/p/%c3%a9?",
        ] {
            if let Ok(once) = c(p) {
                assert_eq!(canonical(once.as_bytes()), Ok(None), "{p} -> {once}");
            }
        }
    }
}
