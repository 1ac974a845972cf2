//! Streaming the keys file: one consumer at a time, never the whole parsed file.

use std::path::Path;

use super::error::ConfigError;
use super::parse::{json_error, yaml_error};
use super::ConsumerConfig;

/// Hand each consumer of a keys file to `f` as soon as it is parsed, so a file with a
/// million keys is never held in memory as a million parsed entries.
///
/// Accepts exactly what [`super::KeysFile::from_yaml`] accepts (JSON fast path included),
/// with the same located errors.
pub fn for_each_consumer(
    text: &str,
    file: &Path,
    f: &mut dyn FnMut(usize, &ConsumerConfig),
) -> Result<(), ConfigError> {
    let mut delivered = 0usize;
    if text.trim_start().starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(text);
        let result = serde::de::DeserializeSeed::deserialize(
            seed::KeysSeed {
                f: &mut *f,
                delivered: &mut delivered,
            },
            &mut de,
        )
        .and_then(|()| de.end());
        match result {
            Ok(()) => return Ok(()),
            // Not JSON after all (flow-style YAML): parse it as YAML from the start.
            Err(e) if e.is_syntax() && delivered == 0 => {}
            Err(e) => return Err(json_error(&e, file)),
        }
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(
        seed::KeysSeed {
            f,
            delivered: &mut delivered,
        },
        de,
    )
    .map_err(|e| yaml_error(e, file))
}

/// Streaming deserialization of the keys file: `{consumers: [ConsumerConfig, ...]}`.
mod seed {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

    use crate::config::ConsumerConfig;

    pub(super) struct KeysSeed<'f> {
        pub(super) f: &'f mut dyn FnMut(usize, &ConsumerConfig),
        pub(super) delivered: &'f mut usize,
    }

    impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_struct("KeysFile", &["consumers"], self)
        }
    }

    impl<'de> Visitor<'de> for KeysSeed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a keys file with a `consumers` list")
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = false;
            while let Some(key) = map.next_key::<String>()? {
                if key != "consumers" {
                    return Err(de::Error::unknown_field(&key, &["consumers"]));
                }
                if seen {
                    return Err(de::Error::duplicate_field("consumers"));
                }
                seen = true;
                map.next_value_seed(ConsumersSeed {
                    f: &mut *self.f,
                    delivered: &mut *self.delivered,
                })?;
            }
            Ok(())
        }
    }

    struct ConsumersSeed<'f> {
        f: &'f mut dyn FnMut(usize, &ConsumerConfig),
        delivered: &'f mut usize,
    }

    impl<'de> DeserializeSeed<'de> for ConsumersSeed<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for ConsumersSeed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of consumers")
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(c) = seq.next_element::<ConsumerConfig>()? {
                (self.f)(*self.delivered, &c);
                *self.delivered += 1;
            }
            Ok(())
        }
    }
}
