//! Where a secret comes from: an environment variable or a file, exactly one.
//!
//! Every secret keygate reads uses this one type (the shared secret now; an
//! admin token and a Redis password later), written as `{ env: NAME }`,
//! `{ file: PATH }` or `{ credential: NAME }` (a systemd credential, from the
//! unit's `LoadCredential=NAME:…`). The shared secret keeps its historical shape, with the
//! source fields beside `header` (`secret: { header: x-shared-secret, env: X }`);
//! `#[serde(flatten)]` cannot be combined with `deny_unknown_fields`, so both
//! shapes are read by one hand-written map visitor that refuses unknown fields
//! and anything but exactly one source.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A secret's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable holding the secret.
    Env(String),
    /// A file holding the secret (one trailing newline trimmed); relative paths
    /// resolve against the configuration file's folder.
    File(PathBuf),
    /// A systemd credential: the file `NAME` in `$CREDENTIALS_DIRECTORY`, which systemd
    /// sets for a unit with `LoadCredential=NAME:PATH` (readable by the service alone).
    Credential(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "environment variable {v}"),
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Credential(n) => write!(f, "systemd credential {n}"),
        }
    }
}

/// The error for zero or several sources.
const EXACTLY_ONE: &str = "set exactly one of `env`, `file` and `credential`";

/// Extra string fields found beside a source, by name.
type Extra = Vec<(&'static str, String)>;

/// Read a map holding exactly one of `env`/`file`, plus the `extra` string fields.
fn visit_source<'de, A: MapAccess<'de>>(
    mut map: A,
    extra: &'static [&'static str],
    fields: &'static [&'static str],
) -> Result<(SecretSource, Extra), A::Error> {
    let mut source = None;
    let mut found = Vec::new();
    while let Some(key) = map.next_key::<String>()? {
        let next = match key.as_str() {
            "env" => SecretSource::Env(map.next_value()?),
            "file" => SecretSource::File(map.next_value()?),
            "credential" => SecretSource::Credential(map.next_value()?),
            other => match extra.iter().find(|e| **e == other) {
                Some(name) => {
                    if found.iter().any(|(n, _)| n == name) {
                        return Err(de::Error::duplicate_field(name));
                    }
                    found.push((*name, map.next_value::<String>()?));
                    continue;
                }
                None => return Err(de::Error::unknown_field(other, fields)),
            },
        };
        if source.replace(next).is_some() {
            return Err(de::Error::custom(EXACTLY_ONE));
        }
    }
    let source = source.ok_or_else(|| de::Error::custom(EXACTLY_ONE))?;
    Ok((source, found))
}

/// A secret written as a value instead of its source: refused without repeating it (the
/// default message of a deserializer quotes the value it found).
fn inline<E: de::Error>() -> E {
    E::custom("a secret is never written in the configuration itself: write `{ env: NAME }`, `{ file: PATH }` or `{ credential: NAME }`")
}

/// The scalar visits of a secret's visitor: every one refused by [`inline`].
macro_rules! refuse_inline_secrets {
    () => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(inline())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(inline())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(inline())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(inline())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(inline())
        }
        fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
            Err(inline())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(inline())
        }
    };
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`{ env: NAME }`, `{ file: PATH }` or `{ credential: NAME }`")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretSource, A::Error> {
                visit_source(map, &[], &["env", "file", "credential"]).map(|(s, _)| s)
            }
            refuse_inline_secrets!();
        }
        d.deserialize_any(V)
    }
}

/// The shared secret's section: the header that carries it, and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretConfig {
    /// Header name carrying the secret. Default `x-shared-secret`.
    pub header: String,
    /// Where the secret comes from.
    pub source: SecretSource,
}

impl<'de> Deserialize<'de> for SecretConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`{ header: NAME, env: NAME | file: PATH | credential: NAME }`")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretConfig, A::Error> {
                let (source, extra) =
                    visit_source(map, &["header"], &["header", "env", "file", "credential"])?;
                let header = extra
                    .into_iter()
                    .find(|(n, _)| *n == "header")
                    .map_or_else(|| super::DEFAULT_SECRET_HEADER.to_string(), |(_, v)| v);
                Ok(SecretConfig { header, source })
            }
            refuse_inline_secrets!();
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_written_inline_is_refused_without_repeating_it() {
        for yaml in [
            "hunter2-plain",
            "\"hunter2-plain\"",
            "12345678901234567890",
            "[hunter2]",
        ] {
            let e = serde_yaml::from_str::<SecretSource>(yaml)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("never written in the configuration"),
                "{yaml}: {e}"
            );
            assert!(
                !e.contains("hunter2") && !e.contains("1234567890"),
                "{yaml}: {e}"
            );
            let e = crate::yaml::from_str::<SecretSource>(yaml)
                .map(|_| ())
                .unwrap_err();
            let e = format!("{e:?}");
            assert!(
                !e.contains("hunter2") && !e.contains("1234567890"),
                "{yaml}: {e}"
            );
        }
    }

    fn secret(yaml: &str) -> Result<SecretConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn exactly_one_source_with_an_optional_header() {
        assert_eq!(
            secret("{ env: X }").unwrap(),
            SecretConfig {
                header: super::super::DEFAULT_SECRET_HEADER.into(),
                source: SecretSource::Env("X".into())
            }
        );
        assert_eq!(
            secret("{ header: x-gw, file: /run/s }").unwrap(),
            SecretConfig {
                header: "x-gw".into(),
                source: SecretSource::File("/run/s".into())
            }
        );
        assert_eq!(
            secret("{ credential: shared-secret }").unwrap().source,
            SecretSource::Credential("shared-secret".into())
        );
        for bad in [
            "{ env: X, file: Y }",
            "{ credential: a, env: X }",
            "{ header: x }",
            "{}",
        ] {
            let e = secret(bad).unwrap_err();
            assert!(
                e.contains("exactly one of `env`, `file` and `credential`"),
                "{bad}: {e}"
            );
        }
        let e = secret("{ env: X, enf: Y }").unwrap_err();
        assert!(e.contains("unknown field `enf`"), "{e}");
        let e = secret("{ env: X, header: a, header: b }").unwrap_err();
        assert!(e.contains("header"), "{e}");
    }

    #[test]
    fn a_bare_source_takes_no_header() {
        let s: SecretSource = serde_yaml::from_str("{ file: pw }").unwrap();
        assert_eq!(s, SecretSource::File("pw".into()));
        let e = serde_yaml::from_str::<SecretSource>("{ header: x, env: Y }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `header`"), "{e}");
    }
}
