//! How scalars resolve: the YAML 1.2 core schema exactly as `serde_yaml` 0.9 applies it.
//!
//! A plain (unquoted) scalar is null (empty, `~`, `null`, `Null`, `NULL`), a boolean
//! (`true`/`True`/`TRUE`, `false`/…), an integer (decimal, `0x`, `0o`, `0b`, with a
//! sign; `012` is a string), a float (`1.5`, `1e3`, `.inf`, `.nan`) or else a string
//! (`2027-01-01T00:00:00Z`, `yes`, `1_000`). A quoted or block scalar is a string.
//! Core tags (`!!str`, `!!int`, `!!bool`, `!!float`, `!!null`) force a type.
//!
//! The functions below follow `serde_yaml` 0.9.34's `de.rs` (MIT OR Apache-2.0,
//! David Tolnay) line by line, so that a file reads the same with either; the tests
//! compare the two on every document in the repository and the fuzz corpus.

use std::num::ParseIntError;

use serde::de::{self, Unexpected, Visitor};

use super::collect::DeError;
use super::read::{Scalar, Style};

/// The core schema's tags, as the parser resolves `!!bool` and friends.
pub(super) const BOOL: &str = "tag:yaml.org,2002:bool";
pub(super) const INT: &str = "tag:yaml.org,2002:int";
pub(super) const FLOAT: &str = "tag:yaml.org,2002:float";
pub(super) const NULL: &str = "tag:yaml.org,2002:null";

pub(super) fn parse_null(scalar: &str) -> Option<()> {
    match scalar {
        "null" | "Null" | "NULL" | "~" => Some(()),
        _ => None,
    }
}

pub(super) fn parse_bool(scalar: &str) -> Option<bool> {
    match scalar {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// `-0x`/`-0o`/`-0b`: the digits after the prefix, negated.
fn negative_radix<T>(
    s: &str,
    prefix: &str,
    radix: u32,
    from_str_radix: fn(&str, u32) -> Result<T, ParseIntError>,
) -> Option<T> {
    let rest = s.strip_prefix(prefix)?;
    from_str_radix(&format!("-{rest}"), radix).ok()
}

pub(super) fn parse_unsigned_int<T>(
    scalar: &str,
    from_str_radix: fn(&str, u32) -> Result<T, ParseIntError>,
) -> Option<T> {
    let unpositive = scalar.strip_prefix('+').unwrap_or(scalar);
    for (prefix, r) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unpositive.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(int) = from_str_radix(rest, r) {
                return Some(int);
            }
        }
    }
    if unpositive.starts_with(['+', '-']) || digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(unpositive, 10).ok()
}

pub(super) fn parse_signed_int<T>(
    scalar: &str,
    from_str_radix: fn(&str, u32) -> Result<T, ParseIntError>,
) -> Option<T> {
    let unpositive = match scalar.strip_prefix('+') {
        Some(u) if u.starts_with(['+', '-']) => return None,
        Some(u) => u,
        None => scalar,
    };
    for (prefix, r) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unpositive.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(int) = from_str_radix(rest, r) {
                return Some(int);
            }
        }
        if let Some(int) = negative_radix(scalar, &format!("-{prefix}"), r, from_str_radix) {
            return Some(int);
        }
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(unpositive, 10).ok()
}

pub(super) fn parse_negative_int<T>(
    scalar: &str,
    from_str_radix: fn(&str, u32) -> Result<T, ParseIntError>,
) -> Option<T> {
    for (prefix, r) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(int) = negative_radix(scalar, prefix, r, from_str_radix) {
            return Some(int);
        }
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(scalar, 10).ok()
}

pub(super) fn parse_f64(scalar: &str) -> Option<f64> {
    let unpositive = match scalar.strip_prefix('+') {
        Some(u) if u.starts_with(['+', '-']) => return None,
        Some(u) => u,
        None => scalar,
    };
    if let ".inf" | ".Inf" | ".INF" = unpositive {
        return Some(f64::INFINITY);
    }
    if let "-.inf" | "-.Inf" | "-.INF" = scalar {
        return Some(f64::NEG_INFINITY);
    }
    if let ".nan" | ".NaN" | ".NAN" = scalar {
        return Some(f64::NAN.copysign(1.0));
    }
    unpositive.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Leading zero(s) followed by digits is a string in YAML 1.2 (`012`).
pub(super) fn digits_but_not_number(scalar: &str) -> bool {
    let scalar = scalar.strip_prefix(['-', '+']).unwrap_or(scalar);
    scalar.len() > 1 && scalar.starts_with('0') && scalar[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Whether a plain scalar resolves to a string (not null, boolean or number).
pub(super) fn plain_is_string(v: &str) -> bool {
    !(v.is_empty()
        || parse_null(v).is_some()
        || parse_bool(v).is_some()
        || parse_unsigned_int(v, u128::from_str_radix).is_some()
        || parse_negative_int(v, i128::from_str_radix).is_some()
        || (!digits_but_not_number(v) && parse_f64(v).is_some()))
}

pub(super) fn visit_int<'de, V: Visitor<'de>>(
    visitor: V,
    v: &str,
) -> Result<Result<V::Value, DeError>, V> {
    if let Some(int) = parse_unsigned_int(v, u64::from_str_radix) {
        return Ok(visitor.visit_u64(int));
    }
    if let Some(int) = parse_negative_int(v, i64::from_str_radix) {
        return Ok(visitor.visit_i64(int));
    }
    if let Some(int) = parse_unsigned_int(v, u128::from_str_radix) {
        return Ok(visitor.visit_u128(int));
    }
    if let Some(int) = parse_negative_int(v, i128::from_str_radix) {
        return Ok(visitor.visit_i128(int));
    }
    Err(visitor)
}

pub(super) fn visit_untagged_scalar<'de, V: Visitor<'de>>(
    visitor: V,
    v: &str,
) -> Result<V::Value, DeError> {
    if v.is_empty() || parse_null(v).is_some() {
        return visitor.visit_unit();
    }
    if let Some(boolean) = parse_bool(v) {
        return visitor.visit_bool(boolean);
    }
    let visitor = match visit_int(visitor, v) {
        Ok(result) => return result,
        Err(visitor) => visitor,
    };
    if !digits_but_not_number(v) {
        if let Some(float) = parse_f64(v) {
            return visitor.visit_f64(float);
        }
    }
    visitor.visit_str(v)
}

/// Visit a scalar with the type its style and tag give it (`deserialize_any`).
pub(super) fn visit_scalar<'de, V: Visitor<'de>>(
    visitor: V,
    scalar: &Scalar,
    tag: Option<&str>,
    tagged_already: bool,
) -> Result<V::Value, DeError> {
    let v = scalar.value.as_str();
    if let (Some(tag), false) = (tag, tagged_already) {
        if tag == BOOL {
            return match parse_bool(v) {
                Some(b) => visitor.visit_bool(b),
                None => Err(de::Error::invalid_value(Unexpected::Str(v), &"a boolean")),
            };
        } else if tag == INT {
            return match visit_int(visitor, v) {
                Ok(result) => result,
                Err(_) => Err(de::Error::invalid_value(Unexpected::Str(v), &"an integer")),
            };
        } else if tag == FLOAT {
            return match parse_f64(v) {
                Some(f) => visitor.visit_f64(f),
                None => Err(de::Error::invalid_value(Unexpected::Str(v), &"a float")),
            };
        } else if tag == NULL {
            return match parse_null(v) {
                Some(()) => visitor.visit_unit(),
                None => Err(de::Error::invalid_value(Unexpected::Str(v), &"null")),
            };
        } else if tag.starts_with('!') && scalar.style == Style::Plain {
            return visit_untagged_scalar(visitor, v);
        }
    } else if scalar.style == Style::Plain {
        return visit_untagged_scalar(visitor, v);
    }
    visitor.visit_str(v)
}

/// Whether a typed request (`bool`, integer, float) may read this scalar: plain, or a
/// literal block carrying the matching core tag.
pub(super) fn plain_or_tagged_literal(
    expected: &str,
    scalar: &Scalar,
    tag: Option<&str>,
    tagged_already: bool,
) -> bool {
    match (scalar.style, tag, tagged_already) {
        (Style::Plain, _, _) => true,
        (Style::Literal, Some(tag), false) => tag == expected,
        _ => false,
    }
}

/// The enum variant a local tag names (`!required` → `required`), if any.
pub(super) fn enum_tag(tag: Option<&str>) -> Option<&str> {
    let rest = tag?.strip_prefix('!')?;
    Some(if rest.is_empty() { "!" } else { rest })
}
