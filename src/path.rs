//! Request-path normalization: match routes on the path the origin will act on.
//!
//! A gateway that matches `/public/../admin` against the prefix `/public` while
//! the origin resolves it to `/admin` has an authorization bypass. keygate
//! therefore resolves dot segments and collapses repeated slashes *before*
//! routing, and forwards the normalized path, so the route decision and the
//! origin see the same path. Encodings whose only use is to smuggle a separator
//! or a dot past such checks (`%2f`, `%5c`, `%2e`, `%00`, a raw backslash) are
//! rejected outright.

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`/...`), e.g. the `*` target.
    NotOriginForm,
    /// An encoded slash, backslash, dot or NUL, or a raw backslash.
    SuspiciousEncoding,
    /// `..` would climb above the root.
    AboveRoot,
}

fn is_suspicious_escape(hi: u8, lo: u8) -> bool {
    let lo = lo.to_ascii_lowercase();
    matches!(
        (hi, lo),
        (b'2', b'f') | (b'5', b'c') | (b'2', b'e') | (b'0', b'0')
    )
}

/// Normalize a request path (without query). Returns `Ok(None)` when it is already
/// normal (the common case, no allocation), `Ok(Some(normalized))` when it changed.
pub fn normalize(path: &[u8]) -> Result<Option<Vec<u8>>, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut needs_work = false;
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'\\' => return Err(PathError::SuspiciousEncoding),
            b'%' if i + 2 < path.len() && is_suspicious_escape(path[i + 1], path[i + 2]) => {
                return Err(PathError::SuspiciousEncoding)
            }
            b'/' => {
                let next = path.get(i + 1).copied();
                if next == Some(b'/') {
                    needs_work = true;
                }
                if next == Some(b'.') {
                    let seg_end = path[i + 1..]
                        .iter()
                        .position(|&b| b == b'/')
                        .map_or(path.len(), |p| i + 1 + p);
                    let seg = &path[i + 1..seg_end];
                    if seg == b"." || seg == b".." {
                        needs_work = true;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !needs_work {
        return Ok(None);
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    let trailing = path.ends_with(b"/") || path.ends_with(b"/.") || path.ends_with(b"/..");
    for seg in path[1..].split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p.as_bytes())
            .map(|o| String::from_utf8(o.unwrap_or_else(|| p.as_bytes().to_vec())).unwrap())
    }

    #[test]
    fn normal_paths_are_untouched_without_allocation() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "/a%20b", "/%41"] {
            assert_eq!(normalize(p.as_bytes()), Ok(None), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes_resolve() {
        assert_eq!(n("/public/../admin/users").unwrap(), "/admin/users");
        assert_eq!(n("/public/./x").unwrap(), "/public/x");
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("/a//b///c").unwrap(), "/a/b/c");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/a/..").unwrap(), "/");
        assert_eq!(n("/.").unwrap(), "/");
    }

    #[test]
    fn escapes_and_climbing_are_refused() {
        assert_eq!(
            n("/public%2f..%2fadmin"),
            Err(PathError::SuspiciousEncoding)
        );
        assert_eq!(
            n("/public/%2e%2e/admin"),
            Err(PathError::SuspiciousEncoding)
        );
        assert_eq!(n("/public/%2E./admin"), Err(PathError::SuspiciousEncoding));
        assert_eq!(n("/a%5cb"), Err(PathError::SuspiciousEncoding));
        assert_eq!(n("/a\\..\\admin"), Err(PathError::SuspiciousEncoding));
        assert_eq!(n("/a%00"), Err(PathError::SuspiciousEncoding));
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(n("*"), Err(PathError::NotOriginForm));
        assert_eq!(n(""), Err(PathError::NotOriginForm));
    }
}
