//! What a consumer or key may do: HTTP method sets and scope sets, as bit masks.
//!
//! Both are checked on every authenticated request, so they are a few bit
//! operations: a [`Methods`] set is one byte over the methods keygate forwards, a
//! [`Scopes`] set one `u64` over the scopes that routes require (at most
//! [`MAX_SCOPES`] distinct names per configuration; scopes no route requires
//! change no decision and take no bit).

use http::Method;

/// The methods an allow-list may name, in bit order (RFC 9110 §9 and RFC 5789's
/// `PATCH`; `TRACE` and `CONNECT` are never forwarded).
pub const METHOD_NAMES: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A set of HTTP methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Methods(u8);

impl Methods {
    /// Every method (no allow-list).
    pub const ALL: Methods = Methods(u8::MAX);

    /// The set named by `names` (upper-case, from [`METHOD_NAMES`]); `GET` brings `HEAD`
    /// along (a `HEAD` is a `GET` without the body, RFC 9110 §9.3.2).
    ///
    /// # Errors
    /// The first name that is not in [`METHOD_NAMES`], with its index.
    pub fn parse<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Methods, (usize, &'a str)> {
        let mut bits = 0u8;
        for (i, n) in names.into_iter().enumerate() {
            let Some(bit) = METHOD_NAMES.iter().position(|m| *m == n) else {
                return Err((i, n));
            };
            bits |= 1 << bit;
            if n == "GET" {
                bits |= 1 << 1;
            }
        }
        Ok(Methods(bits))
    }

    /// Whether `method` is in the set (an extension method only in [`Methods::ALL`]).
    pub fn allows(self, method: &Method) -> bool {
        if self == Methods::ALL {
            return true;
        }
        let bit = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::PATCH => 4,
            Method::DELETE => 5,
            Method::OPTIONS => 6,
            _ => return false,
        };
        self.0 & (1 << bit) != 0
    }

    /// Whether every method in `self` is in `other`.
    pub fn within(self, other: Methods) -> bool {
        self.0 & !other.0 == 0
    }

    /// The intersection.
    pub fn and(self, other: Methods) -> Methods {
        Methods(self.0 & other.0)
    }
}

/// The most distinct scopes routes may require, across one configuration.
pub const MAX_SCOPES: usize = 64;

/// A set of scopes: bit `i` for the `i`-th scope that some route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(pub u64);

impl Scopes {
    /// Every scope (a key that does not narrow its consumer's).
    pub const ALL: Scopes = Scopes(u64::MAX);

    /// The intersection.
    pub fn and(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    /// The index of the first scope of `required` missing from `self`, if any.
    pub fn first_missing(self, required: Scopes) -> Option<u32> {
        let missing = required.0 & !self.0;
        (missing != 0).then(|| missing.trailing_zeros())
    }
}

/// Whether `s` is a valid scope name: 1–64 of `A-Z a-z 0-9 . _ - : /` (so
/// `orders:write` and `billing/read` work, and a name is safe in a problem document).
pub fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_sets() {
        let read = Methods::parse(["GET"]).unwrap();
        assert!(read.allows(&Method::GET) && read.allows(&Method::HEAD));
        assert!(!read.allows(&Method::POST) && !read.allows(&Method::DELETE));
        let ext = Method::from_bytes(b"PROPFIND").unwrap();
        assert!(!read.allows(&ext) && Methods::ALL.allows(&ext));
        assert_eq!(Methods::parse(["GET", "get"]), Err((1, "get")));
        assert_eq!(Methods::parse(["TRACE"]), Err((0, "TRACE")));
        let write = Methods::parse(["POST", "PUT"]).unwrap();
        assert!(!write.allows(&Method::GET));
        assert!(read.within(Methods::ALL) && !Methods::ALL.within(read));
        assert!(!read.within(write));
        assert!(Methods::parse([]).unwrap().within(read));
    }

    #[test]
    fn scope_sets() {
        let granted = Scopes(0b101);
        assert_eq!(granted.first_missing(Scopes(0b001)), None);
        assert_eq!(granted.first_missing(Scopes(0b110)), Some(1));
        assert_eq!(Scopes::ALL.and(granted), granted);
        assert!(valid_scope("orders:write") && valid_scope("billing/read"));
        assert!(!valid_scope("") && !valid_scope("a b") && !valid_scope("\"x\""));
    }
}
